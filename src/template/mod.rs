//! Templates in and out: the first stage of the data flow.
//!
//! Bytes from a matching service become [`Template`]s (one per finger view)
//! through a parser per format; [`detect`] picks the parser from the bytes,
//! [`ParseOptions::format`] forces one. Writers produce ISO/IEC
//! 19794-2:2005 and whorl's JSON. The coordinate and angle conventions every
//! parser maps onto are documented in [`model`].
//!
//! | format | module | read | write |
//! |--------|--------|------|-------|
//! | ISO/IEC 19794-2:2005 | [`fmr2005`] | yes | yes |
//! | ANSI INCITS 378-2004 | [`fmr2005`] | yes | |
//! | ISO/IEC 19794-2:2011 | [`fmr2011`] | yes | |
//! | ANSI INCITS 378-2009 (libbiomeval's "ANSI 2007") | [`fmr2011`] | yes | |
//! | ANSI/NIST-ITL Type-9 (traditional encoding) | [`an2k`] | yes | |
//! | NIST xyt text | [`xyt`] | yes | |
//! | whorl JSON | [`json`] | yes | yes |

pub mod an2k;
mod cursor;
mod error;
pub mod fmr2005;
pub mod fmr2011;
pub mod json;
pub mod model;
pub mod xyt;

pub use error::{Problem, TemplateError};
pub use model::{FingerPosition, ImpressionType, Minutia, MinutiaKind, Template, wrap_angle};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A template format whorl reads (and for some, writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// ISO/IEC 19794-2:2005 finger minutiae record.
    Iso2005,
    /// ISO/IEC 19794-2:2011 finger minutiae record.
    Iso2011,
    /// ANSI INCITS 378-2004.
    Ansi378_2004,
    /// ANSI INCITS 378-2009 (version "030"; called "ANSI 2007" by libbiomeval).
    Ansi378_2009,
    /// ANSI/NIST-ITL transaction (traditional encoding) with Type-9 records.
    AnsiNist,
    /// NIST xyt text: `x y theta [quality]` per line.
    Xyt,
    /// whorl's JSON.
    Json,
}

impl Format {
    /// Every format, in detection order.
    pub const ALL: [Format; 7] = [
        Format::Iso2005,
        Format::Iso2011,
        Format::Ansi378_2004,
        Format::Ansi378_2009,
        Format::AnsiNist,
        Format::Xyt,
        Format::Json,
    ];

    /// The short name used on the command line (`iso2005`, `json`, ...).
    pub fn short_name(self) -> &'static str {
        match self {
            Format::Iso2005 => "iso2005",
            Format::Iso2011 => "iso2011",
            Format::Ansi378_2004 => "ansi2004",
            Format::Ansi378_2009 => "ansi2009",
            Format::AnsiNist => "an2k",
            Format::Xyt => "xyt",
            Format::Json => "json",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Iso2005 => "ISO 19794-2:2005",
            Format::Iso2011 => "ISO 19794-2:2011",
            Format::Ansi378_2004 => "ANSI INCITS 378-2004",
            Format::Ansi378_2009 => "ANSI INCITS 378-2009",
            Format::AnsiNist => "ANSI/NIST-ITL",
            Format::Xyt => "NIST xyt",
            Format::Json => "whorl JSON",
        })
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        let s = s.to_ascii_lowercase().replace(['-', '_', ' ', ':'], "");
        Ok(match s.as_str() {
            "iso2005" | "iso" | "iso197942" | "iso1979422005" => Format::Iso2005,
            "iso2011" | "iso1979422011" => Format::Iso2011,
            "ansi2004" | "ansi3782004" | "ansi" => Format::Ansi378_2004,
            "ansi2007" | "ansi2009" | "ansi3782007" | "ansi3782009" => Format::Ansi378_2009,
            "an2k" | "ansinist" | "nist" | "type9" | "eft" => Format::AnsiNist,
            "xyt" => Format::Xyt,
            "json" => Format::Json,
            _ => {
                return Err(format!(
                    "unknown format '{s}' (expected one of iso2005, iso2011, ansi2004, ansi2009, an2k, xyt, json)"
                ));
            }
        })
    }
}

/// Options for [`parse_with`].
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// Force this format instead of detecting it.
    pub format: Option<Format>,
    /// For NIST xyt, which carries neither: resolution (px/cm) and image
    /// height. See [`xyt`] for the defaults.
    pub xyt: xyt::XytOptions,
    /// Caps on what the record may hold (none by default).
    pub limits: Limits,
}

/// Caps on one record, checked while parsing so that a client cannot hand
/// the quadratic stages after parsing (cylinders, embeddings) unbounded
/// work. Binary records hold at most 255 minutiae per view and 255 views by
/// their encoding; text formats (xyt, JSON) and ANSI/NIST-ITL are bounded
/// only by these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most minutiae one finger view may hold.
    pub max_minutiae_per_view: usize,
    /// Most finger views one record may hold.
    pub max_views: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_minutiae_per_view: usize::MAX, max_views: usize::MAX }
    }
}

