//! The identification pipeline:
//!
//! ```text
//! probe fingers (1-10 templates, each with its finger position)
//!   → cylinders and embedding of each finger
//!   → candidates: per finger, every shard's HNSW partitions of the same
//!     position (and of unknown position; all of them when the probe's is
//!     unknown), in parallel, plus an exact scan of the in-memory delta,
//!     minus tombstoned subjects, honouring label filters
//!   → merge: the best `candidates_per_finger` by embedding similarity
//!   → re-score every candidate with the cylinder matcher (GPU or CPU)
//!   → fuse per subject: every probe finger is compared with the candidate
//!     subject's templates of the same position, each score becomes an
//!     impostor probability (the impostor model) and the fingers combine by
//!     Fisher's method ([`fusion`])
//!   → decide against the threshold a target FPIR gives for this gallery
//! ```
//!
//! A search holds one gallery [`Snapshot`] from start to end, so shards
//! attached, detached or compacted meanwhile never mix into one reply.
//! [`Searcher::identify`] is synchronous and parallel (rayon); the server
//! runs it off its async runtime.

pub mod fusion;
pub mod impostor;

use crate::embed::dot;
use crate::gallery::{Gallery, LoadedShard, Snapshot};
use crate::mcc::{Prepared, PreparedRef, ScoreParts};
use crate::rescore::{self, Location, Rescorer};
use crate::template::{FingerPosition, Template};
use fusion::{FingerEvidence, OperatingPoint};
use impostor::ImpostorModel;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most fingers one probe may carry.
pub const MAX_FINGERS: usize = 10;

/// Tunables of the pipeline (the server's `[search]` config section).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Candidates kept per probe finger after merging shards and delta.
    pub candidates_per_finger: usize,
    /// HNSW search breadth (at least `candidates_per_finger`).
    pub ef: usize,
    /// Partitions with at most this many templates are scanned exactly.
    pub exact_below: usize,
    /// Candidates in a reply when the request does not say.
    pub max_candidates: usize,
    /// Target FPIR when the request gives neither FPIR nor threshold.
    pub default_fpir: f64,
    /// Multi-finger probes: candidate subjects whose other fingers are
    /// re-scored in round 2, the strongest after round 1 (0: all of them).
    pub round2_subjects: usize,
}

impl Default for SearchConfig {
    fn default() -> SearchConfig {
        SearchConfig {
            candidates_per_finger: 100,
            ef: 128,
            exact_below: 4096,
            max_candidates: 20,
            default_fpir: 0.01,
            round2_subjects: 64,
        }
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
    /// Give up after this instant.
    pub deadline: Option<Instant>,
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
    /// Whether `fused` reaches the threshold.
    pub hit: bool,
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
    /// The deadline passed (names the stage reached).
    #[error("deadline exceeded {0}")]
    Deadline(String),
    /// No such subject.
    #[error("not found: {0}")]
    NotFound(String),
    /// A fault inside whorl (a damaged shard, a failed backend).
    #[error("internal: {0}")]
    Internal(String),
}

/// Candidates of one task: (probe finger, template, similarity).
type Hits = Vec<(usize, Src, f32)>;

/// Where a gallery template lives within a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Src {
    Shard(u32, u32),
    Delta(u32),
}

/// The identification engine over a gallery.
pub struct Searcher {
    gallery: Arc<Gallery>,
    rescorer: Arc<dyn Rescorer>,
    model: ImpostorModel,
    cfg: SearchConfig,
    subjects: Mutex<(u64, u64)>,
}

impl std::fmt::Debug for Searcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Searcher").field("gallery", &self.gallery).field("cfg", &self.cfg).finish()
    }
}

struct Prepped {
    prepared: Prepared,
    embedding: Vec<f32>,
    position: FingerPosition,
}

/// Positions a probe finger of position `p` is compared with.
fn comparable(p: FingerPosition, g: FingerPosition) -> bool {
    !p.is_known() || !g.is_known() || p == g
}

