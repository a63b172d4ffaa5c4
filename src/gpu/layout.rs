//! Host mirrors of the WGSL structs. Keep in sync with
//! `shaders/shared/mcc.wgsl` (`GpuParams`, `GpuItem`).

use bytemuck::{Pod, Zeroable};

/// Uniform parameters (`GpuParams` in shaders/shared/mcc.wgsl).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct GpuParams {
    /// Work items in this dispatch.
    pub n_items: u32,
    /// min_ME in base cells.
    pub min_me_cells: u32,
    /// δ_θ in units of 2π/65536.
    pub delta_theta: u32,
    /// Relaxation iterations.
    pub n_rel: u32,
    /// Offset of the Z1 table in the LUT buffer (after the square roots).
    pub lut_z1: u32,
    /// Offset of the Z2 table.
    pub lut_z2: u32,
    /// Offset of the Z3 table.
    pub lut_z3: u32,
    /// Offset of the n_P table.
    pub lut_np: u32,
    /// Offset of the stretch table (distance-difference scale by mean distance).
    pub lut_stretch: u32,
    /// Padding to a multiple of 16 bytes.
    pub pad: [u32; 3],
}

/// One (probe, candidate) pair to score (`GpuItem` in shaders/shared/mcc.wgsl).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct GpuItem {
    /// u32 offset of the probe blob in the probe buffer.
    pub probe: u32,
    /// u32 offset of the candidate blob in the gallery buffer.
    pub cand: u32,
}

const _: () = {
    assert!(std::mem::size_of::<GpuParams>() == 48);
    assert!(std::mem::size_of::<GpuItem>() == 8);
};

/// The kernel's source: the shared helpers, then the kernel.
pub const RESCORE_WGSL: &str =
    concat!(include_str!("../../shaders/shared/mcc.wgsl"), "\n", include_str!("../../shaders/rescore.wgsl"));

/// The popcount kernel's source: the shared helpers, then the kernel.
pub const PAIR_COUNTS_WGSL: &str =
    concat!(include_str!("../../shaders/shared/mcc.wgsl"), "\n", include_str!("../../shaders/pair_counts.wgsl"));

/// Every kernel, by name (for validation).
pub const KERNELS: [(&str, &str); 2] = [("rescore", RESCORE_WGSL), ("pair_counts", PAIR_COUNTS_WGSL)];

/// Validates WGSL with naga (no GPU needed): parse, then full validation.
pub fn validate(src: &str) -> Result<(), String> {
    use wgpu::naga;
    let module = naga::front::wgsl::parse_str(src).map_err(|e| e.emit_to_string(src))?;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::default())
        .validate(&module)
        .map(|_| ())
        .map_err(|e| e.emit_to_string(src))
}
