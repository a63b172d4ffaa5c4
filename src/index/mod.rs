//! Candidate search over embeddings: an HNSW graph ([`hnsw`], through
//! hnsw_rs) and an exact brute-force search ([`exact`]) over the same unit
//! vectors, both by inner product.

pub mod exact;
pub mod hnsw;
pub mod saved;

pub use exact::exact_search;
pub use hnsw::Graph;
pub use saved::{IndexMeta, vectors_crc};

use serde::{Deserialize, Serialize};

/// One candidate: the row id and its inner product with the query.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Hit {
    /// Row id in the indexed vectors.
    pub id: u32,
    /// Inner product with the query (cosine similarity of unit vectors).
    pub score: f32,
}

/// Build parameters of the HNSW graph.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IndexParams {
    /// Neighbours kept per node (hnsw_rs `max_nb_connection`; hnswlib's `M`), at most 256.
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
    /// Refuses what hnsw_rs cannot take.
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
    /// A file of a saved index is missing.
    #[error("index file missing: {0}")]
    Missing(String),
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
