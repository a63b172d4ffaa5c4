//! The `[cluster]` (a node) and `[router]` sections of the configuration.
//!
//! ```toml
//! [cluster]                         # present: `whorl serve` runs as a cluster node
//! name = "whorl"                    # the cluster (its etcd prefix: /whorl/<name>/)
//! etcd = ["http://127.0.0.1:2379"]  # or map = "cluster.toml" (a static map, no etcd)
//! node_id = "node-a"                # default: WHORL_NODE_ID, else the host name
//! advertise = "http://10.0.0.5:50051" # how routers and peers reach this node (default: from listen)
//! data_dir = "/srv/whorl"           # holds <gallery>/g<NNNN>/ per group placed here
//! token_file = "/etc/whorl/cluster-token" # the internal token nodes and routers share
//!
//! [router]                          # `whorl route`
//! name = "whorl"
//! etcd = ["http://127.0.0.1:2379"]  # or map = "cluster.toml"
//! token_file = "/etc/whorl/cluster-token"
//! hedge_min_ms = 20                 # hedge a node no sooner than this...
//! hedge_max_ms = 1000               # ...nor later (between: 1.5 × its recent p95)
//! write_wait_ms = 5000              # how long a write waits for a group's primary
//! ```

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `[cluster]`: this server is a node of a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// The cluster's name.
    pub name: String,
    /// etcd client URLs.
    pub etcd: Vec<String>,
    /// A static map file instead of etcd.
    pub map: Option<PathBuf>,
    /// This node's id.
    pub node_id: Option<String>,
    /// The address others reach this node at.
    pub advertise: Option<String>,
    /// Where group folders live.
    pub data_dir: PathBuf,
    /// The internal token (a file holding it).
    pub token_file: Option<PathBuf>,
}

/// `[router]`: this process routes for a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterSection {
    /// The cluster's name.
    pub name: String,
    /// etcd client URLs.
    pub etcd: Vec<String>,
    /// A static map file instead of etcd.
    pub map: Option<PathBuf>,
    /// The internal token (a file holding it).
    pub token_file: Option<PathBuf>,
    /// Shortest hedging delay, ms.
    pub hedge_min_ms: u64,
    /// Longest hedging delay, ms.
    pub hedge_max_ms: u64,
    /// How long a write waits for its group's primary, ms.
    pub write_wait_ms: u64,
}

impl Default for RouterSection {
    fn default() -> RouterSection {
        RouterSection {
            name: String::new(),
            etcd: Vec::new(),
            map: None,
            token_file: None,
            hedge_min_ms: 20,
            hedge_max_ms: 1000,
            write_wait_ms: 5000,
        }
    }
}

/// Reads an internal token file (trimmed; at least 16 characters).
pub fn read_token(path: Option<&Path>) -> Result<Option<String>, String> {
    let Some(p) = path else { return Ok(None) };
    let t = std::fs::read_to_string(p).map_err(|e| format!("token_file {}: {e}", p.display()))?;
    let t = t.trim().to_string();
    if t.len() < 16 {
        return Err(format!("token_file {}: the token is shorter than 16 characters", p.display()));
    }
    Ok(Some(t))
}

impl ClusterSection {
    /// Checks the values.
    pub fn check(&self) -> Result<(), String> {
        if self.etcd.is_empty() == self.map.is_none() {
            return Err("cluster: give exactly one of etcd (URLs) and map (a static map file)".into());
        }
        if self.etcd.is_empty() {
            return Ok(());
        }
        super::map::valid_name(&self.name).map_err(|e| format!("cluster.name: {e}"))?;
        if self.data_dir.as_os_str().is_empty() {
            return Err("cluster.data_dir is not set".into());
        }
        Ok(())
    }

    /// This node's id: the setting, `WHORL_NODE_ID`, or the host name.
    pub fn node_id(&self) -> Result<String, String> {
        let id = self
            .node_id
            .clone()
            .or_else(|| std::env::var("WHORL_NODE_ID").ok())
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
            .ok_or("cluster.node_id is not set (nor WHORL_NODE_ID)")?;
        super::map::valid_name(&id).map_err(|e| format!("node id: {e}"))?;
        Ok(id)
    }
}

impl RouterSection {
    /// Checks the values.
    pub fn check(&self) -> Result<(), String> {
        if self.etcd.is_empty() == self.map.is_none() {
            return Err("router: give exactly one of etcd (URLs) and map (a static map file)".into());
        }
        if !self.etcd.is_empty() {
            super::map::valid_name(&self.name).map_err(|e| format!("router.name: {e}"))?;
        }
        if self.hedge_min_ms == 0 || self.hedge_min_ms > self.hedge_max_ms {
            return Err("router: hedge_min_ms must be positive and at most hedge_max_ms".into());
        }
        Ok(())
    }
}
