//! Build script.
//!
//! * `whorl_avx512`: the AVX-512 intrinsics of the cylinder kernel are
//!   stable (Rust 1.89 and later); older compilers build the portable kernel.
//! * The gRPC API: `proto/whorl/v1/*.proto` (public) and
//!   `proto/whorl/cluster/v1/*.proto` (between the nodes of a cluster)
//!   compiled by protox (a pure-Rust protobuf compiler: no system protoc)
//!   into prost messages and tonic services, plus the encoded descriptor
//!   set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rustc-check-cfg=cfg(whorl_avx512)");
    let ac = autocfg::new();
    if ac.probe_rustc_version(1, 89) {
        println!("cargo::rustc-cfg=whorl_avx512");
    }
    println!("cargo::rerun-if-changed=build.rs");

    let root = "proto";
    let list = |dir: &str| -> Result<Vec<PathBuf>, Box<dyn std::error::Error>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "proto"))
            .collect();
        v.sort();
        Ok(v)
    };
    let public = list("proto/whorl/v1")?;
    let internal = list("proto/whorl/cluster/v1")?;
    let files: Vec<PathBuf> = public.iter().chain(&internal).cloned().collect();
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Everything, for server reflection.
    let mut all = protox::Compiler::new([root])?;
    all.include_imports(true).include_source_info(true);
    all.open_files(&files)?;
    std::fs::write(out.join("whorl_descriptor.bin"), all.encode_file_descriptor_set())?;
    // The public API, then the cluster's, which refers to the public types
    // where `crate::server::pb` has them.
    let mut api = protox::Compiler::new([root])?;
    api.include_imports(true).include_source_info(true);
    api.open_files(&public)?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(api.file_descriptor_set())?;
    let mut cluster = protox::Compiler::new([root])?;
    cluster.include_imports(false).include_source_info(true);
    cluster.open_files(&internal)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .extern_path(".whorl.v1", "crate::server::pb")
        .compile_fds(cluster.file_descriptor_set())?;
    // compile_fds never sees the paths: name them for cargo.
    println!("cargo::rerun-if-changed={root}");
    for f in &files {
        println!("cargo::rerun-if-changed={}", f.display());
    }
    Ok(())
}
