//! The packed template stream: many ISO/IEC 19794-2:2005 records with their
//! ground truth in one file, for galleries too large for one file each.
//!
//! | offset | bytes | field |
//! |-------:|------:|-------|
//! | 0 | 8 | magic `WHORLSYN` |
//! | 8 | 4 | format version, u32 LE (1) |
//! | 12 | 4 | reserved, 0 |
//! | 16 | … | frames |
//!
//! Each frame: payload length u32 LE, finger id u64 LE, impression u32 LE,
//! CRC32C (Castagnoli) u32 LE of the finger id, impression and payload,
//! then the payload: one ISO 19794-2:2005 record.

use crate::template::{self, Format, Template, TemplateError};
use std::io::{self, BufRead, Read, Write};

/// Magic bytes at the start of a pack.
pub const MAGIC: &[u8; 8] = b"WHORLSYN";
/// Current version.
pub const VERSION: u32 = 1;
const FRAME_HEAD: usize = 20;
/// Largest payload accepted (an ISO record of 255 views of 255 minutiae is ~400 KB).
const MAX_PAYLOAD: u32 = 1 << 24;

/// Errors reading or writing a pack.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The underlying file failed.
    #[error("pack I/O: {0}")]
    Io(#[from] io::Error),
    /// The file does not start with the magic.
    #[error("not a whorl pack: magic at offset 0 is {0:02x?}")]
    BadMagic(Vec<u8>),
    /// A version this build does not read.
    #[error("pack format version {0} at offset 8 is not supported (this build reads {VERSION})")]
    Version(u32),
    /// The file ends inside a frame.
    #[error("pack truncated: frame at offset {offset} needs {need} bytes, {have} present")]
    Truncated {
        /// Frame start.
        offset: u64,
        /// Bytes the frame needs.
        need: u64,
        /// Bytes present.
        have: u64,
    },
    /// A frame's length field is implausible.
    #[error("pack frame at offset {offset}: payload length {len} exceeds {MAX_PAYLOAD}")]
    Length {
        /// Frame start.
        offset: u64,
        /// Declared length.
        len: u32,
    },
    /// A frame's checksum does not match.
    #[error("pack frame at offset {offset}: CRC32C mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum {
        /// Frame start.
        offset: u64,
        /// Stored checksum.
        stored: u32,
        /// Computed checksum.
        computed: u32,
    },
    /// A frame's payload is not a valid template.
    #[error("pack frame at offset {offset}: {source}")]
    Template {
        /// Frame start.
        offset: u64,
        /// The parser's error.
        source: TemplateError,
    },
}

/// Writes frames to a pack.
pub struct PackWriter<W: Write> {
    out: W,
    frames: u64,
}

impl<W: Write> PackWriter<W> {
    /// Starts a pack, writing the header.
    pub fn new(mut out: W) -> Result<PackWriter<W>, PackError> {
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        Ok(PackWriter { out, frames: 0 })
    }

    /// Appends one template with its ground truth.
    pub fn push(&mut self, finger: u64, impression: u32, t: &Template) -> Result<(), PackError> {
        let payload = template::write(std::slice::from_ref(t), Format::Iso2005)
            .map_err(|source| PackError::Template { offset: 0, source })?;
        let len = u32::try_from(payload.len()).map_err(|_| PackError::Length { offset: 0, len: u32::MAX })?;
        let mut ids = [0u8; 12];
        ids[..8].copy_from_slice(&finger.to_le_bytes());
        ids[8..].copy_from_slice(&impression.to_le_bytes());
        let crc = crate::checksum::crc32c_append(crate::checksum::crc32c(&ids), &payload);
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&ids)?;
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&payload)?;
        self.frames += 1;
        Ok(())
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> Result<W, PackError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One frame read back.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedTemplate {
    /// Finger id.
    pub finger: u64,
    /// Impression number.
    pub impression: u32,
    /// The template (first view of the record).
    pub template: Template,
}

/// Reads a pack frame by frame; an iterator of results.
pub struct PackReader<R: BufRead> {
    input: R,
    offset: u64,
    done: bool,
}

impl<R: BufRead> PackReader<R> {
    /// Opens a pack, checking magic and version.
    pub fn new(mut input: R) -> Result<PackReader<R>, PackError> {
        let mut head = [0u8; 16];
        let n = read_full(&mut input, &mut head)?;
        if n < 8 || &head[..8] != MAGIC {
            return Err(PackError::BadMagic(head[..n.min(8)].to_vec()));
        }
        if n < 16 {
            return Err(PackError::Truncated { offset: 0, need: 16, have: n as u64 });
        }
        let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        if version != VERSION {
            return Err(PackError::Version(version));
        }
        Ok(PackReader { input, offset: 16, done: false })
    }

    fn next_frame(&mut self) -> Result<Option<PackedTemplate>, PackError> {
        let offset = self.offset;
        let mut head = [0u8; FRAME_HEAD];
        let n = read_full(&mut self.input, &mut head)?;
        if n == 0 {
            return Ok(None);
        }
        if n < FRAME_HEAD {
            return Err(PackError::Truncated { offset, need: FRAME_HEAD as u64, have: n as u64 });
        }
        let le32 = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let len = le32(0);
        if len > MAX_PAYLOAD {
            return Err(PackError::Length { offset, len });
        }
        let mut payload = vec![0u8; len as usize];
        let got = read_full(&mut self.input, &mut payload)?;
        if got < payload.len() {
            let need = (FRAME_HEAD + payload.len()) as u64;
            return Err(PackError::Truncated { offset, need, have: (FRAME_HEAD + got) as u64 });
        }
        let stored = le32(16);
        let computed = crate::checksum::crc32c_append(crate::checksum::crc32c(&head[4..16]), &payload);
        if stored != computed {
            return Err(PackError::Checksum { offset, stored, computed });
        }
        self.offset += (FRAME_HEAD + payload.len()) as u64;
        let mut finger = [0u8; 8];
        finger.copy_from_slice(&head[4..12]);
        let template = template::parse_as(&payload, Format::Iso2005)
            .and_then(|mut v| v.drain(..).next().ok_or(TemplateError::Empty))
            .map_err(|source| PackError::Template { offset, source })?;
        Ok(Some(PackedTemplate { finger: u64::from_le_bytes(finger), impression: le32(12), template }))
    }
}

impl<R: BufRead> Iterator for PackReader<R> {
    type Item = Result<PackedTemplate, PackError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.next_frame();
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r.transpose()
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