impl Searcher {
    /// An engine over `gallery`, re-scoring with `rescorer`, deciding with `model`.
    pub fn new(
        gallery: Arc<Gallery>,
        rescorer: Arc<dyn Rescorer>,
        model: ImpostorModel,
        cfg: SearchConfig,
    ) -> Result<Searcher, SearchError> {
        if cfg.candidates_per_finger == 0 || cfg.ef == 0 || cfg.max_candidates == 0 {
            return Err(SearchError::Invalid("candidates_per_finger, ef and max_candidates must be positive".into()));
        }
        if !(cfg.default_fpir > 0.0 && cfg.default_fpir < 1.0) {
            return Err(SearchError::Invalid(format!("default_fpir {} is not in (0, 1)", cfg.default_fpir)));
        }
        Ok(Searcher { gallery, rescorer, model, cfg, subjects: Mutex::new((u64::MAX, 0)) })
    }

    /// The gallery searched.
    pub fn gallery(&self) -> &Arc<Gallery> {
        &self.gallery
    }

    /// The configuration.
    pub fn config(&self) -> &SearchConfig {
        &self.cfg
    }

    /// The backend re-scoring now.
    pub fn backend(&self) -> String {
        self.rescorer.backend().to_string()
    }

    /// Subjects visible in `snap` (cached per snapshot generation).
    pub fn subjects(&self, snap: &Snapshot) -> u64 {
        if let Ok(c) = self.subjects.lock()
            && c.0 == snap.generation
        {
            return c.1;
        }
        let mut n: u64 = 0;
        for s in &snap.shards {
            n += s.by_subject.len() as u64;
            n -= snap.delta.tombstones.keys().filter(|t| s.by_subject.contains_key(*t)).count() as u64;
        }
        let delta: HashSet<&str> = snap.delta.live().map(|e| &*e.subject).collect();
        n += delta.iter().filter(|s| !snap.shards.iter().any(|x| x.by_subject.contains_key(**s))).count() as u64;
        if let Ok(mut c) = self.subjects.lock() {
            *c = (snap.generation, n);
        }
        n
    }

    fn check_fingers(fingers: &[Template]) -> Result<(), SearchError> {
        if fingers.is_empty() {
            return Err(SearchError::Invalid("the probe holds no finger templates".into()));
        }
        if fingers.len() > MAX_FINGERS {
            return Err(SearchError::Invalid(format!(
                "the probe holds {} finger templates; at most {MAX_FINGERS}",
                fingers.len()
            )));
        }
        let mut seen = HashSet::new();
        for (i, t) in fingers.iter().enumerate() {
            if t.minutiae.is_empty() {
                return Err(SearchError::Invalid(format!("finger {i}: the template has no minutiae")));
            }
            if t.finger_position.0 > 10 {
                return Err(SearchError::Invalid(format!(
                    "finger {i}: finger position {} is not 0 (unknown) to 10",
                    t.finger_position.0
                )));
            }
            if t.finger_position.is_known() && !seen.insert(t.finger_position) {
                return Err(SearchError::Invalid(format!(
                    "finger {i}: finger position {} appears twice in the probe",
                    t.finger_position.0
                )));
            }
        }
        Ok(())
    }

    fn check_decision(d: Decision) -> Result<(), SearchError> {
        match d {
            Decision::Fpir(f) if !(f > 0.0 && f < 1.0) => {
                Err(SearchError::Invalid(format!("target FPIR {f} is not in (0, 1)")))
            }
            Decision::Threshold(t) if !t.is_finite() || t < 0.0 => {
                Err(SearchError::Invalid(format!("threshold {t} is not a non-negative number of decades")))
            }
            _ => Ok(()),
        }
    }

    fn prepare(&self, fingers: &[Template]) -> Vec<Prepped> {
        let (matcher, embedder) = (self.gallery.matcher(), self.gallery.embedder());
        fingers
            .par_iter()
            .map(|t| Prepped {
                prepared: matcher.prepare(t),
                embedding: embedder.embed(t),
                position: t.finger_position,
            })
            .collect()
    }

