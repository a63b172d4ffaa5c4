//! Subjects → virtual groups: the partition a cluster spreads over its
//! nodes, and the unit of replication and of moves.
//!
//! A subject id maps to one of `V` groups by jump consistent hashing
//! (Lamping and Veach, "A Fast, Minimal Memory, Consistent Hash
//! Algorithm", 2014) of the first eight bytes of the SHA-256 of the id.
//! All fingers of a subject therefore live in one group, and fusing them
//! never crosses machines. `V` is fixed when a cluster is created; a single
//! machine is `V = 1` (everything in group 0).
//!
//! The function is written out here rather than taken from a crate because
//! it must never change: every enrolled subject's placement depends on it.
//! (`hash-rings` 1.1 offers jump hashing, but hashes keys with a
//! `BuildHasher` whose output Rust does not promise to keep stable, and
//! brings rand 0.4, primal and smallvec 0.6 into the tree for ten lines.)
//! The test vectors below pin it.

use sha2::{Digest, Sha256};

/// Most virtual groups a cluster may have.
pub const MAX_GROUPS: u32 = 65_536;

/// The stable 64-bit key of a subject id.
pub fn key_of(subject: &str) -> u64 {
    let h = Sha256::digest(subject.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_le_bytes(b)
}

/// Jump consistent hash of `key` into `buckets` (at least 1).
pub fn jump(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(buckets.max(1)) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

/// The group of `subject` among `groups` (1 to [`MAX_GROUPS`]).
pub fn group_of(subject: &str, groups: u32) -> u32 {
    if groups <= 1 { 0 } else { jump(key_of(subject), groups) }
}

/// A group's name as a folder: `g0042`.
pub fn folder(group: u32) -> String {
    format!("g{group:04}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_function_is_pinned() {
        // Test vectors of the reference algorithm (Lamping and Veach,
        // figure 1), as other implementations publish them (e.g. go-jump).
        assert_eq!(jump(0, 1000), 0);
        assert_eq!(jump(1, 1), 0);
        assert_eq!(jump(42, 57), 43);
        assert_eq!(jump(0xDEAD_10CC, 1), 0);
        assert_eq!(jump(0xDEAD_10CC, 666), 361);
        assert_eq!(jump(256, 1024), 520);
        // Pinned placements: changing these moves every enrolled subject.
        let got: Vec<u32> = ["alice", "bob", "fvc-DB1-101", "S0000042"].iter().map(|s| group_of(s, 1024)).collect();
        assert_eq!(got, PINNED.to_vec(), "the subject → group function changed");
    }

    const PINNED: [u32; 4] = [432, 405, 658, 1016];

    #[test]
    fn groups_are_balanced_and_move_minimally() {
        let n = 100_000u32;
        let mut counts = vec![0u32; 16];
        let mut moved = 0;
        for i in 0..n {
            let id = format!("S{i:08}");
            let g = group_of(&id, 16);
            counts[g as usize] += 1;
            if group_of(&id, 17) != g {
                moved += 1;
            }
        }
        let (lo, hi) = (counts.iter().min().copied().unwrap_or(0), counts.iter().max().copied().unwrap_or(0));
        assert!(f64::from(hi - lo) < 0.06 * f64::from(n / 16), "unbalanced: {counts:?}");
        // Growing 16 → 17 groups moves about 1/17 of the subjects.
        let frac = f64::from(moved) / f64::from(n);
        assert!((frac - 1.0 / 17.0).abs() < 0.01, "moved {frac}");
        assert_eq!(group_of("anyone", 1), 0);
    }
}