impl Limits {
    /// Checks parsed views against the caps.
    fn check(&self, format: Format, templates: &[Template]) -> Result<(), TemplateError> {
        if templates.len() > self.max_views {
            return Err(TemplateError::TooMany {
                format,
                what: "the record".into(),
                count: templates.len(),
                items: "finger views",
                limit: self.max_views,
            });
        }
        match templates.iter().position(|t| t.minutiae.len() > self.max_minutiae_per_view) {
            Some(v) => Err(TemplateError::TooMany {
                format,
                what: format!("view {v}"),
                count: templates[v].minutiae.len(),
                items: "minutiae",
                limit: self.max_minutiae_per_view,
            }),
            None => Ok(()),
        }
    }
}

/// The result of a parse: the views and what the parser noticed on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The format the bytes were read as.
    pub format: Format,
    /// One template per finger view, in record order.
    pub templates: Vec<Template>,
    /// Things worth telling a person (skipped extended data, trailing bytes).
    pub notes: Vec<String>,
    /// Set when an extended data block ran past the record's end.
    overrun: bool,
}

impl Parsed {
    fn new(format: Format) -> Parsed {
        Parsed { format, templates: Vec::new(), notes: Vec::new(), overrun: false }
    }
}

/// Finds the format of `bytes` from their content.
pub fn detect(bytes: &[u8]) -> Result<Format, TemplateError> {
    if bytes.is_empty() {
        return Err(TemplateError::Empty);
    }
    if let Some(version) = bytes.strip_prefix(b"FMR\0") {
        return match version.get(..4) {
            Some(b" 20\0") => Ok(fmr2005::sniff(bytes)),
            Some(b"030\0") | Some(b"035\0") => Ok(fmr2011::sniff(bytes)),
            Some(v) => Err(TemplateError::UnknownFormat(format!(
                "finger minutiae record with unsupported version {v:02x?} (supported: \" 20\\0\", \"030\\0\", \"035\\0\")"
            ))),
            None => {
                Err(TemplateError::UnknownFormat("finger minutiae record cut short before its version field".into()))
            }
        };
    }
    if an2k::looks_like(bytes) {
        return Ok(Format::AnsiNist);
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'{') | Some(b'[') => Ok(Format::Json),
        Some(_) if xyt::looks_like(bytes) => Ok(Format::Xyt),
        _ => {
            let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            Err(TemplateError::UnknownFormat(format!(
                "{} bytes starting {}: not a finger minutiae record (FMR), ANSI/NIST-ITL transaction, xyt text or JSON",
                bytes.len(),
                head.join(" ")
            )))
        }
    }
}

/// Parses `bytes`, detecting the format (see [`parse_with`] for options).
pub fn parse(bytes: &[u8]) -> Result<Vec<Template>, TemplateError> {
    parse_with(bytes, &ParseOptions::default()).map(|p| p.templates)
}

/// Parses `bytes` as `format`.
pub fn parse_as(bytes: &[u8], format: Format) -> Result<Vec<Template>, TemplateError> {
    let opts = ParseOptions { format: Some(format), ..ParseOptions::default() };
    parse_with(bytes, &opts).map(|p| p.templates)
}

/// Parses `bytes` with options, returning the format used and notes.
pub fn parse_with(bytes: &[u8], opts: &ParseOptions) -> Result<Parsed, TemplateError> {
    if bytes.is_empty() {
        return Err(TemplateError::Empty);
    }
    let format = match opts.format {
        Some(f) => f,
        None => detect(bytes)?,
    };
    let parsed = match format {
        Format::Iso2005 | Format::Ansi378_2004 => fmr2005::parse(bytes, format),
        Format::Iso2011 | Format::Ansi378_2009 => fmr2011::parse(bytes, format),
        Format::AnsiNist => an2k::parse(bytes),
        // xyt counts its lines before reading any (a text file is bounded only by the caps).
        Format::Xyt => xyt::parse_limited(bytes, &opts.xyt, &opts.limits),
        Format::Json => json::parse(bytes),
    }?;
    // Every format is linear to parse; the caps bound what comes after.
    opts.limits.check(parsed.format, &parsed.templates)?;
    Ok(parsed)
}

/// Writes templates in `format` (ISO/IEC 19794-2:2005 or JSON).
pub fn write(templates: &[Template], format: Format) -> Result<Vec<u8>, TemplateError> {
    match format {
        Format::Iso2005 => fmr2005::write_iso2005(templates),
        Format::Json => json::write(templates),
        other => Err(TemplateError::Unwritable { format: other, reason: "whorl writes only iso2005 and json".into() }),
    }
}