    /// Searches the gallery for the subjects the probe's fingers belong to.
    pub fn identify(&self, q: &Query) -> Result<Reply, SearchError> {
        let t0 = Instant::now();
        Self::check_fingers(&q.fingers)?;
        let decision = q.decision.unwrap_or(Decision::Fpir(self.cfg.default_fpir));
        Self::check_decision(decision)?;
        for (k, v) in &q.labels {
            if k.is_empty() {
                return Err(SearchError::Invalid(format!("label filter: empty key (value '{v}')")));
            }
        }
        let deadline = |stage: &str| -> Result<(), SearchError> {
            match q.deadline {
                Some(d) if Instant::now() >= d => Err(SearchError::Deadline(stage.to_string())),
                _ => Ok(()),
            }
        };
        deadline("before the search started")?;
        let snap = self.gallery.snapshot();
        let mut timings = Timings::default();

        let prepped = self.prepare(&q.fingers);
        timings.prepare = t0.elapsed();
        deadline("after preparing the probe")?;

        let t1 = Instant::now();
        let lists = self.candidates(&snap, &prepped, &q.labels)?;
        timings.candidates = t1.elapsed();
        deadline("after candidate search")?;

        // Round 1: every candidate of every finger.
        let t2 = Instant::now();
        let mut scored: HashMap<(usize, Src), ScoreParts> = HashMap::new();
        let pairs: Vec<(usize, Src)> =
            lists.iter().enumerate().flat_map(|(f, l)| l.iter().map(move |s| (f, *s))).collect();
        self.rescore(&snap, &prepped, &pairs, &mut scored)?;
        // Round 2: the other fingers of the strongest candidate subjects.
        let subjects: Vec<Arc<str>> = {
            let mut seen = HashSet::new();
            pairs.iter().map(|(_, s)| subject_of(&snap, *s)).filter(|s| seen.insert(s.clone())).collect()
        };
        let templates: HashMap<Arc<str>, Vec<(Src, FingerPosition)>> =
            subjects.iter().map(|s| (s.clone(), subject_templates(&snap, s))).collect();
        let mut extra: Vec<(usize, Src)> = Vec::new();
        if prepped.len() > 1 {
            let want = if q.max_candidates == 0 { self.cfg.max_candidates } else { q.max_candidates };
            let keep = self.round2_subjects(&prepped, &subjects, &templates, &scored, want);
            for s in &keep {
                for (f, p) in prepped.iter().enumerate() {
                    let comp: Vec<Src> =
                        templates[s].iter().filter(|(_, g)| comparable(p.position, *g)).map(|x| x.0).collect();
                    if !comp.iter().any(|src| scored.contains_key(&(f, *src))) {
                        extra.extend(comp.into_iter().map(|src| (f, src)));
                    }
                }
            }
        }
        deadline("after the first re-scoring round")?;
        self.rescore(&snap, &prepped, &extra, &mut scored)?;
        timings.rescore = t2.elapsed();
        deadline("after re-scoring")?;

        // Fuse per subject.
        let t3 = Instant::now();
        let mut ranked: Vec<(f64, SubjectMatch)> =
            subjects.iter().map(|s| self.fuse_subject(&snap, &prepped, s, &templates[s], &scored)).collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.subject.cmp(&b.1.subject)));
        let n = self.subjects(&snap);
        let op = match decision {
            Decision::Fpir(f) => OperatingPoint::for_fpir(f, n),
            Decision::Threshold(t) => OperatingPoint::for_threshold(t, n),
        };
        let want = if q.max_candidates == 0 { self.cfg.max_candidates } else { q.max_candidates };
        let candidates: Vec<SubjectMatch> = ranked
            .into_iter()
            .take(want)
            .map(|(_, mut m)| {
                m.hit = m.fused >= op.threshold;
                m
            })
            .collect();
        timings.fuse = t3.elapsed();
        timings.total = t0.elapsed();
        Ok(Reply {
            hit: candidates.first().is_some_and(|c| c.hit),
            candidates,
            operating_point: op,
            timings,
            backend: self.backend(),
            generation: snap.generation,
            comparisons: scored.len(),
        })
    }

    /// Compares the probe with one enrolled subject (1:1). The operating
    /// point is that of a gallery of one: the target is a false match rate.
    pub fn verify(
        &self,
        subject: &str,
        fingers: &[Template],
        decision: Option<Decision>,
        deadline: Option<Instant>,
    ) -> Result<Reply, SearchError> {
        let t0 = Instant::now();
        Self::check_fingers(fingers)?;
        let decision = decision.unwrap_or(Decision::Fpir(self.cfg.default_fpir));
        Self::check_decision(decision)?;
        let snap = self.gallery.snapshot();
        let templates = subject_templates(&snap, subject);
        if templates.is_empty() {
            return Err(SearchError::NotFound(format!("subject '{subject}'")));
        }
        let mut timings = Timings::default();
        let prepped = self.prepare(fingers);
        timings.prepare = t0.elapsed();
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(SearchError::Deadline("after preparing the probe".into()));
        }
        let t2 = Instant::now();
        let pairs: Vec<(usize, Src)> = prepped
            .iter()
            .enumerate()
            .flat_map(|(f, p)| {
                templates.iter().filter(move |(_, g)| comparable(p.position, *g)).map(move |(s, _)| (f, *s))
            })
            .collect();
        let mut scored = HashMap::new();
        self.rescore(&snap, &prepped, &pairs, &mut scored)?;
        timings.rescore = t2.elapsed();
        let t3 = Instant::now();
        let key: Arc<str> = subject.into();
        let (_, mut m) = self.fuse_subject(&snap, &prepped, &key, &templates, &scored);
        let op = match decision {
            Decision::Fpir(f) => OperatingPoint::for_fpir(f, 1),
            Decision::Threshold(t) => OperatingPoint::for_threshold(t, 1),
        };
        m.hit = m.fused >= op.threshold;
        timings.fuse = t3.elapsed();
        timings.total = t0.elapsed();
        Ok(Reply {
            hit: m.hit,
            candidates: vec![m],
            operating_point: op,
            timings,
            backend: self.backend(),
            generation: snap.generation,
            comparisons: scored.len(),
        })
    }

    /// Per finger, the merged best candidates of every shard partition and the delta.
    fn candidates(
        &self,
        snap: &Snapshot,
        prepped: &[Prepped],
        labels: &[(String, String)],
    ) -> Result<Vec<Vec<Src>>, SearchError> {
        let k = self.cfg.candidates_per_finger;
        let ef = self.cfg.ef.max(k);
        // One task per (finger, shard, partition), plus one per finger for the delta.
        let mut tasks: Vec<(usize, Option<(usize, usize)>)> = Vec::new();
        for (f, p) in prepped.iter().enumerate() {
            for (si, s) in snap.shards.iter().enumerate() {
                for (pi, part) in s.partitions.iter().enumerate() {
                    if comparable(p.position, part.position) {
                        tasks.push((f, Some((si, pi))));
                    }
                }
            }
            tasks.push((f, None));
        }
        let found: Vec<Result<Hits, SearchError>> = tasks
            .par_iter()
            .map(|&(f, at)| {
                let p = &prepped[f];
                match at {
                    Some((si, pi)) => {
                        self.search_partition(snap, &snap.shards[si], si, pi, &p.embedding, labels, k, ef)
                    }
                    None => Ok(search_delta(snap, p, labels, k)),
                }
                .map(|v| v.into_iter().map(|(src, s)| (f, src, s)).collect())
            })
            .collect();
        let mut lists: Vec<Vec<(Src, f32)>> = vec![Vec::new(); prepped.len()];
        for r in found {
            for (f, src, s) in r? {
                lists[f].push((src, s));
            }
        }
        Ok(lists
            .into_iter()
            .map(|mut l| {
                l.sort_by(|a, b| b.1.total_cmp(&a.1));
                l.truncate(k);
                l.into_iter().map(|x| x.0).collect()
            })
            .collect())
    }

    #[allow(clippy::too_many_arguments)]
    fn search_partition(
        &self,
        snap: &Snapshot,
        shard: &LoadedShard,
        si: usize,
        pi: usize,
        q: &[f32],
        labels: &[(String, String)],
        k: usize,
        ef: usize,
    ) -> Result<Vec<(Src, f32)>, SearchError> {
        let part = &shard.partitions[pi];
        let tombstoned = snap.delta.tombstones.keys().any(|t| shard.by_subject.contains_key(t));
        let keep = |t: u32| -> bool {
            let t = t as usize;
            (!tombstoned || !snap.delta.hides_shard_subject(shard.subject_of(t)))
                && labels_match_shard(shard, t, labels)
        };
        let filtered = tombstoned || !labels.is_empty();
        let hits: Vec<(u32, f32)> = if part.ids.len() <= self.cfg.exact_below {
            let dim = shard.shard.embedding().dim as usize;
            let mut row = vec![0f32; dim];
            let all = shard.shard.embeddings_f32();
            let mut v: Vec<(u32, f32)> = part
                .ids
                .iter()
                .filter(|&&t| !filtered || keep(t))
                .map(|&t| {
                    let r = match all {
                        Some(a) => &a[t as usize * dim..(t as usize + 1) * dim],
                        None => {
                            shard.shard.embedding_into(t as usize, &mut row);
                            crate::embed::normalise(&mut row);
                            &row[..]
                        }
                    };
                    (t, dot(q, r))
                })
                .collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1));
            v.truncate(k);
            v
        } else {
            let found = if filtered {
                part.graph.search_filtered(q, k, ef, &|i| part.ids.get(i as usize).is_some_and(|&t| keep(t)))
            } else {
                part.graph.search(q, k, ef)
            }
            .map_err(|e| SearchError::Internal(format!("{}: {e}", shard.entry.name)))?;
            found.into_iter().filter_map(|h| part.ids.get(h.id as usize).map(|&t| (t, h.score))).collect()
        };
        Ok(hits.into_iter().map(|(t, s)| (Src::Shard(si as u32, t), s)).collect())
    }

    fn rescore(
        &self,
        snap: &Snapshot,
        prepped: &[Prepped],
        pairs: &[(usize, Src)],
        out: &mut HashMap<(usize, Src), ScoreParts>,
    ) -> Result<(), SearchError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut queries: Vec<rescore::Query<'_>> =
            prepped.iter().map(|p| rescore::Query { probe: p.prepared.view(), candidates: Vec::new() }).collect();
        let mut order: Vec<Vec<Src>> = vec![Vec::new(); prepped.len()];
        for &(f, src) in pairs {
            let (prepared, location) = prepared_of(snap, src)?;
            queries[f].candidates.push(rescore::Candidate { prepared, location });
            order[f].push(src);
        }
        let scores = self.rescorer.rescore(&queries).map_err(|e| SearchError::Internal(e.to_string()))?;
        for (f, (srcs, sc)) in order.iter().zip(scores).enumerate() {
            for (src, parts) in srcs.iter().zip(sc) {
                out.insert((f, *src), parts);
            }
        }
        Ok(())
    }

    /// The subjects worth a second round: all when few, else the strongest
    /// by round-1 evidence (the sum over fingers of the best ln FMR), at
    /// least four times the candidates asked for. A subject left out keeps
    /// the fingers round 1 scored, and [`Self::fuse_subject`] counts each of
    /// its other comparable fingers as a finger without evidence (p = 1):
    /// Fisher's P(k, x) falls as x grows, so its fused score is at most what
    /// a full round would give. Leaving subjects out can therefore neither
    /// lift an impostor above the threshold (the FPIR can only fall) nor
    /// rank anyone higher than a full round would. (Counting only the scored fingers, as an
    /// earlier version did, does the opposite: P(1, x) < P(k, x), so one
    /// lucky finger alone outranked a mate whose other fingers were scored.)
    fn round2_subjects(
        &self,
        prepped: &[Prepped],
        subjects: &[Arc<str>],
        templates: &HashMap<Arc<str>, Vec<(Src, FingerPosition)>>,
        scored: &HashMap<(usize, Src), ScoreParts>,
        want: usize,
    ) -> Vec<Arc<str>> {
        let limit = if self.cfg.round2_subjects == 0 { usize::MAX } else { self.cfg.round2_subjects.max(4 * want) };
        if subjects.len() <= limit {
            return subjects.to_vec();
        }
        let mut strength: Vec<(f64, &Arc<str>)> = subjects
            .iter()
            .map(|s| {
                let mut ln = 0.0;
                for f in 0..prepped.len() {
                    let best = templates[s]
                        .iter()
                        .filter_map(|(src, _)| scored.get(&(f, *src)))
                        .map(|p| self.model.ln_fmr(p.n_p, p.score()))
                        .fold(0.0f64, f64::min);
                    ln += best;
                }
                (ln, s)
            })
            .collect();
        strength.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        strength.into_iter().take(limit).map(|(_, s)| Arc::clone(s)).collect()
    }

    fn fuse_subject(
        &self,
        snap: &Snapshot,
        prepped: &[Prepped],
        subject: &Arc<str>,
        templates: &[(Src, FingerPosition)],
        scored: &HashMap<(usize, Src), ScoreParts>,
    ) -> (f64, SubjectMatch) {
        let mut evidence: Vec<FingerEvidence> = Vec::new();
        let mut fingers = Vec::new();
        for (f, p) in prepped.iter().enumerate() {
            let comp: Vec<&(Src, FingerPosition)> =
                templates.iter().filter(|(_, g)| comparable(p.position, *g)).collect();
            let best = comp
                .iter()
                .filter_map(|(src, g)| scored.get(&(f, *src)).map(|parts| (*src, *g, *parts)))
                .max_by(|a, b| {
                    let (ea, eb) = (self.model.ln_fmr(a.2.n_p, a.2.score()), self.model.ln_fmr(b.2.n_p, b.2.score()));
                    eb.total_cmp(&ea)
                });
            let Some((src, g, parts)) = best else {
                if !comp.is_empty() {
                    // Comparable but not scored (left out of round 2): a
                    // finger without evidence, p = 1 (see round2_subjects).
                    evidence.push(FingerEvidence { ln_fmr: 0.0, tries: comp.len() });
                }
                continue;
            };
            let ev = fusion::evidence(&self.model, &parts, comp.len());
            evidence.push(ev);
            fingers.push(FingerScore {
                probe_finger: f,
                position: g.0,
                score: parts.score(),
                n_p: parts.n_p,
                decades: fusion::decades(fusion::ln_sidak(ev.ln_fmr, ev.tries)),
                tries: ev.tries,
                source: source_name(snap, src),
            });
        }
        let ln_p = fusion::fuse(&evidence);
        let labels = subject_labels(snap, subject);
        (ln_p, SubjectMatch { subject: subject.to_string(), fused: fusion::decades(ln_p), hit: false, fingers, labels })
    }
}

