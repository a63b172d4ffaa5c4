//! The audit trail: one JSON line per identify, verify, enrol and delete
//! (time, caller, method, SHA-256 of the probe's bytes, decision, number of
//! candidates, status), appended to a file (created 0600) by a background
//! thread that fsyncs after every batch it drains. Template bytes and
//! tokens are never written, only the probe's hash.
//!
//! * **Durable before acknowledged.** Enrolments and deletions are recorded
//!   with [`Audit::record_durable`], which returns once the line is fsynced:
//!   the server acknowledges them only after that, so a kill never leaves an
//!   acknowledged change without its line.
//! * **Floods are counted, not copied.** Refused calls (UNAUTHENTICATED,
//!   PERMISSION_DENIED, RESOURCE_EXHAUSTED) get at most
//!   `limits.audit_refusals_per_s` lines per second; the rest of each
//!   second's refusals become one summary line per method and status with
//!   the count and a sample of the callers.

use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

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
    /// The gallery of a write (named, or the default one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gallery: Option<String>,
    /// hit / no_hit for searches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// Candidates returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidates: Option<usize>,
    /// gRPC status code name ("OK", "INVALID_ARGUMENT", ...).
    pub status: String,
    /// A summary line: refused calls of this method and status not written
    /// one by one during `window_s` seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u64>,
    /// Of a summary line: its window, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_s: Option<f64>,
    /// Of a summary line: up to eight distinct callers among those counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clients_sample: Option<Vec<String>>,
}

impl Event {
    /// Fills the audit line of a search: the probe's hash and, when it
    /// answered, the decision and how many candidates it returned.
    pub fn searched(&mut self, sha: Option<String>, res: &Result<super::pb::IdentifyResponse, tonic::Status>) {
        self.probe_sha256 = sha;
        if let Ok(r) = res {
            self.decision = Some(super::convert::decision_name(r.decision).into());
            self.candidates = Some(r.candidates.len());
        }
    }

    /// An event stamped now.
    pub fn now(client: String, method: &str, status: tonic::Code) -> Event {
        Event {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            client,
            method: method.to_string(),
            probe_sha256: None,
            subject: None,
            gallery: None,
            decision: None,
            candidates: None,
            status: code_name(status).to_string(),
            suppressed: None,
            window_s: None,
            clients_sample: None,
        }
    }

    /// Whether this is a refused call (rate-limited in the file).
    fn is_refusal(&self) -> bool {
        matches!(self.status.as_str(), "UNAUTHENTICATED" | "PERMISSION_DENIED" | "RESOURCE_EXHAUSTED")
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

/// A line to write, and for a durable one, who waits for its fsync.
enum Msg {
    Event(Event),
    Durable(Event, mpsc::SyncSender<Result<(), String>>),
}

/// The audit log's writer.
#[derive(Debug, Clone)]
pub struct Audit {
    tx: Option<mpsc::Sender<Msg>>,
}

/// Opens (creating with mode 0600) the audit file; an existing file that
/// others may read is made private, with a warning.
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        o.mode(0o600);
        let f = o.open(path)?;
        let mode = f.metadata()?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!("audit log {}: mode {:o} let others read it; now 0600", path.display(), mode & 0o777);
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(f)
    }
    #[cfg(not(unix))]
    o.open(path)
}

/// Refused calls within the current one-second window.
struct Refusals {
    per_s: u32,
    start: Instant,
    written: u32,
    /// (method, status) → count and a sample of callers.
    counted: BTreeMap<(String, String), (u64, Vec<String>)>,
}

impl Refusals {
    const WINDOW: Duration = Duration::from_secs(1);
    const SAMPLE: usize = 8;

    /// Whether `e` is written now (else it is counted).
    fn admit(&mut self, e: &Event, out: &mut Vec<u8>) -> bool {
        self.roll(out);
        if self.written < self.per_s {
            self.written += 1;
            return true;
        }
        let c = self.counted.entry((e.method.clone(), e.status.clone())).or_default();
        c.0 += 1;
        if c.1.len() < Self::SAMPLE && !c.1.contains(&e.client) {
            c.1.push(e.client.clone());
        }
        false
    }

