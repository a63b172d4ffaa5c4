//! A cluster node: `whorl serve --cluster`.
//!
//! The node holds, for every gallery of the cluster, a gallery folder per
//! virtual group placed on it (`DATA/<gallery>/g0042/`), each in a
//! [`Slot`] that goes `Opening → CatchingUp → Ready`. Only ready groups
//! are searched (they are the parts of the gallery's [`Searcher`]) and
//! reported as such; the router sends a group's reads only to replicas
//! that report it ready and are not marked stale.
//!
//! A reconciler follows the map (etcd's watch, or a static file): it
//! opens groups newly placed here, catches up groups marked stale, retires
//! groups moved away, and campaigns to be primary of ready groups that
//! have none. The services are in [`service`]; writes, replication and
//! catch-up in [`replication`].
mod catchup;
mod reconcile;
pub mod replication;
pub mod run;
pub mod service;

use super::ClusterError;
use super::map::ClusterMap;
use super::peer::Peers;
use super::store::Store;
use crate::embed::Embedder;
use crate::gallery::{Gallery, GalleryOptions};
use crate::mcc::Matcher;
use crate::rescore::Rescorer;
use crate::search::impostor::ImpostorModel;
use crate::search::{Part, SearchConfig, Searcher};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;

/// Where the map comes from.
#[derive(Clone)]
pub enum MapSource {
    /// etcd, kept current by a watch.
    Etcd(Arc<Store>),
    /// A static file (no elections, no stale marks: writes need every replica).
    Static(Arc<ClusterMap>),
}

impl MapSource {
    /// The map now.
    pub fn map(&self) -> Arc<ClusterMap> {
        match self {
            MapSource::Etcd(s) => s.map(),
            MapSource::Static(m) => Arc::clone(m),
        }
    }

    /// The etcd store, when there is one.
    pub fn store(&self) -> Option<&Arc<Store>> {
        match self {
            MapSource::Etcd(s) => Some(s),
            MapSource::Static(_) => None,
        }
    }
}

/// How a node runs.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Its id (unique in the cluster; the etcd key and placement name).
    pub id: String,
    /// Folder holding `<gallery>/g<NNNN>/`.
    pub data_dir: PathBuf,
    /// The address other nodes and routers reach its node service at.
    pub advertise: String,
    /// Pipeline settings.
    pub search: SearchConfig,
    /// How group galleries are opened.
    pub gallery: GalleryOptions,
    /// Compact a group once its log passes this many bytes (0: never).
    pub compact_log_bytes: u64,
    /// ... or holds this many records (0: never).
    pub compact_log_records: u64,
}

/// A group's state on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    /// Being opened.
    Opening,
    /// Catching up from the primary (not searched).
    CatchingUp,
    /// Searched and replicated to.
    Ready,
    /// Failed to open or catch up (retried).
    Failed(String),
    /// Moved away: being dropped.
    Retired,
}

impl SlotState {
    /// Its name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            SlotState::Opening => "opening",
            SlotState::CatchingUp => "catching-up",
            SlotState::Ready => "ready",
            SlotState::Failed(_) => "failed",
            SlotState::Retired => "retired",
        }
    }
}

/// One group of one gallery on this node.
pub struct Slot {
    /// The gallery's name.
    pub gallery_name: String,
    /// The group.
    pub group: u32,
    /// Its folder.
    pub dir: PathBuf,
    gallery: RwLock<Option<Arc<Gallery>>>,
    part: RwLock<Option<Arc<Part>>>,
    state: Mutex<SlotState>,
    /// Held by the primary while it logs and replicates one write, and by a
    /// rejoining replica's catch-up at its end: writes are ordered.
    pub write: tokio::sync::Mutex<()>,
    /// Held while a record (replicated or caught up) is applied: applies are ordered.
    pub apply: tokio::sync::Mutex<()>,
    /// A catch-up is running.
    busy: std::sync::atomic::AtomicBool,
    /// A compaction is running.
    compacting: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("gallery", &self.gallery_name).field("group", &self.group).finish()
    }
}

impl Slot {
    /// The open gallery, if any.
    pub fn gallery(&self) -> Option<Arc<Gallery>> {
        self.gallery.read().ok().and_then(|g| g.clone())
    }

    /// Its search part, if open.
    pub fn part(&self) -> Option<Arc<Part>> {
        self.part.read().ok().and_then(|g| g.clone())
    }

    /// The state now.
    pub fn state(&self) -> SlotState {
        self.state.lock().map(|s| s.clone()).unwrap_or(SlotState::Failed("lock poisoned".into()))
    }

    fn set_state(&self, s: SlotState) {
        if let Ok(mut x) = self.state.lock() {
            *x = s;
        }
    }

    /// Installs an open gallery (or closes it with `None`).
    fn set_gallery(&self, g: Option<Arc<Gallery>>) {
        let part = g.as_ref().map(|g| Part::new(self.group, Arc::clone(g)));
        if let Ok(mut x) = self.gallery.write() {
            *x = g;
        }
        if let Ok(mut x) = self.part.write() {
            *x = part;
        }
    }
}

