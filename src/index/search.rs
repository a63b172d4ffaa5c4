//! The HNSW walk (Malkov and Yashunin 2018, algorithms 2 and 5), shared by
//! the search of a mapped graph and by the build.
//!
//! * Upper levels: greedy descent to the query's nearest node.
//! * Level 0: best-first expansion with a candidate queue and a result set
//!   of at most `ef` nodes. A filter decides which nodes may enter the
//!   result set; every node, allowed or not, is still walked through, so a
//!   filter can only remove answers, never cut the graph (as hnswlib does).
//!   The walk stops when the best remaining candidate is worse than the
//!   worst result and the result set is full (or, without a filter, as soon
//!   as the candidate is worse): with a filter that rejects almost
//!   everything it may visit every reachable node once, never more.
//!
//! Scratch memory (the visited set as generation-stamped u16 tags, both
//! heaps, a neighbour buffer, the prepared query) lives in one
//! [`Scratch`] per thread and is reused: a search allocates only its answer.

use super::Hit;
use super::vectors::{Query, Scorer};
use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// A similarity with a total order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sim(pub f32);
impl Eq for Sim {}
impl PartialOrd for Sim {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Sim {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// The nodes a walk has seen: a tag per node, equal to the current
/// generation once seen; clearing is one increment.
#[derive(Debug, Default)]
pub(crate) struct Visited {
    tags: Vec<u16>,
    generation: u16,
}

impl Visited {
    /// Starts a walk over `n` nodes.
    pub fn begin(&mut self, n: usize) {
        if self.tags.len() < n {
            self.tags.resize(n, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.tags.fill(0);
            self.generation = 1;
        }
    }

    /// Marks `node`; true if it was not seen yet (false also when out of range).
    #[inline]
    pub fn insert(&mut self, node: u32) -> bool {
        match self.tags.get_mut(node as usize) {
            Some(t) if *t != self.generation => {
                *t = self.generation;
                true
            }
            _ => false,
        }
    }
}

/// Per-thread working memory of walks.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub visited: Visited,
    /// Candidates to expand, best on top.
    pub candidates: BinaryHeap<(Sim, u32)>,
    /// Results, worst on top.
    pub results: BinaryHeap<Reverse<(Sim, u32)>>,
    /// Neighbours being scored.
    pub buf: Vec<u32>,
    /// The query of the walk.
    pub query: Query,
    /// A second query (the build's neighbour pruning).
    pub query2: Query,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch (a fresh one if it is in use).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// What a walk needs of a graph: each node's neighbours per level.
pub(crate) trait Links {
    /// Nodes.
    fn nodes(&self) -> usize;
    /// Puts the neighbours of `node` on `level` into `out` (cleared first).
    fn links(&self, node: u32, level: usize, out: &mut Vec<u32>);
    /// Starts loading the level-0 neighbours of `node`.
    fn prefetch(&self, _node: u32) {}
}

/// Scores graph nodes: node `n` is row `rows[n]` of the vectors.
pub(crate) struct NodeScorer<'a, 'q> {
    /// Row of each node.
    pub rows: &'a [u32],
    /// The query against the rows.
    pub scorer: Scorer<'a, 'q>,
}

impl NodeScorer<'_, '_> {
    /// The query's inner product with node `n` (−∞ when out of range).
    #[inline]
    pub fn score(&self, n: u32) -> f32 {
        self.rows.get(n as usize).map_or(f32::NEG_INFINITY, |&r| self.scorer.score(r as usize))
    }

    /// Starts loading node `n`'s vector.
    #[inline]
    pub fn prefetch(&self, n: u32) {
        if let Some(&r) = self.rows.get(n as usize) {
            self.scorer.prefetch(r as usize);
        }
    }
}

/// Rows prefetched ahead of the one being scored (whole rows: measured on
/// 20,000 vectors of 512 dims, ef 256, one thread, per CPU second: no
/// prefetch 517-601 queries/s, one row ahead 703-822, two rows ahead
/// 733-816 for f32; 1528-1931, 2020-2081 and 2229-2498 for int8).
const AHEAD: usize = 2;

/// Greedy descent on `level` from `cur` (score, node): moves to a better
/// neighbour while there is one.
pub(crate) fn greedy(
    g: &impl Links,
    nodes: &NodeScorer,
    mut cur: (f32, u32),
    level: usize,
    buf: &mut Vec<u32>,
) -> (f32, u32) {
    loop {
        g.links(cur.1, level, buf);
        let mut moved = false;
        for &nb in buf.iter() {
            let s = nodes.score(nb);
            if s > cur.0 {
                cur = (s, nb);
                moved = true;
            }
        }
        if !moved {
            return cur;
        }
    }
}

/// Best-first search of `level` from `entry`, leaving at most `ef` results
/// (that pass `filter`) in `sc.results`.
pub(crate) fn search_layer(
    g: &impl Links,
    nodes: &NodeScorer,
    entry: (f32, u32),
    ef: usize,
    level: usize,
    filter: Option<&dyn Fn(u32) -> bool>,
    sc: &mut Scratch,
) {
    let ef = ef.max(1);
    sc.visited.begin(g.nodes());
    sc.candidates.clear();
    sc.results.clear();
    sc.visited.insert(entry.1);
    sc.candidates.push((Sim(entry.0), entry.1));
    if filter.is_none_or(|f| f(entry.1)) {
        sc.results.push(Reverse((Sim(entry.0), entry.1)));
    }
    let mut lower = sc.results.peek().map_or(f32::NEG_INFINITY, |r| r.0.0.0);
    let mut buf = std::mem::take(&mut sc.buf);
    while let Some((Sim(s), node)) = sc.candidates.pop() {
        if s < lower && (sc.results.len() >= ef || filter.is_none()) {
            break;
        }
        g.links(node, level, &mut buf);
        buf.retain(|&nb| sc.visited.insert(nb));
        for &nb in buf.iter().take(AHEAD) {
            nodes.prefetch(nb);
        }
        for (j, &nb) in buf.iter().enumerate() {
            if let Some(&next) = buf.get(j + AHEAD) {
                nodes.prefetch(next);
            }
            let s = nodes.score(nb);
            if sc.results.len() < ef || s > lower {
                sc.candidates.push((Sim(s), nb));
                if filter.is_none_or(|f| f(nb)) {
                    sc.results.push(Reverse((Sim(s), nb)));
                    if sc.results.len() > ef {
                        sc.results.pop();
                    }
                }
                if let Some(w) = sc.results.peek() {
                    lower = w.0.0.0;
                }
            }
        }
        if let Some(&(_, next)) = sc.candidates.peek() {
            g.prefetch(next);
        }
    }
    sc.buf = buf;
}

/// The results of the last walk, best first (ties: lower node first), at most `k`.
pub(crate) fn take_results(sc: &mut Scratch, k: usize) -> Vec<Hit> {
    let mut out: Vec<Hit> = sc.results.drain().map(|Reverse((Sim(s), id))| Hit { id, score: s }).collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    out.truncate(k);
    out
}
