//! The candidate stage measured as the server runs it (`whorl
//! eval-candidates --serving`): a real gallery folder built by
//! [`crate::gallery::build`] (shards, one index per finger position),
//! searched by [`Searcher::identify`] with the server's [`SearchConfig`]
//! (its `candidates_per_finger`, `ef`, `exact_below` and partitions), next
//! to exact search over the same partitions at the same list length.
//!
//! Everything goes through public APIs (gallery build and open, the
//! searcher), so the measurement holds for whichever index implementation
//! the gallery uses.
//!
//! The gallery holds one finger per synthetic subject (subject `s` enrols
//! finger `10·s + s mod 10` at position `s mod 10 + 1`, as the demo's) and,
//! optionally, impression 1 of real fingers at positions spread over the
//! ten. A probe is one finger view: its position known (only that
//! partition is searched) or unknown (all ten).

use super::intervals::{Estimate, binomial};
use crate::embed::{Embedder, dot};
use crate::gallery::{self, BuildOptions, Gallery, GalleryError, GalleryOptions};
use crate::index::IndexParams;
use crate::mcc::Matcher;
use crate::rescore::{CpuRescorer, Rescorer};
use crate::search::impostor::ImpostorModel;
use crate::search::{Query, SearchConfig, SearchError, Searcher};
use crate::synth::{Subjects, Synth};
use crate::template::{FingerPosition, Template};
use rayon::prelude::*;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;

/// Why a serving measurement failed.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// Building or opening the gallery.
    #[error("gallery: {0}")]
    Gallery(#[from] GalleryError),
    /// A search.
    #[error("search: {0}")]
    Search(#[from] SearchError),
}

/// One probe: a finger view and the subject it belongs to.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The view (its position known, or `UNKNOWN`).
    pub template: Template,
    /// The mate's subject id; `None` for a non-mated search (the person is
    /// not enrolled).
    pub mate: Option<String>,
}

/// A gallery for the measurement, with the embeddings and positions exact
/// search needs.
pub struct ServingGallery {
    /// The opened gallery.
    pub gallery: Arc<Gallery>,
    /// Subject id of each template, in build order.
    pub subjects: Vec<String>,
    /// Finger position of each template.
    pub positions: Vec<FingerPosition>,
    /// Embeddings, `dim` per template.
    pub embeddings: Vec<f32>,
    /// Embedding dimension.
    pub dim: usize,
}

/// The finger position real gallery finger `i` is enrolled at.
pub fn real_position(i: usize) -> FingerPosition {
    FingerPosition((i % 10) as u8 + 1)
}

/// The templates of the measurement gallery: `subjects` synthetic
/// one-finger subjects, then `real` (subject id, template) pairs, the `i`th
/// at [`real_position`]`(i)`.
pub fn gallery_templates(synth: &Synth, subjects: u64, real: &[(String, Template)]) -> Vec<(String, Template)> {
    let pop = Subjects::new(synth.clone(), 1);
    let mut templates: Vec<(String, Template)> =
        (0..subjects).into_par_iter().map(|s| (Subjects::id(s), pop.synth.template(pop.finger_ids(s)[0], 0))).collect();
    for (i, (id, t)) in real.iter().enumerate() {
        templates.push((id.clone(), Template { finger_position: real_position(i), ..t.clone() }));
    }
    templates
}

