//! Catch-up: a replica asks its group's primary for what it lacks.
//!
//! The replica sends its last record (sequence and CRC). The primary
//! answers with the records after it, or, when its log no longer holds
//! them or the replica's last record is not the primary's (a write the
//! replica took from a primary that died before acknowledging it), with a
//! full copy of the group's files followed by the records logged since.
//! Rounds repeat while the remaining tail is long; a stale replica ends
//! with a `rejoin` round during which the primary holds its write lock,
//! sends the last records and clears the stale mark, so no write falls
//! between the catch-up and the replication that follows it.

use super::super::ClusterError;
use super::super::map::NodeInfo;
use super::super::pb::{self, tail_chunk::Item};
use super::{MapSource, Node, Slot};
use crate::gallery::replica::Tail;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::Status;

/// Bytes per file chunk of a full copy.
const CHUNK: usize = 1 << 20;
/// A catch-up round that applied fewer records than this is the last
/// before the rejoin round.
const SHORT_TAIL: usize = 64;

fn local(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Local(e.to_string())
}

impl Node {
    /// Brings slot `s` level with its group's primary.
    pub(super) async fn catch_up(self: &Arc<Self>, s: &Arc<Slot>) -> Result<(), ClusterError> {
        let map = self.map();
        let me = self.id().to_string();
        let stale = map.is_stale(&s.gallery_name, s.group, &me);
        let source: Option<NodeInfo> = match &self.source {
            MapSource::Etcd(_) => map.primary(&s.gallery_name, s.group).cloned(),
            MapSource::Static(m) => {
                // The first other replica that answers.
                let mut found = None;
                for n in m.replicas(s.group).iter().filter(|n| **n != me) {
                    if let Some(info) = m.nodes.get(n)
                        && let Ok(mut c) = self.peers.node(&info.addr)
                        && c.groups(pb::GroupsRequest {}).await.is_ok()
                    {
                        found = Some(info.clone());
                        break;
                    }
                }
                found
            }
        };
        let Some(src) = source.filter(|n| n.id != me) else {
            if stale {
                return Err(ClusterError::Unavailable(format!(
                    "{}/g{:04} is marked stale here and has no primary to catch up from",
                    s.gallery_name, s.group
                )));
            }
            return Ok(());
        };
        for _ in 0..16 {
            if self.tail_round(s, &src, false).await? < SHORT_TAIL {
                break;
            }
        }
        if stale {
            self.tail_round(s, &src, true).await?;
        }
        Ok(())
    }

    /// One catch-up round from `src`; returns the records applied.
    async fn tail_round(&self, s: &Arc<Slot>, src: &NodeInfo, rejoin: bool) -> Result<usize, ClusterError> {
        let gal = s.gallery().ok_or_else(|| local("the group is not open"))?;
        let _apply = s.apply.lock().await;
        let (after, after_crc) =
            tokio::task::spawn_blocking(move || gal.last_record()).await.map_err(local)?.map_err(local)?;
        let req = pb::TailRequest {
            gallery: s.gallery_name.clone(),
            group: s.group,
            after,
            after_crc,
            node: self.id().to_string(),
            rejoin,
        };
        let node_err = |m: String| ClusterError::Node { node: src.id.clone(), message: m };
        let mut c = self.peers.node(&src.addr)?;
        let mut stream = c.tail(req).await.map_err(|e| node_err(e.message().to_string()))?.into_inner();
        let mut incoming: Option<Incoming> = None;
        let mut applied = 0usize;
        loop {
            let Some(chunk) = stream.message().await.map_err(|e| node_err(e.message().to_string()))? else {
                return Err(node_err("the catch-up stream ended early".into()));
            };
            match chunk.item {
                Some(Item::File(f)) => {
                    if incoming.is_none() {
                        tracing::info!(
                            "node {}: {}/g{:04}: receiving a full copy from {}",
                            self.id(),
                            s.gallery_name,
                            s.group,
                            src.id
                        );
                        incoming = Some(Incoming::new(&s.dir)?);
                    }
                    if let Some(inc) = incoming.as_mut() {
                        inc.write(&f)?;
                    }
                }
                Some(Item::Record(r)) => {
                    if let Some(inc) = incoming.take() {
                        self.install(s, inc).await?;
                    }
                    let gal = s.gallery().ok_or_else(|| local("the group is not open"))?;
                    tokio::task::spawn_blocking(move || gal.apply_record(r.sequence, &r.payload))
                        .await
                        .map_err(local)?
                        .map_err(local)?;
                    applied += 1;
                }
                Some(Item::End(e)) => {
                    if let Some(inc) = incoming.take() {
                        self.install(s, inc).await?;
                    }
                    let gal = s.gallery().ok_or_else(|| local("the group is not open"))?;
                    let (last, _) =
                        tokio::task::spawn_blocking(move || gal.last_record()).await.map_err(local)?.map_err(local)?;
                    if last != e.last_sequence {
                        return Err(node_err(format!(
                            "after catching up this replica holds up to {last}, the primary {}",
                            e.last_sequence
                        )));
                    }
                    return Ok(applied);
                }
                None => return Err(node_err("empty catch-up message".into())),
            }
        }
    }

