//! What operators do to a cluster: create it, look at it, move groups.

use super::ClusterError;
use super::map::{ClusterConfig, ClusterMap, GallerySpec, Placement, StaleMark, rendezvous};
use super::pb;
use super::peer::Peers;
use super::store::{Store, now_ms};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Creates the cluster's settings and initial placement (rendezvous over
/// `nodes`). Refused if the cluster exists.
pub async fn init(
    store: &Store,
    cfg: &ClusterConfig,
    nodes: &[String],
) -> Result<BTreeMap<u32, Placement>, ClusterError> {
    cfg.check().map_err(ClusterError::Invalid)?;
    for n in nodes {
        super::map::valid_name(n).map_err(ClusterError::Invalid)?;
    }
    if nodes.len() < cfg.replicas as usize {
        return Err(ClusterError::Invalid(format!("{} nodes cannot hold {} replicas each", nodes.len(), cfg.replicas)));
    }
    let placement = rendezvous(nodes, cfg.groups, cfg.replicas);
    if !store.init(cfg, &placement).await? {
        return Err(ClusterError::Invalid("the cluster already exists (its settings are in etcd)".into()));
    }
    Ok(placement)
}

/// Adds (or changes) a gallery of the cluster.
pub async fn add_gallery(store: &Store, name: &str, spec: GallerySpec) -> Result<(), ClusterError> {
    super::map::valid_name(name).map_err(ClusterError::Invalid)?;
    let map = store.map();
    let mut cfg = map.config.clone().ok_or_else(|| ClusterError::Invalid("the cluster is not initialised".into()))?;
    cfg.galleries.insert(name.to_string(), spec);
    store.put_config(&cfg).await
}

/// One node as `cluster status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Its id.
    pub id: String,
    /// Its address.
    pub addr: String,
    /// Registered (lease alive).
    pub registered: bool,
    /// Answered now.
    pub up: bool,
    /// Its groups' states.
    pub groups: Vec<GroupStatus>,
    /// Backend.
    pub backend: String,
    /// Why it did not answer.
    pub error: String,
}

/// One group replica as `cluster status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    /// Gallery.
    pub gallery: String,
    /// Group.
    pub group: u32,
    /// State on its node.
    pub state: String,
    /// Subjects.
    pub subjects: u64,
    /// Last sequence applied.
    pub last_sequence: u64,
    /// Records behind the group's primary.
    pub lag: u64,
    /// Marked stale.
    pub stale: bool,
    /// This replica is the primary.
    pub primary: bool,
}

/// The whole cluster at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// V, R, W.
    pub groups: u32,
    /// R.
    pub replicas: u32,
    /// W.
    pub write_quorum: u32,
    /// Galleries.
    pub galleries: Vec<String>,
    /// Nodes.
    pub nodes: Vec<NodeStatus>,
    /// Groups of some gallery without a ready, in-sync replica.
    pub unavailable: Vec<(String, u32)>,
    /// Groups of some gallery with fewer ready, in-sync replicas than R.
    pub degraded: Vec<(String, u32)>,
    /// Groups of some gallery without a primary.
    pub leaderless: Vec<(String, u32)>,
    /// Whether etcd answered.
    pub etcd_reachable: bool,
}