/// Opens the gallery in `dir` if it was built from the same `key` (which
/// should name everything the templates come from) with this embedder and
/// matcher, else builds it there afresh.
pub fn open_or_build(
    dir: &Path,
    key: &str,
    embedder: &Embedder,
    matcher: &Matcher,
    templates: Vec<(String, Template)>,
    index: IndexParams,
    progress: impl FnMut(u64, &str),
) -> Result<ServingGallery, ServingError> {
    let dim = embedder.dim();
    let mut embeddings = vec![0f32; templates.len() * dim];
    embeddings.par_chunks_mut(dim).zip(&templates).for_each(|(row, (_, t))| embedder.embed_into(t, row));
    let subjects: Vec<String> = templates.iter().map(|x| x.0.clone()).collect();
    let positions: Vec<FingerPosition> = templates.iter().map(|x| x.1.finger_position).collect();
    let gopts = GalleryOptions { index, build_missing_indexes: false, ..GalleryOptions::default() };
    let key_file = dir.join("whorl-serving.key");
    let same_key = std::fs::read_to_string(&key_file).is_ok_and(|k| k == key);
    let reuse = same_key
        .then(|| Gallery::open(dir, embedder.clone(), matcher.clone(), gopts.clone()).ok())
        .flatten()
        .filter(|g| g.snapshot().shards.iter().map(|s| s.shard.len()).sum::<usize>() == templates.len());
    let g = match reuse {
        Some(g) => g,
        None => {
            let _ = std::fs::remove_dir_all(dir);
            let opts = BuildOptions { index, ..BuildOptions::default() };
            let items = templates.into_iter().map(|(id, t)| (id, Vec::new(), t));
            gallery::build(dir, embedder, matcher, &opts, items, progress)?;
            std::fs::write(&key_file, key).map_err(|e| GalleryError::Io(format!("{}: {e}", key_file.display())))?;
            Gallery::open(dir, embedder.clone(), matcher.clone(), gopts)?
        }
    };
    Ok(ServingGallery { gallery: Arc::new(g), subjects, positions, embeddings, dim })
}

/// Probes of the synthetic subjects `0..n`: impression `k` of each enrolled
/// finger, with its position (`known`) or without.
pub fn synthetic_probes(synth: &Synth, n: u64, k: u32, known: bool) -> Vec<Probe> {
    let pop = Subjects::new(synth.clone(), 1);
    (0..n)
        .into_par_iter()
        .map(|s| {
            let mut t = pop.synth.template(pop.finger_ids(s)[0], k);
            if !known {
                t.finger_position = FingerPosition::UNKNOWN;
            }
            Probe { template: t, mate: Some(Subjects::id(s)) }
        })
        .collect()
}

/// Non-mated probes: impression `k` of synthetic subjects `from..from + n`
/// (never enrolled when `from` is at least the gallery's subject count).
pub fn non_mated_probes(synth: &Synth, from: u64, n: u64, k: u32, known: bool) -> Vec<Probe> {
    synthetic_probes(synth, from + n, k, known)
        .into_iter()
        .skip(from as usize)
        .map(|p| Probe { mate: None, ..p })
        .collect()
}

/// The outcome of one set of probes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Outcome {
    /// Probes.
    pub probes: usize,
    /// Templates in the partitions a probe searches (mean).
    pub searched: f64,
    /// Mated probes: the mate among the `candidates_per_finger` best of
    /// those partitions by exact search.
    pub exact: Estimate,
    /// Mated: the mate among the candidates the serving path kept.
    pub served: Estimate,
    /// Mated: the mate ranked first after re-scoring and fusion.
    pub rank1: Estimate,
    /// Mated: not a hit with the mate first, at the configured FPIR (FNIR).
    pub fnir: Estimate,
    /// Non-mated: a hit at the configured FPIR (FPIR).
    pub fpir: Estimate,
    /// Mated: a subject other than the mate reaches the threshold, i.e.
    /// the search would be a false positive with the mate set aside (an
    /// FPIR measured on the mated probes, real ones included).
    pub wrong_hit: Estimate,
}

impl ServingGallery {
    /// Whether a gallery template at `g` is in a partition a probe of `p` searches.
    fn comparable(p: FingerPosition, g: FingerPosition) -> bool {
        !p.is_known() || !g.is_known() || p == g
    }

    /// The mate's rank by exact search over the partitions `probe` searches:
    /// comparable templates of other subjects scoring strictly higher than
    /// the best of the mate's (`None` without a mate or a comparable
    /// template of it), and the number of templates searched.
    fn exact_rank(&self, embedder: &Embedder, probe: &Probe) -> (Option<usize>, usize) {
        let q = embedder.embed(&probe.template);
        let p = probe.template.finger_position;
        let mut mate_best = f32::NEG_INFINITY;
        let mut others = Vec::new();
        for (i, row) in self.embeddings.chunks_exact(self.dim).enumerate() {
            if !Self::comparable(p, self.positions[i]) {
                continue;
            }
            let s = dot(&q, row);
            if probe.mate.as_deref() == Some(self.subjects[i].as_str()) {
                mate_best = mate_best.max(s);
            } else {
                others.push(s);
            }
        }
        let searched = others.len() + usize::from(mate_best.is_finite());
        if !mate_best.is_finite() {
            return (None, searched);
        }
        (Some(others.iter().filter(|&&s| s > mate_best).count()), searched)
    }

