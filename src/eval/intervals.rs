//! Confidence intervals for the published rates.
//!
//! * **Error rates of a verification protocol** (EER, FMR100, FMR1000,
//!   ZeroFMR): comparisons that share a finger are not independent, so the
//!   interval comes from a bootstrap over *fingers* (the "subsets
//!   bootstrap" of Bolle, Ratha, Pankanti, "Error analysis of pattern
//!   recognition systems: the subsets bootstrap", CVIU 93(1), 2004): each
//!   replicate draws a database's fingers with replacement and keeps every
//!   genuine comparison of a drawn finger and every impostor comparison of
//!   two draws that are different fingers; the 2.5% and 97.5% percentiles
//!   of the replicates' rates bound the 95% interval. An average over
//!   databases resamples each database in the same replicate.
//! * **Proportions of independent trials** (FPIR over non-mated searches,
//!   FNIR over mated ones, a hit rate): the exact Clopper–Pearson binomial
//!   interval, which stays honest at 0 of n (0 of 140 non-mated searches
//!   bounds FPIR by 2.6%, not 0).

use super::metrics::{self, Rates};
use super::{Database, DbScores};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use statrs::distribution::{Beta, ContinuousCDF};
use std::collections::HashMap;

/// Replicates drawn by default.
pub const REPLICATES: usize = 1000;

/// A rate with its 95% interval, as fractions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Estimate {
    /// The point estimate (on the data as measured).
    pub value: f64,
    /// Lower end of the 95% interval.
    pub low: f64,
    /// Upper end.
    pub high: f64,
}

impl Estimate {
    /// As "v [lo, hi]" in percent with `digits` decimals.
    pub fn pct(&self, digits: usize) -> String {
        format!("{:.d$} [{:.d$}, {:.d$}]", 100.0 * self.value, 100.0 * self.low, 100.0 * self.high, d = digits)
    }
}

/// The exact (Clopper–Pearson) interval of `k` successes in `n` trials at
/// confidence `level` (e.g. 0.95). `n = 0` gives [0, 1].
pub fn binomial(k: u64, n: u64, level: f64) -> Estimate {
    if n == 0 {
        return Estimate { value: 0.0, low: 0.0, high: 1.0 };
    }
    let k = k.min(n);
    let alpha = (1.0 - level).clamp(1e-12, 1.0);
    let (kf, nf) = (k as f64, n as f64);
    let quantile = |a: f64, b: f64, p: f64| Beta::new(a, b).map(|d| d.inverse_cdf(p)).unwrap_or(f64::NAN);
    let low = if k == 0 { 0.0 } else { quantile(kf, nf - kf + 1.0, alpha / 2.0) };
    let high = if k == n { 1.0 } else { quantile(kf + 1.0, nf - kf, 1.0 - alpha / 2.0) };
    Estimate { value: kf / nf, low, high }
}

/// The scores of one database grouped by finger, ready for resampling.
#[derive(Debug, Clone)]
pub struct ByFinger {
    /// Distinct fingers.
    pub fingers: usize,
    genuine: Vec<Vec<f32>>,
    impostor: HashMap<(usize, usize), Vec<f32>>,
}

impl ByFinger {
    /// Groups `scores` (computed on `db`) by finger and finger pair.
    pub fn new(db: &Database, scores: &DbScores) -> ByFinger {
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for e in &db.entries {
            let n = ids.len();
            ids.entry(e.finger.as_str()).or_insert(n);
        }
        let finger = |i: usize| ids[db.entries[i].finger.as_str()];
        let mut genuine = vec![Vec::new(); ids.len()];
        for &(a, _, s) in &scores.genuine {
            genuine[finger(a)].push(s);
        }
        let mut impostor: HashMap<(usize, usize), Vec<f32>> = HashMap::new();
        for &(a, b, s) in &scores.impostor {
            let (x, y) = (finger(a), finger(b));
            impostor.entry((x.min(y), x.max(y))).or_default().push(s);
        }
        ByFinger { fingers: ids.len(), genuine, impostor }
    }

    /// The rates of one replicate: fingers drawn with replacement.
    pub fn replicate(&self, rng: &mut impl Rng) -> Rates {
        let draws: Vec<usize> = (0..self.fingers).map(|_| rng.random_range(0..self.fingers)).collect();
        let mut g = Vec::new();
        let mut i = Vec::new();
        for (p, &a) in draws.iter().enumerate() {
            g.extend_from_slice(&self.genuine[a]);
            for &b in &draws[p + 1..] {
                if a != b
                    && let Some(v) = self.impostor.get(&(a.min(b), a.max(b)))
                {
                    i.extend_from_slice(v);
                }
            }
        }
        metrics::rates(&g, &i)
    }
}

