//! CRC32C (Castagnoli), the checksum of every file whorl writes: shard
//! sections, the manifest, write-ahead-log records, notification logs,
//! saved indexes and models.
//!
//! Computed by the `crc-fast` crate, which folds with carry-less
//! multiplication (VPCLMULQDQ on AVX-512 machines, PCLMULQDQ on other
//! x86-64, PMULL on aarch64; chosen at run time). On the AVX-512 VM of
//! `benches/reports/index/` it runs 2-3x as fast as the SSE4.2 `crc32`
//! instruction the `crc32c` crate uses over a buffer in memory and about
//! 1.5x over a mapped shard; the full check of a 1,000,000-finger shard at
//! open (15.8 GB) took 0.77-0.87x the time. The values
//! are the standard CRC-32/ISCSI ones (`crc32c(b"123456789") ==
//! 0xE306_9283`), so files written before the switch read unchanged.

use crc_fast::{CrcAlgorithm::Crc32Iscsi, Digest};

/// CRC32C of `bytes`.
#[inline]
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::checksum(Crc32Iscsi, bytes) as u32
}

/// CRC32C of `a ‖ bytes`, given `crc` = CRC32C of `a`.
#[inline]
pub fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    // The running state of this reflected CRC is the complement of the
    // finished value (initial value and final XOR are both all ones).
    let mut d = Digest::new_with_init_state(Crc32Iscsi, u64::from(!crc));
    d.update(bytes);
    d.finalize() as u32
}

/// CRC32C of `a ‖ b`, given the CRC32C of `a`, that of `b` and `b`'s
/// length (a few microseconds: for joining large parts, not for streams).
pub fn crc32c_combine(crc_a: u32, crc_b: u32, len_b: usize) -> u32 {
    crc_fast::checksum_combine(Crc32Iscsi, u64::from(crc_a), u64::from(crc_b), len_b as u64) as u32
}

/// CRC32C of `bytes`, 8 MiB chunks computed on all cores and combined:
/// the full check of a large shard.
pub fn crc32c_parallel(bytes: &[u8]) -> u32 {
    use rayon::prelude::*;
    const CHUNK: usize = 8 << 20;
    if bytes.len() <= CHUNK {
        return crc32c(bytes);
    }
    let parts: Vec<(u32, usize)> = bytes.par_chunks(CHUNK).map(|c| (crc32c(c), c.len())).collect();
    parts.into_iter().fold(0, |crc, (c, len)| crc32c_combine(crc, c, len))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32).map(|i| (i ^ seed).wrapping_mul(2_654_435_761).rotate_right(13) as u8).collect()
    }

    #[test]
    fn check_value() {
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(super::crc32c(b""), 0);
    }

    #[test]
    fn parallel_is_the_crc_across_chunk_boundaries() {
        let b = bytes((8 << 20) * 3 + 12_345, 7);
        for n in [0, 1, 8 << 20, (8 << 20) + 1, 2 * (8 << 20) - 1, b.len()] {
            assert_eq!(super::crc32c_parallel(&b[..n]), crc32c::crc32c(&b[..n]), "{n} bytes");
        }
    }

    proptest! {
        /// The same values as the `crc32c` crate (the implementation every
        /// existing file was written with), whole, appended and combined,
        /// at every alignment and length around the folding widths.
        #[test]
        fn same_as_the_crc32c_crate(n in 0usize..5000, start in 0usize..64, split in 0usize..5000, seed in any::<u32>()) {
            let b = bytes(n + start, seed);
            let b = &b[start..];
            let split = split.min(b.len());
            let (x, y) = b.split_at(split);
            prop_assert_eq!(super::crc32c(b), crc32c::crc32c(b));
            prop_assert_eq!(super::crc32c_append(super::crc32c(x), y), crc32c::crc32c(b));
            prop_assert_eq!(super::crc32c_combine(super::crc32c(x), super::crc32c(y), y.len()), crc32c::crc32c(b));
        }
    }
}
