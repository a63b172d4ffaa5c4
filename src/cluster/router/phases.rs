//! One Identify over the cluster's nodes: [`RemotePhases`] runs the plan's
//! phases on remote nodes (phase 1 on one ready replica of every group,
//! hedged and retried; re-scoring on the node that answered phase 1), and
//! converts the nodes' protobuf answers into the plan's types.

use super::{Router, node_err};
use crate::cluster::pb;
use crate::search::SearchError;
use crate::search::plan::{
    Cand, Found, GroupSize, Pair, PairScore, Phases, Scored, SubjectInfo, TemplateInfo, TemplateRef,
};
use crate::server::pb as api;
use crate::template::FingerPosition;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What an Identify (or Verify) through the router asks.
#[derive(Debug, Clone)]
pub struct RoutedQuery<'a> {
    /// The gallery.
    pub gallery: &'a str,
    /// The probe as the client sent it (the nodes parse it as the router did).
    pub templates: &'a [api::FingerTemplate],
    /// The probe fingers' positions, as parsed.
    pub positions: Vec<FingerPosition>,
    /// Label filter.
    pub labels: Vec<(String, String)>,
    /// Decision rule.
    pub decision: crate::search::Decision,
    /// Candidates in the reply.
    pub want: usize,
    /// Accept a partial answer.
    pub allow_partial: bool,
    /// Give up after this.
    pub deadline: Option<Instant>,
    /// Stop (deadline passed, caller gone).
    pub cancel: crate::cancel::Cancel,
}

/// The phases of one Identify over the cluster's nodes.
pub struct RemotePhases<'a> {
    router: &'a Router,
    q: &'a RoutedQuery<'a>,
    /// The node that answered phase 1 for each group.
    chosen: Mutex<HashMap<u32, (String, String)>>,
    missing: Mutex<Vec<u32>>,
}

fn timeout_of(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)))
}

fn found_from_pb(r: pb::CandidatesResponse) -> Found {
    Found {
        lists: r
            .fingers
            .into_iter()
            .map(|l| {
                l.cands
                    .into_iter()
                    .map(|c| Cand {
                        similarity: c.similarity,
                        group: c.group,
                        template: TemplateRef { subject: c.subject.into(), ordinal: c.ordinal },
                    })
                    .collect()
            })
            .collect(),
        groups: r
            .groups
            .into_iter()
            .map(|g| GroupSize { group: g.group, subjects: g.subjects, generation: g.generation })
            .collect(),
    }
}

fn scored_from_pb(r: pb::ScoreResponse) -> Scored {
    Scored {
        subjects: r
            .subjects
            .into_iter()
            .map(|s| SubjectInfo {
                subject: s.subject.into(),
                group: s.group,
                labels: s.labels.into_iter().map(|l| (l.key, l.value)).collect(),
                templates: s
                    .templates
                    .into_iter()
                    .map(|t| TemplateInfo { position: FingerPosition(t.position.min(255) as u8), source: t.source })
                    .collect(),
            })
            .collect(),
        scores: r
            .scores
            .into_iter()
            .map(|p| PairScore {
                finger: p.finger,
                template: TemplateRef { subject: p.subject.into(), ordinal: p.ordinal },
                parts: crate::mcc::ScoreParts { sum: p.sum, n_p: p.n_p, n_r: p.n_r },
                consensus: p.verified.then_some(crate::mcc::Consensus { accepted: p.accepted, n_a: p.n_a, n_b: p.n_b }),
            })
            .collect(),
    }
}

type Attempt<'a> = BoxFuture<'a, Result<Vec<(String, String, Found)>, SearchError>>;

