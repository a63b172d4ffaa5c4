//! `whorl demo`: the README's main command. Builds (once, then cached) a
//! synthetic gallery, serves a working copy of it over gRPC on loopback,
//! enrols real FVC2002 fingers through the API, searches real and
//! synthetic probes, and prints accuracy and speed. The cache is never
//! changed by a run, so every run prints the same accuracy.

use super::client::{level_line, run_level};
use super::progress::Progress;
use anyhow::{Context, Result, anyhow};
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use whorl::client::bench::{LEGEND, levels_table};
use whorl::client::demo::{default_cache, fvc_sets, gallery_dir, working_copy};
use whorl::client::probes::{SynthProbeSpec, synth_probes};
use whorl::embed::Embedder;
use whorl::gallery::{self, BuildOptions};
use whorl::mcc::Matcher;
use whorl::rescore::BackendChoice;
use whorl::server::client::{self, ClientOptions, Clients};
use whorl::server::config::Config;
use whorl::server::loadgen::{BenchProbe, LoadOptions};
use whorl::server::pb;
use whorl::synth::{Subjects, Synth, SynthParams};
use whorl::table::{count, seconds};

#[derive(Args)]
pub struct DemoArgs {
    /// Synthetic subjects in the gallery (one finger each, spread over the ten positions).
    #[arg(long, default_value_t = 100_000)]
    subjects: u64,
    /// Seed of the synthetic gallery.
    #[arg(long, default_value_t = 11)]
    seed: u64,
    /// Where built galleries are kept between runs [default: target/whorl-demo
    /// beside the whorl binary's build, wherever it is run from; for an
    /// installed binary ~/.cache/whorl/demo].
    #[arg(long, env = "WHORL_DEMO_CACHE")]
    cache: Option<PathBuf>,
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
    /// Address to serve on (with --serve).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: std::net::SocketAddr,
}

/// The cached gallery, built when missing.
fn cached_gallery(a: &DemoArgs, cache: &Path) -> Result<PathBuf> {
    let dir = gallery_dir(cache, a.subjects, a.seed);
    if dir.join(gallery::manifest::FILE).exists() {
        outln!("gallery: {} (cached)", dir.display())?;
        return Ok(dir);
    }
    let tmp = dir.with_extension("building");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    outln!(
        "gallery: building {} synthetic subjects into {} (once: later runs reuse it; a few minutes on 2 cores)",
        count(a.subjects),
        dir.display()
    )?;
    let pop = Subjects::new(Synth::new(SynthParams::default(), a.seed), 1);
    let items =
        (0..a.subjects).map(move |s| (Subjects::id(s), Vec::new(), pop.synth.template(pop.finger_ids(s)[0], 0)));
    let mut progress = Progress::new("writing", Some(a.subjects), "templates");
    let t0 = Instant::now();
    let r =
        gallery::build(&tmp, &Embedder::default(), &Matcher::default(), &BuildOptions::default(), items, |d, w| {
            if w == "indexing" {
                progress.set_phase("indexing (HNSW graphs)", None, "");
            } else {
                progress.set_phase("writing", Some(a.subjects), "templates");
                progress.set_position(d);
            }
        })?;
    progress.finish();
    std::fs::rename(&tmp, &dir).with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    outln!(
        "  {} templates in {} (shards {}, indexes {})",
        count(r.templates),
        seconds(t0.elapsed()),
        seconds(Duration::from_secs_f64(r.write_seconds)),
        seconds(Duration::from_secs_f64(r.index_seconds))
    )?;
    Ok(dir)
}