fn labels_match_shard(shard: &LoadedShard, t: usize, want: &[(String, String)]) -> bool {
    if want.is_empty() {
        return true;
    }
    let Ok(have) = shard.shard.subject_labels(shard.shard.subject_index(t)) else { return false };
    want.iter().all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
}

fn search_delta(snap: &Snapshot, p: &Prepped, labels: &[(String, String)], k: usize) -> Vec<(Src, f32)> {
    let mut v: Vec<(Src, f32)> = snap
        .delta
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| snap.delta.visible(e) && comparable(p.position, e.template.finger_position))
        .filter(|(_, e)| labels.iter().all(|(k, v)| e.labels.iter().any(|(hk, hv)| hk == k && hv == v)))
        .map(|(i, e)| (Src::Delta(i as u32), dot(&p.embedding, &e.embedding)))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.truncate(k);
    v
}

fn subject_of(snap: &Snapshot, src: Src) -> Arc<str> {
    match src {
        Src::Shard(s, t) => snap.shards[s as usize].subject_of(t as usize).into(),
        Src::Delta(i) => Arc::clone(&snap.delta.entries[i as usize].subject),
    }
}

fn source_name(snap: &Snapshot, src: Src) -> String {
    match src {
        Src::Shard(s, _) => snap.shards[s as usize].entry.name.clone(),
        Src::Delta(_) => "delta".into(),
    }
}

