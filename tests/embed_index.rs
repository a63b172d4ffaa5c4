//! Embeddings and the candidate index. The index tests are one suite run
//! against both implementations (whorl's mapped graphs and hnsw_rs): recall
//! against brute force, filters, bad input; persistence and corruption run
//! at the gallery level in `tests/gallery.rs`.

use std::f32::consts::PI;
use std::sync::Arc;
use whorl::embed::{EmbedModel, Embedder, builtin_model, dot};
use whorl::index::kernels::{Tier, tier_kernels};
use whorl::index::{
    AlignedBytes, CandidateIndex, Hit, HnswRsGraph, IndexError, IndexKind, IndexParams, MappedGraph, VectorKind,
    Vectors, VectorsLayout, exact_search, saved, vectors_crc,
};
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

fn dim() -> usize {
    Embedder::default().dim()
}

#[test]
fn exact_search_matches_a_full_sort() {
    let (g, q) = gallery(800, 3);
    let d = dim();
    for p in q.iter().take(10) {
        let mut all: Vec<(f32, u32)> = g.chunks_exact(d).enumerate().map(|(i, r)| (dot(p, r), i as u32)).collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let top = exact_search(&g, d, p, 15, None);
        assert_eq!(top.iter().map(|h| h.id).collect::<Vec<_>>(), all[..15].iter().map(|x| x.1).collect::<Vec<_>>());
        let even = exact_search(&g, d, p, 5, Some(&|id| id % 2 == 0));
        assert!(even.iter().all(|h| h.id % 2 == 0) && even.len() == 5);
    }
}

/// `g` stored as `kind` in memory, laid out as in a shard.
fn stored(g: &[f32], kind: VectorKind) -> (whorl::index::Bytes, VectorsLayout) {
    let d = dim();
    let mut values = Vec::new();
    let scales: Vec<f32> = g.chunks_exact(d).map(|r| kind.encode(r, &mut values)).collect();
    let n = values.len();
    let at = n.next_multiple_of(64);
    values.resize(at, 0);
    values.extend_from_slice(bytemuck::cast_slice(&scales));
    let end = values.len();
    (Arc::new(AlignedBytes::new(&values)), VectorsLayout { kind, dim: d, values: 0..n, scales: at..end })
}

/// An index of `kind` over `g` (whorl's over f32 vectors).
fn build(kind: IndexKind, g: &[f32], params: &IndexParams) -> Box<dyn CandidateIndex> {
    let n = (g.len() / dim()) as u32;
    match kind {
        IndexKind::Whorl => {
            let (bytes, layout) = stored(g, VectorKind::F32);
            let rows: Vec<u32> = (0..n).collect();
            let (graph, reach) = MappedGraph::build(bytes, layout, &rows, 0, params, &mut |_, _| {}).unwrap();
            assert_eq!(reach.unreachable_after, 0, "{reach:?}");
            Box::new(graph)
        }
        IndexKind::HnswRs => Box::new(HnswRsGraph::build(g, dim(), params, 1000, |_| {}).unwrap()),
    }
}

fn recall(index: &dyn CandidateIndex, g: &[f32], q: &[Vec<f32>], k: usize, ef: usize) -> f64 {
    let mut hit = 0;
    for p in q {
        let truth: Vec<u32> = exact_search(g, dim(), p, k, None).iter().map(|h| h.id).collect();
        hit += index.search(p, k, ef).unwrap().iter().filter(|h| truth.contains(&h.id)).count();
    }
    hit as f64 / (k * q.len()) as f64
}

