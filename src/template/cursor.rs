//! A bounds-checked big-endian reader: every read either returns the bytes or
//! an error naming the field and offset. Nothing here can panic.

use super::{Format, TemplateError};

/// Something that names a field, built only when an error needs it.
pub trait FieldName {
    /// The field's name, e.g. `minutia 3 of view 0`.
    fn name(&self) -> String;
}

impl FieldName for &str {
    fn name(&self) -> String {
        (*self).to_string()
    }
}

impl<F: Fn() -> String> FieldName for F {
    fn name(&self) -> String {
        self()
    }
}

/// A reader over one record.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    format: Format,
}

impl<'a> Cursor<'a> {
    /// A reader at the start of `buf`, reporting errors as `format`.
    pub fn new(buf: &'a [u8], format: Format) -> Cursor<'a> {
        Cursor { buf, pos: 0, format }
    }

    /// A reader positioned at `pos` (clamped to the end of `buf`).
    pub fn starting_at(buf: &'a [u8], pos: usize, format: Format) -> Cursor<'a> {
        Cursor { buf, pos: pos.min(buf.len()), format }
    }

    /// The current offset.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The format errors are reported as.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Takes `n` bytes for `field`.
    pub fn take(&mut self, n: usize, field: impl FieldName) -> Result<&'a [u8], TemplateError> {
        let start = self.pos;
        let have = self.remaining();
        if have < n {
            return Err(TemplateError::truncated(self.format, field.name(), start, have, n));
        }
        let out = &self.buf[start..start + n];
        self.pos = start + n;
        Ok(out)
    }

    /// Takes a fixed-size array for `field`.
    pub fn array<const N: usize>(&mut self, field: impl FieldName) -> Result<[u8; N], TemplateError> {
        let s = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, field: impl FieldName) -> Result<u8, TemplateError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self, field: impl FieldName) -> Result<u16, TemplateError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self, field: impl FieldName) -> Result<u32, TemplateError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// Skips `n` bytes belonging to `field`.
    pub fn skip(&mut self, n: usize, field: impl FieldName) -> Result<(), TemplateError> {
        self.take(n, field).map(|_| ())
    }

    /// An invalid-value error for a field that started at `offset`.
    pub fn invalid(&self, field: impl FieldName, offset: usize, msg: impl Into<String>) -> TemplateError {
        TemplateError::invalid(self.format, field.name(), offset, msg)
    }
}

/// Reads a big-endian `u16` at `at`, if present (for format sniffing).
pub fn peek_u16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Reads a big-endian `u32` at `at`, if present (for format sniffing).
pub fn peek_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}