/// FVC rates with bootstrap intervals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct RateIntervals {
    /// Equal error rate.
    pub eer: Estimate,
    /// FNMR at FMR ≤ 1%.
    pub fmr100: Estimate,
    /// FNMR at FMR ≤ 0.1%.
    pub fmr1000: Estimate,
    /// FNMR at FMR = 0.
    pub zero_fmr: Estimate,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Intervals for the average of the rates over `dbs` (one database gives
/// its own rates): `replicates` bootstrap replicates over fingers, seeded.
/// `point` is the average measured on the data as they are.
pub fn bootstrap(dbs: &[ByFinger], point: &Rates, replicates: usize, seed: u64) -> RateIntervals {
    let reps: Vec<[f64; 4]> = (0..replicates)
        .into_par_iter()
        .map(|r| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut sum = [0.0; 4];
            for db in dbs {
                let x = db.replicate(&mut rng);
                for (s, v) in sum.iter_mut().zip([x.eer, x.fmr100, x.fmr1000, x.zero_fmr]) {
                    *s += v;
                }
            }
            sum.map(|s| s / dbs.len().max(1) as f64)
        })
        .collect();
    let est = |k: usize, value: f64| {
        let mut v: Vec<f64> = reps.iter().map(|r| r[k]).collect();
        v.sort_by(f64::total_cmp);
        Estimate { value, low: percentile(&v, 0.025), high: percentile(&v, 0.975) }
    };
    RateIntervals {
        eer: est(0, point.eer),
        fmr100: est(1, point.fmr100),
        fmr1000: est(2, point.fmr1000),
        zero_fmr: est(3, point.zero_fmr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clopper_pearson_matches_known_values() {
        // 0 of n: upper bound 1 − (α/2)^(1/n).
        let e = binomial(0, 140, 0.95);
        assert_eq!(e.low, 0.0);
        assert!((e.high - (1.0 - 0.025f64.powf(1.0 / 140.0))).abs() < 1e-6, "{e:?}");
        assert!((e.high - 0.026).abs() < 0.001);
        // 5 of 100: [1.64%, 11.28%] (standard tables).
        let e = binomial(5, 100, 0.95);
        assert!((e.low - 0.01643).abs() < 2e-4 && (e.high - 0.11284).abs() < 2e-4, "{e:?}");
        let e = binomial(10, 10, 0.95);
        assert_eq!(e.high, 1.0);
        assert!((e.low - 0.025f64.powf(0.1)).abs() < 1e-6);
        assert_eq!(binomial(0, 0, 0.95).high, 1.0);
    }

    #[test]
    fn the_bootstrap_brackets_the_point_and_widens_with_overlap() {
        use crate::eval::{Entry, protocol_pairs};
        // 10 fingers × 8 impressions; genuine scores 0.5 ± noise, impostor 0.1 ± noise,
        // one finger with low genuine scores (the errors come from it).
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let entries: Vec<Entry> = (0..10)
            .flat_map(|f| {
                (1..=8).map(move |i| Entry {
                    finger: format!("{f:03}"),
                    impression: i,
                    path: Default::default(),
                    template: Default::default(),
                })
            })
            .collect();
        let db = Database { name: "t".into(), entries, content_crc: 0 };
        let (gp, ip) = protocol_pairs(&db);
        let finger = |i: usize| db.entries[i].finger.clone();
        let genuine: Vec<(usize, usize, f32)> = gp
            .iter()
            .map(|&(a, b)| {
                let base = if finger(a) == "003" { 0.12 } else { 0.5 };
                (a, b, base + 0.05 * rng.random::<f32>())
            })
            .collect();
        let impostor: Vec<(usize, usize, f32)> =
            ip.iter().map(|&(a, b)| (a, b, 0.1 + 0.05 * rng.random::<f32>())).collect();
        let gs: Vec<f32> = genuine.iter().map(|x| x.2).collect();
        let is: Vec<f32> = impostor.iter().map(|x| x.2).collect();
        let rates = metrics::rates(&gs, &is);
        let scores = DbScores { name: "t".into(), genuine, impostor, rates };
        let bf = ByFinger::new(&db, &scores);
        assert_eq!(bf.fingers, 10);
        let iv = bootstrap(&[bf], &rates, 400, 7);
        assert!(iv.eer.low <= rates.eer && rates.eer <= iv.eer.high, "{iv:?} vs {rates:?}");
        // Replicates without finger 003 have no error, those with it twice twice the error.
        assert_eq!(iv.eer.low, 0.0);
        assert!(iv.eer.high > rates.eer * 1.5, "{iv:?}");
    }
}
