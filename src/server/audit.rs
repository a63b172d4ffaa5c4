//! The audit trail: one JSON line per identify, verify, enrol and delete
//! (time, caller, method, SHA-256 of the probe's bytes, decision, number of
//! candidates, status), appended to a file by a background thread that
//! fsyncs after every batch it drains. Template bytes and tokens are never
//! written, only the probe's hash.

use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::time::SystemTime;

/// One audited call.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    /// RFC 3339 time of the reply.
    pub time: String,
    /// Caller (token name, certificate fingerprint, peer address).
    pub client: String,
    /// gRPC method.
    pub method: String,
    /// SHA-256 (hex) of the probe's or enrolment's template bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_sha256: Option<String>,
    /// Subject id (verify, enrol, delete).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// hit / no_hit for searches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// Candidates returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidates: Option<usize>,
    /// gRPC status code name ("OK", "INVALID_ARGUMENT", ...).
    pub status: String,
}

impl Event {
    /// An event stamped now.
    pub fn now(client: String, method: &str, status: tonic::Code) -> Event {
        Event {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            client,
            method: method.to_string(),
            probe_sha256: None,
            subject: None,
            decision: None,
            candidates: None,
            status: code_name(status).to_string(),
        }
    }
}

/// The canonical name of a gRPC status code.
pub fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The audit log's writer.
#[derive(Debug, Clone)]
pub struct Audit {
    tx: Option<mpsc::Sender<Event>>,
}

impl Audit {
    /// Appends to `path` (created if missing); `None` sends events to the log only.
    pub fn open(path: Option<&Path>) -> std::io::Result<(Audit, Option<std::thread::JoinHandle<()>>)> {
        let Some(path) = path else { return Ok((Audit { tx: None }, None)) };
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, rx) = mpsc::channel::<Event>();
        let shown = path.display().to_string();
        let handle = std::thread::Builder::new().name("whorl-audit".into()).spawn(move || {
            // Block for one event, then drain what queued meanwhile; one fsync per batch.
            while let Ok(first) = rx.recv() {
                let mut buf = Vec::new();
                for e in std::iter::once(first).chain(rx.try_iter()) {
                    if serde_json::to_writer(&mut buf, &e).is_ok() {
                        buf.push(b'\n');
                    }
                }
                if let Err(e) = file.write_all(&buf).and_then(|_| file.sync_data()) {
                    tracing::error!("audit log {shown}: {e}");
                }
            }
        })?;
        Ok((Audit { tx: Some(tx) }, Some(handle)))
    }

    /// Records an event.
    pub fn record(&self, e: Event) {
        tracing::info!(target: "whorl::audit", method = %e.method, client = %e.client, status = %e.status, decision = ?e.decision, candidates = ?e.candidates, "audit");
        if let Some(tx) = &self.tx {
            let _ = tx.send(e);
        }
    }

    /// Stops accepting events; the writer thread drains and exits.
    pub fn close(&mut self) {
        self.tx = None;
    }
}
