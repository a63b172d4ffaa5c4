//! The event store of one server: a folder of append-only logs, one per
//! gallery (`<gallery>.log`: frames of `[length u32][CRC32C u32][JSON]`,
//! fsynced before `append` returns), and the subscribers' acknowledgements
//! (`acks.json`, replaced atomically). A torn last frame (a write that
//! never completed, hence never acknowledged to anyone) is cut on open;
//! damage before the last frame refuses to open.

use super::{Backlog, EventStore, HitEvent, NewEvent, NotifyError, dedup_key, now_ms};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

// One record per line of the log, read once at open: the size of the
// larger variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Rec {
    /// A hit.
    Event(HitEvent),
    /// Written first after retention dropped the oldest events: numbering
    /// goes on from here.
    Floor { next: u64 },
}

struct GalleryLog {
    file: File,
    events: VecDeque<HitEvent>,
    next: u64,
    dedup: HashMap<String, u64>,
}

#[derive(Default)]
struct Inner {
    logs: BTreeMap<String, GalleryLog>,
    acks: BTreeMap<String, BTreeMap<String, u64>>,
    expired_unacked: BTreeMap<String, u64>,
}

/// Events kept in a folder.
pub struct FileStore {
    dir: PathBuf,
    retention: Duration,
    inner: Mutex<Inner>,
    arrived: tokio::sync::Notify,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn err(path: &Path, e: impl std::fmt::Display) -> NotifyError {
    NotifyError::Store(format!("{}: {e}", path.display()))
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(&crate::checksum::crc32c(payload).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

fn private_file(path: &Path) -> Result<File, NotifyError> {
    let mut o = OpenOptions::new();
    o.create(true).append(true).read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path).map_err(|e| err(path, e))
}

/// Reads a gallery log: its records, and where a torn tail starts.
fn read_log(path: &Path) -> Result<(Vec<Rec>, Option<u64>), NotifyError> {
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| err(path, e))?;
    let mut recs = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        if bytes.len() - at < 8 {
            return Ok((recs, Some(at as u64)));
        }
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let crc = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let end = at.saturating_add(8).saturating_add(len);
        if end > bytes.len() {
            return Ok((recs, Some(at as u64)));
        }
        let payload = &bytes[at + 8..end];
        if crate::checksum::crc32c(payload) != crc {
            if end == bytes.len() {
                return Ok((recs, Some(at as u64)));
            }
            return Err(err(path, format!("damaged event record at offset {at} followed by others")));
        }
        recs.push(serde_json::from_slice(payload).map_err(|e| err(path, format!("record at {at}: {e}")))?);
        at = end;
    }
    Ok((recs, None))
}

