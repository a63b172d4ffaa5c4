//! The cluster map kept in etcd (the `etcd-client` crate over a real etcd
//! server): a full read, then a watch from the next revision, re-read after
//! any outage. While etcd is unreachable the last map stays in force:
//! searches go on, and only what needs etcd (elections, stale marks, moves)
//! waits for it.

use super::ClusterError;
use super::map::{ClusterConfig, ClusterMap, Key, NodeInfo, Placement, StaleMark};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Seconds a node's registration (and its elections) outlive its last keep-alive.
pub const LEASE_TTL_S: i64 = 4;

fn etcd_err(what: &str) -> impl Fn(etcd_client::Error) -> ClusterError + '_ {
    move |e| ClusterError::Etcd(format!("{what}: {e}"))
}

/// A connection to the cluster's keys in etcd.
pub struct Store {
    client: Client,
    prefix: String,
    map: watch::Sender<Arc<ClusterMap>>,
    up: AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to `endpoints` (e.g. `http://127.0.0.1:2379`) for cluster
    /// `cluster`, reads the map once and keeps it current in the background.
    pub async fn connect(endpoints: &[String], cluster: &str) -> Result<Arc<Store>, ClusterError> {
        super::map::valid_name(cluster).map_err(ClusterError::Invalid)?;
        if endpoints.is_empty() {
            return Err(ClusterError::Invalid("no etcd endpoint given".into()));
        }
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        let client = Client::connect(endpoints, Some(opts))
            .await
            .map_err(|e| ClusterError::Etcd(format!("connecting to etcd at {}: {e}", endpoints.join(","))))?;
        let (map, _) = watch::channel(Arc::new(ClusterMap::default()));
        let s = Arc::new(Store { client, prefix: format!("/whorl/{cluster}/"), map, up: AtomicBool::new(false) });
        s.load().await?;
        let w = Arc::clone(&s);
        tokio::spawn(async move { w.watch_forever().await });
        Ok(s)
    }

    /// The full key of `k`.
    pub fn key(&self, k: &Key) -> String {
        format!("{}{}", self.prefix, k.path())
    }

    /// The map as last read.
    pub fn map(&self) -> Arc<ClusterMap> {
        Arc::clone(&self.map.borrow())
    }

