//! The write-ahead log of online enrolments and deletions.
//!
//! `wal.log` starts with a 16-byte header (`WHORLWAL`, version u32, 0) and
//! holds records `[payload length u32][CRC32C of payload u32][payload]`,
//! little-endian, the payload being the JSON of a [`Record`]. An operation
//! is acknowledged only after its record is fsynced.
//!
//! On open the log is replayed. A torn or corrupt *tail* (a record cut
//! short, or a last record whose checksum fails: writes that never
//! completed, hence never acknowledged) is truncated with a warning and
//! never half-applied. A bad record followed by further data is damage to
//! acknowledged data: opening fails with an error naming the offset rather
//! than dropping what follows.
//!
//! The log holds templates: it is created readable by its owner only
//! (0600), and an existing log others may read is made so on open.
//!
//! Two durability modes: [`SyncMode::PerRecord`] fsyncs every record under
//! the lock; [`SyncMode::Group`] lets concurrent appenders share fsyncs (the
//! first waiter syncs everything written so far; the others wait for it).

use crate::template::Template;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

/// File name inside the gallery folder.
pub const FILE: &str = "wal.log";
const MAGIC: &[u8; 8] = b"WHORLWAL";
const HEADER: u64 = 16;
/// Largest record accepted (a ten-print enrolment is a few tens of KB).
pub const MAX_RECORD: u32 = 16 << 20;

/// One logged operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Enrol a subject's templates.
    Enroll {
        /// Subject id.
        subject: String,
        /// Labels (key, value).
        labels: Vec<(String, String)>,
        /// Finger templates.
        templates: Vec<Template>,
        /// These templates and labels replace everything the subject had
        /// (absent in records written before replacement existed: false).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        replace: bool,
    },
    /// Delete a subject.
    Delete {
        /// Subject id.
        subject: String,
    },
}

/// A record: its sequence number and operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]

pub struct Record {
    /// Sequence number, increasing.
    pub seq: u64,
    /// The operation.
    pub op: Op,
}

/// When records become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SyncMode {
    /// fsync every record before acknowledging it.
    #[default]
    PerRecord,
    /// Concurrent appenders share fsyncs; each is still acknowledged only
    /// once its record is durable.
    Group,
}

/// Errors of the log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The file failed.
    #[error("{file}: {what}")]
    Io {
        /// The file.
        file: String,
        /// What failed.
        what: String,
    },
    /// Damage that is not a torn tail.
    #[error("{file}: record at offset {offset}: {what}")]
    Corrupt {
        /// The file.
        file: String,
        /// Record offset.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// A replicated record out of sequence.
    #[error("record {got} out of sequence: the log expects {expected}")]
    Sequence {
        /// The next sequence number the log expects.
        expected: u64,
        /// The one offered.
        got: u64,
    },
    /// A record too large to log.
    #[error("record of {0} bytes exceeds the {MAX_RECORD}-byte limit")]
    TooLarge(usize),
}

/// What replay found.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// Complete records, in order.
    pub records: Vec<Record>,
    /// Bytes of a torn tail that were truncated, and where.
    pub truncated: Option<(u64, u64)>,
}

struct Inner {
    file: File,
    next_seq: u64,
    /// Records in the file.
    records: u64,
    written: u64,
    durable: u64,
    syncing: bool,
    /// The last record in the file: its sequence number and CRC.
    last: Option<(u64, u32)>,
}

