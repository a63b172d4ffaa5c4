//! Embeddings and the candidate index.

use std::f32::consts::PI;
use whorl::embed::{EmbedModel, Embedder, builtin_model, dot};
use whorl::index::{Graph, IndexError, IndexMeta, IndexParams, exact_search, saved, vectors_crc};
use whorl::synth::{Synth, SynthParams};
use whorl::template::{Minutia, Template};

fn transform(t: &Template, angle: f32, dx: f32, dy: f32) -> Template {
    let (s, c) = angle.sin_cos();
    let minutiae = t
        .minutiae
        .iter()
        .map(|m| Minutia::new(m.x * c + m.y * s + dx, -m.x * s + m.y * c + dy, m.angle + angle, m.kind, m.quality))
        .collect();
    Template { minutiae, ..t.clone() }
}

#[test]
fn embeddings_are_unit_deterministic_and_pose_invariant() {
    let e = Embedder::default();
    assert_eq!(e.dim(), 512);
    let synth = Synth::new(SynthParams::default(), 5);
    for id in 0..20 {
        let t = synth.template(id, 0);
        let v = e.embed(&t);
        assert!((dot(&v, &v) - 1.0).abs() < 1e-5);
        assert_eq!(v, e.embed(&t), "deterministic");
        for (a, dx, dy) in [(PI / 7.0, 100.0, -40.0), (-2.0, 0.0, 300.0)] {
            let w = e.embed(&transform(&t, a, dx, dy));
            // 0.998 and up measured with the learned whitening of model v2,
            // which weights the directions that barely vary between
            // impressions, where a moved copy's rounding shows (PCA: 0.999).
            assert!(dot(&v, &w) > 0.995, "finger {id}: rotated copy at cosine {}", dot(&v, &w));
        }
        // Another impression of the same finger is closer than other fingers.
        let mate = e.embed(&synth.template(id, 1));
        let other = e.embed(&synth.template(id + 1000, 0));
        assert!(dot(&v, &mate) > dot(&v, &other), "finger {id}");
    }
    // Degenerate templates still give unit vectors.
    for t in [
        Template::default(),
        Template { minutiae: vec![Minutia::new(5.0, 5.0, 0.0, Default::default(), 0)], ..Template::default() },
    ] {
        let v = e.embed(&t);
        assert!((dot(&v, &v) - 1.0).abs() < 1e-5);
    }
}

#[test]
fn the_builtin_model_loads_and_damage_is_refused() {
    let m = builtin_model().expect("built-in model");
    let bytes = m.to_bytes();
    assert_eq!(&*EmbedModel::from_bytes(&bytes).unwrap().whitening.mean, &*m.whitening.mean);
    for at in [0, 9, 20, 40, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        assert!(EmbedModel::from_bytes(&bad).is_err(), "flip at {at}");
    }
    assert!(EmbedModel::from_bytes(&bytes[..bytes.len() - 7]).is_err());
    assert!(EmbedModel::from_bytes(b"WHORLEMB").is_err());
}

fn gallery(n: u64, seed: u64) -> (Vec<f32>, Vec<Vec<f32>>) {
    use rayon::prelude::*;
    let e = Embedder::default();
    let s = Synth::new(SynthParams::default(), seed);
    let g: Vec<f32> = s.batch(0..n, 0..1).par_iter().flat_map_iter(|r| e.embed(&r.template)).collect();
    let q: Vec<Vec<f32>> = s.batch(0..100, 1..2).iter().map(|r| e.embed(&r.template)).collect();
    (g, q)
}

#[test]
fn exact_search_matches_a_full_sort() {
    let (g, q) = gallery(800, 3);
    for p in q.iter().take(10) {
        let mut all: Vec<(f32, u32)> = g.chunks_exact(512).enumerate().map(|(i, r)| (dot(p, r), i as u32)).collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let top = exact_search(&g, 512, p, 15, None);
        assert_eq!(top.iter().map(|h| h.id).collect::<Vec<_>>(), all[..15].iter().map(|x| x.1).collect::<Vec<_>>());
        let even = exact_search(&g, 512, p, 5, Some(&|id| id % 2 == 0));
        assert!(even.iter().all(|h| h.id % 2 == 0) && even.len() == 5);
    }
}

