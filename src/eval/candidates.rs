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

/// The real probes of one part of FVC2002 for a candidate-stage test:
/// impression 1 of each finger goes into the gallery (`gallery`, with a
/// subject id `fvc-DBn-FINGER`), impressions 2-8 probe (`probes`, each with
/// the index of its mate in `gallery`).
#[derive(Debug, Clone, Default)]
pub struct RealSet {
    /// Gallery templates with their subject ids.
    pub gallery: Vec<(String, crate::template::Template)>,
    /// Probe templates with the index of their mate in `gallery`.
    pub probes: Vec<(crate::template::Template, usize)>,
}

impl RealSet {
    /// From loaded FVC databases.
    pub fn from_databases(dbs: &[super::Database]) -> RealSet {
        let mut out = RealSet::default();
        for db in dbs {
            let tag = db.name.replace("_B", "");
            let mut fingers: Vec<&str> = db.entries.iter().map(|x| x.finger.as_str()).collect();
            fingers.dedup();
            for f in fingers {
                let imps: Vec<_> = db.entries.iter().filter(|x| x.finger == f).collect();
                let Some(first) = imps.iter().find(|x| x.impression == 1) else { continue };
                let g = out.gallery.len();
                out.gallery.push((format!("fvc-{tag}-{f}"), first.template.clone()));
                out.probes.extend(imps.iter().filter(|x| x.impression != 1).map(|x| (x.template.clone(), g)));
            }
        }
        out
    }
}
