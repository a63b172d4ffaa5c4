//! Verification error rates as the Fingerprint Verification Competitions
//! define them (Maio, Maltoni, Cappelli, Wayman, Jain, "FVC2000:
//! fingerprint verification competition", IEEE TPAMI 24(3), 2002).
//!
//! For a threshold t, FMR(t) is the share of impostor scores ≥ t and
//! FNMR(t) the share of genuine scores < t. With
//! t1 = max{t : FNMR(t) ≤ FMR(t)} and t2 = min{t : FNMR(t) ≥ FMR(t)} over
//! the observed scores, the EER interval is [FNMR(t1), FMR(t1)] if
//! FNMR(t1) + FMR(t1) ≤ FMR(t2) + FNMR(t2), else [FMR(t2), FNMR(t2)], and
//! EER is its midpoint. FMR100 (FMR1000) is the lowest FNMR at which FMR ≤
//! 1% (0.1%); ZeroFMR the lowest FNMR with no false match.

use serde::Serialize;

/// The FVC error rates of one score set, as fractions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Rates {
    /// Equal error rate (midpoint of the interval).
    pub eer: f64,
    /// Lower end of the EER interval.
    pub eer_low: f64,
    /// Upper end of the EER interval.
    pub eer_high: f64,
    /// FNMR at FMR ≤ 1%.
    pub fmr100: f64,
    /// FNMR at FMR ≤ 0.1%.
    pub fmr1000: f64,
    /// FNMR at FMR = 0.
    pub zero_fmr: f64,
}

/// FMR and FNMR curves over sorted scores.
pub struct Curves {
    genuine: Vec<f32>,
    impostor: Vec<f32>,
}

impl Curves {
    /// Sorts the scores (NaN are treated as the lowest score).
    pub fn new(genuine: &[f32], impostor: &[f32]) -> Curves {
        let clean = |v: &[f32]| {
            let mut v: Vec<f32> = v.iter().map(|&s| if s.is_nan() { f32::NEG_INFINITY } else { s }).collect();
            v.sort_by(f32::total_cmp);
            v
        };
        Curves { genuine: clean(genuine), impostor: clean(impostor) }
    }

    /// Share of impostor scores ≥ t.
    pub fn fmr(&self, t: f32) -> f64 {
        let n = self.impostor.len();
        if n == 0 {
            return 0.0;
        }
        (n - self.impostor.partition_point(|&s| s < t)) as f64 / n as f64
    }

    /// Share of genuine scores < t.
    pub fn fnmr(&self, t: f32) -> f64 {
        let n = self.genuine.len();
        if n == 0 {
            return 0.0;
        }
        self.genuine.partition_point(|&s| s < t) as f64 / n as f64
    }

    /// Every threshold where a rate changes, ascending, plus one above all scores.
    pub fn thresholds(&self) -> Vec<f32> {
        let mut t: Vec<f32> = self.genuine.iter().chain(&self.impostor).copied().collect();
        t.sort_by(f32::total_cmp);
        t.dedup();
        let top = t.last().copied().unwrap_or(0.0);
        t.push(if top.is_finite() { top + 1.0 } else { f32::MAX });
        t
    }

    /// (FMR, FNMR) at every threshold, for a DET curve.
    pub fn det(&self) -> Vec<(f64, f64)> {
        self.thresholds().iter().map(|&t| (self.fmr(t), self.fnmr(t))).collect()
    }

    /// The FVC rates.
    pub fn rates(&self) -> Rates {
        let ts = self.thresholds();
        let t1 = ts.iter().rev().copied().find(|&t| self.fnmr(t) <= self.fmr(t)).unwrap_or(ts[0]);
        let t2 = ts.iter().copied().find(|&t| self.fnmr(t) >= self.fmr(t)).unwrap_or(ts[ts.len() - 1]);
        let (a, b) = (self.fnmr(t1) + self.fmr(t1), self.fmr(t2) + self.fnmr(t2));
        let (low, high) = if a <= b { (self.fnmr(t1), self.fmr(t1)) } else { (self.fmr(t2), self.fnmr(t2)) };
        let at_fmr = |limit: f64| {
            ts.iter().filter(|&&t| self.fmr(t) <= limit + 1e-12).map(|&t| self.fnmr(t)).fold(1.0, f64::min)
        };
        Rates {
            eer: (low + high) / 2.0,
            eer_low: low.min(high),
            eer_high: low.max(high),
            fmr100: at_fmr(0.01),
            fmr1000: at_fmr(0.001),
            zero_fmr: at_fmr(0.0),
        }
    }
}

/// The FVC rates of a score set.
pub fn rates(genuine: &[f32], impostor: &[f32]) -> Rates {
    Curves::new(genuine, impostor).rates()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_scores_have_zero_error() {
        let r = rates(&[0.8, 0.9, 0.7], &[0.1, 0.2, 0.3, 0.4]);
        assert_eq!((r.eer, r.fmr100, r.fmr1000, r.zero_fmr), (0.0, 0.0, 0.0, 0.0));
    }

    #[test]
    fn overlapping_scores_worked_by_hand() {
        // t1 = 0.6 (FNMR 0 ≤ FMR 1/7), t2 = 0.65 (FNMR 1/5 ≥ FMR 1/7):
        // 0 + 1/7 ≤ 1/7 + 1/5, so the interval is [0, 1/7] and EER 1/14.
        // No impostor reaches 0.7, where 0.6 is the only genuine miss.
        let g = [0.6, 0.7, 0.8, 0.9, 1.0];
        let i = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.65];
        let r = rates(&g, &i);
        assert!((r.eer_low - 0.0).abs() < 1e-12 && (r.eer_high - 1.0 / 7.0).abs() < 1e-12, "{r:?}");
        assert!((r.eer - 1.0 / 14.0).abs() < 1e-12);
        for v in [r.fmr100, r.fmr1000, r.zero_fmr] {
            assert!((v - 0.2).abs() < 1e-12, "{r:?}");
        }
    }
}
