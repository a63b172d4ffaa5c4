//! The event store of a cluster: etcd, shared by every router, so a router
//! restarted or killed loses nothing and any router serves any subscriber.
//!
//! ```text
//! <prefix>events/<gallery>/next          the next sequence number
//! <prefix>events/<gallery>/e/<seq:020>   an event (JSON), under a retention lease
//! <prefix>events/<gallery>/tx/<key>      transaction de-duplication → sequence, same lease
//! <prefix>acks/<subscriber>/<gallery>    acknowledged sequence
//! ```
//!
//! An append is one transaction per gallery, conditional on the counter's
//! revision and on the de-duplication keys being absent (retried on
//! conflict), so concurrent routers never share a number and a retried
//! transaction never raises a second event. Retention is etcd's: events
//! live under leases of the retention period, one lease per tenth of it
//! (an event lives between 90% and 100% of the retention).

use super::{Backlog, EventStore, HitEvent, NewEvent, NotifyError, dedup_key, now_ms};
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, WatchOptions,
};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Events kept in etcd.
pub struct EtcdStore {
    client: Client,
    prefix: String,
    retention: Duration,
    lease: Mutex<Option<(Instant, i64)>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> NotifyError {
    NotifyError::Store(format!("etcd: {e}"))
}

impl EtcdStore {
    /// A store under `prefix` (e.g. `/whorl/<cluster>/`).
    pub fn new(client: Client, prefix: &str, retention: Duration) -> EtcdStore {
        EtcdStore { client, prefix: prefix.to_string(), retention, lease: Mutex::new(None) }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    async fn lease(&self) -> Result<i64, NotifyError> {
        let bucket = (self.retention / 10).max(Duration::from_secs(1));
        if let Some((t, id)) = self.lease.lock().ok().and_then(|l| *l)
            && t.elapsed() < bucket
        {
            return Ok(id);
        }
        let ttl = self.retention.as_secs().max(1) as i64;
        let id = self.client.clone().lease_grant(ttl, None).await.map_err(err)?.id();
        if let Ok(mut l) = self.lease.lock() {
            *l = Some((Instant::now(), id));
        }
        Ok(id)
    }

    async fn event(&self, gallery: &str, seq: u64) -> Result<Option<HitEvent>, NotifyError> {
        let r = self.client.clone().get(self.key(&format!("events/{gallery}/e/{seq:020}")), None).await.map_err(err)?;
        r.kvs().first().map(|kv| serde_json::from_slice(kv.value()).map_err(err)).transpose()
    }

    async fn append_one(&self, gallery: &str, events: Vec<NewEvent>) -> Result<Vec<HitEvent>, NotifyError> {
        crate::cluster::map::valid_name(gallery).map_err(NotifyError::Invalid)?;
        let next_key = self.key(&format!("events/{gallery}/next"));
        let lease = self.lease().await?;
        for _attempt in 0..20 {
            let mut c = self.client.clone();
            let r = c.get(next_key.clone(), None).await.map_err(err)?;
            let (next, rev) = match r.kvs().first() {
                Some(kv) => (kv.value_str().ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(1), kv.mod_revision()),
                None => (1, 0),
            };
            let mut out: Vec<Option<HitEvent>> = Vec::with_capacity(events.len());
            let mut compares = vec![if rev == 0 {
                Compare::create_revision(next_key.clone(), CompareOp::Equal, 0)
            } else {
                Compare::mod_revision(next_key.clone(), CompareOp::Equal, rev)
            }];
            let mut ops = Vec::new();
            let mut seq = next;
            for e in &events {
                if let Some(k) = dedup_key(e) {
                    let tx = self.key(&format!("events/{gallery}/tx/{k}"));
                    let got = c.get(tx.clone(), None).await.map_err(err)?;
                    if let Some(prev) = got.kvs().first().and_then(|kv| kv.value_str().ok()?.parse::<u64>().ok()) {
                        out.push(self.event(gallery, prev).await?);
                        continue;
                    }
                    compares.push(Compare::create_revision(tx.clone(), CompareOp::Equal, 0));
                    ops.push(TxnOp::put(tx, seq.to_string(), Some(PutOptions::new().with_lease(lease))));
                }
                let ev = HitEvent { sequence: seq, time_ms: now_ms(), hit: e.clone() };
                ops.push(TxnOp::put(
                    self.key(&format!("events/{gallery}/e/{seq:020}")),
                    serde_json::to_vec(&ev).map_err(err)?,
                    Some(PutOptions::new().with_lease(lease)),
                ));
                out.push(Some(ev));
                seq += 1;
            }
            if seq == next {
                return Ok(out.into_iter().flatten().collect());
            }
            ops.push(TxnOp::put(next_key.clone(), seq.to_string(), None));
            let txn = Txn::new().when(compares).and_then(ops);
            if c.txn(txn).await.map_err(err)?.succeeded() {
                return Ok(out.into_iter().flatten().collect());
            }
        }
        Err(NotifyError::Store(format!("gallery '{gallery}': too much contention appending events")))
    }

    async fn galleries(&self) -> Result<Vec<(String, u64)>, NotifyError> {
        let r =
            self.client.clone().get(self.key("events/"), Some(GetOptions::new().with_prefix())).await.map_err(err)?;
        let mut out = Vec::new();
        for kv in r.kvs() {
            let Ok(k) = kv.key_str() else { continue };
            if let Some(g) = k.strip_prefix(&self.key("events/")).and_then(|r| r.strip_suffix("/next"))
                && !g.contains('/')
            {
                out.push((g.to_string(), kv.value_str().ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(1)));
            }
        }
        Ok(out)
    }
}

#[tonic::async_trait]
impl EventStore for EtcdStore {
    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<HitEvent>, NotifyError> {
        let mut by: BTreeMap<String, Vec<(usize, NewEvent)>> = BTreeMap::new();
        for (i, e) in events.into_iter().enumerate() {
            by.entry(e.gallery.clone()).or_default().push((i, e));
        }
        let mut out: Vec<(usize, HitEvent)> = Vec::new();
        for (g, evs) in by {
            let (idx, evs): (Vec<usize>, Vec<NewEvent>) = evs.into_iter().unzip();
            let got = self.append_one(&g, evs).await?;
            out.extend(idx.into_iter().zip(got));
        }
        out.sort_by_key(|(i, _)| *i);
        Ok(out.into_iter().map(|(_, e)| e).collect())
    }