    /// Runs `probes` through the serving path with `cfg` (CPU re-scoring)
    /// and the impostor `model`.
    pub fn measure(
        &self,
        embedder: &Embedder,
        cfg: &SearchConfig,
        model: &ImpostorModel,
        probes: &[Probe],
    ) -> Result<Outcome, ServingError> {
        let matcher = self.gallery.matcher().clone();
        let rescorer: Arc<dyn Rescorer> = Arc::new(CpuRescorer::new(matcher));
        let searcher = Searcher::new(Arc::clone(&self.gallery), rescorer, model.clone(), cfg.clone())?;
        let k = cfg.candidates_per_finger;
        struct Row {
            mated: bool,
            exact: bool,
            served: bool,
            first: bool,
            hit: bool,
            wrong_hit: bool,
            searched: usize,
        }
        let rows: Vec<Result<Row, ServingError>> = probes
            .par_iter()
            .map(|p| {
                let (rank, searched) = self.exact_rank(embedder, p);
                let q = Query { fingers: vec![p.template.clone()], max_candidates: k, ..Query::default() };
                let r = searcher.identify(&q)?;
                let is_mate = |c: &crate::search::SubjectMatch| p.mate.as_deref() == Some(c.subject.as_str());
                Ok(Row {
                    mated: p.mate.is_some(),
                    exact: rank.is_some_and(|r| r < k),
                    served: r.candidates.iter().any(is_mate),
                    first: r.candidates.first().is_some_and(is_mate),
                    hit: r.hit,
                    wrong_hit: r.candidates.iter().any(|c| c.hit && !is_mate(c)),
                    searched,
                })
            })
            .collect();
        let rows: Vec<Row> = rows.into_iter().collect::<Result<_, _>>()?;
        let mated: Vec<&Row> = rows.iter().filter(|r| r.mated).collect();
        let non: Vec<&Row> = rows.iter().filter(|r| !r.mated).collect();
        let share =
            |v: &[&Row], f: fn(&Row) -> bool| binomial(v.iter().filter(|r| f(r)).count() as u64, v.len() as u64, 0.95);
        Ok(Outcome {
            probes: rows.len(),
            searched: rows.iter().map(|r| r.searched as f64).sum::<f64>() / rows.len().max(1) as f64,
            exact: share(&mated, |r| r.exact),
            served: share(&mated, |r| r.served),
            rank1: share(&mated, |r| r.first),
            fnir: share(&mated, |r| !(r.hit && r.first)),
            fpir: share(&non, |r| r.hit),
            wrong_hit: share(&mated, |r| r.wrong_hit),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::SynthParams;

    /// `wrong_hit` counts a subject other than the mate over the threshold,
    /// never the mate: at a lenient FPIR nearly every mated search has one;
    /// at a strict FPIR none has, although mates themselves still hit.
    #[test]
    fn a_subject_other_than_the_mate_over_the_threshold_is_a_wrong_hit() {
        let dir = std::env::temp_dir().join(format!("whorl-serving-wrong-hit-{}", std::process::id()));
        let synth = Synth::new(SynthParams::default(), 5);
        let (e, m) = (Embedder::default(), Matcher::default());
        let templates = gallery_templates(&synth, 200, &[]);
        let g = open_or_build(&dir, "wrong-hit", &e, &m, templates, IndexParams::default(), |_, _| {})
            .expect("a 200-subject gallery builds");
        let probes = synthetic_probes(&synth, 40, 1, false);
        let model = ImpostorModel::builtin(crate::shard::mcc_params_crc(m.params())).expect("built-in model");
        let at = |fpir: f64| {
            let cfg = SearchConfig { default_fpir: fpir, ..SearchConfig::default() };
            g.measure(&e, &cfg, &model, &probes).expect("searches run")
        };
        let (lenient, strict) = (at(0.999), at(1e-9));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!((lenient.probes, strict.probes), (40, 40));
        assert!(lenient.wrong_hit.value > 0.5, "lenient: {:?}", lenient.wrong_hit);
        assert!(strict.fnir.value < 1.0, "strict: some mates must still be hits ranked first: {:?}", strict.fnir);
        assert_eq!(strict.wrong_hit.value, 0.0, "strict: the mate itself must not count: {:?}", strict.wrong_hit);
    }
}
