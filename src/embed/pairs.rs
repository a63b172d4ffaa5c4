//! Minutia-pair histogram: a fixed-length vector from the geometry of
//! minutia pairs, invariant to translation and rotation.
//!
//! Every ordered pair (i, j) of minutiae at most `d_max` apart contributes
//! to a three-dimensional histogram over
//! * `d`: the distance between them (500-dpi pixels),
//! * `α = dΦ(φ_ij, θ_i)`: the direction of the line from i to j seen from
//!   i's direction,
//! * `β = dΦ(θ_j, θ_i)`: j's direction seen from i's,
//!
//! with linear (soft) binning in each dimension (circular for α and β), so
//! that small displacements move weight between neighbouring bins instead of
//! jumping. Each quantity is measured in i's own frame, hence the
//! invariance; a missing or spurious minutia only changes its own pairs.
//! The histogram is square-rooted (power normalisation, which damps the
//! bins every fingerprint fills) and L2-normalised. In the spirit of the
//! minutia-pair and triplet histograms used for fingerprint indexing
//! (e.g. Germain, Califano, Colville, "Fingerprint matching using
//! transformation parameter clustering", 1997; Bhanu and Tan, "Fingerprint
//! indexing based on novel features of minutiae triplets", 2003).

use crate::template::Template;
use std::f32::consts::TAU;

/// The histogram's binning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairBins {
    /// Distance bins over `[0, d_max)` (500-dpi pixels).
    pub d_bins: usize,
    /// α bins over 2π.
    pub a_bins: usize,
    /// β bins over 2π.
    pub b_bins: usize,
    /// Largest pair distance counted.
    pub d_max: f32,
}

impl PairBins {
    /// Histogram length.
    pub fn dim(&self) -> usize {
        self.d_bins * self.a_bins * self.b_bins
    }
}

/// The default binning (8 × 8 × 8 over 160 px).
pub const DEFAULT_BINS: PairBins = PairBins { d_bins: 8, a_bins: 8, b_bins: 8, d_max: 160.0 };
/// Length of the default histogram.
pub const DIM: usize = 512;

/// Adds the pair histogram of `t` with the default bins to `out` (length [`DIM`]).
pub fn histogram(t: &Template, out: &mut [f32]) {
    histogram_with(t, DEFAULT_BINS, out)
}

/// Adds the pair histogram of `t` with `bins` to `out` (length `bins.dim()`, zeroed by the caller).
pub fn histogram_with(t: &Template, bins: PairBins, out: &mut [f32]) {
    let pts = points(t);
    for i in 0..pts.len() {
        add_minutia_pairs(&pts, i, bins, out);
    }
}

/// The minutiae of `t` as (x, y, direction) in 500-dpi pixels.
pub fn points(t: &Template) -> Vec<(f32, f32, f32)> {
    let s = t.scale_to_500dpi();
    t.minutiae.iter().map(|m| (m.x * s, m.y * s, m.angle)).collect()
}

/// Adds the ordered pairs (i, j) of minutia `i` of `pts` ([`points`]) to
/// `out` (length `bins.dim()`); returns how many pairs were within range.
pub fn add_minutia_pairs(pts: &[(f32, f32, f32)], i: usize, bins: PairBins, out: &mut [f32]) -> usize {
    let PairBins { d_bins, a_bins, b_bins, d_max } = bins;
    let dw = d_max / d_bins as f32;
    let aw = TAU / a_bins as f32;
    let bw = TAU / b_bins as f32;
    let (xi, yi, ti) = pts[i];
    let mut counted = 0;
    for (j, &(xj, yj, tj)) in pts.iter().enumerate() {
        if i == j {
            continue;
        }
        let (dx, dy) = (xj - xi, yj - yi);
        let d = (dx * dx + dy * dy).sqrt();
        if d >= d_max {
            continue;
        }
        counted += 1;
        let phi = (-dy).atan2(dx);
        let alpha = (phi - ti).rem_euclid(TAU);
        let beta = (tj - ti).rem_euclid(TAU);
        // Fractional bin coordinates (centres at k + 0.5).
        let fd = (d / dw - 0.5).max(0.0);
        let fa = alpha / aw - 0.5;
        let fb = beta / bw - 0.5;
        let (d0, wd) = (fd.floor() as usize, fd.fract());
        let (a0, wa) = (fa.floor(), fa - fa.floor());
        let (b0, wb) = (fb.floor(), fb - fb.floor());
        for (dd, wdd) in [(d0, 1.0 - wd), (d0 + 1, wd)] {
            if dd >= d_bins {
                continue;
            }
            for (da, wda) in [(a0, 1.0 - wa), (a0 + 1.0, wa)] {
                let ai = (da as i32).rem_euclid(a_bins as i32) as usize;
                for (db, wdb) in [(b0, 1.0 - wb), (b0 + 1.0, wb)] {
                    let bi = (db as i32).rem_euclid(b_bins as i32) as usize;
                    out[(dd * a_bins + ai) * b_bins + bi] += wdd * wda * wdb;
                }
            }
        }
    }
    counted
}
