//! The identification plan in phases that can run in one process or be
//! split across the machines of a cluster, with the same answer either way.
//!
//! ```text
//!  phase 1  candidates   every part (a virtual group of subjects) finds its
//!                        best candidates per probe finger, by embedding
//!                        similarity; the lists are merged and cut to k
//!  phase 2  round 1      the merged candidates are re-scored (cylinders)
//!  phase 3  round 2      ten-prints: the other fingers of the strongest
//!                        candidate subjects are re-scored
//!  fuse                  per subject, Fisher fusion of the per-finger
//!                        evidence; ranked; decided against the threshold
//!                        for the summed subject count of every part
//! ```
//!
//! The phases are the [`Phases`] trait: [`super::local`] runs them on the
//! galleries of this process, the cluster router on remote nodes. What
//! crosses between phases names templates the way any replica can resolve
//! them ([`TemplateRef`]: subject id and the template's ordinal among the
//! subject's visible templates), and every choice is made under one total
//! order (similarity, then subject id, then ordinal), so that the top k of
//! the union of the parts' top-k lists is exactly the top k of one process
//! holding every part. Re-scoring returns the matcher's integers
//! ([`ScoreParts`]) and fusion happens here, once, so a cluster's scores
//! are bit-identical to a single node's.

mod messages;

pub use messages::{
    Cand, Found, GroupSize, Pair, PairScore, Scored, SubjectInfo, TemplateInfo, TemplateRef, cand_order,
};

use super::fusion::{self, FingerEvidence, OperatingPoint};
use super::impostor::ImpostorModel;
use super::{Decision, FingerScore, SearchError, SubjectMatch, stopped};
use crate::cancel::Cancel;
use crate::mcc::ScoreParts;
use crate::template::FingerPosition;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The phases, run wherever the parts are.
pub trait Phases {
    /// Finger positions of the probe's fingers, in probe order.
    fn positions(&self) -> Vec<FingerPosition>;
    /// Phase 1 over every part: per finger, the best `k` candidates.
    fn candidates(&self, k: usize, ef: usize) -> impl Future<Output = Result<Found, SearchError>> + Send;
    /// Re-scores `pairs` (phases 2 and 3).
    fn score(&self, pairs: Vec<Pair>) -> impl Future<Output = Result<Scored, SearchError>> + Send;
}

/// What the plan needs besides the phases.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    /// The impostor model.
    pub model: &'a ImpostorModel,
    /// Candidates per probe finger (k).
    pub k: usize,
    /// HNSW breadth.
    pub ef: usize,
    /// Decision rule.
    pub decision: Decision,
    /// Candidates in the reply.
    pub want: usize,
    /// Subjects whose other fingers round 2 re-scores (0: all).
    pub round2_subjects: usize,
    /// Stop (deadline passed, caller gone).
    pub cancel: Cancel,
}

/// Where the plan's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PlanTimings {
    /// Phase 1.
    pub candidates: Duration,
    /// Phases 2 and 3.
    pub rescore: Duration,
    /// Fusion and ranking.
    pub fuse: Duration,
}

/// The plan's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Whether the best candidate reaches the threshold.
    pub hit: bool,
    /// Ranked candidates, best first.
    pub candidates: Vec<SubjectMatch>,
    /// The threshold and what it means.
    pub operating_point: OperatingPoint,
    /// Comparisons made.
    pub comparisons: usize,
    /// Sum of the parts' snapshot generations (changes with any of them).
    pub generation: u64,
    /// The parts searched.
    pub groups: Vec<GroupSize>,
    /// Timings.
    pub timings: PlanTimings,
}

fn check(cancel: &Cancel, stage: &str) -> Result<(), SearchError> {
    cancel.check().map_err(|e| stopped(e, stage))
}

/// Whether a probe finger of position `p` is compared with a gallery
/// template of position `g`.
pub fn comparable(p: FingerPosition, g: FingerPosition) -> bool {
    !p.is_known() || !g.is_known() || p == g
}

/// Everything the re-scoring phases returned, indexed.
#[derive(Debug, Default)]
struct Book {
    subjects: HashMap<Arc<str>, SubjectInfo>,
    order: Vec<Arc<str>>,
    scores: HashMap<(u32, TemplateRef), ScoreParts>,
}

impl Book {
    fn add(&mut self, s: Scored) {
        for info in s.subjects {
            if !self.subjects.contains_key(&info.subject) {
                self.order.push(Arc::clone(&info.subject));
                self.subjects.insert(Arc::clone(&info.subject), info);
            }
        }
        for p in s.scores {
            self.scores.insert((p.finger, p.template), p.parts);
        }
    }

