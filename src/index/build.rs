//! Building an HNSW graph in parallel (Malkov and Yashunin 2018, algorithms
//! 1 and 4, with hnswlib's choices: M neighbours chosen for a new node on
//! every level, lists pruned to M (2·M on level 0) with the same heuristic,
//! levels drawn with m_L = 1 / ln M).
//!
//! Threads insert nodes concurrently (rayon); each node's lists sit behind
//! their own lock, held only to copy a list or to change it, never two at
//! once; the entry point has its own lock, held for a whole insertion only
//! by the rare node that becomes the new top.
//!
//! After the inserts (`repair.rs`), every node is searched for with its own
//! vector, scored as the inserts scored it (for float rows their int8
//! copy; list of [`REPAIR_EF`]); one the search does not return (first, or tied with
//! the first) is linked in from the nearest nodes it did return; a link
//! can displace another's, so all nodes are searched again after a round
//! that linked any (at most three rounds). Then every node must be reachable
//! on level 0 from the entry point: a breadth-first walk finds those that
//! are not (concurrent pruning can orphan a node), and each is linked in
//! from its nearest reachable nodes; walk and repair repeat until none is
//! left (at most a few rounds). A link added by either repair replaces,
//! in a full list, the farthest neighbour that keeps another in-link.

use super::layout::{BuiltGraph, MAX_LEVEL};
use super::search::{NodeScorer, Scratch, greedy, search_layer, with_scratch};
use super::vectors::{Query, Rows, VectorKind, Vectors};
use super::{IndexError, IndexParams};
use rayon::prelude::*;
use std::sync::{Mutex, MutexGuard};

/// List length of the self-search that checks every node after the build.
pub const REPAIR_EF: usize = 32;

/// What the checks after the inserts found and repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reachability {
    /// Nodes a search for their own vector (list of [`REPAIR_EF`]) did not
    /// return; each was linked in from the nodes that search found.
    pub self_missed: usize,
    /// Nodes unreachable from the entry after the inserts.
    pub unreachable_before: usize,
    /// Nodes linked in by the repair.
    pub repaired: usize,
    /// Nodes still unreachable after it (0 unless the repair gave up).
    pub unreachable_after: usize,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) struct Builder<'a> {
    pub(super) v: Vectors<'a>,
    pub(super) rows: &'a [u32],
    pub(super) m: usize,
    pub(super) m0: usize,
    pub(super) efc: usize,
    pub(super) levels: Vec<u8>,
    /// Per node, its list on each of its levels.
    pub(super) nodes: Vec<Mutex<Vec<Vec<u32>>>>,
    /// Entry node and its level.
    pub(super) top: Mutex<(u32, usize)>,
}

impl super::search::Links for Builder<'_> {
    fn nodes(&self) -> usize {
        self.nodes.len()
    }
    fn links(&self, node: u32, level: usize, out: &mut Vec<u32>) {
        out.clear();
        if let Some(n) = self.nodes.get(node as usize)
            && let Some(l) = lock(n).get(level)
        {
            out.extend_from_slice(l);
        }
    }
}

/// The level of node `i`: ⌊−ln U · m_L⌋ with U uniform in (0, 1], drawn
/// from a hash of (seed, i) so a build is reproducible.
fn draw_level(seed: u64, i: usize, ml: f64) -> u8 {
    let mut z = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = ((z >> 11) + 1) as f64 / (1u64 << 53) as f64;
    ((-u.ln() * ml).floor() as usize).min(MAX_LEVEL) as u8
}

