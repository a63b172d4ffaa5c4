//! One test suite, run against the CPU and the GPU backends: both must give
//! the matcher's integers exactly (and so the same scores).
//!
//! GPU tests need an adapter (lavapipe in CI). Without one they say
//! "skipped: no adapter" loudly, unless `WHORL_REQUIRE_GPU` is `1` (any
//! adapter, software included: CI sets it) or `hardware` (a hardware
//! adapter), which turn the skip into a failure.

mod common;

use whorl::gpu::{GpuOptions, GpuRescorer};
use whorl::mcc::{Matcher, Prepared, ScoreParts, Scratch};
use whorl::rescore::{AutoRescorer, Backend, Candidate, CpuRescorer, Location, Query, Rescorer};
use whorl::synth::{Synth, SynthParams};
use whorl::template::{Minutia, MinutiaKind, Template};

/// The GPU backend with the device's own limits.
fn gpu() -> Option<GpuRescorer> {
    common::gpu_or_skip("rescore", GpuOptions::default())
}

/// The GPU backend with 1 MiB bindings and 64 items per dispatch: every
/// test gallery spans several chunks and dispatches.
fn gpu_small() -> Option<GpuRescorer> {
    common::gpu_or_skip("rescore (small bindings)", common::small_gpu_limits())
}

/// Templates that stress the edges: empty, one minutia, two, duplicates, a
/// line, a huge one, plus ordinary synthetic ones.
fn tricky() -> Vec<Template> {
    let m = |x: f32, y: f32, a: f32| Minutia::new(x, y, a, MinutiaKind::Ending, 0);
    let mut out = vec![
        Template::default(),
        Template { minutiae: vec![m(100.0, 100.0, 1.0)], ..Template::default() },
        Template { minutiae: vec![m(100.0, 100.0, 1.0), m(130.0, 100.0, 1.2)], ..Template::default() },
        Template { minutiae: vec![m(60.0, 60.0, 0.3); 12], ..Template::default() },
        Template {
            minutiae: (0..25).map(|i| m(20.0 + 9.0 * i as f32, 150.0, 0.1 * i as f32)).collect(),
            ..Template::default()
        },
    ];
    // A big one: 225 cylinders, so the GPU's Γ stage runs many rounds.
    let grid = (0..225)
        .map(|i| {
            let (x, y) = ((i % 15) as f32, (i / 15) as f32);
            m(
                40.0 + 22.0 * x + (i * 7 % 5) as f32,
                40.0 + 22.0 * y + (i * 3 % 7) as f32,
                0.3 * x + 0.2 * y + (i % 3) as f32,
            )
        })
        .collect();
    out.push(Template { minutiae: grid, width: 500, height: 500, ..Template::default() });
    out.extend(Synth::new(SynthParams::default(), 12).batch(0..30, 0..2).into_iter().map(|r| r.template));
    out
}

fn check_backend(r: &dyn Rescorer, name: &str) {
    let m = Matcher::default();
    let ts = tricky();
    let prepared: Vec<Prepared> = ts.iter().map(|t| m.prepare(t)).collect();
    assert!(prepared.iter().any(|p| p.len() > 150), "a template with many cylinders is covered");
    assert!(prepared.iter().any(|p| p.is_empty()), "an empty template is covered");
    let queries: Vec<Query> = prepared
        .iter()
        .map(|p| Query {
            probe: p.view(),
            candidates: prepared.iter().map(|c| Candidate { prepared: c.view(), location: None }).collect(),
        })
        .collect();
    let got = r.rescore(&queries).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut s = Scratch::new();
    for (qi, q) in queries.iter().enumerate() {
        for (ci, c) in q.candidates.iter().enumerate() {
            let want = m.score_parts(q.probe, c.prepared, &mut s);
            assert_eq!(got[qi][ci], want, "{name}: probe {qi} vs candidate {ci}");
            assert!((got[qi][ci].score() - want.score()).abs() <= 1e-6);
        }
    }
    // An empty query list and queries without candidates.
    assert!(r.rescore(&[]).unwrap().is_empty());
    let none = Query { probe: prepared[6].view(), candidates: vec![] };
    assert_eq!(r.rescore(&[none]).unwrap(), vec![Vec::<ScoreParts>::new()]);
}

