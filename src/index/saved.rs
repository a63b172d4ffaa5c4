//! hnsw_rs indexes saved beside a shard: one graph per finger position
//! (`{name}.pNN.hnsw.graph` and `.hnsw.data`, hnsw_rs's own files) and a
//! sidecar `{name}.index.json` that says what they were built over (so a
//! stale index is refused instead of silently searched) and carries the
//! length and CRC32C of every file it lists.
//!
//! The sidecar is two lines, like the gallery manifest: the metadata as
//! compact JSON, then `crc32c <8 hex digits>` of the first line. Loading
//! checks that checksum, then each listed file's length and CRC32C, before
//! hnsw_rs reads a byte: hnsw_rs trusts its files (a damaged one can make
//! it panic or serve wrong neighbours), so nothing unchecked reaches it.

use super::hnsw::HnswRsGraph;
use super::{CandidateIndex, IndexError, IndexParams};
use crate::embed::EmbeddingId;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Format of the sidecar.
pub const SET_FORMAT: u32 = 3;

/// One graph of a partitioned index: the templates of one finger position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionMeta {
    /// Finger position code (0 unknown, 1-10) of every vector in the graph.
    pub position: u8,
    /// Number of vectors.
    pub count: usize,
    /// Base name of its hnsw_rs files.
    pub hnsw_base: String,
    /// Length and CRC32C of `{hnsw_base}.hnsw.graph`.
    pub graph_file: (u64, u32),
    /// Length and CRC32C of `{hnsw_base}.hnsw.data`.
    pub data_file: (u64, u32),
}

/// What a partitioned index (one graph per finger position) was built over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetMeta {
    /// Sidecar format version ([`SET_FORMAT`]).
    pub format: u32,
    /// The embedding that made the vectors.
    pub embedding: EmbeddingId,
    /// CRC32C of all the vectors of the shard (its embeddings section).
    pub vectors_crc32c: u32,
    /// Build parameters.
    pub params: IndexParams,
    /// The graphs, by ascending position.
    pub partitions: Vec<PartitionMeta>,
}

/// Kept for the single-graph experiments of `whorl eval-candidates`: what
/// one saved graph was built over.
pub type IndexMeta = SetMeta;

/// CRC32C of a run of f32 values as little-endian bytes.
pub fn vectors_crc(vectors: &[f32]) -> u32 {
    crate::checksum::crc32c(bytemuck::cast_slice(vectors))
}

/// The sidecar of index `name` in `dir`.
pub fn sidecar(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.index.json"))
}

fn io(path: &Path, e: impl std::fmt::Display) -> IndexError {
    IndexError::Io(path.display().to_string(), e.to_string())
}

/// Length and CRC32C of a file, read in 1 MiB blocks.
pub fn file_crc(path: &Path) -> Result<(u64, u32), IndexError> {
    let mut f = std::fs::File::open(path).map_err(|_| IndexError::Missing(path.display().to_string()))?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut len, mut crc) = (0u64, 0u32);
    loop {
        let n = f.read(&mut buf).map_err(|e| io(path, e))?;
        if n == 0 {
            return Ok((len, crc));
        }
        crc = crate::checksum::crc32c_append(crc, &buf[..n]);
        len += n as u64;
    }
}

fn hnsw_files(dir: &Path, base: &str) -> [PathBuf; 2] {
    [dir.join(format!("{base}.hnsw.graph")), dir.join(format!("{base}.hnsw.data"))]
}

/// Saves one graph per finger position as `{name}.pNN` in `dir`, then the
/// sidecar (last, atomically: a crash leaves the old index or none).
pub fn save_set(
    parts: &[(u8, &HnswRsGraph)],
    dir: &Path,
    name: &str,
    embedding: EmbeddingId,
    vectors_crc32c: u32,
    params: IndexParams,
) -> Result<SetMeta, IndexError> {
    let mut partitions = Vec::with_capacity(parts.len());
    for (position, graph) in parts {
        let base = graph.save(dir, &format!("{name}.p{position:02}"))?;
        let [g, d] = hnsw_files(dir, &base);
        for f in [&g, &d] {
            std::fs::File::open(f).and_then(|f| f.sync_all()).map_err(|e| io(f, e))?;
        }
        partitions.push(PartitionMeta {
            position: *position,
            count: graph.len(),
            hnsw_base: base,
            graph_file: file_crc(&g)?,
            data_file: file_crc(&d)?,
        });
    }
    let meta = SetMeta { format: SET_FORMAT, embedding, vectors_crc32c, params, partitions };
    let path = sidecar(dir, name);
    let mut body = serde_json::to_vec(&meta).map_err(|e| io(&path, e))?;
    let crc = crate::checksum::crc32c(&body);
    body.extend_from_slice(format!("\ncrc32c {crc:08x}\n").as_bytes());
    crate::fsutil::write_atomic(&path, &body).map_err(|e| io(&path, e))?;
    Ok(meta)
}

