//! The byte layout of whorl's HNSW graphs: one section of a shard holding
//! the graph of every finger-position partition, read in place.
//!
//! | offset | bytes | field |
//! |-------:|------:|-------|
//! | 0 | 8 | magic `WHORLHNS` |
//! | 8 | 4 | partition count P |
//! | 12 | 4 | M: neighbours per node on levels ≥ 1 |
//! | 16 | 4 | M0: neighbours per node on level 0 (2·M) |
//! | 20 | 4 | ef_construction |
//! | 24 | 8 | seed of the level draw |
//! | 32 | 32 | reserved, 0 |
//! | 64 | 64 × P | partition headers (below) |
//! | … | | the arrays of each partition, each at a multiple of 64 bytes |
//!
//! A partition header (64 bytes): finger position u32, node count n u32,
//! entry node u32, top level u32, upper-level block count u32, nodes added
//! by the reachability repair u32, then the byte offsets (u64, from the
//! section's start) of its five arrays:
//!
//! | array | content |
//! |---|---|
//! | rows | u32 per node: the node's row (template) in the shard, ascending |
//! | levels | u8 per node: its top level |
//! | level0 | (1 + M0) u32 per node: neighbour count, then M0 neighbour slots |
//! | upper index | u32 per node: its first block in `upper`, or u32::MAX on level 0 only |
//! | upper | (1 + M) u32 per block: count, then M slots; a node of top level L owns L blocks (levels 1..=L) |
//!
//! Neighbours are node numbers (0..n) of the same partition. Opening checks
//! the headers and that every array lies inside the section; the search
//! treats any out-of-range number it meets as absent, so damaged contents
//! can make a search worse but never make it read out of bounds (and the
//! section's CRC32C, checked by `verify`, refuses them).

use super::IndexError;
use bytemuck::{Pod, Zeroable};
use std::ops::Range;

/// Magic at the start of the section.
pub const MAGIC: [u8; 8] = *b"WHORLHNS";
/// Arrays start at multiples of this.
const ALIGN: usize = 64;
/// Highest level a node may have.
pub const MAX_LEVEL: usize = 16;
/// Most partitions in one section.
pub const MAX_PARTITIONS: usize = 256;
/// Largest M accepted.
pub const MAX_M: usize = 256;

/// The section header (64 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct GraphsHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// Partitions.
    pub partitions: u32,
    /// M.
    pub m: u32,
    /// M0.
    pub m0: u32,
    /// ef_construction.
    pub ef_construction: u32,
    /// Seed of the level draw.
    pub seed: u64,
    /// Zero.
    pub reserved: [u32; 8],
}

/// A partition header (64 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct PartitionHeader {
    /// Finger position of every node.
    pub position: u32,
    /// Nodes.
    pub nodes: u32,
    /// Entry node.
    pub entry: u32,
    /// Its level (the top level of the graph).
    pub max_level: u32,
    /// Blocks in the upper array.
    pub upper_blocks: u32,
    /// Nodes the reachability repair linked in.
    pub repaired: u32,
    /// Offset of `rows`.
    pub rows: u64,
    /// Offset of `levels`.
    pub levels: u64,
    /// Offset of `level0`.
    pub level0: u64,
    /// Offset of `upper index`.
    pub upper_index: u64,
    /// Offset of `upper`.
    pub upper: u64,
}

const _: () = {
    assert!(std::mem::size_of::<GraphsHeader>() == 64);
    assert!(std::mem::size_of::<PartitionHeader>() == 64);
};

/// A graph built in memory, ready to be written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuiltGraph {
    /// Finger position.
    pub position: u8,
    /// Row of each node, ascending.
    pub rows: Vec<u32>,
    /// Top level of each node.
    pub levels: Vec<u8>,
    /// (1 + M0) per node.
    pub level0: Vec<u32>,
    /// First upper block per node, or u32::MAX.
    pub upper_index: Vec<u32>,
    /// (1 + M) per block.
    pub upper: Vec<u32>,
    /// Entry node.
    pub entry: u32,
    /// Its level.
    pub max_level: u32,
    /// Nodes linked in by the reachability repair.
    pub repaired: u32,
}

