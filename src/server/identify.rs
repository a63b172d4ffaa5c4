//! The `Identification` service: Identify and IdentifyStream over one or
//! several galleries (searched in one job on a search worker, each decided
//! with its own size; a gallery that cannot answer reports it in its
//! section), the hit notifications they raise (durable before the reply),
//! and Verify.

use super::auth::Caller;
use super::config::Role;
use super::convert;
use super::notifications::Origin;
use super::pb;
use super::sections;
use super::service::{MAX_PROBE_VIEWS, Outcome, Searched, Services, deadline_of, decode_status, remap_views};
use crate::cancel::Cancel;
use crate::search::Query;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tonic::{Request, Response, Status, Streaming};

impl Services {
    /// Checks of an identification that need no parsing.
    fn check_identify(&self, r: &pb::IdentifyRequest) -> Result<(), Status> {
        let limits = &self.st.cfg.limits;
        if r.max_candidates > limits.max_candidates {
            return Err(Status::invalid_argument(format!(
                "max_candidates {} is over the limit of {}",
                r.max_candidates, limits.max_candidates
            )));
        }
        if r.transaction_id.len() > 256 || r.request_id.len() > 256 {
            return Err(Status::invalid_argument("transaction_id and request_id are at most 256 bytes"));
        }
        convert::check_labels(&r.label_filter, limits, "label_filter")?;
        convert::check_records(r.probe.as_ref().map_or(&[][..], |p| &p.templates), MAX_PROBE_VIEWS)
    }

