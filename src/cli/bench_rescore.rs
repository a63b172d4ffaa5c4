//! `whorl bench-rescore`: re-scoring throughput of the CPU (1 and 2
//! threads) and GPU backends, by probes per call and candidates per probe,
//! with the GPU's time split into upload, compute and readback.

use anyhow::{Result, bail};
use clap::Args;
use rayon::prelude::*;
use std::time::Instant;
use whorl::gpu::{GpuOptions, GpuRescorer};
use whorl::mcc::{Matcher, Prepared};
use whorl::rescore::{Candidate, CpuRescorer, Location, Query, Rescorer};
use whorl::synth::{Synth, SynthParams};

#[derive(Args)]
pub struct BenchRescoreArgs {
    /// Distinct gallery templates (synthetic), kept resident on the GPU.
    #[arg(long, default_value_t = 20_000)]
    gallery: u64,
    /// Candidates per probe to measure.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    candidates: Vec<usize>,
    /// Probes per call (batch size) to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batch: Vec<usize>,
    /// Backends: cpu, gpu or both.
    #[arg(long, default_value = "both")]
    backend: String,
    /// Stop a configuration after this many matches (lavapipe is slow).
    #[arg(long, default_value_t = 2_000_000)]
    max_matches: usize,
}

pub fn run(a: BenchRescoreArgs) -> Result<()> {
    if !["cpu", "gpu", "both"].contains(&a.backend.as_str()) {
        bail!("--backend {} is not cpu, gpu or both", a.backend);
    }
    let m = Matcher::default();
    let s = Synth::new(SynthParams::default(), 21);
    let gallery: Vec<Prepared> = s.batch(0..a.gallery, 0..1).par_iter().map(|r| m.prepare(&r.template)).collect();
    let probes: Vec<Prepared> = s.batch(0..64, 1..2).par_iter().map(|r| m.prepare(&r.template)).collect();
    let avg = gallery.iter().map(|p| p.len()).sum::<usize>() as f64 / gallery.len().max(1) as f64;
    outln!(
        "gallery: {} distinct synthetic templates (mean {avg:.1} cylinders); probes: other impressions",
        gallery.len()
    )?;
    let want_cpu = a.backend != "gpu";
    let want_gpu = a.backend != "cpu";
    let gpu = if want_gpu {
        match GpuRescorer::new(&m, &GpuOptions::default(), 8 << 30) {
            Ok(g) => {
                let mut words = Vec::new();
                let mut offsets = vec![0u64];
                for p in &gallery {
                    words.extend_from_slice(p.words());
                    offsets.push(words.len() as u64);
                }
                let t = Instant::now();
                let resident = g.make_resident(1, &words, &offsets)?;
                outln!(
                    "GPU: {} (max binding {} MiB); gallery resident: {resident} ({:.1} MiB uploaded in {:.2} s)",
                    g.describe(),
                    g.max_binding() >> 20,
                    (words.len() * 8) as f64 / 1048576.0,
                    t.elapsed().as_secs_f64()
                )?;
                if g.context().is_software() {
                    outln!("(a software adapter: these GPU figures check correctness and plumbing, not speed)")?;
                }
                Some(g)
            }
            Err(e) if a.backend == "gpu" => bail!("--backend gpu, but no GPU backend: {e}"),
            Err(e) => {
                outln!("GPU: not available ({e})")?;
                None
            }
        }
    } else {
        None
    };
    outln!(
        "\n| backend | probes per call | candidates per probe | matches | seconds | matches/s | upload s | compute s | readback s |"
    )?;
    outln!("|---|---|---|---|---|---|---|---|---|")?;
    let cpu = CpuRescorer::new(m.clone());
    for &c in &a.candidates {
        for &b in &a.batch {
            let b = b.max(1).min(probes.len());
            let c = c.max(1).min((a.max_matches / b).max(1));
            let queries: Vec<Query> = (0..b)
                .map(|q| Query {
                    probe: probes[q].view(),
                    candidates: (0..c)
                        .map(|k| {
                            let t = (q * 7919 + k * 104_729) % gallery.len();
                            Candidate {
                                prepared: gallery[t].view(),
                                location: Some(Location { shard: 1, template: t as u32 }),
                            }
                        })
                        .collect(),
                })
                .collect();
            let matches = b * c;
            if want_cpu {
                for threads in [1usize, 2] {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
                    let t = Instant::now();
                    pool.install(|| cpu.rescore(&queries))?;
                    let secs = t.elapsed().as_secs_f64();
                    outln!(
                        "| cpu, {threads} thread(s) | {b} | {c} | {matches} | {secs:.3} | {:.0} | | | |",
                        matches as f64 / secs
                    )?;
                }
            }
            if let Some(g) = &gpu {
                let t = Instant::now();
                g.rescore(&queries)?;
                let secs = t.elapsed().as_secs_f64();
                let tm = g.last_timings();
                outln!(
                    "| gpu | {b} | {c} | {matches} | {secs:.3} | {:.0} | {:.3} | {:.3} | {:.3} |",
                    matches as f64 / secs,
                    tm.upload.as_secs_f64(),
                    tm.compute.as_secs_f64(),
                    tm.readback.as_secs_f64()
                )?;
            }
        }
    }
    Ok(())
}
