//! The impostor model's report (`whorl calibrate-impostors`): the fitted
//! strata, the real-data correction and how it was measured, the check of
//! the promise on the real impostors of each part before and after the
//! correction, and expected against counted false matches.

use super::impostors::{calibration, tally};
use crate::data::Split;
use crate::plot::{self, Scale, Series};
use crate::search::impostor::{ImpostorModel, ModelScore};
use std::fmt::Write as _;
use std::path::Path;

/// What the report states about how it was made.
#[derive(Debug, Clone)]
pub struct Made {
    /// The command line.
    pub command: String,
    /// The machine, in words.
    pub machine: String,
    /// The date.
    pub date: String,
    /// Synthetic fingers scored.
    pub fingers: u64,
    /// Seconds the synthetic comparisons took.
    pub secs: f64,
}

/// The levels of the promise checked in the report.
const ALPHAS: [f64; 7] = [0.3, 0.1, 0.03, 0.01, 3e-3, 1e-3, 3e-4];

/// Writes `report.md` and `fmr.png` into `dir`.
pub fn write(
    dir: &Path,
    made: &Made,
    model: &ImpostorModel,
    syn: &[(u32, f32)],
    real: &[(Split, Vec<(u32, f32)>)],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let md = markdown(made, model, syn, real)?;
    std::fs::write(dir.join("report.md"), md)?;
    plot_fmr(&dir.join("fmr.png"), model, real)
}

fn markdown(
    made: &Made,
    model: &ImpostorModel,
    syn: &[(u32, f32)],
    real: &[(Split, Vec<(u32, f32)>)],
) -> Result<String, std::fmt::Error> {
    let mut md = String::new();
    let (what, file) = match model.score {
        ModelScore::Matcher => ("the cylinder score", "assets/impostor-mcc-v3.json"),
        ModelScore::Verified => ("the verified score", "assets/impostor-verified-v1.json"),
    };
    writeln!(md, "# The impostor model: FMR as a function of {what}\n")?;
    writeln!(md, "Command: `{}`  ", made.command)?;
    writeln!(md, "Machine: {}  ", made.machine)?;
    writeln!(md, "Date: {}  ", made.date)?;
    writeln!(md, "Model file: `{file}`\n")?;
    writeln!(md, "## What the model saw\n\n{}\n", super::provenance::all())?;
    writeln!(
        md,
        "{} synthetic impostor comparisons ({} of them with an empty template, n_P = 0, left out) (impression 1 of each of {} fingers against impression 0 of every other finger), scored in {:.0} s. One curve per n_P (the number of cylinder pairs LSS-R sums: 4 for the smallest templates, 12 for full ones): the body is the empirical survival function (20 knots per decade), the tail beyond the {} highest scores a generalised Pareto fit (method of moments; a negative shape is raised to 0).\n",
        syn.len(),
        syn.iter().filter(|c| c.0 == 0).count(),
        made.fingers,
        made.secs,
        crate::search::impostor::TAIL_MIN
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
    correction(&mut md, model)?;
    let synthetic = model.synthetic_curves();
    writeln!(md, "\n## Is the promise kept on real impostors?\n")?;
    writeln!(
        md,
        "For a real impostor comparison the model's p = FMR(score; n_P) should be uniform: a share α of them should have p ≤ α. Below, the share observed among the real FVC2002 impostor comparisons of each part (every different-finger pair of each database; n_P = 0 left out), with its exact 95% binomial interval, and observed/promised: first for the synthetic curves alone, then for the model as it ships (corrected). The correction was measured on the calibration part; the held-out part was used for nothing but this check. (The intervals treat comparisons as independent; they share fingers, so the real uncertainty is wider.)\n"
    )?;
    promise_table(&mut md, "synthetic curves alone (before the correction)", &synthetic, real)?;
    promise_table(&mut md, &format!("as shipped (× {:.2})", model.correction_factor()), model, real)?;
    writeln!(md, "\n## Expected against counted false matches\n")?;
    writeln!(
        md,
        "At each threshold, the model's expected number of impostor comparisons at or above it (the sum of FMR over the comparisons' own n_P curves) against the number counted. The synthetic column checks the fit of the synthetic curves (without the correction); the real columns check the model as shipped.\n"
    )?;
    write!(md, "| threshold | synthetic: expected | counted |")?;
    for (split, _) in real {
        write!(md, " {}: expected | counted |", split.describe())?;
    }
    writeln!(md)?;
    writeln!(md, "|---|---|---|{}", "---|---|".repeat(real.len()))?;
    for t in [0.02f32, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3] {
        let (se, sc) = tally(&synthetic, syn, t);
        write!(md, "| {t:.2} | {se:.1} | {sc} |")?;
        for (_, v) in real {
            let (re, rc) = tally(model, v, t);
            write!(md, " {re:.2} | {rc} |")?;
        }
        writeln!(md)?;
    }
    writeln!(md, "\n![FMR against score by n_P](fmr.png)\n")?;
    Ok(md)
}

fn correction(md: &mut String, model: &ImpostorModel) -> std::fmt::Result {
    writeln!(md, "\n## The correction measured on real impostors\n")?;
    let Some(c) = &model.real_correction else {
        return writeln!(md, "None: the model is the synthetic curves alone.");
    };
    writeln!(
        md,
        "Every FMR of the model is multiplied by **{:.3}**, measured on {} ({} real impostor comparisons with n_P > 0); rule: {}.\n",
        c.factor, c.data, c.comparisons, c.rule
    )?;
    writeln!(md, "| α (promised by the synthetic curves) | real comparisons with p ≤ α | observed / promised |")?;
    writeln!(md, "|---|---|---|")?;
    for l in &c.levels {
        writeln!(md, "| {:.0e} | {} | {:.2} |", l.alpha, l.count, l.ratio)?;
    }
    Ok(())
}

fn promise_table(
    md: &mut String,
    title: &str,
    model: &ImpostorModel,
    real: &[(Split, Vec<(u32, f32)>)],
) -> std::fmt::Result {
    writeln!(md, "\n### {title}\n")?;
    write!(md, "| α (promised FMR) |")?;
    for (split, v) in real {
        write!(md, " {} ({} comparisons): observed % [95% CI] | observed / promised |", split.describe(), v.len())?;
    }
    writeln!(md)?;
    writeln!(md, "|---|{}", "---|---|".repeat(real.len()))?;
    let checks: Vec<_> = real.iter().map(|(_, v)| calibration(model, v, &ALPHAS)).collect();
    for (k, alpha) in ALPHAS.iter().enumerate() {
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
    Ok(())
}

fn plot_fmr(path: &Path, model: &ImpostorModel, real: &[(Split, Vec<(u32, f32)>)]) -> anyhow::Result<()> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for c in &model.strata {
        let pts = (0..=100)
            .map(|i| i as f32 / 100.0)
            .map(|t| (f64::from(t), model.ln_fmr(c.n_p, t).exp().max(1e-12)))
            .collect();
        series.push((format!("model (corrected), n_P {}", c.n_p), pts));
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
        path,
        "Impostor FMR against score, by n_P",
        ("cylinder score", Scale::Linear(0.0, 1.0)),
        ("FMR (share of impostors at or above)", Scale::Log(1e-12, 1.0)),
        &series,
    )?;
    Ok(())
}
