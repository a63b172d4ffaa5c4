//! Integer lookup tables that make the global score exactly reproducible.
//!
//! The match-time half of MCC (cylinder similarity and LSS-R) is computed
//! in integers only, so that the WGSL kernels compute bit-identical scores
//! (WGSL's `sqrt`, `exp`, `atan2` and division are not correctly rounded).
//! The real-valued functions of the paper are sampled into these tables:
//!
//! * `sqrt[n] = round(√n · 2^10)` for popcounts `n` (the norms of eq. 17);
//! * `z1[d] = round(Z(d/8; μ1, τ1) · 2^15)` for distance differences `d` in
//!   1/8 px (zero beyond [`Z1_LEN`]);
//! * `z2`, `z3[a] = round(Z(a·π/4096; μ, τ) · 2^15)` for angle differences in
//!   units of 2π/65536 shifted right by 3 (4097 entries cover `[0, π]`);
//! * `np[n]` = n_P for `min(n_A, n_B) = n`;
//! * `stretch[b] = round(2^15 / (1 + κ · d̄_b / R))` for the mean distance
//!   `d̄_b = (b + ½) · 4` px of two pairs whose distances sum to
//!   `d_A + d_B ∈ [64 b, 64 (b + 1))` in 1/8 px (κ = `rho_stretch`): the
//!   distance difference Z1 sees is `(|d_A − d_B| · stretch[b]) >> 15`.
//!
//! Keep in sync with `shaders/shared/mcc.wgsl`, which receives these
//! tables as a buffer.

use super::params::{MccParams, sigmoid};
use std::f64::consts::PI;

/// Entries of the square-root table (popcounts up to 6 × 256).
pub const SQRT_LEN: usize = 1537;
/// Entries of the distance-consistency table: 1/8 px up to 32 px.
pub const Z1_LEN: usize = 257;
/// Entries of each angle table: `|Δ| >> 3` for `|Δ| ≤ 32768`.
pub const ZA_LEN: usize = 4097;
/// Fixed-point one of the Q15 tables.
pub const Q15: u32 = 1 << 15;
/// Fixed-point one of similarities (Q16).
pub const Q16: u32 = 1 << 16;
/// Distances are stored in 1/8 px.
pub const DIST_SCALE: f32 = 8.0;
/// Entries of the stretch table: mean distances up to 1024 px in steps of 4 px.
pub const STRETCH_LEN: usize = 256;
/// `d_A + d_B` (1/8 px) is shifted right by this to index the stretch table.
pub const STRETCH_SHIFT: u32 = 6;

/// The tables, built once per parameter set.
#[derive(Debug, Clone, PartialEq)]
pub struct Luts {
    /// √n in Q10.
    pub sqrt: Vec<u32>,
    /// Z on distance differences, Q15.
    pub z1: Vec<u32>,
    /// Z on direction-difference consistency, Q15.
    pub z2: Vec<u32>,
    /// Z on radial-angle consistency, Q15.
    pub z3: Vec<u32>,
    /// n_P by min(n_A, n_B), for counts 0..=255.
    pub np: Vec<u32>,
    /// Distance-difference scale by mean distance, Q15 (at most 2^15).
    pub stretch: Vec<u32>,
    /// Smallest number of cells valid in both cylinders (min_ME · 208).
    pub min_me_cells: u32,
    /// δ_θ in angle units (2π/65536).
    pub delta_theta: u32,
    /// n_rel.
    pub n_rel: u32,
}