/// Polls every node of `map` and summarises.
pub async fn status(map: &ClusterMap, peers: &Peers, etcd_reachable: bool) -> ClusterStatus {
    let polls = map.nodes.values().map(|n| async move {
        let r = match peers.node(&n.addr) {
            Ok(mut c) => {
                let mut req = tonic::Request::new(pb::GroupsRequest {});
                req.set_timeout(Duration::from_secs(2));
                c.groups(req).await.map(|r| r.into_inner()).map_err(|s| s.message().to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        (n.id.clone(), n.addr.clone(), r)
    });
    let got = futures::future::join_all(polls).await;
    let mut last_seq: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for (_, _, r) in &got {
        if let Ok(g) = r {
            for s in &g.groups {
                let e = last_seq.entry((s.gallery.clone(), s.group)).or_default();
                *e = (*e).max(s.last_sequence);
            }
        }
    }
    let mut nodes = Vec::new();
    let mut ready: BTreeMap<(String, u32), u32> = BTreeMap::new();
    for (id, addr, r) in got {
        let (groups, backend, error, up) = match r {
            Ok(g) => {
                let groups = g
                    .groups
                    .iter()
                    .map(|s| {
                        let key = (s.gallery.clone(), s.group);
                        let stale = map.is_stale(&s.gallery, s.group, &id);
                        if s.state == "ready" && !stale {
                            *ready.entry(key.clone()).or_default() += 1;
                        }
                        GroupStatus {
                            gallery: s.gallery.clone(),
                            group: s.group,
                            state: s.state.clone(),
                            subjects: s.subjects,
                            last_sequence: s.last_sequence,
                            lag: last_seq.get(&key).copied().unwrap_or(0).saturating_sub(s.last_sequence),
                            stale,
                            primary: map.primaries.get(&key).is_some_and(|p| *p == id),
                        }
                    })
                    .collect();
                (groups, g.backend, String::new(), true)
            }
            Err(e) => (Vec::new(), String::new(), e, false),
        };
        nodes.push(NodeStatus { id, addr, registered: true, up, groups, backend, error });
    }
    // Nodes placed but not registered.
    for p in map.placement.values() {
        for n in &p.replicas {
            if !map.nodes.contains_key(n) && !nodes.iter().any(|x| x.id == *n) {
                nodes.push(NodeStatus {
                    id: n.clone(),
                    addr: String::new(),
                    registered: false,
                    up: false,
                    groups: Vec::new(),
                    backend: String::new(),
                    error: "not registered".into(),
                });
            }
        }
    }
    let cfg = map.config.clone();
    let replicas = cfg.as_ref().map_or(0, |c| c.replicas);
    let mut unavailable = Vec::new();
    let mut degraded = Vec::new();
    let mut leaderless = Vec::new();
    for (g, _) in map.galleries() {
        for group in 0..map.groups() {
            let n = ready.get(&(g.clone(), group)).copied().unwrap_or(0);
            if n == 0 {
                unavailable.push((g.clone(), group));
            } else if n < map.replicas(group).len() as u32 {
                degraded.push((g.clone(), group));
            }
            if !map.primaries.contains_key(&(g.clone(), group)) {
                leaderless.push((g.clone(), group));
            }
        }
    }
    ClusterStatus {
        groups: map.groups(),
        replicas,
        write_quorum: cfg.as_ref().map_or(0, ClusterConfig::quorum),
        galleries: map.galleries().into_iter().map(|(g, _)| g).collect(),
        nodes,
        unavailable,
        degraded,
        leaderless,
        etcd_reachable,
    }
}

/// Moves `group` from node `from` to node `to`: `to` is placed on it as a
/// stale replica (it copies and catches up from the primary), and once it
/// is ready in every gallery, `from` is taken off (it drops its copy).
pub async fn move_group(
    store: &Store,
    peers: &Peers,
    group: u32,
    from: &str,
    to: &str,
    wait: Duration,
) -> Result<(), ClusterError> {
    let map = store.map();
    let p = map.placement.get(&group).cloned().ok_or_else(|| ClusterError::Invalid(format!("no group {group}")))?;
    if !p.replicas.iter().any(|n| n == from) {
        return Err(ClusterError::Invalid(format!("group {group} is not on {from} (it is on {:?})", p.replicas)));
    }
    let to_info =
        map.nodes.get(to).cloned().ok_or_else(|| ClusterError::Invalid(format!("node {to} is not registered")))?;
    if !p.replicas.iter().any(|n| n == to) {
        for (g, _) in map.galleries() {
            store.mark_new(&g, group, to, &StaleMark { after: 0, by: "move".into(), at_ms: now_ms() }).await?;
        }
        let mut next = p.clone();
        next.replicas.push(to.to_string());
        next.epoch += 1;
        if !store.move_group(group, p.epoch, &next).await? {
            return Err(ClusterError::Invalid(format!("group {group}'s placement changed meanwhile: try again")));
        }
    }
    // Wait for `to` to hold the group ready and in sync in every gallery.
    let t0 = Instant::now();
    loop {
        let map = store.map();
        let stale = map.galleries().iter().any(|(g, _)| map.is_stale(g, group, to));
        let ready = match peers.node(&to_info.addr) {
            Ok(mut c) => c.groups(pb::GroupsRequest {}).await.ok().is_some_and(|r| {
                let r = r.into_inner();
                map.galleries()
                    .iter()
                    .all(|(g, _)| r.groups.iter().any(|s| s.gallery == *g && s.group == group && s.state == "ready"))
            }),
            Err(_) => false,
        };
        if ready && !stale {
            break;
        }
        if t0.elapsed() > wait {
            return Err(ClusterError::Unavailable(format!(
                "{to} did not catch up group {group} within {wait:?} (it stays placed there; run the move again to finish)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let map = store.map();
    let cur = map.placement.get(&group).cloned().unwrap_or_default();
    let mut next = cur.clone();
    next.replicas.retain(|n| n != from);
    next.epoch += 1;
    if !store.move_group(group, cur.epoch, &next).await? {
        return Err(ClusterError::Invalid(format!("group {group}'s placement changed meanwhile: try again")));
    }
    for (g, _) in map.galleries() {
        if map.primaries.get(&(g.clone(), group)).is_some_and(|n| n == from) {
            store.resign(&g, group, from).await?;
        }
    }
    store.forget(group, from).await?;
    Ok(())
}

/// Moves every group off `node`, each to the node rendezvous hashing over
/// the other registered nodes prefers among those not holding it.
pub async fn drain(
    store: &Store,
    peers: &Peers,
    node: &str,
    wait: Duration,
) -> Result<Vec<(u32, String)>, ClusterError> {
    let map = store.map();
    let others: Vec<String> = map.nodes.keys().filter(|n| *n != node).cloned().collect();
    let mut moved = Vec::new();
    for g in map.groups_of(node) {
        let holders = map.replicas(g).to_vec();
        let mut w: Vec<(u64, &String)> = others
            .iter()
            .filter(|n| !holders.contains(n))
            .map(|n| (crate::groups::key_of(&format!("{n}/{g}")), n))
            .collect();
        w.sort_by_key(|x| std::cmp::Reverse(x.0));
        let Some((_, to)) = w.first() else {
            return Err(ClusterError::Unavailable(format!("no node left to take group {g} from {node}")));
        };
        move_group(store, peers, g, node, to, wait).await?;
        moved.push((g, (*to).clone()));
    }
    Ok(moved)
}