/// Recall against brute force, mates found, filters inside the walk.
fn suite_recall_and_filters(kind: IndexKind) {
    let (g, q) = gallery(3000, 17);
    let params = IndexParams { max_connections: 16, ef_construction: 200 };
    let index = build(kind, &g, &params);
    assert_eq!(index.len(), 3000);
    assert_eq!(index.kind(), kind);
    let r = recall(&*index, &g, &q, 10, 400);
    assert!(r >= 0.9, "{kind}: recall@10 at ef 400: {r}");
    // Mates (query i is another impression of finger i) are found.
    let mates = q
        .iter()
        .enumerate()
        .filter(|(i, p)| index.search(p, 30, 100).unwrap().iter().any(|h| h.id as usize == *i))
        .count();
    assert!(mates >= 85, "{kind}: mates in the top 30: {mates}/100");
    // Filters: nothing filtered out comes back, and the answers are the
    // allowed best (recall against the filtered brute force).
    for (name, allowed) in [
        ("a third", &(|id: u32| id.is_multiple_of(3)) as &dyn Fn(u32) -> bool),
        ("one in 50", &|id: u32| id.is_multiple_of(50)),
    ] {
        let mut hit = 0;
        for p in q.iter().take(30) {
            let r = index.search_filtered(p, 10, 200, allowed).unwrap();
            assert!(r.iter().all(|h| allowed(h.id)), "{kind}: a filtered-out point came back");
            assert_eq!(r.len(), 10, "{kind}, {name}");
            let truth: Vec<u32> = exact_search(&g, dim(), p, 10, Some(allowed)).iter().map(|h| h.id).collect();
            hit += r.iter().filter(|h| truth.contains(&h.id)).count();
        }
        let rate = hit as f64 / 300.0;
        assert!(rate >= 0.85, "{kind}: filtered recall ({name}): {rate}");
    }
    assert!(index.search_filtered(&q[0], 10, 50, &|_| false).unwrap().is_empty());
    // Scores are inner products, best first.
    let top = index.search(&q[0], 5, 64).unwrap();
    assert!(top.windows(2).all(|w| w[0].score >= w[1].score));
    let i = top[0].id as usize;
    assert!((top[0].score - dot(&q[0], &g[i * dim()..(i + 1) * dim()])).abs() < 1e-3);
}

#[test]
fn whorl_recall_against_brute_force_and_filters() {
    suite_recall_and_filters(IndexKind::Whorl);
}

#[test]
fn hnsw_rs_recall_against_brute_force_and_filters() {
    suite_recall_and_filters(IndexKind::HnswRs);
}

/// Bad vectors, queries and parameters are errors, never a crash.
fn suite_bad_input(kind: IndexKind) {
    let mut v = vec![0f32; 2 * dim()];
    v[0] = 1.0;
    v[dim() + 1] = 1.0;
    let params = IndexParams { max_connections: 300, ef_construction: 100 };
    let refused = match kind {
        IndexKind::Whorl => {
            let (bytes, layout) = stored(&v, VectorKind::F32);
            MappedGraph::build(bytes, layout, &[0, 1], 0, &params, &mut |_, _| {}).err()
        }
        IndexKind::HnswRs => HnswRsGraph::build(&v, dim(), &params, 10, |_| {}).err(),
    };
    assert!(matches!(refused, Some(IndexError::Params(_))), "{kind}");
    let index = build(kind, &v, &IndexParams::default());
    assert!(index.search(&[1.0, 0.0], 1, 10).is_err(), "{kind}: a query of the wrong dimension is refused");
    let mut nan = v[..dim()].to_vec();
    nan[3] = f32::NAN;
    assert!(index.search(&nan, 1, 10).is_err(), "{kind}: a query holding NaN is refused");
    assert_eq!(index.search(&v[..dim()], 0, 10).unwrap().len(), 0);
    assert_eq!(index.search(&v[..dim()], 5, 1).unwrap().len(), 2, "{kind}: k above the size");
    // Identical vectors (one template enrolled twice).
    let twice: Vec<f32> = v[..dim()].iter().cycle().take(200 * dim()).copied().collect();
    let index = build(kind, &twice, &IndexParams::default());
    assert_eq!(index.search(&v[..dim()], 5, 20).unwrap().len(), 5, "{kind}");
}

