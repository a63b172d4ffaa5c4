//! One gallery as a replica of a cluster group: a primary logs each write
//! and sends the record as logged; each replica appends those exact bytes
//! under the same sequence number and applies them, so every replica's log
//! is a prefix of its primary's. A replica that was away asks for the
//! records after its last one (checked by CRC, so a replica holding a
//! record its primary never had, an unacknowledged write of a primary that
//! died, is detected) or, when the log no longer holds them, for a full
//! copy of the folder's files.

use super::delta::Delta;
use super::wal::Record;
use super::{Gallery, GalleryError, Snapshot, lock_err, manifest};
use std::sync::{Arc, RwLockReadGuard};

/// What a catching-up replica needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// The records after its last one, as logged (sequence, bytes).
    Records(Vec<(u64, Vec<u8>)>),
    /// A full copy: the log no longer holds them, or its records differ.
    Copy(String),
}

/// Files of a gallery folder to send for a full copy, while the guard
/// keeps compaction (which deletes shard files) away.
pub struct CopySet<'a> {
    /// (file name, bytes to send): the log up to its length now, the other
    /// files whole.
    pub files: Vec<(String, u64)>,
    /// The last sequence number the copied log holds.
    pub last_seq: u64,
    _guard: RwLockReadGuard<'a, ()>,
}

impl std::fmt::Debug for CopySet<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopySet").field("files", &self.files).field("last_seq", &self.last_seq).finish()
    }
}

/// Files of a gallery folder that are never copied: the lock, temporaries.
pub fn is_local_only(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with(".tmp")
        || name.contains(".tmp.")
        || name == "LOCK"
        || name == "gallery.lock"
}

impl Gallery {
    /// The last record applied: its sequence number and the CRC32C of its
    /// bytes; (applied sequence, 0) when the log holds none; (0, 0) for a
    /// gallery that never logged anything.
    pub fn last_record(&self) -> Result<(u64, u32), GalleryError> {
        if let Some(last) = self.wal.last()? {
            return Ok(last);
        }
        let m = self.manifest.lock().map_err(lock_err)?;
        Ok((m.applied_seq, 0))
    }

    /// What a replica whose last record is (`after`, `after_crc`) needs.
    pub fn tail(&self, after: u64, after_crc: u32) -> Result<Tail, GalleryError> {
        let (last, _) = self.last_record()?;
        if after > last {
            return Ok(Tail::Copy(format!("the replica holds records up to {after}, the primary up to {last}")));
        }
        if after > 0 {
            match self.wal.crc_of(after)? {
                Some(c) if c == after_crc => {}
                Some(_) => return Ok(Tail::Copy(format!("record {after} differs from the primary's"))),
                None => return Ok(Tail::Copy(format!("the primary's log no longer holds record {after}"))),
            }
        }
        match self.wal.read_after(after)? {
            Some(records) => Ok(Tail::Records(records)),
            None => Ok(Tail::Copy(format!("the primary's log no longer holds the records after {after}"))),
        }
    }

    /// The CRC32C of record `seq`'s bytes, if the log still holds it.
    pub fn record_crc(&self, seq: u64) -> Result<Option<u32>, GalleryError> {
        Ok(self.wal.crc_of(seq)?)
    }

    /// The records after `after` as logged, if the log still holds them all.
    pub fn records_after(&self, after: u64) -> Result<Option<super::wal::Records>, GalleryError> {
        Ok(self.wal.read_after(after)?)
    }

    /// Applies a record its primary logged as `seq` (the next one here).
    pub fn apply_record(&self, seq: u64, payload: &[u8]) -> Result<(), GalleryError> {
        let r: Record = serde_json::from_slice(payload)
            .map_err(|e| GalleryError::Invalid(format!("replicated record {seq} is not readable: {e}")))?;
        if r.seq != seq {
            return Err(GalleryError::Invalid(format!("replicated record says sequence {}, sent as {seq}", r.seq)));
        }
        let _m = self.maintenance.read().map_err(lock_err)?;
        let (last, _) = self.last_record()?;
        if seq <= last {
            // Already here (a catch-up that overlapped replication): the same record, or damage.
            return match self.wal.crc_of(seq)? {
                Some(c) if c == crate::checksum::crc32c(payload) => Ok(()),
                None if seq <= last => Ok(()),
                _ => Err(GalleryError::Invalid(format!("replicated record {seq} differs from the one held here"))),
            };
        }
        // Cylinders and vectors first (outside the snapshot lock), so that
        // nothing logged can fail to apply and searches never wait on them.
        let base = self.snapshot();
        let mut delta: Delta = (*base.delta).clone();
        super::write::apply(&mut delta, &self.embedder, &self.matcher, seq, r.op.clone())?;
        self.wal.append_payload(seq, payload)?;
        self.publish(|s| {
            let delta = if Arc::ptr_eq(&s.delta, &base.delta) {
                Arc::new(delta)
            } else {
                let mut d = (*s.delta).clone();
                let _ = super::write::apply(&mut d, &self.embedder, &self.matcher, seq, r.op);
                Arc::new(d)
            };
            Snapshot { generation: s.generation + 1, shards: s.shards.clone(), delta }
        })
    }

    /// The files to send for a full copy of this gallery.
    pub fn copy_set(&self) -> Result<CopySet<'_>, GalleryError> {
        let guard = self.maintenance.read().map_err(lock_err)?;
        // Length and last sequence together: the copied log ends exactly at `last_seq`.
        let (wal_len, last_seq) = self.wal.position();
        let mut files = Vec::new();
        let rd = std::fs::read_dir(&self.dir).map_err(|e| GalleryError::Io(format!("{}: {e}", self.dir.display())))?;
        for e in rd {
            let e = e.map_err(|e| GalleryError::Io(e.to_string()))?;
            let Ok(name) = e.file_name().into_string() else { continue };
            let ft = e.file_type().map_err(|e| GalleryError::Io(e.to_string()))?;
            if !ft.is_file() || is_local_only(&name) {
                continue;
            }
            let size = if name == super::wal::FILE {
                wal_len
            } else {
                e.metadata().map_err(|e| GalleryError::Io(e.to_string()))?.len()
            };
            files.push((name, size));
        }
        // The manifest last: a receiver that has it has every shard it names.
        files.sort_by_key(|(n, _)| (n == manifest::FILE, n.clone()));
        Ok(CopySet { files, last_seq, _guard: guard })
    }
}
