//! The `Identification` service of the router: Identify (fanned out to
//! the cluster, one section per gallery), IdentifyStream and Verify.

use super::FrontServices;
use crate::cancel::Cancel;
use crate::cluster::router::{Routed, RoutedQuery};
use crate::search::{Reply, Searcher, Timings};
use crate::server::auth::Caller;
use crate::server::config::Role;
use crate::server::notifications::Origin;
use crate::server::service::{MAX_PROBE_VIEWS, deadline_of, decode_status, remap_views};
use crate::server::{convert, pb, sections};
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tonic::{Code, Request, Response, Status, Streaming};

const MODEL: &str = crate::search::impostor::BUILTIN_NAME;

impl FrontServices {
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
}
