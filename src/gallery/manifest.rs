//! The gallery manifest (`manifest.json`): which shards make the gallery,
//! what they were built with, and how far the write-ahead log has been
//! folded into them.
//!
//! The file is two lines: the manifest as compact JSON, then
//! `crc32c <8 hex digits>` of the first line's exact bytes, so that a
//! damaged manifest (any byte) is refused rather than read. It is replaced
//! atomically (temporary file, fsync, rename, fsync of the folder).

use crate::embed::EmbeddingId;
use crate::index::VectorKind;
use crate::mcc::MccParams;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// File name inside the gallery folder.
pub const FILE: &str = "manifest.json";

/// One shard of the gallery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// Name (also the stem of its files).
    pub name: String,
    /// Shard file, relative to the gallery folder.
    pub file: String,
    /// Templates.
    pub templates: u64,
    /// Subjects.
    pub subjects: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// The shard's header/section-table CRC32C (identifies this exact file).
    pub table_crc: u32,
    /// CRC32C of its embeddings section (the index is built over these).
    pub embeddings_crc: u32,
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub format: u32,
    /// Incremented at every change.
    pub generation: u64,
    /// The embedding every shard must be made with.
    pub embedding: EmbeddingId,
    /// The cylinder parameters every shard must be made with.
    pub mcc: MccParams,
    /// How new shards (compaction) store embeddings (f32 for manifests
    /// written before the field existed).
    #[serde(default)]
    pub vectors: VectorKind,
    /// Write-ahead-log records up to this sequence number are in the shards.
    pub applied_seq: u64,
    /// The shards.
    pub shards: Vec<ShardEntry>,
}

/// Errors reading or writing the manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Missing or unreadable.
    #[error("{file}: {what}")]
    Io {
        /// The file.
        file: String,
        /// What failed.
        what: String,
    },
    /// Damaged: the checksum or the JSON does not hold.
    #[error("{file}: {what} (offset {offset})")]
    Corrupt {
        /// The file.
        file: String,
        /// What is wrong.
        what: String,
        /// Byte offset.
        offset: usize,
    },
}

impl Manifest {
    /// A new, empty manifest (int8 embeddings, the build default).
    pub fn new(embedding: EmbeddingId, mcc: MccParams) -> Manifest {
        Manifest {
            format: 1,
            generation: 0,
            embedding,
            mcc,
            vectors: VectorKind::I8,
            applied_seq: 0,
            shards: Vec::new(),
        }
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = serde_json::to_vec(self).unwrap_or_default();
        let crc = crate::checksum::crc32c(&body);
        body.extend_from_slice(format!("\ncrc32c {crc:08x}\n").as_bytes());
        body
    }

    /// Parses and checks the file's bytes.
    pub fn from_bytes(file: &str, b: &[u8]) -> Result<Manifest, ManifestError> {
        let corrupt = |what: String, offset: usize| ManifestError::Corrupt { file: file.to_string(), what, offset };
        let nl = b.iter().position(|&c| c == b'\n').ok_or_else(|| corrupt("no checksum line".into(), b.len()))?;
        let (body, rest) = (&b[..nl], &b[nl + 1..]);
        let line = std::str::from_utf8(rest).map_err(|_| corrupt("checksum line is not text".into(), nl + 1))?;
        let hex = line.strip_prefix("crc32c ").map(str::trim_end).filter(|h| h.len() == 8 && line.ends_with('\n'));
        let stored = hex
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| corrupt(format!("checksum line '{}' is not 'crc32c XXXXXXXX'", line.trim_end()), nl + 1))?;
        let computed = crate::checksum::crc32c(body);
        if stored != computed {
            return Err(corrupt(format!("CRC32C mismatch (stored {stored:08x}, computed {computed:08x})"), 0));
        }
        let m: Manifest = serde_json::from_slice(body)
            .map_err(|e| corrupt(format!("not a manifest: {e}"), e.column().saturating_sub(1)))?;
        if m.format != 1 {
            return Err(corrupt(format!("manifest format {} is not supported", m.format), 0));
        }
        Ok(m)
    }

    /// Reads `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(FILE);
        let b = std::fs::read(&path)
            .map_err(|e| ManifestError::Io { file: path.display().to_string(), what: e.to_string() })?;
        Manifest::from_bytes(&path.display().to_string(), &b)
    }

    /// Atomically replaces `dir/manifest.json`.
    pub fn store(&self, dir: &Path) -> Result<(), ManifestError> {
        let path = dir.join(FILE);
        crate::fsutil::write_atomic(&path, &self.to_bytes())
            .map_err(|e| ManifestError::Io { file: path.display().to_string(), what: e.to_string() })
    }
}
