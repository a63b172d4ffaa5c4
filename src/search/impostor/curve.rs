//! One stratum's curve: the empirical body and the generalised Pareto tail.

use super::{KNOTS_PER_DECADE, ModelError, TAIL_MIN};
use serde::{Deserialize, Serialize};

/// One knot of the body: `fmr` of the comparisons score at least `score`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Knot {
    /// The score.
    pub score: f32,
    /// Share of impostor comparisons scoring at least `score`.
    pub fmr: f64,
}

/// The generalised Pareto tail beyond the last knot:
/// FMR(s) = fmr · (1 + ξ·(s − from)/σ)^(−1/ξ), or fmr · exp(−(s − from)/σ) when ξ = 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tail {
    /// Where it starts (the last knot's score).
    pub from: f32,
    /// FMR at `from`.
    pub fmr: f64,
    /// Scale σ.
    pub scale: f64,
    /// Shape ξ used (≥ 0).
    pub shape: f64,
    /// Excesses it was fitted on.
    pub excesses: usize,
    /// Shape the moments gave before clamping at 0.
    pub fitted_shape: f64,
}

impl Tail {
    /// ln of FMR(s)/fmr for an excess `z = s − from ≥ 0`.
    fn ln_ratio(&self, z: f64) -> f64 {
        if self.shape < 1e-9 { -z / self.scale } else { -(1.0 / self.shape) * (self.shape * z / self.scale).ln_1p() }
    }

    /// The excess at which ln(FMR/fmr) = `r` (r ≤ 0).
    fn excess_for(&self, r: f64) -> f64 {
        if self.shape < 1e-9 { -r * self.scale } else { self.scale * ((-self.shape * r).exp_m1()) / self.shape }
    }
}

/// FMR as a function of the score for one stratum of comparisons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// The comparisons' n_P (the number of cylinder pairs LSS-R sums, set by
    /// the smaller template).
    pub n_p: u32,
    /// Comparisons fitted.
    pub comparisons: u64,
    /// The body, by ascending score and descending FMR.
    pub knots: Vec<Knot>,
    /// The tail.
    pub tail: Tail,
}

impl Curve {
    /// Fits one curve on `scores` (reordered in place).
    pub fn fit(n_p: u32, scores: &mut [f32]) -> Result<Curve, ModelError> {
        if scores.iter().any(|s| !s.is_finite()) {
            return Err(ModelError::NotFinite);
        }
        let n = scores.len();
        if n < TAIL_MIN * 10 {
            return Err(ModelError::TooFew(n));
        }
        scores.sort_unstable_by(|a, b| b.total_cmp(a));
        // count(≥ s) for the score at descending index i, ties included.
        let at_least = |i: usize| -> usize { scores.partition_point(|&x| x >= scores[i]) };
        let mut knots: Vec<Knot> = Vec::new();
        let mut k = 0.0f64;
        loop {
            let target = 10f64.powf(-k / KNOTS_PER_DECADE);
            let want = (target * n as f64).floor() as usize;
            if want < TAIL_MIN {
                break;
            }
            let i = want - 1;
            let knot = Knot { score: scores[i], fmr: at_least(i) as f64 / n as f64 };
            if knots.last().is_none_or(|l| knot.score > l.score) {
                knots.push(knot);
            }
            k += 1.0;
        }
        // Tail: excesses over the last knot of the TAIL_MIN highest scores' start.
        let start = scores[TAIL_MIN - 1];
        let above: Vec<f64> = scores.iter().take_while(|&&x| x > start).map(|&x| f64::from(x - start)).collect();
        if above.len() < TAIL_MIN / 2 {
            return Err(ModelError::TooFew(above.len()));
        }
        let mean = above.iter().sum::<f64>() / above.len() as f64;
        let var = above.iter().map(|e| (e - mean) * (e - mean)).sum::<f64>() / above.len() as f64;
        // Method of moments: ξ = (1 − mean²/var)/2, σ = mean·(1 + mean²/var)/2.
        let ratio = if var > 0.0 { mean * mean / var } else { 1.0 };
        let fitted_shape = 0.5 * (1.0 - ratio);
        let (shape, scale) = if fitted_shape > 0.0 { (fitted_shape, 0.5 * mean * (1.0 + ratio)) } else { (0.0, mean) };
        let tail_fmr = at_least(TAIL_MIN - 1) as f64 / n as f64;
        // The body ends where the tail starts.
        knots.retain(|k| k.score < start);
        knots.push(Knot { score: start, fmr: tail_fmr });
        let tail =
            Tail { from: start, fmr: tail_fmr, scale: scale.max(1e-6), shape, excesses: above.len(), fitted_shape };
        Ok(Curve { n_p, comparisons: n as u64, knots, tail })
    }

