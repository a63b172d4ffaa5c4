//! Re-scoring throughput through the `Rescorer` backends: the CPU on 1 and
//! 2 threads and, where an adapter exists, the GPU (on lavapipe this checks
//! the plumbing, not speed). `cargo bench --bench rescore`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use whorl::gpu::{GpuOptions, GpuRescorer};
use whorl::mcc::{Matcher, Prepared};
use whorl::rescore::{Candidate, CpuRescorer, Location, Query, Rescorer};
use whorl::synth::{Synth, SynthParams};

fn rescore(c: &mut Criterion) {
    let m = Matcher::default();
    let s = Synth::new(SynthParams::default(), 21);
    let gallery: Vec<Prepared> = s.batch(0..4000, 0..1).par_iter().map(|r| m.prepare(&r.template)).collect();
    let probes: Vec<Prepared> = s.batch(0..8, 1..2).par_iter().map(|r| m.prepare(&r.template)).collect();
    let mut g = c.benchmark_group("rescore");
    g.sample_size(10);
    let gpu = GpuRescorer::new(&m, &GpuOptions::default(), 2 << 30).ok().and_then(|g| {
        let mut words = Vec::new();
        let mut offsets = vec![0u64];
        for p in &gallery {
            words.extend_from_slice(p.words());
            offsets.push(words.len() as u64);
        }
        g.make_resident(1, &words, &offsets).ok().map(|_| g)
    });
    for (batch, cands) in [(1usize, 4000usize), (8, 500)] {
        let queries: Vec<Query> = probes
            .iter()
            .take(batch)
            .map(|p| Query {
                probe: p.view(),
                candidates: (0..cands)
                    .map(|k| Candidate {
                        prepared: gallery[k].view(),
                        location: Some(Location { shard: 1, template: k as u32 }),
                    })
                    .collect(),
            })
            .collect();
        g.throughput(Throughput::Elements((batch * cands) as u64));
        let cpu = CpuRescorer::new(m.clone());
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            g.bench_function(BenchmarkId::new(format!("cpu {threads} thread(s)"), format!("{batch}x{cands}")), |b| {
                b.iter(|| pool.install(|| cpu.rescore(&queries)))
            });
        }
        if let Some(gpu) = &gpu {
            if gpu.context().is_software() && batch * cands > 1000 {
                continue; // lavapipe: a few thousand matches/s, too slow to sample
            }
            g.bench_function(BenchmarkId::new("gpu", format!("{batch}x{cands}")), |b| b.iter(|| gpu.rescore(&queries)));
        }
    }
    g.finish();
}

criterion_group!(benches, rescore);
criterion_main!(benches);
