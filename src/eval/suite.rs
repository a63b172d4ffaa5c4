//! An evaluation of several databases with bootstrap intervals, grouped
//! the way whorl reports them: on FVC2002, per database and as averages
//! over the calibration part, the held-out part and all four
//! ([`crate::data::Split`]); on any other data, one average over what was
//! given.

use super::intervals::{self, ByFinger, RateIntervals};
use super::metrics::Rates;
use super::report::average;
use super::{Database, DbScores, Scoring, evaluate_scored};
use crate::data::Split;
use crate::mcc::Matcher;

/// One row of averages: a name, the databases averaged, their rates.
#[derive(Debug, Clone)]
pub struct Group {
    /// E.g. "held-out part (FVC2002 DB3_B + DB4_B)".
    pub name: String,
    /// The split, when the group is one.
    pub split: Option<Split>,
    /// Indices into [`Evaluation::scores`].
    pub members: Vec<usize>,
    /// Average rates over the members.
    pub rates: Rates,
    /// Their bootstrap intervals (fingers resampled in every member).
    pub intervals: RateIntervals,
}

/// Scores, rates and intervals of a set of databases.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The databases, as given.
    pub dbs: Vec<Database>,
    /// Their scores and rates.
    pub scores: Vec<DbScores>,
    /// Per database, bootstrap intervals.
    pub intervals: Vec<RateIntervals>,
    /// Averages.
    pub groups: Vec<Group>,
    /// Whether the databases are exactly the four FVC2002 "B" sets of the
    /// shared data (checked by content), the data peer figures were measured on.
    pub is_fvc2002: bool,
    /// Bootstrap replicates used.
    pub replicates: usize,
}

impl Evaluation {
    /// Scores every database with `matcher` and bootstraps intervals
    /// (`replicates`, seeded by `seed`).
    pub fn run(matcher: &Matcher, dbs: Vec<Database>, replicates: usize, seed: u64) -> Evaluation {
        Evaluation::run_scored(matcher, Scoring::Matcher, dbs, replicates, seed)
    }

    /// [`Evaluation::run`] with the score `scoring` names.
    pub fn run_scored(
        matcher: &Matcher,
        scoring: Scoring,
        dbs: Vec<Database>,
        replicates: usize,
        seed: u64,
    ) -> Evaluation {
        let scores: Vec<DbScores> = dbs.iter().map(|d| evaluate_scored(matcher, scoring, d)).collect();
        Evaluation::from_scores(dbs, scores, replicates, seed)
    }

    /// Builds the evaluation from scores already computed.
    pub fn from_scores(dbs: Vec<Database>, scores: Vec<DbScores>, replicates: usize, seed: u64) -> Evaluation {
        let by: Vec<ByFinger> = dbs.iter().zip(&scores).map(|(d, s)| ByFinger::new(d, s)).collect();
        let intervals: Vec<RateIntervals> = by
            .iter()
            .zip(&scores)
            .enumerate()
            .map(|(k, (b, s))| intervals::bootstrap(std::slice::from_ref(b), &s.rates, replicates, seed + k as u64))
            .collect();
        let known: Vec<Option<&str>> = dbs.iter().map(|d| d.fvc2002()).collect();
        let is_fvc2002 = known.len() == 4 && known.iter().zip(crate::data::ALL).all(|(k, want)| *k == Some(want));
        let mut splits: Vec<(String, Option<Split>, Vec<usize>)> = Vec::new();
        for split in [Split::Calibration, Split::HeldOut, Split::All] {
            let members: Vec<usize> =
                split.databases().iter().filter_map(|want| known.iter().position(|k| *k == Some(*want))).collect();
            if members.len() == split.databases().len() {
                splits.push((split.describe().to_string(), Some(split), members));
            }
        }
        if !splits.iter().any(|s| s.2.len() == dbs.len()) {
            splits.push((format!("average of the {} databases given", dbs.len()), None, (0..dbs.len()).collect()));
        }
        let groups = splits
            .into_iter()
            .map(|(name, split, members)| {
                let sel: Vec<DbScores> = members.iter().map(|&i| scores[i].clone()).collect();
                let rates = average(&sel);
                let b: Vec<ByFinger> = members.iter().map(|&i| by[i].clone()).collect();
                let intervals = intervals::bootstrap(&b, &rates, replicates, seed ^ 0xA5A5);
                Group { name, split, members, rates, intervals }
            })
            .collect();
        Evaluation { dbs, scores, intervals, groups, is_fvc2002, replicates }
    }

    /// The group of `split`, when present.
    pub fn group(&self, split: Split) -> Option<&Group> {
        self.groups.iter().find(|g| g.split == Some(split))
    }
}
