//! Writing an evaluation: scores as CSV, a DET plot, and a markdown table.

use super::metrics::{Curves, Rates};
use super::{Database, DbScores};
use crate::plot::{self, Scale, Series};
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

/// Reference results on the same 320 FVC2002 templates and protocol (from
/// the accuracy issue): average EER / FMR100 / FMR1000 / ZeroFMR, %.
pub const REFERENCES: [(&str, [f64; 4]); 2] = [
    ("NIST NBIS bozorth3", [6.80, 12.32, 18.84, 25.27]),
    ("OpenAFIS (minutiae triplets)", [8.88, 14.91, 18.84, 20.62]),
];

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

/// The markdown table of per-database and average rates.
pub fn table(all: &[DbScores], references: bool) -> String {
    let mut out = String::new();
    let pct = |v: f64| 100.0 * v;
    let _ =
        writeln!(out, "| database | genuine | impostor | EER % | EER interval % | FMR100 % | FMR1000 % | ZeroFMR % |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for s in all {
        let r = &s.rates;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | [{:.2}, {:.2}] | {:.2} | {:.2} | {:.2} |",
            s.name,
            s.genuine.len(),
            s.impostor.len(),
            pct(r.eer),
            pct(r.eer_low),
            pct(r.eer_high),
            pct(r.fmr100),
            pct(r.fmr1000),
            pct(r.zero_fmr)
        );
    }
    let a = average(all);
    let _ = writeln!(
        out,
        "| **whorl, average** | | | **{:.2}** | | **{:.2}** | **{:.2}** | **{:.2}** |",
        pct(a.eer),
        pct(a.fmr100),
        pct(a.fmr1000),
        pct(a.zero_fmr)
    );
    if references {
        for (name, r) in REFERENCES {
            let _ = writeln!(out, "| {name}, average | | | {:.2} | | {:.2} | {:.2} | {:.2} |", r[0], r[1], r[2], r[3]);
        }
    }
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
