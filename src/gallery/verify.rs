//! `whorl verify`: every file the gallery serves from, checked against its
//! checksum, without opening the gallery for serving.

use super::manifest::Manifest;
use super::{GalleryError, wal};
use crate::index::saved;
use crate::shard::Shard;
use std::path::Path;
use std::time::Instant;

/// The check of one file (or one group of files).
#[derive(Debug, Clone, PartialEq)]
pub struct FileCheck {
    /// What was checked.
    pub what: String,
    /// The problem, if any.
    pub problem: Option<String>,
    /// What it holds, when sound.
    pub detail: String,
}

/// Checks the gallery in `dir`: the manifest (an error when damaged),
/// every shard it lists (every section's CRC32C, graphs included, and
/// that it is the file the manifest names), the hnsw_rs files beside each
/// shard if any (the sidecar's CRC32C and those it lists), and the
/// write-ahead log (each record's CRC32C). Checking the log trims a torn
/// tail, as opening would.
pub fn verify(dir: &Path) -> Result<Vec<FileCheck>, GalleryError> {
    let m = Manifest::load(dir)?;
    let mut out = Vec::new();
    for s in &m.shards {
        let t = Instant::now();
        let r = Shard::open(&dir.join(&s.file)).and_then(|sh| sh.verify().map(|_| sh));
        let problem = match &r {
            Ok(sh) if sh.header().table_crc != s.table_crc => {
                Some("file differs from the one the manifest lists".into())
            }
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        let detail = match &r {
            Ok(sh) => format!(
                "{} templates, format {}, {} vectors, {} graph(s), {:.2} s",
                s.templates,
                sh.header().version,
                sh.vector_kind(),
                sh.graphs().len(),
                t.elapsed().as_secs_f64()
            ),
            Err(_) => String::new(),
        };
        out.push(FileCheck { what: s.file.clone(), problem, detail });
        if saved::sidecar(dir, &s.name).exists() {
            let r = saved::verify_set(dir, &s.name);
            out.push(FileCheck {
                what: format!("{}.index.json and its hnsw_rs files", s.name),
                detail: r.as_ref().map(|m| format!("{} graph(s)", m.partitions.len())).unwrap_or_default(),
                problem: r.err().map(|e| e.to_string()),
            });
        }
    }
    let log = match wal::Wal::open(dir, wal::SyncMode::PerRecord) {
        Ok((_, r)) => FileCheck {
            what: wal::FILE.into(),
            problem: None,
            detail: format!(
                "{} records ({} after the last compaction)",
                r.records.len(),
                r.records.iter().filter(|x| x.seq > m.applied_seq).count()
            ),
        },
        Err(e) => FileCheck { what: wal::FILE.into(), problem: Some(e.to_string()), detail: String::new() },
    };
    out.push(log);
    Ok(out)
}
