//! The plan's phases over galleries held by this process: one
//! [`GroupView`] (a part's snapshot) per virtual group.
//!
//! Phase 1 runs one task per (finger, part, shard partition) plus one per
//! (finger, part) for the delta, in parallel (rayon); each keeps its best
//! `k` under [`plan::cand_order`], and the merged lists are cut to `k` under
//! the same order. Re-scoring resolves each [`TemplateRef`] against the
//! part's snapshot and scores every pair in one call of the re-scorer.

use super::plan::{
    self, Cand, Found, GroupSize, Pair, PairScore, Phases, Scored, SubjectInfo, TemplateInfo, TemplateRef,
};
use super::{SearchError, Searcher, stopped};
use crate::cancel::Cancel;
use crate::embed::dot;
use crate::gallery::{LoadedShard, Snapshot};
use crate::mcc::{Prepared, PreparedRef, ScoreParts};
use crate::rescore::{self, Location};
use crate::template::FingerPosition;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

/// A probe finger, prepared.
#[derive(Debug, Clone)]

pub struct Prepped {
    /// Its cylinders.
    pub prepared: Prepared,
    /// Its embedding.
    pub embedding: Vec<f32>,
    /// Its finger position.
    pub position: FingerPosition,
}

/// One part as a search sees it.
#[derive(Debug, Clone)]
pub struct GroupView {
    /// The virtual group.
    pub group: u32,
    /// Its snapshot, held for the whole search.
    pub snap: Arc<Snapshot>,
    /// Subjects visible in it.
    pub subjects: u64,
}

/// Where a gallery template lives within a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Src {
    Shard(u32, u32),
    Delta(u32),
}

/// The phases over local parts.
pub struct LocalPhases<'a> {
    /// The engine (matcher, re-scorer, configuration).
    pub searcher: &'a Searcher,
    /// The parts searched.
    pub views: &'a [GroupView],
    /// The probe.
    pub probe: &'a [Prepped],
    /// Only subjects carrying all of these labels.
    pub labels: &'a [(String, String)],
    /// Stop (deadline passed, caller gone).
    pub cancel: &'a Cancel,
}

impl Phases for LocalPhases<'_> {
    fn positions(&self) -> Vec<FingerPosition> {
        self.probe.iter().map(|p| p.position).collect()
    }

    async fn candidates(&self, k: usize, ef: usize) -> Result<Found, SearchError> {
        candidates(self.searcher, self.views, self.probe, self.labels, k, ef, self.cancel)
    }

    async fn score(&self, pairs: Vec<Pair>) -> Result<Scored, SearchError> {
        score(self.searcher, self.views, self.probe, &pairs, self.cancel)
    }
}

/// Phase 1 over `views`.
pub fn candidates(
    searcher: &Searcher,
    views: &[GroupView],
    probe: &[Prepped],
    labels: &[(String, String)],
    k: usize,
    ef: usize,
    cancel: &Cancel,
) -> Result<Found, SearchError> {
    // One task per (finger, part, shard, partition), plus one per (finger, part) for the delta.
    let mut tasks: Vec<Task> = Vec::new();
    for (f, p) in probe.iter().enumerate() {
        for (vi, v) in views.iter().enumerate() {
            for (si, s) in v.snap.shards.iter().enumerate() {
                for (pi, part) in s.partitions.iter().enumerate() {
                    if plan::comparable(p.position, part.position) {
                        tasks.push((f, vi, Some((si, pi))));
                    }
                }
            }
            tasks.push((f, vi, None));
        }
    }
    let found: Vec<Result<(usize, Vec<Cand>), SearchError>> = tasks
        .par_iter()
        .map(|&(f, vi, at)| {
            cancel.check().map_err(|e| stopped(e, "candidates"))?;
            let v = &views[vi];
            let p = &probe[f];
            let hits = match at {
                Some((si, pi)) => search_partition(searcher, &v.snap, si, pi, &p.embedding, labels, k, ef, cancel)?,
                None => search_delta(&v.snap, p, labels, k),
            };
            let mut cands: Vec<Cand> = hits
                .into_iter()
                .map(|(src, similarity)| {
                    let subject = subject_of(&v.snap, src);
                    let ordinal = ordinal_of(&v.snap, &subject, src);
                    Cand { similarity, group: v.group, template: TemplateRef { subject, ordinal } }
                })
                .collect();
            cands.sort_by(plan::cand_order);
            cands.truncate(k);
            Ok((f, cands))
        })
        .collect();
    let mut lists: Vec<Vec<Cand>> = vec![Vec::new(); probe.len()];
    for r in found {
        let (f, l) = r?;
        lists[f].extend(l);
    }
    for l in &mut lists {
        l.sort_by(plan::cand_order);
        l.truncate(k);
    }
    let groups = views
        .iter()
        .map(|v| GroupSize { group: v.group, subjects: v.subjects, generation: v.snap.generation })
        .collect();
    Ok(Found { lists, groups })
}