impl<'a> RemotePhases<'a> {
    /// The phases of `q` through `router`.
    pub(super) fn new(router: &'a Router, q: &'a RoutedQuery<'a>) -> RemotePhases<'a> {
        RemotePhases { router, q, chosen: Mutex::new(HashMap::new()), missing: Mutex::new(Vec::new()) }
    }

    /// The groups no replica answered for.
    pub(super) fn missing(&self) -> Vec<u32> {
        self.missing.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Phase 1 of `groups` on one node.
    async fn call(
        &self,
        id: String,
        addr: String,
        groups: Vec<u32>,
        k: usize,
        ef: usize,
    ) -> Result<Found, SearchError> {
        let (id, addr) = (id.as_str(), addr.as_str());
        let t0 = Instant::now();
        let mut c = self.router.peers.node(addr).map_err(|e| SearchError::Internal(e.to_string()))?;
        let mut req = tonic::Request::new(pb::CandidatesRequest {
            gallery: self.q.gallery.to_string(),
            groups,
            templates: self.q.templates.to_vec(),
            label_filter: self.q.labels.iter().map(|(k, v)| pb::Label { key: k.clone(), value: v.clone() }).collect(),
            k: k as u32,
            ef: ef as u32,
        });
        if let Some(t) = timeout_of(self.q.deadline) {
            req.set_timeout(t);
        }
        let r = c.candidates(req).await.map_err(|s| {
            if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled) {
                self.router.suspect(id);
            }
            match s.code() {
                tonic::Code::InvalidArgument => SearchError::Invalid(s.message().to_string()),
                tonic::Code::DeadlineExceeded => SearchError::Deadline(format!("on node {id}")),
                _ => node_err(id, &s),
            }
        })?;
        self.router.record_latency(id, t0.elapsed());
        Ok(found_from_pb(r.into_inner()))
    }

    /// Covers `groups` with one replica each, avoiding `tried`, hedging slow
    /// nodes and retrying failed ones.
    fn cover<'b>(&'b self, groups: Vec<u32>, tried: HashSet<String>, k: usize, ef: usize, depth: usize) -> Attempt<'b> {
        Box::pin(async move {
            let turn = self.router.turn.fetch_add(1, Ordering::Relaxed) as usize;
            let mut by_node: BTreeMap<(String, String), Vec<u32>> = BTreeMap::new();
            for g in groups {
                let cands: Vec<(String, String)> =
                    self.router.readable(self.q.gallery, g).into_iter().filter(|(id, _)| !tried.contains(id)).collect();
                if cands.is_empty() {
                    // No replica left to ask: the group is missing from the answer.
                    if let Ok(mut m) = self.missing.lock()
                        && !m.contains(&g)
                    {
                        m.push(g);
                    }
                    continue;
                }
                let pick = cands[(turn + g as usize) % cands.len()].clone();
                by_node.entry(pick).or_default().push(g);
            }
            let attempts =
                by_node.into_iter().map(|((id, addr), gs)| self.attempt(id, addr, gs, tried.clone(), k, ef, depth));
            let results = futures::future::join_all(attempts).await;
            let mut out = Vec::new();
            for r in results {
                out.extend(r?);
            }
            Ok(out)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn attempt<'b>(
        &'b self,
        id: String,
        addr: String,
        groups: Vec<u32>,
        mut tried: HashSet<String>,
        k: usize,
        ef: usize,
        depth: usize,
    ) -> Attempt<'b> {
        Box::pin(async move {
            tried.insert(id.clone());
            let call = self.call(id.clone(), addr.clone(), groups.clone(), k, ef);
            tokio::pin!(call);
            let delay = self.router.hedge_delay(&id);
            let retry =
                |e: &SearchError| matches!(e, SearchError::Internal(_) | SearchError::Unavailable(_)) && depth < 3;
            tokio::select! {
                r = &mut call => {
                    return match r {
                        Ok(f) => Ok(vec![(id, addr, f)]),
                        Err(e) if retry(&e) => {
                            self.router.counters.retries.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!("phase 1 on {id} failed ({e}); retrying elsewhere");
                            self.cover(groups, tried, k, ef, depth + 1).await.map_err(|_| e)
                        }
                        Err(e) => Err(e),
                    };
                }
                _ = tokio::time::sleep(delay) => {}
            }
            // Slow: hedge to other replicas, take whichever covers the groups first.
            let others: bool =
                groups.iter().all(|g| self.router.readable(self.q.gallery, *g).iter().any(|(n, _)| !tried.contains(n)));
            if !others {
                return call.await.map(|f| vec![(id, addr, f)]);
            }
            self.router.counters.hedges.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("phase 1 on {id} slower than {delay:?}: hedging {} groups", groups.len());
            let alt = self.cover(groups, tried, k, ef, depth + 1);
            tokio::pin!(alt);
            tokio::select! {
                r = &mut call => match r {
                    Ok(f) => Ok(vec![(id, addr, f)]),
                    Err(_) => alt.await,
                },
                r = &mut alt => match r {
                    Ok(v) => Ok(v),
                    Err(_) => call.await.map(|f| vec![(id, addr, f)]),
                },
            }
        })
    }

