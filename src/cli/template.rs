//! `whorl template inspect|convert`.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use whorl::template::{self, Format, ParseOptions};

#[derive(Subcommand)]
pub enum TemplateCmd {
    /// Show the format, views, minutiae and notes of template files.
    Inspect(InspectArgs),
    /// Convert a template file to another format.
    Convert(ConvertArgs),
}

#[derive(Args)]
pub struct InspectArgs {
    /// Template files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Read as this format instead of detecting it.
    #[arg(long, value_parser = format_values(&Format::ALL))]
    format: Option<Format>,
    /// Print only one summary line per file.
    #[arg(long)]
    brief: bool,
}

#[derive(Args)]
pub struct ConvertArgs {
    /// Input file.
    input: PathBuf,
    /// Output file.
    output: PathBuf,
    /// Target format.
    #[arg(long, value_parser = format_values(&[Format::Iso2005, Format::Json]))]
    to: Format,
    /// Read the input as this format instead of detecting it.
    #[arg(long, value_parser = format_values(&Format::ALL))]
    from: Option<Format>,
}

/// A parser that lists `formats` in `--help` (with the other names each
/// is known by as aliases).
fn format_values(formats: &[Format]) -> impl clap::builder::TypedValueParser<Value = Format> {
    use clap::builder::{PossibleValue, TypedValueParser};
    let values: Vec<PossibleValue> = formats
        .iter()
        .map(|f| {
            let v = PossibleValue::new(f.short_name());
            match f {
                Format::Iso2005 => v.alias("iso"),
                Format::Ansi378_2004 => v.alias("ansi"),
                Format::Ansi378_2009 => v.alias("ansi2007"),
                Format::AnsiNist => v.aliases(["nist", "type9"]),
                _ => v,
            }
        })
        .collect();
    clap::builder::PossibleValuesParser::new(values).try_map(|s: String| s.parse::<Format>())
}

pub fn run(cmd: TemplateCmd) -> Result<()> {
    match cmd {
        TemplateCmd::Inspect(a) => inspect(a),
        TemplateCmd::Convert(a) => convert(a),
    }
}

fn inspect(a: InspectArgs) -> Result<()> {
    let opts = ParseOptions { format: a.format, ..ParseOptions::default() };
    let mut failed = 0;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for path in &a.files {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        match template::parse_with(&bytes, &opts) {
            Ok(p) => print_parsed(&mut out, path, &bytes, &p, a.brief)?,
            Err(e) => {
                failed += 1;
                writeln!(out, "{}: error: {e}", path.display())?;
            }
        }
    }
    out.flush()?;
    if failed > 0 {
        bail!("{failed} of {} files could not be parsed", a.files.len());
    }
    Ok(())
}

fn print_parsed(
    out: &mut impl Write,
    path: &std::path::Path,
    bytes: &[u8],
    p: &template::Parsed,
    brief: bool,
) -> std::io::Result<()> {
    let counts: Vec<String> = p.templates.iter().map(|t| t.minutiae.len().to_string()).collect();
    writeln!(
        out,
        "{}: {} ({} bytes), {} view(s), minutiae {}",
        path.display(),
        p.format,
        bytes.len(),
        p.templates.len(),
        counts.join(", ")
    )?;
    if brief {
        return Ok(());
    }
    for (v, t) in p.templates.iter().enumerate() {
        writeln!(
            out,
            "  view {v}: finger {} ({}), impression type {}, view number {}, quality {}, {}x{} px at {}x{} px/cm",
            t.finger_position.0,
            t.finger_position.name(),
            t.impression_type.0,
            t.view_number,
            t.quality,
            t.width,
            t.height,
            t.resolution_x,
            t.resolution_y
        )?;
        writeln!(out, "    {:>4} {:>8} {:>8} {:>7} {:>12} {:>4}", "#", "x", "y", "angle", "kind", "q")?;
        for (i, m) in t.minutiae.iter().enumerate() {
            writeln!(
                out,
                "    {i:>4} {:>8.1} {:>8.1} {:>6.1}° {:>12} {:>4}",
                m.x,
                m.y,
                m.angle.to_degrees(),
                format!("{:?}", m.kind).to_lowercase(),
                m.quality
            )?;
        }
    }
    for n in &p.notes {
        writeln!(out, "  note: {n}")?;
    }
    Ok(())
}

fn convert(a: ConvertArgs) -> Result<()> {
    let bytes = std::fs::read(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    let opts = ParseOptions { format: a.from, ..ParseOptions::default() };
    let parsed = template::parse_with(&bytes, &opts).with_context(|| format!("parsing {}", a.input.display()))?;
    let out = template::write(&parsed.templates, a.to)?;
    std::fs::write(&a.output, &out).with_context(|| format!("writing {}", a.output.display()))?;
    outln!(
        "{} ({}) -> {} ({}, {} bytes, {} view(s))",
        a.input.display(),
        parsed.format,
        a.output.display(),
        a.to,
        out.len(),
        parsed.templates.len()
    )?;
    Ok(())
}
