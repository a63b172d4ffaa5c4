//! The router's public face: the same `Identification`, `Gallery` and
//! `Notifications` services as `whorl serve`, so existing clients (the
//! CLI, grpcio, grpcurl) work unchanged against a cluster. Authorisation,
//! the audit trail, metrics, the reply's gallery sections and hit
//! notifications are the server's ([`crate::server`]); the searches and
//! writes go to the nodes through the [`Router`].

use super::admin;
use super::map::GallerySpec;
use super::pb as cpb;
use super::router::{Routed, RoutedQuery, Router};
use crate::cancel::Cancel;
use crate::search::{Reply, Searcher, Timings};
use crate::server::audit::{Audit, Event};
use crate::server::auth::{Auth, Caller};
use crate::server::config::{Config, Role};
use crate::server::metrics::Metrics;
use crate::server::notifications::{Notifier, Origin};
use crate::server::service::{MAX_PROBE_VIEWS, deadline_of, decode_status, remap_views};
use crate::server::{convert, pb, sections};
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Code, Request, Response, Status, Streaming};

/// What the router's services share.
pub struct Front {
    /// The router.
    pub router: Arc<Router>,
    /// Tokens.
    pub auth: Arc<Auth>,
    /// The audit trail.
    pub audit: Mutex<Audit>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The configuration.
    pub cfg: Config,
    /// Hit notifications (in etcd).
    pub notifier: Option<Arc<Notifier>>,
    admission: Arc<tokio::sync::Semaphore>,
    writes: Arc<tokio::sync::Semaphore>,
    identifications: AtomicU64,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front").finish_non_exhaustive()
    }
}

/// The services (cheap to clone).
#[derive(Clone, Debug)]
pub struct FrontServices {
    f: Arc<Front>,
}

const MODEL: &str = crate::search::impostor::BUILTIN_NAME;

impl Front {
    /// The shared state of a router's services.
    pub fn new(
        router: Arc<Router>,
        cfg: Config,
        audit: Audit,
        metrics: Arc<Metrics>,
        notifier: Option<Arc<Notifier>>,
    ) -> Result<Arc<Front>, String> {
        Ok(Arc::new(Front {
            router,
            auth: Arc::new(Auth::new(&cfg.auth.tokens).map_err(|e| e.to_string())?),
            audit: Mutex::new(audit),
            metrics,
            notifier,
            admission: Arc::new(tokio::sync::Semaphore::new(cfg.server.max_in_flight)),
            writes: Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_writes_in_flight)),
            identifications: AtomicU64::new(0),
            cfg,
        }))
    }

    fn record(&self, e: Event) {
        if let Ok(a) = self.audit.lock() {
            a.record(e);
        }
    }

    /// The cluster's galleries and their settings.
    pub fn galleries(&self) -> Vec<(String, GallerySpec)> {
        self.router.map().galleries()
    }
}

impl FrontServices {
    /// Services over `f`.
    pub fn new(f: Arc<Front>) -> FrontServices {
        FrontServices { f }
    }

    fn who<T>(&self, req: &Request<T>, need: Role) -> Result<Caller, (Status, String)> {
        self.f.auth.authorize(req, need).map_err(|d| (d.status, d.who))
    }

    fn finish<T>(&self, method: &str, t0: Instant, caller: &str, r: &Result<T, Status>, fill: impl FnOnce(&mut Event)) {
        let code = r.as_ref().map(|_| Code::Ok).unwrap_or_else(|s| s.code());
        self.f.metrics.request(method, code, t0.elapsed());
        let mut e = Event::now(caller.to_string(), method, code);
        fill(&mut e);
        self.f.record(e);
    }

    fn gallery_name(&self, c: &Caller, name: &str) -> Result<String, Status> {
        let all = self.f.galleries();
        let found = if name.is_empty() {
            all.iter().find(|(_, s)| s.default).or_else(|| all.first()).map(|(n, _)| n.clone())
        } else {
            all.iter().find(|(n, _)| n == name).map(|(n, _)| n.clone())
        };
        let n = found.ok_or_else(|| Status::not_found(format!("no gallery '{name}' in the cluster")))?;
        c.check_gallery(&n)?;
        Ok(n)
    }

    fn admit(
        &self,
        method: &str,
        sem: &Arc<tokio::sync::Semaphore>,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        Arc::clone(sem).try_acquire_owned().map_err(|_| {
            self.f.metrics.shed(method);
            Status::resource_exhausted("router saturated: retry with backoff")
        })
    }

