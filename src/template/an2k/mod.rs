//! ANSI/NIST-ITL 1-2000/2007/2011 transactions, traditional encoding, and
//! the minutiae of their Type-9 records.
//!
//! # Framing
//!
//! * Tagged records (types 1, 2, 9, 10, 13-17, 99, ...) are ASCII fields
//!   `T.NNN:value` separated by GS (0x1D); a record ends with FS (0x1C).
//!   Subfields are separated by RS (0x1E), information items by US (0x1F).
//!   The first field, `T.001` (LEN), is the byte length of the record
//!   including its FS. Field `T.999` of image records is binary and is
//!   skipped by LEN, never scanned.
//! * Binary records (types 3-8) start with a 4-byte big-endian length that
//!   includes itself. Only the Type-1 content list (`1.003` CNT) says which
//!   type each following record is, so records are walked in CNT order.
//! * `1.011` NSR / `1.012` NTR give the resolution in pixels per millimetre.
//!
//! One template is produced per Type-9 record that carries minutiae; see
//! [`type9`] for the minutiae blocks and their units.

mod type9;

use super::{Format, Parsed, TemplateError};

const FS: u8 = 0x1c;
const GS: u8 = 0x1d;
/// Subfield separator.
pub(crate) const RS: u8 = 0x1e;
/// Information item separator.
pub(crate) const US: u8 = 0x1f;

/// Whether the bytes start like an ANSI/NIST-ITL transaction (`1.001:` or `1.01:`).
pub fn looks_like(bytes: &[u8]) -> bool {
    let Some(rest) = bytes.strip_prefix(b"1.") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    (1..=3).contains(&digits)
        && rest.get(digits) == Some(&b':')
        && rest[..digits].iter().all(|&d| d == b'0' || d == b'1')
}

/// One field of a tagged record.
#[derive(Debug, Clone)]
pub(crate) struct Field<'a> {
    /// Field number (the `NNN` of `T.NNN`).
    pub number: u32,
    /// The value bytes.
    pub value: &'a [u8],
    /// Offset of the value in the transaction.
    pub offset: usize,
}

/// A tagged record: its type and fields.
#[derive(Debug, Clone)]
pub(crate) struct Record<'a> {
    /// Offset of the record in the transaction.
    pub offset: usize,
    /// Byte length from LEN, checked against the input.
    pub len: usize,
    pub fields: Vec<Field<'a>>,
}

impl<'a> Record<'a> {
    /// The field numbered `n`, if present.
    pub fn field(&self, n: u32) -> Option<&Field<'a>> {
        self.fields.iter().find(|f| f.number == n)
    }
}

pub(crate) fn err(field: impl Into<String>, offset: usize, msg: impl Into<String>) -> TemplateError {
    TemplateError::invalid(Format::AnsiNist, field, offset, msg)
}

/// Parses a transaction into one template per Type-9 record with minutiae.
pub fn parse(buf: &[u8]) -> Result<Parsed, TemplateError> {
    let mut parsed = Parsed::new(Format::AnsiNist);
    let type1 = tagged(buf, 0, Some(1))?;
    let mut pos = type1.len;
    let content = content_list(&type1)?;
    let ppmm = resolution(&type1, &mut parsed);
    for (i, &(kind, idc)) in content.iter().enumerate() {
        if pos >= buf.len() {
            return Err(err(
                format!("record {} (type {kind}, IDC {idc}) listed in 1.003", i + 1),
                pos,
                "the transaction ends before this record",
            ));
        }
        if (3..=8).contains(&kind) {
            pos += binary_len(buf, pos, kind)?;
            continue;
        }
        let rec = tagged(buf, pos, Some(kind))?;
        pos += rec.len;
        if kind == 9 {
            match type9::template(&rec, ppmm, &mut parsed)? {
                Some(t) => parsed.templates.push(t),
                None => parsed.notes.push(format!("Type-9 record at offset {} carries no minutiae block", rec.offset)),
            }
        }
    }
    if pos < buf.len() {
        parsed.notes.push(format!("{} bytes after the last record listed in 1.003 ignored", buf.len() - pos));
    }
    Ok(parsed)
}

/// Resolution in pixels per millimetre from 1.011 (native) or 1.012
/// (nominal); 19.69 (500 ppi) when neither gives one.
fn resolution(type1: &Record, parsed: &mut Parsed) -> f32 {
    let parse = |n: u32| {
        let f = type1.field(n)?;
        let v: f32 = std::str::from_utf8(f.value).ok()?.trim().parse().ok()?;
        (v > 0.0 && v.is_finite()).then_some(v)
    };
    if let Some(v) = parse(11).or_else(|| parse(12)) {
        return v;
    }
    parsed.notes.push("no resolution in 1.011/1.012: 19.69 px/mm (500 ppi) assumed".into());
    19.69
}

