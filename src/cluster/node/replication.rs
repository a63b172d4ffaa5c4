//! Writes on a node: as a group's primary (log, replicate, mark the
//! replicas that missed it stale, acknowledge at the write quorum) and as
//! a replica (apply the primary's records in sequence order).

use super::super::map::StaleMark;
use super::super::pb;
use super::super::store::now_ms;
use super::{MapSource, Node, SlotState};
use crate::cancel::Cancel;
use crate::gallery::{GalleryError, WriteMode};
use crate::template::Template;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// How long a primary waits for a replica to take a record.
pub const REPLICATE_TIMEOUT: Duration = Duration::from_secs(3);

/// A write, parsed and checked.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Enrol a subject.
    Enroll {
        /// Subject id.
        subject: String,
        /// Labels.
        labels: Vec<(String, String)>,
        /// Finger templates.
        templates: Vec<Template>,
        /// Replace a subject already enrolled (else ALREADY_EXISTS).
        replace: bool,
    },
    /// Delete a subject.
    Delete {
        /// Subject id.
        subject: String,
    },
}

/// A gallery error as a status.
pub fn gallery_status(e: GalleryError) -> Status {
    crate::server::convert::gallery_status(e)
}

async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R, Status> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Status::internal(format!("task failed: {e}")))
}

impl Node {
    /// Applies `op` to (gallery, group) as its primary. Returns the
    /// sequence number and how many replicas hold the write durably.
    pub async fn write(self: &Arc<Self>, gallery: &str, group: u32, op: WriteOp) -> Result<(u64, u32), Status> {
        let slot = self
            .slot(gallery, group)
            .ok_or_else(|| Status::failed_precondition(format!("{gallery}/g{group:04} is not held by this node")))?;
        if slot.state() != SlotState::Ready {
            return Err(Status::unavailable(format!("{gallery}/g{group:04} is {} on this node", slot.state().name())));
        }
        if !self.is_primary(gallery, group) {
            return Err(Status::failed_precondition(format!(
                "not the primary of {gallery}/g{group:04} (it is {})",
                self.map().primaries.get(&(gallery.to_string(), group)).map_or("not elected yet", |s| s.as_str())
            )));
        }
        let g = slot.gallery().ok_or_else(|| Status::unavailable("the group is not open"))?;
        let _order = slot.write.lock().await;
        let map = self.map();
        let (replicas, quorum) = match (&self.source, &map.config) {
            (MapSource::Etcd(_), Some(c)) => (c.replicas, c.quorum()),
            // A static map elects nobody and marks nobody stale: every replica must take every write.
            (MapSource::Static(_), _) => (map.replicas(group).len() as u32, map.replicas(group).len() as u32),
            (_, None) => return Err(Status::unavailable("the cluster is not initialised")),
        };
        let me = self.id().to_string();
        let targets: Vec<String> =
            map.replicas(group).iter().filter(|n| **n != me && !map.is_stale(gallery, group, n)).cloned().collect();
        if 1 + targets.len() < quorum as usize {
            return Err(Status::unavailable(format!(
                "{gallery}/g{group:04}: only {} of the {quorum} replicas a write needs are in sync (of {replicas})",
                1 + targets.len()
            )));
        }
        let (seq, record) = blocking(move || match op {
            WriteOp::Enroll { subject, labels, templates, replace } => {
                let mode = if replace { WriteMode::Replace } else { WriteMode::Create };
                g.enroll_logged(&subject, labels, templates, mode, &Cancel::default())
            }
            WriteOp::Delete { subject } => g.delete_logged(&subject, &Cancel::default()),
        })
        .await?
        .map_err(gallery_status)?;
        let sends = targets.iter().map(|t| {
            let addr = map.nodes.get(t).map(|n| n.addr.clone());
            let req = pb::ReplicateRequest {
                gallery: gallery.to_string(),
                group,
                sequence: seq,
                record: record.clone(),
                primary: me.clone(),
            };
            async move {
                let Some(addr) = addr else { return Err(format!("{t} is not registered")) };
                let mut c = self.peers.node(&addr).map_err(|e| e.to_string())?;
                match tokio::time::timeout(REPLICATE_TIMEOUT, c.replicate(req)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(s)) => {
                        if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) {
                            self.peers.reset(&addr);
                        }
                        Err(format!("{}: {}", t, s.message()))
                    }
                    Err(_) => Err(format!("{t}: no answer within {REPLICATE_TIMEOUT:?}")),
                }
            }
        });
        let results = futures::future::join_all(sends).await;
        let mut acks = 1u32;
        for (t, r) in targets.iter().zip(results) {
            match r {
                Ok(()) => acks += 1,
                Err(why) => {
                    tracing::warn!("{gallery}/g{group:04}: replica {why}; marking it stale");
                    let marked = match self.source.store() {
                        Some(store) => {
                            let mark = StaleMark { after: seq - 1, by: me.clone(), at_ms: now_ms() };
                            store.mark_stale(gallery, group, t, &me, &mark).await.unwrap_or(false)
                        }
                        None => false,
                    };
                    if !marked {
                        return Err(Status::unavailable(format!(
                            "{gallery}/g{group:04}: write {seq} is logged on the primary but replica {why}, and it \
                             could not be marked stale: not acknowledged (retry)"
                        )));
                    }
                }
            }
        }
        if acks < quorum {
            return Err(Status::unavailable(format!(
                "{gallery}/g{group:04}: only {acks} of the {quorum} replicas needed hold write {seq}: not acknowledged"
            )));
        }
        drop(_order);
        self.maybe_compact(&slot);
        Ok((seq, acks))
    }

    /// Applies record `seq` of (gallery, group) sent by `from`, its primary.
    pub async fn replicate(&self, r: pb::ReplicateRequest) -> Result<u64, Status> {
        let (gallery, group) = (r.gallery.as_str(), r.group);
        let slot = self
            .slot(gallery, group)
            .ok_or_else(|| Status::failed_precondition(format!("{gallery}/g{group:04} is not held by this node")))?;
        if let MapSource::Etcd(s) = &self.source {
            let primary = s.map().primaries.get(&(gallery.to_string(), group)).cloned();
            if primary.as_deref() != Some(r.primary.as_str()) {
                return Err(Status::failed_precondition(format!(
                    "{} is not the primary of {gallery}/g{group:04} here (this node sees {})",
                    r.primary,
                    primary.as_deref().unwrap_or("none")
                )));
            }
        }
        let g = slot.gallery().ok_or_else(|| Status::unavailable("the group is still opening here"))?;
        let _order = slot.apply.lock().await;
        let seq = r.sequence;
        let record = r.record;
        let applied = blocking(move || -> Result<u64, Status> {
            let (last, _) = g.last_record().map_err(gallery_status)?;
            if seq <= last {
                let same = g.record_crc(seq).map_err(gallery_status)? == Some(crate::checksum::crc32c(&record));
                return if same {
                    Ok(last)
                } else {
                    Err(Status::aborted(format!("record {seq} conflicts with the one held here")))
                };
            }
            if seq != last + 1 {
                return Err(Status::aborted(format!("record {seq} leaves a gap: this replica holds up to {last}")));
            }
            g.apply_record(seq, &record).map_err(gallery_status)?;
            Ok(seq)
        })
        .await??;
        drop(_order);
        self.maybe_compact(&slot);
        Ok(applied)
    }
}
