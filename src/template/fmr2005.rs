//! ISO/IEC 19794-2:2005 and ANSI INCITS 378-2004 finger minutiae records
//! (version `" 20\0"`), which share their view and minutia layout.
//!
//! # Record header
//!
//! | offset | ISO 19794-2:2005 (24 bytes)      | ANSI INCITS 378-2004 (26 or 30 bytes)          |
//! |-------:|----------------------------------|------------------------------------------------|
//! | 0      | `"FMR\0"`                        | `"FMR\0"`                                      |
//! | 4      | `" 20\0"`                        | `" 20\0"`                                      |
//! | 8      | record length, u32               | record length, u16 (0: a u32 follows at 10)    |
//! | 12     | capture equipment (4+12 bits)    | (+2/+6) CBEFF product id, owner u16 + type u16  |
//! | 14     | image width, u16                 | capture equipment, u16                          |
//! | 16     | image height, u16                | image width, height, u16 each                  |
//! | 18     | x, y resolution (px/cm), u16 each| x, y resolution (px/cm), u16 each               |
//! | 22     | number of finger views, u8       | number of finger views, u8                      |
//! | 23     | reserved, u8                     | reserved, u8                                    |
//!
//! The two are told apart by the length field, as the standards allow (see
//! [`sniff`]).
//!
//! # Finger view (both standards)
//!
//! | bytes | field |
//! |------:|-------|
//! | 1 | finger position (ISO Table 2) |
//! | 1 | view number (high 4 bits), impression type (low 4 bits) |
//! | 1 | finger quality 0-100 |
//! | 1 | number of minutiae |
//! | 6 × n | minutiae: type (2 bits) + x (14 bits); reserved (2 bits) + y (14 bits); angle; quality |
//! | 2 | extended data block length (0: none) |
//! | len | extended data areas: type id u16, area length u16 (including these 4 bytes), data |
//!
//! Angles: ISO in units of 360/256 degrees, ANSI in units of 2 degrees, both
//! counter-clockwise from the horizontal axis, origin top-left, y down — the
//! crate's convention, so only the unit changes. Extended data areas (ridge
//! counts 0x0001, cores and deltas 0x0002, vendor data) are bounds-checked
//! and skipped; their type ids are reported as notes.

use super::cursor::{Cursor, peek_u16};
use super::{Format, Minutia, MinutiaKind, Parsed, Template, TemplateError};

use super::{FingerPosition, ImpressionType};
use std::f32::consts::TAU;

/// Which of the two `" 20\0"` record kinds the bytes hold, by the rule of
/// FingerprintIO (written from the standards): the u16 at offset 8 is ANSI's
/// 2-byte length when at least 26 (the smallest ANSI record), the high half
/// of ISO's 4-byte length when 1-25; when 0, the u16 at 10 is the low half of
/// an ISO length when at least 24, else the high half of ANSI's 6-byte form.
pub fn sniff(buf: &[u8]) -> Format {
    match peek_u16(buf, 8) {
        Some(n) if n >= 26 => Format::Ansi378_2004,
        Some(n) if n > 0 => Format::Iso2005,
        _ if peek_u16(buf, 10).is_some_and(|n| n < 24) => Format::Ansi378_2004,
        _ => Format::Iso2005,
    }
}

/// Record-level fields shared by all views.
struct Header {
    width: u16,
    height: u16,
    res_x: u16,
    res_y: u16,
    views: u8,
    /// Declared record length.
    length: usize,
}

/// Parses an ISO 19794-2:2005 or ANSI INCITS 378-2004 record.
pub fn parse(buf: &[u8], format: Format) -> Result<Parsed, TemplateError> {
    let mut c = Cursor::new(buf, format);
    let magic = c.array::<4>("format identifier")?;
    if &magic != b"FMR\0" {
        return Err(c.invalid("format identifier", 0, format!("expected \"FMR\\0\", found {magic:02x?}")));
    }
    let version = c.array::<4>("version")?;
    if &version != b" 20\0" {
        return Err(c.invalid("version", 4, format!("expected \" 20\\0\", found {version:02x?}")));
    }
    let header = match format {
        Format::Ansi378_2004 => ansi_header(&mut c)?,
        _ => iso_header(&mut c)?,
    };
    let mut parsed = Parsed::new(format);
    check_length(&c, header.length, buf.len(), &mut parsed)?;
    // Never read past the declared record length; where the input is shorter
    // than declared, parse what is there so the error names the cut field.
    let end = header.length.min(buf.len());
    let mut c = Cursor::starting_at(&buf[..end], c.pos(), format);
    let angle_unit = match format {
        Format::Ansi378_2004 => TAU / 180.0,
        _ => TAU / 256.0,
    };
    for v in 0..header.views {
        if parsed.overrun {
            return Err(c.invalid(
                || format!("view {v}"),
                c.pos(),
                "the previous view's extended data runs past the end of the record",
            ));
        }
        let t = view(&mut c, v, &header, angle_unit, &mut parsed)?;
        parsed.templates.push(t);
    }
    if header.length > buf.len() {
        return Err(TemplateError::truncated(format, "record", 0, buf.len(), header.length));
    }
    if c.remaining() > 0 {
        parsed.notes.push(format!("{} bytes after the last finger view (offset {}) ignored", c.remaining(), c.pos()));
    }
    Ok(parsed)
}

