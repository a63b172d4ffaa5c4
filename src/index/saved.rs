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

/// An index built with embedding `built` over vectors of checksum
/// `built_crc` is stale unless both match the vectors it is loaded for.
fn built_over(built: &EmbeddingId, built_crc: u32, emb: &EmbeddingId, crc: u32) -> Result<(), IndexError> {
    if built != emb {
        return Err(IndexError::Stale(format!("built with {built}, vectors are {emb}")));
    }
    if built_crc != crc {
        return Err(IndexError::Stale(format!("built over vectors with CRC32C {built_crc:08x}, these have {crc:08x}")));
    }
    Ok(())
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
        built_over(&meta.embedding, meta.vectors_crc32c, emb, crc)?;
    }
    let graph = Graph::load(dir, &meta.hnsw_base, mmap)?;
    if graph.len() != meta.count {
        return Err(IndexError::Stale(format!("graph holds {} points, metadata says {}", graph.len(), meta.count)));
    }
    Ok((graph, meta))
}

/// One graph of a partitioned index: the templates of one finger position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionMeta {
    /// Finger position code (0 unknown, 1-10) of every vector in the graph.
    pub position: u8,
    /// Number of vectors.
    pub count: usize,
    /// Base name of its hnsw_rs files.
    pub hnsw_base: String,
}

/// What a partitioned index (one graph per finger position) was built over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetMeta {
    /// Sidecar format version (2).
    pub format: u32,
    /// The embedding that made the vectors.
    pub embedding: EmbeddingId,
    /// CRC32C of all the vectors of the shard (every partition).
    pub vectors_crc32c: u32,
    /// Build parameters.
    pub params: IndexParams,
    /// The graphs, by ascending position.
    pub partitions: Vec<PartitionMeta>,
}

/// Format of the partitioned sidecar.
pub const SET_FORMAT: u32 = 2;

fn sidecar(dir: &Path, name: &str) -> std::path::PathBuf {
    dir.join(format!("{name}.index.json"))
}

/// Saves one graph per finger position as `{name}.p{position:02}` in `dir`
/// and the sidecar `{name}.index.json` (written last, atomically: a crash
/// leaves the old index or none, never a half one).
pub fn save_set(
    parts: &[(u8, &Graph)],
    dir: &Path,
    name: &str,
    embedding: EmbeddingId,
    vectors_crc32c: u32,
    params: IndexParams,
) -> Result<SetMeta, IndexError> {
    let mut partitions = Vec::with_capacity(parts.len());
    for (position, graph) in parts {
        let base = graph.save(dir, &format!("{name}.p{position:02}"))?;
        partitions.push(PartitionMeta { position: *position, count: graph.len(), hnsw_base: base });
    }
    let meta = SetMeta { format: SET_FORMAT, embedding, vectors_crc32c, params, partitions };
    let path = sidecar(dir, name);
    let json =
        serde_json::to_vec_pretty(&meta).map_err(|e| IndexError::Io(path.display().to_string(), e.to_string()))?;
    crate::fsutil::write_atomic(&path, &json).map_err(|e| IndexError::Io(path.display().to_string(), e.to_string()))?;
    Ok(meta)
}

/// Reads the sidecar of a partitioned index.
pub fn read_set_meta(dir: &Path, name: &str) -> Result<SetMeta, IndexError> {
    let path = sidecar(dir, name);
    let text = std::fs::read(&path).map_err(|_| IndexError::Missing(path.display().to_string()))?;
    let meta: SetMeta = serde_json::from_slice(&text)
        .map_err(|e| IndexError::Stale(format!("{}: unreadable or old-format metadata: {e}", path.display())))?;
    if meta.format != SET_FORMAT {
        return Err(IndexError::Stale(format!("{}: metadata format {}", path.display(), meta.format)));
    }
    Ok(meta)
}

/// Loads partitioned index `name`. `expect` gives the embedding, the
/// vectors' checksum and the number of vectors per position the shard
/// holds now; any difference makes the index stale.
pub fn load_set(
    dir: &Path,
    name: &str,
    mmap: bool,
    expect: (&EmbeddingId, u32, &[(u8, usize)]),
) -> Result<(Vec<(u8, Graph)>, SetMeta), IndexError> {
    let meta = read_set_meta(dir, name)?;
    let (emb, crc, counts) = expect;
    built_over(&meta.embedding, meta.vectors_crc32c, emb, crc)?;
    let listed: Vec<(u8, usize)> = meta.partitions.iter().map(|p| (p.position, p.count)).collect();
    if listed != counts {
        return Err(IndexError::Stale(format!("partitions {listed:?} do not match the shard's {counts:?}")));
    }
    let mut graphs = Vec::with_capacity(meta.partitions.len());
    for p in &meta.partitions {
        let graph = Graph::load(dir, &p.hnsw_base, mmap)?;
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
    if let Ok(meta) = read_set_meta(dir, name) {
        for p in meta.partitions {
            for ext in ["hnsw.graph", "hnsw.data"] {
                let _ = std::fs::remove_file(dir.join(format!("{}.{ext}", p.hnsw_base)));
            }
        }
    }
    let _ = std::fs::remove_file(sidecar(dir, name));
}
