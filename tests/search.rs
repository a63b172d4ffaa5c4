//! The identification pipeline end to end, without the server: mates are
//! found, ten prints beat one, the threshold behaves as its FPIR says,
//! enrolments and deletions are seen at once, filters and bad requests.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use whorl::embed::Embedder;
use whorl::gallery::{self, BuildOptions, Gallery, GalleryOptions};
use whorl::index::IndexParams;
use whorl::mcc::{Matcher, MccParams};
use whorl::rescore::{CpuRescorer, Rescorer};
use whorl::search::impostor::ImpostorModel;
use whorl::search::{Decision, Query, SearchConfig, SearchError, Searcher};
use whorl::synth::{Subjects, Synth, SynthParams};
use whorl::template::{FingerPosition, Template};

const SUBJECTS: u64 = 400;
const FINGERS: u32 = 4;

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("whorl-search-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn population() -> Subjects {
    Subjects::new(Synth::new(SynthParams::default(), 21), FINGERS)
}

/// A gallery of SUBJECTS subjects × FINGERS fingers, labelled by parity, in two shards.
fn gallery(name: &str) -> (PathBuf, Arc<Gallery>) {
    let dir = tempdir(name);
    let pop = population();
    let items = (0..SUBJECTS).flat_map(move |s| {
        let labels = vec![("list".to_string(), if s % 2 == 0 { "even" } else { "odd" }.to_string())];
        pop.templates(s, 0).into_iter().map(move |t| (Subjects::id(s), labels.clone(), t))
    });
    let opts = BuildOptions {
        shard_size: (SUBJECTS as usize * FINGERS as usize) / 2,
        index: IndexParams { max_connections: 16, ef_construction: 100 },
        ..BuildOptions::default()
    };
    gallery::build(&dir, &Embedder::default(), &Matcher::default(), &opts, items, |_, _| {}).unwrap();
    let gopts = GalleryOptions { index: opts.index, ..GalleryOptions::default() };
    let g = Gallery::open(&dir, Embedder::default(), Matcher::default(), gopts).unwrap();
    (dir, Arc::new(g))
}

fn searcher(g: &Arc<Gallery>, cfg: SearchConfig) -> Searcher {
    let model = ImpostorModel::builtin(whorl::shard::mcc_params_crc(&MccParams::default())).unwrap();
    let r: Arc<dyn Rescorer> = Arc::new(CpuRescorer::new(Matcher::default()));
    Searcher::new(Arc::clone(g), r, model, cfg).unwrap()
}

fn query(fingers: Vec<Template>) -> Query {
    Query { fingers, ..Query::default() }
}

/// Rank-1 rate and mean fused score of the mates, probing with `n` fingers of impression 1.
fn rank1(s: &Searcher, n: usize, probes: u64) -> (f64, f64) {
    let pop = population();
    let (mut hits, mut fused) = (0, 0.0);
    for subject in (0..SUBJECTS).step_by((SUBJECTS / probes) as usize) {
        let fingers: Vec<Template> = pop.templates(subject, 1).into_iter().take(n).collect();
        let r = s.identify(&query(fingers)).unwrap();
        let top = &r.candidates[0];
        if top.subject == Subjects::id(subject) {
            hits += 1;
        }
        fused += r.candidates.iter().find(|c| c.subject == Subjects::id(subject)).map_or(0.0, |c| c.fused);
    }
    (hits as f64 / probes as f64, fused / probes as f64)
}