#[test]
fn whorl_refuses_bad_input_without_crashing() {
    suite_bad_input(IndexKind::Whorl);
    // A row the vectors do not hold is refused before any work.
    let one: Vec<f32> = (0..dim()).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect();
    let (bytes, layout) = stored(&one, VectorKind::F32);
    let e = MappedGraph::build(bytes, layout, &[0, 7], 0, &IndexParams::default(), &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, IndexError::Shape { .. }), "{e}");
}

#[test]
fn hnsw_rs_refuses_bad_input_without_crashing() {
    suite_bad_input(IndexKind::HnswRs);
    let ok = IndexParams::default();
    let mut v = vec![0f32; dim()];
    v[0] = 2.0;
    assert!(matches!(HnswRsGraph::build(&v, dim(), &ok, 10, |_| {}), Err(IndexError::NotUnit { id: 0, .. })));
}

/// Every point is reachable, and searched with itself as the query it is
/// found (the walk of Malkov and Yashunin's algorithm 2 can only return
/// what it reaches).
#[test]
fn every_point_is_reachable_and_finds_itself() {
    let (g, _) = gallery(4000, 23);
    let d = dim();
    for kind in [VectorKind::F32, VectorKind::I8] {
        let (bytes, layout) = stored(&g, kind);
        let rows: Vec<u32> = (0..4000).collect();
        let p = IndexParams { max_connections: 8, ef_construction: 64 };
        let (graph, reach) = MappedGraph::build(bytes, layout, &rows, 0, &p, &mut |_, _| {}).unwrap();
        assert_eq!((reach.unreachable_after, graph.unreachable().unwrap()), (0, 0), "{kind}: {reach:?}");
        // Found: the point itself, or a duplicate of it ranked first (the
        // synthetic gallery holds a few identical embeddings).
        let row = |i: usize| &g[i * d..(i + 1) * d];
        let found = (0..4000)
            .filter(|&i| {
                let top = graph.search(row(i), 1, 32).unwrap()[0].id as usize;
                top == i || row(top) == row(i)
            })
            .count();
        // The build checks each point's self-search over the int8 vectors
        // it was inserted with (for f32 rows, their int8 copy), so a query
        // scored as the search scores it can still miss a few: 3,992-3,999
        // found over 25 builds of each kind (parallel inserts make builds
        // differ). About 55 points are missed before the repair, so a
        // repair that stopped working would fall far below this floor.
        let want = 3985;
        assert!(found >= want, "{kind}: {found} of 4000 points find themselves at ef 32 ({reach:?})");
    }
}

/// The compact vector kinds cost little recall against f32 (same graph
/// parameters, same queries).
#[test]
fn f16_and_int8_vectors_cost_little_recall() {
    let (g, q) = gallery(3000, 29);
    let rows: Vec<u32> = (0..3000).collect();
    let p = IndexParams { max_connections: 16, ef_construction: 100 };
    let mut got = Vec::new();
    for kind in VectorKind::ALL {
        let (bytes, layout) = stored(&g, kind);
        let (graph, _) = MappedGraph::build(bytes, layout, &rows, 0, &p, &mut |_, _| {}).unwrap();
        got.push((kind, recall(&graph, &g, &q, 10, 128)));
    }
    let f32_recall = got[0].1;
    for (kind, r) in &got {
        assert!(*r >= f32_recall - 0.03, "{kind}: recall@10 {r} against f32's {f32_recall}");
    }
}

