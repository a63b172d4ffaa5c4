//! Minutia Cylinder-Code: the accurate matcher that gives whorl its final
//! scores.
//!
//! After Cappelli, Ferrara, Maltoni, "Minutia Cylinder-Code: a new
//! representation and matching technique for fingerprint recognition",
//! IEEE TPAMI 32(12), 2010, bit-based version with LSS-R consolidation.
//!
//! * [`Matcher::prepare`] turns a [`Template`](crate::template::Template)
//!   into a [`Prepared`] blob once: bit cylinders with validity masks,
//!   directions and pairwise geometry, in a flat layout that shards store
//!   and the GPU reads directly ([`prepared`]).
//! * [`Matcher::score`] compares two prepared templates and returns a score
//!   in [0, 1]; [`Matcher::score_many`] does one probe against many
//!   candidates with rayon. Everything after preparation is integer
//!   arithmetic ([`lut`]), so the GPU kernels compute the same scores bit
//!   for bit.
//! * [`Matcher::verify_parts`] adds a second, geometric pass
//!   ([`consensus`]) that tolerates distortion, for the top candidates.
//! * [`threshold`] turns a target false match rate into a score threshold.

pub mod consensus;
pub mod cylinder;
pub mod gamma;
mod hull;
// AVX-512 intrinsics are stable from Rust 1.89 (build.rs sets
// `whorl_avx512`); on 1.88, the MSRV, the portable kernel alone is built.
#[cfg(all(target_arch = "x86_64", whorl_avx512))]
#[allow(clippy::incompatible_msrv)]
mod kernel_x86;
pub mod lssr;
pub mod lut;
pub mod matcher;
pub mod params;
pub mod prepared;
pub mod threshold;

pub use consensus::{Consensus, Verified};
pub use gamma::PairCounts;
pub use matcher::{Kernel, Matcher, ScoreParts, Scratch};
pub use params::MccParams;
pub use prepared::{Prepared, PreparedError, PreparedRef};
