//! The accuracy harness behind `whorl eval`: the FVC protocol on folders of
//! `FINGER_IMPRESSION.iso` files.
//!
//! For each database: the genuine pairs (same finger, impressions i < j)
//! and the impostor pairs (different fingers, every impression, unordered).
//! On FVC2002 "B" sets (10 fingers × 8 impressions) that is 280 genuine and
//! 2,880 impostor comparisons.

pub mod candidates;
pub mod impostor_report;
pub mod impostors;
pub mod intervals;
pub mod metrics;
pub mod provenance;
pub mod report;
pub mod serving;
pub mod suite;

use crate::mcc::{Matcher, Prepared, Scratch};
use crate::template::{self, Template};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Errors loading a database folder.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The folder could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not a template.
    #[error("{path}: {source}")]
    Template {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: template::TemplateError,
    },
    /// No `FINGER_IMPRESSION` files.
    #[error("{0}: no FINGER_IMPRESSION template files")]
    Empty(PathBuf),
}

/// One template of a database with its identity.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Finger id (the part of the file name before `_`).
    pub finger: String,
    /// Impression number.
    pub impression: u32,
    /// The file.
    pub path: PathBuf,
    /// The first view of the file.
    pub template: Template,
}

/// A database folder.
#[derive(Debug, Clone)]
pub struct Database {
    /// Folder name.
    pub name: String,
    /// Templates sorted by (finger, impression).
    pub entries: Vec<Entry>,
    /// CRC32C of the template files (names and bytes, in name order): what
    /// tells a known database from another folder of the same name. 0 for
    /// synthetic databases.
    pub content_crc: u32,
}

impl Database {
    /// A database of synthetic templates (finger ids as names).
    pub fn from_synthetic(name: &str, records: Vec<crate::synth::SynthRecord>) -> Database {
        let mut entries: Vec<Entry> = records
            .into_iter()
            .map(|r| Entry {
                finger: format!("{:08}", r.finger),
                impression: r.impression + 1,
                path: PathBuf::new(),
                template: r.template,
            })
            .collect();
        entries.sort_by(|a, b| a.finger.cmp(&b.finger).then(a.impression.cmp(&b.impression)));
        Database { name: name.to_string(), entries, content_crc: 0 }
    }

    /// The FVC2002 database these templates are (by content), if any.
    pub fn fvc2002(&self) -> Option<&'static str> {
        FVC2002_CRC.iter().find(|k| k.1 == self.content_crc && k.0 == self.name).map(|k| k.0)
    }

    /// Distinct fingers.
    pub fn fingers(&self) -> usize {
        let mut f: Vec<&str> = self.entries.iter().map(|e| e.finger.as_str()).collect();
        f.dedup();
        f.len()
    }
}

/// The content CRCs ([`Database::content_crc`]) of the four FVC2002 "B"
/// databases of the shared data (`../shared/data/fvc2002/DB*_B`).
pub const FVC2002_CRC: [(&str, u32); 4] =
    [("DB1_B", 0xa6eb_f0ed), ("DB2_B", 0xe07a_2c6e), ("DB3_B", 0x51e5_5d26), ("DB4_B", 0xc46a_3b39)];

/// Loads every `FINGER_IMPRESSION.*` template file of `dir`.
pub fn load_database(dir: &Path) -> Result<Database, EvalError> {
    let io = |source| EvalError::Io { path: dir.to_path_buf(), source };
    let mut paths = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        paths.push(e.map_err(io)?.path());
    }
    paths.sort();
    let mut entries = Vec::new();
    let mut crc = 0u32;
    for path in paths {
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else { continue };
        let Some((finger, imp)) = stem.rsplit_once('_') else { continue };
        let Ok(impression) = imp.parse::<u32>() else { continue };
        let bytes = std::fs::read(&path).map_err(|source| EvalError::Io { path: path.clone(), source })?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        crc = crate::checksum::crc32c_append(crate::checksum::crc32c_append(crc, name.as_bytes()), &bytes);
        let mut ts = template::parse(&bytes).map_err(|source| EvalError::Template { path: path.clone(), source })?;
        if ts.is_empty() {
            continue;
        }
        entries.push(Entry { finger: finger.to_string(), impression, path, template: ts.swap_remove(0) });
    }
    if entries.is_empty() {
        return Err(EvalError::Empty(dir.to_path_buf()));
    }
    entries.sort_by(|a, b| a.finger.cmp(&b.finger).then(a.impression.cmp(&b.impression)));
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(Database { name, entries, content_crc: crc })
}

