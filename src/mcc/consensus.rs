//! A second, geometric pass after LSS-R, for distorted impressions: the
//! largest one-to-one set of cylinder pairs that agree with each other.
//!
//! LSS-R keeps the n_P pairs that gain most from relaxation; on a strongly
//! distorted impression the global geometry no longer holds, so genuine
//! pairs far apart disagree and the score falls. This pass only asks each
//! pair to agree with *most* of the pairs accepted before it:
//!
//! 1. the pool: the [`POOL`]·min(n_A, n_B) pairs of highest γ, in LSS-R's
//!    order (γ descending, then pair index ascending);
//! 2. from each of the first [`SEEDS`] pairs of the pool as a seed, the
//!    pool is swept [`SWEEPS`] times; a pair whose minutiae are both still
//!    free is accepted when it agrees (ρ > ½, LSS-R's ρ in Q15) with at
//!    least one accepted pair and with at least half of them;
//! 3. `accepted` is the largest set over the seeds.
//!
//! The verified score is `score · accepted / √(n_A·n_B)`
//! ([`Verified::score`]): at most the matcher's score, since pairs are
//! one-to-one. Everything is integer up to that last product, so it is the
//! same on every machine. Work is bounded: at most
//! `SEEDS · SWEEPS · POOL·255 · 255` evaluations of ρ for 255-minutia
//! templates, and about twice a plain comparison for typical ones
//! (`benches/reports/accuracy/held-out.md`, "A second, geometric pass").

use super::lssr::rho;
use super::lut::Luts;
use super::matcher::ScoreParts;
use super::prepared::PreparedRef;

/// Pool size, in multiples of min(n_A, n_B).
pub const POOL: usize = 3;
/// Seeds tried.
pub const SEEDS: usize = 3;
/// Sweeps over the pool per seed.
pub const SWEEPS: usize = 2;
/// ρ above which two pairs agree (½ in Q15).
pub const AGREE: u32 = 1 << 14;

/// Buffers of the pass.
#[derive(Debug, Default, Clone)]
pub struct ConsensusScratch {
    pairs: Vec<(u16, u16)>,
    accepted: Vec<(u16, u16)>,
    used_a: Vec<bool>,
    used_b: Vec<bool>,
}

/// What the second pass found for one comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Consensus {
    /// Pairs accepted by the pass.
    pub accepted: u32,
    /// Cylinders of the first template.
    pub n_a: u32,
    /// Cylinders of the second template.
    pub n_b: u32,
}

impl Consensus {
    /// `accepted / √(n_A·n_B)`, in [0, 1].
    pub fn share(&self) -> f64 {
        if self.n_a == 0 || self.n_b == 0 {
            return 0.0;
        }
        f64::from(self.accepted) / (f64::from(self.n_a) * f64::from(self.n_b)).sqrt()
    }
}

/// A comparison verified by the second pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verified {
    /// The matcher's integers.
    pub parts: ScoreParts,
    /// The second pass's.
    pub consensus: Consensus,
}

impl Verified {
    /// `score · accepted / √(n_A·n_B)`, in [0, 1].
    pub fn score(&self) -> f32 {
        (f64::from(self.parts.score()) * self.consensus.share()) as f32
    }
}

/// Runs the pass over the Γ stage's keys (`γ << 32 | !(i·n_B + j)`, every
/// pair with γ > 0), which it may reorder; returns the pairs accepted.
pub fn accepted(l: &Luts, a: PreparedRef, b: PreparedRef, keys: &mut [u64], s: &mut ConsensusScratch) -> u32 {
    let (na, nb) = (a.len(), b.len());
    let pool = (POOL * na.min(nb)).min(keys.len());
    if pool == 0 {
        return 0;
    }
    if keys.len() > pool {
        keys.select_nth_unstable_by(pool - 1, |x, y| y.cmp(x));
    }
    let keys = &mut keys[..pool];
    keys.sort_unstable_by(|x, y| y.cmp(x));
    s.pairs.clear();
    s.pairs.extend(keys.iter().map(|&k| {
        let idx = !(k as u32) as usize;
        ((idx / nb) as u16, (idx % nb) as u16)
    }));
    let mut best = 0;
    for seed in 0..pool.min(SEEDS) {
        s.used_a.clear();
        s.used_a.resize(na, false);
        s.used_b.clear();
        s.used_b.resize(nb, false);
        s.accepted.clear();
        let (si, sj) = s.pairs[seed];
        s.accepted.push((si, sj));
        s.used_a[usize::from(si)] = true;
        s.used_b[usize::from(sj)] = true;
        for _ in 0..SWEEPS {
            for &(i, j) in &s.pairs {
                let (iu, ju) = (usize::from(i), usize::from(j));
                if s.used_a[iu] || s.used_b[ju] {
                    continue;
                }
                let agree = s
                    .accepted
                    .iter()
                    .filter(|&&(k, m)| rho(l, a, b, (iu, ju), (usize::from(k), usize::from(m))) > AGREE)
                    .count();
                if agree >= 1 && 2 * agree >= s.accepted.len() {
                    s.accepted.push((i, j));
                    s.used_a[iu] = true;
                    s.used_b[ju] = true;
                }
            }
        }
        best = best.max(s.accepted.len());
    }
    best as u32
}
