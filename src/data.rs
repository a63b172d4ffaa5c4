//! Where the real test material lives (`../shared/data`, see its README),
//! and how it is split between fitting and reporting.
//!
//! Tests, evaluations and the demo read real templates from there at run
//! time; nothing is copied into the repository. `WHORL_TEST_DATA` overrides
//! the location; a `WHORL_TEST_DATA` that is not a folder is an error, never
//! "no data". `WHORL_REQUIRE_DATA=1` (CI sets it) makes missing data an
//! error too, so that no test can pass by skipping.
//!
//! **The split.** Every model whorl fits or tunes (the synthetic
//! generator's calibration, the embedding's whitening, the impostor model,
//! the matcher's parameters) sees only the calibration part of FVC2002,
//! [`CALIBRATION`] = DB1_B and DB2_B. [`HELD_OUT`] = DB3_B and DB4_B stand
//! in for the real templates whorl has never seen: results are reported on
//! them, and on all four, and nothing is tuned to them.

use std::path::{Path, PathBuf};

/// The FVC2002 databases models may be fitted and tuned on.
pub const CALIBRATION: [&str; 2] = ["DB1_B", "DB2_B"];
/// The FVC2002 databases kept for reporting only.
pub const HELD_OUT: [&str; 2] = ["DB3_B", "DB4_B"];
/// All four FVC2002 "B" databases, in order.
pub const ALL: [&str; 4] = ["DB1_B", "DB2_B", "DB3_B", "DB4_B"];

/// A part of the FVC2002 data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// DB1_B and DB2_B: what models are fitted and tuned on.
    Calibration,
    /// DB3_B and DB4_B: reported on, never tuned to.
    HeldOut,
    /// All four.
    All,
}

impl Split {
    /// The database folder names of this part.
    pub fn databases(self) -> &'static [&'static str] {
        match self {
            Split::Calibration => &CALIBRATION,
            Split::HeldOut => &HELD_OUT,
            Split::All => &ALL,
        }
    }

    /// A short description for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Split::Calibration => "calibration part (FVC2002 DB1_B + DB2_B)",
            Split::HeldOut => "held-out part (FVC2002 DB3_B + DB4_B)",
            Split::All => "all of FVC2002 (DB1_B-DB4_B)",
        }
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Split, String> {
        match s {
            "calibration" => Ok(Split::Calibration),
            "held-out" | "heldout" => Ok(Split::HeldOut),
            "all" => Ok(Split::All),
            o => Err(format!("'{o}' is not calibration, held-out or all")),
        }
    }
}

/// Why the shared data cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// `WHORL_TEST_DATA` names something that is not a folder.
    #[error("WHORL_TEST_DATA={0} is not a folder")]
    NotAFolder(PathBuf),
    /// No data folder was found and `WHORL_REQUIRE_DATA=1` asks for one.
    #[error(
        "the shared data folder was not found (../shared/data; set WHORL_TEST_DATA) and WHORL_REQUIRE_DATA=1 requires it"
    )]
    Required,
    /// The data folder lacks an FVC2002 database.
    #[error("{0} is missing (the shared data folder must hold fvc2002/DB1_B-DB4_B)")]
    MissingDatabase(PathBuf),
}

/// Whether `WHORL_REQUIRE_DATA=1`.
pub fn required() -> bool {
    std::env::var("WHORL_REQUIRE_DATA").is_ok_and(|v| v == "1")
}

/// The shared data folder: `$WHORL_TEST_DATA` (an error if it is not a
/// folder), else `../shared/data` from the crate root, else from the working
/// directory; `Ok(None)` when none exists, unless [`required`].
pub fn locate() -> Result<Option<PathBuf>, DataError> {
    if let Some(p) = std::env::var_os("WHORL_TEST_DATA") {
        let p = PathBuf::from(p);
        return if p.is_dir() { Ok(Some(p)) } else { Err(DataError::NotAFolder(p)) };
    }
    let candidates =
        [PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"), PathBuf::from("../shared/data")];
    match candidates.into_iter().find(|p| p.is_dir()) {
        Some(p) => Ok(Some(p)),
        None if required() => Err(DataError::Required),
        None => Ok(None),
    }
}

/// The shared data folder, or `None` when it is absent or misconfigured
/// (callers that must tell the two apart use [`locate`]).
pub fn data_dir() -> Option<PathBuf> {
    locate().ok().flatten()
}

/// The database folders of `split` under the data folder `root`, each
/// checked to exist.
pub fn fvc2002_split_in(root: &Path, split: Split) -> Result<Vec<PathBuf>, DataError> {
    split
        .databases()
        .iter()
        .map(|db| {
            let p = root.join("fvc2002").join(db);
            if p.is_dir() { Ok(p) } else { Err(DataError::MissingDatabase(p)) }
        })
        .collect()
}

/// The FVC2002 database folders of `split`: `Ok(None)` when there is no
/// data folder (and it is not [`required`]); an error when the folder is
/// misconfigured or lacks a database.
pub fn fvc2002_split(split: Split) -> Result<Option<Vec<PathBuf>>, DataError> {
    match locate()? {
        Some(root) => fvc2002_split_in(&root, split).map(Some),
        None => Ok(None),
    }
}

/// The FVC2002 database folders `DB1_B`..`DB4_B` that are present (empty
/// when there is no data folder).
pub fn fvc2002_dirs() -> Vec<PathBuf> {
    let Some(root) = data_dir() else {
        return Vec::new();
    };
    ALL.iter().map(|db| root.join("fvc2002").join(db)).filter(|p| p.is_dir()).collect()
}
