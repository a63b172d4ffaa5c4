//! Writing an evaluation: scores as CSV, a DET plot, and a markdown table.

use super::intervals::RateIntervals;
use super::metrics::{Curves, Rates};
use super::suite::Evaluation;
use super::{Database, DbScores};
use crate::data::Split;
use crate::plot::{self, Scale, Series};
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

/// The line under which a generated report's hand-written reading starts:
/// regenerating the report ([`write_keeping_notes`]) keeps everything from
/// this line on.
pub const KEPT_BELOW: &str =
    "<!-- Written by hand from here on: kept when the command above regenerates this report. -->";

/// Writes `generated` to `path`, keeping the part of the file it replaces
/// that starts at [`KEPT_BELOW`] (a reading of the figures written by
/// hand), so a re-run updates the tables without losing it.
pub fn write_keeping_notes(path: &Path, generated: &str) -> std::io::Result<()> {
    let kept = match std::fs::read_to_string(path) {
        Ok(old) => old.find(KEPT_BELOW).map(|i| old[i..].to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut out = generated.trim_end().to_string();
    out.push_str("\n\n");
    out.push_str(kept.as_deref().unwrap_or(KEPT_BELOW));
    if !out.ends_with('\n') {
        out.push('\n');
    }
    std::fs::write(path, out)
}

/// A peer's published figures on FVC2002 DB1_B-DB4_B (the FVC protocol,
/// the same 320 template files as whorl's shared data).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peer {
    /// The program.
    pub name: &'static str,
    /// EER per database DB1_B..DB4_B, %.
    pub eer: [f64; 4],
    /// Averages over the four: EER, FMR100, FMR1000, ZeroFMR, %.
    pub average: [f64; 4],
    /// Where the figures come from, when and how they were measured.
    pub source: &'static str,
}

/// Peers measured on exactly the shared FVC2002 templates. Printed only
/// when an evaluation is of those four databases (checked by content).
pub const PEERS: [Peer; 2] = [
    Peer {
        name: "NIST NBIS bozorth3",
        eer: [7.47, 7.11, 10.01, 2.63],
        average: [6.80, 12.32, 18.84, 25.27],
        source: PEER_SOURCE,
    },
    Peer {
        name: "OpenAFIS (minutiae triplets)",
        eer: [6.78, 6.67, 14.97, 7.09],
        average: [8.88, 14.91, 18.84, 20.62],
        source: PEER_SOURCE,
    },
];

const PEER_SOURCE: &str = "quoted from whorl's issue 3 (filed 2026-11-21), whose filer measured them on these \
same 320 files with the FVC protocol; the program versions and command lines were not recorded, and they were not \
re-measured in this run";

/// Averages of the rates over databases.
pub fn average(all: &[DbScores]) -> Rates {
    let n = all.len().max(1) as f64;
    let avg = |f: fn(&Rates) -> f64| all.iter().map(|s| f(&s.rates)).sum::<f64>() / n;
    Rates {
        eer: avg(|r| r.eer),
        eer_low: avg(|r| r.eer_low),
        eer_high: avg(|r| r.eer_high),
        fmr100: avg(|r| r.fmr100),
        fmr1000: avg(|r| r.fmr1000),
        zero_fmr: avg(|r| r.zero_fmr),
    }
}

fn row(out: &mut String, name: &str, counts: (usize, usize, usize), iv: &RateIntervals) {
    let (f, g, i) = counts;
    let _ = writeln!(
        out,
        "| {name} | {f} | {g} | {i} | {} | {} | {} | {} |",
        iv.eer.pct(2),
        iv.fmr100.pct(2),
        iv.fmr1000.pct(2),
        iv.zero_fmr.pct(2)
    );
}

/// The markdown table of an evaluation: per database, then the averages,
/// each with its 95% bootstrap interval over fingers.
pub fn table(e: &Evaluation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| database | fingers | genuine | impostor | EER % [95% CI] | FMR100 % [95% CI] | FMR1000 % [95% CI] | ZeroFMR % [95% CI] |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for ((db, s), iv) in e.dbs.iter().zip(&e.scores).zip(&e.intervals) {
        row(&mut out, &s.name, (db.fingers(), s.genuine.len(), s.impostor.len()), iv);
    }
    for g in &e.groups {
        let counts = g.members.iter().fold((0, 0, 0), |a, &m| {
            (a.0 + e.dbs[m].fingers(), a.1 + e.scores[m].genuine.len(), a.2 + e.scores[m].impostor.len())
        });
        row(&mut out, &format!("**average, {}**", g.name), counts, &g.intervals);
    }
    out
}

/// The peers' figures beside whorl's, on the same FVC2002 files; empty
/// unless the evaluation is of exactly those files.
pub fn peer_table(e: &Evaluation) -> String {
    if !e.is_fvc2002 {
        return String::new();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| matcher | EER % calibration (DB1+DB2) | EER % held-out (DB3+DB4) | EER % all | FMR100 % | FMR1000 % | ZeroFMR % |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let pct = |v: f64| format!("{:.2}", 100.0 * v);
    let g = |s| e.group(s).map(|g| g.rates).unwrap_or_default();
    let (c, h, a) = (g(Split::Calibration), g(Split::HeldOut), g(Split::All));
    let _ = writeln!(
        out,
        "| whorl | {} | {} | {} | {} | {} | {} |",
        pct(c.eer),
        pct(h.eer),
        pct(a.eer),
        pct(a.fmr100),
        pct(a.fmr1000),
        pct(a.zero_fmr)
    );
    for p in PEERS {
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            p.name,
            (p.eer[0] + p.eer[1]) / 2.0,
            (p.eer[2] + p.eer[3]) / 2.0,
            p.average[0],
            p.average[1],
            p.average[2],
            p.average[3]
        );
    }
    let _ = writeln!(out, "\nPeer figures: {}.", PEER_SOURCE);
    out
}

/// Writes `scores.csv` (database, kind, template a, template b, score).
pub fn write_csv(path: &Path, dbs: &[Database], all: &[DbScores]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "database,kind,a,b,score")?;
    for (db, s) in dbs.iter().zip(all) {
        let name = |i: usize| format!("{}_{}", db.entries[i].finger, db.entries[i].impression);
        for (kind, list) in [("genuine", &s.genuine), ("impostor", &s.impostor)] {
            for &(a, b, score) in list.iter() {
                writeln!(f, "{},{kind},{},{},{score:.6}", s.name, name(a), name(b))?;
            }
        }
    }
    f.flush()
}