impl FileStore {
    /// Opens (creating) the store in `dir`, keeping events for `retention`.
    pub fn open(dir: &Path, retention: Duration) -> Result<FileStore, NotifyError> {
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        let mut inner = Inner::default();
        let rd = std::fs::read_dir(dir).map_err(|e| err(dir, e))?;
        for e in rd {
            let e = e.map_err(|e| err(dir, e))?;
            let name = e.file_name().to_string_lossy().to_string();
            let Some(gallery) = name.strip_suffix(".log") else { continue };
            let path = e.path();
            let (recs, torn) = read_log(&path)?;
            if let Some(at) = torn {
                tracing::warn!("{}: torn last event record cut at offset {at} (never acknowledged)", path.display());
                let f = OpenOptions::new().write(true).open(&path).map_err(|e| err(&path, e))?;
                f.set_len(at).map_err(|e| err(&path, e))?;
                f.sync_all().map_err(|e| err(&path, e))?;
            }
            let mut log =
                GalleryLog { file: private_file(&path)?, events: VecDeque::new(), next: 1, dedup: HashMap::new() };
            for r in recs {
                match r {
                    Rec::Floor { next } => log.next = log.next.max(next),
                    Rec::Event(ev) => {
                        log.next = log.next.max(ev.sequence + 1);
                        if let Some(k) = dedup_key(&ev.hit) {
                            log.dedup.insert(k, ev.sequence);
                        }
                        log.events.push_back(ev);
                    }
                }
            }
            inner.logs.insert(gallery.to_string(), log);
        }
        let acks = dir.join("acks.json");
        if acks.exists() {
            let text = std::fs::read(&acks).map_err(|e| err(&acks, e))?;
            inner.acks = serde_json::from_slice(&text).map_err(|e| err(&acks, e))?;
        }
        Ok(FileStore {
            dir: dir.to_path_buf(),
            retention,
            inner: Mutex::new(inner),
            arrived: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, NotifyError> {
        self.inner.lock().map_err(|_| NotifyError::Store("event store lock poisoned".into()))
    }

    fn log<'a>(&self, inner: &'a mut Inner, gallery: &str) -> Result<&'a mut GalleryLog, NotifyError> {
        crate::cluster::map::valid_name(gallery).map_err(NotifyError::Invalid)?;
        if !inner.logs.contains_key(gallery) {
            let path = self.dir.join(format!("{gallery}.log"));
            let log =
                GalleryLog { file: private_file(&path)?, events: VecDeque::new(), next: 1, dedup: HashMap::new() };
            crate::fsutil::sync_dir(&self.dir).map_err(|e| err(&self.dir, e))?;
            inner.logs.insert(gallery.to_string(), log);
        }
        inner.logs.get_mut(gallery).ok_or_else(|| NotifyError::Store("log vanished".into()))
    }
}

#[tonic::async_trait]
impl EventStore for FileStore {
    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<HitEvent>, NotifyError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let out = {
            let mut inner = self.lock()?;
            let mut out = Vec::with_capacity(events.len());
            let mut touched: Vec<String> = Vec::new();
            for e in events {
                let log = self.log(&mut inner, &e.gallery)?;
                if let Some(seq) = dedup_key(&e).and_then(|k| log.dedup.get(&k).copied())
                    && let Some(prev) = log.events.iter().find(|x| x.sequence == seq)
                {
                    out.push(prev.clone());
                    continue;
                }
                let ev = HitEvent { sequence: log.next, time_ms: now_ms(), hit: e };
                let payload =
                    serde_json::to_vec(&Rec::Event(ev.clone())).map_err(|e| NotifyError::Store(e.to_string()))?;
                log.file.write_all(&frame(&payload)).map_err(|e| NotifyError::Store(e.to_string()))?;
                log.next += 1;
                if let Some(k) = dedup_key(&ev.hit) {
                    log.dedup.insert(k, ev.sequence);
                }
                log.events.push_back(ev.clone());
                if !touched.contains(&ev.hit.gallery) {
                    touched.push(ev.hit.gallery.clone());
                }
                out.push(ev);
            }
            for g in touched {
                if let Some(log) = inner.logs.get_mut(&g) {
                    log.file.sync_data().map_err(|e| NotifyError::Store(e.to_string()))?;
                }
            }
            out
        };
        self.arrived.notify_waiters();
        Ok(out)
    }

