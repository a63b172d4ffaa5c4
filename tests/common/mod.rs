//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The shared data folder, or `None` after saying loudly why the test
/// skips. A `WHORL_TEST_DATA` that is not a folder fails the test, and so
/// does missing data under `WHORL_REQUIRE_DATA=1` (CI sets it).
pub fn data_or_skip(test: &str) -> Option<PathBuf> {
    match whorl::data::locate() {
        Ok(Some(d)) => Some(d),
        Ok(None) => {
            eprintln!("skipped: {test}: ../shared/data not found (set WHORL_TEST_DATA to the shared data folder)");
            None
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

/// The FVC2002 database folders of `split`, or `None` after saying why the
/// test skips (a failure under `WHORL_REQUIRE_DATA=1` or a bad `WHORL_TEST_DATA`).
pub fn fvc_split_or_skip(test: &str, split: whorl::data::Split) -> Option<Vec<PathBuf>> {
    match whorl::data::fvc2002_split(split) {
        Ok(Some(d)) => Some(d),
        Ok(None) => {
            eprintln!("skipped: {test}: ../shared/data not found (set WHORL_TEST_DATA to the shared data folder)");
            None
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

/// Reads a file of the shared data folder.
pub fn read(root: &std::path::Path, rel: &str) -> Vec<u8> {
    std::fs::read(root.join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// All `.iso` files of one FVC2002 database, sorted: exactly the 80 of a
/// "B" set (10 fingers × 8 impressions), or the test fails.
pub fn fvc_files(root: &std::path::Path, db: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("fvc2002").join(db))
        .expect("listing fvc2002 database")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "iso"))
        .collect();
    v.sort();
    assert_eq!(v.len(), 80, "{db}: an FVC2002 B set has 80 templates");
    v
}

/// A GPU re-scorer with `opts` limits, as `WHORL_REQUIRE_GPU` asks: unset,
/// `None` (after saying so loudly) when no adapter opens; `1`/`any`, any
/// adapter (lavapipe counts) or the test fails; `hardware`, a hardware
/// adapter or the test fails.
pub fn gpu_or_skip(test: &str, mut opts: whorl::gpu::GpuOptions) -> Option<whorl::gpu::GpuRescorer> {
    use whorl::gpu::Requirement;
    let req = Requirement::from_env();
    opts.allow_software = req != Requirement::Hardware;
    match whorl::gpu::GpuRescorer::new(&whorl::mcc::Matcher::default(), &opts, 1 << 30) {
        Ok(g) => {
            eprintln!("{test}: GPU backend {}", g.describe());
            Some(g)
        }
        Err(e) if req == Requirement::None => {
            eprintln!("\n*** skipped: {test}: no GPU adapter ({e}); WHORL_REQUIRE_GPU=1 makes this a failure ***\n");
            None
        }
        Err(e) => panic!("{test}: WHORL_REQUIRE_GPU={req:?} but no such GPU backend: {e}"),
    }
}

/// GPU limits small enough that every gallery of the tests is split into
/// several binding-sized chunks and several dispatches.
pub fn small_gpu_limits() -> whorl::gpu::GpuOptions {
    whorl::gpu::GpuOptions { max_binding: Some(1 << 20), max_items: Some(64), ..whorl::gpu::GpuOptions::default() }
}