/// Writes the DET curve (FNMR against FMR, log axes) of every database.
pub fn write_det(path: &Path, all: &[DbScores]) -> Result<(), plot::PlotError> {
    let floor = 1e-4;
    let series: Vec<(String, Vec<(f64, f64)>)> = all
        .iter()
        .map(|s| {
            let g: Vec<f32> = s.genuine.iter().map(|p| p.2).collect();
            let i: Vec<f32> = s.impostor.iter().map(|p| p.2).collect();
            let pts =
                Curves::new(&g, &i).det().into_iter().map(|(fmr, fnmr)| (fmr.max(floor), fnmr.max(floor))).collect();
            (format!("{} (EER {:.2}%)", s.name, 100.0 * s.rates.eer), pts)
        })
        .collect();
    let series: Vec<Series> = series.iter().map(|(n, p)| Series { name: n, points: p.clone() }).collect();
    plot::line_chart(
        path,
        "DET: false non-match rate against false match rate",
        ("FMR (false match rate)", Scale::Log(floor, 1.0)),
        ("FNMR (false non-match rate)", Scale::Log(floor, 1.0)),
        &series,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regenerating_a_report_keeps_the_reading_written_by_hand() {
        let dir = std::env::temp_dir().join(format!("whorl-report-notes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("report.md");
        write_keeping_notes(&path, "# Figures\n\n| a | 1 |\n").unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(first.starts_with("# Figures") && first.contains(KEPT_BELOW), "{first}");
        std::fs::write(&path, format!("{first}\n## Reading\n\nThe figure 1 means ...\n")).unwrap();
        write_keeping_notes(&path, "# Figures\n\n| a | 2 |\n").unwrap();
        let second = std::fs::read_to_string(&path).unwrap();
        assert!(second.contains("| a | 2 |") && !second.contains("| a | 1 |"), "{second}");
        assert!(second.ends_with("## Reading\n\nThe figure 1 means ...\n"), "{second}");
        assert_eq!(second.matches(KEPT_BELOW).count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
