//! Calibrating the generator's capture noise against real match scores
//! (`whorl synth-calibrate`).
//!
//! The FVC protocol is run on synthetic databases of a real database's
//! size, and the capture-noise knobs (those that leave the template
//! statistics of [`super::stats`] alone) are searched coordinate by
//! coordinate for the score distributions closest to the real ones:
//! `KS(genuine) + KS(impostor) + 6·(|ΔEER| + |ΔFMR100| + |ΔFMR1000|)`.
//! Only the calibration part of the real data ([`crate::data::CALIBRATION`])
//! may be used as the target; the held-out part is reported beside it.

use super::{Synth, SynthParams};
use crate::eval::{self, DbScores, metrics::Rates, report};
use crate::mcc::Matcher;
use std::fmt::Write as _;

/// Weight of the error-rate differences in [`cost`].
pub const RATE_WEIGHT: f64 = 6.0;

/// Kolmogorov–Smirnov distance between two samples.
pub fn ks(a: &[f32], b: &[f32]) -> f64 {
    let mut x = a.to_vec();
    let mut y = b.to_vec();
    x.sort_by(f32::total_cmp);
    y.sort_by(f32::total_cmp);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < x.len() && j < y.len() {
        let v = x[i].min(y[j]);
        while i < x.len() && x[i] <= v {
            i += 1;
        }
        while j < y.len() && y[j] <= v {
            j += 1;
        }
        d = d.max((i as f64 / x.len() as f64 - j as f64 / y.len() as f64).abs());
    }
    d
}

/// Genuine and impostor scores of a set of databases, pooled.
pub fn pooled(all: &[DbScores]) -> (Vec<f32>, Vec<f32>) {
    let g = all.iter().flat_map(|s| s.genuine.iter().map(|p| p.2)).collect();
    let i = all.iter().flat_map(|s| s.impostor.iter().map(|p| p.2)).collect();
    (g, i)
}

/// "mean (q5/q25/q50/q75/q95)" of a sample.
pub fn summary(v: &[f32]) -> String {
    use super::stats::quantile;
    let mean = v.iter().sum::<f32>() / v.len().max(1) as f32;
    format!(
        "{mean:.3} ({:.3}/{:.3}/{:.3}/{:.3}/{:.3})",
        quantile(v, 0.05),
        quantile(v, 0.25),
        quantile(v, 0.5),
        quantile(v, 0.75),
        quantile(v, 0.95)
    )
}

/// The shape of the synthetic databases scored per evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Databases, each with its own seed (`seed + k`).
    pub dbs: u64,
    /// Fingers per database (FVC2002 B sets have 10).
    pub fingers: u64,
    /// Impressions per finger (8).
    pub impressions: u32,
    /// Base seed.
    pub seed: u64,
}

/// The FVC protocol on synthetic databases of `shape` made with `params`.
pub fn synthetic_scores(matcher: &Matcher, params: &SynthParams, shape: Shape) -> Vec<DbScores> {
    (0..shape.dbs)
        .map(|k| {
            let s = Synth::new(params.clone(), shape.seed.wrapping_add(k));
            let db = eval::Database::from_synthetic(
                &format!("synthetic {}", k + 1),
                s.batch(0..shape.fingers, 0..shape.impressions),
            );
            eval::evaluate(matcher, &db)
        })
        .collect()
}

/// How far synthetic scores are from real ones (lower is closer).
pub fn cost(real: &[DbScores], synthetic: &[DbScores]) -> f64 {
    let (rg, ri) = pooled(real);
    let (sg, si) = pooled(synthetic);
    let (ra, sa) = (report::average(real), report::average(synthetic));
    let rates = (sa.eer - ra.eer).abs() + (sa.fmr100 - ra.fmr100).abs() + (sa.fmr1000 - ra.fmr1000).abs();
    ks(&rg, &sg) + ks(&ri, &si) + RATE_WEIGHT * rates
}