impl Luts {
    /// Samples the paper's functions for `p`.
    pub fn new(p: &MccParams) -> Luts {
        let q15 = |v: f64| (v * f64::from(Q15)).round() as u32;
        let [(m1, t1), (m2, t2), (m3, t3)] = p.rho.map(|(m, t)| (f64::from(m), f64::from(t)));
        let angle = |i: usize| i as f64 * PI / 4096.0;
        Luts {
            sqrt: (0..SQRT_LEN).map(|n| ((n as f64).sqrt() * 1024.0).round() as u32).collect(),
            z1: (0..Z1_LEN).map(|d| q15(sigmoid(d as f64 / f64::from(DIST_SCALE), m1, t1))).collect(),
            z2: (0..ZA_LEN).map(|i| q15(sigmoid(angle(i), m2, t2))).collect(),
            z3: (0..ZA_LEN).map(|i| q15(sigmoid(angle(i), m3, t3))).collect(),
            np: (0..256)
                .map(|n| {
                    let z = sigmoid(n as f64, f64::from(p.mu_p), f64::from(p.tau_p));
                    (p.min_np as f64 + (z * (p.max_np - p.min_np) as f64).round()) as u32
                })
                .collect(),
            stretch: (0..STRETCH_LEN)
                .map(|b| {
                    let mean = (b as f64 + 0.5) * 4.0;
                    let k = f64::from(p.rho_stretch.max(0.0)) * mean / f64::from(p.radius);
                    q15(1.0 / (1.0 + k))
                })
                .collect(),
            min_me_cells: (p.min_me * super::params::CELLS as f32).ceil() as u32,
            delta_theta: (f64::from(p.delta_theta) / (2.0 * PI) * 65536.0).round() as u32,
            n_rel: p.n_rel as u32,
        }
    }

    /// Z1 for a distance difference in 1/8 px.
    #[inline]
    pub fn z1(&self, d: u32) -> u32 {
        self.z1.get(d as usize).copied().unwrap_or(0)
    }

    /// Z1 for two pairs' distances `da`, `db` (1/8 px, at most 65535): the
    /// difference scaled by the stretch of their mean distance. The product
    /// fits a u32: 65535 · 2^15 < 2^32.
    #[inline]
    pub fn z1_of(&self, da: u32, db: u32) -> u32 {
        let b = ((da + db) >> STRETCH_SHIFT).min(STRETCH_LEN as u32 - 1);
        self.z1((da.abs_diff(db) * self.stretch[b as usize]) >> 15)
    }
}

/// Absolute angular difference `|dΦ(a, b)|` of two angles in units of
/// 2π/65536, in `[0, 32768]`.
#[inline]
pub fn angle_diff(a: u16, b: u16) -> u32 {
    u32::from((a.wrapping_sub(b) as i16).unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn np_follows_the_paper() {
        let l = Luts::new(&MccParams { rho_stretch: 0.0, ..MccParams::default() });
        for (n, want) in [(5, 4), (10, 4), (15, 5), (20, 8), (25, 11), (30, 12), (255, 12)] {
            assert_eq!(l.np[n], want, "n_P for min(n_A, n_B) = {n}");
        }
        assert_eq!(l.min_me_cells, 125);
        assert_eq!(l.delta_theta, 16384);
        assert_eq!(l.sqrt[1024], 32 * 1024);
        // The paper's absolute tolerance: no stretch at any distance.
        assert!(l.stretch.iter().all(|&s| s == Q15));
        assert_eq!(l.z1_of(800, 840), l.z1(40));
        // ρ for identical geometry: Z1(0)·Z2(0)·Z3(0) ≈ 0.99889.
        let r = (((l.z1(0) * l.z2[0]) >> 15) * l.z3[0]) >> 15;
        assert!((f64::from(r) / f64::from(Q15) - 0.99889).abs() < 1e-3, "{r}");
    }

    #[test]
    fn stretch_widens_the_tolerance_with_distance() {
        let l = Luts::new(&MccParams { rho_stretch: 1.0, ..MccParams::default() });
        // Mean distance 70 px (= R): the difference is halved.
        let (da, db) = (8 * 68, 8 * 72);
        let b = ((da + db) >> STRETCH_SHIFT) as usize;
        assert!((f64::from(l.stretch[b]) / f64::from(Q15) - 1.0 / (1.0 + 70.0 / 70.0)).abs() < 0.03);
        assert!(l.z1_of(da, db) > l.z1(db - da));
        assert!(l.stretch.windows(2).all(|w| w[0] >= w[1]));
        // The largest distances do not overflow.
        assert_eq!(l.z1_of(65535, 0), 0);
        assert_eq!(l.z1_of(65535, 65535), l.z1(0));
    }

    #[test]
    fn angle_differences_wrap() {
        assert_eq!(angle_diff(10, 65530), 16);
        assert_eq!(angle_diff(0, 32768), 32768);
        assert_eq!(angle_diff(100, 100), 0);
    }
}
