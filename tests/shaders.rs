//! Every WGSL kernel validates with naga; no GPU needed.

#[test]
fn every_kernel_validates_with_naga() {
    for (name, src) in whorl::gpu::layout::KERNELS {
        if let Err(e) = whorl::gpu::layout::validate(src) {
            panic!("{name}:\n{e}");
        }
    }
}

#[test]
fn naga_refuses_a_broken_kernel() {
    let broken = whorl::gpu::layout::RESCORE_WGSL.replace("let n_p =", "let n_p: f32 =");
    assert!(whorl::gpu::layout::validate(&broken).is_err());
}
