//! The two gRPC services over one shared state: `Identification`
//! (Identify, IdentifyStream, Verify) and `Gallery` (Enroll, Delete,
//! GetSubject, ListShards, LoadShard, UnloadShard, Stats).
//!
//! Every call: authorise (bearer token → role), parse (errors name the
//! template and the field), admit (or shed), search on a worker before the
//! deadline, reply, then count it (Prometheus) and audit it (JSONL).

use super::audit::{Audit, Event};
use super::auth::{Auth, Caller};
use super::config::{Config, Role};
use super::convert;
use super::engine::Engine;
use super::metrics::Metrics;
use super::pb;
use crate::gallery::{Gallery, GalleryError};
use crate::gpu::GpuRescorer;
use crate::search::{Query, Searcher};
use crate::template::{self, Format};
use futures::{Stream, StreamExt};
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
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
/// Candidates a request may ask for.
pub const MAX_CANDIDATES: u32 = 1000;

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
    /// Where `/metrics` is served, once bound (Stats reports it).
    pub metrics_addr: OnceLock<std::net::SocketAddr>,
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
            Some(e) => Status::unavailable(format!("the gallery failed to open: {e}")),
            None => Status::unavailable("the gallery is still loading (health reports NOT_SERVING until it is ready)"),
        })
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
        let snap = s.gallery().snapshot();
        let live: HashSet<u64> = snap.shards.iter().map(|x| x.key).collect();
        let have: HashSet<u64> = gpu.resident_keys().into_iter().collect();
        for k in have.difference(&live) {
            gpu.evict(*k);
        }
        for ls in snap.shards.iter().filter(|x| !have.contains(&x.key)) {
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
            let snap = s.gallery().snapshot();
            self.metrics.set_gallery(
                snap.templates() as u64,
                s.subjects(&snap),
                snap.shards.len(),
                snap.generation,
                s.gallery().problems().len(),
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

/// The services (cheap to clone: one shared state).
#[derive(Debug, Clone)]
pub struct Services {
    st: Arc<State>,
}

type Outcome<T> = (Result<T, Status>, Option<String>);

impl Services {
    /// Services over `st`.
    pub fn new(st: Arc<State>) -> Services {
        Services { st }
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<State> {
        &self.st
    }

    fn finish<T>(&self, method: &str, t0: Instant, caller: &str, r: &Result<T, Status>, fill: impl FnOnce(&mut Event)) {
        let code = r.as_ref().map(|_| Code::Ok).unwrap_or_else(|s| s.code());
        self.st.metrics.request(method, code, t0.elapsed());
        self.st.metrics.set_in_flight(self.st.engine.in_flight());
        let mut e = Event::now(caller.to_string(), method, code);
        fill(&mut e);
        self.st.audit(e);
    }

    fn who<T>(&self, req: &Request<T>, need: Role) -> Result<Caller, (Status, String)> {
        self.st.auth.authorize(req, need).map_err(|s| {
            let peer = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
            (s, format!("unauthenticated peer={peer}"))
        })
    }

    /// One search, admitted (`wait`: queue for a slot; else shed when full).
    async fn search(
        &self,
        r: pb::IdentifyRequest,
        deadline: Option<Instant>,
        t0: Instant,
        wait: bool,
    ) -> Outcome<pb::IdentifyResponse> {
        let searcher = match self.st.searcher() {
            Ok(s) => Arc::clone(s),
            Err(e) => return (Err(e), None),
        };
        let probe = r.probe.unwrap_or_default();
        let parsed = match convert::parse_templates(&probe.templates, MAX_PROBE_VIEWS) {
            Ok(p) => p,
            Err(e) => return (Err(e), None),
        };
        let sha = Some(parsed.sha256.clone());
        if r.max_candidates > MAX_CANDIDATES {
            let m = format!("max_candidates {} is over the limit of {MAX_CANDIDATES}", r.max_candidates);
            return (Err(Status::invalid_argument(m)), sha);
        }
        let q = Query {
            fingers: parsed.fingers,
            max_candidates: r.max_candidates as usize,
            decision: convert::identify_decision(r.decision),
            labels: r.label_filter.into_iter().collect(),
            deadline,
        };
        let (mut reply, queued) = match self.run(deadline, wait, "Identify", move || searcher.identify(&q)).await {
            Ok((Ok(reply), queued)) => (reply, queued),
            Ok((Err(e), _)) => return (Err(convert::search_status(e)), sha),
            Err(s) => return (Err(s), sha),
        };
        self.st.metrics.stages(
            &[
                ("queue", queued),
                ("parse", parsed.took),
                ("prepare", reply.timings.prepare),
                ("candidates", reply.timings.candidates),
                ("rescore", reply.timings.rescore),
                ("fuse", reply.timings.fuse),
            ],
            reply.comparisons,
        );
        self.st.identifications.fetch_add(1, Ordering::Relaxed);
        remap_views(&mut reply, &parsed.views);
        let resp = convert::identify_response(reply, r.request_id, &self.st.model, queued, parsed.took, t0.elapsed());
        (Ok(resp), sha)
    }

    /// Runs `f` on a search worker under admission control and the deadline.
    async fn run<R: Send + 'static>(
        &self,
        deadline: Option<Instant>,
        wait: bool,
        method: &str,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<(R, Duration), Status> {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(expired());
        }
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
        let fut = e.run(permit, f);
        let out = match deadline {
            Some(d) => match tokio::time::timeout_at(tokio::time::Instant::from_std(d), fut).await {
                Ok(x) => x,
                Err(_) => return Err(Status::deadline_exceeded("deadline exceeded while queued or searching")),
            },
            None => fut.await,
        };
        match out {
            Some((r, ran)) => Ok((r, ran.queued)),
            None => Err(Status::unavailable("the server is shutting down")),
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
        let deadline = deadline_of(req.metadata(), t0);
        let (res, sha, who) = match self.who(&req, Role::Search) {
            Err((s, who)) => (Err(s), None, who),
            Ok(c) => {
                let (r, sha) = self.search(req.into_inner(), deadline, t0, false).await;
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
                    let (res, sha) = me.search(r, deadline, t1, true).await;
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
        let deadline = deadline_of(req.metadata(), t0);
        let mut subject = None;
        let (res, sha, who): (Result<pb::VerifyResponse, Status>, _, _) = match self.who(&req, Role::Search) {
            Err((s, who)) => (Err(s), None, who),
            Ok(c) => {
                let r = req.into_inner();
                subject = Some(r.subject_id.clone());
                let (res, sha) = self.verify_one(r, deadline, t0).await;
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
    async fn verify_one(
        &self,
        r: pb::VerifyRequest,
        deadline: Option<Instant>,
        t0: Instant,
    ) -> Outcome<pb::VerifyResponse> {
        let searcher = match self.st.searcher() {
            Ok(s) => Arc::clone(s),
            Err(e) => return (Err(e), None),
        };
        if r.subject_id.is_empty() {
            return (Err(Status::invalid_argument("subject_id is empty")), None);
        }
        let probe = r.probe.unwrap_or_default();
        let parsed = match convert::parse_templates(&probe.templates, MAX_PROBE_VIEWS) {
            Ok(p) => p,
            Err(e) => return (Err(e), None),
        };
        let sha = Some(parsed.sha256.clone());
        let decision = convert::verify_decision(r.decision);
        let (subject, fingers) = (r.subject_id, parsed.fingers);
        let out =
            self.run(deadline, false, "Verify", move || searcher.verify(&subject, &fingers, decision, deadline)).await;
        match out {
            Ok((Ok(mut reply), queued)) => {
                remap_views(&mut reply, &parsed.views);
                (Ok(convert::verify_response(reply, &self.st.model, queued, parsed.took, t0.elapsed())), sha)
            }
            Ok((Err(e), _)) => (Err(convert::search_status(e)), sha),
            Err(s) => (Err(s), sha),
        }
    }

    fn gallery(&self) -> Result<Arc<Gallery>, Status> {
        self.st.searcher().map(|s| Arc::clone(s.gallery()))
    }

    /// Runs blocking gallery work off the async threads.
    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Gallery) -> Result<R, GalleryError> + Send + 'static,
    ) -> Result<R, Status> {
        let g = self.gallery()?;
        tokio::task::spawn_blocking(move || f(&g))
            .await
            .map_err(|e| Status::internal(format!("gallery task failed: {e}")))?
            .map_err(convert::gallery_status)
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
    }
}

#[tonic::async_trait]
impl pb::gallery_server::Gallery for Services {
    async fn enroll(&self, req: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let t0 = Instant::now();
        let mut subject = None;
        let mut sha = None;
        let (res, who) = match self.who(&req, Role::Admin) {
            Err((s, who)) => (Err(s), who),
            Ok(c) => {
                let r = req.into_inner();
                subject = Some(r.subject_id.clone());
                let res = match convert::parse_templates(&r.templates, crate::gallery::MAX_TEMPLATES) {
                    Err(e) => Err(e),
                    Ok(p) => {
                        sha = Some(p.sha256.clone());
                        let n = p.fingers.len() as u32;
                        let labels: Vec<(String, String)> = r.labels.into_iter().collect();
                        let id = r.subject_id;
                        self.blocking(move |g| g.enroll(&id, labels, p.fingers))
                            .await
                            .map(|sequence| pb::EnrollResponse { sequence, templates: n })
                    }
                };
                (res, c.describe())
            }
        };
        self.finish("Enroll", t0, &who, &res, |e| {
            e.subject = subject;
            e.probe_sha256 = sha;
        });
        self.st.refresh_gallery_metrics();
        res.map(Response::new)
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let t0 = Instant::now();
        let mut subject = None;
        let (res, who) = match self.who(&req, Role::Admin) {
            Err((s, who)) => (Err(s), who),
            Ok(c) => {
                let id = req.into_inner().subject_id;
                subject = Some(id.clone());
                let res = self.blocking(move |g| g.delete(&id)).await.map(|sequence| pb::DeleteResponse { sequence });
                (res, c.describe())
            }
        };
        self.finish("Delete", t0, &who, &res, |e| e.subject = subject);
        self.st.refresh_gallery_metrics();
        res.map(Response::new)
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

    async fn stats(&self, req: Request<pb::StatsRequest>) -> Result<Response<pb::StatsResponse>, Status> {
        let t0 = Instant::now();
        let (res, who) = match self.who(&req, Role::Search) {
            Err((s, who)) => (Err(s), who),
            Ok(c) => {
                let res = self.st.searcher().map(|s| {
                    let g = s.gallery();
                    let snap = g.snapshot();
                    pb::StatsResponse {
                        templates: snap.templates() as u64,
                        subjects: s.subjects(&snap),
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
                        metrics_address: self.st.metrics_addr.get().map(|a| a.to_string()).unwrap_or_default(),
                    }
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
