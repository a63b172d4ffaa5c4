//! The client side of whorl, as the command line uses it: what `whorl
//! identify`, `enroll`, `shards`, `probes`, `bench` and `status` do,
//! without the printing. The command line (`src/cli/`) parses arguments,
//! calls these and prints what they return.
//!
//! * [`ops`]: one function per request kind (identify, verify, enrol,
//!   delete, shards, stats), with errors in words.
//! * [`probes`]: synthetic probe sets with known mates, and probe folders.
//! * [`bench`]: the load generator's reports as tables (error footnotes
//!   included) and as a written report with a latency plot.
//! * [`demo`]: the demo's cached gallery and per-run working copy.
//! * [`watch`]: following hit notifications, acknowledging each event.
//! * [`status`]: a server at a glance: health, gallery, shards, load, and
//!   latency and errors from its Prometheus endpoint ([`promtext`] reads it).
//!
//! Connecting itself (addresses, TLS, tokens) is [`crate::server::client`];
//! the load generator is [`crate::server::loadgen`]; tables and numbers
//! for people are [`crate::table`].

pub mod bench;
pub mod demo;
pub mod ops;
pub mod probes;
pub mod promtext;
pub mod status;
pub mod watch;

use crate::server::client::ConnectError;
use std::path::PathBuf;

/// What a client command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached (or its address was not understood).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The server answered a request with an error status.
    #[error("{what}: {code}: {message}")]
    Status {
        /// The request, e.g. `enrolling alice`.
        what: String,
        /// The status code's name, e.g. `INVALID_ARGUMENT`.
        code: &'static str,
        /// The server's message.
        message: String,
    },
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The request was refused before it was sent (bad argument).
    #[error("{0}")]
    Invalid(String),
    /// Making a synthetic template's record failed.
    #[error("writing a template: {0}")]
    Template(#[from] crate::template::TemplateError),
    /// The metrics endpoint could not be read.
    #[error("metrics {url}: {reason}")]
    Metrics {
        /// The URL asked.
        url: String,
        /// Why it failed.
        reason: String,
    },
}

impl ClientError {
    /// A status reply to the request described by `what`.
    pub fn status(what: impl Into<String>, s: &tonic::Status) -> ClientError {
        let message = match s.code() {
            // The transport's own words for a server that went away mid-call.
            tonic::Code::Unavailable if s.message().is_empty() || s.message() == "transport error" => {
                "the server is unreachable or went away".to_string()
            }
            _ => s.message().to_string(),
        };
        ClientError::Status { what: what.into(), code: crate::server::audit::code_name(s.code()), message }
    }

    /// A local file error.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> ClientError {
        ClientError::Io { path: path.into(), source }
    }
}
