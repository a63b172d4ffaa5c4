//! whorl's own HNSW index: a graph laid out as in `layout.rs`, searched in
//! place over bytes it shares (a shard's memory map, or memory for a graph
//! built on the spot), scoring the vectors of the shard's own embedding
//! section: one copy of every vector, no parsing on open.

use super::build::{Reachability, build};
use super::layout::{self, GraphLayout, GraphRef};
use super::search::{Links, NodeScorer, greedy, search_layer, take_results, with_scratch};
use super::vectors::{Rows, VectorKind, Vectors};
use super::{CandidateIndex, Hit, IndexError, IndexKind, IndexParams};
use std::ops::Range;
use std::sync::Arc;

/// Bytes shared between a file's users (a memory map, or memory).
pub type Bytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Bytes in memory, 8-byte aligned, so that typed views of them succeed.
#[derive(Debug, Clone)]
pub struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    /// A copy of `bytes`.
    pub fn new(bytes: &[u8]) -> AlignedBytes {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        AlignedBytes { words, len: bytes.len() }
    }
}

impl AlignedBytes {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> AlignedBytes {
        AlignedBytes { words: vec![0u64; len.div_ceil(8)], len }
    }
}

impl AsMut<[u8]> for AlignedBytes {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<u64, u8>(&mut self.words)[..self.len]
    }
}

impl AsRef<[u8]> for AlignedBytes {
    fn as_ref(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len]
    }
}

/// Where stored vectors lie in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorsLayout {
    /// Their kind.
    pub kind: VectorKind,
    /// Values per row.
    pub dim: usize,
    /// The values.
    pub values: Range<usize>,
    /// The per-row scales (int8 only; empty otherwise).
    pub scales: Range<usize>,
}

impl VectorsLayout {
    /// Views the vectors in `bytes` (the whole file); `None` when out of
    /// range or misaligned.
    pub fn view<'a>(&self, bytes: &'a [u8]) -> Option<Vectors<'a>> {
        let values = bytes.get(self.values.clone())?;
        let rows = match self.kind {
            VectorKind::F32 => Rows::F32(bytemuck::try_cast_slice(values).ok()?),
            VectorKind::F16 => Rows::F16(bytemuck::try_cast_slice(values).ok()?),
            VectorKind::I8 => Rows::I8 {
                values: bytemuck::cast_slice(values),
                scales: bytemuck::try_cast_slice(bytes.get(self.scales.clone())?).ok()?,
            },
        };
        Some(Vectors { rows, dim: self.dim })
    }
}

/// An HNSW graph searched in place.
pub struct MappedGraph {
    graph_bytes: Bytes,
    layout: GraphLayout,
    vector_bytes: Bytes,
    vectors: VectorsLayout,
}

impl std::fmt::Debug for MappedGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedGraph")
            .field("position", &self.layout.position)
            .field("nodes", &self.layout.nodes)
            .field("vectors", &self.vectors.kind)
            .finish()
    }
}

impl Links for GraphRef<'_> {
    fn nodes(&self) -> usize {
        self.len()
    }
    #[inline]
    fn links(&self, node: u32, level: usize, out: &mut Vec<u32>) {
        out.clear();
        out.extend_from_slice(self.neighbours(node, level));
    }
    #[inline]
    fn prefetch(&self, node: u32) {
        let w = self.m0 + 1;
        let at = node as usize * w;
        super::kernels::prefetch(self.level0.get(at..at + w).unwrap_or(&[]));
    }
}

impl MappedGraph {
    /// The graph `layout` in `graph_bytes` over the vectors `vectors` in
    /// `vector_bytes` (often the same file); checks that both can be viewed.
    pub fn open(
        graph_bytes: Bytes,
        layout: GraphLayout,
        vector_bytes: Bytes,
        vectors: VectorsLayout,
    ) -> Result<MappedGraph, IndexError> {
        let g = MappedGraph { graph_bytes, layout, vector_bytes, vectors };
        g.view()?;
        Ok(g)
    }

