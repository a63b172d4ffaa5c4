//! A node's background work: registration under a lease, the reconciler
//! that follows the map (opening, catching up and retiring groups), the
//! campaigns for primaryship, and compaction of a group's log.

use super::{Node, NodeGallery, Slot, SlotState, group_dir};
use crate::cluster::ClusterError;
use crate::cluster::map::{ClusterMap, NodeInfo};
use crate::cluster::store::{self, Store};
use crate::gallery::Gallery;
use crate::search::Searcher;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

impl Node {
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
}
