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
//! A logical gallery is one or more [`Part`]s, each the gallery folder of
//! one virtual group of subjects (subject → group by a stable hash,
//! [`crate::groups`]); a single machine usually holds one part, a cluster
//! node holds several groups of each gallery. The steps above are the
//! phases of [`plan`], run here over local parts ([`local`]) and by the
//! cluster router over remote ones, with the same answer.
//!
//! A search holds one [`Snapshot`] per part from start to end, so shards
//! attached, detached or compacted meanwhile never mix into one reply. Its
//! [`Query::cancel`] (deadline, caller gone) is checked inside every long
//! stage: between minutiae while the probe's cylinders are made, before
//! each shard partition and every few thousand templates of an exact scan,
//! and between comparisons (CPU) or batches (GPU) while re-scoring; a
//! stopped search ends with [`SearchError::Deadline`] or
//! [`SearchError::Cancelled`] naming the stage.
//! [`Searcher::identify`] is synchronous and parallel (rayon); the server
//! runs it off its async runtime.

pub mod fusion;
pub mod impostor;
pub mod local;
pub mod plan;
mod types;

use crate::cancel::{Cancel, Stop};
use crate::embed::Embedder;
use crate::gallery::{Gallery, Snapshot};
use crate::mcc::Matcher;
use crate::rescore::Rescorer;
use crate::template::Template;
use impostor::ImpostorModel;
pub use local::{GroupView, Prepped};
use rayon::prelude::*;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
pub use types::{
    Decision, FingerScore, MAX_FINGERS, MAX_VERIFY_SUBJECTS, Query, Reply, SearchConfig, SearchError, SubjectMatch,
    Timings,
};

/// One part of the gallery a searcher serves: the gallery holding one
/// virtual group of subjects (a single-machine gallery is one part, group 0
/// of 1).
pub struct Part {
    /// The virtual group.
    pub group: u32,
    /// The gallery holding it.
    pub gallery: Arc<Gallery>,
    /// Subjects visible at a snapshot generation (cached).
    subjects: Mutex<(u64, u64)>,
}

impl Part {
    /// Group `group`, held by `gallery`.
    pub fn new(group: u32, gallery: Arc<Gallery>) -> Arc<Part> {
        Arc::new(Part { group, gallery, subjects: Mutex::new((u64::MAX, 0)) })
    }

    /// Subjects visible in `snap` (a snapshot of this part), cached per generation.
    pub fn subjects(&self, snap: &Snapshot) -> u64 {
        if let Ok(c) = self.subjects.lock()
            && c.0 == snap.generation
        {
            return c.1;
        }
        let n = snap.subjects();
        if let Ok(mut c) = self.subjects.lock() {
            *c = (snap.generation, n);
        }
        n
    }

    /// The part as a search sees it now.
    pub fn view(&self) -> GroupView {
        let snap = self.gallery.snapshot();
        GroupView { group: self.group, subjects: self.subjects(&snap), snap }
    }
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part").field("group", &self.group).field("gallery", &self.gallery).finish()
    }
}

/// The identification engine over the parts of one logical gallery.
pub struct Searcher {
    parts: RwLock<Arc<Vec<Arc<Part>>>>,
    groups: u32,
    matcher: Matcher,
    embedder: Embedder,
    rescorer: Arc<dyn Rescorer>,
    model: ImpostorModel,
    cfg: SearchConfig,
}

impl std::fmt::Debug for Searcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Searcher").field("parts", &self.parts()).field("cfg", &self.cfg).finish()
    }
}

impl Searcher {
    /// An engine over one gallery (group 0 of 1), re-scoring with
    /// `rescorer`, deciding with `model`.
    pub fn new(
        gallery: Arc<Gallery>,
        rescorer: Arc<dyn Rescorer>,
        model: ImpostorModel,
        cfg: SearchConfig,
    ) -> Result<Searcher, SearchError> {
        let (matcher, embedder) = (gallery.matcher().clone(), gallery.embedder().clone());
        Searcher::with_parts(vec![Part::new(0, gallery)], 1, matcher, embedder, rescorer, model, cfg)
    }

