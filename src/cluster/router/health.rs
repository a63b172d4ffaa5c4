//! What the router knows of the nodes: their health and groups from
//! polling `Groups`, their recent phase-1 latencies (the hedging delay),
//! the replicas that may serve a read, and each gallery's size.

use super::Router;
use crate::cluster::pb;
use crate::server::pb as api;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Recent latencies of one node's phase-1 answers.
#[derive(Debug, Default)]
pub(super) struct Latencies {
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

impl Router {
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
    pub(super) fn suspect(&self, node: &str) {
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
    pub(super) fn known_subjects(&self, gallery: &str, group: u32) -> Option<u64> {
        let health = self.health.read().ok()?;
        health
            .values()
            .flat_map(|h| &h.groups)
            .filter(|g| g.gallery == gallery && g.group == group)
            .map(|g| g.subjects)
            .max()
    }

    pub(super) fn hedge_delay(&self, node: &str) -> Duration {
        let p95 = self.latency.lock().ok().and_then(|l| l.get(node).and_then(Latencies::p95));
        p95.map_or(Duration::from_millis(100), |d| d + d / 2).clamp(self.opts.hedge_min, self.opts.hedge_max)
    }

    pub(super) fn record_latency(&self, node: &str, d: Duration) {
        if let Ok(mut l) = self.latency.lock() {
            l.entry(node.to_string()).or_default().record(d);
        }
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
