//! The gallery: a folder of shards (with their HNSW graphs inside), a
//! manifest and a write-ahead log, served as immutable snapshots.
//!
//! ```text
//! GALLERY/
//!   manifest.json                    shards, embedding, vector kind, cylinder parameters, applied log sequence
//!   wal.log                          enrolments and deletions since the last compaction
//!   shard-0000.whorl                 a shard with its graphs (see crate::shard)
//!   only with index = "hnsw_rs":
//!   shard-0000.index.json            its hnsw_rs index: what it was built over, each file's length and CRC32C
//!   shard-0000.pNN.hnsw.graph / .data  the hnsw_rs graph of its finger position NN
//! ```
//!
//! Every file a gallery serves from is covered by a checksum that opening
//! and `whorl verify` ([`verify()`]) check: the manifest's, the shards'
//! section CRCs (graphs included), the hnsw_rs sidecar's own and the ones
//! it lists, the log's per record.
//!
//! A search takes a [`Snapshot`] (an `Arc`): the shards, the delta and the
//! tombstones as they were at that instant, consistent whatever shards are
//! attached, detached or compacted meanwhile. Enrolments and deletions are
//! logged and fsynced before they are acknowledged, then applied to the
//! in-memory delta; [`Gallery::compact`] folds delta and tombstones into new
//! shards atomically (new files, then the manifest swap) and trims the log.
//! A shard that fails to open or verify is left out and reported: the
//! gallery opens degraded rather than serving damaged data.
//!
//! Writes: an enrolment creates a subject (ALREADY_EXISTS when the id is
//! visible) or, with [`WriteMode::Replace`], replaces all of it in one log
//! record; one template per known finger position, as in a probe.

mod build;
pub mod delta;
mod loaded;
pub mod lock;
pub mod manifest;
pub mod replica;
mod verify;
pub mod wal;
mod write;

pub use build::{BuildOptions, BuildProgress, BuildReport, Item as BuildItem, build, build_with};
pub use delta::{Delta, DeltaEntry};
pub use loaded::{LoadedShard, Partition};
pub use lock::GalleryLock;
pub use manifest::{Manifest, ShardEntry};
pub use verify::{FileCheck, verify};
pub use wal::SyncMode;
pub use write::{CompactReport, MAX_TEMPLATES, MAX_TEXT, SubjectView, WriteMode};
pub use write::{MigrateReport, migrate};

use crate::embed::Embedder;
use crate::index::{IndexError, IndexKind, IndexParams};
use crate::mcc::Matcher;
use crate::shard::ShardError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// How a gallery is opened.
#[derive(Debug, Clone, PartialEq)]
pub struct GalleryOptions {
    /// Check every section's CRC32C before serving a shard; in format 3
    /// the cylinders and minutiae are checked template by template when
    /// first read instead ([`crate::shard::Shard::verify_open`]). Those
    /// per-template checks run whatever this says.
    pub verify_on_open: bool,
    /// Build indexes that are missing or stale (hnsw_rs files: saved; whorl
    /// graphs of a shard that has none: in memory).
    pub build_missing_indexes: bool,
    /// Which HNSW implementation to search.
    pub index_kind: IndexKind,
    /// Parameters of graphs built here (compaction, missing indexes).
    pub index: IndexParams,
    /// Durability of the write-ahead log.
    pub sync: SyncMode,
    /// Largest shard `compact` writes.
    pub shard_size: usize,
}

impl Default for GalleryOptions {
    fn default() -> GalleryOptions {
        GalleryOptions {
            verify_on_open: true,
            build_missing_indexes: true,
            index_kind: IndexKind::Whorl,
            index: IndexParams::default(),
            sync: SyncMode::PerRecord,
            shard_size: 1_000_000,
        }
    }
}

