//! The impostor model: how often a comparison of two *different* fingers
//! scores at least `s`, the false match rate FMR(s), down to the rates a
//! national gallery needs (a single-finger search of 100,000 entries at an
//! FPIR of 1% asks for FMR ≈ 1e-7).
//!
//! The model is fitted once, offline, on tens of millions of impostor
//! comparisons of synthetic fingers (whose score distributions are
//! calibrated on FVC2002, see `benches/reports/synth-calibration`) by
//! `whorl calibrate-impostors`, and ships as `assets/impostor-mcc-v3.json`
//! (the verified score's, `--score verified`, as
//! `assets/impostor-verified-v1.json`, attached by [`ImpostorModel::builtin`]):
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
//! **Corrected on real impostors** (format 3, [`RealCorrection`]):
//! synthetic fingers agree by chance less often than real ones (real
//! fingers share pattern classes and ridge flow, the generator's do not),
//! so the synthetic curves promise too low an FMR. Checked against the
//! real impostor comparisons of the calibration part (FVC2002 DB1_B +
//! DB2_B), real impostors reached a promised FMR of 1e-2..1e-3 about twice
//! as often as promised, a ratio that was flat over that range. The model
//! multiplies every FMR by the largest such ratio the calibration part
//! supports with at least [`CORRECTION_MIN_EVENTS`] real events: the
//! synthetic data keep the shape of the tail, the real data set its level.
//! The held-out part (DB3_B + DB4_B) only checks it
//! (`benches/reports/impostor-model/`).
//!
//! The model is tied to the cylinder parameters it was fitted with
//! ([`crate::shard::mcc_params_crc`]): a matcher with others refuses it.

use serde::{Deserialize, Serialize};

/// Fewest comparisons above the last knot: the tail fit's scale then has a
/// relative standard error of about 1/√TAIL_MIN.
pub const TAIL_MIN: usize = 2000;

/// Knots per decade of FMR.
const KNOTS_PER_DECADE: f64 = 20.0;

/// Format version of the model file: 3 adds the real-data correction;
/// format 2 files (no correction) are still read.
pub const FORMAT: u32 = 3;

/// Fewest real impostor comparisons at or below a level for its ratio to
/// count in the correction (10 events: the ratio's 95% interval spans
/// about a factor of 3.5).
pub const CORRECTION_MIN_EVENTS: usize = 10;

/// Fewest comparisons a stratum of its own needs; smaller strata are merged
/// into the next smaller n_P (whose chance scores are at least as high).
pub const STRATUM_MIN: usize = 50 * TAIL_MIN;

mod correction;
mod curve;

pub use correction::{CorrectionLevel, RealCorrection};
pub use curve::{Curve, Knot, Tail};

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
    /// The correction measured on real impostors (absent: the synthetic
    /// curves as they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_correction: Option<RealCorrection>,
    /// Which score the curves are of (absent in older files: the matcher's).
    #[serde(default)]
    pub score: ModelScore,
    /// The model of the verified score, which decisions on the top
    /// candidates use ([`crate::mcc::consensus`]); attached by
    /// [`ImpostorModel::builtin`], never stored in a file.
    #[serde(skip)]
    pub verified: Option<Box<ImpostorModel>>,
}

