//! Minutiae blocks of a Type-9 record (ANSI/NIST-ITL 1-2011 Table 27).
//!
//! | block | fields | units and frame | to the crate convention |
//! |-------|--------|-----------------|-------------------------|
//! | INCITS 378 | 9.126-9.150; minutiae in 9.137 `index␟x␟y␟angle␟type␟quality` | pixels, origin top-left, angle in 2-degree units, type 0/1/2 | unchanged, angle × 2° |
//! | Extended feature set | 9.300-9.399; minutiae in 9.331 `x␟y␟theta␟type[␟…]` | 0.01 mm from the region of interest's corner (9.300 offsets), y down, degrees, type E/B/X | `(x + EHO)·ppmm/100`, theta mod 360 |
//! | Legacy standard | 9.005-9.012; minutiae in 9.012 `index␟XXXXYYYYTTT␟quality␟type[␟ridge counts]` | 0.01 mm, origin **bottom-left**, degrees pointing away from the ISO direction, type A/B/C/D, quality 2 (best)..63 | `y = H − Y·ppmm/100`, angle = TTT + 180° |
//!
//! `ppmm` is the transaction's resolution (1.011/1.012, else 500 ppi);
//! `H` is the largest converted y of the record (Type-9 carries no image
//! height), which keeps the geometry up to a translation. When a record
//! carries several blocks the INCITS 378 block is used, then EFS, then the
//! legacy block; the others are noted.

use super::{RS, Record, US, err, number};
use crate::template::{FingerPosition, ImpressionType, Minutia, MinutiaKind, Parsed, Template, TemplateError};

/// Splits a field value into subfields of items.
fn subfields(v: &[u8]) -> impl Iterator<Item = (usize, Vec<&[u8]>)> {
    let mut off = 0;
    v.split(|&b| b == RS).map(move |s| {
        let at = off;
        off += s.len() + 1;
        (at, s.split(|&b| b == US).collect())
    })
}

/// The first item of field `n` as a number, if present and numeric.
fn first_number(rec: &Record, n: u32) -> Option<u32> {
    let f = rec.field(n)?;
    let item = f.value.split(|&b| b == RS || b == US).next()?;
    std::str::from_utf8(item).ok()?.trim().parse().ok()
}

fn text(v: &[u8]) -> &str {
    std::str::from_utf8(v).unwrap_or("").trim()
}

/// The template of a Type-9 record, or `None` when it carries no minutiae.
pub(super) fn template(rec: &Record, ppmm: f32, parsed: &mut Parsed) -> Result<Option<Template>, TemplateError> {
    let blocks = [(137, "INCITS 378"), (331, "extended feature set"), (12, "legacy standard")];
    let present: Vec<&(u32, &str)> = blocks.iter().filter(|(n, _)| rec.field(*n).is_some()).collect();
    let Some(&&(field, name)) = present.first() else {
        return Ok(None);
    };
    for (_, other) in present.iter().skip(1) {
        parsed
            .notes
            .push(format!("Type-9 record at offset {}: {other} block also present, {name} block used", rec.offset));
    }
    let mut t = match field {
        137 => incits(rec, parsed)?,
        331 => efs(rec, ppmm)?,
        _ => legacy(rec, ppmm, parsed)?,
    };
    t.impression_type = ImpressionType(first_number(rec, 3).and_then(|v| u8::try_from(v).ok()).unwrap_or(0));
    Ok(Some(t))
}

/// Resolution in px/cm as stored in templates.
fn ppcm(ppmm: f32) -> u16 {
    (ppmm * 10.0).round().clamp(1.0, f32::from(u16::MAX)) as u16
}

fn incits(rec: &Record, parsed: &mut Parsed) -> Result<Template, TemplateError> {
    let Some(f) = rec.field(137) else {
        return Err(err("9.137", rec.offset, "missing"));
    };
    let num16 = |n: u32| first_number(rec, n).and_then(|v| u16::try_from(v).ok()).unwrap_or(0);
    let (scale, h, v) = (num16(130), num16(131), num16(132));
    let (rx, ry) = match scale {
        2 => (h, v),
        1 => ((f32::from(h) / 2.54).round() as u16, (f32::from(v) / 2.54).round() as u16),
        _ => (197, 197),
    };
    let mut minutiae = Vec::new();
    for (i, (at, items)) in subfields(f.value).enumerate() {
        let at = f.offset + at;
        let field = format!("9.137 minutia {i}");
        if items.len() < 5 {
            return Err(err(
                field,
                at,
                format!("expected index␟x␟y␟angle␟type[␟quality], found {} items", items.len()),
            ));
        }
        let x = number(items[1], &field, at)?;
        let y = number(items[2], &field, at)?;
        let a = number(items[3], &field, at)?;
        if a > 179 {
            return Err(err(field, at, format!("angle {a} is not a 2-degree unit (0-179)")));
        }
        let kind = match number(items[4], &field, at)? {
            1 => MinutiaKind::Ending,
            2 => MinutiaKind::Bifurcation,
            _ => MinutiaKind::Other,
        };
        let q = items.get(5).map(|q| number(q, &field, at)).transpose()?.unwrap_or(0).min(100) as u8;
        minutiae.push(Minutia::new(x as f32, y as f32, (a as f32 * 2.0).to_radians(), kind, q));
    }
    if let Some(n) = first_number(rec, 136).filter(|&n| n as usize != minutiae.len()) {
        parsed.notes.push(format!("9.136 says {n} minutiae, 9.137 holds {}", minutiae.len()));
    }
    Ok(Template {
        finger_position: FingerPosition(first_number(rec, 134).and_then(|v| u8::try_from(v).ok()).unwrap_or(0)),
        resolution_x: rx,
        resolution_y: ry,
        width: num16(128),
        height: num16(129),
        quality: first_number(rec, 135).map(|q| q.min(100) as u8).unwrap_or(0),
        minutiae,
        ..Template::default()
    })
}

