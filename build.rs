//! Build script.
//!
//! * `whorl_avx512`: the AVX-512 intrinsics of the cylinder kernel are
//!   stable (Rust 1.89 and later); older compilers build the portable kernel.
//! * The gRPC API: `proto/whorl/v1/*.proto` compiled by protox (a pure-Rust
//!   protobuf compiler: no system protoc) into prost messages and tonic
//!   services, plus the encoded descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rustc-check-cfg=cfg(whorl_avx512)");
    let ac = autocfg::new();
    if ac.probe_rustc_version(1, 89) {
        println!("cargo::rustc-cfg=whorl_avx512");
    }
    println!("cargo::rerun-if-changed=build.rs");

    let root = "proto";
    let mut files: Vec<PathBuf> = std::fs::read_dir("proto/whorl/v1")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    let mut compiler = protox::Compiler::new([root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&files)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("whorl_descriptor.bin"), compiler.encode_file_descriptor_set())?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(compiler.file_descriptor_set())?;
    // compile_fds never sees the paths: name them for cargo.
    println!("cargo::rerun-if-changed={root}");
    for f in &files {
        println!("cargo::rerun-if-changed={}", f.display());
    }
    Ok(())
}