fn iso_header(c: &mut Cursor) -> Result<Header, TemplateError> {
    let length = c.u32("record length")? as usize;
    let _equipment = c.u16("capture equipment")?;
    common_header(c, length)
}

fn ansi_header(c: &mut Cursor) -> Result<Header, TemplateError> {
    let short = c.u16("record length")?;
    let length = if short == 0 { c.u32("record length (6-byte form)")? as usize } else { usize::from(short) };
    let _cbeff_product = c.u32("CBEFF product identifier")?;
    let _equipment = c.u16("capture equipment")?;
    common_header(c, length)
}

fn common_header(c: &mut Cursor, length: usize) -> Result<Header, TemplateError> {
    Ok(Header {
        width: c.u16("image width")?,
        height: c.u16("image height")?,
        res_x: c.u16("x resolution")?,
        res_y: c.u16("y resolution")?,
        views: c.u8("number of finger views")?,
        length: {
            c.u8("reserved byte")?;
            length
        },
    })
}

/// The declared record length must cover the header; extra input is noted.
/// (A declared length beyond the input is reported after the views are
/// parsed, so the error can name the field that was cut.)
fn check_length(c: &Cursor, declared: usize, actual: usize, parsed: &mut Parsed) -> Result<(), TemplateError> {
    if declared < c.pos() {
        return Err(c.invalid(
            "record length",
            8,
            format!("declares {declared} bytes, less than the {}-byte header", c.pos()),
        ));
    }
    if declared < actual {
        parsed.notes.push(format!("record length says {declared} bytes; {} trailing bytes ignored", actual - declared));
    }
    Ok(())
}

fn view(c: &mut Cursor, v: u8, h: &Header, angle_unit: f32, parsed: &mut Parsed) -> Result<Template, TemplateError> {
    let start = c.pos();
    let head = c.array::<4>(|| format!("header of view {v}"))?;
    let [position, view_impression, quality, count] = head;
    if position > 10 {
        parsed.notes.push(format!("view {v} at offset {start}: finger position code {position} (not 0-10)"));
    }
    let minutiae = minutiae(c, v, count, 6, angle_unit, parsed)?;
    extended_data(c, v, parsed)?;
    Ok(Template {
        finger_position: FingerPosition(position),
        impression_type: ImpressionType(view_impression & 0x0f),
        view_number: view_impression >> 4,
        resolution_x: h.res_x,
        resolution_y: h.res_y,
        width: h.width,
        height: h.height,
        quality,
        minutiae,
    })
}

fn format_is_ansi(f: Format) -> bool {
    matches!(f, Format::Ansi378_2004 | Format::Ansi378_2009)
}

/// Reads `count` minutiae of `size` bytes (6, or 5 without the quality byte
/// in ISO 2011): type (2 bits) + x (14 bits), reserved (2 bits) + y (14 bits),
/// angle in `angle_unit` radians, then quality where present.
pub(super) fn minutiae(
    c: &mut Cursor,
    v: u8,
    count: u8,
    size: usize,
    angle_unit: f32,
    parsed: &mut Parsed,
) -> Result<Vec<Minutia>, TemplateError> {
    let mut out = Vec::with_capacity(usize::from(count));
    for i in 0..count {
        let at = c.pos();
        let b = c.take(size, || format!("minutia {i} of view {v}"))?;
        let (kind_code, x) = (b[0] >> 6, u16::from_be_bytes([b[0] & 0x3f, b[1]]));
        let y = u16::from_be_bytes([b[2] & 0x3f, b[3]]);
        if format_is_ansi(c.format()) && b[4] >= 180 {
            return Err(c.invalid(
                || format!("angle of minutia {i} of view {v}"),
                at + 4,
                format!("{} is not a 2-degree unit (0-179)", b[4]),
            ));
        }
        if kind_code == 3 {
            parsed.notes.push(format!("minutia {i} of view {v}: reserved type code 3 read as other"));
        }
        // 254 "not reported" and 255 "failed" (ISO 2011) read as 0, not reported.
        let quality = b.get(5).copied().filter(|&q| q <= 100).unwrap_or(0);
        out.push(Minutia::new(
            f32::from(x),
            f32::from(y),
            f32::from(b[4]) * angle_unit,
            MinutiaKind::from_code(kind_code),
            quality,
        ));
    }
    Ok(out)
}

