//! GPU re-scoring: the cylinder matcher as WGSL compute shaders through
//! wgpu (Vulkan, Metal, DX12; lavapipe in CI).
//!
//! * [`layout`]: the kernel sources (`shaders/`, embedded) and the host
//!   mirrors of their structs; naga validation.
//! * [`context`]: adapter choice (discrete first; software allowed for
//!   tests) and error capture.
//! * [`rescorer`]: [`GpuRescorer`], the [`crate::rescore::Rescorer`] that
//!   scores (probe, candidate) pairs on the GPU with the CPU's integers.

pub mod context;
pub mod layout;
pub mod rescorer;

pub use context::{GpuContext, GpuOptions, Requirement};
pub use rescorer::{GpuRescorer, Timings};
