//! `whorl eval`: accuracy on FVC-style database folders.

use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use whorl::eval::{self, DbScores};
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
    /// Output folder for scores.csv, report.md and det.png.
    #[arg(long, default_value = "whorl-eval")]
    out: PathBuf,
}

pub fn run(a: EvalArgs) -> Result<()> {
    let dirs = if a.dirs.is_empty() { whorl::data::fvc2002_dirs() } else { a.dirs.clone() };
    if dirs.is_empty() {
        bail!("no database folders: pass DIR... or set WHORL_TEST_DATA");
    }
    let params: MccParams = match &a.params {
        Some(p) => {
            serde_json::from_str(&std::fs::read_to_string(p)?).with_context(|| format!("parsing {}", p.display()))?
        }
        None => MccParams::default(),
    };
    let matcher = Matcher::new(params);
    let mut all: Vec<DbScores> = Vec::new();
    let mut dbs = Vec::new();
    for d in &dirs {
        let db = eval::load_database(d)?;
        if !a.bench_only {
            all.push(eval::evaluate(&matcher, &db));
        }
        dbs.push(db);
    }
    if a.bench_only {
        return bench(&matcher, &dbs, &a.probe, a.gallery, &a.threads);
    }
    let table = eval::report::table(&all, true);
    println!("{table}");
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    eval::report::write_csv(&a.out.join("scores.csv"), &dbs, &all)?;
    eval::report::write_det(&a.out.join("det.png"), &all)?;
    let cmd: Vec<String> = std::env::args().collect();
    let report = format!(
        "# Accuracy: whorl MCC matcher\n\nCommand: `{}`\n\nProtocol: per database, all genuine pairs (same finger, impressions i<j) and all impostor pairs (different fingers, every impression, unordered). Rates as defined in FVC (Maio et al. 2002).\n\n{table}\n![DET](det.png)\n\nScores: `scores.csv`.\n",
        cmd.join(" ")
    );
    std::fs::write(a.out.join("report.md"), report)?;
    println!("wrote {}/{{scores.csv,det.png,report.md}}", a.out.display());
    if a.bench {
        bench(&matcher, &dbs, &a.probe, a.gallery, &a.threads)?;
    }
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
