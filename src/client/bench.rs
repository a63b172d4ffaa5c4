//! The load generator's reports as people read them: one table row per
//! concurrency level, every error count with a footnote saying what the
//! errors were, and a written report (markdown and a latency plot).

use super::ClientError;
use crate::server::loadgen::{BenchProbe, Report};
use crate::table::{Table, count, number, percent};
use std::collections::BTreeMap;
use std::path::Path;
use tonic::Code;

/// What a status code means in a load test, in words.
pub fn code_meaning(code: &str) -> &'static str {
    match code {
        "INVALID_ARGUMENT" => "the server refused the probe as malformed",
        "DEADLINE_EXCEEDED" => "the reply did not come within the request's deadline",
        "RESOURCE_EXHAUSTED" => "the server was full and shed the request (its max_in_flight)",
        "UNAVAILABLE" => "the server was unreachable, starting or stopping",
        "UNAUTHENTICATED" => "no valid token was sent",
        "PERMISSION_DENIED" => "the token's role may not search",
        "NOT_FOUND" => "the subject or shard asked for does not exist",
        "INTERNAL" => "the server failed (see its log)",
        "CANCELLED" => "the call was cancelled",
        _ => "see the message",
    }
}

/// Errors of one status code across the reports: how many, and each
/// distinct message with its count and a probe that drew it.
#[derive(Debug, Clone, Default)]
struct ErrorNote {
    total: usize,
    messages: BTreeMap<String, (usize, String)>,
}

fn error_notes(reports: &[Report], probes: &[BenchProbe]) -> BTreeMap<String, ErrorNote> {
    let mut notes: BTreeMap<String, ErrorNote> = BTreeMap::new();
    for r in reports {
        for s in r.samples.iter().filter(|s| s.code != Code::Ok) {
            let n = notes.entry(crate::server::audit::code_name(s.code).to_string()).or_default();
            n.total += 1;
            let probe = probes.get(s.probe).map(|p| p.name.clone()).unwrap_or_default();
            let m = n.messages.entry(s.message.clone()).or_insert((0, probe));
            m.0 += 1;
        }
    }
    notes
}

/// One row per level; error counts point at footnotes under the table.
pub fn levels_table(reports: &[Report], probes: &[BenchProbe]) -> Table {
    let mut t = Table::new([
        "callers",
        "requests",
        "QPS",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "errors",
        "rank-1",
        "FNIR (server threshold)",
        "FPIR (measured)",
        "FNIR @ FPIR 1%",
    ]);
    let notes = error_notes(reports, probes);
    let marks: BTreeMap<&str, usize> = notes.keys().enumerate().map(|(i, k)| (k.as_str(), i + 1)).collect();
    for r in reports {
        let a = r.accuracy();
        let errors: Vec<String> = r
            .codes()
            .into_iter()
            .filter(|(c, _)| c != "OK")
            .map(|(c, n)| format!("{c} {} [{}]", count(n as u64), marks.get(c.as_str()).copied().unwrap_or(0)))
            .collect();
        let ms = |q: f64| number(r.latency_ms(q));
        t.row([
            r.concurrency.to_string(),
            count(r.samples.len() as u64),
            number(r.qps()),
            ms(0.5),
            ms(0.95),
            ms(0.99),
            ms(1.0),
            if errors.is_empty() { "0".to_string() } else { errors.join(", ") },
            percent(a.rank1),
            percent(a.fnir),
            fraction(a.fpir, a.non_mated),
            percent(a.fnir_at_fpir1),
        ]);
    }
    for (code, n) in &notes {
        let mut line =
            format!("[{}] {code}, {} in all: {}.", marks[code.as_str()], count(n.total as u64), code_meaning(code));
        for (msg, (k, probe)) in n.messages.iter().take(3) {
            let msg = if msg.is_empty() { "(no message)" } else { msg.as_str() };
            line.push_str(&format!(" {}× \"{msg}\" (e.g. probe {probe}).", count(*k as u64)));
        }
        if n.messages.len() > 3 {
            line.push_str(&format!(" {} other messages.", n.messages.len() - 3));
        }
        t.note(line);
    }
    t
}

/// `0.0% (0 of 200)`: a measured rate with its denominator.
fn fraction(x: f64, of: usize) -> String {
    if x.is_finite() { format!("{} ({} of {})", percent(x), (x * of as f64).round() as u64, of) } else { "-".into() }
}

/// What the columns mean (printed under the demo's and bench's tables).
pub const LEGEND: &str = "rank-1: mate ranked first; FNIR: mated probes not a rank-1 hit at the server's threshold; \
FPIR: never-enrolled probes decided as hits; FNIR @ FPIR 1%: with the threshold set from these non-mated probes.";

/// Where and how a report was measured.
#[derive(Debug, Clone)]
pub struct ReportHeader<'a> {
    /// Title line.
    pub title: &'a str,
    /// The machine, in words.
    pub machine: &'a str,
    /// The date.
    pub date: &'a str,
}

/// Writes `report.md` (and `latency.png` when there are replies) into `dir`.
pub fn write_report(
    dir: &Path,
    h: &ReportHeader<'_>,
    reports: &[Report],
    probes: &[BenchProbe],
) -> Result<(), ClientError> {
    std::fs::create_dir_all(dir).map_err(|e| ClientError::io(dir, e))?;
    let backend = reports.first().map(|r| r.backend.clone()).unwrap_or_default();
    let md = format!(
        "# {}\n\nMachine: {} (client and server on one machine).\nDate: {}.\nBackend: {backend}.\nProbes: {} ({} mated).\n\n{}\n{LEGEND}\n\nLatency histogram (share of replies per log-spaced bucket): latency.png\n",
        h.title,
        h.machine,
        h.date,
        probes.len(),
        probes.iter().filter(|p| p.mate.is_some()).count(),
        levels_table(reports, probes)
    );
    let path = dir.join("report.md");
    std::fs::write(&path, md).map_err(|e| ClientError::io(path, e))?;
    let names: Vec<String> = reports.iter().map(|r| format!("{} callers", r.concurrency)).collect();
    let series: Vec<crate::plot::Series> = reports
        .iter()
        .zip(&names)
        .map(|(r, n)| crate::plot::Series { name: n, points: r.histogram() })
        .filter(|s| !s.points.is_empty())
        .collect();
    if series.is_empty() {
        return Ok(());
    }
    let xs = || series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let xmax = xs().fold(1.0f64, f64::max) * 1.5;
    let xmin = xs().fold(xmax, f64::min) / 1.5;
    let ymax = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.01f64, f64::max) * 1.1;
    let png = dir.join("latency.png");
    crate::plot::line_chart(
        &png,
        "Identify latency (client side)",
        ("latency, ms", crate::plot::Scale::Log(xmin.max(0.001), xmax)),
        ("share of replies", crate::plot::Scale::Linear(0.0, ymax)),
        &series,
    )
    .map_err(|e| ClientError::Invalid(format!("{}: {e}", png.display())))
}