    /// Changes of the map.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterMap>> {
        self.map.subscribe()
    }

    /// Whether etcd answered the last time it was asked.
    pub fn reachable(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn client(&self) -> Client {
        self.client.clone()
    }

    /// Reads every key of the cluster and replaces the map; returns the revision.
    async fn load(&self) -> Result<i64, ClusterError> {
        let mut c = self.client();
        let r = c.get(self.prefix.clone(), Some(GetOptions::new().with_prefix())).await;
        let mut r = match r {
            Ok(r) => r,
            Err(e) => {
                self.up.store(false, Ordering::Relaxed);
                return Err(etcd_err("reading the cluster map")(e));
            }
        };
        self.up.store(true, Ordering::Relaxed);
        let rev = r.take_header().map_or(0, |h| h.revision());
        let mut m = ClusterMap { revision: rev, ..ClusterMap::default() };
        for kv in r.kvs() {
            if let Some(rel) = kv.key_str().ok().and_then(|k| k.strip_prefix(&self.prefix)) {
                m.apply(rel, Some(kv.value()));
            }
        }
        self.map.send_replace(Arc::new(m));
        Ok(rev)
    }

    async fn watch_forever(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(200);
        let mut rev = self.map().revision;
        loop {
            match self.watch_from(rev + 1).await {
                Ok(()) => {}
                Err(e) => tracing::debug!("etcd watch ended: {e}"),
            }
            self.up.store(false, Ordering::Relaxed);
            loop {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                match self.load().await {
                    Ok(r) => {
                        rev = r;
                        backoff = Duration::from_millis(200);
                        tracing::info!("etcd reachable again: cluster map re-read at revision {r}");
                        break;
                    }
                    Err(e) => tracing::debug!("{e}"),
                }
            }
        }
    }

    async fn watch_from(&self, rev: i64) -> Result<(), ClusterError> {
        let mut c = self.client();
        let opts = WatchOptions::new().with_prefix().with_start_revision(rev).with_progress_notify();
        let mut stream = c.watch(self.prefix.clone(), Some(opts)).await.map_err(etcd_err("watching"))?;
        while let Some(resp) = stream.message().await.map_err(etcd_err("watch stream"))? {
            if resp.canceled() {
                return Err(ClusterError::Etcd(format!("watch cancelled: {}", resp.cancel_reason())));
            }
            self.up.store(true, Ordering::Relaxed);
            let events = resp.events();
            let revision = resp.header().map_or(0, |h| h.revision());
            if events.is_empty() && revision <= self.map().revision {
                continue;
            }
            self.map.send_modify(|m| {
                let mut next = (**m).clone();
                for ev in events {
                    let Some(kv) = ev.kv() else { continue };
                    let Some(rel) = kv.key_str().ok().and_then(|k| k.strip_prefix(&self.prefix)) else { continue };
                    match ev.event_type() {
                        EventType::Put => next.apply(rel, Some(kv.value())),
                        EventType::Delete => next.apply(rel, None),
                    }
                }
                next.revision = next.revision.max(revision);
                *m = Arc::new(next);
            });
        }
        Err(ClusterError::Etcd("watch stream closed".into()))
    }

    /// Writes the cluster's settings and initial placement, unless the
    /// cluster already exists (then ALREADY: nothing is changed).
    pub async fn init(&self, cfg: &ClusterConfig, placement: &BTreeMap<u32, Placement>) -> Result<bool, ClusterError> {
        cfg.check().map_err(ClusterError::Invalid)?;
        let key = self.key(&Key::Config);
        let mut ops = vec![TxnOp::put(key.clone(), json(cfg)?, None)];
        for (g, p) in placement {
            ops.push(TxnOp::put(self.key(&Key::Placement(*g)), json(p)?, None));
        }
        let txn = Txn::new().when([Compare::create_revision(key, CompareOp::Equal, 0)]).and_then(ops);
        let r = self.client().txn(txn).await.map_err(etcd_err("initialising the cluster"))?;
        Ok(r.succeeded())
    }

    /// Replaces the settings (adding a gallery).
    pub async fn put_config(&self, cfg: &ClusterConfig) -> Result<(), ClusterError> {
        cfg.check().map_err(ClusterError::Invalid)?;
        self.put(&Key::Config, json(cfg)?, None).await
    }

    /// Replaces a group's placement if its epoch is still `expect_epoch`.
    pub async fn move_group(&self, group: u32, expect_epoch: u64, next: &Placement) -> Result<bool, ClusterError> {
        let key = self.key(&Key::Placement(group));
        let cur = self.map().placement.get(&group).cloned();
        let Some(cur) = cur.filter(|c| c.epoch == expect_epoch) else { return Ok(false) };
        let txn = Txn::new().when([Compare::value(key.clone(), CompareOp::Equal, json(&cur)?)]).and_then([TxnOp::put(
            key,
            json(next)?,
            None,
        )]);
        let r = self.client().txn(txn).await.map_err(etcd_err("moving a group"))?;
        Ok(r.succeeded())
    }

    async fn put(&self, k: &Key, value: Vec<u8>, lease: Option<i64>) -> Result<(), ClusterError> {
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        self.client().put(self.key(k), value, opts).await.map_err(etcd_err("writing"))?;
        Ok(())
    }

    /// A new lease of [`LEASE_TTL_S`] seconds.
    pub async fn grant(&self) -> Result<i64, ClusterError> {
        let r = self.client().lease_grant(LEASE_TTL_S, None).await.map_err(etcd_err("granting a lease"))?;
        Ok(r.id())
    }

    /// Registers `node` under `lease`.
    pub async fn register(&self, node: &NodeInfo, lease: i64) -> Result<(), ClusterError> {
        self.put(&Key::Node(node.id.clone()), json(node)?, Some(lease)).await
    }

    /// Keeps `lease` alive until it is lost (returns then).
    pub async fn keep_alive(&self, lease: i64) -> Result<(), ClusterError> {
        let (mut keeper, mut stream) =
            self.client().lease_keep_alive(lease).await.map_err(etcd_err("keeping the lease alive"))?;
        let period = Duration::from_millis((LEASE_TTL_S as u64 * 1000) / 4);
        loop {
            keeper.keep_alive().await.map_err(etcd_err("lease keep-alive"))?;
            match tokio::time::timeout(Duration::from_secs(LEASE_TTL_S as u64), stream.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                Ok(Ok(Some(_))) => return Err(ClusterError::Etcd(format!("lease {lease:x} expired"))),
                Ok(Ok(None)) => return Err(ClusterError::Etcd("lease keep-alive stream closed".into())),
                Ok(Err(e)) => return Err(etcd_err("lease keep-alive")(e)),
                Err(_) => return Err(ClusterError::Etcd("no keep-alive answer".into())),
            }
            tokio::time::sleep(period).await;
        }
    }

    /// Becomes primary of (gallery, group) if nobody is: creates the key
    /// under `lease`. Returns whether this node holds it now.
    pub async fn campaign(&self, gallery: &str, group: u32, node: &str, lease: i64) -> Result<bool, ClusterError> {
        let key = self.key(&Key::Primary(gallery.to_string(), group));
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), node.as_bytes().to_vec(), Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(key, None)]);
        let r = self.client().txn(txn).await.map_err(etcd_err("electing a primary"))?;
        if r.succeeded() {
            return Ok(true);
        }
        let holder = r.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        Ok(holder.as_deref() == Some(node.as_bytes()))
    }

    /// Gives up being primary of (gallery, group), if this node is.
    pub async fn resign(&self, gallery: &str, group: u32, node: &str) -> Result<(), ClusterError> {
        let key = self.key(&Key::Primary(gallery.to_string(), group));
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, node.as_bytes().to_vec())])
            .and_then([TxnOp::delete(key, None)]);
        self.client().txn(txn).await.map_err(etcd_err("resigning"))?;
        Ok(())
    }

    /// Marks `replica` stale for (gallery, group), provided `me` is still
    /// the group's primary (a deposed primary marks nobody). Returns
    /// whether the mark was written.
    pub async fn mark_stale(
        &self,
        gallery: &str,
        group: u32,
        replica: &str,
        me: &str,
        mark: &StaleMark,
    ) -> Result<bool, ClusterError> {
        let primary = self.key(&Key::Primary(gallery.to_string(), group));
        let key = self.key(&Key::Stale(gallery.to_string(), group, replica.to_string()));
        let txn = Txn::new()
            .when([Compare::value(primary, CompareOp::Equal, me.as_bytes().to_vec())])
            .and_then([TxnOp::put(key, json(mark)?, None)]);
        let r = self.client().txn(txn).await.map_err(etcd_err("marking a replica stale"))?;
        Ok(r.succeeded())
    }

    /// Clears `replica`'s stale mark for (gallery, group), provided `me` is
    /// still the primary. Returns whether it was cleared.
    pub async fn clear_stale(&self, gallery: &str, group: u32, replica: &str, me: &str) -> Result<bool, ClusterError> {
        let primary = self.key(&Key::Primary(gallery.to_string(), group));
        let key = self.key(&Key::Stale(gallery.to_string(), group, replica.to_string()));
        let txn = Txn::new()
            .when([Compare::value(primary, CompareOp::Equal, me.as_bytes().to_vec())])
            .and_then([TxnOp::delete(key, None)]);
        let r = self.client().txn(txn).await.map_err(etcd_err("clearing a stale mark"))?;
        if r.succeeded() {
            // Make it visible to this process at once (the watch follows).
            self.map.send_modify(|m| {
                let mut next = (**m).clone();
                next.stale.remove(&(gallery.to_string(), group, replica.to_string()));
                *m = Arc::new(next);
            });
        }
        Ok(r.succeeded())
    }

    /// Marks `node` stale for (gallery, group) unconditionally (a new
    /// replica placed on a group starts stale until it has a copy).
    pub async fn mark_new(&self, gallery: &str, group: u32, node: &str, mark: &StaleMark) -> Result<(), ClusterError> {
        self.put(&Key::Stale(gallery.to_string(), group, node.to_string()), json(mark)?, None).await
    }

    /// Deletes every stale mark of `node` for `group` (it no longer holds it).
    pub async fn forget(&self, group: u32, node: &str) -> Result<(), ClusterError> {
        for (gallery, _) in self.map().galleries() {
            let key = self.key(&Key::Stale(gallery, group, node.to_string()));
            self.client().delete(key, None).await.map_err(etcd_err("deleting a stale mark"))?;
        }
        Ok(())
    }

    /// The etcd client, for the notification store.
    pub fn etcd(&self) -> Client {
        self.client()
    }

    /// The cluster's key prefix (`/whorl/<cluster>/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, ClusterError> {
    serde_json::to_vec(v).map_err(|e| ClusterError::Invalid(e.to_string()))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