/// An open write-ahead log.
pub struct Wal {
    path: PathBuf,
    mode: SyncMode,
    inner: Mutex<Inner>,
    synced: Condvar,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("path", &self.path).field("mode", &self.mode).finish()
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> WalError {
    WalError::Io { file: path.display().to_string(), what: e.to_string() }
}

impl Wal {
    /// Opens (creating if absent) `dir/wal.log`, replays it, truncates a
    /// torn tail, and positions for appending after the last record.
    pub fn open(dir: &Path, mode: SyncMode) -> Result<(Wal, Replay), WalError> {
        let path = dir.join(FILE);
        if !path.exists() {
            let mut h = MAGIC.to_vec();
            h.extend_from_slice(&1u32.to_le_bytes());
            h.extend_from_slice(&0u32.to_le_bytes());
            crate::fsutil::write_atomic_private(&path, &h).map_err(|e| io(&path, e))?;
        }
        let mut file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| io(&path, e))?;
        make_private(&path, &file)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io(&path, e))?;
        let replay = parse(&path, &bytes)?;
        let good_end = replay.truncated.map(|(at, _)| at).unwrap_or(bytes.len() as u64);
        if let Some((at, n)) = replay.truncated {
            tracing::warn!("{}: torn tail of {n} bytes at offset {at} truncated (never acknowledged)", path.display());
            file.set_len(at).map_err(|e| io(&path, e))?;
            file.sync_all().map_err(|e| io(&path, e))?;
        }
        file.seek(SeekFrom::Start(good_end)).map_err(|e| io(&path, e))?;
        let next_seq = replay.records.last().map(|r| r.seq + 1).unwrap_or(1);
        let records = replay.records.len() as u64;
        let last = parse_raw(&path, &bytes[..good_end as usize])?.last().map(|(s, p)| (*s, crate::checksum::crc32c(p)));
        let inner = Inner { file, next_seq, records, written: good_end, durable: good_end, syncing: false, last };
        Ok((Wal { path, mode, inner: Mutex::new(inner), synced: Condvar::new() }, replay))
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the log.
    pub fn len(&self) -> u64 {
        self.inner.lock().map(|i| i.written).unwrap_or(0)
    }

    /// Records in the log.
    pub fn records(&self) -> u64 {
        self.inner.lock().map(|i| i.records).unwrap_or(0)
    }

