//! Where the real test material lives (`../shared/data`, see its README).
//!
//! Tests, evaluations and the demo read real templates from there at run
//! time; nothing is copied into the repository. `WHORL_TEST_DATA` overrides
//! the location.

use std::path::PathBuf;

/// The shared data folder: `$WHORL_TEST_DATA`, else `../shared/data` from the
/// crate root, else `../shared/data` from the working directory. `None` if
/// none exists.
pub fn data_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WHORL_TEST_DATA") {
        let p = PathBuf::from(p);
        return p.is_dir().then_some(p);
    }
    let candidates =
        [PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"), PathBuf::from("../shared/data")];
    candidates.into_iter().find(|p| p.is_dir())
}

/// The FVC2002 database folders `DB1_B`..`DB4_B`, if present.
pub fn fvc2002_dirs() -> Vec<PathBuf> {
    let Some(root) = data_dir() else {
        return Vec::new();
    };
    (1..=4).map(|i| root.join("fvc2002").join(format!("DB{i}_B"))).filter(|p| p.is_dir()).collect()
}
