//! The cluster map: what every node and router knows of the cluster, as
//! etcd (or a static file) says it.
//!
//! ```text
//! /whorl/<cluster>/config                  {"groups": V, "replicas": R, "write_quorum": W, "galleries": {...}}
//! /whorl/<cluster>/placement/<g>           {"replicas": ["node-a", "node-b"], "epoch": 3}
//! /whorl/<cluster>/nodes/<id>              (under the node's lease) {"addr": ..., "started_ms": ...}
//! /whorl/<cluster>/primary/<gallery>/<g>   (under the primary's lease) "node-a"
//! /whorl/<cluster>/stale/<gallery>/<g>/<id> {"after": 1234, "by": "node-a", "at_ms": ...}
//! /whorl/<cluster>/events/..., /acks/...   hit notifications (see crate::notify)
//! ```
//!
//! * **Placement** lists, per virtual group, the nodes that hold it (R of
//!   them), the same for every gallery. It changes only when an operator
//!   moves a group.
//! * **Registration**: a node is a member while its lease lives.
//! * **Primary**: the replica that orders a group's writes holds an etcd
//!   key under its lease (an election: whoever creates the key first); it
//!   is gone when its holder dies, and another in-sync replica takes it.
//! * **Stale marks**: a replica that missed a write it should have had is
//!   marked stale *before* the write is acknowledged; it serves no reads of
//!   that group and cannot become primary until it has caught up. So every
//!   acknowledged write is on every replica that is not marked stale.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A gallery's settings in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct GallerySpec {
    /// Searched when an Identify names no gallery.
    pub default: bool,
    /// Hits raise notifications.
    pub notify: bool,
}

/// The cluster's settings, fixed at `whorl cluster init` (galleries may be added).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Virtual groups (V).
    pub groups: u32,
    /// Replicas per group (R).
    pub replicas: u32,
    /// Replicas that must hold a write durably before it is acknowledged
    /// (W); 0 means a majority, ⌊R/2⌋ + 1.
    #[serde(default)]
    pub write_quorum: u32,
    /// The galleries by name.
    #[serde(default)]
    pub galleries: BTreeMap<String, GallerySpec>,
}

impl ClusterConfig {
    /// W as it applies: a majority of R unless set; never more than R.
    pub fn quorum(&self) -> u32 {
        let w = if self.write_quorum == 0 { self.replicas / 2 + 1 } else { self.write_quorum };
        w.clamp(1, self.replicas.max(1))
    }

    /// Checks the values.
    pub fn check(&self) -> Result<(), String> {
        if self.groups == 0 || self.groups > crate::groups::MAX_GROUPS {
            return Err(format!("groups must be 1-{}, not {}", crate::groups::MAX_GROUPS, self.groups));
        }
        if self.replicas == 0 || self.replicas > 7 {
            return Err(format!("replicas must be 1-7, not {}", self.replicas));
        }
        if self.write_quorum > self.replicas {
            return Err(format!("write_quorum {} exceeds replicas {}", self.write_quorum, self.replicas));
        }
        for name in self.galleries.keys() {
            valid_name(name)?;
        }
        Ok(())
    }
}

/// Gallery and node names: 1-64 of `[a-z0-9_-]`, starting with a letter or digit.
pub fn valid_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok { Ok(()) } else { Err(format!("'{name}' is not a valid name (1-64 of a-z, 0-9, '-', '_')")) }
}

/// The nodes holding one group, in preference order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// Node ids.
    pub replicas: Vec<String>,
    /// Bumped at every change.
    #[serde(default)]
    pub epoch: u64,
}

/// A node's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct NodeInfo {
    /// Its id (the key's last part).
    #[serde(skip)]
    pub id: String,
    /// Where its node service listens (`http://host:port`).
    pub addr: String,
    /// When it started, ms since the epoch.
    pub started_ms: u64,
    /// whorl version.
    pub version: String,
}

/// A stale mark: a replica that must catch up before it serves a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct StaleMark {
    /// The last sequence number the marker knew the replica to hold.
    pub after: u64,
    /// Who marked it.
    pub by: String,
    /// When, ms since the epoch.
    pub at_ms: u64,
}

