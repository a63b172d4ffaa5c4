//! Gallery shards: versioned, self-describing, checksummed files that the
//! server memory-maps and reads in place.
//!
//! # Byte layout (little-endian), format 3
//!
//! | offset | bytes | field |
//! |-------:|------:|-------|
//! | 0 | 8 | magic `WHORLSHD` |
//! | 8 | 4 | format version (3; 1 and 2 are still read) |
//! | 12 | 4 | flags, bits 0-1: embeddings stored as 0 f32, 1 f16, 2 int8 |
//! | 16 | 8 | template count T |
//! | 24 | 8 | subject count S |
//! | 32 | 8 | embedding method (NUL-padded name) |
//! | 40 | 4 | embedding version |
//! | 44 | 4 | embedding dimension D |
//! | 48 | 4 | prepared (cylinder) layout version |
//! | 52 | 4 | CRC32C of the cylinder parameters (JSON of `MccParams`) |
//! | 56 | 24 | R, σ_S, σ_D, μ_Ψ, Ω, min_VC (f32 each) |
//! | 80 | 4 | min_M |
//! | 84 | 4 | section count (13; 12 in format 2, 10 in format 1) |
//! | 88 | 4 | CRC32C of the header (this field as 0) and the section table |
//! | 92 | 36 | reserved, 0 |
//! | 128 | 32 × 13 | section table: kind u32, flags u32, offset u64, length u64, CRC32C u32, reserved u32 |
//! | 544 | … | sections, each at a multiple of 64 bytes (the first at 576), in this order: |
//!
//! | kind | section | content |
//! |---:|---|---|
//! | 1 | template subjects | u32 per template: index into subjects |
//! | 2 | finger positions | u8 per template |
//! | 3 | prepared offsets | u64 per template + 1: word offsets into prepared cylinders |
//! | 4 | embeddings | D values per template: f32, f16 or i8 (flags) |
//! | 5 | prepared cylinders | the [`crate::mcc::prepared`] blobs, back to back, read in place by the matcher and uploaded as is to the GPU |
//! | 6 | minutiae offsets | u64 per template + 1: byte offsets into minutiae |
//! | 7 | minutiae | per template: a 16-byte header (count, resolution, size, finger, impression, view, quality) and 16 bytes per minutia (x, y, angle f32; kind, quality u8), so vectors can be re-derived |
//! | 8 | subjects | 16 bytes per subject: id offset, id length, first label, label count |
//! | 9 | labels | 16 bytes per label: key offset and length, value offset and length |
//! | 10 | strings | UTF-8 heap of subject ids and labels |
//! | 11 | embedding scales | f32 per template with int8 embeddings (row `t` is `scale[t] · values`), else empty |
//! | 12 | graphs | the HNSW graph of every finger position, searched in place over section 4 ([`crate::index::layout`] draws it), or empty |
//! | 13 | template checks | two u32 per template: CRC32C of its prepared cylinders and of its minutiae record |
//!
//! Format 1 is the first ten sections (embeddings f32 or f16, no graphs),
//! format 2 the first twelve; both open as they are (every section's CRC
//! checked at open), and `whorl migrate` rewrites them into format 3. In
//! format 3, opening for serving ([`Shard::verify_open`]) checks every
//! section except the cylinders and minutiae, whose templates are checked
//! one by one when first read (`checks.rs`): the open reads the ~5% of
//! the file that searches walk in bulk, not the 94% they read a template
//! at a time. The golden files in `tests/golden/` hold one shard of each
//! format.
//!
//! [`ShardWriter`] streams with bounded memory and publishes atomically;
//! [`Shard`] maps and checks before handing out typed slices. This module
//! holds the crate's memory-mapping `unsafe` (in `reader.rs`).

mod checks;
pub mod format;
mod graphs;
mod reader;
mod records;
mod writer;

pub use format::SectionKind;
pub use reader::Shard;
pub use writer::{Entry, ShardSpec, ShardSummary, ShardWriter, mcc_params_crc};

/// Errors reading or writing shards. Corruption names the file, the
/// section and the byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// The file could not be read or written.
    #[error("{file}: {what}")]
    Io {
        /// The file.
        file: String,
        /// The operating system's message.
        what: String,
    },
    /// Not a shard.
    #[error("{file}: not a whorl shard (magic at offset 0 is {found:02x?})")]
    Magic {
        /// The file.
        file: String,
        /// The bytes found.
        found: Vec<u8>,
    },
    /// A format version this build does not read.
    #[error("{file}: shard format version {found} at offset 8 is not supported (this build reads {})", format::VERSION)]
    Version {
        /// The file.
        file: String,
        /// The version found.
        found: u32,
    },
    /// A damaged or inconsistent file.
    #[error("{file}: {section} at offset {offset}: {problem}")]
    Corrupt {
        /// The file.
        file: String,
        /// The section (or header, or section table).
        section: String,
        /// Byte offset in the file.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
    /// A valid shard made with another embedding or cylinder parameters.
    #[error("{file}: made with {found}, this gallery uses {expected}")]
    Mismatch {
        /// The file.
        file: String,
        /// What the shard says.
        found: String,
        /// What was expected.
        expected: String,
    },
    /// Input the writer refuses.
    #[error("shard writer: {0}")]
    Invalid(String),
}
