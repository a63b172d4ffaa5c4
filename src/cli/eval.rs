//! `whorl eval`: accuracy on FVC-style database folders.

use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use whorl::eval::{self, suite::Evaluation};
use whorl::mcc::{Matcher, MccParams};

#[derive(Args)]
pub struct EvalArgs {
    /// Database folders of FINGER_IMPRESSION.iso files (default: ../shared/data/fvc2002/DB*_B).
    dirs: Vec<PathBuf>,
    /// Matcher parameters as JSON (fields not given keep their defaults).
    #[arg(long)]
    params: Option<PathBuf>,
    /// Also measure matches per second: one probe against every template
    /// of the databases, repeated to --gallery entries, on 1 and 2 threads.
    #[arg(long)]
    bench: bool,
    /// Gallery size for --bench.
    #[arg(long, default_value_t = 1_000_000)]
    gallery: usize,
    /// Probe for --bench, as DB/FINGER_IMPRESSION (default: DB1_B/101_2).
    #[arg(long, default_value = "DB1_B/101_2")]
    probe: String,
    /// Thread counts for --bench.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// With --bench, skip the accuracy evaluation (for profiling).
    #[arg(long)]
    bench_only: bool,
    /// Without DIR: which FVC2002 databases (calibration = DB1_B+DB2_B,
    /// held-out = DB3_B+DB4_B, all).
    #[arg(long, default_value = "all")]
    split: whorl::data::Split,
    /// Evaluate this many synthetic databases of FVC2002's shape (10
    /// fingers x 8 impressions, seeds 1..) instead of folders: e.g. with a
    /// more distorted generator (--synth-params), as a stand-in for harder
    /// real impressions.
    #[arg(long)]
    synthetic_dbs: Option<u64>,
    /// Generator parameters as JSON for --synthetic-dbs (fields not given keep their defaults).
    #[arg(long)]
    synth_params: Option<PathBuf>,
    /// Which score: `matcher` (Γ stage and LSS-R) or `verified` (with the
    /// second, geometric pass that decisions on the top candidates use).
    #[arg(long, default_value = "matcher")]
    score: eval::Scoring,
    /// Bootstrap replicates for the 95% intervals.
    #[arg(long, default_value_t = whorl::eval::intervals::REPLICATES)]
    replicates: usize,
    /// Output folder for scores.csv, report.md and det.png.
    #[arg(long, default_value = "whorl-eval")]
    out: PathBuf,
}