    async fn read(&self, gallery: &str, after: u64, limit: usize) -> Result<Vec<HitEvent>, NotifyError> {
        let inner = self.lock()?;
        Ok(inner
            .logs
            .get(gallery)
            .map(|l| l.events.iter().filter(|e| e.sequence > after).take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn wait(&self, cursors: &[(String, u64)], timeout: Duration) {
        let notified = self.arrived.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let have = self
            .lock()
            .ok()
            .is_some_and(|i| cursors.iter().any(|(g, after)| i.logs.get(g).is_some_and(|l| l.next > after + 1)));
        if !have {
            let _ = tokio::time::timeout(timeout, notified).await;
        }
    }

    async fn ack(&self, subscriber: &str, gallery: &str, sequence: u64) -> Result<u64, NotifyError> {
        super::valid_subscriber(subscriber)?;
        let mut inner = self.lock()?;
        let last = inner.logs.get(gallery).map_or(0, |l| l.next - 1);
        if sequence > last {
            return Err(NotifyError::Invalid(format!(
                "gallery '{gallery}' has no event {sequence} (its last is {last})"
            )));
        }
        let cur = inner.acks.get(subscriber).and_then(|m| m.get(gallery)).copied().unwrap_or(0);
        if sequence <= cur {
            return Ok(cur);
        }
        inner.acks.entry(subscriber.to_string()).or_default().insert(gallery.to_string(), sequence);
        let bytes = serde_json::to_vec_pretty(&inner.acks).map_err(|e| NotifyError::Store(e.to_string()))?;
        let path = self.dir.join("acks.json");
        crate::fsutil::write_atomic(&path, &bytes).map_err(|e| err(&path, e))?;
        Ok(sequence)
    }

    async fn acked(&self, subscriber: &str, gallery: &str) -> Result<u64, NotifyError> {
        let inner = self.lock()?;
        Ok(inner.acks.get(subscriber).and_then(|m| m.get(gallery)).copied().unwrap_or(0))
    }

    async fn expire(&self) -> Result<u64, NotifyError> {
        let cutoff = now_ms().saturating_sub(self.retention.as_millis() as u64);
        let mut inner = self.lock()?;
        let mut dropped = 0u64;
        let galleries: Vec<String> = inner.logs.keys().cloned().collect();
        for g in galleries {
            let acked_min: u64 = inner.acks.values().filter_map(|m| m.get(&g)).copied().min().unwrap_or(0);
            let any_subscriber = inner.acks.values().any(|m| m.contains_key(&g));
            let Some(log) = inner.logs.get_mut(&g) else { continue };
            let old = log.events.iter().take_while(|e| e.time_ms < cutoff).count();
            if old == 0 {
                continue;
            }
            let gone: Vec<HitEvent> = log.events.drain(..old).collect();
            let unacked = gone.iter().filter(|e| !any_subscriber || e.sequence > acked_min).count() as u64;
            for e in &gone {
                if let Some(k) = dedup_key(&e.hit) {
                    log.dedup.remove(&k);
                }
            }
            let path = self.dir.join(format!("{g}.log"));
            let mut bytes = frame(
                &serde_json::to_vec(&Rec::Floor { next: log.next }).map_err(|e| NotifyError::Store(e.to_string()))?,
            );
            for e in &log.events {
                let p = serde_json::to_vec(&Rec::Event(e.clone())).map_err(|e| NotifyError::Store(e.to_string()))?;
                bytes.extend_from_slice(&frame(&p));
            }
            crate::fsutil::write_atomic(&path, &bytes).map_err(|e| err(&path, e))?;
            log.file = private_file(&path)?;
            dropped += gone.len() as u64;
            *inner.expired_unacked.entry(g.clone()).or_default() += unacked;
            tracing::info!(
                "notifications: {} events of '{g}' past retention dropped ({unacked} unacknowledged)",
                gone.len()
            );
        }
        Ok(dropped)
    }

    async fn backlog(&self) -> BTreeMap<String, Backlog> {
        let Ok(inner) = self.lock() else { return BTreeMap::new() };
        let now = now_ms();
        let mut out = BTreeMap::new();
        for (g, log) in &inner.logs {
            let mut b = Backlog {
                last: log.next - 1,
                expired_unacked: inner.expired_unacked.get(g).copied().unwrap_or(0),
                ..Backlog::default()
            };
            for (sub, m) in &inner.acks {
                let Some(&acked) = m.get(g) else { continue };
                let pending: Vec<&HitEvent> = log.events.iter().filter(|e| e.sequence > acked).collect();
                let age =
                    pending.first().map_or(Duration::ZERO, |e| Duration::from_millis(now.saturating_sub(e.time_ms)));
                b.subscribers.insert(sub.clone(), ((log.next - 1).saturating_sub(acked), age));
            }
            out.insert(g.clone(), b);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_store_suite_passes_and_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("whorl-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let s = FileStore::open(&dir, Duration::from_secs(3600)).unwrap();
            super::super::suite::behaves(&s).await;
        }
        // Reopened: events, numbering, de-duplication and acknowledgements kept.
        let s = FileStore::open(&dir, Duration::from_secs(3600)).unwrap();
        assert_eq!(s.read("imm", 0, 10).await.unwrap().len(), 3);
        assert_eq!(s.acked("agency", "imm").await.unwrap(), 2);
        let e = s.append(vec![super::super::suite::hit("imm", "erin", "T9", 0)]).await.unwrap();
        assert_eq!(e[0].sequence, 4);
        assert_eq!(s.append(vec![super::super::suite::hit("imm", "alice", "T1", 3)]).await.unwrap()[0].sequence, 1);
        // A torn last frame is cut; damage before the last one refuses to open.
        drop(s);
        let log = dir.join("imm.log");
        let mut b = std::fs::read(&log).unwrap();
        b.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        std::fs::write(&log, &b).unwrap();
        let s = FileStore::open(&dir, Duration::from_secs(3600)).unwrap();
        assert_eq!(s.read("imm", 0, 10).await.unwrap().len(), 4);
        drop(s);
        let mut b = std::fs::read(&log).unwrap();
        b[12] ^= 0x40;
        std::fs::write(&log, &b).unwrap();
        assert!(FileStore::open(&dir, Duration::from_secs(3600)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn retention_drops_old_events_and_counts_unacknowledged_ones() {
        let dir = std::env::temp_dir().join(format!("whorl-notify-ret-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = FileStore::open(&dir, Duration::from_millis(0)).unwrap();
        s.append(vec![super::super::suite::hit("imm", "a", "", 0), super::super::suite::hit("imm", "b", "", 0)])
            .await
            .unwrap();
        s.ack("agency", "imm", 1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(s.expire().await.unwrap(), 2);
        assert!(s.read("imm", 0, 10).await.unwrap().is_empty());
        assert_eq!(s.backlog().await["imm"].expired_unacked, 1);
        drop(s);
        let s = FileStore::open(&dir, Duration::from_secs(60)).unwrap();
        let e = s.append(vec![super::super::suite::hit("imm", "c", "", 0)]).await.unwrap();
        assert_eq!(e[0].sequence, 3, "numbering goes on after retention");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