/// A capture-noise knob the search may move.
pub type Knob = (&'static str, fn(&mut SynthParams) -> &mut f32);

/// The knobs searched: they leave the template statistics alone.
pub const KNOBS: [Knob; 6] = [
    ("position_jitter", |p| &mut p.position_jitter),
    ("angle_jitter", |p| &mut p.angle_jitter),
    ("distortion_sd", |p| &mut p.distortion_sd),
    ("distortion_scale", |p| &mut p.distortion_scale),
    ("placement_sd", |p| &mut p.placement_sd),
    ("noise_spread", |p| &mut p.noise_spread),
];

/// Coordinate search over [`KNOBS`] from `start`, minimising `cost`: each
/// round tries, for each knob, a few multiples of its value (steps from
/// zero). `log` hears every improvement.
pub fn search(
    start: &SynthParams,
    rounds: usize,
    cost: impl Fn(&SynthParams) -> f64,
    mut log: impl FnMut(&str),
) -> SynthParams {
    let mut best = start.clone();
    let mut best_cost = cost(&best);
    log(&format!("start: cost {best_cost:.4}"));
    for round in 0..rounds {
        let factors: &[f32] = if round == 0 { &[0.25, 0.5, 0.75, 1.5, 2.0] } else { &[0.7, 0.85, 1.15, 1.4] };
        for (name, get) in KNOBS {
            let base = *get(&mut best.clone());
            let tries: Vec<f32> =
                if base == 0.0 { vec![0.1, 0.25, 0.5] } else { factors.iter().map(|f| base * f).collect() };
            for v in tries {
                let mut p = best.clone();
                *get(&mut p) = v;
                let c = cost(&p);
                if c < best_cost {
                    log(&format!("round {round}: {name} {base:.3} -> {v:.3}: cost {best_cost:.4} -> {c:.4}"));
                    best_cost = c;
                    best = p;
                }
            }
        }
    }
    best
}

/// The side-by-side table of real and synthetic score statistics: one
/// column per `(name, scores)` set.
pub fn comparison(columns: &[(&str, &[DbScores])]) -> String {
    let pct = |v: f64| format!("{:.2}", 100.0 * v);
    let mut md = String::new();
    let head: Vec<&str> = columns.iter().map(|c| c.0).collect();
    let _ = writeln!(md, "| | {} |", head.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(columns.len()));
    let avgs: Vec<Rates> = columns.iter().map(|c| report::average(c.1)).collect();
    let pools: Vec<(Vec<f32>, Vec<f32>)> = columns.iter().map(|c| pooled(c.1)).collect();
    let row = |md: &mut String, name: &str, cells: Vec<String>| {
        let _ = writeln!(md, "| {name} | {} |", cells.join(" | "));
    };
    row(&mut md, "average EER %", avgs.iter().map(|r| pct(r.eer)).collect());
    row(&mut md, "average FMR100 %", avgs.iter().map(|r| pct(r.fmr100)).collect());
    row(&mut md, "average FMR1000 %", avgs.iter().map(|r| pct(r.fmr1000)).collect());
    row(&mut md, "average ZeroFMR %", avgs.iter().map(|r| pct(r.zero_fmr)).collect());
    row(&mut md, "genuine score mean (q5/q25/q50/q75/q95)", pools.iter().map(|p| summary(&p.0)).collect());
    row(&mut md, "impostor score mean (q5/q25/q50/q75/q95)", pools.iter().map(|p| summary(&p.1)).collect());
    let first = &pools[0];
    row(
        &mut md,
        &format!("KS distance to {}, genuine / impostor", columns[0].0),
        pools.iter().map(|p| format!("{:.3} / {:.3}", ks(&first.0, &p.0), ks(&first.1, &p.1))).collect(),
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ks_of_known_samples() {
        assert_eq!(ks(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 0.0);
        assert_eq!(ks(&[1.0, 2.0], &[3.0, 4.0]), 1.0);
        assert!((ks(&[1.0, 2.0, 3.0, 4.0], &[3.0, 4.0, 5.0, 6.0]) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn the_search_walks_downhill() {
        // A cost with its minimum at distortion_sd = 3.0 from 1.5.
        let start = SynthParams { distortion_sd: 1.5, ..SynthParams::default() };
        let best = search(&start, 2, |p| f64::from((p.distortion_sd - 3.0).abs()), |_| {});
        assert!((best.distortion_sd - 3.0).abs() < 0.01, "{}", best.distortion_sd);
        assert_eq!(best.position_jitter, start.position_jitter);
    }
}
