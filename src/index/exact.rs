//! Exact (brute-force) inner-product search: ground truth for the HNSW
//! index, and the faster choice for small galleries.

use super::Hit;
use crate::embed::dot;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Total-ordered f32 for the heap.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score(f32);
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Score {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// The `k` rows of `vectors` (flat, `dim` per row) with the largest inner
/// product with `q` that pass `filter`, best first (ties by lower id).
pub fn exact_search(
    vectors: &[f32],
    dim: usize,
    q: &[f32],
    k: usize,
    filter: Option<&dyn Fn(u32) -> bool>,
) -> Vec<Hit> {
    if k == 0 || dim == 0 {
        return Vec::new();
    }
    // A min-heap of the best k (lowest score, then highest id, on top).
    let mut heap: BinaryHeap<Reverse<(Score, Reverse<u32>)>> = BinaryHeap::with_capacity(k + 1);
    for (i, row) in vectors.chunks_exact(dim).enumerate() {
        let id = i as u32;
        if filter.is_some_and(|f| !f(id)) {
            continue;
        }
        let s = Score(dot(q, row));
        if heap.len() < k {
            heap.push(Reverse((s, Reverse(id))));
        } else if let Some(Reverse(top)) = heap.peek()
            && (s, Reverse(id)) > *top
        {
            heap.pop();
            heap.push(Reverse((s, Reverse(id))));
        }
    }
    let mut out: Vec<Hit> = heap.into_iter().map(|Reverse((s, Reverse(id)))| Hit { id, score: s.0 }).collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    out
}