    /// Swaps a received full copy in for the slot's folder and opens it.
    async fn install(&self, s: &Arc<Slot>, inc: Incoming) -> Result<(), ClusterError> {
        let tmp = inc.finish()?;
        s.set_gallery(None);
        let old = s.dir.with_extension(format!("old-{}", super::super::store::now_ms()));
        if s.dir.exists() {
            std::fs::rename(&s.dir, &old).map_err(|e| local(format!("{}: {e}", s.dir.display())))?;
        }
        std::fs::rename(&tmp, &s.dir).map_err(|e| local(format!("{}: {e}", tmp.display())))?;
        crate::fsutil::sync_dir(s.dir.parent().unwrap_or(Path::new("."))).map_err(local)?;
        let g = self.open_dir(&s.dir).await?;
        s.set_gallery(Some(g));
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(old));
        Ok(())
    }

    /// The catch-up stream a replica asked for (see the module doc).
    pub(super) fn tail_stream(
        self: &Arc<Self>,
        r: pb::TailRequest,
    ) -> Result<mpsc::Receiver<Result<pb::TailChunk, Status>>, Status> {
        let slot = self
            .slot(&r.gallery, r.group)
            .ok_or_else(|| Status::failed_precondition(format!("{}/g{:04} is not held here", r.gallery, r.group)))?;
        let gal = slot.gallery().ok_or_else(|| Status::unavailable("the group is not open here"))?;
        if r.rejoin && !self.is_primary(&r.gallery, r.group) {
            return Err(Status::failed_precondition("a rejoin must be asked of the group's primary"));
        }
        let (tx, rx) = mpsc::channel::<Result<pb::TailChunk, Status>>(8);
        let me = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = me.send_tail(&slot, gal, &r, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(rx)
    }

    async fn send_tail(
        &self,
        slot: &Arc<Slot>,
        gal: Arc<crate::gallery::Gallery>,
        r: &pb::TailRequest,
        tx: &mpsc::Sender<Result<pb::TailChunk, Status>>,
    ) -> Result<(), Status> {
        let send = |item: Item| async {
            tx.send(Ok(pb::TailChunk { item: Some(item) })).await.map_err(|_| Status::cancelled("the replica left"))
        };
        let g2 = Arc::clone(&gal);
        let (after, crc) = (r.after, r.after_crc);
        let tail = tokio::task::spawn_blocking(move || g2.tail(after, crc))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(super::replication::gallery_status)?;
        let mut last = r.after;
        let records = match tail {
            Tail::Records(rs) => rs,
            Tail::Copy(why) => {
                tracing::info!("{}/g{:04}: full copy for {}: {why}", r.gallery, r.group, r.node);
                let g2 = Arc::clone(&gal);
                let tx2 = tx.clone();
                last = tokio::task::spawn_blocking(move || send_files(&g2, &tx2))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))??;
                let g2 = Arc::clone(&gal);
                tokio::task::spawn_blocking(move || g2.records_after(last))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
                    .map_err(super::replication::gallery_status)?
                    .unwrap_or_default()
            }
        };
        for (seq, payload) in records {
            last = seq;
            send(Item::Record(pb::Record { sequence: seq, payload })).await?;
        }
        if r.rejoin {
            let _order = slot.write.lock().await;
            let g2 = Arc::clone(&gal);
            let more = tokio::task::spawn_blocking(move || g2.records_after(last))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(super::replication::gallery_status)?
                .unwrap_or_default();
            for (seq, payload) in more {
                last = seq;
                send(Item::Record(pb::Record { sequence: seq, payload })).await?;
            }
            if let Some(store) = self.source.store() {
                let ok = store
                    .clear_stale(&r.gallery, r.group, &r.node, self.id())
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                if !ok {
                    return Err(Status::failed_precondition("no longer the primary: the stale mark stays"));
                }
            }
            tracing::info!("{}/g{:04}: {} caught up to {last} and rejoined", r.gallery, r.group, r.node);
            send(Item::End(pb::TailEnd { last_sequence: last, full_copy: false })).await?;
            return Ok(());
        }
        send(Item::End(pb::TailEnd { last_sequence: last, full_copy: false })).await
    }
}