    /// Whether the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() <= HEADER
    }

    /// The sequence number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.inner.lock().map(|i| i.next_seq).unwrap_or(0)
    }

    /// Raises the next sequence number to at least `seq` (after compaction
    /// emptied the log, numbering continues from the manifest).
    pub fn bump_seq(&self, seq: u64) {
        if let Ok(mut i) = self.inner.lock() {
            i.next_seq = i.next_seq.max(seq);
        }
    }

    /// Appends `op` and returns its record once durable.
    pub fn append(&self, op: Op) -> Result<Record, WalError> {
        self.append_encoded(op).map(|(r, _)| r)
    }

    /// Appends `op` and returns its record and the record's bytes as
    /// logged (what replicas log in turn) once durable.
    pub fn append_encoded(&self, op: Op) -> Result<(Record, Vec<u8>), WalError> {
        let poisoned = |_| io(&self.path, "log lock poisoned by a panic");
        let g = self.inner.lock().map_err(poisoned)?;
        let record = Record { seq: g.next_seq, op };
        let payload = serde_json::to_vec(&record).map_err(|e| io(&self.path, e))?;
        self.write_payload(g, &payload)?;
        Ok((record, payload))
    }

    /// Appends a record another log gave sequence number `seq` (a replica
    /// following its primary), once durable. `seq` must be the next one.
    pub fn append_payload(&self, seq: u64, payload: &[u8]) -> Result<(), WalError> {
        let g = self.inner.lock().map_err(|_| io(&self.path, "log lock poisoned by a panic"))?;
        if seq != g.next_seq {
            return Err(WalError::Sequence { expected: g.next_seq, got: seq });
        }
        self.write_payload(g, payload)
    }

    /// The records after `after`, as logged: (sequence, bytes). `None` when
    /// the log no longer holds every one of them (compacted past `after`).
    pub fn read_after(&self, after: u64) -> Result<Option<Records>, WalError> {
        let (written, next) = {
            let g = self.inner.lock().map_err(|_| io(&self.path, "log lock poisoned by a panic"))?;
            (g.written, g.next_seq)
        };
        let mut f = File::open(&self.path).map_err(|e| io(&self.path, e))?;
        let mut bytes = vec![0u8; written as usize];
        f.read_exact(&mut bytes).map_err(|e| io(&self.path, e))?;
        let raw = parse_raw(&self.path, &bytes)?;
        let complete = match raw.first() {
            Some((first, _)) => *first <= after + 1,
            None => after + 1 >= next,
        };
        Ok(complete.then(|| raw.into_iter().filter(|(s, _)| *s > after).collect()))
    }

    /// Bytes written and the last sequence number given, read together.
    pub fn position(&self) -> (u64, u64) {
        self.inner.lock().map(|g| (g.written, g.next_seq.saturating_sub(1))).unwrap_or((0, 0))
    }

    /// The last record logged: its sequence number and the CRC32C of its
    /// bytes; `None` when the log holds none.
    pub fn last(&self) -> Result<Option<(u64, u32)>, WalError> {
        let g = self.inner.lock().map_err(|_| io(&self.path, "log lock poisoned by a panic"))?;
        Ok(g.last)
    }

    /// The CRC32C of record `seq`'s bytes, if the log holds it.
    pub fn crc_of(&self, seq: u64) -> Result<Option<u32>, WalError> {
        let raw = self.read_after(seq.saturating_sub(1))?.unwrap_or_default();
        Ok(raw.iter().find(|(s, _)| *s == seq).map(|(_, p)| crate::checksum::crc32c(p)))
    }

    fn write_payload<'a>(&'a self, mut g: std::sync::MutexGuard<'a, Inner>, payload: &[u8]) -> Result<(), WalError> {
        let poisoned = |_| io(&self.path, "log lock poisoned by a panic");
        let len =
            u32::try_from(payload.len()).ok().filter(|&l| l <= MAX_RECORD).ok_or(WalError::TooLarge(payload.len()))?;
        let mut frame = Vec::with_capacity(8 + payload.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crate::checksum::crc32c(payload).to_le_bytes());
        frame.extend_from_slice(payload);
        if let Err(e) = g.file.write_all(&frame) {
            // Leave no partial record behind for later appends to follow.
            let at = g.written;
            let _ = g.file.set_len(at);
            let _ = g.file.seek(SeekFrom::Start(at));
            return Err(io(&self.path, e));
        }
        g.written += frame.len() as u64;
        g.last = Some((g.next_seq, crate::checksum::crc32c(payload)));
        g.next_seq += 1;
        g.records += 1;
        let mine = g.written;
        match self.mode {
            SyncMode::PerRecord => {
                g.file.sync_data().map_err(|e| io(&self.path, e))?;
                g.durable = mine;
            }
            SyncMode::Group => loop {
                if g.durable >= mine {
                    break;
                }
                if g.syncing {
                    g = self.synced.wait(g).map_err(poisoned)?;
                    continue;
                }
                // Lead: sync everything written so far, outside the lock.
                g.syncing = true;
                let upto = g.written;
                let file = g.file.try_clone().map_err(|e| io(&self.path, e));
                drop(g);
                let result = file.and_then(|f| f.sync_data().map_err(|e| io(&self.path, e)));
                g = self.inner.lock().map_err(poisoned)?;
                g.syncing = false;
                if result.is_ok() {
                    g.durable = g.durable.max(upto);
                }
                self.synced.notify_all();
                result?;
            },
        }
        Ok(())
    }

    /// Replaces the log's content with `keep` (after compaction folded the
    /// other records into shards), atomically.
    pub fn rewrite(&self, keep: &[Record]) -> Result<(), WalError> {
        let raw = keep
            .iter()
            .map(|r| serde_json::to_vec(r).map(|p| (r.seq, p)).map_err(|e| io(&self.path, e)))
            .collect::<Result<Vec<_>, _>>()?;
        self.rewrite_raw(&raw)
    }

    /// Empties the log but for its last record (after compaction folded
    /// them all into shards): replay skips it, and a replica catching up
    /// can still check its own last record against it.
    pub fn rewrite_keeping_last(&self) -> Result<(), WalError> {
        let all = self.read_after(0)?.unwrap_or_default();
        self.rewrite_raw(&all[all.len().saturating_sub(1)..])
    }

    fn rewrite_raw(&self, keep: &[(u64, Vec<u8>)]) -> Result<(), WalError> {
        let mut g = self.inner.lock().map_err(|_| io(&self.path, "log lock poisoned"))?;
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        for (_, payload) in keep {
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crate::checksum::crc32c(payload).to_le_bytes());
            bytes.extend_from_slice(payload);
        }
        crate::fsutil::write_atomic_private(&self.path, &bytes).map_err(|e| io(&self.path, e))?;
        let mut file = OpenOptions::new().read(true).write(true).open(&self.path).map_err(|e| io(&self.path, e))?;
        file.seek(SeekFrom::End(0)).map_err(|e| io(&self.path, e))?;
        g.file = file;
        g.written = bytes.len() as u64;
        g.last = keep.last().map(|(s, p)| (*s, crate::checksum::crc32c(p)));
        g.durable = g.written;
        g.records = keep.len() as u64;
        Ok(())
    }
}