/// Errors of the gallery.
#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    /// The manifest is missing or damaged.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// A shard is damaged or does not fit.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// An index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The write-ahead log failed.
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    /// The gallery was made with another embedding or matcher.
    #[error("gallery mismatch: {0}")]
    Mismatch(String),
    /// A request the gallery refuses.
    #[error("{0}")]
    Invalid(String),
    /// No such subject or shard.
    #[error("not found: {0}")]
    NotFound(String),
    /// The subject (or shard) is already there.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// Another write of the same subject is in progress.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Another process holds the gallery's lock.
    #[error("gallery locked: {0}")]
    Locked(String),
    /// The caller went away or its deadline passed before the change was logged.
    #[error("stopped before the change was logged: {0}")]
    Stopped(crate::cancel::Stop),
    /// A file operation failed.
    #[error("{0}")]
    Io(String),
}

/// A shard left out of the gallery, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardProblem {
    /// The shard's name.
    pub name: String,
    /// The error.
    pub error: String,
}

/// What a search sees.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Changes with every snapshot.
    pub generation: u64,
    /// The shards being served.
    pub shards: Vec<Arc<LoadedShard>>,
    /// Enrolments and tombstones since the last compaction.
    pub delta: Arc<Delta>,
}

impl Snapshot {
    /// Templates visible (shards minus tombstoned subjects, plus live delta).
    pub fn templates(&self) -> usize {
        let shards: usize = self
            .shards
            .iter()
            .map(|s| {
                if self.delta.tombstones.is_empty() {
                    s.shard.len()
                } else {
                    s.by_subject.iter().filter(|(k, _)| !self.delta.hides_shard_subject(k)).map(|(_, v)| v.len()).sum()
                }
            })
            .sum();
        shards + self.delta.live().count()
    }

    /// Subjects visible (in shards and not deleted, or enrolled since).
    pub fn subjects(&self) -> u64 {
        let mut n: u64 = 0;
        for s in &self.shards {
            n += s.by_subject.len() as u64;
            n -= self.delta.tombstones.keys().filter(|t| s.by_subject.contains_key(*t)).count() as u64;
        }
        let delta: std::collections::HashSet<&str> = self.delta.live().map(|e| &*e.subject).collect();
        // A delta subject counts unless its shard templates are visible too
        // (deleted and enrolled again: the shard copy is hidden).
        n += delta
            .iter()
            .filter(|s| {
                self.delta.hides_shard_subject(s) || !self.shards.iter().any(|x| x.by_subject.contains_key(**s))
            })
            .count() as u64;
        n
    }
}

/// An open gallery.
pub struct Gallery {
    dir: PathBuf,
    opts: GalleryOptions,
    embedder: Embedder,
    matcher: Matcher,
    state: RwLock<Arc<Snapshot>>,
    /// The current manifest; held while changing shards or the delta.
    manifest: Mutex<Manifest>,
    /// Appends hold it shared, compaction exclusively.
    maintenance: RwLock<()>,
    wal: wal::Wal,
    problems: RwLock<Vec<ShardProblem>>,
    /// Subject ids being enrolled or deleted now (one write per id at a time).
    writing: Mutex<std::collections::HashSet<String>>,
    /// Held while the gallery is open.
    _lock: GalleryLock,
}

impl std::fmt::Debug for Gallery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gallery").field("dir", &self.dir).finish()
    }
}

fn lock_err<T>(_: T) -> GalleryError {
    GalleryError::Io("gallery lock poisoned by a panic".into())
}

impl Gallery {
    /// Creates an empty gallery in `dir` (which may exist but must not hold one).
    pub fn create(dir: &Path, embedder: &Embedder, matcher: &Matcher) -> Result<(), GalleryError> {
        std::fs::create_dir_all(dir).map_err(|e| GalleryError::Io(format!("{}: {e}", dir.display())))?;
        let _lock = GalleryLock::acquire(dir)?;
        if dir.join(manifest::FILE).exists() {
            return Err(GalleryError::Invalid(format!("{} already holds a gallery", dir.display())));
        }
        Manifest::new(embedder.id(), matcher.params().clone()).store(dir)?;
        Ok(())
    }

