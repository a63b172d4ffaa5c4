//! `whorl calibrate-impostors`: fits the impostor model (FMR as a function
//! of the score, see `whorl::search::impostor`) on synthetic impostor
//! comparisons, checks it against the real FVC2002 impostors, and writes
//! the model file and a report.

use anyhow::{Context, Result};
use clap::Args;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;
use whorl::mcc::Matcher;
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
    #[arg(long, default_value = "assets/impostor-mcc-v2.json")]
    out: PathBuf,
    /// Report folder (report.md, fmr.png).
    #[arg(long, default_value = "benches/reports/impostor-model")]
    report: PathBuf,
}

pub fn run(a: CalibrateArgs) -> Result<()> {
    use whorl::data::Split;
    use whorl::eval::impostors;
    let matcher = Matcher::default();
    let synth = Synth::new(SynthParams::default(), a.seed);
    let t0 = Instant::now();
    let bar = super::progress(a.fingers, "impostors");
    let comparisons = impostors::synthetic_impostors(&matcher, &synth, a.fingers, || bar.inc(1));
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let crc = whorl::shard::mcc_params_crc(matcher.params());
    let source = format!(
        "whorl calibrate-impostors --fingers {} --seed {}: impression 1 of each synthetic finger against impression 0 of every other; synthetic generator calibrated on FVC2002 DB1_B+DB2_B only; no real template fitted",
        a.fingers, a.seed
    );
    let model = ImpostorModel::fit(&comparisons, crc, source)?;
    std::fs::write(&a.out, model.to_json() + "\n").with_context(|| format!("writing {}", a.out.display()))?;
    println!("{} impostor comparisons in {secs:.0} s; model written to {}", comparisons.len(), a.out.display());

    // Real impostors, per part: every different-finger pair of each database.
    let mut real = Vec::new();
    for split in [Split::Calibration, Split::HeldOut] {
        let dirs = whorl::data::fvc2002_split(split)?.context("the real FVC2002 data are needed for the check")?;
        let mut v: Vec<(u32, f32)> = Vec::new();
        for dir in dirs {
            v.extend(impostors::real_impostors(&matcher, &whorl::eval::load_database(&dir)?));
        }
        real.push((split, v));
    }
    report(&a, &model, &comparisons, &real, secs)?;
    println!("report written to {}", a.report.display());
    Ok(())
}

/// Writes report.md and fmr.png: the fitted strata; the model's expected
/// false matches against those counted among synthetic and real impostors
/// at a ladder of thresholds; and the calibration check on the real
/// impostors of each part (share with model FMR ≤ α against α).
fn report(
    a: &CalibrateArgs,
    model: &ImpostorModel,
    syn: &[(u32, f32)],
    real: &[(whorl::data::Split, Vec<(u32, f32)>)],
    secs: f64,
) -> Result<()> {
    use whorl::eval::impostors::{calibration, tally};
    std::fs::create_dir_all(&a.report)?;
    let mut md = String::new();
    writeln!(md, "# The impostor model: FMR as a function of the cylinder score\n")?;
    writeln!(md, "Command: `whorl calibrate-impostors --fingers {} --seed {}`  ", a.fingers, a.seed)?;
    writeln!(md, "Machine: {}  ", super::machine())?;
    writeln!(md, "Date: {}\n", super::today())?;
    writeln!(md, "## What the model saw\n\n{}\n", whorl::eval::provenance::all())?;
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
    writeln!(md, "\n## Is the promise kept on real impostors?\n")?;
    writeln!(
        md,
        "For a real impostor comparison the model's p = FMR(score; n_P) should be uniform: a share α of them should have p ≤ α. Below, the share observed among the real FVC2002 impostor comparisons of each part (every different-finger pair of each database; n_P = 0 left out), with its exact 95% binomial interval, and observed/promised. The calibration part is where the generator was calibrated; the held-out part was used for nothing else than this check.\n"
    )?;
    let alphas = [0.3, 0.1, 0.03, 0.01, 3e-3, 1e-3, 3e-4];
    write!(md, "| α (promised FMR) |")?;
    for (split, v) in real {
        write!(md, " {} ({} comparisons): observed % [95% CI] | observed / promised |", split.describe(), v.len())?;
    }
    writeln!(md)?;
    writeln!(md, "|---|{}", "---|---|".repeat(real.len()))?;
    let checks: Vec<_> = real.iter().map(|(_, v)| calibration(model, v, &alphas)).collect();
    for (k, alpha) in alphas.iter().enumerate() {
        write!(md, "| {alpha:.0e} |")?;
        for c in &checks {
            let l = &c[k];
            let r = l.ratio();
            write!(
                md,
                " {} ({} of {}) | {:.2} [{:.2}, {:.2}] |",
                l.observed.pct(3),
                l.count,
                l.comparisons,
                r.value,
                r.low,
                r.high
            )?;
        }
        writeln!(md)?;
    }
    writeln!(md, "\n## Expected against counted false matches\n")?;
    writeln!(
        md,
        "At each threshold, the model's expected number of impostor comparisons at or above it (the sum of FMR over the comparisons' own n_P curves) against the number counted. The synthetic column checks the fit; the real columns check that synthetic impostors stand in for real ones.\n"
    )?;
    write!(md, "| threshold | synthetic: expected | counted |")?;
    for (split, _) in real {
        write!(md, " {}: expected | counted |", split.describe())?;
    }
    writeln!(md)?;
    writeln!(md, "|---|---|---|{}", "---|---|".repeat(real.len()))?;
    for t in [0.02f32, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3] {
        let (se, sc) = tally(model, syn, t);
        write!(md, "| {t:.2} | {se:.1} | {sc} |")?;
        for (_, v) in real {
            let (re, rc) = tally(model, v, t);
            write!(md, " {re:.2} | {rc} |")?;
        }
        writeln!(md)?;
    }
    writeln!(md, "\n![FMR against score by n_P](fmr.png)\n")?;
    std::fs::write(a.report.join("report.md"), md)?;
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for c in &model.strata {
        let pts = (0..=100).map(|i| i as f32 / 100.0).map(|t| (f64::from(t), c.fmr(t).max(1e-12))).collect();
        series.push((format!("model, n_P {}", c.n_p), pts));
    }
    for (split, v) in real {
        let n = v.len().max(1) as f64;
        let pts = (0..=60)
            .map(|i| i as f32 / 200.0)
            .map(|t| (f64::from(t), v.iter().filter(|c| c.1 >= t).count() as f64 / n))
            .filter(|p| p.1 > 0.0)
            .collect();
        series.push((format!("FVC2002 impostors, {} (all n_P)", split.describe()), pts));
    }
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