#[test]
fn mates_are_found_and_ten_prints_beat_one() {
    let (dir, g) = gallery("rank");
    for cfg in
        [SearchConfig::default(), SearchConfig { exact_below: 0, candidates_per_finger: 40, ..SearchConfig::default() }]
    {
        let s = searcher(&g, cfg.clone());
        let (one, f1) = rank1(&s, 1, 50);
        let (four, f4) = rank1(&s, 4, 50);
        eprintln!(
            "exact_below {}: rank-1 one finger {one:.2} ({f1:.1} decades), four {four:.2} ({f4:.1})",
            cfg.exact_below
        );
        assert!(one >= 0.7, "single-finger rank-1 {one}");
        assert!(four >= one && four >= 0.95, "four-finger rank-1 {four} vs single {one}");
        assert!(f4 > f1 + 3.0, "fusion adds evidence: {f4} vs {f1}");
    }
    let s = searcher(&g, SearchConfig::default());
    let pop = population();
    let r = s.identify(&query(pop.templates(3, 1))).unwrap();
    assert!(r.hit && r.candidates[0].hit && r.candidates[0].subject == Subjects::id(3));
    assert_eq!(r.candidates[0].fingers.len(), FINGERS as usize);
    assert_eq!(r.candidates[0].labels, vec![("list".to_string(), "odd".to_string())]);
    assert!(r.operating_point.subjects == SUBJECTS && (r.operating_point.target_fpir - 0.01).abs() < 1e-12);
    assert!(r.timings.total >= r.timings.rescore && r.comparisons > 0 && r.backend.starts_with("cpu"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn non_mated_searches_rarely_hit_and_the_threshold_follows_the_fpir() {
    let (dir, g) = gallery("fpir");
    let s = searcher(&g, SearchConfig::default());
    let pop = population();
    let mut false_hits = 0;
    let mut best = Vec::new();
    for subject in SUBJECTS..SUBJECTS + 100 {
        let r = s.identify(&query(pop.templates(subject, 1).into_iter().take(1).collect())).unwrap();
        false_hits += usize::from(r.hit);
        best.push(r.candidates[0].fused);
    }
    // Target 1%: 100 non-mated searches should give about one false hit.
    assert!(false_hits <= 5, "{false_hits} false positives in 100 non-mated searches at FPIR 1%");
    // A looser target admits more, a threshold of 0 admits all.
    let loose = Query { decision: Some(Decision::Fpir(0.5)), ..query(pop.templates(SUBJECTS + 1, 1)) };
    let strict = Query { decision: Some(Decision::Fpir(1e-6)), ..loose.clone() };
    assert!(
        s.identify(&loose).unwrap().operating_point.threshold < s.identify(&strict).unwrap().operating_point.threshold
    );
    let all = Query { decision: Some(Decision::Threshold(0.0)), ..loose };
    assert!(s.identify(&all).unwrap().hit);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn enrolments_and_deletions_are_seen_at_once_and_filters_hold() {
    let (dir, g) = gallery("enrol");
    let s = searcher(&g, SearchConfig::default());
    // A new person, enrolled while the gallery serves.
    let newcomer = Subjects::new(Synth::new(SynthParams::default(), 777), FINGERS);
    let probe = query(newcomer.templates(5, 1));
    assert_ne!(s.identify(&probe).unwrap().candidates[0].subject, "NEW-1");
    g.enroll("NEW-1", vec![("list".into(), "watch".into())], newcomer.templates(5, 0)).unwrap();
    let r = s.identify(&probe).unwrap();
    assert_eq!(r.candidates[0].subject, "NEW-1");
    assert!(r.hit && r.candidates[0].fingers.iter().all(|f| f.source == "delta"));
    // Deleted: gone from the next search, in shards and delta alike.
    g.delete("NEW-1").unwrap();
    assert!(s.identify(&probe).unwrap().candidates.iter().all(|c| c.subject != "NEW-1"));
    let pop = population();
    let shard_probe = query(pop.templates(8, 1));
    assert_eq!(s.identify(&shard_probe).unwrap().candidates[0].subject, Subjects::id(8));
    g.delete(&Subjects::id(8)).unwrap();
    let r = s.identify(&shard_probe).unwrap();
    assert!(r.candidates.iter().all(|c| c.subject != Subjects::id(8)) && !r.hit);
    // Label filters: subject 9 is "odd".
    let p9 = pop.templates(9, 1);
    let odd = Query { labels: vec![("list".into(), "odd".into())], ..query(p9.clone()) };
    let r = s.identify(&odd).unwrap();
    assert_eq!(r.candidates[0].subject, Subjects::id(9));
    assert!(r.candidates.iter().all(|c| c.labels.contains(&("list".to_string(), "odd".to_string()))));
    let even = Query { labels: vec![("list".into(), "even".into())], ..query(p9) };
    let r = s.identify(&even).unwrap();
    assert!(r.candidates.iter().all(|c| c.subject != Subjects::id(9) && c.labels[0].1 == "even"));
    let nobody = Query { labels: vec![("list".into(), "nobody".into())], ..query(pop.templates(9, 1)) };
    let r = s.identify(&nobody).unwrap();
    assert!(r.candidates.is_empty() && !r.hit);
    let _ = std::fs::remove_dir_all(dir);
}

/// Phase 4: the strongest subjects are compared again with the second,
/// geometric pass; they head the list, their scores are the verified
/// score of the best template (recomputed here from the templates), and
/// only they can be a hit. Without the verified model nothing is verified
/// and the scores are the matcher's.
#[test]
fn the_strongest_candidates_are_verified_by_the_second_pass() {
    let verify_top = SearchConfig::default().verify_subjects;
    let (dir, g) = gallery("second");
    let m = Matcher::default();
    let pop = population();
    let s = searcher(&g, SearchConfig::default());
    let (mut mates, mut searches) = (0, 0);
    for subject in [3u64, 8, 15, 22, 31, 47] {
        let probe: Vec<Template> = pop.templates(subject, 1).into_iter().take(1).collect();
        let r = s.identify(&Query { max_candidates: verify_top + 5, ..query(probe.clone()) }).unwrap();
        assert!(r.candidates.len() > verify_top, "{} candidates", r.candidates.len());
        let head = r.candidates.iter().take_while(|c| c.verified).count();
        assert_eq!(head, verify_top, "the strongest {verify_top} are verified, first");
        assert!(r.candidates.iter().skip(head).all(|c| !c.verified && !c.hit));
        assert!(r.candidates.windows(2).take(head - 1).all(|w| w[0].fused >= w[1].fused), "verified ones ranked");
        let top = &r.candidates[0];
        if top.subject == Subjects::id(subject) {
            mates += 1;
            let (p, t) = (m.prepare(&probe[0]), m.prepare(&pop.templates(subject, 0)[0]));
            let v = m.verify_parts(p.view(), t.view(), &mut whorl::mcc::Scratch::new());
            assert_eq!(top.fingers.len(), 1);
            assert_eq!(top.fingers[0].score, v.score(), "subject {subject}: the verified score of the mate");
            assert!(
                v.consensus.accepted > 1 && v.score() < m.score(p.view(), t.view(), &mut whorl::mcc::Scratch::new())
            );
        }
        searches += 1;
    }
    assert!(mates >= 5, "{mates} of {searches} mates first");
    // Without the verified model: nothing verified, the matcher's scores.
    let mut plain_model = ImpostorModel::builtin(whorl::shard::mcc_params_crc(&MccParams::default())).unwrap();
    plain_model.verified = None;
    let r: Arc<dyn Rescorer> = Arc::new(CpuRescorer::new(Matcher::default()));
    let plain = Searcher::new(Arc::clone(&g), r, plain_model, SearchConfig::default()).unwrap();
    let probe: Vec<Template> = pop.templates(3, 1).into_iter().take(1).collect();
    let r = plain.identify(&query(probe.clone())).unwrap();
    assert!(r.candidates.iter().all(|c| !c.verified) && r.candidates[0].subject == Subjects::id(3));
    let (p, t) = (m.prepare(&probe[0]), m.prepare(&pop.templates(3, 0)[0]));
    assert_eq!(r.candidates[0].fingers[0].score, m.score(p.view(), t.view(), &mut whorl::mcc::Scratch::new()));
    // 1:1 is verified too.
    let v = s.verify(&Subjects::id(3), &probe, None, None).unwrap();
    assert!(v.candidates[0].verified && v.hit);
    // The setting: 3 verifies the strongest 3; 0 turns the pass off, 1:1
    // too, and the matcher's scores and model decide.
    let cfg = |n| SearchConfig { verify_subjects: n, ..SearchConfig::default() };
    let three = searcher(&g, cfg(3)).identify(&query(probe.clone())).unwrap();
    assert_eq!(three.candidates.iter().take_while(|c| c.verified).count(), 3);
    assert!(three.candidates.iter().skip(3).all(|c| !c.verified && !c.hit));
    let off = searcher(&g, cfg(0));
    let r0 = off.identify(&query(probe.clone())).unwrap();
    assert!(r0.candidates.iter().all(|c| !c.verified) && r0.candidates[0].subject == Subjects::id(3));
    assert_eq!(r0.candidates[0].fingers[0].score, r.candidates[0].fingers[0].score, "the matcher's score");
    let v0 = off.verify(&Subjects::id(3), &probe, None, None).unwrap();
    assert!(!v0.candidates[0].verified);
    let err = Searcher::new(
        Arc::clone(&g),
        Arc::new(CpuRescorer::new(Matcher::default())),
        ImpostorModel::builtin(whorl::shard::mcc_params_crc(&MccParams::default())).unwrap(),
        cfg(whorl::search::MAX_VERIFY_SUBJECTS + 1),
    );
    assert!(matches!(err, Err(SearchError::Invalid(m)) if m.contains("verify_subjects")));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn verification_is_one_to_one() {
    let (dir, g) = gallery("verify");
    let s = searcher(&g, SearchConfig::default());
    let pop = population();
    let (mut genuine, mut impostor) = (0, 0);
    for subject in 0..40 {
        let r = s.verify(&Subjects::id(subject), &pop.templates(subject, 1), None, None).unwrap();
        assert!(r.operating_point.subjects == 1 && r.candidates.len() == 1, "{r:?}");
        genuine += usize::from(r.hit);
        let r = s.verify(&Subjects::id(subject + 1), &pop.templates(subject, 1), None, None).unwrap();
        impostor += usize::from(r.hit);
    }
    // At the default 1% FMR: the mates pass, about 0.4 of 40 impostors do.
    assert!(genuine >= 38 && impostor <= 3, "genuine {genuine}/40, impostor {impostor}/40");
    assert!(matches!(s.verify("nobody", &pop.templates(12, 1), None, None), Err(SearchError::NotFound(_))));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_requests_are_refused_with_the_reason() {
    let (dir, g) = gallery("bad");
    let s = searcher(&g, SearchConfig::default());
    let pop = population();
    let t = pop.templates(1, 1);
    let invalid = |q: Query, want: &str| match s.identify(&q) {
        Err(SearchError::Invalid(m)) => assert!(m.contains(want), "{m}"),
        other => panic!("expected Invalid({want}), got {other:?}"),
    };
    invalid(query(vec![]), "no finger templates");
    invalid(query((0..11).map(|_| t[0].clone()).collect()), "at most 10");
    invalid(query(vec![t[0].clone(), t[0].clone()]), "appears twice");
    let mut empty = t[0].clone();
    empty.minutiae.clear();
    invalid(query(vec![t[1].clone(), empty]), "finger 1: the template has no minutiae");
    let mut odd = t[0].clone();
    odd.finger_position = FingerPosition(13);
    invalid(query(vec![odd]), "finger position 13");
    invalid(Query { decision: Some(Decision::Fpir(1.5)), ..query(t.clone()) }, "FPIR");
    invalid(Query { decision: Some(Decision::Threshold(f64::NAN)), ..query(t.clone()) }, "threshold");
    let late = Query {
        cancel: whorl::cancel::Cancel::until(Some(Instant::now() - Duration::from_millis(1))),
        ..query(t.clone())
    };
    assert!(matches!(s.identify(&late), Err(SearchError::Deadline(_))));
    // Unknown positions are compared with every position and still find the mate.
    let unknown: Vec<Template> = t
        .iter()
        .cloned()
        .map(|mut x| {
            x.finger_position = FingerPosition::UNKNOWN;
            x
        })
        .collect();
    let r = s.identify(&query(unknown)).unwrap();
    assert_eq!(r.candidates[0].subject, Subjects::id(1));
    assert!(r.candidates[0].fingers.iter().all(|f| f.tries == FINGERS as usize));
    let _ = std::fs::remove_dir_all(dir);
}

/// A shard whose cylinders were damaged after they were written (format 3
/// checks them template by template, at the first read, not at open): the
/// search that reads the damaged template is refused with the file, the
/// section and the template named, the shard is listed among the
/// gallery's problems, and no later search reads it.
#[test]
fn a_search_never_scores_damaged_cylinders() {
    let (dir, g) = gallery("damaged");
    let (file, offset, t) = {
        let snap = g.snapshot();
        let ls = &snap.shards[0];
        let t = ls.by_subject[&Subjects::id(2)][0] as usize;
        let p = ls.shard.prepared(t).unwrap().words().len();
        let (_, off, _, _) =
            ls.shard.sections().into_iter().find(|x| x.0 == whorl::shard::SectionKind::Prepared).unwrap();
        // Word offset of template t: the cylinders before it, read back through the public API.
        let before: usize = (0..t).map(|u| ls.shard.prepared(u).unwrap().words().len()).sum();
        (dir.join(&ls.entry.file), off as usize + 8 * (before + p / 2), t)
    };
    drop(g);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[offset] ^= 0x10;
    std::fs::write(&file, &bytes).unwrap();
    let gopts = GalleryOptions {
        index: IndexParams { max_connections: 16, ef_construction: 100 },
        ..GalleryOptions::default()
    };
    let g = Arc::new(Gallery::open(&dir, Embedder::default(), Matcher::default(), gopts).unwrap());
    assert!(g.problems().is_empty(), "the serving check leaves cylinders to their first read: {:?}", g.problems());
    let s = searcher(&g, SearchConfig::default());
    let probe = population().templates(2, 1);
    match s.identify(&query(probe.clone())) {
        Err(SearchError::Internal(m)) => {
            assert!(
                m.contains("prepared cylinders") && m.contains(&format!("template {t}:")) && m.contains("CRC32C"),
                "{m}"
            )
        }
        other => panic!("a search read damaged cylinders: {other:?}"),
    }
    let problems = g.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].error.contains("refused"), "{problems:?}");
    // Every later search that reaches the shard is refused too.
    for subject in [3, 4, 5] {
        assert!(s.identify(&query(population().templates(subject, 1))).is_err(), "subject {subject} served");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The GPU backend through the whole pipeline (1 MiB bindings, 64 items per
/// dispatch, so candidates stream in several groups and batches): every
/// reply equals the CPU's, candidate for candidate and score for score.
#[test]
fn the_gpu_backend_gives_the_cpus_replies() {
    let Some(gpu) = common::gpu_or_skip("search on the GPU", common::small_gpu_limits()) else { return };
    let (dir, g) = gallery("gpu");
    let model = || ImpostorModel::builtin(whorl::shard::mcc_params_crc(&MccParams::default())).unwrap();
    let on_gpu = Searcher::new(Arc::clone(&g), Arc::new(gpu), model(), SearchConfig::default()).unwrap();
    let on_cpu = searcher(&g, SearchConfig::default());
    let pop = population();
    let mut compared = 0;
    for (s, n) in [(2u64, 1usize), (17, 4), (133, 2), (SUBJECTS + 5, 4)] {
        let q = query(pop.templates(s, 1).into_iter().take(n).collect());
        let (a, b) = (on_gpu.identify(&q).unwrap(), on_cpu.identify(&q).unwrap());
        assert!(a.backend.starts_with("gpu"), "{}", a.backend);
        assert_eq!(
            (a.hit, &a.candidates, a.comparisons),
            (b.hit, &b.candidates, b.comparisons),
            "subject {s}, {n} fingers"
        );
        compared += a.comparisons;
    }
    assert!(compared > 500, "{compared} comparisons");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ef_grows_with_the_partition_size() {
    let c = SearchConfig::default();
    assert_eq!(c.ef_for(512, 100, 50_000), 512);
    assert_eq!(c.ef_for(512, 100, 100_000), 512);
    assert_eq!(c.ef_for(512, 100, 300_000), 1536);
    assert_eq!(c.ef_for(512, 100, 100_001), 513, "rounded up");
    assert_eq!(c.ef_for(50, 100, 10), 100, "never below k");
    let off = SearchConfig { ef_reference: 0, ..SearchConfig::default() };
    assert_eq!(off.ef_for(512, 100, 300_000), 512);
    let small = SearchConfig { ef_reference: 10, ..SearchConfig::default() };
    assert_eq!(small.ef_for(512, 100, 1000), 1000, "never beyond the partition");
    assert_eq!(small.ef_for(usize::MAX, 1, usize::MAX), usize::MAX, "no overflow");
}

/// The breadth `ef_for` gives is the one the graph walk uses: with
/// `ef_reference` at 1 a walk asked for ef = k covers the whole partition
/// and finds what a walk with an ef beyond the partition's size finds; with
/// scaling off, ef = k finds less.
#[test]
fn the_scaled_ef_reaches_the_graph_walk() {
    use whorl::cancel::Cancel;
    use whorl::search::local;
    let (dir, g) = gallery("ef-scaled");
    let pop = population();
    let k = 5;
    let lists = |ef_reference: usize, ef: usize| -> Vec<Vec<(String, u32)>> {
        let s = searcher(&g, SearchConfig { exact_below: 0, ef_reference, ..SearchConfig::default() });
        let mut out = Vec::new();
        for subject in (0..SUBJECTS).step_by(4) {
            let probe = s.prepare(&pop.templates(subject, 1)[..1], &Cancel::default()).unwrap();
            let found = local::candidates(&s, &s.views(), &probe, &[], k, ef, &Cancel::default()).unwrap();
            out.push(found.lists[0].iter().map(|c| (c.template.subject.to_string(), c.template.ordinal)).collect());
        }
        out
    };
    let everything = lists(0, 100_000);
    assert_eq!(everything.len(), SUBJECTS as usize / 4);
    assert!(everything.iter().all(|l| l.len() == k));
    assert_eq!(lists(1, k), everything, "ef scaled to the whole partition walks it all");
    assert_ne!(lists(0, k), everything, "ef = k = {k} should miss some of the full walk's candidates");
    let _ = std::fs::remove_dir_all(dir);
}