fn prepared_of(snap: &Snapshot, src: Src) -> Result<(PreparedRef<'_>, Option<Location>), SearchError> {
    match src {
        Src::Shard(s, t) => {
            let ls = &snap.shards[s as usize];
            let p = ls.shard.prepared(t as usize).map_err(|e| SearchError::Internal(e.to_string()))?;
            Ok((p, Some(Location { shard: ls.key, template: t })))
        }
        Src::Delta(i) => Ok((snap.delta.entries[i as usize].prepared.view(), None)),
    }
}

/// Every visible template of `subject` with its finger position.
fn subject_templates(snap: &Snapshot, subject: &str) -> Vec<(Src, FingerPosition)> {
    let mut out = Vec::new();
    if !snap.delta.hides_shard_subject(subject) {
        for (si, s) in snap.shards.iter().enumerate() {
            if let Some(ts) = s.by_subject.get(subject) {
                out.extend(ts.iter().map(|&t| (Src::Shard(si as u32, t), s.shard.finger(t as usize))));
            }
        }
    }
    for i in snap.delta.subject_indices(subject) {
        out.push((Src::Delta(i as u32), snap.delta.entries[i].template.finger_position));
    }
    out
}

fn subject_labels(snap: &Snapshot, subject: &str) -> Vec<(String, String)> {
    if let Some(e) = snap.delta.subject_entries(subject).last() {
        return e.labels.as_ref().clone();
    }
    for s in &snap.shards {
        if let Some(ts) = s.by_subject.get(subject)
            && let Ok(l) = s.shard.subject_labels(s.shard.subject_index(ts[0] as usize))
        {
            return l.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        }
    }
    Vec::new()
}