fn efs(rec: &Record, ppmm: f32) -> Result<Template, TemplateError> {
    let Some(f) = rec.field(331) else {
        return Err(err("9.331", rec.offset, "missing"));
    };
    // 9.300 ROI: width ␟ height ␟ [h offset ␟ v offset ␟ polygon], 0.01 mm.
    let roi: Vec<u32> = rec
        .field(300)
        .map(|r| r.value.split(|&b| b == US).take(4).filter_map(|v| text(v).parse().ok()).collect())
        .unwrap_or_default();
    let (ho, vo) = (roi.get(2).copied().unwrap_or(0), roi.get(3).copied().unwrap_or(0));
    let px = |v: u32| v as f32 * ppmm / 100.0;
    let mut minutiae = Vec::new();
    for (i, (at, items)) in subfields(f.value).enumerate() {
        let at = f.offset + at;
        let field = format!("9.331 minutia {i}");
        if items.len() < 4 {
            return Err(err(field, at, format!("expected x␟y␟theta␟type, found {} items", items.len())));
        }
        let x = number(items[0], &field, at)?;
        let y = number(items[1], &field, at)?;
        let t = number(items[2], &field, at)?;
        if t > 360 {
            return Err(err(field, at, format!("theta {t} is outside 0-360 degrees")));
        }
        let kind = match text(items[3]) {
            "E" => MinutiaKind::Ending,
            "B" => MinutiaKind::Bifurcation,
            "X" => MinutiaKind::Other,
            other => return Err(err(field, at, format!("type '{other}' is not E, B or X"))),
        };
        minutiae.push(Minutia::new(px(x + ho), px(y + vo), (t as f32).to_radians(), kind, 0));
    }
    let fgp = rec
        .field(302)
        .and_then(|f| f.value.split(|&b| b == US || b == RS).next())
        .and_then(|v| text(v).parse::<u8>().ok());
    let dim = |i: usize, off: u32| roi.get(i).map(|&w| px(w + off).round().min(65_535.0) as u16).unwrap_or(0);
    Ok(Template {
        finger_position: FingerPosition(fgp.unwrap_or(0)),
        resolution_x: ppcm(ppmm),
        resolution_y: ppcm(ppmm),
        width: dim(0, ho),
        height: dim(1, vo),
        minutiae,
        ..Template::default()
    })
}

fn legacy(rec: &Record, ppmm: f32, parsed: &mut Parsed) -> Result<Template, TemplateError> {
    let Some(f) = rec.field(12) else {
        return Err(err("9.012", rec.offset, "missing"));
    };
    let mut rows = Vec::new();
    for (i, (at, items)) in subfields(f.value).enumerate() {
        let at = f.offset + at;
        let field = format!("9.012 minutia {i}");
        if items.len() < 4 {
            return Err(err(
                field,
                at,
                format!("expected index␟XXXXYYYYTTT␟quality␟type, found {} items", items.len()),
            ));
        }
        let xyt = text(items[1]);
        if xyt.len() < 9 || xyt.len() > 11 || !xyt.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(field, at, format!("'{xyt}' is not XXXXYYYYTTT")));
        }
        let (x, y, t) = (
            number(&xyt.as_bytes()[..4], "x", at)?,
            number(&xyt.as_bytes()[4..8], "y", at)?,
            number(&xyt.as_bytes()[8..], "theta", at)?,
        );
        if t > 360 {
            return Err(err(field, at, format!("theta {t} is outside 0-360 degrees")));
        }
        let q = number(items[2], &field, at)?;
        let quality = if (2..=63).contains(&q) { ((63 - q) as f32 / 61.0 * 100.0).round() as u8 } else { 0 };
        let kind = match text(items[3]) {
            "A" => MinutiaKind::Ending,
            "B" => MinutiaKind::Bifurcation,
            "C" | "D" => MinutiaKind::Other,
            other => {
                return Err(err(field, at, format!("type '{other}' is not A, B, C or D")));
            }
        };
        rows.push((x, y, t, kind, quality));
    }
    if let Some(n) = first_number(rec, 10).filter(|&n| n as usize != rows.len()) {
        parsed.notes.push(format!("9.010 says {n} minutiae, 9.012 holds {}", rows.len()));
    }
    let px = |v: u32| v as f32 * ppmm / 100.0;
    let top = rows.iter().map(|r| px(r.1)).fold(0.0, f32::max);
    let minutiae = rows
        .into_iter()
        .map(|(x, y, t, kind, q)| Minutia::new(px(x), top - px(y), ((t + 180) as f32).to_radians(), kind, q))
        .collect();
    let fgp = rec
        .field(6)
        .and_then(|f| f.value.split(|&b| b == RS || b == US).next())
        .and_then(|v| text(v).parse::<u8>().ok());
    Ok(Template {
        finger_position: FingerPosition(fgp.unwrap_or(0)),
        resolution_x: ppcm(ppmm),
        resolution_y: ppcm(ppmm),
        minutiae,
        ..Template::default()
    })
}
