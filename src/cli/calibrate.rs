//! `whorl calibrate-impostors`: fits the impostor model (FMR as a function
//! of the score, see `whorl::search::impostor`) on synthetic impostor
//! comparisons, measures its correction on the real impostors of the
//! calibration part, checks it on both parts, and writes the model file
//! and a report (`whorl::eval::impostor_report`).

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use whorl::data::Split;
use whorl::eval::{impostor_report, impostors};
use whorl::mcc::Matcher;
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
    /// Which score the model is fitted on: `matcher`, or `verified` (with
    /// the second, geometric pass, which decides on the strongest candidates).
    #[arg(long, default_value = "matcher")]
    score: whorl::eval::Scoring,
    /// Model file to write (default: assets/impostor-mcc-v3.json, or
    /// assets/impostor-verified-v1.json with --score verified).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Report folder (report.md, fmr.png).
    #[arg(long, default_value = "benches/reports/impostor-model")]
    report: PathBuf,
}

pub fn run(a: CalibrateArgs) -> Result<()> {
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from(match a.score {
            whorl::eval::Scoring::Matcher => "assets/impostor-mcc-v3.json",
            whorl::eval::Scoring::Verified => "assets/impostor-verified-v1.json",
        })
    });
    let matcher = Matcher::default();
    // The real data first: without them no correction can be measured.
    let mut real = Vec::new();
    for split in [Split::Calibration, Split::HeldOut] {
        let dirs = whorl::data::fvc2002_split(split)?
            .context("the real FVC2002 data are needed (the correction is measured on the calibration part)")?;
        let mut v: Vec<(u32, f32)> = Vec::new();
        for dir in dirs {
            v.extend(impostors::real_impostors(&matcher, a.score, &whorl::eval::load_database(&dir)?));
        }
        real.push((split, v));
    }
    let synth = Synth::new(SynthParams::default(), a.seed);
    let t0 = Instant::now();
    let bar = super::progress(a.fingers, "impostors");
    let comparisons = impostors::synthetic_impostors(&matcher, a.score, &synth, a.fingers, || bar.inc(1));
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let crc = whorl::shard::mcc_params_crc(matcher.params());
    let verified = a.score == whorl::eval::Scoring::Verified;
    let command = format!(
        "whorl calibrate-impostors --fingers {} --seed {}{}",
        a.fingers,
        a.seed,
        if verified { " --score verified" } else { "" }
    );
    let source = format!(
        "{command}: {}; curves fitted on impression 1 of each synthetic finger against impression 0 of every other (generator calibrated on FVC2002 DB1_B+DB2_B only); level corrected on the real impostors of FVC2002 DB1_B+DB2_B; DB3_B+DB4_B not used",
        a.score.describe()
    );
    let mut model = ImpostorModel::fit(&comparisons, crc, source)?;
    if verified {
        model.score = whorl::search::impostor::ModelScore::Verified;
    }
    let calibration_part = &real[0].1;
    model.real_correction = Some(
        impostors::measure_correction(&model, calibration_part, Split::Calibration.describe().to_string())
            .context("too few real impostor comparisons in the calibration part to measure the correction")?,
    );
    std::fs::write(&out, model.to_json() + "\n").with_context(|| format!("writing {}", out.display()))?;
    println!(
        "{} impostor comparisons in {secs:.0} s; correction × {:.3} on the calibration part; model written to {}",
        comparisons.len(),
        model.correction_factor(),
        out.display()
    );
    let made =
        impostor_report::Made { command, machine: super::machine(), date: super::today(), fingers: a.fingers, secs };
    impostor_report::write(&a.report, &made, &model, &comparisons, &real)?;
    println!("report written to {}", a.report.display());
    Ok(())
}
