//! `whorl calibrate-impostors`: fits the impostor model (FMR as a function
//! of the score, see `whorl::search::impostor`) on synthetic impostor
//! comparisons, checks it against the real FVC2002 impostors, and writes
//! the model file and a report.

use anyhow::{Context, Result};
use clap::Args;
use rayon::prelude::*;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;
use whorl::mcc::{Matcher, Prepared, Scratch};
use whorl::plot::{self, Scale, Series};
use whorl::search::impostor::ImpostorModel;
use whorl::synth::{Synth, SynthParams};

#[derive(Args)]
pub struct CalibrateArgs {
    /// Synthetic fingers: every (impression 1 of A, impression 0 of B ≠ A) pair is scored.
    #[arg(long, default_value_t = 6000)]
    fingers: u64,
    /// Seed of the synthetic fingers (keep it apart from gallery seeds).
    #[arg(long, default_value_t = 4242)]
    seed: u64,
    /// Model file to write.
    #[arg(long, default_value = "assets/impostor-mcc-v1.json")]
    out: PathBuf,
    /// Report folder (report.md, fmr.png).
    #[arg(long, default_value = "benches/reports/impostor-model")]
    report: PathBuf,
}

pub fn run(a: CalibrateArgs) -> Result<()> {
    let matcher = Matcher::default();
    let synth = Synth::new(SynthParams::default(), a.seed);
    let t0 = Instant::now();
    let recs = synth.batch(0..a.fingers, 0..2);
    let prepared: Vec<Prepared> = recs.par_iter().map(|r| matcher.prepare(&r.template)).collect();
    let probes: Vec<&Prepared> = prepared.iter().skip(1).step_by(2).collect();
    let gallery: Vec<&Prepared> = prepared.iter().step_by(2).collect();
    let n = probes.len();
    let bar = super::progress(n as u64, "impostors");
    let comparisons: Vec<(u32, f32)> = probes
        .par_iter()
        .enumerate()
        .map_init(Scratch::new, |s, (i, p)| {
            let row: Vec<(u32, f32)> = gallery
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, g)| {
                    let parts = matcher.score_parts(p.view(), g.view(), s);
                    (parts.n_p, parts.score())
                })
                .collect();
            bar.inc(1);
            row
        })
        .flatten()
        .collect();
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let crc = whorl::shard::mcc_params_crc(matcher.params());
    let source = format!(
        "whorl calibrate-impostors --fingers {} --seed {}: impression 1 of each synthetic finger against impression 0 of every other",
        a.fingers, a.seed
    );
    let model = ImpostorModel::fit(&comparisons, crc, source)?;
    std::fs::write(&a.out, model.to_json() + "\n").with_context(|| format!("writing {}", a.out.display()))?;
    println!("{} impostor comparisons in {secs:.0} s; model written to {}", comparisons.len(), a.out.display());

    // Real impostors: every different-finger pair of FVC2002 DB1-4 B, with n_P.
    let mut real: Vec<(u32, f32)> = Vec::new();
    for dir in whorl::data::fvc2002_dirs() {
        let db = whorl::eval::load_database(&dir)?;
        let prep: Vec<Prepared> = db.entries.par_iter().map(|e| matcher.prepare(&e.template)).collect();
        let (_, pairs) = whorl::eval::protocol_pairs(&db);
        let scored: Vec<(u32, f32)> = pairs
            .par_iter()
            .map_init(Scratch::new, |s, &(x, y)| {
                let p = matcher.score_parts(prep[x].view(), prep[y].view(), s);
                (p.n_p, p.score())
            })
            .collect();
        real.extend(scored);
    }
    report(&a, &model, &comparisons, &real, secs)?;
    println!("report written to {}", a.report.display());
    Ok(())
}