    /// One Identify over the galleries it names, fanned out to the cluster.
    async fn search(
        &self,
        r: pb::IdentifyRequest,
        c: &Caller,
        cancel: Cancel,
    ) -> (Result<pb::IdentifyResponse, Status>, Option<String>) {
        let limits = &self.f.cfg.limits;
        let names: Vec<String> = if r.galleries.is_empty() {
            let v: Vec<String> =
                self.f.galleries().into_iter().filter(|(n, s)| s.default && c.may(n)).map(|(n, _)| n).collect();
            if v.is_empty() {
                return (Err(Status::failed_precondition("no default gallery this caller may search")), None);
            }
            v
        } else {
            let mut v = Vec::new();
            for n in &r.galleries {
                match self.gallery_name(c, n) {
                    Ok(n) if !v.contains(&n) => v.push(n),
                    Ok(_) => {}
                    Err(e) => return (Err(e), None),
                }
            }
            v
        };
        if r.max_candidates > limits.max_candidates {
            return (
                Err(Status::invalid_argument(format!(
                    "max_candidates {} is over the limit of {}",
                    r.max_candidates, limits.max_candidates
                ))),
                None,
            );
        }
        if let Err(e) = convert::check_labels(&r.label_filter, limits, "label_filter")
            .and_then(|_| convert::check_records(r.probe.as_ref().map_or(&[][..], |p| &p.templates), MAX_PROBE_VIEWS))
        {
            return (Err(e), None);
        }
        let _permit = match self.admit("Identify", &self.f.admission) {
            Ok(p) => p,
            Err(e) => return (Err(e), None),
        };
        let t0 = Instant::now();
        let probe = r.probe.unwrap_or_default();
        let parsed = match convert::parse_templates(&probe.templates, MAX_PROBE_VIEWS, limits) {
            Ok(p) => p,
            Err(e) => return (Err(e), None),
        };
        let sha = Some(parsed.sha256.clone());
        if let Err(e) = Searcher::check_fingers(&parsed.fingers) {
            return (Err(convert::search_status(e)), sha);
        }
        let decision = convert::identify_decision(r.decision)
            .unwrap_or(crate::search::Decision::Fpir(self.f.cfg.search.default_fpir));
        if let Err(e) = Searcher::check_decision(decision) {
            return (Err(convert::search_status(e)), sha);
        }
        let want = if r.max_candidates == 0 { self.f.cfg.search.max_candidates } else { r.max_candidates as usize };
        let labels: Vec<(String, String)> = r.label_filter.into_iter().collect();
        let positions: Vec<_> = parsed.fingers.iter().map(|t| t.finger_position).collect();
        let queries: Vec<RoutedQuery<'_>> = names
            .iter()
            .map(|g| RoutedQuery {
                gallery: g,
                templates: &probe.templates,
                positions: positions.clone(),
                labels: labels.clone(),
                decision,
                want,
                allow_partial: r.allow_partial,
                deadline: cancel.deadline(),
                cancel: cancel.clone(),
            })
            .collect();
        let routed = futures::future::join_all(queries.iter().map(|q| self.f.router.identify(q))).await;
        let mut secs = Vec::with_capacity(names.len());
        for (name, res) in names.iter().zip(routed) {
            match res {
                Ok(Routed { outcome, searched_fraction, missing }) => {
                    let mut reply = Reply {
                        hit: outcome.hit,
                        candidates: outcome.candidates,
                        operating_point: outcome.operating_point,
                        timings: Timings {
                            candidates: outcome.timings.candidates,
                            rescore: outcome.timings.rescore,
                            fuse: outcome.timings.fuse,
                            total: t0.elapsed(),
                            ..Timings::default()
                        },
                        backend: "cluster".into(),
                        generation: outcome.generation,
                        comparisons: outcome.comparisons,
                    };
                    remap_views(&mut reply, &parsed.views);
                    let resp = convert::identify_response(
                        reply,
                        String::new(),
                        MODEL,
                        Duration::ZERO,
                        parsed.took,
                        t0.elapsed(),
                    );
                    secs.push(sections::section(name, &resp, searched_fraction, !missing.is_empty()));
                }
                Err(e) => {
                    self.f.metrics.stopped(&e);
                    secs.push(sections::failed_section(name, &convert::search_status(e)));
                }
            }
        }
        if let Some(bad) = secs.iter().filter_map(|s| s.error.as_ref()).find(|e| e.code == Code::InvalidArgument as i32)
        {
            return (Err(Status::invalid_argument(bad.message.clone())), sha);
        }
        if let Some(n) = &self.f.notifier {
            let o = Origin {
                client: c.describe(),
                transaction_id: r.transaction_id.clone(),
                request_id: r.request_id.clone(),
                probe_sha256: sha.clone().unwrap_or_default(),
            };
            let galleries = self.f.galleries();
            let notifies = |g: &str| galleries.iter().any(|(n, s)| n == g && s.notify);
            if let Err(e) = n.raise(&mut secs, &notifies, &o, &self.f.metrics).await {
                return (Err(e), sha);
            }
        }
        self.f.identifications.fetch_add(1, Ordering::Relaxed);
        let mut resp = match sections::assemble(r.request_id, secs, want, "cluster".into()) {
            Ok(x) => x,
            Err(e) => return (Err(e), sha),
        };
        convert::fit_reply(&mut resp, self.f.cfg.server.max_message_bytes);
        (Ok(resp), sha)
    }
}