/// Re-scores `pairs` against `views` (phases 2 and 3).
pub fn score(
    searcher: &Searcher,
    views: &[GroupView],
    probe: &[Prepped],
    pairs: &[Pair],
    cancel: &Cancel,
) -> Result<Scored, SearchError> {
    let by_group: HashMap<u32, &GroupView> = views.iter().map(|v| (v.group, v)).collect();
    // Each subject's templates, resolved once.
    let mut templates: HashMap<Arc<str>, Wanted<'_>> = HashMap::new();
    let mut out = Scored::default();
    for (group, subject) in plan::subjects_of(pairs) {
        let Some(v) = by_group.get(&group) else {
            return Err(SearchError::Internal(format!("group {group} is not held here")));
        };
        let ts = subject_templates(&v.snap, &subject);
        if ts.is_empty() {
            continue; // deleted since phase 1
        }
        out.subjects.push(SubjectInfo {
            subject: Arc::clone(&subject),
            group,
            labels: subject_labels(&v.snap, &subject),
            templates: ts
                .iter()
                .map(|(src, pos)| TemplateInfo { position: *pos, source: source_name(&v.snap, *src) })
                .collect(),
        });
        templates.insert(subject, (v, ts));
    }
    let mut queries: Vec<rescore::Query<'_>> =
        probe.iter().map(|p| rescore::Query { probe: p.prepared.view(), candidates: Vec::new() }).collect();
    let mut order: Vec<Vec<&TemplateRef>> = vec![Vec::new(); probe.len()];
    let mut scratch = crate::mcc::Scratch::new();
    for pair in pairs {
        let f = pair.finger as usize;
        let (Some(q), Some((v, ts))) = (queries.get_mut(f), templates.get(&pair.template.subject)) else { continue };
        let Some(&(src, _)) = ts.get(pair.template.ordinal as usize) else { continue };
        let (prepared, location) = prepared_of(&v.snap, src)?;
        if pair.verify {
            // The top candidates' second pass: few pairs, on the CPU with
            // either backend (the GPU's integers are the CPU's).
            cancel.check().map_err(|e| stopped(e, "verify"))?;
            let v = searcher.matcher().verify_parts(q.probe, prepared, &mut scratch);
            out.scores.push(PairScore {
                finger: f as u32,
                template: pair.template.clone(),
                parts: v.parts,
                consensus: Some(v.consensus),
            });
            continue;
        }
        q.candidates.push(rescore::Candidate { prepared, location });
        order[f].push(&pair.template);
    }
    if order.iter().all(Vec::is_empty) {
        return Ok(out);
    }
    let scores: Vec<Vec<ScoreParts>> = searcher.rescorer().rescore_until(&queries, cancel).map_err(|e| match e {
        rescore::RescoreError::Stopped(s) => stopped(s, "rescore"),
        e => SearchError::Internal(e.to_string()),
    })?;
    for (f, (refs, sc)) in order.iter().zip(scores).enumerate() {
        for (t, parts) in refs.iter().zip(sc) {
            out.scores.push(PairScore { finger: f as u32, template: (*t).clone(), parts, consensus: None });
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn search_partition(
    searcher: &Searcher,
    snap: &Snapshot,
    si: usize,
    pi: usize,
    q: &[f32],
    labels: &[(String, String)],
    k: usize,
    ef: usize,
    cancel: &Cancel,
) -> Result<Vec<(Src, f32)>, SearchError> {
    let shard = &snap.shards[si];
    let part = &shard.partitions[pi];
    let tombstoned = snap.delta.tombstones.keys().any(|t| shard.by_subject.contains_key(t));
    let keep = |t: u32| -> bool {
        let t = t as usize;
        (!tombstoned || !snap.delta.hides_shard_subject(shard.subject_of(t))) && labels_match_shard(shard, t, labels)
    };
    let filtered = tombstoned || !labels.is_empty();
    let hits: Vec<(u32, f32)> = if part.ids.len() <= searcher.config().exact_below {
        let dim = shard.shard.embedding().dim as usize;
        let mut row = vec![0f32; dim];
        let all = shard.shard.embeddings_f32();
        let mut v: Vec<(Src, f32)> = Vec::with_capacity(part.ids.len());
        for (n, &t) in part.ids.iter().enumerate() {
            if n % 4096 == 0 {
                cancel.check().map_err(|e| stopped(e, "candidates"))?;
            }
            if filtered && !keep(t) {
                continue;
            }
            let r = match all {
                Some(a) => &a[t as usize * dim..(t as usize + 1) * dim],
                None => {
                    shard.shard.embedding_into(t as usize, &mut row);
                    crate::embed::normalise(&mut row);
                    &row[..]
                }
            };
            v.push((Src::Shard(si as u32, t), dot(q, r)));
        }
        top_k_with_ties(&mut v, k);
        return Ok(v);
    } else {
        let ef = searcher.config().ef_for(ef, k, part.ids.len());
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
        .filter(|(_, e)| snap.delta.visible(e) && plan::comparable(p.position, e.template.finger_position))
        .filter(|(_, e)| labels.iter().all(|(k, v)| e.labels.iter().any(|(hk, hv)| hk == k && hv == v)))
        .map(|(i, e)| (Src::Delta(i as u32), dot(&p.embedding, &e.embedding)))
        .collect();
    top_k_with_ties(&mut v, k);
    v
}

/// Keeps the `k` most similar, and any further ones tied with the k-th, so
/// that the caller's cut under the full order (ties broken by subject and
/// ordinal) is exact.
fn top_k_with_ties(v: &mut Vec<(Src, f32)>, k: usize) {
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    if v.len() > k {
        let Some(kth) = k.checked_sub(1).map(|i| v[i].1) else {
            v.clear();
            return;
        };
        let end = v.iter().skip(k).position(|x| x.1.total_cmp(&kth).is_ne()).map_or(v.len(), |i| k + i);
        v.truncate(end);
    }
}

fn subject_of(snap: &Snapshot, src: Src) -> Arc<str> {
    match src {
        Src::Shard(s, t) => snap.shards[s as usize].subject_of(t as usize).into(),
        Src::Delta(i) => Arc::clone(&snap.delta.entries[i as usize].subject),
    }
}

/// The ordinal of `src` among `subject`'s visible templates.
fn ordinal_of(snap: &Snapshot, subject: &str, src: Src) -> u32 {
    subject_templates(snap, subject).iter().position(|(s, _)| *s == src).unwrap_or(usize::MAX) as u32
}

fn source_name(snap: &Snapshot, src: Src) -> String {
    match src {
        Src::Shard(s, _) => snap.shards[s as usize].entry.name.clone(),
        Src::Delta(_) => "delta".into(),
    }
}

pub(super) fn prepared_of(snap: &Snapshot, src: Src) -> Result<(PreparedRef<'_>, Option<Location>), SearchError> {
    match src {
        Src::Shard(s, t) => {
            let ls = &snap.shards[s as usize];
            let p = ls.shard.prepared(t as usize).map_err(|e| SearchError::Internal(e.to_string()))?;
            Ok((p, Some(Location { shard: ls.key, template: t })))
        }
        Src::Delta(i) => Ok((snap.delta.entries[i as usize].prepared.view(), None)),
    }
}

/// Every visible template of `subject` with its finger position, in the
/// canonical order ordinals count in: shards in snapshot order (template
/// order within each), then the delta in log order.
pub(super) fn subject_templates(snap: &Snapshot, subject: &str) -> Vec<(Src, FingerPosition)> {
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

pub(super) fn subject_labels(snap: &Snapshot, subject: &str) -> Vec<(String, String)> {
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

/// A candidate-stage task: finger, part, and (shard, partition) or the delta.
type Task = (usize, usize, Option<(usize, usize)>);
/// A subject's group view and the templates wanted of it.
type Wanted<'a> = (&'a GroupView, Vec<(Src, FingerPosition)>);