    fn score(&self, finger: u32, subject: &Arc<str>, ordinal: u32) -> Option<&ScoreParts> {
        self.scores.get(&(finger, TemplateRef { subject: Arc::clone(subject), ordinal }))
    }
}

/// Runs the plan over `phases`.
pub async fn identify<P: Phases>(phases: &P, plan: &Plan<'_>) -> Result<Outcome, SearchError> {
    let positions = phases.positions();
    let t1 = Instant::now();
    let found = phases.candidates(plan.k, plan.ef.max(plan.k)).await?;
    let mut timings = PlanTimings { candidates: t1.elapsed(), ..PlanTimings::default() };
    check(&plan.cancel, "candidates")?;

    // Round 1: every candidate of every finger.
    let t2 = Instant::now();
    let pairs: Vec<Pair> = found
        .lists
        .iter()
        .enumerate()
        .flat_map(|(f, l)| {
            l.iter().map(move |c| Pair { finger: f as u32, group: c.group, template: c.template.clone() })
        })
        .collect();
    let mut book = Book::default();
    if !pairs.is_empty() {
        book.add(phases.score(pairs).await?);
    }
    // Round 2: the other fingers of the strongest candidate subjects.
    if positions.len() > 1 {
        check(&plan.cancel, "rescore")?;
        let keep = round2_subjects(plan, &positions, &book);
        let mut extra = Vec::new();
        for s in &keep {
            let info = &book.subjects[s];
            for (f, p) in positions.iter().enumerate() {
                let comp: Vec<u32> = comparable_ordinals(info, *p).collect();
                if !comp.iter().any(|&o| book.score(f as u32, s, o).is_some()) {
                    extra.extend(comp.into_iter().map(|ordinal| Pair {
                        finger: f as u32,
                        group: info.group,
                        template: TemplateRef { subject: Arc::clone(s), ordinal },
                    }));
                }
            }
        }
        if !extra.is_empty() {
            book.add(phases.score(extra).await?);
        }
    }
    timings.rescore = t2.elapsed();
    check(&plan.cancel, "rescore")?;

    // Fuse per subject, rank, decide.
    let t3 = Instant::now();
    let mut ranked: Vec<(f64, SubjectMatch)> =
        book.order.iter().map(|s| fuse_subject(plan.model, &positions, &book.subjects[s], &book)).collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.subject.cmp(&b.1.subject)));
    let n: u64 = found.groups.iter().map(|g| g.subjects).sum();
    let op = operating_point(plan.decision, n);
    let candidates: Vec<SubjectMatch> = ranked
        .into_iter()
        .take(plan.want)
        .map(|(_, mut m)| {
            m.hit = m.fused >= op.threshold;
            m
        })
        .collect();
    timings.fuse = t3.elapsed();
    Ok(Outcome {
        hit: candidates.first().is_some_and(|c| c.hit),
        candidates,
        operating_point: op,
        comparisons: book.scores.len(),
        generation: found.groups.iter().map(|g| g.generation).sum(),
        groups: found.groups,
        timings,
    })
}

/// 1:1: scores `pairs` (the comparable pairs of one subject) and fuses
/// them, decided as a gallery of one subject.
pub async fn score_subject<P: Phases>(phases: &P, plan: &Plan<'_>, pairs: Vec<Pair>) -> Result<Outcome, SearchError> {
    let positions = phases.positions();
    let mut book = Book::default();
    book.add(phases.score(pairs).await?);
    let op = operating_point(plan.decision, 1);
    let candidates: Vec<SubjectMatch> = book
        .order
        .iter()
        .map(|s| {
            let (_, mut m) = fuse_subject(plan.model, &positions, &book.subjects[s], &book);
            m.hit = m.fused >= op.threshold;
            m
        })
        .collect();
    Ok(Outcome {
        hit: candidates.first().is_some_and(|c| c.hit),
        candidates,
        operating_point: op,
        comparisons: book.scores.len(),
        generation: 0,
        groups: Vec::new(),
        timings: PlanTimings::default(),
    })
}

/// The operating point of `decision` over `subjects` enrolled subjects.
pub fn operating_point(decision: Decision, subjects: u64) -> OperatingPoint {
    match decision {
        Decision::Fpir(f) => OperatingPoint::for_fpir(f, subjects),
        Decision::Threshold(t) => OperatingPoint::for_threshold(t, subjects),
    }
}

fn comparable_ordinals(info: &SubjectInfo, p: FingerPosition) -> impl Iterator<Item = u32> + '_ {
    info.templates.iter().enumerate().filter(move |(_, t)| comparable(p, t.position)).map(|(o, _)| o as u32)
}

