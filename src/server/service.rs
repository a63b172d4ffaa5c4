//! The services' shared state and the steps every call takes. The
//! services themselves: `Identification` in [`super::identify`], `Gallery`
//! in [`super::admin`] and [`super::writes`], `Notifications` in
//! [`super::notifications`].
//!
//! Every call: authorise (bearer token → role), cheap checks (sizes,
//! counts, limits), admit (or shed: nothing is parsed for a request the
//! server has no room for), parse (errors name the template and the field)
//! and search on a worker, stopping the work when the deadline passes or
//! the caller goes away, reply, then count it (Prometheus) and audit it
//! (JSONL). Enrolments and deletions are in [`super::writes`].

use super::audit::{Audit, Event};
use super::auth::{Auth, Caller};
use super::catalog::{Catalog, Entry};
use super::config::{Config, Role};
use super::convert;
use super::engine::{Engine, NotRun};
use super::metrics::Metrics;
use super::notifications::Notifier;
use crate::cancel::{Cancel, Stop};
use crate::gallery::{Gallery, GalleryError};
use crate::gpu::GpuRescorer;
use crate::rescore::Rescorer;
use crate::search::Searcher;
use crate::search::impostor::ImpostorModel;
use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tonic::{Code, Request, Status};

/// Finger views one probe may carry.
pub const MAX_PROBE_VIEWS: usize = crate::search::MAX_FINGERS;

/// Probe finger indices of a reply back to the request's view numbering.
pub fn remap_views(r: &mut crate::search::Reply, views: &[usize]) {
    for c in &mut r.candidates {
        for f in &mut c.fingers {
            f.probe_finger = views.get(f.probe_finger).copied().unwrap_or(f.probe_finger);
        }
    }
}

/// What the services share.
pub struct State {
    /// The configuration served.
    pub cfg: Config,
    /// The galleries served, by name.
    pub catalog: Catalog,
    /// The re-scorer and model every gallery's searcher shares (set as the
    /// server starts; galleries added later use them too).
    pub shared: OnceLock<Shared>,
    /// Search workers and admission.
    pub engine: Engine,
    /// Tokens and roles.
    pub auth: Auth,
    /// The audit trail.
    pub audit: Mutex<Audit>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The GPU, when re-scoring there (for shard residency).
    pub gpu: OnceLock<Arc<GpuRescorer>>,
    /// Name of the impostor model the decisions use.
    pub model: String,
    /// Identifications answered.
    pub identifications: AtomicU64,
    /// Admission of enrolments and deletions (`limits.max_writes_in_flight`).
    pub writes: Arc<tokio::sync::Semaphore>,
    /// Hit notifications (set when a gallery notifies).
    pub notifier: Option<Arc<Notifier>>,
    /// Where `/metrics` is served, once bound (Stats reports it).
    pub metrics_addr: OnceLock<std::net::SocketAddr>,
    /// Set once the opening is over and health reports SERVING (after
    /// the galleries opened and resident shards were synced).
    pub opened: std::sync::atomic::AtomicBool,
}

/// What every gallery's searcher shares.
#[derive(Clone)]
pub struct Shared {
    /// Re-scoring.
    pub rescorer: Arc<dyn Rescorer>,
    /// The impostor model.
    pub model: ImpostorModel,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("engine", &self.engine).field("auth", &self.auth).finish_non_exhaustive()
    }
}

impl State {
    /// The gallery `name` ("": the first default one), or NOT_FOUND.
    pub fn entry(&self, name: &str) -> Result<Arc<Entry>, Status> {
        self.catalog.get(name)
    }

    /// The searcher of gallery `name`, or UNAVAILABLE (loading, failed) or
    /// NOT_FOUND; its messages name no server path.
    pub fn searcher(&self, name: &str) -> Result<Arc<Searcher>, Status> {
        let e = self.entry(name)?;
        e.searcher().map(Arc::clone).map_err(|s| Status::new(s.code(), self.scrub(s.message())))
    }

    /// `msg` with the gallery folder's path replaced by `GALLERY`: clients
    /// see file names, never where the server keeps its files.
    pub fn scrub(&self, msg: &str) -> String {
        let mut out = msg.to_string();
        for e in self.catalog.all() {
            let dir = &e.path;
            let forms = [std::fs::canonicalize(dir).ok(), std::path::absolute(dir).ok(), Some(dir.clone())];
            for f in forms.into_iter().flatten() {
                let f = f.display().to_string();
                if f.len() > 1 {
                    out = out.replace(&format!("{f}/"), "").replace(&f, "GALLERY");
                }
            }
        }
        out
    }