/// Where one partition's graph lies in the file (absolute byte ranges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphLayout {
    /// Finger position.
    pub position: u8,
    /// Nodes.
    pub nodes: usize,
    /// Entry node.
    pub entry: u32,
    /// Top level.
    pub max_level: usize,
    /// M.
    pub m: usize,
    /// M0.
    pub m0: usize,
    /// Nodes the repair linked in when it was built.
    pub repaired: u32,
    /// `rows`.
    pub rows: Range<usize>,
    /// `levels`.
    pub levels: Range<usize>,
    /// `level0`.
    pub level0: Range<usize>,
    /// `upper index`.
    pub upper_index: Range<usize>,
    /// `upper`.
    pub upper: Range<usize>,
}

/// Lays out `graphs` built with (M, M0, ef_construction, seed) as the bytes of a section.
pub fn write(m: usize, m0: usize, ef_construction: usize, seed: u64, graphs: &[BuiltGraph]) -> Vec<u8> {
    let head = GraphsHeader {
        magic: MAGIC,
        partitions: graphs.len() as u32,
        m: m as u32,
        m0: m0 as u32,
        ef_construction: ef_construction as u32,
        seed,
        reserved: [0; 8],
    };
    let mut out = bytemuck::bytes_of(&head).to_vec();
    let mut at = (64 + 64 * graphs.len()).next_multiple_of(ALIGN);
    let mut place = |len: usize| {
        let start = at;
        at = (at + len).next_multiple_of(ALIGN);
        start as u64
    };
    let mut headers = Vec::with_capacity(graphs.len());
    for g in graphs {
        headers.push(PartitionHeader {
            position: u32::from(g.position),
            nodes: g.rows.len() as u32,
            entry: g.entry,
            max_level: g.max_level,
            upper_blocks: (g.upper.len() / (m + 1)) as u32,
            repaired: g.repaired,
            rows: place(g.rows.len() * 4),
            levels: place(g.levels.len()),
            level0: place(g.level0.len() * 4),
            upper_index: place(g.upper_index.len() * 4),
            upper: place(g.upper.len() * 4),
        });
    }
    for h in &headers {
        out.extend_from_slice(bytemuck::bytes_of(h));
    }
    for g in graphs {
        let arrays: [&[u8]; 5] = [
            bytemuck::cast_slice(&g.rows),
            &g.levels,
            bytemuck::cast_slice(&g.level0),
            bytemuck::cast_slice(&g.upper_index),
            bytemuck::cast_slice(&g.upper),
        ];
        for a in arrays {
            out.resize(out.len().next_multiple_of(ALIGN), 0);
            out.extend_from_slice(a);
        }
    }
    out
}

