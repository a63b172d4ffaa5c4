//! Local Similarity Sort with Relaxation (Cappelli et al. 2010, section
//! 4.3), in integer arithmetic.
//!
//! 1. The n_R = min(n_A, n_B) pairs of largest γ are taken, ordered by γ
//!    descending then pair index ascending. Pairs with γ = 0 (not
//!    matchable) are never taken, so n_R can be smaller.
//! 2. Their similarities λ⁰ (Q16) are relaxed n_rel times with w_R = ½:
//!    `λ_t ← (λ_t + ⌊Σ_{k≠t} ⌊ρ(t,k)·λ_k / 2^15⌋ / (n_R − 1)⌋) / 2`, where
//!    `ρ(t,k) = Z1(d1)·Z2(d2)·Z3(d3)` (Q15 tables) with d1 the difference of
//!    the distances between the two pairs' minutiae in A and in B (scaled
//!    down by their mean distance when `rho_stretch` > 0: see [`Luts::z1_of`]), d2 the
//!    difference of their direction differences, and d3 the difference of
//!    their radial angles `dΦ(θ_t, φ(t→k))`.
//! 3. Efficiency `ε_t = ⌊λ_t·2^15 / λ⁰_t⌋`; the n_P pairs of highest ε (ties
//!    by rank) are kept and `score = Σ λ_t / (n_P · 2^16)`.

use super::lut::{Luts, Q16, angle_diff};
use super::prepared::PreparedRef;

/// Buffers of LSS-R.
#[derive(Debug, Default, Clone)]
pub struct LssrScratch {
    pairs: Vec<(u16, u16)>,
    lambda: Vec<u32>,
    lambda0: Vec<u32>,
    next: Vec<u32>,
    /// Non-zero ρ(t,k), row by row: `(k, ρ)`, rows delimited by `row_end`.
    rho: Vec<(u16, u32)>,
    row_end: Vec<u32>,
    eff: Vec<u64>,
}

/// Runs LSS-R over the candidate keys (`γ << 32 | !(i·n_B + j)`), which it
/// may reorder; returns (Σ of the kept relaxed similarities, n_R).
pub fn lssr(l: &Luts, a: PreparedRef, b: PreparedRef, keys: &mut [u64], n_p: u32, s: &mut LssrScratch) -> (u32, u32) {
    let nb = b.len();
    let n_r = a.len().min(nb).min(keys.len());
    if n_r == 0 {
        return (0, 0);
    }
    if keys.len() > n_r {
        keys.select_nth_unstable_by(n_r - 1, |x, y| y.cmp(x));
    }
    let keys = &mut keys[..n_r];
    keys.sort_unstable_by(|x, y| y.cmp(x));
    s.pairs.clear();
    s.lambda.clear();
    for &k in keys.iter() {
        let idx = !(k as u32) as usize;
        s.pairs.push(((idx / nb) as u16, (idx % nb) as u16));
        s.lambda.push((k >> 32) as u32);
    }
    s.lambda0.clone_from(&s.lambda);
    relax(l, a, b, s);
    s.eff.clear();
    for (t, (&lam, &lam0)) in s.lambda.iter().zip(&s.lambda0).enumerate() {
        let e = (lam << 15) / lam0; // λ⁰ > 0: only pairs with γ > 0 are taken
        s.eff.push((u64::from(e) << 32) | u64::from(!(t as u32)));
    }
    let take = (n_p as usize).min(n_r);
    if s.eff.len() > take {
        s.eff.select_nth_unstable_by(take - 1, |x, y| y.cmp(x));
    }
    let sum = s.eff[..take].iter().map(|&e| s.lambda[!(e as u32) as usize]).sum();
    (sum, n_r as u32)
}

/// ρ(t,k) in Q15 for the pairs (a_t, b_t) and (a_k, b_k).
#[inline]
pub fn rho(l: &Luts, a: PreparedRef, b: PreparedRef, (it, jt): (usize, usize), (ik, jk): (usize, usize)) -> u32 {
    let (ga, gb) = (a.geometry_matrix()[it * a.len() + ik], b.geometry_matrix()[jt * b.len() + jk]);
    let (aa, ab) = (a.angles(), b.angles());
    rho_from(l, ga, gb, (aa[it], ab[jt]), (aa[ik], ab[jk]))
}

/// ρ from the geometry words of the two pairs and their directions.
#[inline(always)]
fn rho_from(l: &Luts, ga: u32, gb: u32, (ta, tb): (u16, u16), (ka, kb): (u16, u16)) -> u32 {
    let z1 = l.z1_of(ga & 0xffff, gb & 0xffff);
    if z1 == 0 {
        return 0;
    }
    let d2 = angle_diff(ta.wrapping_sub(ka), tb.wrapping_sub(kb));
    let d3 = angle_diff(ta.wrapping_sub((ga >> 16) as u16), tb.wrapping_sub((gb >> 16) as u16));
    (((z1 * l.z2[(d2 >> 3) as usize]) >> 15) * l.z3[(d3 >> 3) as usize]) >> 15
}

/// Relaxes `s.lambda` in place (Jacobi iterations over `s.pairs`); ρ is
/// kept sparse, since most pairs of pairs are geometrically incompatible.
fn relax(l: &Luts, a: PreparedRef, b: PreparedRef, s: &mut LssrScratch) {
    let n = s.pairs.len();
    if n < 2 {
        return;
    }
    let (ga, gb, aa, ab) = (a.geometry_matrix(), b.geometry_matrix(), a.angles(), b.angles());
    let (na, nb) = (a.len(), b.len());
    s.rho.clear();
    s.row_end.clear();
    for (t, &(it, jt)) in s.pairs.iter().enumerate() {
        let (it, jt) = (usize::from(it), usize::from(jt));
        let (row_a, row_b) = (&ga[it * na..(it + 1) * na], &gb[jt * nb..(jt + 1) * nb]);
        let dirs = (aa[it], ab[jt]);
        for (k, &(ik, jk)) in s.pairs.iter().enumerate() {
            if k == t {
                continue;
            }
            let (ik, jk) = (usize::from(ik), usize::from(jk));
            let r = rho_from(l, row_a[ik], row_b[jk], dirs, (aa[ik], ab[jk]));
            if r > 0 {
                s.rho.push((k as u16, r));
            }
        }
        s.row_end.push(s.rho.len() as u32);
    }
    let div = (n - 1) as u32;
    s.next.resize(n, 0);
    for _ in 0..l.n_rel {
        let mut start = 0usize;
        for (t, next) in s.next.iter_mut().enumerate() {
            let end = s.row_end[t] as usize;
            let support: u32 = s.rho[start..end].iter().map(|&(k, r)| (r * s.lambda[usize::from(k)]) >> 15).sum();
            *next = (s.lambda[t] + support / div) >> 1;
            start = end;
        }
        std::mem::swap(&mut s.lambda, &mut s.next);
    }
    debug_assert!(s.lambda.iter().all(|&v| v <= Q16));
}