#[test]
fn hnsw_recall_against_brute_force_persistence_and_filters() {
    let (g, q) = gallery(3000, 17);
    let params = IndexParams { max_connections: 16, ef_construction: 200 };
    let graph = Graph::build(&g, 512, &params, 1000, |_| {}).unwrap();
    assert_eq!(graph.len(), 3000);
    let k = 10;
    let mut hit = 0;
    for p in &q {
        let truth: Vec<u32> = exact_search(&g, 512, p, k, None).iter().map(|h| h.id).collect();
        hit += graph.search(p, k, 400).unwrap().iter().filter(|h| truth.contains(&h.id)).count();
    }
    let recall = hit as f64 / (k * q.len()) as f64;
    assert!(recall >= 0.9, "recall@10 at ef 400: {recall}");
    // Mates (query i is another impression of finger i) are found.
    let mates = q
        .iter()
        .enumerate()
        .filter(|(i, p)| graph.search(p, 30, 100).unwrap().iter().any(|h| h.id as usize == *i))
        .count();
    assert!(mates >= 85, "mates in the top 30: {mates}/100");
    // Filters: nothing filtered out comes back, and results are the allowed best.
    let allowed = |id: u32| id.is_multiple_of(3);
    for p in q.iter().take(20) {
        let r = graph.search_filtered(p, k, 200, &allowed).unwrap();
        assert!(r.iter().all(|h| allowed(h.id)) && !r.is_empty());
    }
    assert!(graph.search_filtered(&q[0], k, 50, &|_| false).unwrap().is_empty());
    // Save and reload (vectors memory-mapped): same answers; stale refused.
    let dir = tempdir("hnsw");
    let crc = vectors_crc(&g);
    let e = Embedder::default().id();
    let meta = IndexMeta { format: 1, embedding: e, count: 0, vectors_crc32c: crc, params, hnsw_base: String::new() };
    let meta = saved::save(&graph, &dir, "idx", meta).unwrap();
    assert_eq!(meta.count, 3000);
    let (back, _) = saved::load(&dir, "idx", true, Some((&e, crc))).unwrap();
    for p in q.iter().take(30) {
        let (a, b) = (graph.search(p, k, 64).unwrap(), back.search(p, k, 64).unwrap());
        assert_eq!(a.iter().map(|h| h.id).collect::<Vec<_>>(), b.iter().map(|h| h.id).collect::<Vec<_>>());
    }
    assert!(matches!(saved::load(&dir, "idx", true, Some((&e, crc ^ 1))), Err(IndexError::Stale(_))));
    assert!(matches!(saved::load(&dir, "other", true, None), Err(IndexError::Missing(_))));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_vectors_and_parameters_are_refused_not_fatal() {
    let params = IndexParams { max_connections: 300, ef_construction: 100 };
    assert!(matches!(Graph::build(&[1.0, 0.0], 2, &params, 10, |_| {}), Err(IndexError::Params(_))));
    let ok = IndexParams::default();
    assert!(matches!(Graph::build(&[1.0, 1.0], 2, &ok, 10, |_| {}), Err(IndexError::NotUnit { id: 0, .. })));
    assert!(matches!(Graph::build(&[1.0, 0.0, 0.5], 2, &ok, 10, |_| {}), Err(IndexError::Shape { .. })));
    let g = Graph::build(&[1.0, 0.0, 0.0, 1.0], 2, &ok, 10, |_| {}).unwrap();
    assert!(g.search(&[2.0, 0.0], 1, 10).is_err(), "a non-unit query is refused");
    // Identical vectors (one template enrolled twice) do not trip hnsw_rs's assertion.
    let twice: Vec<f32> = [0.6f32, 0.8].iter().cycle().take(400).copied().collect();
    let g = Graph::build(&twice, 2, &ok, 50, |_| {}).unwrap();
    assert_eq!(g.search(&[0.6, 0.8], 5, 20).unwrap().len(), 5);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("whorl-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
