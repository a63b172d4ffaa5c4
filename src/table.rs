//! Tables and numbers as people read them: markdown tables with padded
//! columns (readable in a terminal, valid in a report), footnotes under
//! them, counts with thousands separators, rates and durations rounded to
//! the digits that mean something.

use std::fmt::{self, Write};
use std::time::Duration;

/// A markdown table with aligned columns and optional footnotes.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    /// A table with these column names.
    pub fn new<S: ToString>(header: impl IntoIterator<Item = S>) -> Table {
        Table { header: header.into_iter().map(|s| s.to_string()).collect(), ..Table::default() }
    }

    /// Appends a row (missing cells print empty, extra ones are kept).
    pub fn row<S: ToString>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Table {
        self.rows.push(cells.into_iter().map(|s| s.to_string()).collect());
        self
    }

    /// Adds a footnote (printed under the table, in order).
    pub fn note(&mut self, text: impl Into<String>) -> &mut Table {
        self.notes.push(text.into());
        self
    }

    /// Rows so far.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn widths(&self) -> Vec<usize> {
        let n = self.rows.iter().map(Vec::len).chain([self.header.len()]).max().unwrap_or(0);
        (0..n)
            .map(|i| {
                self.rows
                    .iter()
                    .chain([&self.header])
                    .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                    .max()
                    .unwrap_or(0)
                    .max(3)
            })
            .collect()
    }
}

fn line(f: &mut impl Write, cells: &[String], widths: &[usize]) -> fmt::Result {
    f.write_char('|')?;
    for (i, w) in widths.iter().enumerate() {
        let c = cells.get(i).map_or("", String::as_str);
        write!(f, " {c}{} |", " ".repeat(w.saturating_sub(c.chars().count())))?;
    }
    f.write_char('\n')
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let widths = self.widths();
        line(f, &self.header, &widths)?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(f, &rule, &widths)?;
        for r in &self.rows {
            line(f, r, &widths)?;
        }
        if !self.notes.is_empty() {
            f.write_char('\n')?;
            for n in &self.notes {
                writeln!(f, "{n}")?;
            }
        }
        Ok(())
    }
}

/// `1234567` → `1,234,567`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A rate per second with the digits that mean something: `54,875/s`,
/// `72.7/s`, `0.42/s`.
pub fn rate(per_sec: f64) -> String {
    format!("{}/s", number(per_sec))
}

/// A non-negative quantity: thousands separated and no decimals from 100
/// up, one decimal from 1, two below; `-` when not finite.
pub fn number(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let a = x.abs();
    if a >= 100.0 {
        let s = count(a.round() as u64);
        if x < 0.0 { format!("-{s}") } else { s }
    } else if a >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A duration as people say it: `850 ms`, `12 s`, `4 min 39 s`, `1 h 02 min`.
pub fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 60.0 {
        format!("{s:.0} s")
    } else if s < 3600.0 {
        let m = (s / 60.0).floor();
        format!("{m:.0} min {:02.0} s", (s - m * 60.0).floor())
    } else {
        let h = (s / 3600.0).floor();
        format!("{h:.0} h {:02.0} min", ((s - h * 3600.0) / 60.0).floor())
    }
}

/// Bytes in binary units: `512 B`, `12.3 KiB`, `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{x:.1} {}", UNITS[u]) }
}

/// A share as a percentage with one decimal; `-` when undefined.
pub fn percent(x: f64) -> String {
    if x.is_finite() { format!("{:.1}%", 100.0 * x) } else { "-".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(100_020), "100,020");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(rate(54_875.051_5), "54,875/s");
        assert_eq!(rate(72.66), "72.7/s");
        assert_eq!(rate(0.4249), "0.42/s");
        assert_eq!(rate(f64::NAN), "-/s");
        assert_eq!(seconds(Duration::from_millis(850)), "850 ms");
        assert_eq!(seconds(Duration::from_secs(279)), "4 min 39 s");
        assert_eq!(seconds(Duration::from_secs(3720)), "1 h 02 min");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(12_595), "12.3 KiB");
        assert_eq!(percent(0.907), "90.7%");
    }

    #[test]
    fn tables_pad_columns_and_print_notes() {
        let mut t = Table::new(["shard", "templates"]);
        t.row(["shard-0000", "100,000"]).row(["delta", "20"]).note("[1] a note");
        let s = t.to_string();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "| shard      | templates |");
        assert_eq!(lines[1], "| ---------- | --------- |");
        assert_eq!(lines[3], "| delta      | 20        |");
        assert_eq!(lines[5], "[1] a note");
    }
}