/// What is known of the cluster.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterMap {
    /// The settings (None until `whorl cluster init`).
    pub config: Option<ClusterConfig>,
    /// Group → the nodes holding it.
    pub placement: BTreeMap<u32, Placement>,
    /// Registered (live) nodes by id.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// (gallery, group) → the primary's node id.
    pub primaries: BTreeMap<(String, u32), String>,
    /// (gallery, group, node) marked stale.
    pub stale: BTreeMap<(String, u32, String), StaleMark>,
    /// The etcd revision this map reflects (0 for a static map).
    pub revision: i64,
}

/// Where a key of the cluster's prefix belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// The settings.
    Config,
    /// A group's placement.
    Placement(u32),
    /// A node's registration.
    Node(String),
    /// A group's primary.
    Primary(String, u32),
    /// A stale mark.
    Stale(String, u32, String),
    /// Anything else (notifications, future use).
    Other,
}

impl Key {
    /// Parses a key relative to the cluster's prefix.
    pub fn parse(rel: &str) -> Key {
        let parts: Vec<&str> = rel.split('/').collect();
        match parts.as_slice() {
            ["config"] => Key::Config,
            ["placement", g] => g.parse().map_or(Key::Other, Key::Placement),
            ["nodes", id] => Key::Node((*id).to_string()),
            ["primary", gallery, g] => g.parse().map_or(Key::Other, |g| Key::Primary((*gallery).to_string(), g)),
            ["stale", gallery, g, node] => {
                g.parse().map_or(Key::Other, |g| Key::Stale((*gallery).to_string(), g, (*node).to_string()))
            }
            _ => Key::Other,
        }
    }

    /// The key relative to the cluster's prefix.
    pub fn path(&self) -> String {
        match self {
            Key::Config => "config".into(),
            Key::Placement(g) => format!("placement/{g:04}"),
            Key::Node(id) => format!("nodes/{id}"),
            Key::Primary(gallery, g) => format!("primary/{gallery}/{g:04}"),
            Key::Stale(gallery, g, node) => format!("stale/{gallery}/{g:04}/{node}"),
            Key::Other => String::new(),
        }
    }
}

impl ClusterMap {
    /// Applies one key's new value (None: deleted). Values that do not
    /// parse are logged and treated as absent.
    pub fn apply(&mut self, rel: &str, value: Option<&[u8]>) {
        fn parse<T: for<'de> Deserialize<'de>>(rel: &str, v: Option<&[u8]>) -> Option<T> {
            let v = v?;
            match serde_json::from_slice(v) {
                Ok(x) => Some(x),
                Err(e) => {
                    tracing::warn!("cluster map: {rel}: {e}: ignored");
                    None
                }
            }
        }
        match Key::parse(rel) {
            Key::Config => self.config = parse(rel, value),
            Key::Placement(g) => match parse(rel, value) {
                Some(p) => {
                    self.placement.insert(g, p);
                }
                None => {
                    self.placement.remove(&g);
                }
            },
            Key::Node(id) => match parse::<NodeInfo>(rel, value) {
                Some(mut n) => {
                    n.id.clone_from(&id);
                    self.nodes.insert(id, n);
                }
                None => {
                    self.nodes.remove(&id);
                }
            },
            Key::Primary(gallery, g) => match value.and_then(|v| std::str::from_utf8(v).ok()) {
                Some(node) => {
                    self.primaries.insert((gallery, g), node.to_string());
                }
                None => {
                    self.primaries.remove(&(gallery, g));
                }
            },
            Key::Stale(gallery, g, node) => match parse(rel, value) {
                Some(m) => {
                    self.stale.insert((gallery, g, node), m);
                }
                None => {
                    self.stale.remove(&(gallery, g, node));
                }
            },
            Key::Other => {}
        }
    }

    /// V (1 before the cluster is initialised).
    pub fn groups(&self) -> u32 {
        self.config.as_ref().map_or(1, |c| c.groups)
    }

    /// The nodes placed on `group`, in preference order.
    pub fn replicas(&self, group: u32) -> &[String] {
        self.placement.get(&group).map_or(&[], |p| &p.replicas)
    }

