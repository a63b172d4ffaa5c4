//! The checks after the inserts of a build (see `build.rs`): every node
//! searched for with its own vector, every node reachable from the entry
//! point on level 0, and the repair of those that fail either.

use super::build::{Builder, REPAIR_EF, Reachability, lock};
use super::search::{Scratch, with_scratch};
use rayon::prelude::*;

impl Builder<'_> {
    /// Which nodes a level-0 walk from the entry can reach.
    pub(super) fn reachable(&self) -> Vec<bool> {
        let n = self.nodes.len();
        let mut seen = vec![false; n];
        let entry = lock(&self.top).0 as usize;
        let mut stack = vec![entry];
        seen[entry] = true;
        while let Some(x) = stack.pop() {
            for &y in &lock(&self.nodes[x])[0] {
                if let Some(s) = seen.get_mut(y as usize).filter(|s| !**s) {
                    *s = true;
                    stack.push(y as usize);
                }
            }
        }
        seen
    }

    /// Level-0 in-degree of every node.
    pub(super) fn indegree(&self) -> Vec<u32> {
        let mut d = vec![0u32; self.nodes.len()];
        for n in &self.nodes {
            for &y in &lock(n)[0] {
                if let Some(x) = d.get_mut(y as usize) {
                    *x += 1;
                }
            }
        }
        d
    }

    /// Searches every node with its own vector; links in those not found
    /// from the nodes the search found. A link can displace another
    /// node's in-link, and with it a path other searches took, so every
    /// node is searched again after a round that changed a list, for up
    /// to [`SELF_ROUNDS`] rounds. Returns how many were linked in.
    pub(super) fn self_repair(&self, indegree: &mut [u32]) -> usize {
        let all: Vec<u32> = (0..self.nodes.len() as u32).collect();
        let mut linked = 0;
        for _ in 0..SELF_ROUNDS {
            let missed: Vec<(u32, Vec<u32>)> = all
                .par_iter()
                .filter_map(|&i| {
                    with_scratch(|sc| {
                        let mut q = std::mem::take(&mut sc.query);
                        self.v.prepare_row(self.rows[i as usize] as usize, &mut q);
                        let from = *lock(&self.top);
                        let (mut hit, mut near) = (false, Vec::new());
                        self.descend(&q, from, 0, REPAIR_EF, None, sc, |_, found, _| {
                            // Found: first, or tied with the first (a duplicate).
                            let top = found.first().map_or(f32::INFINITY, |c| c.0);
                            hit = found.iter().take_while(|c| c.0 >= top).any(|c| c.1 == i);
                            near = found.iter().map(|c| c.1).filter(|&x| x != i).collect();
                        });
                        sc.query = q;
                        (!hit).then_some((i, near))
                    })
                })
                .collect();
            if missed.is_empty() {
                break;
            }
            let before = linked;
            with_scratch(|sc| {
                for (u, near) in &missed {
                    if self.attach(*u, near, indegree, sc) != Attached::No {
                        linked += 1;
                    }
                }
            });
            if linked == before {
                break;
            }
        }
        linked
    }

    pub(super) fn repair(&self, sc: &mut Scratch) -> Reachability {
        let mut r = Reachability::default();
        for round in 0..4 {
            let reach = self.reachable();
            let lost: Vec<u32> = (0..reach.len() as u32).filter(|&i| !reach[i as usize]).collect();
            if round == 0 {
                r.unreachable_before = lost.len();
            }
            r.unreachable_after = lost.len();
            if lost.is_empty() {
                break;
            }
            let mut indegree = self.indegree();
            for &u in &lost {
                let mut q = std::mem::take(&mut sc.query);
                self.v.prepare_row(self.rows[u as usize] as usize, &mut q);
                let from = *lock(&self.top);
                let ok = |x: u32| x != u && reach.get(x as usize).copied().unwrap_or(false);
                let mut near: Vec<u32> = Vec::new();
                self.descend(&q, from, 0, self.efc, Some(&ok), sc, |_, found, _| {
                    near = found.iter().map(|c| c.1).collect()
                });
                sc.query = q;
                if self.attach(u, &near, &mut indegree, sc) != Attached::No {
                    r.repaired += 1;
                }
            }
        }
        r
    }

    /// Links `u` from the first of `near` (best first) that can take it:
    /// one with room, or else one with a neighbour that another node also
    /// links to (the farthest such is replaced).
    fn attach(&self, u: u32, near: &[u32], indegree: &mut [u32], sc: &mut Scratch) -> Attached {
        for &r in near {
            let nodes = self.base_scorer(r, &mut sc.query2);
            let mut g = lock(&self.nodes[r as usize]);
            let list = &mut g[0];
            if list.contains(&u) {
                continue;
            }
            if list.len() < self.m0 {
                list.push(u);
                indegree[u as usize] += 1;
                return Attached::Room;
            }
            let victim = list
                .iter()
                .enumerate()
                .filter(|(_, w)| indegree.get(**w as usize).is_some_and(|&d| d >= 2))
                .min_by(|a, b| nodes.score(*a.1).total_cmp(&nodes.score(*b.1)))
                .map(|(k, _)| k);
            if let Some(k) = victim {
                indegree[list[k] as usize] -= 1;
                list[k] = u;
                indegree[u as usize] += 1;
                return Attached::Replacing;
            }
        }
        Attached::No
    }
}

/// Rounds of the self-search repair, each a search of every node.
const SELF_ROUNDS: usize = 3;

/// What [`Builder::attach`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attached {
    /// No near node could take the link.
    No,
    /// Linked from a node whose list had room.
    Room,
    /// Linked in place of another neighbour, which keeps another in-link.
    Replacing,
}
