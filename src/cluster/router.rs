//! The router: `whorl route`. Stateless: everything it knows comes from
//! the map (etcd or a static file) and from polling the nodes' `Groups`
//! twice a second (which groups each node has ready, their sizes).
//!
//! An Identify runs [`plan::identify`] with [`RemotePhases`]: phase 1 goes
//! to one ready, in-sync replica of every group (spread by rotation), one
//! request per node for all the groups it was given. A request slower than
//! that node's recent 95th percentile (at least `hedge_min`) is hedged: its
//! groups go to other replicas too, and whichever covers them first wins.
//! A failed request is retried on other replicas at once. Re-scoring goes
//! to the node that answered phase 1 for the group (another replica if it
//! fails). Groups with no live replica make the answer partial (the share
//! of subjects searched is reported) or, unless the caller allowed that,
//! UNAVAILABLE.

use super::map::ClusterMap;
use super::node::MapSource;
use super::pb;
use super::peer::Peers;
use crate::search::impostor::ImpostorModel;
use crate::search::plan::{
    self, Cand, Found, GroupSize, Pair, PairScore, Phases, Scored, SubjectInfo, TemplateInfo, TemplateRef,
};
use crate::search::{SearchConfig, SearchError};
use crate::server::pb as api;
use crate::template::FingerPosition;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tonic::Status;

/// How a router behaves.
#[derive(Debug, Clone)]
pub struct RouterOptions {
    /// Pipeline settings (k, ef, default FPIR, round 2).
    pub search: SearchConfig,
    /// Shortest hedging delay.
    pub hedge_min: Duration,
    /// Longest hedging delay.
    pub hedge_max: Duration,
    /// How often the nodes are polled.
    pub poll: Duration,
}

impl Default for RouterOptions {
    fn default() -> RouterOptions {
        RouterOptions {
            search: SearchConfig::default(),
            hedge_min: Duration::from_millis(20),
            hedge_max: Duration::from_millis(1000),
            poll: Duration::from_millis(500),
        }
    }
}

/// Recent latencies of one node's phase-1 answers.
#[derive(Debug, Default)]
struct Latencies {
    ring: Vec<Duration>,
    at: usize,
}

impl Latencies {
    const N: usize = 256;

    fn record(&mut self, d: Duration) {
        if self.ring.len() < Self::N {
            self.ring.push(d);
        } else {
            self.ring[self.at] = d;
            self.at = (self.at + 1) % Self::N;
        }
    }

    fn p95(&self) -> Option<Duration> {
        if self.ring.len() < 20 {
            return None;
        }
        let mut v = self.ring.clone();
        v.sort();
        Some(v[(v.len() * 95) / 100])
    }
}

/// What the router knows of one node.
#[derive(Debug, Clone, Default)]
pub struct NodeHealth {
    /// Its address.
    pub addr: String,
    /// Whether its last poll answered.
    pub up: bool,
    /// Its groups as it reported them.
    pub groups: Vec<pb::GroupState>,
    /// Its re-scoring backend.
    pub backend: String,
    /// The last poll's error, if it failed.
    pub error: String,
    /// When it last answered.
    pub last_ok: Option<Instant>,
}

/// Counters a router exports.
#[derive(Debug, Default)]
pub struct RouterCounters {
    /// Phase-1 requests hedged to another replica.
    pub hedges: AtomicU64,
    /// Requests retried on another replica after a failure.
    pub retries: AtomicU64,
    /// Answers marked partial.
    pub partial: AtomicU64,
}

/// The router.
pub struct Router {
    source: MapSource,
    peers: Peers,
    model: ImpostorModel,
    opts: RouterOptions,
    health: RwLock<HashMap<String, NodeHealth>>,
    latency: Mutex<HashMap<String, Latencies>>,
    turn: AtomicU64,
    /// Counters.
    pub counters: RouterCounters,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

/// An Identify's answer for one gallery, with what the cluster could search.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The plan's answer.
    pub outcome: plan::Outcome,
    /// Share of the gallery's subjects searched (1 unless partial).
    pub searched_fraction: f64,
    /// Groups that could not be searched.
    pub missing: Vec<u32>,
}

fn node_err(node: &str, s: &Status) -> SearchError {
    SearchError::Internal(format!("node {node}: {}", s.message()))
}

impl Router {
    /// A router over `source`; polls the nodes in the background.
    pub fn start(source: MapSource, peers: Peers, model: ImpostorModel, opts: RouterOptions) -> Arc<Router> {
        let r = Arc::new(Router {
            source,
            peers,
            model,
            opts,
            health: RwLock::new(HashMap::new()),
            latency: Mutex::new(HashMap::new()),
            turn: AtomicU64::new(0),
            counters: RouterCounters::default(),
        });
        let me = Arc::clone(&r);
        tokio::spawn(async move {
            loop {
                me.poll().await;
                tokio::time::sleep(me.opts.poll).await;
            }
        });
        r
    }