/// Pairs of entry indices.
pub type Pairs = Vec<(usize, usize)>;

/// Genuine and impostor pairs of entry indices, per the FVC protocol.
pub fn protocol_pairs(db: &Database) -> (Pairs, Pairs) {
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for i in 0..db.entries.len() {
        for j in i + 1..db.entries.len() {
            if db.entries[i].finger == db.entries[j].finger {
                genuine.push((i, j));
            } else {
                impostor.push((i, j));
            }
        }
    }
    (genuine, impostor)
}

/// Scores of one database.
#[derive(Debug, Clone)]
pub struct DbScores {
    /// The database name.
    pub name: String,
    /// (i, j, score) of the genuine pairs.
    pub genuine: Vec<(usize, usize, f32)>,
    /// (i, j, score) of the impostor pairs.
    pub impostor: Vec<(usize, usize, f32)>,
    /// The FVC rates.
    pub rates: metrics::Rates,
}

/// Which score an evaluation measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scoring {
    /// The cylinder matcher's score ([`Matcher::score`]).
    #[default]
    Matcher,
    /// The score after the second, geometric pass
    /// ([`Matcher::verify_parts`], [`crate::mcc::consensus`]).
    Verified,
}

impl std::str::FromStr for Scoring {
    type Err = String;
    fn from_str(s: &str) -> Result<Scoring, String> {
        match s {
            "matcher" => Ok(Scoring::Matcher),
            "verified" => Ok(Scoring::Verified),
            o => Err(format!("'{o}' is not matcher or verified")),
        }
    }
}

impl Scoring {
    /// What the score is, for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Scoring::Matcher => "the cylinder matcher's score (Γ stage and LSS-R)",
            Scoring::Verified => {
                "the verified score: the matcher's score times the share of minutiae a second, geometric pass accepts (`whorl::mcc::consensus`)"
            }
        }
    }

    /// The score of `a` against `b`.
    pub fn score(self, matcher: &Matcher, a: &Prepared, b: &Prepared, s: &mut Scratch) -> f32 {
        self.with_np(matcher, a, b, s).1
    }

    /// `(n_P, score)` of `a` against `b`: the impostor model's strata are by n_P.
    pub fn with_np(self, matcher: &Matcher, a: &Prepared, b: &Prepared, s: &mut Scratch) -> (u32, f32) {
        match self {
            Scoring::Matcher => {
                let p = matcher.score_parts(a.view(), b.view(), s);
                (p.n_p, p.score())
            }
            Scoring::Verified => {
                let v = matcher.verify_parts(a.view(), b.view(), s);
                (v.parts.n_p, v.score())
            }
        }
    }
}

/// Prepares every template of `db` once and scores the protocol's pairs.
pub fn evaluate(matcher: &Matcher, db: &Database) -> DbScores {
    evaluate_scored(matcher, Scoring::Matcher, db)
}

/// [`evaluate`] with the score `scoring` names.
pub fn evaluate_scored(matcher: &Matcher, scoring: Scoring, db: &Database) -> DbScores {
    let prepared: Vec<Prepared> = db.entries.par_iter().map(|e| matcher.prepare(&e.template)).collect();
    let (g, i) = protocol_pairs(db);
    let score = |pairs: &[(usize, usize)]| -> Vec<(usize, usize, f32)> {
        pairs
            .par_iter()
            .map_init(Scratch::new, |s, &(a, b)| (a, b, scoring.score(matcher, &prepared[a], &prepared[b], s)))
            .collect()
    };
    let (genuine, impostor) = (score(&g), score(&i));
    let gs: Vec<f32> = genuine.iter().map(|p| p.2).collect();
    let is: Vec<f32> = impostor.iter().map(|p| p.2).collect();
    DbScores { name: db.name.clone(), rates: metrics::rates(&gs, &is), genuine, impostor }
}
