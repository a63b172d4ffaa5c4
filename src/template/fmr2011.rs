//! Version `"030\0"` / `"035\0"` finger minutiae records: ISO/IEC
//! 19794-2:2011 and the ANSI INCITS 378 records that share its version.
//!
//! # ISO/IEC 19794-2:2011
//!
//! General header (15 bytes): `"FMR\0"`, `"030\0"`, record length u32,
//! number of finger representations u16, certification flag u8. Each
//! representation:
//!
//! | bytes | field |
//! |------:|-------|
//! | 4 | representation length (including these 4 bytes) |
//! | 9 | capture date and time |
//! | 1, 2, 2 | capture device technology, vendor id, type id |
//! | 1 + 5·Q | quality blocks: score, algorithm vendor u16, algorithm id u16 |
//! | 1 + 3·C | certification blocks, only when the header's flag is 1 |
//! | 1, 1 | finger position, representation number |
//! | 2, 2 | x, y resolution (px/cm) |
//! | 1 | impression type |
//! | 2, 2 | image width, height |
//! | 1 | minutia field length (high nibble: 5 or 6) and ridge-ending type (low nibble) |
//! | 1 | number of minutiae |
//! | 5·n or 6·n | minutiae as in 2005; the quality byte only when the field length is 6 |
//! | 2 + … | extended data, framed as in 2005 |
//!
//! # ANSI "030" records
//!
//! Two incompatible layouts carry version `"030\0"` besides ISO 2011: the
//! NIST/libbiomeval "ANSI 2007" record with a 20-byte header (record length
//! u32, CBEFF owner u16, CBEFF type u16, capture equipment u16, views u8,
//! reserved u8) and INCITS 378-2009 (and its 2010 amendment, `"035\0"`) with
//! a 21-byte header (record length u32, vendor u16, subformat u16, device
//! certification u8, device id u16, views u8, reserved u8). Their views are
//! the same: finger position, view number, impression type, finger quality
//! (one byte each), quality algorithm vendor u16 and id u16, image width,
//! height, x and y resolution (u16 each), number of minutiae, 6-byte
//! minutiae with angles in 2-degree units, extended data. The layout whose
//! parse ends exactly at the record length is taken.
//!
//! ISO 2011 is told from ANSI structurally (after FingerprintIO): the record
//! is ISO when its representation lengths, each at least 34, add up to the
//! record length less the 15-byte header.

use super::cursor::{Cursor, peek_u16, peek_u32};
use super::fmr2005::{extended_data, minutiae};
use super::{FingerPosition, Format, ImpressionType, Parsed, Template, TemplateError};
use std::f32::consts::TAU;

/// ISO 2011 or ANSI 378-2009 for a `"030\0"` / `"035\0"` record.
pub fn sniff(buf: &[u8]) -> Format {
    if buf.get(4..8) == Some(b"035\0") {
        return Format::Ansi378_2009;
    }
    let (Some(total), Some(n)) = (peek_u32(buf, 8), peek_u16(buf, 12)) else {
        return Format::Iso2011;
    };
    let mut p: u64 = 15;
    for _ in 0..n {
        match peek_u32(buf, p as usize) {
            Some(len) if len >= 34 => p += u64::from(len),
            _ => return Format::Ansi378_2009,
        }
    }
    if n > 0 && p == u64::from(total) { Format::Iso2011 } else { Format::Ansi378_2009 }
}

/// Parses an ISO 2011 or ANSI 378-2009 record.
pub fn parse(buf: &[u8], format: Format) -> Result<Parsed, TemplateError> {
    let mut c = Cursor::new(buf, format);
    let magic = c.array::<4>("format identifier")?;
    if &magic != b"FMR\0" {
        return Err(c.invalid("format identifier", 0, format!("expected \"FMR\\0\", found {magic:02x?}")));
    }
    let version = c.array::<4>("version")?;
    if &version != b"030\0" && !(format == Format::Ansi378_2009 && &version == b"035\0") {
        return Err(c.invalid("version", 4, format!("expected \"030\\0\", found {version:02x?}")));
    }
    let length = c.u32("record length")? as usize;
    if length > buf.len() {
        // Parse what is there first so the error names the cut field.
        let partial = match format {
            Format::Iso2011 => iso(buf, length),
            _ => ansi(buf, length, &version),
        };
        partial?;
        return Err(TemplateError::truncated(format, "record", 0, buf.len(), length));
    }
    let mut parsed = match format {
        Format::Iso2011 => iso(buf, length)?,
        _ => ansi(buf, length, &version)?,
    };
    if length < buf.len() {
        parsed.notes.push(format!("record length says {length} bytes; {} trailing bytes ignored", buf.len() - length));
    }
    Ok(parsed)
}

