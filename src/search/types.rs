//! The pipeline's public types: its configuration, a query, a reply and
//! its parts, and why a search fails.

use super::fusion::OperatingPoint;
use crate::cancel::Cancel;
use crate::template::Template;
use serde::Serialize;
use std::time::Duration;

/// Most fingers one probe may carry.
pub const MAX_FINGERS: usize = 10;

/// Tunables of the pipeline (the server's `[search]` config section).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Candidates kept per probe finger after merging shards and delta.
    pub candidates_per_finger: usize,
    /// HNSW search breadth (at least `candidates_per_finger`). 512 keeps
    /// the mate among 100 candidates as often as exact search, within a
    /// point, on 100,000-finger partitions (128: 8 points fewer), for
    /// 11% fewer single-finger searches per second
    /// (`benches/reports/serving/ef.md`).
    pub ef: usize,
    /// `ef` is the breadth for partitions of up to this many templates; a
    /// larger partition is searched with `ef` scaled by its size over this
    /// (a 300,000-finger partition at ef 512 kept the mate 5 points less
    /// often than exact search; `benches/reports/serving/ef.md`). 0: the
    /// same `ef` whatever the size.
    pub ef_reference: usize,
    /// Partitions with at most this many templates are scanned exactly.
    pub exact_below: usize,
    /// Candidates in a reply when the request does not say.
    pub max_candidates: usize,
    /// Target FPIR when the request gives neither FPIR nor threshold.
    pub default_fpir: f64,
    /// Multi-finger probes: candidate subjects whose other fingers are
    /// re-scored in round 2, the strongest after round 1 (0: all of them).
    pub round2_subjects: usize,
    /// Phase 4: the strongest subjects after fusion whose best template
    /// per finger the second, geometric pass compares again; only they
    /// can be a hit (at most [`MAX_VERIFY_SUBJECTS`]). 0 turns the pass
    /// off, for 1:1 verification too: the matcher's score and its model
    /// decide. 10 took FNIR at FPIR 1% from 23.7% to 21.9% (synthetic)
    /// and from 30.7% to 27.1% (held-out real) for 18% more re-scoring
    /// work (`benches/reports/candidates/report.md`).
    pub verify_subjects: usize,
}

/// Most subjects phase 4 may verify (bounds its work: each verified pair
/// costs about twice a comparison, on the CPU).
pub const MAX_VERIFY_SUBJECTS: usize = 1000;

impl Default for SearchConfig {
    fn default() -> SearchConfig {
        SearchConfig {
            candidates_per_finger: 100,
            ef: 512,
            ef_reference: 100_000,
            exact_below: 4096,
            max_candidates: 20,
            default_fpir: 0.01,
            round2_subjects: 64,
            verify_subjects: 10,
        }
    }
}

impl SearchConfig {
    /// Why these settings cannot serve, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.candidates_per_finger == 0 || self.ef == 0 || self.max_candidates == 0 {
            return Err("candidates_per_finger, ef and max_candidates must be positive".into());
        }
        if !(self.default_fpir > 0.0 && self.default_fpir < 1.0) {
            return Err(format!("default_fpir {} is not in (0, 1)", self.default_fpir));
        }
        if self.verify_subjects > MAX_VERIFY_SUBJECTS {
            return Err(format!("verify_subjects {} is over {MAX_VERIFY_SUBJECTS}", self.verify_subjects));
        }
        Ok(())
    }

    /// The HNSW breadth for a partition of `templates`: `ef` (at least
    /// `k`), scaled up in proportion to the size beyond `ef_reference`,
    /// never beyond the partition itself.
    pub fn ef_for(&self, ef: usize, k: usize, templates: usize) -> usize {
        let ef = ef.max(k);
        if self.ef_reference == 0 || templates <= self.ef_reference {
            return ef;
        }
        let scaled = (ef as u128 * templates as u128).div_ceil(self.ef_reference as u128);
        (scaled.min(templates as u128) as usize).max(ef)
    }
}

/// How the reply decides hit or no hit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Threshold from this target false positive identification rate.
    Fpir(f64),
    /// This threshold on the fused score (decades).
    Threshold(f64),
}

/// One identification request.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// The probe's fingers (1 to [`MAX_FINGERS`]).
    pub fingers: Vec<Template>,
    /// Candidates wanted (0: the configured default).
    pub max_candidates: usize,
    /// Decision rule (None: the configured FPIR).
    pub decision: Option<Decision>,
    /// Only subjects carrying every one of these labels.
    pub labels: Vec<(String, String)>,
    /// Stop (deadline passed, caller gone): checked inside every long stage.
    pub cancel: Cancel,
}

/// One probe finger's comparison with a candidate subject.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FingerScore {
    /// Index of the probe finger in the query.
    pub probe_finger: usize,
    /// Finger position of the gallery template.
    pub position: u8,
    /// Cylinder score in [0, 1] of the best comparison.
    pub score: f32,
    /// Its n_P.
    pub n_p: u32,
    /// Its evidence: −log10 of the impostor probability, corrected for the
    /// subject's `tries` comparable templates.
    pub decades: f64,
    /// The subject's templates this probe finger could be compared with.
    pub tries: usize,
    /// Where the best template lives (shard name or `delta`).
    pub source: String,
}

/// A ranked subject.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubjectMatch {
    /// Subject id.
    pub subject: String,
    /// Fused score: −log10 of the chance an impostor subject does as well.
    pub fused: f64,
    /// Whether `fused` reaches the threshold (only a verified subject can).
    pub hit: bool,
    /// Whether the second, geometric pass verified it (the strongest
    /// subjects of a search): its scores and `fused` are then the verified
    /// score's.
    pub verified: bool,
    /// Per-finger scores.
    pub fingers: Vec<FingerScore>,
    /// The subject's labels.
    pub labels: Vec<(String, String)>,
}

/// Where the time went.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Timings {
    /// Cylinders and embeddings of the probe.
    pub prepare: Duration,
    /// HNSW and delta candidates, merged.
    pub candidates: Duration,
    /// Cylinder re-scoring (both rounds).
    pub rescore: Duration,
    /// Fusion and ranking.
    pub fuse: Duration,
    /// Everything.
    pub total: Duration,
}

/// The answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reply {
    /// Whether the best candidate reaches the threshold.
    pub hit: bool,
    /// Ranked candidates, best first.
    pub candidates: Vec<SubjectMatch>,
    /// The threshold and what it means.
    pub operating_point: OperatingPoint,
    /// Stage timings.
    pub timings: Timings,
    /// Backend that re-scored.
    pub backend: String,
    /// Gallery snapshot generation searched.
    pub generation: u64,
    /// Cylinder comparisons made.
    pub comparisons: usize,
}

/// Why a search failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SearchError {
    /// The request is malformed (names the finger and the problem).
    #[error("{0}")]
    Invalid(String),
    /// The deadline passed (names the stage where the work stopped).
    #[error("deadline exceeded in stage {0}")]
    Deadline(String),
    /// The caller went away (names the stage where the work stopped).
    #[error("cancelled in stage {0}")]
    Cancelled(String),
    /// No such subject.
    #[error("not found: {0}")]
    NotFound(String),
    /// A fault inside whorl (a damaged shard, a failed backend).
    #[error("internal: {0}")]
    Internal(String),
    /// Part of the gallery cannot be reached now (a cluster whose every
    /// replica of some group is down), and a complete answer was asked for.
    #[error("unavailable: {0}")]
    Unavailable(String),
}
