//! Impostor comparisons for fitting and checking the impostor model
//! ([`crate::search::impostor`]): synthetic ones to fit it on, real ones
//! to check it against.
//!
//! **The check.** For an impostor comparison the model's
//! `p = FMR(score; n_P)` is, if the model is right, uniform on (0, 1):
//! among `N` real impostor comparisons, about `α·N` should have `p ≤ α`.
//! The count and its exact binomial interval say, for each level `α` the
//! real data can reach (`α·N` of a few at least), how far the model's
//! promise holds. Below those levels (the 1e-7 a national gallery's
//! threshold sits at) only the synthetic tail speaks.

use super::intervals::{Estimate, binomial};
use super::{Database, Scoring, protocol_pairs};
use crate::mcc::{Matcher, Prepared, Scratch};
use crate::search::impostor::ImpostorModel;
use crate::synth::Synth;
use rayon::prelude::*;
use serde::Serialize;

/// `(n_P, score)` of impression 1 of each of `fingers` synthetic fingers
/// against impression 0 of every other one; `tick` is called once per probe.
pub fn synthetic_impostors(
    matcher: &Matcher,
    scoring: Scoring,
    synth: &Synth,
    fingers: u64,
    tick: impl Fn() + Sync,
) -> Vec<(u32, f32)> {
    let recs = synth.batch(0..fingers, 0..2);
    let prepared: Vec<Prepared> = recs.par_iter().map(|r| matcher.prepare(&r.template)).collect();
    let probes: Vec<&Prepared> = prepared.iter().skip(1).step_by(2).collect();
    let gallery: Vec<&Prepared> = prepared.iter().step_by(2).collect();
    probes
        .par_iter()
        .enumerate()
        .map_init(Scratch::new, |s, (i, p)| {
            let row: Vec<(u32, f32)> = gallery
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, g)| scoring.with_np(matcher, p, g, s))
                .collect();
            tick();
            row
        })
        .flatten()
        .collect()
}

/// `(n_P, score)` of the FVC protocol's impostor pairs of `db`.
pub fn real_impostors(matcher: &Matcher, scoring: Scoring, db: &Database) -> Vec<(u32, f32)> {
    let prep: Vec<Prepared> = db.entries.par_iter().map(|e| matcher.prepare(&e.template)).collect();
    let (_, pairs) = protocol_pairs(db);
    pairs.par_iter().map_init(Scratch::new, |s, &(x, y)| scoring.with_np(matcher, &prep[x], &prep[y], s)).collect()
}

/// The model's expected count of comparisons scoring at least `t` (the sum
/// of their FMR on their own n_P curves) and the count observed.
pub fn tally(model: &ImpostorModel, comparisons: &[(u32, f32)], t: f32) -> (f64, usize) {
    // n_P = 0 comparisons score exactly 0 and never reach t > 0.
    let expected: f64 = comparisons.par_iter().filter(|c| c.0 > 0).map(|&(np, _)| model.ln_fmr(np, t).exp()).sum();
    (expected, comparisons.iter().filter(|c| c.1 >= t).count())
}

/// One level of the calibration check.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Level {
    /// α: the FMR the model promises.
    pub alpha: f64,
    /// Comparisons checked (n_P > 0).
    pub comparisons: usize,
    /// Of them, those the model gives `p ≤ α`, as a share with its 95% interval.
    pub observed: Estimate,
    /// Their count.
    pub count: usize,
}

impl Level {
    /// Observed over promised, with the interval: 1 when the model is right,
    /// above 1 when real impostors pass more often than promised.
    pub fn ratio(&self) -> Estimate {
        Estimate {
            value: self.observed.value / self.alpha,
            low: self.observed.low / self.alpha,
            high: self.observed.high / self.alpha,
        }
    }
}

/// For each `α`, the share of `comparisons` (n_P > 0) whose model FMR is at most `α`.
pub fn calibration(model: &ImpostorModel, comparisons: &[(u32, f32)], alphas: &[f64]) -> Vec<Level> {
    let p: Vec<f64> = comparisons.par_iter().filter(|c| c.0 > 0).map(|&(np, s)| model.ln_fmr(np, s)).collect();
    alphas
        .iter()
        .map(|&alpha| {
            let ln = alpha.ln();
            let count = p.iter().filter(|&&x| x <= ln).count();
            Level { alpha, comparisons: p.len(), observed: binomial(count as u64, p.len() as u64, 0.95), count }
        })
        .collect()
}

/// The promised FMR levels the real-data correction is measured at: the
/// range where the real parts have events enough to count (1e-2 to 3e-4
/// of 5,760 comparisons is 58 to 2 expected) and where the ratio was
/// flat on the calibration part.
pub const CORRECTION_ALPHAS: [f64; 4] = [1e-2, 3e-3, 1e-3, 3e-4];

/// Measures the real-data correction of `model` (its synthetic curves) on
/// real impostor `comparisons` (n_P = 0 left out) of the data named `data`.
pub fn measure_correction(
    model: &ImpostorModel,
    comparisons: &[(u32, f32)],
    data: String,
) -> Option<crate::search::impostor::RealCorrection> {
    let ln_p: Vec<f64> =
        comparisons.par_iter().filter(|c| c.0 > 0).map(|&(np, s)| model.ln_fmr_synthetic(np, s)).collect();
    crate::search::impostor::RealCorrection::measure(&ln_p, &CORRECTION_ALPHAS, data)
}
