//! Parameters of the Minutia Cylinder-Code, in the notation of Cappelli,
//! Ferrara, Maltoni, "Minutia Cylinder-Code: a new representation and
//! matching technique for fingerprint recognition", IEEE TPAMI 32(12),
//! 2010 (Table 1 and section 4). Distances are 500-dpi pixels; templates
//! of other resolutions are scaled to 500 dpi first.

use serde::{Deserialize, Serialize};
use std::f32::consts::PI;

/// N_S: cells along each side of the cylinder base.
pub const NS: usize = 16;
/// N_D: direction layers (cylinder height 2π).
pub const ND: usize = 6;
/// Base cells whose centre lies within R of the minutia: 208 of the 256
/// (the cells of the cylinder; the others are never valid).
pub const CELLS: usize = 208;
/// u64 words of one 256-bit layer (the 208 cells, padded).
pub const LAYER_WORDS: usize = 4;

/// Everything that defines the cylinders and the global score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MccParams {
    /// R: cylinder radius.
    pub radius: f32,
    /// σ_S: spatial Gaussian.
    pub sigma_s: f32,
    /// σ_D: directional Gaussian.
    pub sigma_d: f32,
    /// μ_Ψ: a cell's bit is set when its contribution reaches this value
    /// (the bit-based Ψ of section 3.4).
    pub mu_psi: f32,
    /// Ω: the convex hull of the minutiae is enlarged by this many pixels;
    /// cells outside it are invalid.
    pub omega: f32,
    /// min_VC: a cylinder needs this fraction of its 208 cells valid.
    pub min_vc: f32,
    /// min_M: a cylinder needs this many other minutiae within R + 3σ_S.
    pub min_m: usize,
    /// min_ME: two cylinders are matchable when this fraction of the cells
    /// are valid in both.
    pub min_me: f32,
    /// δ_θ: cylinders whose directions differ more are not matchable.
    pub delta_theta: f32,
    /// μ_P, τ_P, min_NP, max_NP: n_P = min_NP + round(Z(min(n_A, n_B); μ_P, τ_P)·(max_NP − min_NP)).
    pub mu_p: f32,
    /// τ_P.
    pub tau_p: f32,
    /// min_NP.
    pub min_np: usize,
    /// max_NP.
    pub max_np: usize,
    /// n_rel: relaxation iterations of LSS-R.
    pub n_rel: usize,
    /// (μ_i^ρ, τ_i^ρ), i = 1..3: the sigmoids of the pair compatibility ρ on
    /// distance, direction-difference and radial-angle consistency.
    pub rho: [(f32, f32); 3],
    /// Beyond the paper: distortion tolerance of ρ's distance term. The
    /// difference of two pairs' distances, d1 = |d_A − d_B|, is divided by
    /// `1 + rho_stretch · d̄ / R` (d̄ their mean distance) before Z1: skin
    /// stretches, so two minutiae far apart move apart by more than two
    /// close ones. 0 is the paper's absolute tolerance (and is left out of
    /// the serialised parameters, so that their CRC is unchanged).
    #[serde(skip_serializing_if = "is_zero")]
    pub rho_stretch: f32,
}

impl Default for MccParams {
    fn default() -> MccParams {
        MccParams {
            radius: 70.0,
            sigma_s: 28.0 / 3.0,
            sigma_d: 2.0 * PI / 9.0,
            mu_psi: 0.01,
            omega: 50.0,
            min_vc: 0.75,
            min_m: 2,
            min_me: 0.60,
            delta_theta: PI / 2.0,
            mu_p: 20.0,
            tau_p: 2.0 / 5.0,
            min_np: 4,
            max_np: 12,
            n_rel: 5,
            rho: [(5.0, -8.0 / 5.0), (PI / 12.0, -30.0), (PI / 12.0, -30.0)],
            rho_stretch: 1.0,
        }
    }
}

fn is_zero(v: &f32) -> bool {
    *v == 0.0
}

/// Z(v, μ, τ) = 1 / (1 + e^{−τ(v − μ)}), the paper's sigmoid (eq. 5).
pub fn sigmoid(v: f64, mu: f64, tau: f64) -> f64 {
    1.0 / (1.0 + (-tau * (v - mu)).exp())
}
