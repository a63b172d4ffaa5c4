//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The shared data folder, or `None` after saying loudly why tests skip.
pub fn data_or_skip(test: &str) -> Option<PathBuf> {
    match whorl::data::data_dir() {
        Some(d) => Some(d),
        None => {
            eprintln!("skipped: {test}: ../shared/data not found (set WHORL_TEST_DATA to the shared data folder)");
            None
        }
    }
}

/// Reads a file of the shared data folder.
pub fn read(root: &std::path::Path, rel: &str) -> Vec<u8> {
    std::fs::read(root.join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// All `.iso` files of one FVC2002 database, sorted.
pub fn fvc_files(root: &std::path::Path, db: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("fvc2002").join(db))
        .expect("listing fvc2002 database")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "iso"))
        .collect();
    v.sort();
    v
}
