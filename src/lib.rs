//! whorl: a fingerprint 1:N identification engine.
//!
//! Data flows through the modules in this order (see ARCHITECTURE.md):
//! template bytes ([`template`]) → minutiae → cylinders ([`mcc`]) and
//! embeddings → shard files → HNSW candidates → GPU or CPU re-scoring →
//! decision → gRPC reply. [`synth`] generates realistic galleries for
//! benchmarks.

#![deny(unsafe_code)]
#![warn(missing_docs)]

// Prepared templates and shard sections are little-endian words read in place.
#[cfg(target_endian = "big")]
compile_error!("whorl reads little-endian data in place and does not support big-endian targets");

pub mod cancel;
pub mod checksum;
pub mod client;
pub mod cluster;
pub mod data;
pub mod embed;
pub mod eval;
pub mod fsutil;
pub mod gallery;
pub mod gpu;
pub mod groups;
pub mod index;
pub mod mcc;
pub mod notify;
pub mod plot;
pub mod rescore;
pub mod search;
pub mod server;
pub mod shard;
pub mod synth;
pub mod table;
pub mod template;