    async fn read(&self, gallery: &str, after: u64, limit: usize) -> Result<Vec<HitEvent>, NotifyError> {
        let from = self.key(&format!("events/{gallery}/e/{:020}", after + 1));
        let end = self.key(&format!("events/{gallery}/e0"));
        let opts = GetOptions::new()
            .with_range(end)
            .with_limit(limit.min(10_000) as i64)
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        let r = self.client.clone().get(from, Some(opts)).await.map_err(err)?;
        r.kvs().iter().map(|kv| serde_json::from_slice(kv.value()).map_err(err)).collect()
    }

    async fn wait(&self, cursors: &[(String, u64)], timeout: Duration) {
        let mut c = self.client.clone();
        let Ok(mut stream) = c.watch(self.key("events/"), Some(WatchOptions::new().with_prefix())).await else {
            tokio::time::sleep(timeout.min(Duration::from_millis(200))).await;
            return;
        };
        for (g, after) in cursors {
            if self.read(g, *after, 1).await.is_ok_and(|v| !v.is_empty()) {
                return;
            }
        }
        let _ = tokio::time::timeout(timeout, stream.message()).await;
    }

    async fn ack(&self, subscriber: &str, gallery: &str, sequence: u64) -> Result<u64, NotifyError> {
        super::valid_subscriber(subscriber)?;
        let last = self.galleries().await?.into_iter().find(|(g, _)| g == gallery).map_or(0, |(_, n)| n - 1);
        if sequence > last {
            return Err(NotifyError::Invalid(format!(
                "gallery '{gallery}' has no event {sequence} (its last is {last})"
            )));
        }
        let key = self.key(&format!("acks/{subscriber}/{gallery}"));
        for _ in 0..20 {
            let mut c = self.client.clone();
            let r = c.get(key.clone(), None).await.map_err(err)?;
            let (cur, rev) = match r.kvs().first() {
                Some(kv) => (kv.value_str().ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0), kv.mod_revision()),
                None => (0, 0),
            };
            if sequence <= cur {
                return Ok(cur);
            }
            let cmp = if rev == 0 {
                Compare::create_revision(key.clone(), CompareOp::Equal, 0)
            } else {
                Compare::mod_revision(key.clone(), CompareOp::Equal, rev)
            };
            let txn = Txn::new().when([cmp]).and_then([TxnOp::put(key.clone(), sequence.to_string(), None)]);
            if c.txn(txn).await.map_err(err)?.succeeded() {
                return Ok(sequence);
            }
        }
        Err(NotifyError::Store("too much contention acknowledging".into()))
    }