    /// An engine over `parts`, some of the `groups` virtual groups of a
    /// logical gallery.
    pub fn with_parts(
        parts: Vec<Arc<Part>>,
        groups: u32,
        matcher: Matcher,
        embedder: Embedder,
        rescorer: Arc<dyn Rescorer>,
        model: ImpostorModel,
        cfg: SearchConfig,
    ) -> Result<Searcher, SearchError> {
        cfg.check().map_err(SearchError::Invalid)?;
        if groups == 0 || parts.iter().any(|p| p.group >= groups) {
            return Err(SearchError::Invalid(format!("parts must be groups below {groups}")));
        }
        let mut parts = parts;
        parts.sort_by_key(|p| p.group);
        Ok(Searcher { parts: RwLock::new(Arc::new(parts)), groups, matcher, embedder, rescorer, model, cfg })
    }

    /// The parts served now.
    pub fn parts(&self) -> Arc<Vec<Arc<Part>>> {
        self.parts.read().map(|p| Arc::clone(&p)).unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// Replaces the parts served (a group moved here or away); searches
    /// already running keep the parts they started with.
    pub fn set_parts(&self, mut parts: Vec<Arc<Part>>) -> Result<(), SearchError> {
        if parts.iter().any(|p| p.group >= self.groups) {
            return Err(SearchError::Invalid(format!("parts must be groups below {}", self.groups)));
        }
        parts.sort_by_key(|p| p.group);
        let mut w = self.parts.write().map_err(|_| SearchError::Internal("parts lock poisoned".into()))?;
        *w = Arc::new(parts);
        Ok(())
    }

    /// Virtual groups of the logical gallery (whether held here or not).
    pub fn groups(&self) -> u32 {
        self.groups
    }

    /// The part holding `group`, if held here.
    pub fn part(&self, group: u32) -> Option<Arc<Part>> {
        self.parts().iter().find(|p| p.group == group).cloned()
    }

    /// The part a subject belongs to, if held here.
    pub fn part_of(&self, subject: &str) -> Option<Arc<Part>> {
        self.part(crate::groups::group_of(subject, self.groups))
    }

    /// The gallery of the first part (the only one on a single machine;
    /// none on a cluster node that holds no group of this gallery yet).
    pub fn gallery(&self) -> Option<Arc<Gallery>> {
        self.parts().first().map(|p| Arc::clone(&p.gallery))
    }

    /// The configuration.
    pub fn config(&self) -> &SearchConfig {
        &self.cfg
    }

    /// The impostor model.
    pub fn model(&self) -> &ImpostorModel {
        &self.model
    }

    /// The matcher probes are prepared with.
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// The re-scorer.
    pub fn rescorer(&self) -> &Arc<dyn Rescorer> {
        &self.rescorer
    }

    /// The backend re-scoring now.
    pub fn backend(&self) -> String {
        self.rescorer.backend().to_string()
    }

    /// Every part as a search sees it now.
    pub fn views(&self) -> Vec<GroupView> {
        self.parts().iter().map(|p| p.view()).collect()
    }

    /// Subjects visible now, over every part.
    pub fn subjects(&self) -> u64 {
        self.views().iter().map(|v| v.subjects).sum()
    }

    /// Checks a probe's fingers.
    pub fn check_fingers(fingers: &[Template]) -> Result<(), SearchError> {
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

    /// Checks a decision rule.
    pub fn check_decision(d: Decision) -> Result<(), SearchError> {
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

    /// Checks a label filter.
    pub fn check_labels(labels: &[(String, String)]) -> Result<(), SearchError> {
        for (k, v) in labels {
            if k.is_empty() {
                return Err(SearchError::Invalid(format!("label filter: empty key (value '{v}')")));
            }
        }
        Ok(())
    }

    /// Cylinders and embeddings of the probe's fingers (stopping between
    /// minutiae when `cancel` says so: preparation is quadratic in them).
    pub fn prepare(&self, fingers: &[Template], cancel: &Cancel) -> Result<Vec<Prepped>, SearchError> {
        fingers
            .par_iter()
            .map(|t| {
                let prepared = self.matcher.prepare_until(t, cancel).map_err(|e| stopped(e, "prepare"))?;
                cancel.check().map_err(|e| stopped(e, "prepare"))?;
                Ok(Prepped { prepared, embedding: self.embedder.embed(t), position: t.finger_position })
            })
            .collect()
    }

    /// The plan's settings for a query.
    pub fn plan(&self, q: &Query) -> plan::Plan<'_> {
        plan::Plan {
            model: &self.model,
            k: self.cfg.candidates_per_finger,
            ef: self.cfg.ef.max(self.cfg.candidates_per_finger),
            decision: q.decision.unwrap_or(Decision::Fpir(self.cfg.default_fpir)),
            want: if q.max_candidates == 0 { self.cfg.max_candidates } else { q.max_candidates },
            round2_subjects: self.cfg.round2_subjects,
            verify_subjects: self.cfg.verify_subjects,
            cancel: q.cancel.clone(),
        }
    }

    /// Searches every part for the subjects the probe's fingers belong to.
    pub fn identify(&self, q: &Query) -> Result<Reply, SearchError> {
        self.identify_in(&self.views(), q)
    }

    /// Searches `views` (parts of this searcher's gallery) for the subjects
    /// the probe's fingers belong to.
    pub fn identify_in(&self, views: &[GroupView], q: &Query) -> Result<Reply, SearchError> {
        let t0 = Instant::now();
        Self::check_fingers(&q.fingers)?;
        let plan = self.plan(q);
        Self::check_decision(plan.decision)?;
        Self::check_labels(&q.labels)?;
        let check = |stage: &str| q.cancel.check().map_err(|e| stopped(e, stage));
        check("before the search")?;
        let prepped = self.prepare(&q.fingers, &q.cancel)?;
        let prepare = t0.elapsed();
        check("prepare")?;
        let phases =
            local::LocalPhases { searcher: self, views, probe: &prepped, labels: &q.labels, cancel: &q.cancel };
        let out = futures::executor::block_on(plan::identify(&phases, &plan))?;
        let timings = Timings {
            prepare,
            candidates: out.timings.candidates,
            rescore: out.timings.rescore,
            fuse: out.timings.fuse,
            total: t0.elapsed(),
        };
        Ok(Reply {
            hit: out.hit,
            candidates: out.candidates,
            operating_point: out.operating_point,
            timings,
            backend: self.backend(),
            generation: out.generation,
            comparisons: out.comparisons,
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
        self.verify_until(subject, fingers, decision, &Cancel::until(deadline))
    }

    /// [`Searcher::verify`], stopping when `cancel` says so.
    pub fn verify_until(
        &self,
        subject: &str,
        fingers: &[Template],
        decision: Option<Decision>,
        cancel: &Cancel,
    ) -> Result<Reply, SearchError> {
        let t0 = Instant::now();
        Self::check_fingers(fingers)?;
        let decision = decision.unwrap_or(Decision::Fpir(self.cfg.default_fpir));
        Self::check_decision(decision)?;
        let not_found = || SearchError::NotFound(format!("subject '{subject}'"));
        let view = self.part_of(subject).ok_or_else(not_found)?.view();
        let templates = local::subject_templates(&view.snap, subject);
        if templates.is_empty() {
            return Err(not_found());
        }
        let mut timings = Timings::default();
        let prepped = self.prepare(fingers, cancel)?;
        timings.prepare = t0.elapsed();
        let t2 = Instant::now();
        let subject: Arc<str> = subject.into();
        let pairs: Vec<plan::Pair> = prepped
            .iter()
            .enumerate()
            .flat_map(|(f, p)| {
                let subject = &subject;
                templates.iter().enumerate().filter(move |(_, (_, g))| plan::comparable(p.position, *g)).map(
                    move |(o, _)| plan::Pair {
                        finger: f as u32,
                        group: view.group,
                        template: plan::TemplateRef { subject: Arc::clone(subject), ordinal: o as u32 },
                        verify: false,
                    },
                )
            })
            .collect();
        let views = [view.clone()];
        let phases = local::LocalPhases { searcher: self, views: &views, probe: &prepped, labels: &[], cancel };
        let plan = plan::Plan {
            model: &self.model,
            k: 0,
            ef: 0,
            decision,
            want: 1,
            round2_subjects: 0,
            verify_subjects: self.cfg.verify_subjects,
            cancel: cancel.clone(),
        };
        let out = futures::executor::block_on(plan::score_subject(&phases, &plan, pairs))?;
        timings.rescore = t2.elapsed();
        let Some(m) = out.candidates.into_iter().next() else { return Err(not_found()) };
        timings.total = t0.elapsed();
        Ok(Reply {
            hit: m.hit,
            candidates: vec![m],
            operating_point: out.operating_point,
            timings,
            backend: self.backend(),
            generation: view.snap.generation,
            comparisons: out.comparisons,
        })
    }
}

/// The error of work stopped in `stage`.
pub fn stopped(s: Stop, stage: &str) -> SearchError {
    match s {
        Stop::Deadline => SearchError::Deadline(stage.to_string()),
        Stop::Cancelled => SearchError::Cancelled(stage.to_string()),
    }
}