    pub(super) fn check(&self) -> Result<(), ModelError> {
        let m = self;
        let ordered = m.knots.windows(2).all(|w| w[0].score < w[1].score && w[0].fmr >= w[1].fmr);
        let sane = m.knots.iter().all(|k| k.fmr > 0.0 && k.fmr <= 1.0 && k.score.is_finite());
        let tail_ok = m.tail.scale > 0.0 && m.tail.fmr > 0.0 && (0.0..1.0).contains(&m.tail.shape);
        if m.knots.is_empty() || !ordered || !sane || !tail_ok {
            return Err(ModelError::Unreadable(format!(
                "n_P {}: knots must ascend in score with FMR in (0, 1] and a well-formed tail",
                m.n_p
            )));
        }
        Ok(())
    }

    /// ln FMR(s): the natural log of the share of impostor comparisons
    /// scoring at least `s` (0 for scores below the body, ever more
    /// negative into the tail; never −∞).
    pub fn ln_fmr(&self, s: f32) -> f64 {
        let first = self.knots[0];
        if s <= first.score {
            return first.fmr.ln();
        }
        if s >= self.tail.from {
            return self.tail.fmr.ln() + self.tail.ln_ratio(f64::from(s - self.tail.from));
        }
        let i = self.knots.partition_point(|k| k.score <= s); // knots[i-1].score ≤ s < knots[i].score
        let (a, b) = (self.knots[i - 1], self.knots[i]);
        let t = f64::from(s - a.score) / f64::from(b.score - a.score);
        a.fmr.ln() + t * (b.fmr.ln() - a.fmr.ln())
    }

    /// FMR(s).
    pub fn fmr(&self, s: f32) -> f64 {
        self.ln_fmr(s).exp()
    }

    /// The lowest score whose FMR is at most `fmr` (inverse of [`Self::fmr`]).
    pub fn score_for_fmr(&self, fmr: f64) -> f32 {
        let ln = fmr.max(f64::MIN_POSITIVE).ln();
        if ln >= self.knots[0].fmr.ln() {
            return self.knots[0].score;
        }
        if ln <= self.tail.fmr.ln() {
            return self.tail.from + self.tail.excess_for(ln - self.tail.fmr.ln()) as f32;
        }
        let i = self.knots.partition_point(|k| k.fmr.ln() > ln); // knots[i-1] above, knots[i] at or below
        let (a, b) = (self.knots[i - 1], self.knots[i]);
        let t = (a.fmr.ln() - ln) / (a.fmr.ln() - b.fmr.ln());
        a.score + (t * f64::from(b.score - a.score)) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn exponential_scores_give_back_their_tail() {
        // Scores 0.1 + Exp(scale 0.02): FMR(s) = exp(−(s − 0.1)/0.02).
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut s: Vec<f32> =
            (0..400_000).map(|_| 0.1 - 0.02 * (1.0 - rng.random::<f64>()).ln()).map(|x| x as f32).collect();
        let m = Curve::fit(12, &mut s).unwrap();
        assert!((m.tail.scale - 0.02).abs() < 0.002, "{:?}", m.tail);
        assert!(m.tail.fitted_shape.abs() < 0.1, "{:?}", m.tail);
        for x in [0.12f32, 0.15, 0.2, 0.3, 0.4] {
            // Within the data the fit is tight; extrapolating ten scales out
            // (FMR 3e-7 from 400,000 scores) it may be off by a factor of 4.
            let truth = -(f64::from(x) - 0.1) / 0.02;
            let got = m.ln_fmr(x);
            let tol = if x <= 0.2 { 0.2 } else { 1.5 };
            assert!((got - truth).abs() < tol, "s {x}: ln fmr {got} vs {truth}");
            let back = m.score_for_fmr(m.fmr(x));
            assert!((back - x).abs() < 1e-3, "{x} -> {back}");
        }
        // A Pareto-like tail: scores 0.1 + Lomax(ξ = 0.25, σ = 0.02).
        let (xi, sigma) = (0.25f64, 0.02f64);
        let mut s: Vec<f32> = (0..400_000)
            .map(|_| 0.1 + sigma / xi * ((1.0 - rng.random::<f64>()).powf(-xi) - 1.0))
            .map(|x| x as f32)
            .collect();
        let m = Curve::fit(12, &mut s).unwrap();
        assert!((m.tail.shape - xi).abs() < 0.1, "{:?}", m.tail);
        let x = 0.5f64;
        let truth = -(1.0 / xi) * (xi * (x - 0.1) / sigma).ln_1p();
        assert!((m.ln_fmr(x as f32) - truth).abs() < 1.5, "{} vs {truth}", m.ln_fmr(x as f32));
        assert_eq!(m.ln_fmr(-1.0), m.knots[0].fmr.ln());
    }
}