    /// One search over the galleries it names: cheap checks, admission
    /// (`wait`: queue for a slot; else shed when full), then parsing and
    /// the searches on a worker, then the notifications of its hits.
    pub(super) async fn search(
        &self,
        r: pb::IdentifyRequest,
        caller: &Caller,
        cancel: Cancel,
        t0: Instant,
        wait: bool,
    ) -> Outcome<pb::IdentifyResponse> {
        // The default set, or the galleries named: one named but not served
        // (unloaded meanwhile, say) answers NOT_FOUND in its own section
        // and leaves the others answering.
        let names: Vec<String> = if r.galleries.is_empty() {
            let entries = match self.st.catalog.resolve(&[]) {
                Ok(e) => e,
                Err(e) => return (Err(e), None),
            };
            // A token limited to some galleries: the default set shrinks
            // to what it may search.
            let v: Vec<String> = entries.into_iter().filter(|e| caller.may(&e.name)).map(|e| e.name.clone()).collect();
            if v.is_empty() {
                return (
                    Err(Status::permission_denied(format!("'{}' may search no default gallery", caller.name))),
                    None,
                );
            }
            v
        } else {
            let names = match super::catalog::named(&r.galleries) {
                Ok(n) => n,
                Err(e) => return (Err(e), None),
            };
            // Naming a gallery the token may not use is refused.
            if let Some(n) = names.iter().find(|n| !caller.may(n)) {
                return (Err(Status::permission_denied(format!("'{}' may not use gallery '{n}'", caller.name))), None);
            }
            names
        };
        if let Err(e) = self.check_identify(&r) {
            return (Err(e), None);
        }
        let probe = r.probe.unwrap_or_default();
        let (max_candidates, decision) = (r.max_candidates as usize, convert::identify_decision(r.decision));
        let labels: Vec<(String, String)> = r.label_filter.into_iter().collect();
        let (st, job_cancel) = (Arc::clone(&self.st), cancel.clone());
        let searchers: Vec<Result<Arc<crate::search::Searcher>, Status>> =
            names.iter().map(|n| self.st.searcher(n)).collect();
        let job = move || {
            let parsed = match convert::parse_templates(&probe.templates, MAX_PROBE_VIEWS, &st.cfg.limits) {
                Ok(p) => p,
                Err(e) => return (Err(e), None),
            };
            let sha = Some(parsed.sha256.clone());
            let q = Query { fingers: parsed.fingers, max_candidates, decision, labels, cancel: job_cancel };
            let mut out = Vec::with_capacity(searchers.len());
            for s in &searchers {
                let r = match s {
                    Ok(s) => s.identify(&q).map_err(|e| {
                        st.metrics.stopped(&e);
                        convert::search_status(e)
                    }),
                    Err(e) => Err(e.clone()),
                };
                // A stopped search stops them all: the caller is gone or late.
                let stop =
                    matches!(&r, Err(e) if matches!(e.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled));
                out.push(r);
                if stop {
                    break;
                }
            }
            (Ok(Searched { reply: out, views: parsed.views, parse: parsed.took }), sha)
        };
        let ((out, sha), queued) = match self.run(&cancel, wait, "Identify", job).await {
            Ok(x) => x,
            Err(s) => return (Err(s), None),
        };
        let Searched { reply: replies, views, parse } = match out {
            Ok(x) => x,
            Err(e) => return (Err(e), sha),
        };
        let mut secs = Vec::with_capacity(names.len());
        let mut backend = String::new();
        for (name, rep) in names.iter().zip(replies.into_iter().chain(std::iter::repeat_with(|| {
            Err(Status::deadline_exceeded("deadline exceeded before this gallery was searched"))
        }))) {
            match rep {
                Ok(mut reply) => {
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
                    remap_views(&mut reply, &views);
                    backend.clone_from(&reply.backend);
                    let resp =
                        convert::identify_response(reply, String::new(), &self.st.model, queued, parse, t0.elapsed());
                    secs.push(sections::section(name, &resp, 1.0, false));
                }
                Err(e) => secs.push(sections::failed_section(name, &Status::new(e.code(), self.st.scrub(e.message())))),
            }
        }
        // A probe the server refuses is refused for every gallery: one error.
        if let Some(bad) =
            secs.iter().filter_map(|s| s.error.as_ref()).find(|e| e.code == tonic::Code::InvalidArgument as i32)
        {
            return (Err(Status::invalid_argument(bad.message.clone())), sha);
        }
        if let Some(n) = &self.st.notifier {
            let o = Origin {
                client: caller.describe(),
                transaction_id: r.transaction_id.clone(),
                request_id: r.request_id.clone(),
                probe_sha256: sha.clone().unwrap_or_default(),
            };
            let catalog = &self.st.catalog;
            let notifies = |g: &str| catalog.get(g).is_ok_and(|e| e.notify);
            if let Err(e) = n.raise(&mut secs, &notifies, &o, &self.st.metrics).await {
                return (Err(e), sha);
            }
        }
        self.st.identifications.fetch_add(1, Ordering::Relaxed);
        let want = if max_candidates == 0 { self.st.cfg.search.max_candidates } else { max_candidates };
        let mut resp = match sections::assemble(r.request_id, secs, want, backend) {
            Ok(r) => r,
            Err(e) => return (Err(e), sha),
        };
        let dropped = convert::fit_reply(&mut resp, self.st.cfg.server.max_message_bytes);
        if dropped > 0 {
            tracing::warn!("a reply passed server.max_message_bytes: its last {dropped} candidates were left out");
        }
        (Ok(resp), sha)
    }

    async fn verify_one(
        &self,
        r: pb::VerifyRequest,
        caller: &Caller,
        cancel: Cancel,
        t0: Instant,
    ) -> Outcome<pb::VerifyResponse> {
        if let Err(e) = self.st.entry(&r.gallery).and_then(|e| caller.check_gallery(&e.name)) {
            return (Err(e), None);
        }
        let searcher = match self.st.searcher(&r.gallery) {
            Ok(s) => s,
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
}

type IdentifyStreamOut = Pin<Box<dyn Stream<Item = Result<pb::IdentifyStreamResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::identification_server::Identification for Services {
    type IdentifyStreamStream = IdentifyStreamOut;

    async fn identify(&self, req: Request<pb::IdentifyRequest>) -> Result<Response<pb::IdentifyResponse>, Status> {
        let t0 = Instant::now();
        let cancel = Cancel::until(deadline_of(req.metadata(), t0));
        let (res, sha, who) = match self.who(&req, Role::Search) {
            Err((s, who)) => (Err(s), None, who),
            Ok(c) => {
                let (r, sha) = self.search(req.into_inner(), &c, cancel, t0, false).await;
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
                    let (res, sha) = me.search(r, &caller, Cancel::until(deadline), t1, true).await;
                    me.finish("IdentifyStream", t1, &caller.describe(), &res, |e| e.searched(sha, &res));
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
                let (res, sha) = self.verify_one(r, &c, cancel, t0).await;
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