/// Reads and checks the sidecar of index `name`.
pub fn read_set_meta(dir: &Path, name: &str) -> Result<SetMeta, IndexError> {
    let path = sidecar(dir, name);
    let b = std::fs::read(&path).map_err(|_| IndexError::Missing(path.display().to_string()))?;
    let damaged = |what: String| IndexError::Damaged(format!("{}: {what}", path.display()));
    let nl = b.iter().position(|&c| c == b'\n').ok_or_else(|| damaged("no checksum line".into()))?;
    let (body, line) = (&b[..nl], &b[nl + 1..]);
    let stored = std::str::from_utf8(line)
        .ok()
        .and_then(|l| l.strip_prefix("crc32c "))
        .and_then(|h| u32::from_str_radix(h.trim_end(), 16).ok().filter(|_| h.len() == 9 && h.ends_with('\n')))
        .ok_or_else(|| damaged("the checksum line is not 'crc32c XXXXXXXX' (an older format?)".into()))?;
    let computed = crate::checksum::crc32c(body);
    if stored != computed {
        return Err(damaged(format!("CRC32C mismatch (stored {stored:08x}, computed {computed:08x})")));
    }
    let meta: SetMeta = serde_json::from_slice(body).map_err(|e| damaged(format!("unreadable metadata: {e}")))?;
    if meta.format != SET_FORMAT {
        return Err(IndexError::Stale(format!("{}: metadata format {}", path.display(), meta.format)));
    }
    Ok(meta)
}

/// Checks every file the sidecar lists against its length and CRC32C.
pub fn verify_set(dir: &Path, name: &str) -> Result<SetMeta, IndexError> {
    let meta = read_set_meta(dir, name)?;
    for p in &meta.partitions {
        let [g, d] = hnsw_files(dir, &p.hnsw_base);
        for (f, want) in [(&g, p.graph_file), (&d, p.data_file)] {
            let got = file_crc(f)?;
            if got != want {
                return Err(IndexError::Damaged(format!(
                    "{}: {} bytes with CRC32C {:08x}, the sidecar lists {} bytes with {:08x}",
                    f.display(),
                    got.0,
                    got.1,
                    want.0,
                    want.1
                )));
            }
        }
    }
    Ok(meta)
}

/// Loads partitioned index `name` after checking every file. `expect`
/// gives the embedding, the vectors' checksum and the number of vectors
/// per position the shard holds now; any difference makes it stale.
pub fn load_set(
    dir: &Path,
    name: &str,
    mmap: bool,
    expect: (&EmbeddingId, u32, &[(u8, usize)]),
) -> Result<(Vec<(u8, HnswRsGraph)>, SetMeta), IndexError> {
    let meta = read_set_meta(dir, name)?;
    let (emb, crc, counts) = expect;
    if meta.embedding != *emb {
        return Err(IndexError::Stale(format!("built with {}, vectors are {emb}", meta.embedding)));
    }
    if meta.vectors_crc32c != crc {
        return Err(IndexError::Stale(format!(
            "built over vectors with CRC32C {:08x}, these have {crc:08x}",
            meta.vectors_crc32c
        )));
    }
    let listed: Vec<(u8, usize)> = meta.partitions.iter().map(|p| (p.position, p.count)).collect();
    if listed != counts {
        return Err(IndexError::Stale(format!("partitions {listed:?} do not match the shard's {counts:?}")));
    }
    verify_set(dir, name)?;
    let mut graphs = Vec::with_capacity(meta.partitions.len());
    for p in &meta.partitions {
        let graph = HnswRsGraph::load(dir, &p.hnsw_base, mmap)?;
        if graph.len() != p.count {
            return Err(IndexError::Stale(format!(
                "graph {} holds {} points, metadata says {}",
                p.hnsw_base,
                graph.len(),
                p.count
            )));
        }
        graphs.push((p.position, graph));
    }
    Ok((graphs, meta))
}

/// Removes the files of index `name` (its graphs as the sidecar lists them,
/// then the sidecar); missing files are not an error.
pub fn remove_set(dir: &Path, name: &str) {
    let path = sidecar(dir, name);
    // Even a damaged sidecar names its graphs: find them by prefix too.
    if let Ok(rd) = std::fs::read_dir(dir) {
        let prefix = format!("{name}.p");
        for e in rd.flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            if f.starts_with(&prefix) && (f.ends_with(".hnsw.graph") || f.ends_with(".hnsw.data")) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_file(path);
}
