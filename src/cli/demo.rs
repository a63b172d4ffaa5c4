//! `whorl demo`: the README's main command. Builds (once, then cached) a
//! synthetic gallery, serves it over gRPC on loopback, enrols real FVC2002
//! fingers through the API, searches real and synthetic probes, and prints
//! accuracy and speed.

use super::serve::{SynthProbeArgs, bench_levels, synth_probes};
use anyhow::{Context, Result, anyhow};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use whorl::embed::Embedder;
use whorl::gallery::{self, BuildOptions};
use whorl::mcc::Matcher;
use whorl::rescore::BackendChoice;
use whorl::server::client::{self, ClientOptions};
use whorl::server::config::Config;
use whorl::server::loadgen::{BenchProbe, LoadOptions};
use whorl::server::pb;
use whorl::synth::{Subjects, Synth, SynthParams};

#[derive(Args)]
pub struct DemoArgs {
    /// Synthetic subjects in the gallery (one finger each, spread over the ten positions).
    #[arg(long, default_value_t = 100_000)]
    subjects: u64,
    /// Seed of the synthetic gallery.
    #[arg(long, default_value_t = 11)]
    seed: u64,
    /// Where built galleries are kept between runs.
    #[arg(long, default_value = "target/whorl-demo")]
    cache: PathBuf,
    /// Re-scoring backend: cpu, gpu or auto.
    #[arg(long, default_value = "auto", env = "WHORL_BACKEND")]
    backend: BackendChoice,
    /// Synthetic probes (half mated, half not enrolled).
    #[arg(long, default_value_t = 400)]
    synth_probes: usize,
    /// Callers at once while searching.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Keep serving afterwards (until SIGTERM or Ctrl-C).
    #[arg(long)]
    serve: bool,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: std::net::SocketAddr,
}

/// The cached gallery, built when missing.
fn gallery_dir(a: &DemoArgs) -> Result<PathBuf> {
    let dir = a.cache.join(format!("gallery-{}-s{}", a.subjects, a.seed));
    if dir.join(gallery::manifest::FILE).exists() {
        println!("gallery: {} (cached)", dir.display());
        return Ok(dir);
    }
    let tmp = a.cache.join(format!("gallery-{}-s{}.building", a.subjects, a.seed));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&a.cache)?;
    println!("gallery: building {} synthetic subjects into {} (once; later runs reuse it)", a.subjects, dir.display());
    let pop = Subjects::new(Synth::new(SynthParams::default(), a.seed), 1);
    let items =
        (0..a.subjects).map(move |s| (Subjects::id(s), Vec::new(), pop.synth.template(pop.finger_ids(s)[0], 0)));
    let bar = super::progress(a.subjects, "building");
    let t0 = Instant::now();
    let r =
        gallery::build(&tmp, &Embedder::default(), &Matcher::default(), &BuildOptions::default(), items, |d, w| {
            bar.set_position(d);
            bar.set_message(w.to_string());
        })?;
    bar.finish_and_clear();
    std::fs::rename(&tmp, &dir).with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    println!(
        "  {} templates in {:.0} s (shards {:.0} s, indexes {:.0} s)",
        r.templates,
        t0.elapsed().as_secs_f64(),
        r.write_seconds,
        r.index_seconds
    );
    Ok(dir)
}

/// FVC2002 fingers: odd-numbered fingers (101, 103, ...) are enrolled from
/// impression 1 and searched with impressions 2-8; even ones are never
/// enrolled and give the non-mated probes.
fn fvc(dirs: &[PathBuf]) -> (Vec<(String, Vec<u8>)>, Vec<BenchProbe>) {
    let (mut enrol, mut probes) = (Vec::new(), Vec::new());
    for d in dirs {
        let db = d.file_name().map(|n| n.to_string_lossy().replace("_B", "")).unwrap_or_default();
        for f in 101..=110u32 {
            let subject = format!("fvc-{db}-{f}");
            let enrolled = f % 2 == 1;
            for k in 1..=8 {
                let Ok(bytes) = std::fs::read(d.join(format!("{f}_{k}.iso"))) else { continue };
                if k == 1 {
                    if enrolled {
                        enrol.push((subject.clone(), bytes));
                    }
                } else {
                    probes.push(BenchProbe {
                        name: format!("{db}/{f}_{k}"),
                        probe: client::probe(vec![bytes]),
                        mate: enrolled.then(|| subject.clone()),
                    });
                }
            }
        }
    }
    (enrol, probes)
}