    async fn acked(&self, subscriber: &str, gallery: &str) -> Result<u64, NotifyError> {
        let r = self.client.clone().get(self.key(&format!("acks/{subscriber}/{gallery}")), None).await.map_err(err)?;
        Ok(r.kvs().first().and_then(|kv| kv.value_str().ok()?.parse().ok()).unwrap_or(0))
    }

    async fn expire(&self) -> Result<u64, NotifyError> {
        // etcd drops expired events itself (their leases end).
        Ok(0)
    }

    async fn backlog(&self) -> BTreeMap<String, Backlog> {
        let mut out = BTreeMap::new();
        let Ok(galleries) = self.galleries().await else { return out };
        let acks = self
            .client
            .clone()
            .get(self.key("acks/"), Some(GetOptions::new().with_prefix()))
            .await
            .map(|r| {
                r.kvs()
                    .iter()
                    .filter_map(|kv| {
                        let k = kv.key_str().ok()?.strip_prefix(&self.key("acks/"))?.to_string();
                        let (sub, g) = k.split_once('/')?;
                        Some((sub.to_string(), g.to_string(), kv.value_str().ok()?.parse::<u64>().ok()?))
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let now = now_ms();
        for (g, next) in galleries {
            let last = next - 1;
            let first = self.read(&g, 0, 1).await.ok().and_then(|v| v.first().map(|e| e.sequence)).unwrap_or(next);
            let mut b = Backlog { last, ..Backlog::default() };
            for (sub, _, acked) in acks.iter().filter(|(_, gg, _)| *gg == g) {
                let age = match self.read(&g, *acked, 1).await.ok().and_then(|v| v.into_iter().next()) {
                    Some(e) => Duration::from_millis(now.saturating_sub(e.time_ms)),
                    None => Duration::ZERO,
                };
                b.subscribers.insert(sub.clone(), (last.saturating_sub(*acked), age));
                b.expired_unacked = b.expired_unacked.max((first - 1).saturating_sub(*acked));
            }
            out.insert(g, b);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_store_suite_passes_on_a_real_etcd() {
        let Some(etcd) = crate::cluster::local_etcd::for_tests("notify") else { return };
        let client = Client::connect([etcd.url.as_str()], None).await.unwrap();
        let s = EtcdStore::new(client.clone(), "/whorl/test/", Duration::from_secs(3600));
        super::super::suite::behaves(&s).await;
        // A second router's store sees the same events and numbering.
        let s2 = EtcdStore::new(client, "/whorl/test/", Duration::from_secs(3600));
        assert_eq!(s2.read("imm", 0, 10).await.unwrap().len(), 3);
        let e = s2.append(vec![super::super::suite::hit("imm", "erin", "", 0)]).await.unwrap();
        assert_eq!(e[0].sequence, 4);
    }
}