/// Reads the headers of a graphs section lying at `base` in a file and
/// checks that every array is inside it. An empty section holds no graphs.
pub fn parse(section: &[u8], base: usize) -> Result<Vec<GraphLayout>, IndexError> {
    if section.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |at: usize, what: String| IndexError::Corrupt { offset: (base + at) as u64, problem: what };
    let head: GraphsHeader = section
        .get(..64)
        .map(bytemuck::pod_read_unaligned)
        .ok_or_else(|| bad(0, format!("{} bytes are too short for the graphs header", section.len())))?;
    if head.magic != MAGIC {
        return Err(bad(0, "not a graphs section (magic)".into()));
    }
    let (p, m, m0) = (head.partitions as usize, head.m as usize, head.m0 as usize);
    if p > MAX_PARTITIONS || !(1..=MAX_M).contains(&m) || !(1..=2 * MAX_M).contains(&m0) {
        return Err(bad(8, format!("{p} partitions with M {m} and M0 {m0} are out of range")));
    }
    let mut out = Vec::with_capacity(p);
    for i in 0..p {
        let at = 64 + 64 * i;
        let h: PartitionHeader = section
            .get(at..at + 64)
            .map(bytemuck::pod_read_unaligned)
            .ok_or_else(|| bad(at, format!("partition header {i} lies outside the section")))?;
        let n = h.nodes as usize;
        let span = |off: u64, len: Option<usize>, what: &str| -> Result<Range<usize>, IndexError> {
            let off = usize::try_from(off).ok().filter(|o| o % ALIGN == 0);
            match (off, len) {
                (Some(o), Some(l)) if o.checked_add(l).is_some_and(|e| e <= section.len()) => {
                    Ok(base + o..base + o + l)
                }
                _ => Err(bad(at, format!("partition {i}: {what} array outside the section or misaligned"))),
            }
        };
        let upper_len = (h.upper_blocks as usize).checked_mul(m + 1).and_then(|x| x.checked_mul(4));
        let layout = GraphLayout {
            position: u8::try_from(h.position)
                .map_err(|_| bad(at, format!("partition {i}: position {}", h.position)))?,
            nodes: n,
            entry: h.entry,
            max_level: h.max_level as usize,
            m,
            m0,
            repaired: h.repaired,
            rows: span(h.rows, n.checked_mul(4), "rows")?,
            levels: span(h.levels, Some(n), "levels")?,
            level0: span(h.level0, n.checked_mul(m0 + 1).and_then(|x| x.checked_mul(4)), "level-0")?,
            upper_index: span(h.upper_index, n.checked_mul(4), "upper index")?,
            upper: span(h.upper, upper_len, "upper")?,
        };
        if (n > 0 && h.entry as usize >= n) || layout.max_level > MAX_LEVEL {
            return Err(bad(at, format!("partition {i}: entry {} of {n} nodes at level {}", h.entry, h.max_level)));
        }
        out.push(layout);
    }
    Ok(out)
}

/// One partition's graph, read in place.
#[derive(Debug, Clone, Copy)]
pub struct GraphRef<'a> {
    /// M.
    pub m: usize,
    /// M0.
    pub m0: usize,
    /// Entry node.
    pub entry: u32,
    /// Top level.
    pub max_level: usize,
    /// Row of each node.
    pub rows: &'a [u32],
    /// Top level of each node.
    pub levels: &'a [u8],
    /// Level-0 blocks.
    pub level0: &'a [u32],
    /// First upper block of each node.
    pub upper_index: &'a [u32],
    /// Upper blocks.
    pub upper: &'a [u32],
}

impl<'a> GraphRef<'a> {
    /// Views `layout` in `bytes` (the whole file); `None` when the arrays
    /// are not 4-byte aligned in memory or outside `bytes`.
    pub fn new(bytes: &'a [u8], l: &GraphLayout) -> Option<GraphRef<'a>> {
        let words = |r: &Range<usize>| bytes.get(r.clone()).and_then(|b| bytemuck::try_cast_slice::<u8, u32>(b).ok());
        Some(GraphRef {
            m: l.m,
            m0: l.m0,
            entry: l.entry,
            max_level: l.max_level,
            rows: words(&l.rows)?,
            levels: bytes.get(l.levels.clone())?,
            level0: words(&l.level0)?,
            upper_index: words(&l.upper_index)?,
            upper: words(&l.upper)?,
        })
    }

    /// Nodes.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the graph has no node.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Neighbours of `node` on `level` (empty where out of range).
    #[inline]
    pub fn neighbours(&self, node: u32, level: usize) -> &'a [u32] {
        let node = node as usize;
        let (block, width) = if level == 0 {
            (self.level0.get(node * (self.m0 + 1)..(node + 1) * (self.m0 + 1)), self.m0)
        } else {
            let first = self.upper_index.get(node).copied().unwrap_or(u32::MAX);
            let top = self.levels.get(node).copied().unwrap_or(0) as usize;
            if first == u32::MAX || level > top {
                return &[];
            }
            let b = first as usize + level - 1;
            (self.upper.get(b * (self.m + 1)..(b + 1) * (self.m + 1)), self.m)
        };
        match block {
            Some(b) => &b[1..1 + (b[0] as usize).min(width)],
            None => &[],
        }
    }
}
