//! whorl: a fingerprint 1:N identification engine.
//!
//! Data flows through the modules in this order (see ARCHITECTURE.md):
//! template bytes ([`template`]) → minutiae → cylinders ([`mcc`]) and
//! embeddings → shard files → HNSW candidates → GPU or CPU re-scoring →
//! decision → gRPC reply. [`synth`] generates realistic galleries for
//! benchmarks.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod data;
pub mod synth;
pub mod template;