/// Bounds-checks the extended data areas of view `v` and skips them.
///
/// An extended data block that runs past the end of the record is noted and
/// ignored rather than refused (NIST's own conformance sample declares one
/// byte more than its record holds); the minutiae before it are intact, and
/// a record whose *declared* length exceeds the input is still refused as
/// truncated. No view may follow such a block.
pub(super) fn extended_data(c: &mut Cursor, v: u8, parsed: &mut Parsed) -> Result<(), TemplateError> {
    let len_at = c.pos();
    let total = usize::from(c.u16(|| format!("extended data length of view {v}"))?);
    if total == 0 {
        return Ok(());
    }
    let block_start = c.pos();
    let avail = c.remaining();
    let block = c.take(total.min(avail), || format!("extended data of view {v}"))?;
    if total > avail {
        parsed.notes.push(format!(
            "view {v}: extended data length at offset {len_at} declares {total} bytes but the record holds {avail}; ignored"
        ));
        parsed.overrun = true;
        return Ok(());
    }
    let mut b = Cursor::new(block, c.format());
    let mut area = 0usize;
    while b.remaining() > 0 {
        let at = block_start + b.pos();
        if b.remaining() < 4 {
            parsed
                .notes
                .push(format!("view {v}: {} stray bytes at offset {at} after the extended data areas", b.remaining()));
            break;
        }
        let head = b.array::<4>("extended data area header").map_err(|e| shift(e, block_start))?;
        let kind = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        if len < 4 {
            return Err(c.invalid(
                || format!("extended data area {area} of view {v}"),
                at,
                format!("area length {len} is shorter than its 4-byte header"),
            ));
        }
        if len - 4 > b.remaining() {
            parsed.notes.push(format!(
                "view {v}: extended data area {area} (type 0x{kind:04x}) at offset {at} declares {len} bytes, {} remain in the block; ignored",
                b.remaining() + 4
            ));
            break;
        }
        b.skip(len - 4, "extended data area")?;
        parsed.notes.push(format!(
            "view {v}: extended data area type 0x{kind:04x} ({}), {len} bytes, skipped",
            area_name(kind)
        ));
        area += 1;
    }
    Ok(())
}

/// The name of an extended data area type (ISO 19794-2 clause 7.5).
fn area_name(kind: u16) -> &'static str {
    match kind {
        0x0001 => "ridge counts",
        0x0002 => "cores and deltas",
        0x0003 => "zonal quality",
        _ => "vendor defined",
    }
}

/// Re-bases the offset of an error raised by a sub-cursor.
pub(super) fn shift(e: TemplateError, by: usize) -> TemplateError {
    match e {
        TemplateError::Malformed { format, field, offset, problem } => {
            TemplateError::Malformed { format, field, offset: offset + by, problem }
        }
        other => other,
    }
}

/// Writes templates as one ISO/IEC 19794-2:2005 record, one finger view each.
///
/// Record-level fields (image size, resolution) come from the first
/// template. Coordinates are rounded to whole pixels, angles to units of
/// 360/256 degrees; extended data is not written.
pub fn write_iso2005(templates: &[Template]) -> Result<Vec<u8>, TemplateError> {
    let unwritable = |reason: String| TemplateError::Unwritable { format: Format::Iso2005, reason };
    let first = templates.first().ok_or_else(|| unwritable("no finger views to write".into()))?;
    let views =
        u8::try_from(templates.len()).map_err(|_| unwritable(format!("{} views (at most 255)", templates.len())))?;
    let mut out = Vec::with_capacity(24 + templates.iter().map(|t| 6 + 6 * t.minutiae.len()).sum::<usize>());
    out.extend_from_slice(b"FMR\0 20\0");
    out.extend_from_slice(&[0; 4]); // length, patched below
    out.extend_from_slice(&0u16.to_be_bytes());
    for v in [first.width, first.height, first.resolution_x, first.resolution_y] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&[views, 0]);
    for (v, t) in templates.iter().enumerate() {
        write_view(&mut out, v, t).map_err(unwritable)?;
    }
    let len = u32::try_from(out.len()).map_err(|_| unwritable("record over 4 GiB".into()))?;
    out[8..12].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

fn write_view(out: &mut Vec<u8>, v: usize, t: &Template) -> Result<(), String> {
    let n = u8::try_from(t.minutiae.len())
        .map_err(|_| format!("view {v} has {} minutiae (at most 255)", t.minutiae.len()))?;
    if t.view_number > 15 || t.impression_type.0 > 15 {
        return Err(format!("view {v}: view number and impression type must fit 4 bits"));
    }
    out.extend_from_slice(&[t.finger_position.0, (t.view_number << 4) | t.impression_type.0, t.quality.min(100), n]);
    for (i, m) in t.minutiae.iter().enumerate() {
        let coord = |c: f32, axis: &str| -> Result<u16, String> {
            let r = c.round();
            if r.is_finite() && (0.0..=16383.0).contains(&r) {
                Ok(r as u16)
            } else {
                Err(format!("minutia {i} of view {v}: {axis} = {c} is outside 0..=16383"))
            }
        };
        let x = coord(m.x, "x")?;
        let y = coord(m.y, "y")?;
        let a = ((m.angle / TAU * 256.0).round() as i64).rem_euclid(256) as u8;
        out.extend_from_slice(&(x | (u16::from(m.kind.code()) << 14)).to_be_bytes());
        out.extend_from_slice(&y.to_be_bytes());
        out.extend_from_slice(&[a, m.quality.min(100)]);
    }
    out.extend_from_slice(&0u16.to_be_bytes());
    Ok(())
}
