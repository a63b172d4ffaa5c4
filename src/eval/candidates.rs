//! Candidate-stage accuracy: where the true mate ranks when a probe's
//! embedding is compared with every gallery embedding, and the share of
//! probes whose mate is in a candidate list of a given share of the
//! gallery (hit rate against penetration rate).

use rayon::prelude::*;

/// Candidate-list lengths evaluated, as shares of the gallery.
pub const PENETRATIONS: [f64; 5] = [0.001, 0.005, 0.01, 0.02, 0.05];

pub use crate::embed::dot;

/// Rank (0 = first) of each probe's mate among `gallery` (flat, `dim` per
/// row) by inner product: the number of gallery rows scoring strictly
/// higher than the mate.
pub fn exact_ranks(gallery: &[f32], dim: usize, probes: &[Vec<f32>], mates: &[usize]) -> Vec<usize> {
    probes
        .par_iter()
        .zip(mates)
        .map(|(p, &mate)| {
            let target = dot(p, &gallery[mate * dim..(mate + 1) * dim]);
            gallery.chunks_exact(dim).filter(|row| dot(p, row) > target).count()
        })
        .collect()
}

/// One point of the hit-rate curve.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct HitRate {
    /// Candidate list as a share of the gallery.
    pub penetration: f64,
    /// Candidate list length.
    pub list: usize,
    /// Share of probes whose mate is in the list.
    pub hit_rate: f64,
}

/// Hit rates of mate `ranks` in a gallery of `size` at each penetration.
pub fn hit_rates(ranks: &[usize], size: usize, penetrations: &[f64]) -> Vec<HitRate> {
    penetrations
        .iter()
        .map(|&p| {
            let list = ((p * size as f64).round() as usize).max(1);
            let hits = ranks.iter().filter(|&&r| r < list).count();
            HitRate { penetration: p, list, hit_rate: hits as f64 / ranks.len().max(1) as f64 }
        })
        .collect()
}