pub fn run(a: DemoArgs) -> Result<()> {
    let dir = gallery_dir(&a)?;
    let mut cfg = Config::default();
    cfg.gallery.path = dir;
    cfg.server.listen = if a.serve { a.listen } else { "127.0.0.1:0".parse()? };
    cfg.server.max_in_flight = 256;
    cfg.backend.choice = a.backend;
    super::serve::runtime()?.block_on(async move {
        let t0 = Instant::now();
        let running = whorl::server::start(cfg).await?;
        running.wait_ready(Duration::from_secs(3600)).await.map_err(|e| anyhow!(e))?;
        let url = format!("http://{}", running.addr);
        println!("server: {url}, gallery open in {:.1} s", t0.elapsed().as_secs_f64());
        let mut c = client::connect(&url, &ClientOptions::default()).await.map_err(|e| anyhow!(e))?;

        let dirs = whorl::data::fvc2002_dirs();
        let (enrol, fvc_probes) = fvc(&dirs);
        if dirs.is_empty() {
            println!("FVC2002: not found (../shared/data); real-finger part skipped");
        } else {
            for (subject, bytes) in &enrol {
                c.gallery
                    .enroll(pb::EnrollRequest {
                        subject_id: subject.clone(),
                        templates: vec![client::finger(bytes.clone())],
                        labels: [("source".to_string(), "fvc2002".to_string())].into(),
                        // The cached gallery keeps earlier runs' enrolments: replace them.
                        replace: true,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| anyhow!("enrolling {subject}: {}", e.message()))?;
            }
            println!("enrolled {} FVC2002 fingers (impression 1) over gRPC", enrol.len());
        }
        let stats = c.gallery.stats(pb::StatsRequest::default()).await?.into_inner();
        println!(
            "gallery: {} subjects, {} templates, {} shard(s); backend {}",
            stats.subjects, stats.templates, stats.shards, stats.backend
        );
        let sp = SynthProbeArgs::for_demo(a.subjects, a.seed, a.synth_probes);
        let synth: Vec<BenchProbe> = synth_probes(&sp)?
            .into_iter()
            .map(|(name, records, mate)| BenchProbe { name, probe: client::probe(records), mate })
            .collect();
        let o = |n: usize| LoadOptions {
            concurrency: a.concurrency,
            duration: Duration::from_secs(3600),
            max_requests: Some(n),
            timeout: Duration::from_secs(30),
            warmup: 4,
            max_candidates: 20,
        };
        let levels = [a.concurrency];
        if !fvc_probes.is_empty() {
            println!(
                "\nFVC2002 probes (impressions 2-8; {} mated, {} never enrolled) among {} synthetic distractors:",
                fvc_probes.iter().filter(|p| p.mate.is_some()).count(),
                fvc_probes.iter().filter(|p| p.mate.is_none()).count(),
                a.subjects
            );
            let n = fvc_probes.len();
            bench_levels(&c, Arc::new(fvc_probes), &levels, &o(n), None, "").await?;
        }
        println!("\nSynthetic probes (impression 1; half mated, half never enrolled):");
        let n = synth.len();
        bench_levels(&c, Arc::new(synth), &levels, &o(n), None, "").await?;
        println!(
            "\nrank-1: mate ranked first; FNIR: mated probes not a rank-1 hit at the server's threshold (FPIR 1% target); \
             FPIR: never-enrolled probes decided as hits; FNIR @ FPIR 1%: with the threshold set from these non-mated probes."
        );
        if a.serve {
            println!("\nserving on {url} until SIGTERM or Ctrl-C (try: whorl identify --server {url} FILE)");
            super::serve::stop_signal().await;
        }
        running.shutdown().await?;
        Ok(())
    })
}

impl SynthProbeArgs {
    /// Probes of the demo's one-finger synthetic gallery.
    pub fn for_demo(subjects: u64, seed: u64, n: usize) -> SynthProbeArgs {
        SynthProbeArgs {
            synth_subjects: Some(subjects),
            fingers_per_subject: 1,
            seed,
            mated: n / 2,
            non_mated: n - n / 2,
            probe_fingers: 1,
            impression: 1,
        }
    }
}