fn fvc_queries(m: &Matcher) -> Option<(Vec<Prepared>, whorl::eval::Pairs)> {
    let dirs = common::fvc_split_or_skip("fvc2002 parity", whorl::data::Split::All)?;
    let mut prepared = Vec::new();
    let mut pairs = Vec::new();
    for d in dirs {
        let db = whorl::eval::load_database(&d).unwrap();
        let base = prepared.len();
        prepared.extend(db.entries.iter().map(|e| m.prepare(&e.template)));
        let (g, i) = whorl::eval::protocol_pairs(&db);
        pairs.extend(g.into_iter().chain(i).map(|(a, b)| (base + a, base + b)));
    }
    Some((prepared, pairs))
}

fn check_fvc(r: &dyn Rescorer, name: &str) {
    let m = Matcher::default();
    let Some((prepared, pairs)) = fvc_queries(&m) else { return };
    // Group the protocol's pairs by probe.
    let mut by_probe: Vec<Vec<usize>> = vec![Vec::new(); prepared.len()];
    for &(a, b) in &pairs {
        by_probe[a].push(b);
    }
    let queries: Vec<Query> = by_probe
        .iter()
        .enumerate()
        .map(|(a, bs)| Query {
            probe: prepared[a].view(),
            candidates: bs.iter().map(|&b| Candidate { prepared: prepared[b].view(), location: None }).collect(),
        })
        .collect();
    let got = r.rescore(&queries).unwrap();
    let mut s = Scratch::new();
    let mut n = 0;
    for (a, bs) in by_probe.iter().enumerate() {
        for (k, &b) in bs.iter().enumerate() {
            assert_eq!(got[a][k], m.score_parts(prepared[a].view(), prepared[b].view(), &mut s), "{name}: {a} vs {b}");
            n += 1;
        }
    }
    assert_eq!(n, 4 * 3160);
}

#[test]
fn cpu_backend_gives_the_matchers_integers() {
    let cpu = CpuRescorer::new(Matcher::default());
    check_backend(&cpu, "cpu");
    check_fvc(&cpu, "cpu");
}

#[test]
fn gpu_backend_gives_the_matchers_integers() {
    let Some(g) = gpu() else { return };
    check_backend(&g, "gpu");
    check_fvc(&g, "gpu");
}

/// The same with small bindings and dispatches: the streamed candidates
/// split into several groups and each group into several batches.
#[test]
fn gpu_backend_in_small_bindings_gives_the_matchers_integers() {
    let Some(g) = gpu_small() else { return };
    assert_eq!(g.max_binding(), 1 << 20);
    check_backend(&g, "gpu, 1 MiB bindings");
    check_fvc(&g, "gpu, 1 MiB bindings");
    // 2 probes × 400 streamed candidates: several binding-sized groups, 64 items per dispatch.
    let m = Matcher::default();
    let s = Synth::new(SynthParams::default(), 4);
    let gallery: Vec<Prepared> = (0..400).map(|i| m.prepare(&s.template(i, 0))).collect();
    let probes: Vec<Prepared> = (0..2).map(|i| m.prepare(&s.template(i, 1))).collect();
    let queries: Vec<Query> = probes
        .iter()
        .map(|p| Query {
            probe: p.view(),
            candidates: gallery.iter().map(|c| Candidate { prepared: c.view(), location: None }).collect(),
        })
        .collect();
    let got = g.rescore(&queries).unwrap();
    let t = g.last_timings();
    let bytes: usize = gallery.iter().map(|p| p.words().len() * 8).sum::<usize>() * 2;
    assert!(bytes as u64 > 2 * g.max_binding(), "{bytes} bytes streamed: several groups");
    assert!(t.dispatches >= 800 / 64 && t.items == 800, "{t:?}");
    let cpu = CpuRescorer::new(m);
    assert_eq!(got, cpu.rescore(&queries).unwrap());
}