/// Every SIMD tier this CPU has computes what the portable kernels do.
#[test]
fn simd_kernels_agree_with_the_portable_ones() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let portable = tier_kernels(Tier::Portable).unwrap();
    let tiers: Vec<_> = [Tier::Avx2, Tier::Avx512].into_iter().filter_map(tier_kernels).collect();
    eprintln!("tiers run here: {:?}", tiers.iter().map(|k| k.tier).collect::<Vec<_>>());
    for len in [0, 1, 7, 15, 16, 17, 31, 33, 64, 100, 512, 515, 1024] {
        let a: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
        let h: Vec<u16> = b.iter().map(|x| half::f16::from_f32(*x).to_bits()).collect();
        let q: Vec<i16> = (0..len).map(|_| rng.random_range(-32767..=32767)).collect();
        let r: Vec<i8> = (0..len).map(|_| rng.random_range(-127..=127)).collect();
        for k in &tiers {
            let tol = 1e-4 * (len as f32).max(1.0);
            assert!(((k.f32)(&a, &b) - (portable.f32)(&a, &b)).abs() <= tol, "{:?} f32, len {len}", k.tier);
            assert!(((k.f16)(&a, &h) - (portable.f16)(&a, &h)).abs() <= tol, "{:?} f16, len {len}", k.tier);
            assert_eq!((k.i8)(&q, &r), (portable.i8)(&q, &r), "{:?} i8, len {len}", k.tier);
        }
        // Unequal lengths: the shorter one counts.
        assert_eq!((portable.i8)(&q, &r[..len / 2]), (portable.i8)(&q[..len / 2], &r[..len / 2]));
    }
}

/// Stored vectors decode close to what was encoded, and int8 scores stay
/// close to f32 inner products.
#[test]
fn vector_kinds_round_trip() {
    let (g, q) = gallery(50, 31);
    let d = dim();
    for kind in VectorKind::ALL {
        let (bytes, layout) = stored(&g, kind);
        let v: Vectors = layout.view((*bytes).as_ref()).unwrap();
        assert_eq!((v.len(), v.kind()), (50, kind));
        let mut row = vec![0f32; d];
        let mut query = whorl::index::vectors::Query::default();
        v.prepare(&q[0], &mut query);
        let scorer = v.scorer(&query);
        for i in 0..50 {
            assert!(v.row_into(i, &mut row));
            let want = &g[i * d..(i + 1) * d];
            let worst = row.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            let tol = match kind {
                VectorKind::F32 => 0.0,
                VectorKind::F16 => 1e-3,
                VectorKind::I8 => 0.5 / 127.0 * want.iter().fold(0f32, |m, x| m.max(x.abs())) + 1e-6,
            };
            assert!(worst <= tol, "{kind}: row {i} off by {worst}");
            let s = scorer.score(i);
            assert!((s - dot(&q[0], want)).abs() < 0.01, "{kind}: score {s} against {}", dot(&q[0], want));
        }
        assert!(!v.row_into(50, &mut row), "out of range");
        assert_eq!(scorer.score(50), f32::NEG_INFINITY);
    }
}

/// hnsw_rs files saved and reloaded give the same answers; a stale or
/// damaged index is refused (the gallery-level suite flips every file).
#[test]
fn hnsw_rs_persistence_is_checked() {
    let (g, q) = gallery(1000, 37);
    let params = IndexParams { max_connections: 16, ef_construction: 100 };
    let graph = HnswRsGraph::build(&g, dim(), &params, 1000, |_| {}).unwrap();
    let dir = tempdir("hnsw");
    let crc = vectors_crc(&g);
    let e = Embedder::default().id();
    let meta = saved::save_set(&[(0, &graph)], &dir, "idx", e, crc, params).unwrap();
    assert_eq!(meta.partitions[0].count, 1000);
    let counts = [(0u8, 1000usize)];
    let (back, _) = saved::load_set(&dir, "idx", true, (&e, crc, &counts)).unwrap();
    for p in q.iter().take(30) {
        let (a, b): (Vec<Hit>, Vec<Hit>) = (graph.search(p, 10, 64).unwrap(), back[0].1.search(p, 10, 64).unwrap());
        assert_eq!(a.iter().map(|h| h.id).collect::<Vec<_>>(), b.iter().map(|h| h.id).collect::<Vec<_>>());
    }
    drop(back);
    assert!(matches!(saved::load_set(&dir, "idx", true, (&e, crc ^ 1, &counts)), Err(IndexError::Stale(_))));
    assert!(matches!(saved::load_set(&dir, "other", true, (&e, crc, &counts)), Err(IndexError::Missing(_))));
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("whorl-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