    /// Opens the gallery in `dir`: manifest, shards (damaged ones left out
    /// and reported), indexes (rebuilt when missing or stale), and the log
    /// replayed into the delta.
    pub fn open(
        dir: &Path,
        embedder: Embedder,
        matcher: Matcher,
        opts: GalleryOptions,
    ) -> Result<Gallery, GalleryError> {
        // A folder that holds no gallery is refused before anything is
        // created in it; the manifest is read again under the lock.
        Manifest::load(dir)?;
        let lock = GalleryLock::acquire(dir)?;
        let manifest = Manifest::load(dir)?;
        if manifest.embedding != embedder.id() {
            return Err(GalleryError::Mismatch(format!(
                "{} was built with embedding {}, this build makes {}: rebuild its shards (whorl build) from their stored minutiae",
                dir.display(),
                manifest.embedding,
                embedder.id()
            )));
        }
        if manifest.mcc != *matcher.params() {
            return Err(GalleryError::Mismatch(format!("{} was built with other cylinder parameters", dir.display())));
        }
        let mut shards = Vec::new();
        let mut problems = Vec::new();
        for entry in &manifest.shards {
            match loaded::load(dir, entry, &manifest.embedding, &manifest.mcc, &opts) {
                Ok(s) => shards.push(Arc::new(s)),
                Err(e) => {
                    tracing::error!("shard {} left out: {e}", entry.name);
                    problems.push(ShardProblem { name: entry.name.clone(), error: e.to_string() });
                }
            }
        }
        let (log, replay) = wal::Wal::open(dir, opts.sync)?;
        log.bump_seq(manifest.applied_seq + 1);
        let mut delta = Delta::default();
        for r in replay.records.into_iter().filter(|r| r.seq > manifest.applied_seq) {
            write::apply(&mut delta, &embedder, &matcher, r.seq, r.op)?;
        }
        let snapshot = Snapshot { generation: manifest.generation, shards, delta: Arc::new(delta) };
        Ok(Gallery {
            dir: dir.to_path_buf(),
            opts,
            embedder,
            matcher,
            state: RwLock::new(Arc::new(snapshot)),
            manifest: Mutex::new(manifest),
            maintenance: RwLock::new(()),
            wal: log,
            problems: RwLock::new(problems),
            writing: Mutex::new(Default::default()),
            _lock: lock,
        })
    }

    /// The current snapshot: what a search sees, consistent for as long as it is held.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.read().map(|s| Arc::clone(&s)).unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// Shards left out (damaged, missing, mismatched) and served shards in
    /// which a per-template check has since found damage (every search
    /// that reads them is refused): the gallery is degraded while this is
    /// not empty.
    pub fn problems(&self) -> Vec<ShardProblem> {
        let mut p = self.problems.read().map(|p| p.clone()).unwrap_or_default();
        for s in &self.snapshot().shards {
            if let Some(e) = s.shard.damage() {
                p.push(ShardProblem { name: s.entry.name.clone(), error: e.to_string() });
            }
        }
        p
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The embedder vectors are made with.
    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// The matcher cylinders are made for.
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// A copy of the current manifest.
    pub fn manifest(&self) -> Result<Manifest, GalleryError> {
        self.manifest.lock().map(|m| m.clone()).map_err(lock_err)
    }

    /// Bytes in the write-ahead log.
    pub fn wal_bytes(&self) -> u64 {
        self.wal.len()
    }

    /// Records in the write-ahead log.
    pub fn wal_records(&self) -> u64 {
        self.wal.records()
    }

    fn publish(&self, f: impl FnOnce(&Snapshot) -> Snapshot) -> Result<(), GalleryError> {
        let mut g = self.state.write().map_err(lock_err)?;
        let next = f(&g);
        *g = Arc::new(next);
        Ok(())
    }
}
