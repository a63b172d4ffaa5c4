//! HNSW through the crate hnsw_rs (0.3.5), behind an API that hides its
//! pitfalls (see `../shared/STACK.md`):
//!
//! * `max_nb_connection > 256` makes hnsw_rs exit the process: refused here;
//! * `DistDot` asserts on vectors that are not unit length: every vector
//!   is checked before insertion;
//! * `file_dump` works only with `max_layer` 16 and will not overwrite a
//!   memory-mapped file, picking another name: the name it returns is the
//!   one recorded;
//! * after `parallel_insert`, `set_searching_mode(true)`;
//! * a reloaded `Hnsw` borrows from its `HnswIo`: the two live together in
//!   one self-referencing struct (ouroboros), so the loader outlives it;
//! * `search_filter` has been reported to return filtered-out items: every
//!   result is checked against the filter again.

use super::{CandidateIndex, Hit, IndexError, IndexKind, IndexParams};
use hnsw_rs::prelude::*;
use std::path::Path;

/// hnsw_rs dumps only indexes built with this many layers.
const MAX_LAYER: usize = 16;

/// hnsw_rs's inner-product distance asserts that no inner product exceeds
/// 1.000002; f32 rounding can breach that for identical unit vectors (one
/// template enrolled twice). Vectors and queries are handed over scaled by
/// this factor, which changes no ranking; scores are scaled back.
const SHRINK: f32 = 1.0 - 1e-5;

fn shrunk(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x * SHRINK).collect()
}

#[ouroboros::self_referencing]
struct Loaded {
    io: HnswIo,
    #[borrows(mut io)]
    #[not_covariant]
    hnsw: Hnsw<'this, f32, DistDot>,
}

enum Inner {
    Built(Hnsw<'static, f32, DistDot>),
    Loaded(Loaded),
}

/// An hnsw_rs graph over unit vectors, searched by inner product.
pub struct HnswRsGraph {
    inner: Inner,
    /// Values per vector (0 for an empty graph): hnsw_rs asserts on a
    /// query of another length, so queries are checked here first.
    dim: usize,
}

impl std::fmt::Debug for HnswRsGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswRsGraph").field("points", &self.len()).finish()
    }
}

impl HnswRsGraph {
    /// Builds over `vectors` (flat, `dim` per row; row i gets id i),
    /// inserting `chunk` rows at a time in parallel and calling `progress`
    /// with the rows done.
    pub fn build(
        vectors: &[f32],
        dim: usize,
        p: &IndexParams,
        chunk: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<HnswRsGraph, IndexError> {
        p.check()?;
        let n = vectors.len() / dim.max(1);
        super::check_unit(vectors, dim)?;
        let mut hnsw: Hnsw<'static, f32, DistDot> =
            Hnsw::new(p.max_connections, n.max(1), MAX_LAYER, p.ef_construction, DistDot {});
        let chunk = chunk.max(1);
        for (k, part) in vectors.chunks(chunk * dim).enumerate() {
            let scaled = shrunk(part);
            let rows: Vec<(&[f32], usize)> =
                scaled.chunks_exact(dim).enumerate().map(|(i, v)| (v, k * chunk + i)).collect();
            hnsw.parallel_insert_slice(&rows);
            progress((k * chunk + rows.len()).min(n));
        }
        hnsw.set_searching_mode(true);
        Ok(HnswRsGraph { inner: Inner::Built(hnsw), dim: if n == 0 { 0 } else { dim } })
    }

    fn with<R>(&self, f: impl FnOnce(&Hnsw<'_, f32, DistDot>) -> R) -> R {
        match &self.inner {
            Inner::Built(h) => f(h),
            Inner::Loaded(l) => l.with_hnsw(f),
        }
    }

    /// Writes `{base}.hnsw.graph` and `{base}.hnsw.data` into `dir`; returns
    /// the base name hnsw_rs actually used (it picks a new one rather than
    /// overwrite a memory-mapped file).
    pub fn save(&self, dir: &Path, base: &str) -> Result<String, IndexError> {
        std::fs::create_dir_all(dir).map_err(|e| IndexError::Io(dir.display().to_string(), e.to_string()))?;
        self.with(|h| h.file_dump(dir, base)).map_err(|e| IndexError::Hnsw(format!("dump to {}: {e}", dir.display())))
    }

    /// Reloads a saved graph; `mmap` maps the vector data instead of reading it.
    pub fn load(dir: &Path, base: &str, mmap: bool) -> Result<HnswRsGraph, IndexError> {
        for ext in ["hnsw.graph", "hnsw.data"] {
            let p = dir.join(format!("{base}.{ext}"));
            if !p.is_file() {
                return Err(IndexError::Missing(p.display().to_string()));
            }
        }
        let mut io = HnswIo::new(dir, base);
        io.set_options(ReloadOptions::default().set_mmap(mmap));
        let loaded = LoadedTryBuilder {
            io,
            hnsw_builder: |io: &mut HnswIo| -> Result<Hnsw<'_, f32, DistDot>, IndexError> {
                let mut h = io
                    .load_hnsw::<f32, DistDot>()
                    .map_err(|e| IndexError::Hnsw(format!("reload {base} from {}: {e}", dir.display())))?;
                h.set_searching_mode(true);
                Ok(h)
            },
        }
        .try_build()?;
        let dim = loaded.with_hnsw(|h| h.get_point_indexation().get_data_dimension());
        Ok(HnswRsGraph { inner: Inner::Loaded(loaded), dim })
    }

    fn check_query(&self, q: &[f32]) -> Result<(), IndexError> {
        if self.dim != 0 && q.len() != self.dim {
            return Err(IndexError::Shape { len: q.len(), dim: self.dim });
        }
        super::check_unit(q, q.len().max(1))
    }
}

impl CandidateIndex for HnswRsGraph {
    fn kind(&self) -> IndexKind {
        IndexKind::HnswRs
    }

    /// Number of points.
    fn len(&self) -> usize {
        self.with(|h| h.get_nb_point())
    }

    /// The `k` nearest by inner product, best first, searching with `ef`.
    /// The query must be a unit vector.
    fn search(&self, q: &[f32], k: usize, ef: usize) -> Result<Vec<Hit>, IndexError> {
        self.check_query(q)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let q = shrunk(q);
        Ok(self.with(|h| h.search(&q, k, ef.max(k))).into_iter().map(hit).collect())
    }

    /// As [`Self::search`], keeping only ids that pass `filter` (checked
    /// again on every result).
    fn search_filtered(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        filter: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<Hit>, IndexError> {
        self.check_query(q)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let q = shrunk(q);
        let f = |id: &usize| u32::try_from(*id).is_ok_and(filter);
        let found = self.with(|h| h.search_filter(&q, k, ef.max(k), Some(&f)));
        Ok(found.into_iter().map(hit).filter(|h| filter(h.id)).collect())
    }
}

fn hit(n: Neighbour) -> Hit {
    Hit { id: n.d_id as u32, score: (1.0 - n.distance) / (SHRINK * SHRINK) }
}