    /// A gallery error as a status, without the server's paths.
    pub fn gallery_status(&self, e: GalleryError) -> Status {
        let s = convert::gallery_status(e);
        Status::new(s.code(), self.scrub(s.message()))
    }

    /// Records an audit event.
    pub fn audit(&self, e: Event) {
        if let Ok(a) = self.audit.lock() {
            a.record(e);
        }
    }

    /// Brings the GPU's resident shards in line with the gallery's: new
    /// shards uploaded (within the budget), unloaded ones evicted.
    pub fn sync_resident(&self) {
        let Some(gpu) = self.gpu.get() else { return };
        let views: Vec<_> =
            self.catalog.all().iter().filter_map(|e| e.serving().map(|s| s.views())).flatten().collect();
        let shards: Vec<_> = views.iter().flat_map(|v| v.snap.shards.iter()).collect();
        let live: HashSet<u64> = shards.iter().map(|x| x.key).collect();
        let have: HashSet<u64> = gpu.resident_keys().into_iter().collect();
        for k in have.difference(&live) {
            gpu.evict(*k);
        }
        for ls in shards.into_iter().filter(|x| !have.contains(&x.key)) {
            let (words, offsets) = match ls.shard.prepared_words() {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!("{}: not uploaded to the GPU: {e}", ls.entry.name);
                    continue;
                }
            };
            match gpu.make_resident(ls.key, words, offsets) {
                Ok(true) => tracing::info!("{}: cylinders resident on the GPU", ls.entry.name),
                Ok(false) => {
                    tracing::info!("{}: over the GPU residency budget; its candidates are streamed", ls.entry.name)
                }
                Err(e) => tracing::warn!("{}: GPU upload failed ({e}); its candidates are streamed", ls.entry.name),
            }
        }
    }

    /// Publishes the galleries' sizes as metrics (totals and per gallery).
    pub fn refresh_gallery_metrics(&self) {
        let (mut t, mut s, mut sh, mut g, mut p) = (0u64, 0u64, 0usize, 0u64, 0usize);
        for e in self.catalog.all() {
            let Some(searcher) = e.serving() else { continue };
            let views = searcher.views();
            let (et, es) = (
                views.iter().map(|v| v.snap.templates() as u64).sum::<u64>(),
                views.iter().map(|v| v.subjects).sum::<u64>(),
            );
            self.metrics.set_gallery_size(&e.name, es, et);
            t += et;
            s += es;
            sh += views.iter().map(|v| v.snap.shards.len()).sum::<usize>();
            g += views.iter().map(|v| v.snap.generation).sum::<u64>();
            p += searcher.parts().iter().map(|x| x.gallery.problems().len()).sum::<usize>();
        }
        self.metrics.set_gallery(t, s, sh, g, p);
    }
}

/// The deadline a request carries (`grpc-timeout`), less a margin so that
/// whorl answers DEADLINE_EXCEEDED itself before the transport cancels.
pub fn deadline_of(md: &tonic::metadata::MetadataMap, received: Instant) -> Option<Instant> {
    let v = md.get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    let margin = (d / 20).min(Duration::from_millis(20));
    Some(received + d.saturating_sub(margin))
}

pub(super) fn expired() -> Status {
    Status::deadline_exceeded("deadline exceeded before the search started")
}

/// The status of work stopped by its [`Cancel`].
pub(super) fn stopped_status(s: Stop, when: &str) -> Status {
    match s {
        Stop::Deadline => Status::deadline_exceeded(format!("deadline exceeded {when}; the work was stopped")),
        Stop::Cancelled => Status::cancelled(format!("cancelled {when}")),
    }
}

/// The services (cheap to clone: one shared state).
#[derive(Debug, Clone)]
pub struct Services {
    pub(super) st: Arc<State>,
}

pub(super) type Outcome<T> = (Result<T, Status>, Option<String>);

/// What a search job hands back besides its reply.
pub(super) struct Searched<T> {
    pub(super) reply: T,
    pub(super) views: Vec<usize>,
    pub(super) parse: Duration,
}