    /// Builds a graph in memory over `rows` of the vectors `vectors` in
    /// `vector_bytes` (the same code path as a graph read from a shard:
    /// built, laid out as a section, then searched in place).
    pub fn build(
        vector_bytes: Bytes,
        vectors: VectorsLayout,
        rows: &[u32],
        position: u8,
        p: &IndexParams,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(MappedGraph, Reachability), IndexError> {
        let v = vectors
            .view(vector_bytes.as_ref().as_ref())
            .ok_or_else(|| IndexError::Corrupt { offset: vectors.values.start as u64, problem: "vectors".into() })?;
        let (built, reach) = build(v, rows, position, p, SEED, progress)?;
        let section = layout::write(p.max_connections, 2 * p.max_connections, p.ef_construction, SEED, &[built]);
        let mut layouts = layout::parse(&section, 0)?;
        let layout = layouts.pop().ok_or_else(|| IndexError::Corrupt { offset: 0, problem: "no graph".into() })?;
        let bytes: Bytes = Arc::new(AlignedBytes::new(&section));
        Ok((MappedGraph::open(bytes, layout, vector_bytes, vectors)?, reach))
    }

    fn view(&self) -> Result<(GraphRef<'_>, Vectors<'_>), IndexError> {
        let g = GraphRef::new(self.graph_bytes.as_ref().as_ref(), &self.layout).ok_or_else(|| IndexError::Corrupt {
            offset: self.layout.rows.start as u64,
            problem: "graph arrays outside the file or misaligned".into(),
        })?;
        let v = self.vectors.view(self.vector_bytes.as_ref().as_ref()).ok_or_else(|| IndexError::Corrupt {
            offset: self.vectors.values.start as u64,
            problem: "vectors outside the file or misaligned".into(),
        })?;
        Ok((g, v))
    }

    /// Its layout (position, nodes, byte ranges).
    pub fn layout(&self) -> &GraphLayout {
        &self.layout
    }

    /// The row of each node.
    pub fn rows(&self) -> Vec<u32> {
        self.view().map(|(g, _)| g.rows.to_vec()).unwrap_or_default()
    }

    /// Bytes the candidate stage keeps resident for this graph: its arrays
    /// and its nodes' vectors.
    pub fn resident_bytes(&self) -> usize {
        let l = &self.layout;
        let graph = l.rows.len() + l.levels.len() + l.level0.len() + l.upper_index.len() + l.upper.len();
        let k = self.vectors.kind;
        graph + l.nodes * (self.vectors.dim * k.value_bytes() + k.scale_bytes())
    }

    /// Node numbers a walk from the entry cannot reach on level 0 (0 after a build's repair).
    pub fn unreachable(&self) -> Result<usize, IndexError> {
        let (g, _) = self.view()?;
        if g.is_empty() {
            return Ok(0);
        }
        let mut seen = vec![false; g.len()];
        let mut stack = vec![g.entry];
        seen[g.entry as usize] = true;
        while let Some(x) = stack.pop() {
            for &y in g.neighbours(x, 0) {
                if let Some(s) = seen.get_mut(y as usize).filter(|s| !**s) {
                    *s = true;
                    stack.push(y);
                }
            }
        }
        Ok(seen.iter().filter(|s| !**s).count())
    }

    fn run(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        filter: Option<&dyn Fn(u32) -> bool>,
    ) -> Result<Vec<Hit>, IndexError> {
        let (g, v) = self.view()?;
        if q.len() != v.dim {
            return Err(IndexError::Shape { len: q.len(), dim: v.dim });
        }
        if q.iter().any(|x| !x.is_finite()) {
            return Err(IndexError::Query("the query holds a value that is not finite".into()));
        }
        if g.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        Ok(with_scratch(|sc| {
            let mut query = std::mem::take(&mut sc.query);
            v.prepare(q, &mut query);
            let nodes = NodeScorer { rows: g.rows, scorer: v.scorer(&query) };
            let mut cur = (nodes.score(g.entry), g.entry);
            for l in (1..=g.max_level).rev() {
                cur = greedy(&g, &nodes, cur, l, &mut sc.buf);
            }
            search_layer(&g, &nodes, cur, ef.max(k), 0, filter, sc);
            let out = take_results(sc, k);
            sc.query = query;
            out
        }))
    }
}

/// Seed of the level draw of graphs whorl builds.
pub const SEED: u64 = 0x5748_4f52_4c31;

impl CandidateIndex for MappedGraph {
    fn kind(&self) -> IndexKind {
        IndexKind::Whorl
    }

    fn len(&self) -> usize {
        self.layout.nodes
    }

    fn search(&self, q: &[f32], k: usize, ef: usize) -> Result<Vec<Hit>, IndexError> {
        self.run(q, k, ef, None)
    }

    fn search_filtered(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        filter: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<Hit>, IndexError> {
        self.run(q, k, ef, Some(filter))
    }
}