/// Which score a model's curves are of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelScore {
    /// The cylinder matcher's ([`crate::mcc::ScoreParts::score`]).
    #[default]
    Matcher,
    /// The verified score ([`crate::mcc::Verified::score`]).
    Verified,
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
pub const BUILTIN: &str = include_str!("../../../assets/impostor-mcc-v3.json");
/// The built-in model's name, as replies and events report it.
pub const BUILTIN_NAME: &str = "impostor-mcc-v3+verified-v1";
/// The built-in model of the verified score (`whorl calibrate-impostors
/// --score verified`).
pub const BUILTIN_VERIFIED: &str = include_str!("../../../assets/impostor-verified-v1.json");

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
        Ok(ImpostorModel {
            format: FORMAT,
            mcc_params_crc,
            source,
            comparisons: comparisons.len() as u64,
            strata,
            real_correction: None,
            score: ModelScore::Matcher,
            verified: None,
        })
    }

    /// Reads a model file's bytes.
    pub fn from_json(text: &str) -> Result<ImpostorModel, ModelError> {
        let m: ImpostorModel = serde_json::from_str(text).map_err(|e| ModelError::Unreadable(e.to_string()))?;
        if !(2..=FORMAT).contains(&m.format) {
            return Err(ModelError::Unreadable(format!("format {} (this build reads 2 to {FORMAT})", m.format)));
        }
        match &m.real_correction {
            Some(_) if m.format < 3 => {
                return Err(ModelError::Unreadable(format!(
                    "format {} has no real-data correction (it came with format 3)",
                    m.format
                )));
            }
            Some(c) if !(c.factor.is_finite() && (1.0..=1000.0).contains(&c.factor)) => {
                return Err(ModelError::Unreadable(format!(
                    "real-data correction factor {} must be in [1, 1000]",
                    c.factor
                )));
            }
            _ => {}
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
    /// parameters `mcc_params_crc`, with the verified score's model attached.
    pub fn builtin(mcc_params_crc: u32) -> Result<ImpostorModel, ModelError> {
        let mut m = ImpostorModel::checked(BUILTIN, ModelScore::Matcher, mcc_params_crc)?;
        m.verified = Some(Box::new(ImpostorModel::checked(BUILTIN_VERIFIED, ModelScore::Verified, mcc_params_crc)?));
        Ok(m)
    }

    fn checked(text: &str, score: ModelScore, mcc_params_crc: u32) -> Result<ImpostorModel, ModelError> {
        let m = ImpostorModel::from_json(text)?;
        if m.mcc_params_crc != mcc_params_crc {
            return Err(ModelError::Mismatch { found: m.mcc_params_crc, expected: mcc_params_crc });
        }
        if m.score != score {
            return Err(ModelError::Unreadable(format!(
                "a model of the {:?} score where the {score:?} one belongs",
                m.score
            )));
        }
        Ok(m)
    }

    /// The verified score's model, when attached.
    pub fn verified(&self) -> Option<&ImpostorModel> {
        self.verified.as_deref()
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

    /// ln FMR of a comparison that scored `s` on `n_p` cylinder pairs,
    /// with the real-data correction (never above 0).
    pub fn ln_fmr(&self, n_p: u32, s: f32) -> f64 {
        let ln = self.ln_fmr_synthetic(n_p, s);
        match &self.real_correction {
            Some(c) => (ln + c.factor.ln()).min(0.0),
            None => ln,
        }
    }

    /// ln FMR as the synthetic curves alone give it (what the correction
    /// is measured against).
    pub fn ln_fmr_synthetic(&self, n_p: u32, s: f32) -> f64 {
        if n_p == 0 {
            return 0.0; // an empty template: no evidence at all
        }
        self.curve(n_p).ln_fmr(s)
    }

    /// The same model without its real-data correction: the synthetic
    /// curves alone (the verified score's model too).
    pub fn synthetic_curves(&self) -> ImpostorModel {
        let verified = self.verified.as_ref().map(|v| Box::new(v.synthetic_curves()));
        ImpostorModel { real_correction: None, verified, ..self.clone() }
    }

    /// The correction's multiplier (1 without one).
    pub fn correction_factor(&self) -> f64 {
        self.real_correction.as_ref().map_or(1.0, |c| c.factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

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
        // The verified score's model rides along, and neither file passes for the other.
        let v = m.verified().expect("the verified score's model is attached");
        assert_eq!((m.score, v.score), (ModelScore::Matcher, ModelScore::Verified));
        assert!(v.comparisons >= 10_000_000 && v.real_correction.is_some() && v.verified().is_none());
        assert!(ImpostorModel::checked(BUILTIN_VERIFIED, ModelScore::Matcher, crc).is_err());
        assert!(ImpostorModel::checked(BUILTIN, ModelScore::Verified, crc).is_err());
        // A verified score is smaller than the matcher's for the same pair, and worth more.
        assert!(v.ln_fmr(12, 0.03) < m.ln_fmr(12, 0.03));
        // Corrected on real impostors: they pass more often than synthetic ones.
        let c = m.real_correction.as_ref().expect("the built-in model carries its real-data correction");
        assert!(c.factor > 1.0 && c.factor < 10.0 && c.comparisons >= 5000, "{c:?}");
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
