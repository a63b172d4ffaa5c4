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
pub mod replication;
pub mod run;
pub mod service;

use super::ClusterError;
use super::map::{ClusterMap, NodeInfo};
use super::peer::Peers;
use super::store::{self, Store};
use crate::embed::Embedder;
use crate::gallery::{Gallery, GalleryOptions};
use crate::mcc::Matcher;
use crate::rescore::Rescorer;
use crate::search::impostor::ImpostorModel;
use crate::search::{Part, SearchConfig, Searcher};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
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

    /// Registers (etcd), then reconciles with the map for as long as the
    /// process runs. Returns once the first reconciliation has started.
    pub fn start(self: &Arc<Self>) {
        if let Some(s) = self.source.store() {
            let me = Arc::clone(self);
            let s = Arc::clone(s);
            tokio::spawn(async move { me.keep_registered(s).await });
            let me = Arc::clone(self);
            let mut rx = self.source.store().map(|s| s.subscribe());
            tokio::spawn(async move {
                loop {
                    if let Some(rx) = rx.as_mut() {
                        let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
                    }
                    me.changed.notify_one();
                }
            });
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                me.reconcile().await;
                let _ = tokio::time::timeout(Duration::from_secs(1), me.changed.notified()).await;
            }
        });
    }

    /// Registration under a lease, renewed for as long as the process
    /// runs; after losing it (etcd away too long), a new one.
    async fn keep_registered(self: Arc<Self>, store: Arc<Store>) {
        let info = NodeInfo {
            id: self.opts.id.clone(),
            addr: self.opts.advertise.clone(),
            started_ms: store::now_ms(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        loop {
            let lease = match store.grant().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("node {}: {e}; retrying", self.opts.id);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            if let Err(e) = store.register(&info, lease).await {
                tracing::warn!("node {}: registering: {e}; retrying", self.opts.id);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            self.lease.send_replace(lease);
            self.changed.notify_one();
            tracing::info!("node {} registered (lease {lease:x})", self.opts.id);
            if let Err(e) = store.keep_alive(lease).await {
                tracing::warn!("node {}: registration lost ({e}); registering again", self.opts.id);
            }
            self.lease.send_replace(0);
        }
    }

    /// Brings the slots in line with the map.
    pub async fn reconcile(self: &Arc<Self>) {
        let map = self.map();
        let mine: BTreeSet<u32> = map.groups_of(&self.opts.id).into_iter().collect();
        for (name, _) in map.galleries() {
            let Some(g) = self.ensure_gallery(&name, map.groups()) else { continue };
            let mut slots = match g.slots.lock() {
                Ok(s) => s,
                Err(_) => continue,
            };
            for &group in &mine {
                slots.entry(group).or_insert_with(|| {
                    Arc::new(Slot {
                        gallery_name: name.clone(),
                        group,
                        dir: group_dir(&self.opts.data_dir, &name, group),
                        gallery: RwLock::new(None),
                        part: RwLock::new(None),
                        state: Mutex::new(SlotState::Opening),
                        write: tokio::sync::Mutex::new(()),
                        apply: tokio::sync::Mutex::new(()),
                        busy: std::sync::atomic::AtomicBool::new(false),
                        compacting: std::sync::atomic::AtomicBool::new(false),
                    })
                });
            }
            let gone: Vec<u32> = slots.keys().filter(|k| !mine.contains(k)).copied().collect();
            for group in gone {
                if let Some(s) = slots.remove(&group) {
                    self.retire(s);
                }
            }
            drop(slots);
            for s in g.slots() {
                let stale = map.is_stale(&name, s.group, &self.opts.id);
                let state = s.state();
                let needs = match state {
                    SlotState::Opening | SlotState::Failed(_) => true,
                    SlotState::Ready => stale,
                    SlotState::CatchingUp | SlotState::Retired => false,
                };
                if needs && !s.busy.swap(true, std::sync::atomic::Ordering::AcqRel) {
                    let me = Arc::clone(self);
                    let g2 = Arc::clone(&g);
                    tokio::spawn(async move {
                        me.bring_up(&g2, &s).await;
                        s.busy.store(false, std::sync::atomic::Ordering::Release);
                        g2.refresh_parts();
                        me.changed.notify_one();
                    });
                }
            }
            g.refresh_parts();
        }
        self.campaign(&map).await;
    }

    fn ensure_gallery(&self, name: &str, groups: u32) -> Option<Arc<NodeGallery>> {
        if let Some(g) = self.gallery(name) {
            return Some(g);
        }
        let searcher = Searcher::with_parts(
            Vec::new(),
            groups.max(1),
            self.matcher.clone(),
            self.embedder.clone(),
            Arc::clone(&self.rescorer),
            self.model.clone(),
            self.opts.search.clone(),
        )
        .map_err(|e| tracing::error!("gallery {name}: {e}"))
        .ok()?;
        let g = Arc::new(NodeGallery {
            name: name.to_string(),
            searcher: Arc::new(searcher),
            slots: Mutex::new(BTreeMap::new()),
        });
        let mut all = self.galleries.write().ok()?;
        Some(Arc::clone(all.entry(name.to_string()).or_insert(g)))
    }

    /// A group moved away: stop serving it, then delete its folder once
    /// running searches are done with it.
    fn retire(&self, s: Arc<Slot>) {
        s.set_state(SlotState::Retired);
        let id = self.opts.id.clone();
        let store = self.source.store().cloned();
        let primary = self.is_primary(&s.gallery_name, s.group);
        tokio::spawn(async move {
            if let (Some(store), true) = (store, primary) {
                let _ = store.resign(&s.gallery_name, s.group, &id).await;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            s.set_gallery(None);
            let trash = s.dir.with_extension("retired");
            let _ = std::fs::remove_dir_all(&trash);
            if std::fs::rename(&s.dir, &trash).is_ok() {
                let _ = std::fs::remove_dir_all(&trash);
            }
            tracing::info!("node {id}: group {} of {} moved away and dropped", s.group, s.gallery_name);
        });
    }

    /// Opens a slot's gallery (creating an empty one for a new group) and
    /// catches it up; Ready on success, Failed (retried) otherwise.
    async fn bring_up(self: &Arc<Self>, g: &Arc<NodeGallery>, s: &Arc<Slot>) {
        if s.gallery().is_none() {
            s.set_state(SlotState::Opening);
            match self.open_dir(&s.dir).await {
                Ok(gal) => s.set_gallery(Some(gal)),
                Err(e) => {
                    tracing::warn!("{}/{}: {e}", s.gallery_name, s.group);
                    s.set_state(SlotState::Failed(e.to_string()));
                    return;
                }
            }
        }
        s.set_state(SlotState::CatchingUp);
        g.refresh_parts();
        match self.catch_up(s).await {
            Ok(()) => {
                s.set_state(SlotState::Ready);
                tracing::info!("node {}: {}/g{:04} ready", self.opts.id, s.gallery_name, s.group);
            }
            Err(e) => {
                tracing::warn!("node {}: {}/g{:04}: catching up: {e}", self.opts.id, s.gallery_name, s.group);
                s.set_state(SlotState::Failed(e.to_string()));
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }

    /// Opens (creating if absent) the gallery in `dir`, off the async threads.
    pub(crate) async fn open_dir(&self, dir: &Path) -> Result<Arc<Gallery>, ClusterError> {
        let dir = dir.to_path_buf();
        let (embedder, matcher, opts) = (self.embedder.clone(), self.matcher.clone(), self.opts.gallery.clone());
        tokio::task::spawn_blocking(move || {
            if !dir.join(crate::gallery::manifest::FILE).exists() {
                Gallery::create(&dir, &embedder, &matcher).map_err(|e| ClusterError::Local(e.to_string()))?;
            }
            Gallery::open(&dir, embedder, matcher, opts)
                .map(Arc::new)
                .map_err(|e| ClusterError::Local(format!("{}: {e}", dir.display())))
        })
        .await
        .map_err(|e| ClusterError::Local(e.to_string()))?
    }

    /// Campaigns to be primary of the ready, in-sync groups that have none.
    /// The first ready replica in placement order campaigns at once, the
    /// others after a second, so primaries spread as placement orders them.
    async fn campaign(&self, map: &ClusterMap) {
        let (Some(store), lease) = (self.source.store(), self.lease()) else { return };
        if lease == 0 {
            return;
        }
        for g in self.galleries() {
            for s in g.slots() {
                if s.state() != SlotState::Ready || map.is_stale(&g.name, s.group, &self.opts.id) {
                    continue;
                }
                if map.primaries.contains_key(&(g.name.clone(), s.group)) {
                    if let Ok(mut seen) = self.seen_leaderless.lock() {
                        seen.remove(&(g.name.clone(), s.group));
                    }
                    continue;
                }
                let first = map.in_sync(&g.name, s.group).first().map(|n| n.id == self.opts.id).unwrap_or(true);
                if !first && !self.waited(&g.name, s.group) {
                    continue;
                }
                match store.campaign(&g.name, s.group, &self.opts.id, lease).await {
                    Ok(true) => tracing::info!("node {}: primary of {}/g{:04}", self.opts.id, g.name, s.group),
                    Ok(false) => {}
                    Err(e) => tracing::debug!("campaign: {e}"),
                }
            }
        }
    }

    /// Whether a non-preferred replica has waited long enough to campaign
    /// (the second time it sees the group without a primary).
    fn waited(&self, gallery: &str, group: u32) -> bool {
        let Ok(mut s) = self.seen_leaderless.lock() else { return true };
        !s.insert((gallery.to_string(), group))
    }

    /// Compacts a group in the background when its log has grown past the
    /// configured size (each replica compacts its own copy; the log keeps
    /// its last record, so catch-up checks still work).
    pub fn maybe_compact(&self, s: &Arc<Slot>) {
        let Some(g) = s.gallery() else { return };
        let o = &self.opts;
        let over = (o.compact_log_bytes > 0 && g.wal_bytes() >= o.compact_log_bytes)
            || (o.compact_log_records > 0 && g.wal_records() >= o.compact_log_records);
        if !over || s.compacting.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let (s, id) = (Arc::clone(s), self.opts.id.clone());
        tokio::task::spawn_blocking(move || {
            match g.compact() {
                Ok(r) => tracing::info!(
                    "node {id}: {}/g{:04} compacted ({} folded, {} removed)",
                    s.gallery_name,
                    s.group,
                    r.folded_templates,
                    r.removed_templates
                ),
                Err(e) => tracing::error!("node {id}: {}/g{:04}: compaction failed: {e}", s.gallery_name, s.group),
            }
            s.compacting.store(false, std::sync::atomic::Ordering::Release);
        });
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
