//! NIST xyt text, as NBIS `mindtct` writes it and `bozorth3` reads it.
//!
//! One minutia per line: `x y theta [quality]`, integers separated by
//! whitespace. mindtct's conventions (NBIS `lfs2nist_minutia_XYT`):
//! origin at the **bottom-left** (`y = height - y_image`), `theta` in degrees
//! counter-clockwise from the x axis and pointing the opposite way to the
//! ISO/ANSI direction (`theta = 270 - direction_lfs`, where ISO is
//! `90 - direction_lfs`), quality 0-100. xyt carries no minutia kind (read
//! as [`MinutiaKind::Other`]), resolution or image size.
//!
//! Mapping onto the crate convention: `y = H - y_xyt`, angle =
//! `theta + 180°` (mod 360). `H` is [`XytOptions::height`] when given, else
//! the largest `y` in the file, which preserves the geometry up to a
//! translation (all that matching needs). Blank lines and lines starting with
//! `#` are skipped.

use super::{Format, Minutia, MinutiaKind, Parsed, Template, TemplateError};
use crate::template::model::DEFAULT_RESOLUTION_PPCM;

/// What an xyt file does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XytOptions {
    /// Resolution in pixels per centimetre (default 197, i.e. 500 dpi).
    pub resolution_ppcm: u16,
    /// Image height in pixels, to undo mindtct's bottom-left origin.
    pub height: Option<u16>,
}

impl Default for XytOptions {
    fn default() -> XytOptions {
        XytOptions { resolution_ppcm: DEFAULT_RESOLUTION_PPCM, height: None }
    }
}

/// Whether the bytes look like xyt text: printable ASCII lines of 3 or 4 numbers.
pub fn looks_like(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let mut lines = 0;
    for line in data_lines(text) {
        let n = line.1.split_whitespace().count();
        if !(3..=4).contains(&n) || line.1.split_whitespace().any(|f| f.parse::<f64>().is_err()) {
            return false;
        }
        lines += 1;
        if lines >= 4 {
            break;
        }
    }
    lines > 0
}

/// (byte offset, line) for each non-blank, non-comment line.
fn data_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut offset = 0;
    text.split_inclusive('\n').filter_map(move |raw| {
        let at = offset;
        offset += raw.len();
        let line = raw.trim();
        (!line.is_empty() && !line.starts_with('#')).then_some((at, line))
    })
}

struct Row {
    x: f32,
    y: f32,
    theta: f32,
    quality: u8,
}

/// Parses xyt text into one template.
pub fn parse(bytes: &[u8], opts: &XytOptions) -> Result<Parsed, TemplateError> {
    parse_limited(bytes, opts, &super::Limits::default())
}

/// Parses xyt text into one template, refusing more minutiae than
/// `limits` allow before reading any (lines are counted first).
pub fn parse_limited(bytes: &[u8], opts: &XytOptions, limits: &super::Limits) -> Result<Parsed, TemplateError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| TemplateError::invalid(Format::Xyt, "text", e.valid_up_to(), "not UTF-8 text"))?;
    let count = data_lines(text).count();
    if count > limits.max_minutiae_per_view {
        return Err(TemplateError::TooMany {
            format: Format::Xyt,
            what: "view 0".into(),
            count,
            items: "minutiae",
            limit: limits.max_minutiae_per_view,
        });
    }
    let mut rows = Vec::new();
    for (n, (at, line)) in data_lines(text).enumerate() {
        rows.push(row(n, at, line)?);
    }
    let height = match opts.height {
        Some(h) => f32::from(h),
        None => rows.iter().map(|r| r.y).fold(0.0, f32::max),
    };
    let minutiae = rows
        .iter()
        .map(|r| {
            let angle = (r.theta + 180.0).to_radians();
            Minutia::new(r.x, height - r.y, angle, MinutiaKind::Other, r.quality)
        })
        .collect();
    let mut parsed = Parsed::new(Format::Xyt);
    parsed.templates.push(Template {
        resolution_x: opts.resolution_ppcm,
        resolution_y: opts.resolution_ppcm,
        height: opts.height.unwrap_or(0),
        minutiae,
        ..Template::default()
    });
    if opts.height.is_none() {
        parsed.notes.push("xyt has no image height: y flipped about the largest y in the file".into());
    }
    Ok(parsed)
}

fn row(n: usize, at: usize, line: &str) -> Result<Row, TemplateError> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let field = || format!("minutia {n} (line '{line}')");
    if !(3..=4).contains(&fields.len()) {
        return Err(TemplateError::invalid(
            Format::Xyt,
            field(),
            at,
            format!("expected 'x y theta [quality]', found {} fields", fields.len()),
        ));
    }
    let num = |i: usize, name: &str, max: f32| -> Result<f32, TemplateError> {
        let v: f32 = fields[i].parse().map_err(|_| {
            TemplateError::invalid(Format::Xyt, field(), at, format!("{name} '{}' is not a number", fields[i]))
        })?;
        if !v.is_finite() || v < 0.0 || v > max {
            return Err(TemplateError::invalid(Format::Xyt, field(), at, format!("{name} {v} is outside 0..={max}")));
        }
        Ok(v)
    };
    Ok(Row {
        x: num(0, "x", 65_535.0)?,
        y: num(1, "y", 65_535.0)?,
        theta: num(2, "theta", 360.0)?,
        quality: if fields.len() == 4 { num(3, "quality", 100.0)?.round() as u8 } else { 0 },
    })
}