impl Services {
    /// Services over `st`.
    pub fn new(st: Arc<State>) -> Services {
        Services { st }
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<State> {
        &self.st
    }

    /// Counts a finished request (Prometheus).
    pub(super) fn count<T>(&self, method: &str, t0: Instant, r: &Result<T, Status>) {
        let code = r.as_ref().map(|_| Code::Ok).unwrap_or_else(|s| s.code());
        self.st.metrics.request(method, code, t0.elapsed());
        self.st.metrics.set_in_flight(self.st.engine.in_flight());
    }

    pub(super) fn finish<T>(
        &self,
        method: &str,
        t0: Instant,
        caller: &str,
        r: &Result<T, Status>,
        fill: impl FnOnce(&mut Event),
    ) {
        self.count(method, t0, r);
        let code = r.as_ref().map(|_| Code::Ok).unwrap_or_else(|s| s.code());
        let mut e = Event::now(caller.to_string(), method, code);
        fill(&mut e);
        self.st.audit(e);
    }

    /// The caller, or the refusal and who was refused (a valid token with
    /// too small a role keeps its name).
    pub(super) fn who<T>(&self, req: &Request<T>, need: Role) -> Result<Caller, (Status, String)> {
        self.st.auth.authorize(req, need).map_err(|d| (d.status, d.who))
    }

    /// Runs `f` on a search worker under admission control, the deadline
    /// and cancellation: when the caller goes away (this future is dropped)
    /// or the deadline passes, `cancel` is set and the work stops.
    pub(super) async fn run<R: Send + 'static>(
        &self,
        cancel: &Cancel,
        wait: bool,
        method: &str,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<(R, Duration), Status> {
        if cancel.is_stopped() {
            return Err(expired());
        }
        let deadline = cancel.deadline();
        let e = &self.st.engine;
        let permit = match (wait, deadline) {
            (false, _) => e.try_admit(),
            (true, None) => e.admit().await,
            (true, Some(d)) => match tokio::time::timeout_at(tokio::time::Instant::from_std(d), e.admit()).await {
                Ok(p) => p,
                Err(_) => return Err(Status::deadline_exceeded("deadline exceeded while waiting for a search slot")),
            },
        };
        let Some(permit) = permit else {
            self.st.metrics.shed(method);
            return Err(Status::resource_exhausted(format!(
                "server saturated: {} searches in flight (limit {}); retry with backoff",
                e.in_flight(),
                e.max_in_flight()
            )));
        };
        self.st.metrics.set_in_flight(e.in_flight());
        // Dropping `fut` (deadline below, or the caller gone) cancels the job.
        let fut = e.run(permit, cancel.clone(), f);
        let out = match deadline {
            Some(d) => match tokio::time::timeout_at(tokio::time::Instant::from_std(d), fut).await {
                Ok(x) => x,
                Err(_) => return Err(stopped_status(Stop::Deadline, "while queued or searching")),
            },
            None => fut.await,
        };
        match out {
            Ok((r, ran)) => Ok((r, ran.queued)),
            Err(NotRun::ShuttingDown) => Err(Status::unavailable("the server is shutting down")),
            Err(NotRun::Stopped(s)) => Err(stopped_status(s, "while queued")),
        }
    }
}

/// A decoding error of a request (too large: RESOURCE_EXHAUSTED).
pub fn decode_status(s: Status) -> Status {
    if s.code() == Code::OutOfRange && s.message().contains("too large") {
        Status::resource_exhausted(format!("request too large: {}", s.message()))
    } else {
        s
    }
}

impl Services {
    /// Runs blocking work on gallery `name` off the async threads.
    pub(super) async fn blocking<R: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce(&Gallery) -> Result<R, GalleryError> + Send + 'static,
    ) -> Result<R, Status> {
        let g = self.gallery(name)?;
        let st = Arc::clone(&self.st);
        tokio::task::spawn_blocking(move || f(&g))
            .await
            .map_err(|e| Status::internal(format!("gallery task failed: {e}")))?
            .map_err(|e| st.gallery_status(e))
    }

    /// The open gallery folder of gallery `name` (one part on a server).
    pub(super) fn gallery(&self, name: &str) -> Result<Arc<Gallery>, Status> {
        self.st.searcher(name)?.gallery().ok_or_else(|| Status::unavailable("no gallery is held here"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_become_deadlines_with_a_margin() {
        let now = Instant::now();
        let mut md = tonic::metadata::MetadataMap::new();
        assert_eq!(deadline_of(&md, now), None);
        md.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(deadline_of(&md, now), Some(now + Duration::from_millis(1980)));
        md.insert("grpc-timeout", "100m".parse().unwrap());
        assert_eq!(deadline_of(&md, now), Some(now + Duration::from_millis(95)));
        md.insert("grpc-timeout", "5x".parse().unwrap());
        assert_eq!(deadline_of(&md, now), None);
        md.insert("grpc-timeout", "m".parse().unwrap());
        assert_eq!(deadline_of(&md, now), None);
    }

    #[test]
    fn oversize_decoding_errors_become_resource_exhausted() {
        let s = decode_status(Status::out_of_range("Error, decoded message length too large: found 9 bytes"));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(decode_status(Status::out_of_range("other")).code(), Code::OutOfRange);
    }
}