    /// Whether `node` is marked stale for (gallery, group).
    pub fn is_stale(&self, gallery: &str, group: u32, node: &str) -> bool {
        self.stale.contains_key(&(gallery.to_string(), group, node.to_string()))
    }

    /// The replicas of (gallery, group) that may serve it, in preference
    /// order: placed there, registered, not marked stale. (Whether each has
    /// finished opening it is the router's to check.)
    pub fn in_sync(&self, gallery: &str, group: u32) -> Vec<&NodeInfo> {
        self.replicas(group)
            .iter()
            .filter(|n| !self.is_stale(gallery, group, n))
            .filter_map(|n| self.nodes.get(n))
            .collect()
    }

    /// The primary of (gallery, group), when elected and registered.
    pub fn primary(&self, gallery: &str, group: u32) -> Option<&NodeInfo> {
        self.primaries.get(&(gallery.to_string(), group)).and_then(|n| self.nodes.get(n))
    }

    /// The groups placed on `node`.
    pub fn groups_of(&self, node: &str) -> Vec<u32> {
        self.placement.iter().filter(|(_, p)| p.replicas.iter().any(|r| r == node)).map(|(g, _)| *g).collect()
    }

    /// The galleries, with their settings.
    pub fn galleries(&self) -> Vec<(String, GallerySpec)> {
        self.config
            .as_ref()
            .map(|c| c.galleries.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

/// A cluster described by a file instead of etcd (small deployments):
///
/// ```toml
/// groups = 8
/// replicas = 2
/// [galleries.criminal]
/// default = true
/// [[nodes]]
/// id = "a"
/// addr = "http://10.0.0.1:50051"
/// [[nodes]]
/// id = "b"
/// addr = "http://10.0.0.2:50051"
/// # [[placement]]  group = 0, replicas = ["a", "b"]   (omitted: rendezvous over the nodes)
/// ```
///
/// Without etcd there are no elections and no stale marks: a group's first
/// replica is its primary, every write needs every replica, and a replica
/// catches up from the first other one that answers when it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticMap {
    /// V.
    pub groups: u32,
    /// R.
    pub replicas: u32,
    /// Galleries.
    #[serde(default)]
    pub galleries: BTreeMap<String, GallerySpec>,
    /// Nodes.
    pub nodes: Vec<StaticNode>,
    /// Placement (rendezvous when empty).
    #[serde(default)]
    pub placement: Vec<StaticPlacement>,
}

/// A node of a static map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticNode {
    /// Id.
    pub id: String,
    /// Node service address.
    pub addr: String,
}

/// A group's replicas in a static map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticPlacement {
    /// The group.
    pub group: u32,
    /// Its nodes, primary first.
    pub replicas: Vec<String>,
}

impl StaticMap {
    /// Reads and checks a map file.
    pub fn load(path: &std::path::Path) -> Result<ClusterMap, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let m: StaticMap = toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
        m.into_map()
    }

    /// The map it describes.
    pub fn into_map(self) -> Result<ClusterMap, String> {
        let cfg = ClusterConfig {
            groups: self.groups,
            replicas: self.replicas,
            write_quorum: self.replicas,
            galleries: self.galleries,
        };
        cfg.check()?;
        let ids: BTreeSet<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        if ids.len() != self.nodes.len() {
            return Err("a node id is listed twice".into());
        }
        for n in &self.nodes {
            valid_name(&n.id)?;
        }
        let placement = if self.placement.is_empty() {
            rendezvous(&self.nodes.iter().map(|n| n.id.clone()).collect::<Vec<_>>(), cfg.groups, cfg.replicas)
        } else {
            self.placement.into_iter().map(|p| (p.group, Placement { replicas: p.replicas, epoch: 1 })).collect()
        };
        check_placement(&placement, &ids, &cfg)?;
        let nodes = self
            .nodes
            .into_iter()
            .map(|n| (n.id.clone(), NodeInfo { id: n.id, addr: n.addr, started_ms: 0, version: String::new() }))
            .collect();
        Ok(ClusterMap { config: Some(cfg), placement, nodes, ..ClusterMap::default() })
    }
}

