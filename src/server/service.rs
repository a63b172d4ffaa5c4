//! The two gRPC services over one shared state: `Identification`
//! (Identify, IdentifyStream, Verify) and `Gallery` (Enroll, Delete,
//! GetSubject, ListShards, LoadShard, UnloadShard, Stats, Compact).
//!
//! Every call: authorise (bearer token → role), cheap checks (sizes,
//! counts, limits), admit (or shed: nothing is parsed for a request the
//! server has no room for), parse (errors name the template and the field)
//! and search on a worker, stopping the work when the deadline passes or
//! the caller goes away, reply, then count it (Prometheus) and audit it
//! (JSONL). Enrolments and deletions are in [`super::writes`].

use super::audit::{Audit, Event};
use super::auth::{Auth, Caller};
use super::config::{Config, Role};
use super::convert;
use super::engine::{Engine, NotRun};
use super::metrics::Metrics;
use super::pb;
use crate::cancel::{Cancel, Stop};
use crate::gallery::{Gallery, GalleryError};
use crate::gpu::GpuRescorer;
use crate::search::{Query, Searcher};
use crate::template::{self, Format};
use futures::{Stream, StreamExt};
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tonic::{Code, Request, Response, Status, Streaming};

/// Finger views one probe may carry.
pub const MAX_PROBE_VIEWS: usize = crate::search::MAX_FINGERS;

/// Probe finger indices of a reply back to the request's view numbering.
fn remap_views(r: &mut crate::search::Reply, views: &[usize]) {
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
    /// Set once the gallery is open (health reports NOT_SERVING until then).
    pub searcher: OnceLock<Arc<Searcher>>,
    /// Why the gallery could not be opened, if it could not.
    pub load_error: Mutex<Option<String>>,
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
    /// Set while a compaction runs (one at a time).
    pub compacting: AtomicBool,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("engine", &self.engine).field("auth", &self.auth).finish_non_exhaustive()
    }
}

impl State {
    /// The searcher, or UNAVAILABLE while the gallery loads (or failed to).
    pub fn searcher(&self) -> Result<&Arc<Searcher>, Status> {
        self.searcher.get().ok_or_else(|| match self.load_error.lock().ok().and_then(|e| e.clone()) {
            Some(e) => Status::unavailable(self.scrub(&format!("the gallery failed to open: {e}"))),
            None => Status::unavailable("the gallery is still loading (health reports NOT_SERVING until it is ready)"),
        })
    }

