//! Cylinder construction (Cappelli et al. 2010, sections 3.1-3.2 and 3.4).
//!
//! For a minutia m = (x_m, y_m, θ_m) the cylinder has N_S × N_S × N_D
//! cells; cell (i, j, k) is centred at
//! `p_ij = [x_m, y_m] + Δ_S · [[cos θ_m, sin θ_m], [−sin θ_m, cos θ_m]] · [i − (N_S+1)/2, j − (N_S+1)/2]`
//! (eq. 2, image y axis down, θ counter-clockwise on the image) with
//! `Δ_S = 2R/N_S`, at height `dφ_k = −π + (k − ½)Δ_D`, `Δ_D = 2π/N_D` (eq. 1).
//! A cell is valid when `p_ij` lies within R of m and inside the minutiae's
//! convex hull enlarged by Ω (ξ_m). Its value sums, over the other minutiae
//! m_t within 3σ_S of `p_ij`, the spatial contribution
//! `G_S(d) = exp(−d²/2σ_S²) / (σ_S√2π)` (eq. 7) times the directional one
//! `G_D(α) = ½[erf((α + Δ_D/2)/(√2σ_D)) − erf((α − Δ_D/2)/(√2σ_D))]`
//! with `α = dΦ(dφ_k, dΦ(θ_m, θ_t))` (eqs. 9-11); the bit-based version
//! sets the bit when the sum reaches μ_Ψ (section 3.4). A cylinder is kept
//! when at least min_VC of its 208 cells are valid and at least min_M other
//! minutiae lie within R + 3σ_S, and (beyond the paper) at least one of its
//! bits is set: an empty cylinder matches nothing and only dilutes LSS-R.

use super::hull::EnlargedHull;
use super::params::{CELLS, LAYER_WORDS, MccParams, ND, NS};
use super::prepared::{CYL_WORDS, MAX_CYLINDERS, Prepared};
use crate::template::Template;
use std::f64::consts::{PI, TAU};
use std::sync::OnceLock;

/// Offsets `(i − (N_S+1)/2, j − (N_S+1)/2)` of the 208 cells within R, in
/// units of Δ_S, raster order (i fastest along the minutia's direction).
fn cell_offsets() -> &'static [(f64, f64); CELLS] {
    static OFFSETS: OnceLock<[(f64, f64); CELLS]> = OnceLock::new();
    OFFSETS.get_or_init(|| {
        let mut out = [(0.0, 0.0); CELLS];
        let mut n = 0;
        let half = (NS as f64 + 1.0) / 2.0;
        for j in 1..=NS {
            for i in 1..=NS {
                let (u, v) = (i as f64 - half, j as f64 - half);
                if (u * u + v * v).sqrt() <= NS as f64 / 2.0 {
                    out[n] = (u, v);
                    n += 1;
                }
            }
        }
        assert_eq!(n, CELLS, "cells within R");
        out
    })
}

/// `dΦ`: the difference of two angles wrapped into `[−π, π)` (eq. 9).
fn dphi(a: f64, b: f64) -> f64 {
    let d = (a - b).rem_euclid(TAU);
    if d >= PI { d - TAU } else { d }
}

/// Quantises an angle in radians to units of 2π/65536.
pub(super) fn quantise_angle(a: f64) -> u16 {
    ((a.rem_euclid(TAU) / TAU * 65536.0).round() as u32 & 0xffff) as u16
}

/// One minutia in 500-dpi pixels.
#[derive(Debug, Clone, Copy)]
struct Point {
    x: f64,
    y: f64,
    theta: f64,
}

/// Builds the valid cylinders of a template: see the module doc.
pub fn prepare(t: &Template, p: &MccParams) -> Prepared {
    match prepare_checked(t, p, &mut || Ok::<(), std::convert::Infallible>(())) {
        Ok(x) => x,
        Err(never) => match never {},
    }
}

