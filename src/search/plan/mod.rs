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
//!                        evidence; ranked
//!  phase 4  verification the best template per finger of the
//!                        `verify_subjects` (10) strongest subjects is compared again with the
//!                        second, geometric pass (`mcc::consensus`); they
//!                        are fused anew on the verified score's model,
//!                        ranked first, and only they can be a hit, decided
//!                        against the threshold for the summed subject
//!                        count of every part
//! ```
//!
//! Why only verified subjects can be a hit: the verified model promises
//! that an impostor subject's verified evidence passes the threshold with
//! probability p*; verifying a subset of the subjects can only lower the
//! chance that some impostor passes, so the FPIR promised for N subjects
//! still holds (Šidák over N, as before).
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

mod book;
mod messages;

use book::{Book, best_template, comparable_ordinals, fuse_subject, rank_order, round2_subjects};

pub use messages::{
    Cand, Found, GroupSize, Pair, PairScore, Scored, SubjectInfo, TemplateInfo, TemplateRef, cand_order,
};

use super::fusion::OperatingPoint;
use super::impostor::ImpostorModel;
use super::{Decision, SearchError, SubjectMatch, stopped};
use crate::cancel::Cancel;
use crate::template::FingerPosition;
use std::collections::HashSet;
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
    /// Subjects phase 4 verifies, the strongest after fusion (0: the
    /// second pass is off, 1:1 too; [`Plan::verifier`]).
    pub verify_subjects: usize,
    /// Stop (deadline passed, caller gone).
    pub cancel: Cancel,
}

impl Plan<'_> {
    /// The verified score's model when the second pass runs ([`verifier`]).
    pub fn verifier(&self) -> Option<&ImpostorModel> {
        verifier(self.model, self.verify_subjects)
    }
}

/// The verified score's model when the second pass runs: `model` has one
/// and `verify_subjects` is positive.
pub fn verifier(model: &ImpostorModel, verify_subjects: usize) -> Option<&ImpostorModel> {
    model.verified().filter(|_| verify_subjects > 0)
}

/// Where the plan's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PlanTimings {
    /// Phase 1.
    pub candidates: Duration,
    /// Phases 2, 3 and 4.
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
            l.iter().map(move |c| Pair {
                finger: f as u32,
                group: c.group,
                template: c.template.clone(),
                verify: false,
            })
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
                        verify: false,
                    }));
                }
            }
        }
        if !extra.is_empty() {
            book.add(phases.score(extra).await?);
        }
    }
    check(&plan.cancel, "rescore")?;

    // Fuse per subject, rank.
    let t3 = Instant::now();
    let mut ranked: Vec<(f64, SubjectMatch)> =
        book.order.iter().map(|s| fuse_subject(plan.model, &positions, &book.subjects[s], &book, None)).collect();
    ranked.sort_by(rank_order);
    timings.fuse = t3.elapsed();

    // Phase 4: the strongest subjects verified, fused anew, ranked first.
    if let Some(vm) = plan.verifier() {
        let top: Vec<Arc<str>> = ranked
            .iter()
            .take(plan.verify_subjects)
            .filter_map(|(_, m)| book.subjects.get_key_value(m.subject.as_str()).map(|(k, _)| Arc::clone(k)))
            .collect();
        let pairs: Vec<Pair> = top
            .iter()
            .flat_map(|s| {
                let info = &book.subjects[s];
                positions.iter().enumerate().filter_map(|(f, p)| {
                    best_template(plan.model, info, f as u32, *p, &book).map(|(ordinal, _)| Pair {
                        finger: f as u32,
                        group: info.group,
                        template: TemplateRef { subject: Arc::clone(s), ordinal },
                        verify: true,
                    })
                })
            })
            .collect();
        if !pairs.is_empty() {
            book.add(phases.score(pairs).await?);
            check(&plan.cancel, "verify")?;
        }
        let t4 = Instant::now();
        let mut head: Vec<(f64, SubjectMatch)> =
            top.iter().map(|s| fuse_subject(plan.model, &positions, &book.subjects[s], &book, Some(vm))).collect();
        head.sort_by(rank_order);
        let rest = ranked.split_off(head.len().min(ranked.len()));
        ranked = head;
        ranked.extend(rest);
        timings.fuse += t4.elapsed();
    }
    timings.rescore = t2.elapsed().saturating_sub(timings.fuse);
    let n: u64 = found.groups.iter().map(|g| g.subjects).sum();
    let op = operating_point(plan.decision, n);
    let verifying = plan.verifier().is_some();
    let candidates: Vec<SubjectMatch> = ranked
        .into_iter()
        .take(plan.want)
        .map(|(_, mut m)| {
            m.hit = m.fused >= op.threshold && (m.verified || !verifying);
            m
        })
        .collect();
    Ok(Outcome {
        hit: candidates.first().is_some_and(|c| c.hit),
        candidates,
        operating_point: op,
        comparisons: book.comparisons(),
        generation: found.groups.iter().map(|g| g.generation).sum(),
        groups: found.groups,
        timings,
    })
}

/// 1:1: scores `pairs` (the comparable pairs of one subject, all verified
/// by the second pass when the model has its verified part) and fuses
/// them, decided as a gallery of one subject.
pub async fn score_subject<P: Phases>(phases: &P, plan: &Plan<'_>, pairs: Vec<Pair>) -> Result<Outcome, SearchError> {
    let positions = phases.positions();
    let mut book = Book::default();
    let verified = plan.verifier();
    let pairs = pairs.into_iter().map(|p| Pair { verify: verified.is_some(), ..p }).collect();
    book.add(phases.score(pairs).await?);
    let op = operating_point(plan.decision, 1);
    let candidates: Vec<SubjectMatch> = book
        .order
        .iter()
        .map(|s| {
            let (_, mut m) = fuse_subject(plan.model, &positions, &book.subjects[s], &book, verified);
            m.hit = m.fused >= op.threshold;
            m
        })
        .collect();
    Ok(Outcome {
        hit: candidates.first().is_some_and(|c| c.hit),
        candidates,
        operating_point: op,
        comparisons: book.comparisons(),
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
