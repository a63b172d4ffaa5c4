//! The impostor model: how often a comparison of two *different* fingers
//! scores at least `s`, the false match rate FMR(s), down to the rates a
//! national gallery needs (a single-finger search of 100,000 entries at an
//! FPIR of 1% asks for FMR ≈ 1e-7).
//!
//! The model is fitted once, offline, on tens of millions of impostor
//! comparisons of synthetic fingers (whose score distributions are
//! calibrated on FVC2002, see `benches/reports/synth-calibration`) by
//! `whorl calibrate-impostors`, and ships as `assets/impostor-mcc-v2.json`:
//!
//! * the body is the empirical survival function, kept as knots at FMR
//!   levels 10^(−k/20) and interpolated linearly in ln FMR;
//! * beyond the last knot (the score that only the [`TAIL_MIN`] highest
//!   comparisons reach) the tail is extrapolated by peaks over threshold:
//!   the excesses over that score are fitted with a generalised Pareto
//!   distribution (Pickands–Balkema–de Haan: the limiting law of excesses
//!   over a high threshold), by the method of moments (Hosking & Wallis,
//!   Technometrics 29, 1987). A negative shape (a bounded tail) is raised to
//!   0, the exponential tail, so the model never promises a rate lower than
//!   the data support.
//!
//! The model is tied to the cylinder parameters it was fitted with
//! ([`crate::shard::mcc_params_crc`]): a matcher with others refuses it.

use serde::{Deserialize, Serialize};

/// Fewest comparisons above the last knot: the tail fit's scale then has a
/// relative standard error of about 1/√TAIL_MIN.
pub const TAIL_MIN: usize = 2000;

/// Knots per decade of FMR.
const KNOTS_PER_DECADE: f64 = 20.0;

/// Format version of the model file.
pub const FORMAT: u32 = 2;

/// Fewest comparisons a stratum of its own needs; smaller strata are merged
/// into the next smaller n_P (whose chance scores are at least as high).
pub const STRATUM_MIN: usize = 50 * TAIL_MIN;

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

/// FMR as a function of the score, by n_P.
///
/// Small templates are compared on few cylinder pairs (n_P = 4 for the
/// smallest, 12 for full ones) and two strangers' few minutiae agree by
/// chance far more often: an impostor score of 0.15 is a one-in-ten-million
/// event for full templates and a one-in-a-thousand one for four-minutia
/// scraps. One curve per n_P keeps the evidence of a score honest whatever
/// the templates' size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpostorModel {
    /// File format.
    pub format: u32,
    /// CRC of the cylinder parameters it was fitted with.
    pub mcc_params_crc: u32,
    /// Where the scores came from (command, seed, fingers).
    pub source: String,
    /// Comparisons fitted.
    pub comparisons: u64,
    /// One curve per n_P value seen, ascending.
    pub strata: Vec<Curve>,
}

/// Errors of the model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// Too few scores for a tail fit.
    #[error("{0} impostor scores are too few: the tail fit needs at least {TAIL_MIN} above its start")]
    TooFew(usize),
    /// A score is not finite.
    #[error("impostor scores contain a NaN or infinite value")]
    NotFinite,
    /// The file cannot be read.
    #[error("impostor model: {0}")]
    Unreadable(String),
    /// The model was fitted for other cylinder parameters.
    #[error("impostor model was fitted with cylinder parameters {found:08x}, the matcher has {expected:08x}")]
    Mismatch {
        /// In the file.
        found: u32,
        /// Of the matcher.
        expected: u32,
    },
}

/// The model that ships with whorl.
pub const BUILTIN: &str = include_str!("../../assets/impostor-mcc-v2.json");
/// The built-in model's name, as replies and events report it.
pub const BUILTIN_NAME: &str = "impostor-mcc-v2";

impl ImpostorModel {
    /// Fits the model on impostor comparisons `(n_P, score)`.
    pub fn fit(comparisons: &[(u32, f32)], mcc_params_crc: u32, source: String) -> Result<ImpostorModel, ModelError> {
        if comparisons.iter().any(|c| !c.1.is_finite()) {
            return Err(ModelError::NotFinite);
        }
        let mut by_np: std::collections::BTreeMap<u32, Vec<f32>> = std::collections::BTreeMap::new();
        // n_P = 0 (a template without cylinders) always scores 0 and is
        // no evidence either way: left out of the fit.
        for &(np, s) in comparisons.iter().filter(|c| c.0 > 0) {
            by_np.entry(np).or_default().push(s);
        }
        // Merge strata too small to fit into the next smaller n_P present
        // (or the next larger one for the smallest).
        let mut groups: Vec<(u32, Vec<f32>)> = Vec::new();
        let mut pending: Option<(u32, Vec<f32>)> = None;
        for (np, v) in by_np {
            match groups.last_mut() {
                Some(last) if v.len() < STRATUM_MIN => last.1.extend(v),
                _ => {
                    let mut v = v;
                    if let Some((_, p)) = pending.take() {
                        v.extend(p);
                    }
                    if v.len() < STRATUM_MIN && groups.is_empty() {
                        pending = Some((np, v));
                    } else {
                        groups.push((np, v));
                    }
                }
            }
        }
        if let Some((np, v)) = pending {
            groups.push((np, v));
        }
        let mut strata = Vec::with_capacity(groups.len());
        for (np, mut v) in groups {
            strata.push(Curve::fit(np, &mut v)?);
        }
        if strata.is_empty() {
            return Err(ModelError::TooFew(0));
        }
        Ok(ImpostorModel { format: FORMAT, mcc_params_crc, source, comparisons: comparisons.len() as u64, strata })
    }

