//! Build script: feature probes for the compiler in use.
//!
//! * `whorl_avx512`: the AVX-512 intrinsics of the cylinder kernel are
//!   stable (Rust 1.89 and later); older compilers build the portable kernel.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(whorl_avx512)");
    let ac = autocfg::new();
    if ac.probe_rustc_version(1, 89) {
        println!("cargo::rustc-cfg=whorl_avx512");
    }
    println!("cargo::rerun-if-changed=build.rs");
}