/// Candidates read from resident shard buffers score like streamed ones,
/// also when the binding limit forces several chunks.
#[test]
fn gpu_resident_shards_match_streamed() {
    let Some(g) = gpu_small() else { return };
    let m = Matcher::default();
    let s = Synth::new(SynthParams::default(), 3);
    let prepared: Vec<Prepared> = (0..400).map(|i| m.prepare(&s.template(i, 0))).collect();
    let mut words = Vec::new();
    let mut offsets = vec![0u64];
    for p in &prepared {
        words.extend_from_slice(p.words());
        offsets.push(words.len() as u64);
    }
    assert!(g.make_resident(7, &words, &offsets).unwrap());
    let chunks = (words.len() * 8) as u64 / g.max_binding();
    assert!(chunks >= 2, "{} bytes in bindings of {}: several chunks", words.len() * 8, g.max_binding());
    let probe = m.prepare(&s.template(5, 1));
    let q = Query {
        probe: probe.view(),
        candidates: prepared
            .iter()
            .enumerate()
            .map(|(i, p)| Candidate { prepared: p.view(), location: Some(Location { shard: 7, template: i as u32 }) })
            .collect(),
    };
    let resident = g.rescore(std::slice::from_ref(&q)).unwrap();
    let streamed_q = Query {
        probe: probe.view(),
        candidates: q.candidates.iter().map(|c| Candidate { location: None, ..*c }).collect(),
    };
    assert_eq!(resident, g.rescore(&[streamed_q]).unwrap());
    let t = g.last_timings();
    assert_eq!(t.items, 400);
    g.evict(7);
    assert_eq!(g.resident_bytes(), 0);
}

/// A lost device or a missing adapter falls back to the CPU: same answers,
/// logged, never a crash.
#[test]
fn the_fallback_takes_over_when_the_gpu_is_lost() {
    let m = Matcher::default();
    let cpu = CpuRescorer::new(m.clone());
    let s = Synth::new(SynthParams::default(), 9);
    let prepared: Vec<Prepared> = (0..20).map(|i| m.prepare(&s.template(i, 0))).collect();
    let q = Query {
        probe: prepared[0].view(),
        candidates: prepared.iter().map(|p| Candidate { prepared: p.view(), location: None }).collect(),
    };
    let want = cpu.rescore(std::slice::from_ref(&q)).unwrap();
    // No GPU at all: CPU answers.
    let auto = AutoRescorer::new(None, cpu.clone());
    assert!(matches!(auto.backend(), Backend::Cpu(_)));
    assert_eq!(auto.rescore(std::slice::from_ref(&q)).unwrap(), want);
    // A GPU that dies.
    let Some(g) = gpu() else { return };
    g.context().destroy();
    assert!(g.rescore(std::slice::from_ref(&q)).is_err(), "a destroyed device must report an error");
    let auto = AutoRescorer::new(Some(Box::new(g)), cpu);
    assert_eq!(auto.rescore(std::slice::from_ref(&q)).unwrap(), want);
    assert!(!auto.gpu_active(), "after a lost device the CPU takes over for good");
}

/// The GPU's popcounts of every cylinder pair equal the CPU's, count for count.
#[test]
fn gpu_popcounts_equal_the_cpus() {
    let Some(g) = gpu() else { return };
    let m = Matcher::default();
    let ts = tricky();
    let prepared: Vec<Prepared> = ts.iter().map(|t| m.prepare(t)).collect();
    let mut compared = 0;
    for a in prepared.iter().step_by(3) {
        for b in prepared.iter().skip(1).step_by(4) {
            let got = g.pair_counts(a.view(), b.view()).unwrap();
            assert_eq!(got.len(), a.len() * b.len());
            for (k, c) in got.iter().enumerate() {
                assert_eq!(*c, Matcher::pair_counts(a.view(), k / b.len(), b.view(), k % b.len()), "pair {k}");
                compared += 1;
            }
        }
    }
    assert!(compared > 50_000, "{compared}");
}
