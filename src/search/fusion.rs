//! Subject-level fusion and the decision threshold.
//!
//! Every per-finger score `s` is turned into the chance that an impostor
//! comparison scores as high, `p = FMR(s)`, from the [impostor
//! model](super::impostor). For an impostor, `p` is uniform on (0, 1), so
//! `−ln p` is exponential with mean 1; the `k` fingers of two different
//! people are independent, so their sum `x = Σ −ln pᵢ` follows Gamma(k, 1)
//! and the chance an impostor *subject* reaches `x` is
//!
//! ```text
//!   P(k, x) = e^(−x) · Σ_{j<k} x^j / j!          (Fisher's method)
//! ```
//!
//! That per-subject false match probability is the fused score, reported
//! as `−log10 P` ("decades"): it ranks subjects compared on any number of
//! fingers on one scale, and the more mated fingers agree the larger it
//! grows (ten prints beat one).
//!
//! When a subject has `m` templates a probe finger may be compared with
//! (several impressions, or unknown positions), the best of them is
//! corrected for the `m` tries: `p' = 1 − (1 − p)^m` (Šidák).
//!
//! **Decision.** A search against `N` enrolled subjects is a false
//! positive when any of the `N` impostor subjects passes, so a target
//! false positive identification rate `FPIR` needs the per-subject rate
//! `p* = 1 − (1 − FPIR)^(1/N)` (≈ FPIR/N), and the threshold is
//! `−log10 p*` decades. Each reply states `FPIR`, `N`, `p*` and the
//! threshold. The calibration (FPIR measured against its target on
//! non-mated searches) is in `benches/reports/serving/`.

use super::impostor::ImpostorModel;
use serde::Serialize;

const LN_10: f64 = std::f64::consts::LN_10;

/// ln P(k, x), the log upper tail of Gamma(k, 1) at `x` (k ≥ 1, x ≥ 0),
/// computed in log space so that strong matches (x in the hundreds) do not
/// underflow.
pub fn ln_gamma_tail(k: usize, x: f64) -> f64 {
    let x = x.max(0.0);
    if k <= 1 {
        return -x;
    }
    if x == 0.0 {
        return 0.0;
    }
    // ln Σ_{j<k} x^j/j! by log-sum-exp over the terms.
    let ln_x = x.ln();
    let mut terms = Vec::with_capacity(k);
    let mut ln_fact = 0.0;
    for j in 0..k {
        if j > 0 {
            ln_fact += (j as f64).ln();
        }
        terms.push(j as f64 * ln_x - ln_fact);
    }
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
    (-x + max + sum.ln()).min(0.0)
}

/// ln of `1 − (1 − p)^m` for `p = e^ln_p`: the chance that the best of `m`
/// impostor comparisons has a rate as low as `p`.
pub fn ln_sidak(ln_p: f64, m: usize) -> f64 {
    if m <= 1 {
        return ln_p;
    }
    let p = ln_p.exp();
    // 1 − (1 − p)^m = −expm1(m · ln1p(−p)); for tiny p this is m·p.
    let q = -(m as f64 * (-p).ln_1p()).exp_m1();
    if q > 0.0 { q.ln().min(0.0) } else { ln_p + (m as f64).ln() }
}

/// The evidence of one probe finger against one subject: the best of its
/// `tries` comparisons, as ln FMR.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FingerEvidence {
    /// ln FMR of the best comparison.
    pub ln_fmr: f64,
    /// Comparisons it was the best of.
    pub tries: usize,
}

/// ln of the per-subject false match probability of `fingers` (Fisher).
pub fn fuse(fingers: &[FingerEvidence]) -> f64 {
    if fingers.is_empty() {
        return 0.0;
    }
    let x: f64 = fingers.iter().map(|f| -ln_sidak(f.ln_fmr, f.tries)).sum();
    ln_gamma_tail(fingers.len(), x)
}

/// A fused ln probability as a score in decades (−log10 P; higher is better).
pub fn decades(ln_p: f64) -> f64 {
    -ln_p / LN_10
}