/// Writes report.md and fmr.png: the fitted strata, and the model's
/// expected false matches against those counted among synthetic and real
/// impostors at a ladder of thresholds.
fn report(a: &CalibrateArgs, model: &ImpostorModel, syn: &[(u32, f32)], real: &[(u32, f32)], secs: f64) -> Result<()> {
    std::fs::create_dir_all(&a.report)?;
    let mut md = String::new();
    writeln!(md, "# The impostor model: FMR as a function of the cylinder score\n")?;
    writeln!(md, "Command: `cargo run --release -- calibrate-impostors --fingers {} --seed {}`  ", a.fingers, a.seed)?;
    writeln!(md, "Machine: {}  ", super::machine())?;
    writeln!(md, "Date: {}\n", super::today())?;
    writeln!(
        md,
        "{} synthetic impostor comparisons ({} of them with an empty template, n_P = 0, left out) (impression 1 of each of {} fingers against impression 0 of every other finger), scored in {secs:.0} s. One curve per n_P (the number of cylinder pairs LSS-R sums: 4 for the smallest templates, 12 for full ones): the body is the empirical survival function (20 knots per decade), the tail beyond the {} highest scores a generalised Pareto fit (method of moments; a negative shape is raised to 0).\n",
        syn.len(),
        syn.iter().filter(|c| c.0 == 0).count(),
        a.fingers,
        whorl::search::impostor::TAIL_MIN
    )?;
    writeln!(
        md,
        "| n_P | comparisons | tail from score | FMR there | GPD scale | shape (fitted) | score at FMR 1e-4 | 1e-6 | 1e-8 |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
    for c in &model.strata {
        writeln!(
            md,
            "| {} | {} | {:.4} | {:.2e} | {:.4} | {:+.3} ({:+.3}) | {:.3} | {:.3} | {:.3} |",
            c.n_p,
            c.comparisons,
            c.tail.from,
            c.tail.fmr,
            c.tail.scale,
            c.tail.shape,
            c.tail.fitted_shape,
            c.score_for_fmr(1e-4),
            c.score_for_fmr(1e-6),
            c.score_for_fmr(1e-8)
        )?;
    }
    writeln!(md, "\n## Expected against counted false matches\n")?;
    writeln!(
        md,
        "At each threshold, the model's expected number of impostor comparisons at or above it (the sum of FMR over the comparisons' own n_P curves) against the number counted. The synthetic rows check the fit; the FVC2002 rows ({} real impostor comparisons, DB1-4 B, every different-finger pair) check that synthetic impostors stand in for real ones.\n",
        real.len()
    )?;
    writeln!(md, "| threshold | synthetic: expected | counted | FVC2002: expected | counted |")?;
    writeln!(md, "|---|---|---|---|---|")?;
    let tally = |v: &[(u32, f32)], t: f32| -> (f64, usize) {
        // n_P = 0 comparisons score exactly 0 and never reach t > 0.
        let expected: f64 = v.par_iter().filter(|c| c.0 > 0).map(|&(np, _)| model.ln_fmr(np, t).exp()).sum();
        (expected, v.iter().filter(|c| c.1 >= t).count())
    };
    for t in [0.02f32, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3] {
        let (se, sc) = tally(syn, t);
        let (re, rc) = tally(real, t);
        writeln!(md, "| {t:.2} | {se:.1} | {sc} | {re:.2} | {rc} |")?;
    }
    writeln!(md, "\n![FMR against score by n_P](fmr.png)\n")?;
    writeln!(
        md,
        "The serving decision uses this model per finger (`whorl::search::fusion`); whether the FPIR it promises is the FPIR measured on non-mated searches is checked in `benches/reports/serving/`."
    )?;
    std::fs::write(a.report.join("report.md"), md)?;
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for c in &model.strata {
        let pts = (0..=100).map(|i| i as f32 / 100.0).map(|t| (f64::from(t), c.fmr(t).max(1e-12))).collect();
        series.push((format!("model, n_P {}", c.n_p), pts));
    }
    let n = real.len().max(1) as f64;
    let real_pts = (0..=60)
        .map(|i| i as f32 / 200.0)
        .map(|t| (f64::from(t), real.iter().filter(|c| c.1 >= t).count() as f64 / n))
        .filter(|p| p.1 > 0.0)
        .collect();
    series.push(("FVC2002 impostors (all n_P)".into(), real_pts));
    let series: Vec<Series> = series.iter().map(|(n, p)| Series { name: n, points: p.clone() }).collect();
    plot::line_chart(
        &a.report.join("fmr.png"),
        "Impostor FMR against score, by n_P",
        ("cylinder score", Scale::Linear(0.0, 1.0)),
        ("FMR (share of impostors at or above)", Scale::Log(1e-12, 1.0)),
        &series,
    )?;
    Ok(())
}
