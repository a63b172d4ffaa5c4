//! What the re-scoring phases returned, indexed ([`Book`]), and what the
//! plan decides from it: which subjects get a second round, each
//! subject's best template per finger, and the per-subject fusion (of the
//! matcher's scores, or of the verified ones for the strongest subjects).

use super::{Plan, Scored, SubjectInfo, TemplateRef, comparable};
use crate::mcc::{ScoreParts, Verified};
use crate::search::fusion::{self, FingerEvidence};
use crate::search::impostor::ImpostorModel;
use crate::search::{FingerScore, SubjectMatch};
use crate::template::FingerPosition;
use std::collections::HashMap;
use std::sync::Arc;

/// Everything the re-scoring phases returned, indexed.
#[derive(Debug, Default)]
pub(super) struct Book {
    pub(super) subjects: HashMap<Arc<str>, SubjectInfo>,
    pub(super) order: Vec<Arc<str>>,
    scores: HashMap<(u32, TemplateRef), ScoreParts>,
    verified: HashMap<(u32, TemplateRef), Verified>,
}

impl Book {
    pub(super) fn add(&mut self, s: Scored) {
        for info in s.subjects {
            if !self.subjects.contains_key(&info.subject) {
                self.order.push(Arc::clone(&info.subject));
                self.subjects.insert(Arc::clone(&info.subject), info);
            }
        }
        for p in s.scores {
            if let Some(v) = p.verified() {
                self.verified.insert((p.finger, p.template.clone()), v);
            }
            self.scores.insert((p.finger, p.template), p.parts);
        }
    }

    /// Comparisons made: every pair scored, and every verification.
    pub(super) fn comparisons(&self) -> usize {
        self.scores.len() + self.verified.len()
    }

    pub(super) fn score(&self, finger: u32, subject: &Arc<str>, ordinal: u32) -> Option<&ScoreParts> {
        self.scores.get(&(finger, TemplateRef { subject: Arc::clone(subject), ordinal }))
    }

    fn verified(&self, finger: u32, subject: &Arc<str>, ordinal: u32) -> Option<&Verified> {
        self.verified.get(&(finger, TemplateRef { subject: Arc::clone(subject), ordinal }))
    }
}

pub(super) fn comparable_ordinals(info: &SubjectInfo, p: FingerPosition) -> impl Iterator<Item = u32> + '_ {
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
pub(super) fn round2_subjects(plan: &Plan<'_>, positions: &[FingerPosition], book: &Book) -> Vec<Arc<str>> {
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

/// The ranking order: strongest fused evidence (lowest ln p) first, then
/// subject id.
pub(super) fn rank_order(a: &(f64, SubjectMatch), b: &(f64, SubjectMatch)) -> std::cmp::Ordering {
    a.0.total_cmp(&b.0).then_with(|| a.1.subject.cmp(&b.1.subject))
}

/// For probe finger `f` (at position `p`), the subject's template whose
/// comparison is the strongest under `model`, ties to the lowest ordinal.
pub(super) fn best_template(
    model: &ImpostorModel,
    info: &SubjectInfo,
    f: u32,
    p: FingerPosition,
    book: &Book,
) -> Option<(u32, ScoreParts)> {
    comparable_ordinals(info, p).filter_map(|o| book.score(f, &info.subject, o).map(|parts| (o, *parts))).max_by(
        |a, b| {
            let (ea, eb) = (model.ln_fmr(a.1.n_p, a.1.score()), model.ln_fmr(b.1.n_p, b.1.score()));
            // Lowest ln FMR is the strongest; ties go to the lowest ordinal.
            eb.total_cmp(&ea).then_with(|| b.0.cmp(&a.0))
        },
    )
}

/// Fuses a subject's fingers: each finger's best template by `model` (the
/// matcher's), its evidence from `model`, or with `verified` (the verified
/// score's model) from that template's verified comparison, which phase 4
/// asked for; a finger whose verification did not come back counts as a
/// finger without evidence (p = 1), so it can only lower the subject.
pub(super) fn fuse_subject(
    model: &ImpostorModel,
    positions: &[FingerPosition],
    info: &SubjectInfo,
    book: &Book,
    verified: Option<&ImpostorModel>,
) -> (f64, SubjectMatch) {
    let mut evidence: Vec<FingerEvidence> = Vec::new();
    let mut fingers = Vec::new();
    for (f, p) in positions.iter().enumerate() {
        let comp = comparable_ordinals(info, *p).count();
        let best = best_template(model, info, f as u32, *p, book);
        let scored = match (best, verified) {
            (Some((o, parts)), None) => Some((o, parts.n_p, parts.score())),
            (Some((o, _)), Some(_)) => book.verified(f as u32, &info.subject, o).map(|v| (o, v.parts.n_p, v.score())),
            (None, _) => None,
        };
        let Some((o, n_p, score)) = scored else {
            if comp > 0 {
                // Comparable but not scored (left out of round 2, or its
                // verification missing): a finger without evidence, p = 1
                // (see round2_subjects).
                evidence.push(FingerEvidence { ln_fmr: 0.0, tries: comp });
            }
            continue;
        };
        let ev = fusion::evidence(verified.unwrap_or(model), n_p, score, comp);
        evidence.push(ev);
        let t = &info.templates[o as usize];
        fingers.push(FingerScore {
            probe_finger: f,
            position: t.position.0,
            score,
            n_p,
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
            verified: verified.is_some(),
            fingers,
            labels: info.labels.clone(),
        },
    )
}
