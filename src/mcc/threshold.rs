//! Decision thresholds from error rates.
//!
//! A server is configured with "FMR 0.1%", not with a magic score: given the
//! scores of impostor comparisons, [`threshold_for_fmr`] returns the lowest
//! threshold whose false match rate (the share of impostor scores at or
//! above it) does not exceed the target.

use serde::{Deserialize, Serialize};

/// A decision threshold and how it was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoint {
    /// Scores at or above this are matches.
    pub threshold: f32,
    /// The target false match rate asked for.
    pub target_fmr: f64,
    /// The false match rate the threshold achieves on the impostor scores.
    pub achieved_fmr: f64,
    /// Number of impostor scores it was calibrated on.
    pub impostors: usize,
}

/// Why no threshold could be derived.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    /// No impostor scores.
    #[error("no impostor scores to calibrate on")]
    NoScores,
    /// The target is not a rate.
    #[error("target false match rate {0} is not in [0, 1]")]
    BadTarget(f64),
    /// A score is NaN.
    #[error("impostor scores contain NaN")]
    NaN,
}

/// The lowest threshold `t` with `#{s ≥ t} / N ≤ target` over the impostor
/// scores `impostors`. With a target below `1/N` this is just above the
/// highest impostor score (an FMR of 0 on the calibration set).
pub fn threshold_for_fmr(impostors: &[f32], target: f64) -> Result<OperatingPoint, ThresholdError> {
    if !(0.0..=1.0).contains(&target) {
        return Err(ThresholdError::BadTarget(target));
    }
    if impostors.is_empty() {
        return Err(ThresholdError::NoScores);
    }
    if impostors.iter().any(|s| s.is_nan()) {
        return Err(ThresholdError::NaN);
    }
    let mut s = impostors.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    let n = s.len();
    let allowed = (target * n as f64).floor() as usize;
    let threshold = if allowed >= n {
        f32::NEG_INFINITY
    } else {
        // Strictly above the (allowed+1)-th highest score, then walk down
        // over ties so that no more than `allowed` scores pass.
        next_up(s[allowed])
    };
    let passing = s.iter().filter(|&&x| x >= threshold).count();
    Ok(OperatingPoint { threshold, target_fmr: target, achieved_fmr: passing as f64 / n as f64, impostors: n })
}

/// The smallest f32 greater than `x`.
fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let b = x.to_bits();
    f32::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_respect_the_target() {
        let imp: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let op = threshold_for_fmr(&imp, 0.01).unwrap();
        assert!(op.achieved_fmr <= 0.01 && op.achieved_fmr > 0.008, "{op:?}");
        assert!(op.threshold > 0.989 && op.threshold <= 0.991);
        let zero = threshold_for_fmr(&imp, 0.0).unwrap();
        assert_eq!(zero.achieved_fmr, 0.0);
        assert!(zero.threshold > 0.999);
        let ties = vec![0.5f32; 100];
        assert_eq!(threshold_for_fmr(&ties, 0.1).unwrap().achieved_fmr, 0.0);
        assert!(threshold_for_fmr(&[], 0.1).is_err());
        assert!(threshold_for_fmr(&imp, 1.5).is_err());
        assert!(threshold_for_fmr(&[f32::NAN], 0.1).is_err());
    }
}