/// [`prepare`], calling `check` before each minutia's cylinder (the work is
/// quadratic in the minutiae) and giving up with its error.
pub fn prepare_checked<E>(
    t: &Template,
    p: &MccParams,
    check: &mut impl FnMut() -> Result<(), E>,
) -> Result<Prepared, E> {
    let scale = f64::from(t.scale_to_500dpi());
    let pts: Vec<Point> = t
        .minutiae
        .iter()
        .map(|m| Point { x: f64::from(m.x) * scale, y: f64::from(m.y) * scale, theta: f64::from(m.angle) })
        .collect();
    let hull = EnlargedHull::new(&pts.iter().map(|q| (q.x, q.y)).collect::<Vec<_>>(), f64::from(p.omega));
    let mut kept: Vec<(usize, [u64; CYL_WORDS])> = Vec::new();
    for i in 0..pts.len() {
        check()?;
        if let Some(c) = cylinder(&pts, i, &hull, p) {
            kept.push((i, c));
        }
    }
    if kept.len() > MAX_CYLINDERS {
        // Keep those nearest the centroid of the minutiae: the core region.
        let (cx, cy) = pts.iter().fold((0.0, 0.0), |a, q| (a.0 + q.x, a.1 + q.y));
        let (cx, cy) = (cx / pts.len() as f64, cy / pts.len() as f64);
        let d2 = |i: usize| (pts[i].x - cx).powi(2) + (pts[i].y - cy).powi(2);
        kept.sort_by(|a, b| d2(a.0).total_cmp(&d2(b.0)).then(a.0.cmp(&b.0)));
        kept.truncate(MAX_CYLINDERS);
        kept.sort_by_key(|k| k.0);
    }
    // Sort by direction (then by minutia order) so that matching can walk
    // the δ_θ window instead of testing every pair.
    kept.sort_by_key(|&(i, _)| (quantise_angle(pts[i].theta), i));
    let angles: Vec<u16> = kept.iter().map(|&(i, _)| quantise_angle(pts[i].theta)).collect();
    let mut geometry = Vec::with_capacity(kept.len() * kept.len());
    for &(i, _) in &kept {
        for &(j, _) in &kept {
            if i == j {
                geometry.push(0);
                continue;
            }
            let (dx, dy) = (pts[j].x - pts[i].x, pts[j].y - pts[i].y);
            let dist = ((dx * dx + dy * dy).sqrt() * f64::from(super::lut::DIST_SCALE)).round().min(65_535.0) as u32;
            // Direction of the vector i→j in the crate convention (y down, counter-clockwise).
            let phi = quantise_angle((-dy).atan2(dx));
            geometry.push(dist | (u32::from(phi) << 16));
        }
    }
    let cyls: Vec<[u64; CYL_WORDS]> = kept.into_iter().map(|(_, c)| c).collect();
    Ok(Prepared::assemble(&cyls, &angles, &geometry))
}

/// G_D for each of the N_D layers, for a neighbour whose direction differs
/// from the cylinder's minutia by `dtheta = dΦ(θ_m, θ_t)`.
fn directional(dtheta: f64, sigma_d: f64) -> [f64; ND] {
    let dd = TAU / ND as f64;
    let s = std::f64::consts::SQRT_2 * sigma_d;
    std::array::from_fn(|k| {
        let phi_k = -PI + (k as f64 + 0.5) * dd;
        let alpha = dphi(phi_k, dtheta);
        0.5 * (libm::erf((alpha + dd / 2.0) / s) - libm::erf((alpha - dd / 2.0) / s))
    })
}

/// The cylinder of minutia `m`, or `None` when it is not valid.
fn cylinder(pts: &[Point], m: usize, hull: &EnlargedHull, p: &MccParams) -> Option<[u64; CYL_WORDS]> {
    let c = pts[m];
    let (r, sigma_s) = (f64::from(p.radius), f64::from(p.sigma_s));
    let reach = r + 3.0 * sigma_s;
    let neighbours: Vec<(Point, [f64; ND])> = pts
        .iter()
        .enumerate()
        .filter(|&(t, q)| t != m && (q.x - c.x).powi(2) + (q.y - c.y).powi(2) <= reach * reach)
        .map(|(_, q)| (*q, directional(dphi(c.theta, q.theta), f64::from(p.sigma_d))))
        .collect();
    if neighbours.len() < p.min_m {
        return None;
    }
    let delta_s = 2.0 * r / NS as f64;
    let (sin, cos) = c.theta.sin_cos();
    let centre = |(u, v): (f64, f64)| {
        let (u, v) = (u * delta_s, v * delta_s);
        (c.x + cos * u + sin * v, c.y - sin * u + cos * v)
    };
    let mut out = [0u64; CYL_WORDS];
    let mut valid = 0usize;
    let cut2 = (3.0 * sigma_s).powi(2);
    let norm = 1.0 / (sigma_s * (2.0 * PI).sqrt());
    let mu_psi = f64::from(p.mu_psi);
    for (cell, &off) in cell_offsets().iter().enumerate() {
        let q = centre(off);
        if !hull.contains(q) {
            continue;
        }
        valid += 1;
        let (word, bit) = (cell / 64, 1u64 << (cell % 64));
        out[word] |= bit;
        let mut sum = [0.0f64; ND];
        for (n, gd) in &neighbours {
            let d2 = (n.x - q.0).powi(2) + (n.y - q.1).powi(2);
            if d2 <= cut2 {
                let gs = norm * (-d2 / (2.0 * sigma_s * sigma_s)).exp();
                for k in 0..ND {
                    sum[k] += gs * gd[k];
                }
            }
        }
        for (k, s) in sum.iter().enumerate() {
            if *s >= mu_psi {
                out[LAYER_WORDS * (k + 1) + word] |= bit;
            }
        }
    }
    // Beyond the paper: a cylinder with no bit set carries no information
    // (γ with anything is 0) and is dropped like an invalid one.
    let any_bit = out[LAYER_WORDS..].iter().any(|&w| w != 0);
    (valid as f64 >= f64::from(p.min_vc) * CELLS as f64 && any_bit).then_some(out)
}