    /// Reads a model file's bytes.
    pub fn from_json(text: &str) -> Result<ImpostorModel, ModelError> {
        let m: ImpostorModel = serde_json::from_str(text).map_err(|e| ModelError::Unreadable(e.to_string()))?;
        if m.format != FORMAT {
            return Err(ModelError::Unreadable(format!("format {} (this build reads {FORMAT})", m.format)));
        }
        if m.strata.is_empty() || !m.strata.windows(2).all(|w| w[0].n_p < w[1].n_p) {
            return Err(ModelError::Unreadable("strata must be present and ascend in n_P".into()));
        }
        for c in &m.strata {
            c.check()?;
        }
        Ok(m)
    }

    /// The model that ships with whorl, checked against the cylinder
    /// parameters `mcc_params_crc`.
    pub fn builtin(mcc_params_crc: u32) -> Result<ImpostorModel, ModelError> {
        let m = ImpostorModel::from_json(BUILTIN)?;
        if m.mcc_params_crc != mcc_params_crc {
            return Err(ModelError::Mismatch { found: m.mcc_params_crc, expected: mcc_params_crc });
        }
        Ok(m)
    }

    /// The JSON text of the model.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The curve for comparisons of `n_p`: its own, or the nearest smaller
    /// one fitted (the more permissive), or the smallest.
    pub fn curve(&self, n_p: u32) -> &Curve {
        let i = self.strata.partition_point(|c| c.n_p <= n_p);
        &self.strata[i.saturating_sub(1)]
    }

    /// ln FMR of a comparison that scored `s` on `n_p` cylinder pairs.
    pub fn ln_fmr(&self, n_p: u32, s: f32) -> f64 {
        if n_p == 0 {
            return 0.0; // an empty template: no evidence at all
        }
        self.curve(n_p).ln_fmr(s)
    }
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

    fn check(&self) -> Result<(), ModelError> {
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

    #[test]
    fn strata_are_fitted_merged_and_looked_up() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        // n_P 4: wide chance scores; n_P 12: narrow; n_P 8: too few, merged into 4.
        let mut c: Vec<(u32, f32)> = Vec::new();
        for _ in 0..200_000 {
            c.push((4, (0.3 * rng.random::<f64>()) as f32));
            c.push((12, (0.05 * rng.random::<f64>()) as f32));
        }
        c.extend((0..1000).map(|_| (8u32, 0.01f32)));
        let m = ImpostorModel::fit(&c, 7, "test".into()).unwrap();
        assert_eq!(m.strata.iter().map(|c| c.n_p).collect::<Vec<_>>(), vec![4, 12]);
        assert_eq!(m.strata[0].comparisons, 201_000);
        assert!(m.ln_fmr(4, 0.1) > m.ln_fmr(12, 0.1) + 5.0);
        assert_eq!(m.curve(8).n_p, 4);
        assert_eq!(m.curve(3).n_p, 4);
        assert_eq!(m.curve(20).n_p, 12);
        assert_eq!(m.ln_fmr(0, 0.9), 0.0);
        let m2 = ImpostorModel::from_json(&m.to_json()).unwrap();
        assert_eq!(m, m2);
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert!(matches!(Curve::fit(4, &mut [0.1; 100]), Err(ModelError::TooFew(100))));
        let mut v = vec![0.1f32; 100_000];
        v[5] = f32::NAN;
        assert_eq!(Curve::fit(4, &mut v), Err(ModelError::NotFinite));
        assert!(ImpostorModel::from_json("{}").is_err());
        assert!(ImpostorModel::from_json("not json").is_err());
    }

    #[test]
    fn builtin_model_matches_the_default_matcher() {
        let crc = crate::shard::mcc_params_crc(&crate::mcc::MccParams::default());
        let m = ImpostorModel::builtin(crc).unwrap();
        assert!(m.comparisons >= 10_000_000);
        assert!(ImpostorModel::builtin(crc ^ 1).is_err());
        // Monotone: FMR falls as the score rises, in every stratum.
        for c in &m.strata {
            let mut last = f64::INFINITY;
            for i in 0..=1000 {
                let f = c.ln_fmr(i as f32 / 1000.0);
                assert!(f <= last + 1e-12);
                last = f;
            }
        }
    }
}