/// The complete records of a log's bytes, as logged: (sequence, bytes).
fn parse_raw(path: &Path, b: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, WalError> {
    #[derive(Deserialize)]
    struct SeqOnly {
        seq: u64,
    }
    let corrupt = |offset: u64, what: String| WalError::Corrupt { file: path.display().to_string(), offset, what };
    let mut out = Vec::new();
    let mut at = HEADER as usize;
    while at + 8 <= b.len() {
        let len = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
        let crc = u32::from_le_bytes([b[at + 4], b[at + 5], b[at + 6], b[at + 7]]);
        let end = at + 8 + len;
        if end > b.len() || crate::checksum::crc32c(&b[at + 8..end]) != crc {
            break;
        }
        let payload = b[at + 8..end].to_vec();
        let s: SeqOnly = serde_json::from_slice(&payload).map_err(|e| corrupt(at as u64, e.to_string()))?;
        out.push((s.seq, payload));
        at = end;
    }
    Ok(out)
}

/// Makes the log readable by its owner only (it holds templates).
fn make_private(path: &Path, file: &File) -> Result<(), WalError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(|e| io(path, e))?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!("{}: mode {:o} let others read enrolled templates; now 0600", path.display(), mode & 0o777);
            file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| io(path, e))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (path, file);
    Ok(())
}

/// Parses a log's bytes (see the module doc for what counts as a torn tail).
pub fn parse(path: &Path, b: &[u8]) -> Result<Replay, WalError> {
    let corrupt = |offset: u64, what: String| WalError::Corrupt { file: path.display().to_string(), offset, what };
    if b.len() < HEADER as usize || &b[..8] != MAGIC {
        return Err(corrupt(0, "not a whorl write-ahead log (magic)".into()));
    }
    let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    if version != 1 {
        return Err(corrupt(8, format!("log version {version} is not supported")));
    }
    let mut records = Vec::new();
    let mut at = HEADER as usize;
    while at < b.len() {
        let torn = Some((at as u64, (b.len() - at) as u64));
        if b.len() - at < 8 {
            return Ok(Replay { records, truncated: torn });
        }
        let len = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
        let crc = u32::from_le_bytes([b[at + 4], b[at + 5], b[at + 6], b[at + 7]]);
        let end = at + 8 + len;
        if len as u32 > MAX_RECORD || end > b.len() {
            // Cut short, or a length no writer produced: only the tail may be so.
            if end > b.len() || len as u32 > MAX_RECORD {
                return Ok(Replay { records, truncated: torn });
            }
        }
        let payload = &b[at + 8..end];
        let ok = crate::checksum::crc32c(payload) == crc;
        if !ok {
            if end == b.len() {
                return Ok(Replay { records, truncated: torn });
            }
            return Err(corrupt(
                at as u64,
                "checksum mismatch in a record followed by others (damaged acknowledged data)".into(),
            ));
        }
        let r: Record = serde_json::from_slice(payload)
            .map_err(|e| corrupt(at as u64, format!("checksummed record is not readable: {e}")))?;
        if records.last().is_some_and(|p: &Record| p.seq >= r.seq) {
            return Err(corrupt(at as u64, format!("sequence {} does not increase", r.seq)));
        }
        records.push(r);
        at = end;
    }
    Ok(Replay { records, truncated: None })
}

/// Log records as (sequence, payload) pairs, oldest first.
pub type Records = Vec<(u64, Vec<u8>)>;