    /// Scores `pairs` on node `id`; when it fails, each group's pairs go to
    /// another ready replica of that group.
    fn score_on<'b>(
        &'b self,
        id: String,
        addr: String,
        pairs: Vec<Pair>,
        mut failed: HashSet<String>,
    ) -> BoxFuture<'b, Result<Scored, SearchError>> {
        Box::pin(async move {
            let err = match self.score_call(&id, &addr, &pairs).await {
                Ok(s) => return Ok(s),
                Err(e @ (SearchError::Deadline(_) | SearchError::Invalid(_))) => return Err(e),
                Err(e) => e,
            };
            self.router.counters.retries.fetch_add(1, Ordering::Relaxed);
            failed.insert(id);
            if failed.len() > 3 {
                return Err(err);
            }
            let mut by_node: BTreeMap<(String, String), Vec<Pair>> = BTreeMap::new();
            for p in pairs {
                let alt = self
                    .router
                    .readable(self.q.gallery, p.group)
                    .into_iter()
                    .find(|(n, _)| !failed.contains(n))
                    .ok_or_else(|| err.clone())?;
                by_node.entry(alt).or_default().push(p);
            }
            self.score_all(by_node, &failed).await
        })
    }

    /// Scores each node's pairs (in parallel, each with [`Self::score_on`]'s
    /// retries, `failed` excluded) and joins the answers.
    async fn score_all(
        &self,
        by_node: BTreeMap<(String, String), Vec<Pair>>,
        failed: &HashSet<String>,
    ) -> Result<Scored, SearchError> {
        let calls = by_node.into_iter().map(|((id, addr), ps)| self.score_on(id, addr, ps, failed.clone()));
        let mut out = Scored::default();
        for r in futures::future::join_all(calls).await {
            let s = r?;
            out.subjects.extend(s.subjects);
            out.scores.extend(s.scores);
        }
        Ok(out)
    }

    async fn score_call(&self, id: &str, addr: &str, pairs: &[Pair]) -> Result<Scored, SearchError> {
        let mut c = self.router.peers.node(addr).map_err(|e| SearchError::Internal(e.to_string()))?;
        let mut req = tonic::Request::new(pb::ScoreRequest {
            gallery: self.q.gallery.to_string(),
            templates: self.q.templates.to_vec(),
            pairs: pairs
                .iter()
                .map(|p| pb::Pair {
                    finger: p.finger,
                    group: p.group,
                    subject: p.template.subject.to_string(),
                    ordinal: p.template.ordinal,
                    verify: p.verify,
                })
                .collect(),
        });
        if let Some(t) = timeout_of(self.q.deadline) {
            req.set_timeout(t);
        }
        match c.score(req).await {
            Ok(r) => Ok(scored_from_pb(r.into_inner())),
            Err(s) if s.code() == tonic::Code::DeadlineExceeded => {
                Err(SearchError::Deadline(format!("re-scoring on node {id}")))
            }
            Err(s) => {
                if s.code() == tonic::Code::Unavailable {
                    self.router.suspect(id);
                }
                Err(node_err(id, &s))
            }
        }
    }
}

impl Phases for RemotePhases<'_> {
    fn positions(&self) -> Vec<FingerPosition> {
        self.q.positions.clone()
    }

    async fn candidates(&self, k: usize, ef: usize) -> Result<Found, SearchError> {
        let groups: Vec<u32> = (0..self.router.map().groups()).collect();
        let got = self.cover(groups, HashSet::new(), k, ef, 0).await?;
        let missing = self.missing.lock().map(|m| m.clone()).unwrap_or_default();
        if !missing.is_empty() && !self.q.allow_partial {
            return Err(SearchError::Unavailable(format!(
                "{} of {} groups of gallery '{}' have no ready replica (groups {:?}); ask with allow_partial for a partial answer",
                missing.len(),
                self.router.map().groups(),
                self.q.gallery,
                missing
            )));
        }
        let mut parts = Vec::with_capacity(got.len());
        if let Ok(mut chosen) = self.chosen.lock() {
            for (id, addr, f) in got {
                for g in &f.groups {
                    chosen.insert(g.group, (id.clone(), addr.clone()));
                }
                parts.push(f);
            }
        }
        Ok(Found::merge(parts, self.q.positions.len(), k))
    }

    async fn score(&self, pairs: Vec<Pair>) -> Result<Scored, SearchError> {
        let chosen = self.chosen.lock().map(|c| c.clone()).unwrap_or_default();
        let mut by_node: BTreeMap<(String, String), Vec<Pair>> = BTreeMap::new();
        for p in pairs {
            let node = match chosen.get(&p.group) {
                Some(n) => n.clone(),
                None => self.router.readable(self.q.gallery, p.group).into_iter().next().ok_or_else(|| {
                    SearchError::Unavailable(format!("no ready replica of {}/g{:04}", self.q.gallery, p.group))
                })?,
            };
            by_node.entry(node).or_default().push(p);
        }
        self.score_all(by_node, &HashSet::new()).await
    }
}