    /// `msg` with the gallery folder's path replaced by `GALLERY`: clients
    /// see file names, never where the server keeps its files.
    pub fn scrub(&self, msg: &str) -> String {
        let mut out = msg.to_string();
        let dir = &self.cfg.gallery.path;
        let forms = [std::fs::canonicalize(dir).ok(), std::path::absolute(dir).ok(), Some(dir.clone())];
        for f in forms.into_iter().flatten() {
            let f = f.display().to_string();
            if f.len() > 1 {
                out = out.replace(&format!("{f}/"), "").replace(&f, "GALLERY");
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
        let (Some(gpu), Some(s)) = (self.gpu.get(), self.searcher.get()) else { return };
        let views = s.views();
        let shards: Vec<_> = views.iter().flat_map(|v| v.snap.shards.iter()).collect();
        let live: HashSet<u64> = shards.iter().map(|x| x.key).collect();
        let have: HashSet<u64> = gpu.resident_keys().into_iter().collect();
        for k in have.difference(&live) {
            gpu.evict(*k);
        }
        for ls in shards.into_iter().filter(|x| !have.contains(&x.key)) {
            let (words, offsets) = ls.shard.prepared_words();
            match gpu.make_resident(ls.key, words, offsets) {
                Ok(true) => tracing::info!("{}: cylinders resident on the GPU", ls.entry.name),
                Ok(false) => {
                    tracing::info!("{}: over the GPU residency budget; its candidates are streamed", ls.entry.name)
                }
                Err(e) => tracing::warn!("{}: GPU upload failed ({e}); its candidates are streamed", ls.entry.name),
            }
        }
    }

    /// Publishes the gallery's sizes as metrics.
    pub fn refresh_gallery_metrics(&self) {
        if let Some(s) = self.searcher.get() {
            let views = s.views();
            self.metrics.set_gallery(
                views.iter().map(|v| v.snap.templates() as u64).sum(),
                views.iter().map(|v| v.subjects).sum(),
                views.iter().map(|v| v.snap.shards.len()).sum(),
                views.iter().map(|v| v.snap.generation).sum(),
                s.parts().iter().map(|p| p.gallery.problems().len()).sum(),
            );
        }
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

fn expired() -> Status {
    Status::deadline_exceeded("deadline exceeded before the search started")
}

/// The status of work stopped by its [`Cancel`].
fn stopped_status(s: Stop, when: &str) -> Status {
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
struct Searched<T> {
    reply: T,
    views: Vec<usize>,
    parse: Duration,
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

    /// Checks of an identification that need no parsing.
    fn check_identify(&self, r: &pb::IdentifyRequest) -> Result<(), Status> {
        let limits = &self.st.cfg.limits;
        if r.max_candidates > limits.max_candidates {
            return Err(Status::invalid_argument(format!(
                "max_candidates {} is over the limit of {}",
                r.max_candidates, limits.max_candidates
            )));
        }
        convert::check_labels(&r.label_filter, limits, "label_filter")?;
        convert::check_records(r.probe.as_ref().map_or(&[][..], |p| &p.templates), MAX_PROBE_VIEWS)
    }

    /// One search: cheap checks, admission (`wait`: queue for a slot; else
    /// shed when full), then parsing and the search on a worker.
    async fn search(
        &self,
        r: pb::IdentifyRequest,
        cancel: Cancel,
        t0: Instant,
        wait: bool,
    ) -> Outcome<pb::IdentifyResponse> {
        let searcher = match self.st.searcher() {
            Ok(s) => Arc::clone(s),
            Err(e) => return (Err(e), None),
        };
        if let Err(e) = self.check_identify(&r) {
            return (Err(e), None);
        }
        let probe = r.probe.unwrap_or_default();
        let (max_candidates, decision) = (r.max_candidates as usize, convert::identify_decision(r.decision));
        let labels: Vec<(String, String)> = r.label_filter.into_iter().collect();
        let (st, job_cancel) = (Arc::clone(&self.st), cancel.clone());
        let job = move || {
            let parsed = match convert::parse_templates(&probe.templates, MAX_PROBE_VIEWS, &st.cfg.limits) {
                Ok(p) => p,
                Err(e) => return (Err(e), None),
            };
            let sha = Some(parsed.sha256.clone());
            let q = Query { fingers: parsed.fingers, max_candidates, decision, labels, cancel: job_cancel };
            match searcher.identify(&q) {
                Ok(reply) => (Ok(Searched { reply, views: parsed.views, parse: parsed.took }), sha),
                Err(e) => {
                    st.metrics.stopped(&e);
                    (Err(convert::search_status(e)), sha)
                }
            }
        };
        let ((out, sha), queued) = match self.run(&cancel, wait, "Identify", job).await {
            Ok(x) => x,
            Err(s) => return (Err(s), None),
        };
        let Searched { mut reply, views, parse } = match out {
            Ok(x) => x,
            Err(e) => return (Err(e), sha),
        };
        self.st.metrics.stages(
            &[
                ("queue", queued),
                ("parse", parse),
                ("prepare", reply.timings.prepare),
                ("candidates", reply.timings.candidates),
                ("rescore", reply.timings.rescore),
                ("fuse", reply.timings.fuse),
            ],
            reply.comparisons,
        );
        self.st.identifications.fetch_add(1, Ordering::Relaxed);
        remap_views(&mut reply, &views);
        let mut resp = convert::identify_response(reply, r.request_id, &self.st.model, queued, parse, t0.elapsed());
        let dropped = convert::fit_reply(&mut resp, self.st.cfg.server.max_message_bytes);
        if dropped > 0 {
            tracing::warn!("a reply passed server.max_message_bytes: its last {dropped} candidates were left out");
        }
        (Ok(resp), sha)
    }

    /// Runs `f` on a search worker under admission control, the deadline
    /// and cancellation: when the caller goes away (this future is dropped)
    /// or the deadline passes, `cancel` is set and the work stops.
    async fn run<R: Send + 'static>(
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

type IdentifyStreamOut = Pin<Box<dyn Stream<Item = Result<pb::IdentifyStreamResponse, Status>> + Send + 'static>>;

/// A decoding error of a request (too large: RESOURCE_EXHAUSTED).
pub fn decode_status(s: Status) -> Status {
    if s.code() == Code::OutOfRange && s.message().contains("too large") {
        Status::resource_exhausted(format!("request too large: {}", s.message()))
    } else {
        s
    }
}

#[tonic::async_trait]
impl pb::identification_server::Identification for Services {
    type IdentifyStreamStream = IdentifyStreamOut;

    async fn identify(&self, req: Request<pb::IdentifyRequest>) -> Result<Response<pb::IdentifyResponse>, Status> {
        let t0 = Instant::now();
        let cancel = Cancel::until(deadline_of(req.metadata(), t0));
        let (res, sha, who) = match self.who(&req, Role::Search) {
            Err((s, who)) => (Err(s), None, who),
            Ok(c) => {
                let (r, sha) = self.search(req.into_inner(), cancel, t0, false).await;
                (r, sha, c.describe())
            }
        };
        self.finish("Identify", t0, &who, &res, |e| {
            e.probe_sha256 = sha;
            if let Ok(r) = &res {
                e.decision = Some(convert::decision_name(r.decision).into());
                e.candidates = Some(r.candidates.len());
            }
        });
        res.map(Response::new)
    }

    async fn identify_stream(
        &self,
        req: Request<Streaming<pb::IdentifyRequest>>,
    ) -> Result<Response<Self::IdentifyStreamStream>, Status> {
        let t0 = Instant::now();
        let deadline = deadline_of(req.metadata(), t0);
        let caller = match self.who(&req, Role::Search) {
            Ok(c) => c.describe(),
            Err((s, who)) => {
                self.finish::<()>("IdentifyStream", t0, &who, &Err(s.clone()), |_| {});
                return Err(s);
            }
        };
        let me = self.clone();
        let depth = self.st.engine.workers().max(1);
        let out = req
            .into_inner()
            .map(move |item| {
                let me = me.clone();
                let caller = caller.clone();
                async move {
                    let r = match item {
                        Ok(r) => r,
                        Err(s) => return Err(decode_status(s)),
                    };
                    let t1 = Instant::now();
                    let id = r.request_id.clone();
                    let (res, sha) = me.search(r, Cancel::until(deadline), t1, true).await;
                    me.finish("IdentifyStream", t1, &caller, &res, |e| {
                        e.probe_sha256 = sha;
                        if let Ok(r) = &res {
                            e.decision = Some(convert::decision_name(r.decision).into());
                            e.candidates = Some(r.candidates.len());
                        }
                    });
                    let result = match res {
                        Ok(resp) => pb::identify_stream_response::Result::Response(resp),
                        Err(s) => pb::identify_stream_response::Result::Error(pb::RequestError {
                            code: s.code() as i32,
                            message: s.message().to_string(),
                        }),
                    };
                    Ok(pb::IdentifyStreamResponse { request_id: id, result: Some(result) })
                }
            })
            .buffered(depth);
        Ok(Response::new(Box::pin(out)))
    }

    async fn verify(&self, req: Request<pb::VerifyRequest>) -> Result<Response<pb::VerifyResponse>, Status> {
        let t0 = Instant::now();
        let cancel = Cancel::until(deadline_of(req.metadata(), t0));
        let mut subject = None;
        let (res, sha, who): (Result<pb::VerifyResponse, Status>, _, _) = match self.who(&req, Role::Search) {
            Err((s, who)) => (Err(s), None, who),
            Ok(c) => {
                let r = req.into_inner();
                subject = Some(r.subject_id.clone());
                let (res, sha) = self.verify_one(r, cancel, t0).await;
                (res, sha, c.describe())
            }
        };
        self.finish("Verify", t0, &who, &res, |e| {
            e.probe_sha256 = sha;
            e.subject = subject;
            if let Ok(r) = &res {
                e.decision = Some(convert::decision_name(r.decision).into());
            }
        });
        res.map(Response::new)
    }
}

impl Services {
    async fn verify_one(&self, r: pb::VerifyRequest, cancel: Cancel, t0: Instant) -> Outcome<pb::VerifyResponse> {
        let searcher = match self.st.searcher() {
            Ok(s) => Arc::clone(s),
            Err(e) => return (Err(e), None),
        };
        if r.subject_id.is_empty() {
            return (Err(Status::invalid_argument("subject_id is empty")), None);
        }
        let probe = r.probe.unwrap_or_default();
        if let Err(e) = convert::check_records(&probe.templates, MAX_PROBE_VIEWS) {
            return (Err(e), None);
        }
        let decision = convert::verify_decision(r.decision);
        let (subject, st, job_cancel) = (r.subject_id, Arc::clone(&self.st), cancel.clone());
        let job = move || {
            let parsed = match convert::parse_templates(&probe.templates, MAX_PROBE_VIEWS, &st.cfg.limits) {
                Ok(p) => p,
                Err(e) => return (Err(e), None),
            };
            let sha = Some(parsed.sha256.clone());
            match searcher.verify_until(&subject, &parsed.fingers, decision, &job_cancel) {
                Ok(reply) => (Ok(Searched { reply, views: parsed.views, parse: parsed.took }), sha),
                Err(e) => {
                    st.metrics.stopped(&e);
                    (Err(convert::search_status(e)), sha)
                }
            }
        };
        let ((out, sha), queued) = match self.run(&cancel, false, "Verify", job).await {
            Ok(x) => x,
            Err(s) => return (Err(s), None),
        };
        match out {
            Ok(Searched { mut reply, views, parse }) => {
                remap_views(&mut reply, &views);
                (Ok(convert::verify_response(reply, &self.st.model, queued, parse, t0.elapsed())), sha)
            }
            Err(e) => (Err(e), sha),
        }
    }

    pub(super) fn gallery(&self) -> Result<Arc<Gallery>, Status> {
        self.st.searcher().and_then(|s| s.gallery().ok_or_else(|| Status::unavailable("no gallery is held here")))
    }

    /// Runs blocking gallery work off the async threads.
    pub(super) async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Gallery) -> Result<R, GalleryError> + Send + 'static,
    ) -> Result<R, Status> {
        let g = self.gallery()?;
        tokio::task::spawn_blocking(move || f(&g))
            .await
            .map_err(|e| Status::internal(format!("gallery task failed: {e}")))?
            .map_err(|e| self.st.gallery_status(e))
    }
}

impl Services {
    /// LoadShard and UnloadShard: the gallery change off the async threads,
    /// then the GPU's resident shards brought in line, metrics and audit.
    async fn change_shard<T: Send + 'static>(
        &self,
        method: &str,
        req: Request<T>,
        op: fn(&T, &Gallery) -> Result<crate::gallery::ShardEntry, GalleryError>,
        status: &'static str,
    ) -> Result<Response<pb::Shard>, Status> {
        let t0 = Instant::now();
        let (res, who) = match self.who(&req, Role::Admin) {
            Err((s, who)) => (Err(s), who),
            Ok(c) => {
                let r = req.into_inner();
                let res = self.blocking(move |g| op(&r, g)).await.map(|e| shard_msg(&e, status, String::new()));
                if res.is_ok() {
                    let st = Arc::clone(&self.st);
                    let _ = tokio::task::spawn_blocking(move || st.sync_resident()).await;
                }
                (res, c.describe())
            }
        };
        self.finish(method, t0, &who, &res, |e| e.subject = res.as_ref().ok().map(|s| s.name.clone()));
        self.st.refresh_gallery_metrics();
        res.map(Response::new)
    }
}

fn shard_msg(e: &crate::gallery::ShardEntry, status: &str, error: String) -> pb::Shard {
    pb::Shard {
        name: e.name.clone(),
        file: e.file.clone(),
        templates: e.templates,
        subjects: e.subjects,
        bytes: e.bytes,
        status: status.into(),
        error,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl pb::gallery_server::Gallery for Services {
    async fn enroll(&self, req: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        self.enroll_call(req).await
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        self.delete_call(req).await
    }

    async fn compact(&self, req: Request<pb::CompactRequest>) -> Result<Response<pb::CompactResponse>, Status> {
        self.compact_call(req).await
    }

    async fn get_subject(&self, req: Request<pb::GetSubjectRequest>) -> Result<Response<pb::Subject>, Status> {
        let t0 = Instant::now();
        let mut subject = None;
        let (res, who) = match self.who(&req, Role::Admin) {
            Err((s, who)) => (Err(s), who),
            Ok(c) => {
                let r = req.into_inner();
                subject = Some(r.subject_id.clone());
                let res = self.gallery().and_then(|g| {
                    let v = g
                        .subject(&r.subject_id)
                        .ok_or_else(|| Status::not_found(format!("subject '{}'", r.subject_id)))?;
                    let mut fingers = Vec::with_capacity(v.templates.len());
                    for (t, source) in v.templates.iter().zip(&v.sources) {
                        let iso = if r.include_templates {
                            template::write(std::slice::from_ref(t), Format::Iso2005)
                                .map_err(|e| Status::internal(format!("writing the template: {e}")))?
                        } else {
                            Vec::new()
                        };
                        fingers.push(pb::SubjectFinger {
                            finger_position: u32::from(t.finger_position.0),
                            minutiae: t.minutiae.len() as u32,
                            source: source.clone(),
                            iso_template: iso,
                        });
                    }
                    Ok(pb::Subject { subject_id: v.id, labels: v.labels.into_iter().collect(), fingers })
                });
                (res, c.describe())
            }
        };
        self.finish("GetSubject", t0, &who, &res, |e| e.subject = subject);
        res.map(Response::new)
    }

    async fn list_shards(
        &self,
        req: Request<pb::ListShardsRequest>,
    ) -> Result<Response<pb::ListShardsResponse>, Status> {
        let t0 = Instant::now();
        let (res, who) = match self.who(&req, Role::Search) {
            Err((s, who)) => (Err(s), who),
            Ok(c) => {
                let res = self.gallery().and_then(|g| {
                    let m = g.manifest().map_err(convert::gallery_status)?;
                    let problems = g.problems();
                    let shards = m
                        .shards
                        .iter()
                        .map(|e| match problems.iter().find(|p| p.name == e.name) {
                            Some(p) => shard_msg(e, "left out", p.error.clone()),
                            None => shard_msg(e, "serving", String::new()),
                        })
                        .collect();
                    Ok(pb::ListShardsResponse { shards })
                });
                (res, c.describe())
            }
        };
        self.finish("ListShards", t0, &who, &res, |_| {});
        res.map(Response::new)
    }

    async fn load_shard(&self, req: Request<pb::LoadShardRequest>) -> Result<Response<pb::Shard>, Status> {
        self.change_shard("LoadShard", req, |r, g| g.attach_shard(&r.file), "serving").await
    }

    async fn unload_shard(&self, req: Request<pb::UnloadShardRequest>) -> Result<Response<pb::Shard>, Status> {
        self.change_shard("UnloadShard", req, |r, g| g.detach_shard(&r.name), "unloaded").await
    }

    async fn list_galleries(
        &self,
        _req: Request<pb::ListGalleriesRequest>,
    ) -> Result<Response<pb::ListGalleriesResponse>, Status> {
        Err(Status::unimplemented("ListGalleries"))
    }

    async fn add_gallery(&self, _req: Request<pb::AddGalleryRequest>) -> Result<Response<pb::GalleryInfo>, Status> {
        Err(Status::unimplemented("AddGallery"))
    }

    async fn unload_gallery(
        &self,
        _req: Request<pb::UnloadGalleryRequest>,
    ) -> Result<Response<pb::GalleryInfo>, Status> {
        Err(Status::unimplemented("UnloadGallery"))
    }

    async fn stats(&self, req: Request<pb::StatsRequest>) -> Result<Response<pb::StatsResponse>, Status> {
        let t0 = Instant::now();
        let (res, who) = match self.who(&req, Role::Search) {
            Err((s, who)) => (Err(s), who),
            Ok(c) => {
                let res = self.st.searcher().and_then(|s| {
                    let g = s.gallery().ok_or_else(|| Status::unavailable("no gallery is held here"))?;
                    let snap = g.snapshot();
                    Ok(pb::StatsResponse {
                        templates: snap.templates() as u64,
                        subjects: s.subjects(),
                        shards: snap.shards.len() as u32,
                        delta_templates: snap.delta.live().count() as u64,
                        tombstones: snap.delta.tombstones.len() as u64,
                        wal_bytes: g.wal_bytes(),
                        generation: snap.generation,
                        backend: s.backend(),
                        in_flight: self.st.engine.in_flight() as u32,
                        max_in_flight: self.st.engine.max_in_flight() as u32,
                        problems: g.problems().len() as u32,
                        identifications: self.st.identifications.load(Ordering::Relaxed),
                        shed: self.st.metrics.shed_total(),
                        wal_records: g.wal_records(),
                        compactions: self.st.metrics.compactions_total(),
                        ..Default::default()
                    })
                });
                (res, c.describe())
            }
        };
        self.finish("Stats", t0, &who, &res, |_| {});
        res.map(Response::new)
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
