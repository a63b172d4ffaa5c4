//! Errors of the template parsers and writers.
//!
//! Every error caused by the input names the format, the field and the byte
//! offset where the field starts, e.g.
//! `ISO 19794-2:2005: minutia 12 of view 0 at offset 96: record ends after 3 of 6 bytes`.

use super::Format;
use std::fmt;

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The input ends inside the field: `have` of the `need` bytes are present.
    Truncated {
        /// Bytes present.
        have: usize,
        /// Bytes the field needs.
        need: usize,
    },
    /// The field holds a value the standard does not allow.
    Invalid(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Truncated { have, need } => {
                write!(f, "record ends after {have} of {need} bytes")
            }
            Problem::Invalid(msg) => f.write_str(msg),
        }
    }
}

/// An error reading or writing a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The bytes claim to be `format` but a field is missing or wrong.
    #[error("{format}: {field} at offset {offset}: {problem}")]
    Malformed {
        /// The format being parsed.
        format: Format,
        /// The field, e.g. `minutia 12 of view 0`.
        field: String,
        /// Byte offset of the start of the field in the input.
        offset: usize,
        /// What is wrong.
        problem: Problem,
    },
    /// The bytes match no supported format (auto-detection failed).
    #[error("unknown template format: {0}")]
    UnknownFormat(String),
    /// The input is empty.
    #[error("empty input: no template bytes")]
    Empty,
    /// The record holds more than a configured cap allows.
    #[error("{format}: {what} holds {count} {items}, more than the limit of {limit}")]
    TooMany {
        /// The format being parsed.
        format: Format,
        /// What is too large: `view 3`, `the record`.
        what: String,
        /// How many it holds.
        count: usize,
        /// Of what: `minutiae`, `finger views`.
        items: &'static str,
        /// The cap.
        limit: usize,
    },
    /// A template cannot be written in the requested format.
    #[error("cannot write {format}: {reason}")]
    Unwritable {
        /// The target format.
        format: Format,
        /// Why (e.g. more than 255 minutiae).
        reason: String,
    },
}

impl TemplateError {
    /// A truncation error for `field` starting at `offset`.
    pub fn truncated(format: Format, field: impl Into<String>, offset: usize, have: usize, need: usize) -> Self {
        TemplateError::Malformed { format, field: field.into(), offset, problem: Problem::Truncated { have, need } }
    }

    /// An invalid-value error for `field` starting at `offset`.
    pub fn invalid(format: Format, field: impl Into<String>, offset: usize, msg: impl Into<String>) -> Self {
        TemplateError::Malformed { format, field: field.into(), offset, problem: Problem::Invalid(msg.into()) }
    }

    /// The byte offset the error points at, when it points at one.
    pub fn offset(&self) -> Option<usize> {
        match self {
            TemplateError::Malformed { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}