/// The subjects worth a second round: all when few, else the strongest by
/// round-1 evidence (the sum over fingers of the best ln FMR), at least
/// four times the candidates asked for. A subject left out keeps the
/// fingers round 1 scored, and [`fuse_subject`] counts each of its other
/// comparable fingers as a finger without evidence (p = 1): Fisher's
/// P(k, x) falls as x grows, so its fused score is at most what a full
/// round would give. Leaving subjects out can therefore neither lift an
/// impostor above the threshold (the FPIR can only fall) nor rank anyone
/// higher than a full round would. (Counting only the scored fingers does
/// the opposite: P(1, x) < P(k, x), so one lucky finger alone outranked a
/// mate whose other fingers were scored.)
fn round2_subjects(plan: &Plan<'_>, positions: &[FingerPosition], book: &Book) -> Vec<Arc<str>> {
    let limit = if plan.round2_subjects == 0 { usize::MAX } else { plan.round2_subjects.max(4 * plan.want) };
    if book.order.len() <= limit {
        return book.order.clone();
    }
    let mut strength: Vec<(f64, &Arc<str>)> = book
        .order
        .iter()
        .map(|s| {
            let info = &book.subjects[s];
            let mut ln = 0.0;
            for f in 0..positions.len() {
                let best = (0..info.templates.len() as u32)
                    .filter_map(|o| book.score(f as u32, s, o))
                    .map(|p| plan.model.ln_fmr(p.n_p, p.score()))
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
    model: &ImpostorModel,
    positions: &[FingerPosition],
    info: &SubjectInfo,
    book: &Book,
) -> (f64, SubjectMatch) {
    let mut evidence: Vec<FingerEvidence> = Vec::new();
    let mut fingers = Vec::new();
    for (f, p) in positions.iter().enumerate() {
        let comp: Vec<u32> = comparable_ordinals(info, *p).collect();
        let best = comp.iter().filter_map(|&o| book.score(f as u32, &info.subject, o).map(|parts| (o, *parts))).max_by(
            |a, b| {
                let (ea, eb) = (model.ln_fmr(a.1.n_p, a.1.score()), model.ln_fmr(b.1.n_p, b.1.score()));
                // Lowest ln FMR is the strongest; ties go to the lowest ordinal.
                eb.total_cmp(&ea).then_with(|| b.0.cmp(&a.0))
            },
        );
        let Some((o, parts)) = best else {
            if !comp.is_empty() {
                // Comparable but not scored (left out of round 2): a finger
                // without evidence, p = 1 (see round2_subjects).
                evidence.push(FingerEvidence { ln_fmr: 0.0, tries: comp.len() });
            }
            continue;
        };
        let ev = fusion::evidence(model, &parts, comp.len());
        evidence.push(ev);
        let t = &info.templates[o as usize];
        fingers.push(FingerScore {
            probe_finger: f,
            position: t.position.0,
            score: parts.score(),
            n_p: parts.n_p,
            decades: fusion::decades(fusion::ln_sidak(ev.ln_fmr, ev.tries)),
            tries: ev.tries,
            source: t.source.clone(),
        });
    }
    let ln_p = fusion::fuse(&evidence);
    (
        ln_p,
        SubjectMatch {
            subject: info.subject.to_string(),
            fused: fusion::decades(ln_p),
            hit: false,
            fingers,
            labels: info.labels.clone(),
        },
    )
}

/// Distinct subjects, in first-seen order, of `pairs`.
pub fn subjects_of(pairs: &[Pair]) -> Vec<(u32, Arc<str>)> {
    let mut seen = HashSet::new();
    pairs
        .iter()
        .filter(|p| seen.insert(Arc::clone(&p.template.subject)))
        .map(|p| (p.group, Arc::clone(&p.template.subject)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(sim: f32, subject: &str, ordinal: u32) -> Cand {
        Cand { similarity: sim, group: 0, template: TemplateRef { subject: subject.into(), ordinal } }
    }

    #[test]
    fn merging_parts_gives_the_top_k_of_the_union_under_one_order() {
        let a = Found {
            lists: vec![vec![cand(0.9, "b", 0), cand(0.5, "a", 1)]],
            groups: vec![GroupSize { group: 1, subjects: 2, generation: 3 }],
        };
        let b = Found {
            lists: vec![vec![cand(0.9, "a", 0), cand(0.7, "c", 0)]],
            groups: vec![GroupSize { group: 0, subjects: 5, generation: 1 }],
        };
        let m = Found::merge(vec![a, b], 1, 3);
        let names: Vec<(&str, u32)> = m.lists[0].iter().map(|c| (&*c.template.subject, c.template.ordinal)).collect();
        assert_eq!(names, vec![("a", 0), ("b", 0), ("c", 0)]);
        assert_eq!(m.groups.iter().map(|g| g.group).collect::<Vec<_>>(), vec![0, 1]);
    }
}