pub fn run(a: EvalArgs) -> Result<()> {
    if let Some(n) = a.synthetic_dbs {
        return synthetic(&a, n);
    }
    let dirs = if a.dirs.is_empty() {
        match whorl::data::fvc2002_split(a.split)? {
            Some(d) => d,
            None => bail!("no database folders: pass DIR... or set WHORL_TEST_DATA"),
        }
    } else {
        a.dirs.clone()
    };
    let params: MccParams = match &a.params {
        Some(p) => {
            serde_json::from_str(&std::fs::read_to_string(p)?).with_context(|| format!("parsing {}", p.display()))?
        }
        None => MccParams::default(),
    };
    let matcher = Matcher::new(params);
    let dbs = dirs.iter().map(|d| eval::load_database(d)).collect::<Result<Vec<_>, _>>()?;
    if a.bench_only {
        return bench(&matcher, &dbs, &a.probe, a.gallery, &a.threads);
    }
    let data: Vec<String> = dbs
        .iter()
        .map(|d| format!("{} ({} templates, content CRC32C {:08x})", d.name, d.entries.len(), d.content_crc))
        .collect();
    let data = data.join(", ");
    println!("data: {data}");
    println!("score: {}", a.score.describe());
    let e = Evaluation::run_scored(&matcher, a.score, dbs, a.replicates, 1);
    let table = eval::report::table(&e);
    let peers = eval::report::peer_table(&e);
    println!("{table}");
    if !peers.is_empty() {
        println!("{peers}");
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    eval::report::write_csv(&a.out.join("scores.csv"), &e.dbs, &e.scores)?;
    eval::report::write_det(&a.out.join("det.png"), &e.scores)?;
    let cmd: Vec<String> = std::env::args().collect();
    let peers = if peers.is_empty() { String::new() } else { format!("## Peers\n\n{peers}\n") };
    let report = format!(
        "# Accuracy: whorl MCC matcher\n\nCommand: `{}`  \nMachine: {}  \nDate: {}  \nData: {data}  \nScore: {}\n\nProtocol: per database, all genuine pairs (same finger, impressions i<j) and all impostor pairs (different fingers, every impression, unordered). Rates as defined in FVC (Maio et al. 2002); 95% intervals from {} bootstrap replicates over fingers (`whorl::eval::intervals`).\n\n{table}\n{peers}## What the matcher saw\n\n{}\n\n![DET](det.png)\n\nScores: `scores.csv`.\n",
        cmd.join(" "),
        super::machine(),
        super::today(),
        a.score.describe(),
        e.replicates,
        whorl::eval::provenance::MATCHER,
    );
    std::fs::write(a.out.join("report.md"), report)?;
    println!("wrote {}/{{scores.csv,det.png,report.md}}", a.out.display());
    if a.bench {
        bench(&matcher, &e.dbs, &a.probe, a.gallery, &a.threads)?;
    }
    Ok(())
}

/// Accuracy on `n` synthetic databases of FVC2002's shape.
fn synthetic(a: &EvalArgs, n: u64) -> Result<()> {
    use whorl::synth::{Synth, calibrate::Shape};
    let params: MccParams = match &a.params {
        Some(p) => {
            serde_json::from_str(&std::fs::read_to_string(p)?).with_context(|| format!("parsing {}", p.display()))?
        }
        None => MccParams::default(),
    };
    let matcher = Matcher::new(params);
    let sp = super::synth::load_params(a.synth_params.as_deref())?;
    let shape = Shape { dbs: n, fingers: 10, impressions: 8, seed: 1 };
    let dbs: Vec<eval::Database> = (0..shape.dbs)
        .map(|k| {
            let s = Synth::new(sp.clone(), shape.seed + k);
            eval::Database::from_synthetic(
                &format!("synthetic {}", k + 1),
                s.batch(0..shape.fingers, 0..shape.impressions),
            )
        })
        .collect();
    let e = Evaluation::run_scored(&matcher, a.score, dbs, a.replicates, 1);
    let table = eval::report::table(&e);
    let last = table.lines().last().unwrap_or_default();
    println!("{last}");
    Ok(())
}

/// Matches per second of one probe against the databases' templates
/// repeated to `size` entries (prepared once), on 1 and 2 threads.
fn bench(matcher: &Matcher, dbs: &[whorl::eval::Database], probe: &str, size: usize, threads: &[usize]) -> Result<()> {
    use rayon::prelude::*;
    use std::time::Instant;
    use whorl::mcc::{Prepared, PreparedRef, Scratch};
    let (db_name, stem) = probe.split_once('/').context("--probe must be DB/FINGER_IMPRESSION")?;
    let db = dbs.iter().find(|d| d.name == db_name).with_context(|| format!("no database {db_name}"))?;
    let p = db
        .entries
        .iter()
        .find(|e| format!("{}_{}", e.finger, e.impression) == stem)
        .with_context(|| format!("no template {stem} in {db_name}"))?;
    let probe_prep = matcher.prepare(&p.template);
    let unique: Vec<Prepared> = dbs.iter().flat_map(|d| &d.entries).map(|e| matcher.prepare(&e.template)).collect();
    let gallery: Vec<PreparedRef> = (0..size).map(|i| unique[i % unique.len()].view()).collect();
    println!();
    println!(
        "matches/s, probe {probe} ({} cylinders) against {size} entries ({} distinct templates repeated):",
        probe_prep.len(),
        unique.len()
    );
    println!("| threads | seconds | matches/s |");
    println!("|---|---|---|");
    for &threads in threads {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
        let t0 = Instant::now();
        let checksum: f64 = pool.install(|| {
            gallery
                .par_chunks(4096)
                .map_init(Scratch::new, |s, chunk| {
                    chunk.iter().map(|g| f64::from(matcher.score(probe_prep.view(), *g, s))).sum::<f64>()
                })
                .sum()
        });
        let secs = t0.elapsed().as_secs_f64();
        println!("| {threads} | {secs:.2} | {:.0} |", size as f64 / secs);
        std::hint::black_box(checksum);
    }
    Ok(())
}
