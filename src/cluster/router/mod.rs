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
use crate::search::plan::{self, Pair, TemplateRef};
use crate::search::{SearchConfig, SearchError};
use crate::template::FingerPosition;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tonic::Status;

mod health;
mod phases;

use health::Latencies;
pub use health::{GallerySize, NodeHealth};
pub use phases::{RemotePhases, RoutedQuery};

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

    /// Identifies over one gallery of the cluster.
    pub async fn identify(&self, req: &RoutedQuery<'_>) -> Result<Routed, SearchError> {
        let phases = RemotePhases::new(self, req);
        let plan = plan::Plan {
            model: &self.model,
            k: self.opts.search.candidates_per_finger,
            ef: self.opts.search.ef.max(self.opts.search.candidates_per_finger),
            decision: req.decision,
            want: req.want,
            round2_subjects: self.opts.search.round2_subjects,
            verify_subjects: self.opts.search.verify_subjects,
            cancel: req.cancel.clone(),
        };
        let outcome = plan::identify(&phases, &plan).await?;
        let missing = phases.missing();
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
                        verify: false,
                    });
                }
            }
        }
        let phases = RemotePhases::new(self, req);
        let plan = plan::Plan {
            model: &self.model,
            k: 0,
            ef: 0,
            decision: req.decision,
            want: 1,
            round2_subjects: 0,
            verify_subjects: self.opts.search.verify_subjects,
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
}
