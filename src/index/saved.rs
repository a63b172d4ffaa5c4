//! A saved index: the hnsw_rs files plus a metadata sidecar
//! (`{name}.index.json`) that says what the graph was built over, so that a
//! stale graph (other vectors, another embedding version) is refused
//! instead of silently searched.

use super::{Graph, IndexError, IndexParams};
use crate::embed::EmbeddingId;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What an index was built over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// Sidecar format version.
    pub format: u32,
    /// The embedding that made the vectors.
    pub embedding: EmbeddingId,
    /// Number of vectors.
    pub count: usize,
    /// CRC32C of the vectors (f32 little-endian, row after row).
    pub vectors_crc32c: u32,
    /// Build parameters.
    pub params: IndexParams,
    /// Base name of the hnsw_rs files (`{base}.hnsw.graph`, `.hnsw.data`).
    pub hnsw_base: String,
}

/// CRC32C of a run of f32 values as little-endian bytes.
pub fn vectors_crc(vectors: &[f32]) -> u32 {
    vectors.chunks(16384).fold(0u32, |crc, chunk| {
        let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
        crc32c::crc32c_append(crc, &bytes)
    })
}

/// Saves `graph` as `name` in `dir` with its metadata.
pub fn save(graph: &Graph, dir: &Path, name: &str, mut meta: IndexMeta) -> Result<IndexMeta, IndexError> {
    meta.hnsw_base = graph.save(dir, name)?;
    meta.count = graph.len();
    let path = dir.join(format!("{name}.index.json"));
    let json =
        serde_json::to_vec_pretty(&meta).map_err(|e| IndexError::Io(path.display().to_string(), e.to_string()))?;
    crate::fsutil::write_atomic(&path, &json).map_err(|e| IndexError::Io(path.display().to_string(), e.to_string()))?;
    Ok(meta)
}

/// Loads index `name` from `dir`. With `expect`, the embedding and the
/// vectors' checksum must match, else the index is stale.
pub fn load(
    dir: &Path,
    name: &str,
    mmap: bool,
    expect: Option<(&EmbeddingId, u32)>,
) -> Result<(Graph, IndexMeta), IndexError> {
    let path = dir.join(format!("{name}.index.json"));
    let text = std::fs::read(&path).map_err(|_| IndexError::Missing(path.display().to_string()))?;
    let meta: IndexMeta = serde_json::from_slice(&text)
        .map_err(|e| IndexError::Stale(format!("{}: unreadable metadata: {e}", path.display())))?;
    if meta.format != 1 {
        return Err(IndexError::Stale(format!("{}: metadata format {}", path.display(), meta.format)));
    }
    if let Some((emb, crc)) = expect {
        if meta.embedding != *emb {
            return Err(IndexError::Stale(format!("built with {}, vectors are {emb}", meta.embedding)));
        }
        if meta.vectors_crc32c != crc {
            return Err(IndexError::Stale(format!(
                "built over vectors with CRC32C {:08x}, these have {crc:08x}",
                meta.vectors_crc32c
            )));
        }
    }
    let graph = Graph::load(dir, &meta.hnsw_base, mmap)?;
    if graph.len() != meta.count {
        return Err(IndexError::Stale(format!("graph holds {} points, metadata says {}", graph.len(), meta.count)));
    }
    Ok((graph, meta))
}