/// Parses the content list 1.003: `1␟n` then `type␟idc` per record.
fn content_list(type1: &Record) -> Result<Vec<(u32, u32)>, TemplateError> {
    let f = type1.field(3).ok_or_else(|| err("1.003 CNT", type1.offset, "the Type-1 record has no content list"))?;
    let mut out = Vec::new();
    let mut at = f.offset;
    for (i, sub) in f.value.split(|&b| b == RS).enumerate() {
        let mut items = sub.split(|&b| b == US);
        let kind = number(items.next().unwrap_or_default(), "1.003 CNT record type", at)?;
        let idc = number(items.next().unwrap_or_default(), "1.003 CNT IDC", at)?;
        if i > 0 {
            out.push((kind, idc));
        } else if kind != 1 {
            return Err(err("1.003 CNT", at, format!("first subfield names record type {kind}, expected 1")));
        } else if idc as usize != f.value.split(|&b| b == RS).count() - 1 {
            return Err(err(
                "1.003 CNT",
                at,
                format!("says {idc} records follow but lists {}", f.value.split(|&b| b == RS).count() - 1),
            ));
        }
        at += sub.len() + 1;
    }
    Ok(out)
}

/// Parses an unsigned decimal item.
pub(crate) fn number(v: &[u8], field: &str, offset: usize) -> Result<u32, TemplateError> {
    let s = std::str::from_utf8(v).map_err(|_| err(field, offset, "not ASCII"))?.trim();
    s.parse::<u32>().map_err(|_| err(field, offset, format!("'{s}' is not an unsigned number")))
}

/// The length of the binary record of type `kind` at `pos`.
fn binary_len(buf: &[u8], pos: usize, kind: u32) -> Result<usize, TemplateError> {
    let field = format!("length of Type-{kind} binary record");
    let head = buf
        .get(pos..pos + 4)
        .ok_or_else(|| TemplateError::truncated(Format::AnsiNist, field.clone(), pos, buf.len() - pos, 4))?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len < 5 {
        return Err(err(field, pos, format!("{len} bytes is shorter than the record header")));
    }
    if pos + len > buf.len() {
        return Err(TemplateError::truncated(
            Format::AnsiNist,
            format!("Type-{kind} binary record"),
            pos,
            buf.len() - pos,
            len,
        ));
    }
    Ok(len)
}

/// Parses the tagged record starting at `start` (bounded by its LEN field).
fn tagged(buf: &[u8], start: usize, expect: Option<u32>) -> Result<Record<'_>, TemplateError> {
    // LEN first, so that the record (and any binary 999 field) is bounded.
    let first = field_at(buf, start, buf.len())?;
    let kind = first.0;
    if let Some(e) = expect.filter(|&e| e != kind) {
        return Err(err(
            format!("tag of record at offset {start}"),
            start,
            format!("record is Type-{kind} but 1.003 lists Type-{e} here"),
        ));
    }
    if first.1.number != 1 {
        return Err(err(format!("{kind}.001 LEN"), start, "a tagged record must start with its LEN field"));
    }
    let len = number(first.1.value, &format!("{kind}.001 LEN"), first.1.offset)? as usize;
    let end = start.checked_add(len).filter(|&e| e <= buf.len()).ok_or_else(|| {
        TemplateError::truncated(Format::AnsiNist, format!("Type-{kind} record"), start, buf.len() - start, len)
    })?;
    if len == 0 || buf[end - 1] != FS {
        return Err(err(
            format!("Type-{kind} record"),
            end.saturating_sub(1),
            "LEN does not end on a record separator (FS)",
        ));
    }
    let mut fields = vec![first.1];
    let mut pos = first.2;
    while pos < end {
        let (k, f, next) = field_at(buf, pos, end)?;
        if k != kind {
            return Err(err(
                format!("field at offset {pos}"),
                pos,
                format!("tag of Type-{k} inside a Type-{kind} record"),
            ));
        }
        fields.push(f);
        pos = next;
    }
    Ok(Record { offset: start, len, fields })
}

/// Parses one `T.NNN:value` field at `pos`; returns (record type, field, next position).
fn field_at(buf: &[u8], pos: usize, end: usize) -> Result<(u32, Field<'_>, usize), TemplateError> {
    let window = &buf[pos..end];
    let colon =
        window.iter().take(16).position(|&b| b == b':').ok_or_else(|| {
            err(format!("field tag at offset {pos}"), pos, "expected 'T.NNN:' (no ':' within 16 bytes)")
        })?;
    let tag = std::str::from_utf8(&window[..colon]).map_err(|_| err("field tag", pos, "not ASCII"))?;
    let (t, n) = tag.split_once('.').ok_or_else(|| err(format!("field tag '{tag}'"), pos, "expected 'T.NNN'"))?;
    let t: u32 = t.parse().map_err(|_| err(format!("field tag '{tag}'"), pos, "record type is not a number"))?;
    let n: u32 = n.parse().map_err(|_| err(format!("field tag '{tag}'"), pos, "field number is not a number"))?;
    let vstart = pos + colon + 1;
    let value_end = if n == 999 {
        // Binary image data runs to the record's final FS.
        end.saturating_sub(1).max(vstart)
    } else {
        vstart
            + buf[vstart..end].iter().position(|&b| b == GS || b == FS).ok_or_else(|| {
                err(format!("{t}.{n:03}"), vstart, "field runs to the end of the record without GS or FS")
            })?
    };
    let field = Field { number: n, value: &buf[vstart..value_end], offset: vstart };
    Ok((t, field, value_end + 1))
}