    /// The map now.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.source.map()
    }

    /// The map source.
    pub fn source(&self) -> &MapSource {
        &self.source
    }

    /// The peers (node clients).
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// The settings.
    pub fn options(&self) -> &RouterOptions {
        &self.opts
    }

    /// The impostor model.
    pub fn model(&self) -> &ImpostorModel {
        &self.model
    }

    /// What is known of every node.
    pub fn health(&self) -> HashMap<String, NodeHealth> {
        self.health.read().map(|h| h.clone()).unwrap_or_default()
    }

    /// Polls every registered node once.
    pub async fn poll(&self) {
        let map = self.map();
        let polls = map.nodes.values().map(|n| {
            let (id, addr) = (n.id.clone(), n.addr.clone());
            async move {
                let r = match self.peers.node(&addr) {
                    Ok(mut c) => {
                        let mut req = tonic::Request::new(pb::GroupsRequest {});
                        req.set_timeout(Duration::from_millis(900));
                        c.groups(req).await.map(|r| r.into_inner()).map_err(|s| s.message().to_string())
                    }
                    Err(e) => Err(e.to_string()),
                };
                (id, addr, r)
            }
        });
        let results = futures::future::join_all(polls).await;
        let mut h = match self.health.write() {
            Ok(h) => h,
            Err(_) => return,
        };
        h.retain(|k, _| map.nodes.contains_key(k));
        for (id, addr, r) in results {
            let e = h.entry(id).or_default();
            e.addr = addr;
            match r {
                Ok(g) => {
                    e.up = true;
                    e.groups = g.groups;
                    e.backend = g.backend;
                    e.error.clear();
                    e.last_ok = Some(Instant::now());
                }
                Err(err) => {
                    if e.up {
                        self.peers.reset(&e.addr);
                    }
                    e.up = false;
                    e.error = err;
                }
            }
        }
    }

    /// Marks a node down after a failed call (until its next good poll).
    fn suspect(&self, node: &str) {
        if let Ok(mut h) = self.health.write()
            && let Some(e) = h.get_mut(node)
        {
            e.up = false;
            self.peers.reset(&e.addr);
        }
    }

    /// The replicas that may serve reads of (gallery, group) now: placed,
    /// registered, not stale, answering, reporting it ready.
    pub fn readable(&self, gallery: &str, group: u32) -> Vec<(String, String)> {
        let map = self.map();
        let health = self.health.read();
        let Ok(health) = health else { return Vec::new() };
        map.in_sync(gallery, group)
            .into_iter()
            .filter(|n| {
                health.get(&n.id).is_some_and(|h| {
                    h.up && h.groups.iter().any(|g| g.gallery == gallery && g.group == group && g.state == "ready")
                })
            })
            .map(|n| (n.id.clone(), n.addr.clone()))
            .collect()
    }

    /// The last known subject count of (gallery, group).
    fn known_subjects(&self, gallery: &str, group: u32) -> Option<u64> {
        let health = self.health.read().ok()?;
        health
            .values()
            .flat_map(|h| &h.groups)
            .filter(|g| g.gallery == gallery && g.group == group)
            .map(|g| g.subjects)
            .max()
    }

    fn hedge_delay(&self, node: &str) -> Duration {
        let p95 = self.latency.lock().ok().and_then(|l| l.get(node).and_then(Latencies::p95));
        p95.map_or(Duration::from_millis(100), |d| d + d / 2).clamp(self.opts.hedge_min, self.opts.hedge_max)
    }

    fn record_latency(&self, node: &str, d: Duration) {
        if let Ok(mut l) = self.latency.lock() {
            l.entry(node.to_string()).or_default().record(d);
        }
    }

    /// Identifies over one gallery of the cluster.
    pub async fn identify(&self, req: &RoutedQuery<'_>) -> Result<Routed, SearchError> {
        let phases =
            RemotePhases { router: self, q: req, chosen: Mutex::new(HashMap::new()), missing: Mutex::new(Vec::new()) };
        let plan = plan::Plan {
            model: &self.model,
            k: self.opts.search.candidates_per_finger,
            ef: self.opts.search.ef.max(self.opts.search.candidates_per_finger),
            decision: req.decision,
            want: req.want,
            round2_subjects: self.opts.search.round2_subjects,
            cancel: req.cancel.clone(),
        };
        let outcome = plan::identify(&phases, &plan).await?;
        let missing = phases.missing.lock().map(|m| m.clone()).unwrap_or_default();
        let searched: u64 = outcome.groups.iter().map(|g| g.subjects).sum();
        let fraction = if missing.is_empty() {
            1.0
        } else {
            self.counters.partial.fetch_add(1, Ordering::Relaxed);
            let lost: u64 = missing.iter().map(|g| self.known_subjects(req.gallery, *g).unwrap_or(0)).sum();
            let groups = self.map().groups().max(1);
            if searched + lost == 0 {
                1.0 - missing.len() as f64 / f64::from(groups)
            } else {
                searched as f64 / (searched + lost) as f64
            }
        };
        Ok(Routed { outcome, searched_fraction: fraction, missing })
    }

    /// 1:1 against `subject` of `gallery`.
    pub async fn verify(&self, req: &RoutedQuery<'_>, subject: &str) -> Result<plan::Outcome, SearchError> {
        let group = crate::groups::group_of(subject, self.map().groups());
        let look =
            self.lookup(req.gallery, subject, false).await.map_err(|s| SearchError::Internal(s.message().into()))?;
        if !look.found {
            return Err(SearchError::NotFound(format!("subject '{subject}'")));
        }
        let subject: Arc<str> = subject.into();
        let mut pairs = Vec::new();
        for (f, p) in req.positions.iter().enumerate() {
            for (o, t) in look.fingers.iter().enumerate() {
                if plan::comparable(*p, FingerPosition(t.finger_position as u8)) {
                    pairs.push(Pair {
                        finger: f as u32,
                        group,
                        template: TemplateRef { subject: Arc::clone(&subject), ordinal: o as u32 },
                    });
                }
            }
        }
        let phases =
            RemotePhases { router: self, q: req, chosen: Mutex::new(HashMap::new()), missing: Mutex::new(Vec::new()) };
        let plan = plan::Plan {
            model: &self.model,
            k: 0,
            ef: 0,
            decision: req.decision,
            want: 1,
            round2_subjects: 0,
            cancel: req.cancel.clone(),
        };
        plan::score_subject(&phases, &plan, pairs).await
    }

    /// A subject's labels and templates, from a ready replica of its group.
    pub async fn lookup(&self, gallery: &str, subject: &str, templates: bool) -> Result<pb::LookupResponse, Status> {
        let group = crate::groups::group_of(subject, self.map().groups());
        let mut last = Status::unavailable(format!("no replica of {gallery}/g{group:04} is ready"));
        for (id, addr) in self.readable(gallery, group) {
            let req = pb::LookupRequest {
                gallery: gallery.to_string(),
                group,
                subject: subject.to_string(),
                include_templates: templates,
            };
            match self.peers.node(&addr) {
                Ok(mut c) => match c.lookup(req).await {
                    Ok(r) => return Ok(r.into_inner()),
                    Err(s) => {
                        self.suspect(&id);
                        last = s;
                    }
                },
                Err(e) => last = Status::unavailable(e.to_string()),
            }
        }
        Err(last)
    }

    /// Sends a write to the primary of the subject's group; follows a
    /// change of primary (re-reading the map) for up to `wait`.
    pub async fn write(
        &self,
        gallery: &str,
        subject: &str,
        op: pb::write_request::Op,
        wait: Duration,
    ) -> Result<pb::WriteResponse, Status> {
        let map = self.map();
        if !map.galleries().iter().any(|(n, _)| n == gallery) {
            return Err(Status::not_found(format!("no gallery '{gallery}' in the cluster")));
        }
        let group = crate::groups::group_of(subject, map.groups());
        let t0 = Instant::now();
        let mut last = Status::unavailable(format!("{gallery}/g{group:04} has no primary"));
        loop {
            let target = match &self.source {
                MapSource::Etcd(s) => s.map().primary(gallery, group).map(|n| (n.id.clone(), n.addr.clone())),
                MapSource::Static(m) => {
                    m.replicas(group).first().and_then(|n| m.nodes.get(n)).map(|n| (n.id.clone(), n.addr.clone()))
                }
            };
            if let Some((id, addr)) = target {
                let req = pb::WriteRequest { gallery: gallery.to_string(), group, op: Some(op.clone()) };
                match self.peers.node(&addr) {
                    Ok(mut c) => match c.write(req).await {
                        Ok(r) => return Ok(r.into_inner()),
                        Err(s) => {
                            let retry = matches!(
                                s.code(),
                                tonic::Code::Unavailable | tonic::Code::FailedPrecondition | tonic::Code::Unknown
                            ) && !s.message().contains("only ");
                            if !retry {
                                return Err(s);
                            }
                            tracing::debug!("write to {id}: {}; retrying", s.message());
                            if s.code() == tonic::Code::Unavailable {
                                self.suspect(&id);
                            }
                            last = s;
                        }
                    },
                    Err(e) => last = Status::unavailable(e.to_string()),
                }
            }
            if t0.elapsed() >= wait {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Loads or unloads a shard on every replica of (gallery, group).
    pub async fn shard(
        &self,
        gallery: &str,
        group: u32,
        action: &str,
        name: &str,
    ) -> Result<pb::ShardResponse, Status> {
        let map = self.map();
        let replicas: Vec<(String, String)> =
            map.replicas(group).iter().filter_map(|n| map.nodes.get(n).map(|i| (n.clone(), i.addr.clone()))).collect();
        if replicas.len() != map.replicas(group).len() {
            return Err(Status::unavailable(format!(
                "a replica of g{group:04} is not registered: try when all are up"
            )));
        }
        let mut out = None;
        for (id, addr) in replicas {
            let req = pb::ShardRequest {
                gallery: gallery.to_string(),
                group,
                action: action.to_string(),
                name: name.to_string(),
            };
            let mut c = self.peers.node(&addr).map_err(|e| Status::unavailable(e.to_string()))?;
            let r = c.shard(req).await.map_err(|s| Status::new(s.code(), format!("node {id}: {}", s.message())))?;
            out = Some(r.into_inner());
        }
        out.ok_or_else(|| Status::not_found(format!("g{group:04} has no replica")))
    }

    /// Per gallery: subjects, templates, shards, generation summed over its
    /// groups (each from one replica that has it ready), and how many
    /// groups have a ready replica.
    pub fn gallery_sizes(&self) -> BTreeMap<String, GallerySize> {
        let map = self.map();
        let health = self.health();
        let mut out: BTreeMap<String, GallerySize> = BTreeMap::new();
        for (name, spec) in map.galleries() {
            let mut s =
                GallerySize { default: spec.default, notify: spec.notify, groups: map.groups(), ..Default::default() };
            for g in 0..map.groups() {
                let best = health
                    .values()
                    .filter(|h| h.up)
                    .flat_map(|h| &h.groups)
                    .filter(|x| x.gallery == name && x.group == g && x.state == "ready")
                    .max_by_key(|x| x.last_sequence);
                if let Some(x) = best {
                    s.ready_groups += 1;
                    s.subjects += x.subjects;
                    s.templates += x.templates;
                    s.shards += x.shards;
                    s.generation += x.generation;
                    s.wal_bytes += x.wal_bytes;
                    s.delta_templates += x.delta_templates;
                    s.tombstones += x.tombstones;
                    s.shard_list.extend(x.shards_list());
                }
            }
            out.insert(name, s);
        }
        out
    }
}

/// A gallery's size across the cluster.
#[derive(Debug, Clone, Default)]
pub struct GallerySize {
    /// In the default set.
    pub default: bool,
    /// Raises notifications.
    pub notify: bool,
    /// V.
    pub groups: u32,
    /// Groups with a ready replica.
    pub ready_groups: u32,
    /// Subjects.
    pub subjects: u64,
    /// Templates.
    pub templates: u64,
    /// Shards.
    pub shards: u32,
    /// Sum of group generations.
    pub generation: u64,
    /// Log bytes.
    pub wal_bytes: u64,
    /// Templates enrolled since compaction.
    pub delta_templates: u64,
    /// Deleted subjects not yet compacted.
    pub tombstones: u64,
    /// Every shard.
    pub shard_list: Vec<api::Shard>,
}

impl pb::GroupState {
    fn shards_list(&self) -> Vec<api::Shard> {
        self.shard_list.clone()
    }
}

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
            })
            .collect(),
    }
}

type Attempt<'a> = BoxFuture<'a, Result<Vec<(String, String, Found)>, SearchError>>;

impl RemotePhases<'_> {
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
            let calls = by_node.into_iter().map(|((i, a), ps)| self.score_on(i, a, ps, failed.clone()));
            let mut out = Scored::default();
            for r in futures::future::join_all(calls).await {
                let s = r?;
                out.subjects.extend(s.subjects);
                out.scores.extend(s.scores);
            }
            Ok(out)
        })
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
        let calls = by_node.into_iter().map(|((id, addr), ps)| self.score_on(id, addr, ps, HashSet::new()));
        let mut out = Scored::default();
        for r in futures::future::join_all(calls).await {
            let s = r?;
            out.subjects.extend(s.subjects);
            out.scores.extend(s.scores);
        }
        Ok(out)
    }
}