async fn enrol_fvc(c: &mut Clients, enrol: &[(String, Vec<u8>)]) -> Result<()> {
    for (subject, bytes) in enrol {
        c.gallery
            .enroll(pb::EnrollRequest {
                subject_id: subject.clone(),
                templates: vec![client::finger(bytes.clone())],
                labels: [("source".to_string(), "fvc2002".to_string())].into(),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("enrolling {subject}: {}", e.message()))?;
    }
    Ok(())
}

async fn search(c: &Clients, probes: Vec<BenchProbe>, concurrency: usize, what: &str) -> Result<()> {
    let probes = Arc::new(probes);
    let o = LoadOptions {
        concurrency,
        duration: Duration::from_secs(3600),
        max_requests: Some(probes.len()),
        timeout: Duration::from_secs(30),
        warmup: 4,
        max_candidates: 20,
        progress: None,
        galleries: Vec::new(),
    };
    let r = run_level(c, &probes, &o, what).await;
    eprintln!("{}", level_line(&r));
    out!("{}", levels_table(std::slice::from_ref(&r), &probes))?;
    Ok(())
}

pub fn run(a: DemoArgs) -> Result<()> {
    let cache = a.cache.clone().unwrap_or_else(default_cache);
    let cached = cached_gallery(&a, &cache)?;
    // Each run serves a working copy: its enrolments never reach the cache.
    let work = cache.join(format!("run-{}-s{}", a.subjects, a.seed));
    working_copy(&cached, &work)?;
    let mut cfg = Config::default();
    cfg.gallery.path = work.clone();
    cfg.server.listen = if a.serve { a.listen } else { "127.0.0.1:0".parse()? };
    cfg.server.max_in_flight = 256;
    cfg.backend.choice = a.backend;
    let result = super::serve::runtime()?.block_on(async move {
        let t0 = Instant::now();
        let running = whorl::server::start(cfg).await?;
        let opening = Progress::spinner("opening the gallery");
        running.wait_ready(Duration::from_secs(3600)).await.map_err(|e| anyhow!(e))?;
        drop(opening);
        let addr = running.addr.to_string();
        outln!("server: {addr}, gallery open in {}", seconds(t0.elapsed()))?;
        let mut c = client::connect(&addr, &ClientOptions::default()).await?;

        let dirs = whorl::data::fvc2002_dirs();
        let (enrol, fvc_probes) = fvc_sets(&dirs);
        if dirs.is_empty() {
            outln!("FVC2002: not found (../shared/data or WHORL_TEST_DATA); the real-finger part is skipped")?;
        } else {
            enrol_fvc(&mut c, &enrol).await?;
            outln!("enrolled {} FVC2002 fingers (impression 1) over gRPC", enrol.len())?;
        }
        let stats = c.gallery.stats(pb::StatsRequest::default()).await?.into_inner();
        outln!(
            "gallery: {} subjects, {} templates, {} shard(s); backend {}",
            count(stats.subjects),
            count(stats.templates),
            stats.shards,
            stats.backend
        )?;
        let spec = SynthProbeSpec::for_demo(a.subjects, a.seed, a.synth_probes.min(2 * a.subjects as usize));
        let synth: Vec<BenchProbe> = synth_probes(&spec)?.into_iter().map(BenchProbe::from).collect();
        if !fvc_probes.is_empty() {
            outln!(
                "\nFVC2002 probes (impressions 2-8; {} mated, {} never enrolled) among {} synthetic distractors:",
                fvc_probes.iter().filter(|p| p.mate.is_some()).count(),
                fvc_probes.iter().filter(|p| p.mate.is_none()).count(),
                count(a.subjects)
            )?;
            search(&c, fvc_probes, a.concurrency, "FVC2002 probes").await?;
        }
        outln!("\nSynthetic probes (impression 1; half mated, half never enrolled):")?;
        search(&c, synth, a.concurrency, "synthetic probes").await?;
        outln!("\n{LEGEND}")?;
        if a.serve {
            outln!(
                "\nserving on {addr} until SIGTERM or Ctrl-C (try: whorl identify --server {addr} FILE; whorl status --server {addr})"
            )?;
            super::serve::stop_signal().await;
        }
        running.shutdown().await?;
        anyhow::Ok(())
    });
    let _ = std::fs::remove_dir_all(&work);
    result
}