fn iso(buf: &[u8], length: usize) -> Result<Parsed, TemplateError> {
    let end = length.min(buf.len());
    let mut c = Cursor::starting_at(&buf[..end], 12, Format::Iso2011);
    let reprs = c.u16("number of finger representations")?;
    let cert = c.u8("certification flag")?;
    if cert > 1 {
        return Err(c.invalid("certification flag", 14, format!("{cert} is neither 0 nor 1")));
    }
    let mut parsed = Parsed::new(Format::Iso2011);
    for r in 0..reprs {
        let start = c.pos();
        let len = c.u32(|| format!("length of representation {r}"))? as usize;
        if len < 4 {
            return Err(c.invalid(
                || format!("length of representation {r}"),
                start,
                format!("{len} bytes is too short"),
            ));
        }
        c.skip(len - 4, || format!("representation {r}"))?;
        let mut rc = Cursor::starting_at(&buf[..start + len], start + 4, Format::Iso2011);
        let t = representation(&mut rc, r, cert == 1, &mut parsed)?;
        if rc.remaining() > 0 {
            parsed.notes.push(format!("representation {r}: {} unused bytes at offset {}", rc.remaining(), rc.pos()));
        }
        parsed.templates.push(t);
    }
    if c.remaining() > 0 {
        parsed.notes.push(format!("{} bytes after the last representation ignored", c.remaining()));
    }
    Ok(parsed)
}

fn representation(c: &mut Cursor, r: u16, cert: bool, parsed: &mut Parsed) -> Result<Template, TemplateError> {
    let v = u8::try_from(r).unwrap_or(u8::MAX);
    c.skip(9, || format!("capture date and time of representation {r}"))?;
    c.skip(5, || format!("capture device of representation {r}"))?;
    let qn = c.u8(|| format!("quality block count of representation {r}"))?;
    let mut quality = None;
    for q in 0..qn {
        let b = c.array::<5>(|| format!("quality block {q} of representation {r}"))?;
        quality.get_or_insert(b[0]);
    }
    if cert {
        let cn = c.u8(|| format!("certification block count of representation {r}"))?;
        c.skip(3 * usize::from(cn), || format!("certification blocks of representation {r}"))?;
    }
    let position = c.u8(|| format!("finger position of representation {r}"))?;
    let number = c.u8(|| format!("representation number of representation {r}"))?;
    let res_x = c.u16(|| format!("x resolution of representation {r}"))?;
    let res_y = c.u16(|| format!("y resolution of representation {r}"))?;
    let impression = c.u8(|| format!("impression type of representation {r}"))?;
    let width = c.u16(|| format!("image width of representation {r}"))?;
    let height = c.u16(|| format!("image height of representation {r}"))?;
    let at = c.pos();
    let field = c.u8(|| format!("minutia field length of representation {r}"))?;
    let size = usize::from(field >> 4);
    if size != 5 && size != 6 {
        return Err(c.invalid(
            || format!("minutia field length of representation {r}"),
            at,
            format!("{size} bytes (expected 5 or 6)"),
        ));
    }
    let count = c.u8(|| format!("number of minutiae of representation {r}"))?;
    let minutiae = minutiae(c, v, count, size, TAU / 256.0, parsed)?;
    extended_data(c, v, parsed)?;
    Ok(Template {
        finger_position: FingerPosition(position),
        impression_type: ImpressionType(impression),
        view_number: number,
        resolution_x: res_x,
        resolution_y: res_y,
        width,
        height,
        quality: quality.filter(|&q| q <= 100).unwrap_or(0),
        minutiae,
    })
}

/// Tries the 20-byte header, then the 21-byte one; keeps the layout whose
/// parse ends exactly at the record length, else the first that parses.
fn ansi(buf: &[u8], length: usize, version: &[u8; 4]) -> Result<Parsed, TemplateError> {
    let layouts: &[usize] = if version == b"035\0" { &[21] } else { &[20, 21] };
    let mut first: Option<Result<Parsed, TemplateError>> = None;
    for &header in layouts {
        match ansi_with(buf, length, header) {
            Ok((p, true)) => return Ok(p),
            Ok((p, false)) => {
                first.get_or_insert(Ok(p));
            }
            Err(e) => {
                first.get_or_insert(Err(e));
            }
        }
    }
    first.unwrap_or(Err(TemplateError::UnknownFormat("no ANSI INCITS 378 \"030\" layout".into())))
}

/// Parses with a `header`-byte record header; `true` when the views end
/// exactly at the record length.
fn ansi_with(buf: &[u8], length: usize, header: usize) -> Result<(Parsed, bool), TemplateError> {
    let end = length.min(buf.len());
    let views_at = header - 2;
    let mut c = Cursor::starting_at(&buf[..end], views_at, Format::Ansi378_2009);
    let views = c.u8("number of finger views")?;
    c.skip(1, "reserved byte")?;
    let mut parsed = Parsed::new(Format::Ansi378_2009);
    for v in 0..views {
        if parsed.overrun {
            return Err(c.invalid(
                || format!("view {v}"),
                c.pos(),
                "the previous view's extended data runs past the end of the record",
            ));
        }
        let h = c.array::<17>(|| format!("header of view {v}"))?;
        let be = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        let count = h[16];
        let minutiae = minutiae(&mut c, v, count, 6, TAU / 180.0, &mut parsed)?;
        extended_data(&mut c, v, &mut parsed)?;
        parsed.templates.push(Template {
            finger_position: FingerPosition(h[0]),
            impression_type: ImpressionType(h[2]),
            view_number: h[1],
            quality: h[3],
            width: be(8),
            height: be(10),
            resolution_x: be(12),
            resolution_y: be(14),
            minutiae,
        });
    }
    let exact = c.remaining() == 0;
    if !exact {
        parsed.notes.push(format!("{} bytes after the last finger view (offset {}) ignored", c.remaining(), c.pos()));
    }
    Ok((parsed, exact))
}