/// One gallery on this node: its slots and its searcher over the ready ones.
pub struct NodeGallery {
    /// Its name.
    pub name: String,
    /// Searches the ready slots.
    pub searcher: Arc<Searcher>,
    slots: Mutex<BTreeMap<u32, Arc<Slot>>>,
}

impl NodeGallery {
    /// The slot of `group`, if placed here.
    pub fn slot(&self, group: u32) -> Option<Arc<Slot>> {
        self.slots.lock().ok().and_then(|s| s.get(&group).cloned())
    }

    /// Every slot.
    pub fn slots(&self) -> Vec<Arc<Slot>> {
        self.slots.lock().map(|s| s.values().cloned().collect()).unwrap_or_default()
    }

    /// Makes the searcher's parts the ready slots.
    fn refresh_parts(&self) {
        let parts: Vec<Arc<Part>> =
            self.slots().iter().filter(|s| s.state() == SlotState::Ready).filter_map(|s| s.part()).collect();
        if let Err(e) = self.searcher.set_parts(parts) {
            tracing::error!("gallery {}: {e}", self.name);
        }
    }
}

/// A running node.
pub struct Node {
    /// Its options.
    pub opts: NodeOptions,
    /// The map.
    pub source: MapSource,
    /// Other nodes.
    pub peers: Peers,
    matcher: Matcher,
    embedder: Embedder,
    rescorer: Arc<dyn Rescorer>,
    model: ImpostorModel,
    galleries: RwLock<BTreeMap<String, Arc<NodeGallery>>>,
    /// The lease this node's registration and elections live under (0: none).
    lease: watch::Sender<i64>,
    changed: tokio::sync::Notify,
    seen_leaderless: Mutex<BTreeSet<(String, u32)>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.opts.id).finish_non_exhaustive()
    }
}

impl Node {
    /// A node (nothing opened yet: [`Node::start`] does that).
    pub fn new(
        opts: NodeOptions,
        source: MapSource,
        peers: Peers,
        rescorer: Arc<dyn Rescorer>,
        model: ImpostorModel,
    ) -> Result<Arc<Node>, ClusterError> {
        super::map::valid_name(&opts.id).map_err(ClusterError::Invalid)?;
        std::fs::create_dir_all(&opts.data_dir)
            .map_err(|e| ClusterError::Local(format!("{}: {e}", opts.data_dir.display())))?;
        let (lease, _) = watch::channel(0);
        Ok(Arc::new(Node {
            opts,
            source,
            peers,
            matcher: Matcher::default(),
            embedder: Embedder::default(),
            rescorer,
            model,
            galleries: RwLock::new(BTreeMap::new()),
            lease,
            changed: tokio::sync::Notify::new(),
            seen_leaderless: Mutex::new(BTreeSet::new()),
        }))
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.opts.id
    }

    /// The map now.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.source.map()
    }

    /// A gallery held here.
    pub fn gallery(&self, name: &str) -> Option<Arc<NodeGallery>> {
        self.galleries.read().ok().and_then(|g| g.get(name).cloned())
    }

    /// Every gallery held here.
    pub fn galleries(&self) -> Vec<Arc<NodeGallery>> {
        self.galleries.read().map(|g| g.values().cloned().collect()).unwrap_or_default()
    }

    /// The slot of (gallery, group).
    pub fn slot(&self, gallery: &str, group: u32) -> Option<Arc<Slot>> {
        self.gallery(gallery).and_then(|g| g.slot(group))
    }

    /// The lease now (0: not registered).
    pub fn lease(&self) -> i64 {
        *self.lease.borrow()
    }

    /// The re-scoring backend.
    pub fn backend(&self) -> String {
        self.rescorer.backend().to_string()
    }

    /// Whether this node is the primary of (gallery, group) now.
    pub fn is_primary(&self, gallery: &str, group: u32) -> bool {
        match &self.source {
            MapSource::Etcd(s) => {
                s.map().primaries.get(&(gallery.to_string(), group)).is_some_and(|n| *n == self.opts.id)
            }
            // Static map: the first replica of the placement is primary.
            MapSource::Static(m) => m.replicas(group).first().is_some_and(|n| *n == self.opts.id),
        }
    }

    /// Retires every group and stops campaigning (graceful shutdown):
    /// resigns this node's primaries so others take over at once.
    pub async fn leave(&self) {
        if let Some(store) = self.source.store() {
            for g in self.galleries() {
                for s in g.slots() {
                    if self.is_primary(&g.name, s.group) {
                        let _ = store.resign(&g.name, s.group, &self.opts.id).await;
                    }
                }
            }
        }
    }
}

/// A group's folder on a node.
pub fn group_dir(data: &Path, gallery: &str, group: u32) -> PathBuf {
    data.join(gallery).join(crate::groups::folder(group))
}
