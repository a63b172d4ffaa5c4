//! Cylinder matcher throughput: preparation (templates/s) and matching
//! (matches/s) on 1 and 2 threads, with the portable and the fastest kernel.
//!
//! `cargo bench --bench mcc`. The gallery is the 320 FVC2002 templates
//! (synthetic ones when ../shared/data is absent), prepared once and
//! repeated; the probe is DB1_B/101_2 as in OpenAFIS's benchmark.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use std::hint::black_box;
use whorl::mcc::{Matcher, Prepared, PreparedRef, Scratch};
use whorl::synth::{Synth, SynthParams};
use whorl::template::Template;

fn templates() -> (Template, Vec<Template>) {
    if let Some(root) = whorl::data::data_dir() {
        let mut all = Vec::new();
        let mut probe = None;
        for db in 1..=4 {
            let dir = root.join(format!("fvc2002/DB{db}_B"));
            let Ok(rd) = std::fs::read_dir(&dir) else { continue };
            let mut files: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            files.sort();
            for f in files {
                let Ok(bytes) = std::fs::read(&f) else { continue };
                let Ok(mut t) = whorl::template::parse(&bytes) else { continue };
                let t = t.remove(0);
                if db == 1 && f.file_name().is_some_and(|n| n == "101_2.iso") {
                    probe = Some(t.clone());
                }
                all.push(t);
            }
        }
        if let Some(p) = probe {
            return (p, all);
        }
    }
    let s = Synth::new(SynthParams::default(), 1);
    let all: Vec<Template> = s.batch(0..40, 0..8).into_iter().map(|r| r.template).collect();
    (all[1].clone(), all)
}

fn prepare(c: &mut Criterion) {
    let (_, all) = templates();
    let m = Matcher::default();
    let mut g = c.benchmark_group("mcc prepare");
    g.throughput(Throughput::Elements(all.len() as u64));
    g.bench_function("templates, 1 thread", |b| {
        b.iter(|| all.iter().map(|t| m.prepare(black_box(t)).len()).sum::<usize>())
    });
    g.finish();
}

fn matching(c: &mut Criterion) {
    let (probe, all) = templates();
    let mut g = c.benchmark_group("mcc match");
    for (name, m) in [("fastest kernel", Matcher::default()), ("portable kernel", Matcher::default().portable())] {
        let p = m.prepare(&probe);
        let gallery: Vec<Prepared> = all.iter().map(|t| m.prepare(t)).collect();
        let refs: Vec<PreparedRef> = (0..100_000).map(|i| gallery[i % gallery.len()].view()).collect();
        g.throughput(Throughput::Elements(gallery.len() as u64));
        g.bench_function(BenchmarkId::new(name, "probe vs 320, 1 thread"), |b| {
            let mut s = Scratch::new();
            b.iter(|| gallery.iter().map(|t| m.score(p.view(), t.view(), &mut s)).sum::<f32>())
        });
        g.throughput(Throughput::Elements(refs.len() as u64));
        g.sample_size(10);
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
            g.bench_function(BenchmarkId::new(name, format!("probe vs 100k, {threads} threads")), |b| {
                b.iter(|| {
                    pool.install(|| {
                        refs.par_chunks(2048)
                            .map_init(Scratch::new, |s, ch| ch.iter().map(|t| m.score(p.view(), *t, s)).sum::<f32>())
                            .sum::<f32>()
                    })
                })
            });
        }
        g.sample_size(100);
    }
    g.finish();
}

/// The second, geometric pass's cost next to the plain comparison, the
/// same probe against the same 320 templates.
fn verifying(c: &mut Criterion) {
    let (probe, all) = templates();
    let m = Matcher::default();
    let p = m.prepare(&probe);
    let gallery: Vec<Prepared> = all.iter().map(|t| m.prepare(t)).collect();
    let mut g = c.benchmark_group("mcc verify");
    g.throughput(Throughput::Elements(gallery.len() as u64));
    g.bench_function("score, probe vs 320, 1 thread", |b| {
        let mut s = Scratch::new();
        b.iter(|| gallery.iter().map(|t| m.score(p.view(), t.view(), &mut s)).sum::<f32>())
    });
    g.bench_function("verify_parts, probe vs 320, 1 thread", |b| {
        let mut s = Scratch::new();
        b.iter(|| gallery.iter().map(|t| m.verify_parts(p.view(), t.view(), &mut s).score()).sum::<f32>())
    });
    g.finish();
}

criterion_group!(benches, prepare, matching, verifying);
criterion_main!(benches);
