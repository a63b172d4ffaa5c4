//! Candidate search over embeddings, by inner product, behind one trait
//! ([`CandidateIndex`]) with two implementations:
//!
//! * whorl's own HNSW ([`mapped::MappedGraph`]): graphs that are sections
//!   of the shard file (`layout.rs`), built in parallel (`build.rs`) and
//!   searched in place (`search.rs`) over the shard's own embeddings in
//!   f32, f16 or int8 (`vectors.rs`) with SIMD kernels picked at run time
//!   (`kernels.rs`); the default;
//! * hnsw_rs ([`hnsw::HnswRsGraph`]), whose graphs are files beside the
//!   shard (`saved.rs`), kept as a second opinion: one test suite runs
//!   against both.
//!
//! [`exact`] is the brute-force search used as ground truth.

pub mod build;
pub mod exact;
pub mod hnsw;
pub mod kernels;
pub mod layout;
pub mod mapped;
mod repair;
pub mod saved;
pub(crate) mod search;
pub mod vectors;

pub use build::Reachability;
pub use exact::exact_search;
pub use hnsw::HnswRsGraph;
pub use mapped::{AlignedBytes, Bytes, MappedGraph, VectorsLayout};
pub use saved::{IndexMeta, vectors_crc};
pub use vectors::{VectorKind, Vectors};

use serde::{Deserialize, Serialize};

/// One candidate: the row id and its inner product with the query.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Hit {
    /// Row id in the indexed vectors.
    pub id: u32,
    /// Inner product with the query (cosine similarity of unit vectors).
    pub score: f32,
}

/// Which HNSW implementation a gallery searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum IndexKind {
    /// whorl's graphs, sections of the shard file, searched in place.
    #[default]
    #[serde(rename = "whorl")]
    Whorl,
    /// hnsw_rs graphs in files beside the shard.
    #[serde(rename = "hnsw_rs")]
    HnswRs,
}

impl IndexKind {
    /// The name used in configuration and reports.
    pub fn name(self) -> &'static str {
        match self {
            IndexKind::Whorl => "whorl",
            IndexKind::HnswRs => "hnsw_rs",
        }
    }

    /// From its name.
    pub fn parse(s: &str) -> Option<IndexKind> {
        [IndexKind::Whorl, IndexKind::HnswRs].into_iter().find(|k| k.name() == s)
    }
}

impl std::fmt::Display for IndexKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Nearest-neighbour search over the rows of one partition (ids 0..len).
pub trait CandidateIndex: Send + Sync + std::fmt::Debug {
    /// Which implementation.
    fn kind(&self) -> IndexKind;

    /// Number of points.
    fn len(&self) -> usize;

    /// Whether it holds no point.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k` points of largest inner product with `q`, best first,
    /// searching with a list of `ef` (at least `k`).
    fn search(&self, q: &[f32], k: usize, ef: usize) -> Result<Vec<Hit>, IndexError>;

    /// As [`Self::search`], among the points that pass `filter` only.
    fn search_filtered(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        filter: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<Hit>, IndexError>;
}

/// Build parameters of the HNSW graph.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IndexParams {
    /// Neighbours kept per node on levels above 0 (hnswlib's `M`; level 0
    /// keeps 2·M), 2 to 256.
    pub max_connections: usize,
    /// Candidate list size while building.
    pub ef_construction: usize,
}

impl Default for IndexParams {
    fn default() -> IndexParams {
        IndexParams { max_connections: 32, ef_construction: 200 }
    }
}

impl IndexParams {
    /// Refuses what either implementation cannot take (hnsw_rs exits the
    /// process beyond 256).
    pub fn check(&self) -> Result<(), IndexError> {
        if !(2..=256).contains(&self.max_connections) {
            return Err(IndexError::Params(format!("max_connections {} is outside 2..=256", self.max_connections)));
        }
        if self.ef_construction == 0 {
            return Err(IndexError::Params("ef_construction must be positive".into()));
        }
        Ok(())
    }
}

/// Errors of the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Parameters hnsw_rs would refuse (some by exiting the process).
    #[error("index parameters: {0}")]
    Params(String),
    /// A vector is not unit length (the inner-product distance needs it).
    #[error("vector {id} has norm {norm}, not 1: embeddings must be L2-normalised")]
    NotUnit {
        /// Row id.
        id: usize,
        /// Its norm.
        norm: f32,
    },
    /// The vectors' length is not a multiple of the dimension.
    #[error("{len} values are not rows of {dim}")]
    Shape {
        /// Values.
        len: usize,
        /// Dimension.
        dim: usize,
    },
    /// A query the index cannot score.
    #[error("query: {0}")]
    Query(String),
    /// A damaged graph or vector layout.
    #[error("graph at offset {offset}: {problem}")]
    Corrupt {
        /// Byte offset in its file.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
    /// A file of a saved index is missing.
    #[error("index file missing: {0}")]
    Missing(String),
    /// A saved index file fails its checksum or cannot be read.
    #[error("damaged index: {0}")]
    Damaged(String),
    /// A saved index does not belong to these vectors.
    #[error("stale index: {0}")]
    Stale(String),
    /// hnsw_rs failed.
    #[error("hnsw: {0}")]
    Hnsw(String),
    /// A file operation failed.
    #[error("{0}: {1}")]
    Io(String, String),
}

/// Largest deviation of a squared norm from 1 accepted.
pub const UNIT_TOLERANCE: f32 = 1e-4;

/// Checks that every row is a unit vector (squared norm within [`UNIT_TOLERANCE`] of 1).
pub fn check_unit(vectors: &[f32], dim: usize) -> Result<(), IndexError> {
    if dim == 0 || !vectors.len().is_multiple_of(dim) {
        return Err(IndexError::Shape { len: vectors.len(), dim });
    }
    for (id, row) in vectors.chunks_exact(dim).enumerate() {
        let norm2 = crate::embed::dot(row, row);
        let off = (norm2 - 1.0).abs();
        if off.is_nan() || off > UNIT_TOLERANCE {
            return Err(IndexError::NotUnit { id, norm: norm2.sqrt() });
        }
    }
    Ok(())
}