type StreamOut = Pin<Box<dyn Stream<Item = Result<pb::IdentifyStreamResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::identification_server::Identification for FrontServices {
    type IdentifyStreamStream = StreamOut;

    async fn identify(&self, req: Request<pb::IdentifyRequest>) -> Result<Response<pb::IdentifyResponse>, Status> {
        let t0 = Instant::now();
        let cancel = Cancel::until(deadline_of(req.metadata(), t0));
        let (res, sha, who) = match self.who(&req, Role::Search) {
            Err((s, who)) => (Err(s), None, who),
            Ok(c) => {
                let (r, sha) = self.search(req.into_inner(), &c, cancel).await;
                (r, sha, c.describe())
            }
        };
        self.finish("Identify", t0, &who, &res, |e| e.searched(sha, &res));
        res.map(Response::new)
    }

    async fn identify_stream(
        &self,
        req: Request<Streaming<pb::IdentifyRequest>>,
    ) -> Result<Response<Self::IdentifyStreamStream>, Status> {
        let t0 = Instant::now();
        let deadline = deadline_of(req.metadata(), t0);
        let caller = match self.who(&req, Role::Search) {
            Ok(c) => c,
            Err((s, who)) => {
                self.finish::<()>("IdentifyStream", t0, &who, &Err(s.clone()), |_| {});
                return Err(s);
            }
        };
        let me = self.clone();
        let out = req
            .into_inner()
            .map(move |item| {
                let (me, caller) = (me.clone(), caller.clone());
                async move {
                    let r = item.map_err(decode_status)?;
                    let t1 = Instant::now();
                    let id = r.request_id.clone();
                    let (res, sha) = me.search(r, &caller, Cancel::until(deadline)).await;
                    me.finish("IdentifyStream", t1, &caller.describe(), &res, |e| e.probe_sha256 = sha);
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
            .buffered(8);
        Ok(Response::new(Box::pin(out)))
    }

    async fn verify(&self, req: Request<pb::VerifyRequest>) -> Result<Response<pb::VerifyResponse>, Status> {
        let t0 = Instant::now();
        let cancel = Cancel::until(deadline_of(req.metadata(), t0));
        let (res, who) = match self.who(&req, Role::Search) {
            Err((s, who)) => (Err(s), who),
            Ok(c) => (self.verify_one(req.into_inner(), &c, cancel).await, c.describe()),
        };
        self.finish("Verify", t0, &who, &res, |_| {});
        res.map(Response::new)
    }
}

impl FrontServices {
    async fn verify_one(&self, r: pb::VerifyRequest, c: &Caller, cancel: Cancel) -> Result<pb::VerifyResponse, Status> {
        let t0 = Instant::now();
        let gallery = self.gallery_name(c, &r.gallery)?;
        if r.subject_id.is_empty() {
            return Err(Status::invalid_argument("subject_id is empty"));
        }
        let probe = r.probe.unwrap_or_default();
        convert::check_records(&probe.templates, MAX_PROBE_VIEWS)?;
        let _permit = self.admit("Verify", &self.f.admission)?;
        let parsed = convert::parse_templates(&probe.templates, MAX_PROBE_VIEWS, &self.f.cfg.limits)?;
        Searcher::check_fingers(&parsed.fingers).map_err(convert::search_status)?;
        let decision = convert::verify_decision(r.decision)
            .unwrap_or(crate::search::Decision::Fpir(self.f.cfg.search.default_fpir));
        Searcher::check_decision(decision).map_err(convert::search_status)?;
        let q = RoutedQuery {
            gallery: &gallery,
            templates: &probe.templates,
            positions: parsed.fingers.iter().map(|t| t.finger_position).collect(),
            labels: Vec::new(),
            decision,
            want: 1,
            allow_partial: false,
            deadline: cancel.deadline(),
            cancel: cancel.clone(),
        };
        let out = self.f.router.verify(&q, &r.subject_id).await.map_err(convert::search_status)?;
        let mut reply = Reply {
            hit: out.hit,
            candidates: out.candidates,
            operating_point: out.operating_point,
            timings: Timings { rescore: out.timings.rescore, total: t0.elapsed(), ..Timings::default() },
            backend: "cluster".into(),
            generation: out.generation,
            comparisons: out.comparisons,
        };
        remap_views(&mut reply, &parsed.views);
        Ok(convert::verify_response(reply, MODEL, Duration::ZERO, parsed.took, t0.elapsed()))
    }

    fn stats_of(&self, c: &Caller, only: Option<&str>) -> pb::StatsResponse {
        let sizes = self.f.router.gallery_sizes();
        let mut r = pb::StatsResponse {
            backend: "cluster".into(),
            in_flight: (self.f.cfg.server.max_in_flight - self.f.admission.available_permits()) as u32,
            max_in_flight: self.f.cfg.server.max_in_flight as u32,
            identifications: self.f.identifications.load(Ordering::Relaxed),
            shed: self.f.metrics.shed_total(),
            ..Default::default()
        };
        for (name, s) in sizes.iter().filter(|(n, _)| c.may(n) && only.is_none_or(|o| o == n.as_str())) {
            r.templates += s.templates;
            r.subjects += s.subjects;
            r.shards += s.shards;
            r.generation += s.generation;
            r.wal_bytes += s.wal_bytes;
            r.delta_templates += s.delta_templates;
            r.tombstones += s.tombstones;
            r.problems += s.groups - s.ready_groups;
            r.galleries.push(pb::GalleryInfo {
                name: name.clone(),
                status: if s.ready_groups == s.groups { "serving".into() } else { "degraded".into() },
                error: if s.ready_groups == s.groups {
                    String::new()
                } else {
                    format!("{} of {} groups have no ready replica", s.groups - s.ready_groups, s.groups)
                },
                subjects: s.subjects,
                templates: s.templates,
                shards: s.shards,
                generation: s.generation,
                default: s.default,
                notify: s.notify,
                groups: s.groups,
                wal_bytes: s.wal_bytes,
                delta_templates: s.delta_templates,
                tombstones: s.tombstones,
            });
        }
        r
    }

    /// A write (enrolment or deletion) to the subject's group's primary;
    /// its audit line is durable before the acknowledgement.
    async fn write(
        &self,
        method: &str,
        c: &Caller,
        gallery: &str,
        subject: &str,
        op: cpb::write_request::Op,
    ) -> Result<cpb::WriteResponse, Status> {
        let _permit = self.admit(method, &self.f.writes)?;
        let wait = Duration::from_millis(self.f.cfg.router.as_ref().map_or(5000, |r| r.write_wait_ms));
        let w = self.f.router.write(gallery, subject, op, wait).await?;
        let mut e = Event::now(c.describe(), method, Code::Ok);
        e.subject = Some(format!("{gallery}/{subject}"));
        let audit = self.f.audit.lock().map(|a| a.clone()).map_err(|_| Status::internal("audit lock poisoned"))?;
        tokio::task::spawn_blocking(move || audit.record_durable(e))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|m| {
                Status::internal(format!(
                    "written at sequence {}, but its audit line failed ({m}); the write stands",
                    w.sequence
                ))
            })?;
        Ok(w)
    }
}

fn subject_text(s: &str) -> Result<(), Status> {
    if s.is_empty() || s.len() > crate::gallery::MAX_TEXT || s.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "subject_id must be 1-{} bytes without control characters",
            crate::gallery::MAX_TEXT
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::gallery_server::Gallery for FrontServices {
    async fn enroll(&self, req: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let t0 = Instant::now();
        let (res, who) = match self.who(&req, Role::Admin) {
            Err((s, who)) => (Err(s), who),
            Ok(c) => {
                let r = req.into_inner();
                let res = async {
                    let gallery = self.gallery_name(&c, &r.gallery)?;
                    subject_text(&r.subject_id)?;
                    convert::check_labels(&r.labels, &self.f.cfg.limits, "labels")?;
                    convert::check_records(&r.templates, crate::gallery::MAX_TEMPLATES)?;
                    // Refuse bad templates here, before the primary does the work again.
                    convert::parse_templates(&r.templates, crate::gallery::MAX_TEMPLATES, &self.f.cfg.limits)?;
                    let op = cpb::write_request::Op::Enroll(cpb::EnrollOp {
                        subject: r.subject_id.clone(),
                        labels: r.labels.iter().map(|(k, v)| cpb::Label { key: k.clone(), value: v.clone() }).collect(),
                        templates: r.templates.clone(),
                        replace: r.replace,
                    });
                    let w = self.write("Enroll", &c, &gallery, &r.subject_id, op).await?;
                    Ok(pb::EnrollResponse { sequence: w.sequence, templates: w.templates })
                }
                .await;
                (res, c.describe())
            }
        };
        if res.is_err() {
            self.finish("Enroll", t0, &who, &res, |_| {});
        } else {
            self.f.metrics.request("Enroll", Code::Ok, t0.elapsed());
        }
        res.map(Response::new)
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let t0 = Instant::now();
        let (res, who) = match self.who(&req, Role::Admin) {
            Err((s, who)) => (Err(s), who),
            Ok(c) => {
                let r = req.into_inner();
                let res = async {
                    let gallery = self.gallery_name(&c, &r.gallery)?;
                    subject_text(&r.subject_id)?;
                    let op = cpb::write_request::Op::Delete(cpb::DeleteOp { subject: r.subject_id.clone() });
                    let w = self.write("Delete", &c, &gallery, &r.subject_id, op).await?;
                    Ok(pb::DeleteResponse { sequence: w.sequence })
                }
                .await;
                (res, c.describe())
            }
        };
        if res.is_err() {
            self.finish("Delete", t0, &who, &res, |_| {});
        } else {
            self.f.metrics.request("Delete", Code::Ok, t0.elapsed());
        }
        res.map(Response::new)
    }

    async fn compact(&self, req: Request<pb::CompactRequest>) -> Result<Response<pb::CompactResponse>, Status> {
        let t0 = Instant::now();
        let (res, who): (Result<pb::CompactResponse, Status>, String) = match self.who(&req, Role::Admin) {
            Err((s, who)) => (Err(s), who),
            Ok(c) => (
                Err(Status::unimplemented(
                    "a cluster's nodes compact each group's log themselves when it passes [gallery] compact_log_bytes",
                )),
                c.describe(),
            ),
        };
        self.finish("Compact", t0, &who, &res, |_| {});
        res.map(Response::new)
    }

    async fn get_subject(&self, req: Request<pb::GetSubjectRequest>) -> Result<Response<pb::Subject>, Status> {
        let t0 = Instant::now();
        let (res, who) = match self.who(&req, Role::Admin) {
            Err((s, who)) => (Err(s), who),
            Ok(c) => {
                let r = req.into_inner();
                let res = async {
                    let gallery = self.gallery_name(&c, &r.gallery)?;
                    let l = self.f.router.lookup(&gallery, &r.subject_id, r.include_templates).await?;
                    if !l.found {
                        return Err(Status::not_found(format!("subject '{}'", r.subject_id)));
                    }
                    Ok(pb::Subject {
                        subject_id: r.subject_id.clone(),
                        labels: l.labels.into_iter().map(|x| (x.key, x.value)).collect(),
                        fingers: l
                            .fingers
                            .into_iter()
                            .map(|f| pb::SubjectFinger {
                                finger_position: f.finger_position,
                                minutiae: f.minutiae,
                                source: f.source,
                                iso_template: f.iso_template,
                            })
                            .collect(),
                    })
                }
                .await;
                (res, c.describe())
            }
        };
        self.finish("GetSubject", t0, &who, &res, |_| {});
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
                let r = req.into_inner();
                let shards = self
                    .f
                    .router
                    .gallery_sizes()
                    .into_iter()
                    .filter(|(n, _)| c.may(n) && (r.gallery.is_empty() || *n == r.gallery))
                    .flat_map(|(_, s)| s.shard_list)
                    .collect();
                (Ok(pb::ListShardsResponse { shards }), c.describe())
            }
        };
        self.finish("ListShards", t0, &who, &res, |_| {});
        res.map(Response::new)
    }

    async fn load_shard(&self, req: Request<pb::LoadShardRequest>) -> Result<Response<pb::Shard>, Status> {
        let c = self.who(&req, Role::Admin);
        let r = req.into_inner();
        self.shard_call("LoadShard", c, r.gallery, r.group, "load", r.file).await
    }

    async fn unload_shard(&self, req: Request<pb::UnloadShardRequest>) -> Result<Response<pb::Shard>, Status> {
        let c = self.who(&req, Role::Admin);
        let r = req.into_inner();
        self.shard_call("UnloadShard", c, r.gallery, r.group, "unload", r.name).await
    }

    async fn stats(&self, req: Request<pb::StatsRequest>) -> Result<Response<pb::StatsResponse>, Status> {
        let t0 = Instant::now();
        let (res, who) = match self.who(&req, Role::Search) {
            Err((s, who)) => (Err(s), who),
            Ok(c) => {
                let r = req.into_inner();
                let res = if r.gallery.is_empty() {
                    Ok(self.stats_of(&c, None))
                } else {
                    self.gallery_name(&c, &r.gallery).map(|g| self.stats_of(&c, Some(&g)))
                };
                (res, c.describe())
            }
        };
        self.finish("Stats", t0, &who, &res, |_| {});
        res.map(Response::new)
    }

    async fn list_galleries(
        &self,
        req: Request<pb::ListGalleriesRequest>,
    ) -> Result<Response<pb::ListGalleriesResponse>, Status> {
        let t0 = Instant::now();
        let (res, who) = match self.who(&req, Role::Search) {
            Err((s, who)) => (Err(s), who),
            Ok(c) => (Ok(pb::ListGalleriesResponse { galleries: self.stats_of(&c, None).galleries }), c.describe()),
        };
        self.finish("ListGalleries", t0, &who, &res, |_| {});
        res.map(Response::new)
    }

    async fn add_gallery(&self, req: Request<pb::AddGalleryRequest>) -> Result<Response<pb::GalleryInfo>, Status> {
        let t0 = Instant::now();
        let (res, who) = match self.who(&req, Role::Admin) {
            Err((s, who)) => (Err(s), who),
            Ok(c) if c.galleries.is_some() => (
                Err(Status::permission_denied("adding galleries needs an admin token limited to no gallery")),
                c.describe(),
            ),
            Ok(c) => {
                let r = req.into_inner();
                let res = match self.f.router.source().store() {
                    None => {
                        Err(Status::failed_precondition("a static cluster map lists its galleries: edit the map file"))
                    }
                    Some(store) => {
                        admin::add_gallery(store, &r.name, GallerySpec { default: r.default, notify: r.notify })
                            .await
                            .map_err(|e| Status::invalid_argument(e.to_string()))
                            .map(|()| pb::GalleryInfo {
                                name: r.name.clone(),
                                status: "loading".into(),
                                default: r.default,
                                notify: r.notify,
                                ..Default::default()
                            })
                    }
                };
                (res, c.describe())
            }
        };
        self.finish("AddGallery", t0, &who, &res, |_| {});
        res.map(Response::new)
    }

    async fn unload_gallery(
        &self,
        req: Request<pb::UnloadGalleryRequest>,
    ) -> Result<Response<pb::GalleryInfo>, Status> {
        let t0 = Instant::now();
        let (res, who): (Result<pb::GalleryInfo, Status>, String) = match self.who(&req, Role::Admin) {
            Err((s, who)) => (Err(s), who),
            Ok(c) => (
                Err(Status::unimplemented(
                    "unloading a gallery from a cluster is not supported: remove it from the cluster's settings",
                )),
                c.describe(),
            ),
        };
        self.finish("UnloadGallery", t0, &who, &res, |_| {});
        res.map(Response::new)
    }
}

impl FrontServices {
    async fn shard_call(
        &self,
        method: &str,
        c: Result<Caller, (Status, String)>,
        gallery: String,
        group: u32,
        action: &str,
        name: String,
    ) -> Result<Response<pb::Shard>, Status> {
        let t0 = Instant::now();
        let (res, who) = match c {
            Err((s, who)) => (Err(s), who),
            Ok(c) => {
                let res = async {
                    let g = self.gallery_name(&c, &gallery)?;
                    let s = self.f.router.shard(&g, group, action, &name).await?;
                    Ok(pb::Shard {
                        name: s.name,
                        file: s.file,
                        templates: s.templates,
                        subjects: s.subjects,
                        bytes: s.bytes,
                        status: if action == "load" { "serving".into() } else { "unloaded".into() },
                        gallery: g,
                        group,
                        ..Default::default()
                    })
                }
                .await;
                (res, c.describe())
            }
        };
        self.finish(method, t0, &who, &res, |_| {});
        res.map(Response::new)
    }
}