/// Highest-random-weight (rendezvous) placement (Thaler and Ravishankar,
/// 1998): group `g` goes to the `r` nodes with the highest SHA-256 weight of
/// "node/g". Adding or removing a node moves only the groups it gains or
/// loses.
pub fn rendezvous(nodes: &[String], groups: u32, r: u32) -> BTreeMap<u32, Placement> {
    let mut out = BTreeMap::new();
    for g in 0..groups {
        let mut w: Vec<(u64, &String)> =
            nodes.iter().map(|n| (crate::groups::key_of(&format!("{n}/{g}")), n)).collect();
        w.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let replicas = w.into_iter().take(r as usize).map(|(_, n)| n.clone()).collect();
        out.insert(g, Placement { replicas, epoch: 1 });
    }
    out
}

/// The replicas of every group under a static map, as the set of distinct
/// nodes per group (checks placements name known nodes, R each, distinct).
pub fn check_placement(
    placement: &BTreeMap<u32, Placement>,
    nodes: &BTreeSet<String>,
    cfg: &ClusterConfig,
) -> Result<(), String> {
    for g in 0..cfg.groups {
        let p = placement.get(&g).ok_or_else(|| format!("group {g} has no placement"))?;
        let distinct: BTreeSet<&String> = p.replicas.iter().collect();
        if distinct.len() != p.replicas.len() {
            return Err(format!("group {g}: a node is listed twice"));
        }
        if let Some(n) = p.replicas.iter().find(|n| !nodes.contains(*n)) {
            return Err(format!("group {g}: unknown node '{n}'"));
        }
        if p.replicas.is_empty() {
            return Err(format!("group {g} has no replica"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_the_map_follows_them() {
        for k in [
            Key::Config,
            Key::Placement(7),
            Key::Node("a".into()),
            Key::Primary("crim".into(), 3),
            Key::Stale("imm".into(), 12, "b".into()),
        ] {
            assert_eq!(Key::parse(&k.path()), k);
        }
        let mut m = ClusterMap::default();
        m.apply("config", Some(br#"{"groups": 4, "replicas": 2, "galleries": {"crim": {"default": true}}}"#));
        m.apply("placement/0001", Some(br#"{"replicas": ["a", "b"], "epoch": 2}"#));
        m.apply("nodes/a", Some(br#"{"addr": "http://a:1"}"#));
        m.apply("nodes/b", Some(br#"{"addr": "http://b:1"}"#));
        m.apply("primary/crim/0001", Some(b"b"));
        assert_eq!(m.groups(), 4);
        assert_eq!(m.config.as_ref().map(ClusterConfig::quorum), Some(2));
        assert_eq!(m.in_sync("crim", 1).iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(m.primary("crim", 1).map(|n| n.addr.as_str()), Some("http://b:1"));
        m.apply("stale/crim/0001/a", Some(br#"{"after": 5, "by": "b"}"#));
        assert_eq!(m.in_sync("crim", 1).iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["b"]);
        m.apply("nodes/b", None);
        assert!(m.in_sync("crim", 1).is_empty() && m.primary("crim", 1).is_none());
        m.apply("placement/0002", Some(b"not json"));
        assert!(!m.placement.contains_key(&2));
        assert_eq!(m.groups_of("a"), vec![1]);
    }

    #[test]
    fn rendezvous_spreads_groups_and_moves_few() {
        let nodes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let p = rendezvous(&nodes, 64, 2);
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        for pl in p.values() {
            assert_eq!(pl.replicas.len(), 2);
            assert_ne!(pl.replicas[0], pl.replicas[1]);
            for r in &pl.replicas {
                *per.entry(r.as_str()).or_default() += 1;
            }
        }
        assert!(per.values().all(|&n| (30..=56).contains(&n)), "{per:?}");
        let more: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let q = rendezvous(&more, 64, 2);
        let changed = (0..64).filter(|g| p[g].replicas.iter().any(|n| !q[g].replicas.contains(n))).count();
        assert!(changed < 64, "adding a node reshuffled everything");
        let cfg = ClusterConfig { groups: 64, replicas: 2, write_quorum: 0, galleries: BTreeMap::new() };
        check_placement(&q, &more.iter().cloned().collect(), &cfg).unwrap();
        assert!(valid_name("immigration").is_ok() && valid_name("../x").is_err() && valid_name("").is_err());
    }
}