/// The operating point a reply was decided at.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OperatingPoint {
    /// Target false positive identification rate (NaN when a threshold was given).
    pub target_fpir: f64,
    /// Enrolled subjects searched.
    pub subjects: u64,
    /// Per-subject false match probability at the threshold.
    pub subject_fmr: f64,
    /// Threshold on the fused score (decades).
    pub threshold: f64,
}

impl OperatingPoint {
    /// The threshold for `fpir` over `subjects` enrolled subjects.
    pub fn for_fpir(fpir: f64, subjects: u64) -> OperatingPoint {
        let n = subjects.max(1) as f64;
        // p* = 1 − (1 − FPIR)^(1/N)
        let p = -((-fpir).ln_1p() / n).exp_m1();
        let p = p.clamp(f64::MIN_POSITIVE, 1.0);
        OperatingPoint { target_fpir: fpir, subjects, subject_fmr: p, threshold: decades(p.ln()) }
    }

    /// An explicit threshold in decades.
    pub fn for_threshold(threshold: f64, subjects: u64) -> OperatingPoint {
        let p = 10f64.powf(-threshold);
        let fpir = -((subjects.max(1) as f64) * (-p).ln_1p()).exp_m1();
        OperatingPoint { target_fpir: fpir, subjects, subject_fmr: p, threshold }
    }
}

/// The evidence of the best of `tries` comparisons, which scored `score`
/// on `n_p` cylinder pairs under `model`.
pub fn evidence(model: &ImpostorModel, n_p: u32, score: f32, tries: usize) -> FingerEvidence {
    FingerEvidence { ln_fmr: model.ln_fmr(n_p, score), tries: tries.max(1) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn gamma_tail_matches_closed_forms() {
        assert!((ln_gamma_tail(1, 3.0) + 3.0).abs() < 1e-12);
        // k = 2: e^-x (1 + x)
        let x = 5.0f64;
        assert!((ln_gamma_tail(2, x) - (-x + (1.0 + x).ln())).abs() < 1e-12);
        // Very large x stays finite.
        assert!(ln_gamma_tail(10, 2000.0).is_finite());
        assert_eq!(ln_gamma_tail(4, 0.0), 0.0);
    }

    #[test]
    fn fisher_fusion_is_calibrated_for_impostors() {
        // Uniform p-values: P(fused p ≤ α) must be α, for any k.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for k in [1usize, 2, 4, 10] {
            let n = 200_000;
            let alpha = 0.01f64;
            let hits = (0..n)
                .filter(|_| {
                    let f: Vec<FingerEvidence> =
                        (0..k).map(|_| FingerEvidence { ln_fmr: (1.0 - rng.random::<f64>()).ln(), tries: 1 }).collect();
                    fuse(&f) <= alpha.ln()
                })
                .count();
            let rate = hits as f64 / n as f64;
            assert!((rate - alpha).abs() < 0.0015, "k {k}: {rate}");
        }
    }

    #[test]
    fn sidak_corrects_for_tries() {
        // Best of m uniform p-values, corrected, is uniform again.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let m = 5;
        let n = 200_000;
        let hits = (0..n)
            .filter(|_| {
                let best = (0..m).map(|_| rng.random::<f64>()).fold(1.0, f64::min);
                ln_sidak(best.ln(), m) <= 0.05f64.ln()
            })
            .count();
        assert!((hits as f64 / n as f64 - 0.05).abs() < 0.003);
        assert!((ln_sidak(-50.0, 10) - (-50.0 + 10f64.ln())).abs() < 1e-9);
    }

    #[test]
    fn operating_points() {
        let op = OperatingPoint::for_fpir(0.01, 100_000);
        assert!((op.subject_fmr - 0.01 / 100_000.0).abs() / op.subject_fmr < 0.01);
        assert!((op.threshold - 7.0).abs() < 0.01);
        let back = OperatingPoint::for_threshold(op.threshold, 100_000);
        assert!((back.target_fpir - 0.01).abs() < 1e-6);
        // More fingers agreeing give more decades.
        let one = decades(fuse(&[FingerEvidence { ln_fmr: -10.0, tries: 1 }]));
        let two = decades(fuse(&[FingerEvidence { ln_fmr: -10.0, tries: 1 }; 2]));
        assert!(two > one);
    }
}