/// Builds the graph of one partition over `rows` of `v` (node i is row
/// `rows[i]`), calling `progress(done, total)` as inserts complete.
///
/// Float rows (f32, f16) are built over an int8 copy of the partition
/// (symmetric per-row quantisation, as stored int8 galleries): a quarter
/// of the memory traffic of f32 for the same graph. Measured by
/// `cargo run --release --example quantised_build target/peers 16 100` on
/// the 20,000 synthetic 512-d embeddings `benches/peers/run.sh 20000 500
/// 16 100` exports, two builds each: 14.5-16.6 CPU s in place against
/// 4.7-5.3 over the copy; recall@10 of the f32 search 0.7818-0.7840
/// against 0.7812-0.7828 at ef 128, 0.8760-0.8828 against 0.8796-0.8800
/// at ef 256 (differences within what two builds of one kind differ by).
pub fn build(
    v: Vectors<'_>,
    rows: &[u32],
    position: u8,
    p: &IndexParams,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(BuiltGraph, Reachability), IndexError> {
    p.check()?;
    if let Some(&r) = rows.iter().find(|&&r| r as usize >= v.len()) {
        return Err(IndexError::Shape { len: r as usize, dim: v.len() });
    }
    if v.kind() == VectorKind::I8 {
        return build_over(v, rows, v, rows, position, p, seed, progress);
    }
    // Float rows: build over an int8 copy of this partition's rows, node i
    // being row i of the copy.
    let dim = v.dim;
    let mut values = Vec::with_capacity(rows.len() * dim);
    let mut row = vec![0f32; dim];
    let mut scales = Vec::with_capacity(rows.len());
    for &r in rows {
        v.row_into(r as usize, &mut row);
        let mut bytes = Vec::with_capacity(dim);
        scales.push(VectorKind::I8.encode(&row, &mut bytes));
        values.extend(bytes.into_iter().map(|b| b as i8));
    }
    let copy = Vectors { rows: Rows::I8 { values: &values, scales: &scales }, dim };
    let local: Vec<u32> = (0..rows.len() as u32).collect();
    build_over(copy, &local, v, rows, position, p, seed, progress)
}

/// As [`build`], scoring the stored rows as they are during the build
/// (f32 rows too): the reference the int8 copy is measured against.
pub fn build_in_place(
    v: Vectors<'_>,
    rows: &[u32],
    position: u8,
    p: &IndexParams,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(BuiltGraph, Reachability), IndexError> {
    p.check()?;
    if let Some(&r) = rows.iter().find(|&&r| r as usize >= v.len()) {
        return Err(IndexError::Shape { len: r as usize, dim: v.len() });
    }
    build_over(v, rows, v, rows, position, p, seed, progress)
}

/// Inserts rows `local` of `ins` (the build's scoring) and checks each
/// node's self-search with the same scoring, then checks reachability and
/// writes the graph over `v`, rows `rows` (the vectors it will serve from).
#[allow(clippy::too_many_arguments)]
fn build_over(
    ins: Vectors<'_>,
    local: &[u32],
    v: Vectors<'_>,
    rows: &[u32],
    position: u8,
    p: &IndexParams,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(BuiltGraph, Reachability), IndexError> {
    let n = local.len();
    if n == 0 {
        return Ok((BuiltGraph { position, ..BuiltGraph::default() }, Reachability::default()));
    }
    let ml = 1.0 / (p.max_connections.max(2) as f64).ln();
    let levels: Vec<u8> = (0..n).map(|i| draw_level(seed, i, ml)).collect();
    let nodes = levels.iter().map(|&l| Mutex::new(vec![Vec::new(); l as usize + 1])).collect();
    let b = Builder {
        v: ins,
        rows: local,
        m: p.max_connections,
        m0: 2 * p.max_connections,
        efc: p.ef_construction,
        top: Mutex::new((0, levels[0] as usize)),
        levels,
        nodes,
    };
    let step = (n / 100).max(1000);
    let mut done = 1;
    progress(done, n);
    while done < n {
        let end = (done + step).min(n);
        (done..end).into_par_iter().for_each(|i| with_scratch(|sc| b.insert(i as u32, sc)));
        done = end;
        progress(done, n);
    }
    // The self-search check scores the vectors the inserts scored (for
    // float rows the int8 copy: an f32 pass cost 0.66x hnswlib's whole
    // build, benches/reports/index/README.md); the reachability repair and
    // the graph written score the vectors served from.
    let mut indegree = b.indegree();
    let self_missed = b.self_repair(&mut indegree);
    let b = Builder { v, rows, ..b };
    let mut reach = with_scratch(|sc| b.repair(sc));
    reach.self_missed = self_missed;
    Ok((b.flatten(position, (reach.repaired + self_missed) as u32), reach))
}

impl Builder<'_> {
    fn scorer<'s>(&'s self, q: &'s Query) -> NodeScorer<'s, 's> {
        NodeScorer { rows: self.rows, scorer: self.v.scorer(q) }
    }

    /// Scores of nodes against node `base` (f32 rows read in place).
    pub(super) fn base_scorer<'s>(&'s self, base: u32, tmp: &'s mut Query) -> NodeScorer<'s, 's> {
        NodeScorer { rows: self.rows, scorer: self.v.row_scorer(self.rows[base as usize] as usize, tmp) }
    }

    /// Walks down from the entry to `level` + 1 and searches each level
    /// from there to 0, calling `each(level, results best first)`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn descend(
        &self,
        q: &Query,
        from: (u32, usize),
        level: usize,
        ef: usize,
        filter: Option<&dyn Fn(u32) -> bool>,
        sc: &mut Scratch,
        mut each: impl FnMut(usize, &[(f32, u32)], &mut Scratch),
    ) {
        let nodes = self.scorer(q);
        let (entry, top) = from;
        let mut cur = (nodes.score(entry), entry);
        for l in (level + 1..=top).rev() {
            cur = greedy(self, &nodes, cur, l, &mut sc.buf);
        }
        let mut found: Vec<(f32, u32)> = Vec::with_capacity(ef + 1);
        for l in (0..=level.min(top)).rev() {
            search_layer(self, &nodes, cur, ef, l, filter, sc);
            found.clear();
            found.extend(sc.results.drain().map(|std::cmp::Reverse((s, id))| (s.0, id)));
            found.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            if let Some(&best) = found.first() {
                cur = best;
            }
            each(l, &found, sc);
        }
    }

    fn insert(&self, i: u32, sc: &mut Scratch) {
        let level = self.levels[i as usize] as usize;
        let mut q = std::mem::take(&mut sc.query);
        self.v.prepare_row(self.rows[i as usize] as usize, &mut q);
        let guard = lock(&self.top);
        let from = *guard;
        let hold = if level > from.1 {
            Some(guard)
        } else {
            drop(guard);
            None
        };
        self.descend(&q, from, level, self.efc, None, sc, |l, found, sc| {
            let cands: Vec<(f32, u32)> = found.iter().copied().filter(|c| c.1 != i).collect();
            let chosen = self.select(&cands, self.m, sc);
            if let Some(list) = lock(&self.nodes[i as usize]).get_mut(l) {
                list.clone_from(&chosen);
            }
            for &e in &chosen {
                self.connect(e, i, l, sc);
            }
        });
        if let Some(mut top) = hold {
            *top = (i, level);
        }
        sc.query = q;
    }

    /// The heuristic of algorithm 4: walking `cands` best first, keep a
    /// candidate unless it is closer to one already kept than to the base.
    fn select(&self, cands: &[(f32, u32)], m: usize, sc: &mut Scratch) -> Vec<u32> {
        if cands.len() <= m {
            return cands.iter().map(|c| c.1).collect();
        }
        let mut out: Vec<u32> = Vec::with_capacity(m);
        for &(to_base, c) in cands {
            if out.len() >= m {
                break;
            }
            if !out.is_empty() {
                let nodes = self.base_scorer(c, &mut sc.query2);
                if out.iter().any(|&s| nodes.score(s) > to_base) {
                    continue;
                }
            }
            out.push(c);
        }
        out
    }

    /// Adds `i` to the level-`l` list of `e`, pruning it when full.
    fn connect(&self, e: u32, i: u32, l: usize, sc: &mut Scratch) {
        let cap = if l == 0 { self.m0 } else { self.m };
        let mut g = lock(&self.nodes[e as usize]);
        let Some(list) = g.get_mut(l) else { return };
        if list.contains(&i) {
            return;
        }
        if list.len() < cap {
            list.push(i);
            return;
        }
        let mut cands: Vec<(f32, u32)> = {
            let nodes = self.base_scorer(e, &mut sc.query2);
            list.iter().chain(std::iter::once(&i)).map(|&x| (nodes.score(x), x)).collect()
        };
        cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        *list = self.select(&cands, cap, sc);
    }

    fn flatten(self, position: u8, repaired: u32) -> BuiltGraph {
        let (m, m0) = (self.m, self.m0);
        let (entry, max_level) = *lock(&self.top);
        let n = self.nodes.len();
        let mut g = BuiltGraph {
            position,
            rows: self.rows.to_vec(),
            levels: self.levels,
            level0: Vec::with_capacity(n * (m0 + 1)),
            upper_index: Vec::with_capacity(n),
            upper: Vec::new(),
            entry,
            max_level: max_level as u32,
            repaired,
        };
        let mut blocks = 0u32;
        for node in self.nodes {
            let lists = node.into_inner().unwrap_or_else(|p| p.into_inner());
            let put = |out: &mut Vec<u32>, list: &[u32], width: usize| {
                let len = list.len().min(width);
                out.push(len as u32);
                out.extend_from_slice(&list[..len]);
                out.extend(std::iter::repeat_n(u32::MAX, width - len));
            };
            put(&mut g.level0, &lists[0], m0);
            if lists.len() > 1 {
                g.upper_index.push(blocks);
                for list in &lists[1..] {
                    put(&mut g.upper, list, m);
                    blocks += 1;
                }
            } else {
                g.upper_index.push(u32::MAX);
            }
        }
        g
    }
}