/// Streams every file of a gallery's copy set (blocking). Returns the last
/// sequence number the copied log holds.
fn send_files(g: &crate::gallery::Gallery, tx: &mpsc::Sender<Result<pb::TailChunk, Status>>) -> Result<u64, Status> {
    let set = g.copy_set().map_err(super::replication::gallery_status)?;
    for (name, size) in &set.files {
        let path = g.dir().join(name);
        let mut f = std::fs::File::open(&path).map_err(|e| Status::internal(format!("{name}: {e}")))?;
        let mut crc = 0u32;
        let mut off = 0u64;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let want = ((*size - off) as usize).min(CHUNK);
            let data = &mut buf[..want];
            std::io::Read::read_exact(&mut f, data).map_err(|e| Status::internal(format!("{name}: {e}")))?;
            crc = crate::checksum::crc32c_append(crc, data);
            let last = off + want as u64 == *size;
            let chunk = pb::FileChunk {
                name: name.clone(),
                offset: off,
                data: data.to_vec(),
                last,
                size: if last { *size } else { 0 },
                crc32c: if last { crc } else { 0 },
            };
            tx.blocking_send(Ok(pb::TailChunk { item: Some(Item::File(chunk)) }))
                .map_err(|_| Status::cancelled("the replica left"))?;
            off += want as u64;
            if last {
                break;
            }
        }
    }
    Ok(set.last_seq)
}

/// A full copy being received into a temporary folder beside the group's.
struct Incoming {
    dir: PathBuf,
    file: Option<(String, std::fs::File, u32, u64)>,
}

impl Incoming {
    fn new(group_dir: &Path) -> Result<Incoming, ClusterError> {
        let dir = group_dir.with_extension("incoming");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| local(format!("{}: {e}", dir.display())))?;
        Ok(Incoming { dir, file: None })
    }

    fn write(&mut self, c: &pb::FileChunk) -> Result<(), ClusterError> {
        if c.name.is_empty() || c.name.contains('/') || c.name.contains("..") || c.name.starts_with('.') {
            return Err(local(format!("refusing a copied file named '{}'", c.name)));
        }
        let same = self.file.as_ref().is_some_and(|(n, ..)| *n == c.name);
        if !same {
            if c.offset != 0 {
                return Err(local(format!("{}: copy starts at offset {}", c.name, c.offset)));
            }
            let f = std::fs::File::create(self.dir.join(&c.name)).map_err(|e| local(format!("{}: {e}", c.name)))?;
            self.file = Some((c.name.clone(), f, 0, 0));
        }
        let Some((name, f, crc, len)) = self.file.as_mut() else { return Err(local("no file open")) };
        if c.offset != *len {
            return Err(local(format!("{name}: chunk at {} after {len} bytes", c.offset)));
        }
        f.write_all(&c.data).map_err(|e| local(format!("{name}: {e}")))?;
        *crc = crate::checksum::crc32c_append(*crc, &c.data);
        *len += c.data.len() as u64;
        if c.last {
            if *len != c.size || *crc != c.crc32c {
                return Err(local(format!(
                    "{name}: copy damaged in transit ({len} bytes, CRC {crc:08x}; sent {} bytes, CRC {:08x})",
                    c.size, c.crc32c
                )));
            }
            f.sync_all().map_err(|e| local(format!("{name}: {e}")))?;
            self.file = None;
        }
        Ok(())
    }

    fn finish(self) -> Result<PathBuf, ClusterError> {
        if let Some((name, ..)) = &self.file {
            return Err(local(format!("{name}: the copy ended mid-file")));
        }
        crate::fsutil::sync_dir(&self.dir).map_err(local)?;
        Ok(self.dir)
    }
}
