//! What crosses between the plan's phases: candidates, the pairs to
//! re-score and their scores, named so that any replica of a part can
//! resolve them ([`TemplateRef`]), and the one total order every candidate
//! list is kept in ([`cand_order`]). The cluster converts them to and from
//! its protobuf messages (`cluster::router`, `cluster::node`).

use crate::mcc::{Consensus, ScoreParts, Verified};
use crate::template::FingerPosition;
use std::cmp::Ordering;
use std::sync::Arc;

/// A template named so that any replica of its group can find it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TemplateRef {
    /// The subject's id.
    pub subject: Arc<str>,
    /// Index of the template among the subject's visible templates, in the
    /// gallery's canonical order (shards in manifest order, then the delta
    /// in log order).
    pub ordinal: u32,
}

/// A phase-1 candidate of one probe finger.
#[derive(Debug, Clone, PartialEq)]
pub struct Cand {
    /// Cosine similarity of the embeddings.
    pub similarity: f32,
    /// The virtual group the subject belongs to.
    pub group: u32,
    /// The template.
    pub template: TemplateRef,
}

/// The total order every candidate list is kept in: similarity, highest
/// first; then subject id and ordinal, ascending.
pub fn cand_order(a: &Cand, b: &Cand) -> Ordering {
    b.similarity.total_cmp(&a.similarity).then_with(|| a.template.cmp(&b.template))
}

/// One part's size at the snapshot it searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSize {
    /// The group.
    pub group: u32,
    /// Subjects visible in it.
    pub subjects: u64,
    /// Its snapshot generation.
    pub generation: u64,
}

/// What phase 1 found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    /// Per probe finger, candidates in [`cand_order`], at most k.
    pub lists: Vec<Vec<Cand>>,
    /// The parts searched.
    pub groups: Vec<GroupSize>,
}

impl Found {
    /// Merges the findings of several parts: each finger's lists joined,
    /// ordered and cut to `k`.
    pub fn merge(parts: Vec<Found>, fingers: usize, k: usize) -> Found {
        let mut out = Found { lists: vec![Vec::new(); fingers], groups: Vec::new() };
        for p in parts {
            for (f, l) in p.lists.into_iter().enumerate().take(fingers) {
                out.lists[f].extend(l);
            }
            out.groups.extend(p.groups);
        }
        for l in &mut out.lists {
            l.sort_by(cand_order);
            l.truncate(k);
        }
        out.groups.sort_by_key(|g| g.group);
        out
    }
}

/// Where a subject's template lies, for the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateInfo {
    /// Its finger position.
    pub position: FingerPosition,
    /// A shard name, or `delta`.
    pub source: String,
}

/// A candidate subject as its part holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectInfo {
    /// Its id.
    pub subject: Arc<str>,
    /// Its group.
    pub group: u32,
    /// Its labels.
    pub labels: Vec<(String, String)>,
    /// Its visible templates, by ordinal.
    pub templates: Vec<TemplateInfo>,
}

/// A probe finger and a gallery template to compare.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pair {
    /// Probe finger index.
    pub finger: u32,
    /// The template's group.
    pub group: u32,
    /// The template.
    pub template: TemplateRef,
    /// Whether the second, geometric pass runs too (the top candidates:
    /// [`crate::mcc::consensus`]).
    pub verify: bool,
}

/// The comparison of a [`Pair`].
#[derive(Debug, Clone, PartialEq)]
pub struct PairScore {
    /// Probe finger index.
    pub finger: u32,
    /// The template.
    pub template: TemplateRef,
    /// The matcher's integers.
    pub parts: ScoreParts,
    /// The second pass's, when the pair asked for it.
    pub consensus: Option<Consensus>,
}

impl PairScore {
    /// The verified comparison, when the second pass ran.
    pub fn verified(&self) -> Option<Verified> {
        self.consensus.map(|consensus| Verified { parts: self.parts, consensus })
    }
}

/// What a re-scoring phase returns: the scores, and every subject a pair
/// named (a pair whose template has gone since phase 1 gets no score).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scored {
    /// Subjects named by the pairs.
    pub subjects: Vec<SubjectInfo>,
    /// Scores.
    pub scores: Vec<PairScore>,
}