    /// Ends the window if it is over, writing its summary lines.
    fn roll(&mut self, out: &mut Vec<u8>) {
        if self.start.elapsed() >= Self::WINDOW {
            self.flush(out);
        }
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        let window = self.start.elapsed().as_secs_f64();
        for ((method, status), (n, sample)) in std::mem::take(&mut self.counted) {
            let mut e = Event::now("(refused calls, aggregated)".into(), &method, tonic::Code::Ok);
            e.status = status;
            e.suppressed = Some(n);
            e.window_s = Some((window * 1000.0).round() / 1000.0);
            e.clients_sample = Some(sample);
            line(out, &e);
        }
        self.start = Instant::now();
        self.written = 0;
    }

    /// How long until the window ends, when something waits to be summarised.
    fn pending(&self) -> Option<Duration> {
        (!self.counted.is_empty()).then(|| Self::WINDOW.saturating_sub(self.start.elapsed()))
    }
}

fn line(out: &mut Vec<u8>, e: &Event) {
    if serde_json::to_writer(&mut *out, e).is_ok() {
        out.push(b'\n');
    }
}

impl Audit {
    /// Appends to `path` (created 0600 if missing); `None` sends events to
    /// the log only. At most `refusals_per_s` refused calls a second are
    /// written one by one (see the module doc).
    pub fn open(
        path: Option<&Path>,
        refusals_per_s: u32,
    ) -> std::io::Result<(Audit, Option<std::thread::JoinHandle<()>>)> {
        let Some(path) = path else { return Ok((Audit { tx: None }, None)) };
        let mut file = open_private(path)?;
        let (tx, rx) = mpsc::channel::<Msg>();
        let shown = path.display().to_string();
        let handle = std::thread::Builder::new().name("whorl-audit".into()).spawn(move || {
            let mut refusals =
                Refusals { per_s: refusals_per_s, start: Instant::now(), written: 0, counted: BTreeMap::new() };
            loop {
                // Block for one message (or until a window of counted refusals ends),
                // then drain what queued meanwhile; one fsync per batch.
                let first = match refusals.pending() {
                    Some(wait) => match rx.recv_timeout(wait) {
                        Ok(m) => Some(m),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    },
                    None => match rx.recv() {
                        Ok(m) => Some(m),
                        Err(_) => break,
                    },
                };
                let mut buf = Vec::new();
                let mut waiting = Vec::new();
                for m in first.into_iter().chain(rx.try_iter()) {
                    match m {
                        Msg::Event(e) => {
                            if !e.is_refusal() || refusals.admit(&e, &mut buf) {
                                line(&mut buf, &e);
                            }
                        }
                        Msg::Durable(e, ack) => {
                            line(&mut buf, &e);
                            waiting.push(ack);
                        }
                    }
                }
                refusals.roll(&mut buf);
                let r = if buf.is_empty() { Ok(()) } else { file.write_all(&buf).and_then(|_| file.sync_data()) };
                if let Err(e) = &r {
                    tracing::error!("audit log {shown}: {e}");
                }
                for ack in waiting {
                    let _ = ack.send(r.as_ref().map(|_| ()).map_err(|e| format!("audit log: {e}")));
                }
            }
            let mut buf = Vec::new();
            refusals.flush(&mut buf);
            if !buf.is_empty()
                && let Err(e) = file.write_all(&buf).and_then(|_| file.sync_data())
            {
                tracing::error!("audit log {shown}: {e}");
            }
        })?;
        Ok((Audit { tx: Some(tx) }, Some(handle)))
    }

    fn log(e: &Event) {
        tracing::info!(target: "whorl::audit", method = %e.method, client = %e.client, status = %e.status, decision = ?e.decision, candidates = ?e.candidates, "audit");
    }

    /// Records an event (written with the next batch).
    pub fn record(&self, e: Event) {
        Self::log(&e);
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Event(e));
        }
    }

    /// Records an event and waits (blocking) until it is fsynced. Call it
    /// off the async threads.
    pub fn record_durable(&self, e: Event) -> Result<(), String> {
        Self::log(&e);
        let Some(tx) = &self.tx else { return Ok(()) };
        let (ack, done) = mpsc::sync_channel(1);
        tx.send(Msg::Durable(e, ack)).map_err(|_| "audit log closed".to_string())?;
        done.recv().map_err(|_| "audit log closed before the line was written".to_string())?
    }

    /// Stops accepting events; the writer thread drains and exits.
    pub fn close(&mut self) {
        self.tx = None;
    }
}
