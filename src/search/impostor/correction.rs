//! The real-data correction: how much more often real impostors reach a
//! promised FMR than the synthetic curves say ([`RealCorrection`]), and
//! its measurement on real impostor comparisons.

use super::CORRECTION_MIN_EVENTS;
use serde::{Deserialize, Serialize};

/// How much more often real impostors reach a promised FMR than the
/// synthetic curves say: every FMR of the model is multiplied by `factor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealCorrection {
    /// The multiplier (≥ 1).
    pub factor: f64,
    /// The real data it was measured on.
    pub data: String,
    /// Real impostor comparisons measured (n_P > 0).
    pub comparisons: u64,
    /// How the factor was chosen from the levels.
    pub rule: String,
    /// The levels measured: promised FMR α, real comparisons with a
    /// synthetic-curve FMR ≤ α, and their share over α.
    pub levels: Vec<CorrectionLevel>,
}

/// One level of the measurement behind a [`RealCorrection`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CorrectionLevel {
    /// The promised FMR.
    pub alpha: f64,
    /// Real comparisons the synthetic curves gave an FMR ≤ α.
    pub count: u64,
    /// `count / (comparisons · α)`.
    pub ratio: f64,
}

impl RealCorrection {
    /// The correction from real impostor comparisons' synthetic-curve
    /// ln FMR values (`ln_p`, n_P > 0 only): the largest observed/promised
    /// ratio over `alphas` among the levels with at least
    /// [`CORRECTION_MIN_EVENTS`] comparisons, never below 1. `None` when
    /// no level has that many.
    pub fn measure(ln_p: &[f64], alphas: &[f64], data: String) -> Option<RealCorrection> {
        let n = ln_p.len() as u64;
        let levels: Vec<CorrectionLevel> = alphas
            .iter()
            .map(|&alpha| {
                let count = ln_p.iter().filter(|&&x| x <= alpha.ln()).count() as u64;
                CorrectionLevel { alpha, count, ratio: count as f64 / (n as f64 * alpha) }
            })
            .collect();
        let factor = levels
            .iter()
            .filter(|l| l.count >= CORRECTION_MIN_EVENTS as u64)
            .map(|l| l.ratio)
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))))?
            .max(1.0);
        let rule = format!(
            "largest observed/promised ratio over the levels {alphas:?} with at least {CORRECTION_MIN_EVENTS} real comparisons, at least 1"
        );
        Some(RealCorrection { factor, data, comparisons: n, rule, levels })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::impostor::ImpostorModel;
    use rand::{Rng, SeedableRng};

    #[test]
    fn the_real_correction_is_measured_applied_and_checked() {
        // 100,000 "real" comparisons whose synthetic-curve p is uniform on
        // (0, 1) but three times too small below 0.05: the ratio is 3 there.
        let n = 100_000u32;
        let ln_p: Vec<f64> = (0..n)
            .map(|i| (f64::from(i) + 0.5) / f64::from(n))
            .map(|u| if u < 0.15 { u / 3.0 } else { u })
            .map(f64::ln)
            .collect();
        let c = RealCorrection::measure(&ln_p, &[1e-2, 1e-3, 1e-6], "test".into()).unwrap();
        assert!((c.factor - 3.0).abs() < 0.05, "{c:?}");
        assert_eq!(c.levels.len(), 3);
        assert_eq!(c.levels[2].count, 0, "1e-6 is out of reach of 100,000 comparisons");
        // Too few events at every level: no correction can be measured.
        let few: Vec<f64> = ln_p.iter().copied().step_by(200).collect();
        assert_eq!(few.len(), 500);
        assert!(RealCorrection::measure(&few, &[1e-3], "test".into()).is_none());
        assert!(RealCorrection::measure(&few, &[1e-1], "test".into()).is_some(), "50 events at 1e-1");
        // A model that fits better than promised is never corrected downwards.
        let fine: Vec<f64> = (0..n).map(|i| ((f64::from(i) + 0.5) / f64::from(n)).ln()).collect();
        assert_eq!(RealCorrection::measure(&fine, &[0.5], "test".into()).unwrap().factor, 1.0);

        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let v: Vec<(u32, f32)> = (0..200_000).map(|_| (12, (0.05 * rng.random::<f64>()) as f32)).collect();
        let mut m = ImpostorModel::fit(&v, 7, "test".into()).unwrap();
        let before = m.ln_fmr(12, 0.049);
        m.real_correction = Some(c);
        assert!((m.ln_fmr(12, 0.049) - before - 3f64.ln()).abs() < 1e-9);
        assert_eq!(m.ln_fmr(12, 0.0), 0.0, "never above FMR 1");
        assert_eq!(m.ln_fmr_synthetic(12, 0.049), before);
        let back = ImpostorModel::from_json(&m.to_json()).unwrap();
        assert_eq!(back, m);
        // A factor below 1 (a model made more optimistic) or not a number is refused;
        // so is a correction in a format-2 file, which predates it.
        let edited = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut v: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
            edit(&mut v);
            ImpostorModel::from_json(&v.to_string())
        };
        assert!(edited(&|_| ()).is_ok(), "the unedited file reads");
        for bad in [0.5, 1e9] {
            assert!(edited(&|v| v["real_correction"]["factor"] = bad.into()).is_err(), "factor {bad}");
        }
        assert!(edited(&|v| v["real_correction"]["factor"] = "x".into()).is_err());
        assert!(edited(&|v| v["format"] = 2.into()).is_err());
        // A format-2 file without a correction reads as the synthetic curves.
        m.real_correction = None;
        let v2 = m.to_json().replace("\"format\": 3", "\"format\": 2");
        assert_eq!(ImpostorModel::from_json(&v2).unwrap().ln_fmr(12, 0.049), before);
    }
}
