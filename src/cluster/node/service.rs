//! The node service: what routers and peers call (internal token only).

use super::super::pb::{self, node_server};
use super::replication::{WriteOp, gallery_status};
use super::{Node, SlotState};
use crate::cancel::Cancel;
use crate::search::plan::{Found, Pair, Scored, TemplateRef};
use crate::search::{GroupView, Prepped, local};
use crate::server::auth::{hex, sha256};
use crate::server::config::LimitsSection;
use crate::server::convert;
use crate::server::engine::{Engine, NotRun};
use crate::server::service::{MAX_PROBE_VIEWS, deadline_of};
use crate::template::{self, Format};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// Prepared probes kept between a search's phases (they arrive on one
/// node two or three times within milliseconds).
/// Prepared probes by SHA-256, with when they were made.
type Prepared = HashMap<[u8; 32], (Instant, Arc<Vec<Prepped>>)>;

struct ProbeCache {
    map: Mutex<Prepared>,
}

const CACHE_TTL: Duration = Duration::from_secs(30);
const CACHE_MAX: usize = 512;

impl ProbeCache {
    fn get(&self, k: &[u8; 32]) -> Option<Arc<Vec<Prepped>>> {
        let m = self.map.lock().ok()?;
        m.get(k).filter(|(t, _)| t.elapsed() < CACHE_TTL).map(|(_, p)| Arc::clone(p))
    }

    fn put(&self, k: [u8; 32], p: Arc<Vec<Prepped>>) {
        if let Ok(mut m) = self.map.lock() {
            if m.len() >= CACHE_MAX {
                m.retain(|_, (t, _)| t.elapsed() < CACHE_TTL);
                if m.len() >= CACHE_MAX {
                    m.clear();
                }
            }
            m.insert(k, (Instant::now(), p));
        }
    }
}

/// The node service over a [`Node`].
#[derive(Clone)]
pub struct NodeService {
    node: Arc<Node>,
    engine: Arc<Engine>,
    token_sha256: Option<[u8; 32]>,
    cache: Arc<ProbeCache>,
    limits: Arc<LimitsSection>,
}

impl std::fmt::Debug for NodeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeService").field("node", &self.node.id()).finish_non_exhaustive()
    }
}

fn probe_key(templates: &[crate::server::pb::FingerTemplate]) -> [u8; 32] {
    let mut h = Sha256::new();
    for t in templates {
        h.update((t.data.len() as u64).to_le_bytes());
        h.update(&t.data);
        h.update(t.format.to_le_bytes());
        h.update(t.finger_position.to_le_bytes());
    }
    h.finalize().into()
}

impl NodeService {
    /// The service; callers must present `token` (none: no check, for
    /// loopback-only clusters).
    pub fn new(node: Arc<Node>, engine: Arc<Engine>, token: Option<&str>, limits: LimitsSection) -> NodeService {
        NodeService {
            node,
            engine,
            token_sha256: token.map(|t| sha256(t.as_bytes())),
            cache: Arc::new(ProbeCache { map: Mutex::new(HashMap::new()) }),
            limits: Arc::new(limits),
        }
    }

    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(want) = &self.token_sha256 else { return Ok(()) };
        let got = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::server::auth::bearer_token)
            .map(|t| sha256(t.as_bytes()));
        match got {
            Some(g) if crate::server::auth::ct_eq(&g, want) => Ok(()),
            Some(_) => Err(Status::unauthenticated("wrong cluster token")),
            None => Err(Status::unauthenticated("the node service needs the cluster token")),
        }
    }

    fn views(&self, gallery: &str, groups: impl IntoIterator<Item = u32>) -> Result<Vec<GroupView>, Status> {
        let g = self
            .node
            .gallery(gallery)
            .ok_or_else(|| Status::not_found(format!("no gallery '{gallery}' on node {}", self.node.id())))?;
        let mut out: Vec<GroupView> = Vec::new();
        for group in groups {
            if out.iter().any(|v| v.group == group) {
                continue;
            }
            let slot = g.slot(group).filter(|s| s.state() == SlotState::Ready).ok_or_else(|| {
                Status::failed_precondition(format!("{gallery}/g{group:04} is not ready on node {}", self.node.id()))
            })?;
            let part = slot.part().ok_or_else(|| Status::failed_precondition("group not open"))?;
            out.push(part.view());
        }
        Ok(out)
    }

    /// Parses and prepares a probe (or takes it from the cache), off the async threads.
    fn prepare(
        &self,
        gallery: &str,
        templates: &[crate::server::pb::FingerTemplate],
        cancel: &Cancel,
    ) -> Result<Arc<Vec<Prepped>>, Status> {
        let key = probe_key(templates);
        if let Some(p) = self.cache.get(&key) {
            return Ok(p);
        }
        let parsed = convert::parse_templates(templates, MAX_PROBE_VIEWS, &self.limits)?;
        crate::search::Searcher::check_fingers(&parsed.fingers).map_err(convert::search_status)?;
        let g = self.node.gallery(gallery).ok_or_else(|| Status::not_found(format!("no gallery '{gallery}'")))?;
        let p = Arc::new(g.searcher.prepare(&parsed.fingers, cancel).map_err(convert::search_status)?);
        self.cache.put(key, Arc::clone(&p));
        Ok(p)
    }

    /// Runs `f` on a search worker (admitted, or RESOURCE_EXHAUSTED);
    /// the work stops when `cancel` does (deadline, caller gone).
    async fn run<R: Send + 'static>(
        &self,
        cancel: &Cancel,
        f: impl FnOnce() -> Result<R, Status> + Send + 'static,
    ) -> Result<R, Status> {
        let permit = self.engine.try_admit().ok_or_else(|| {
            Status::resource_exhausted(format!(
                "node {} saturated ({} searches in flight)",
                self.node.id(),
                self.engine.in_flight()
            ))
        })?;
        let _gone = cancel.on_drop();
        let fut = self.engine.run(permit, cancel.clone(), f);
        let out = match cancel.deadline() {
            Some(d) => tokio::time::timeout_at(tokio::time::Instant::from_std(d), fut)
                .await
                .map_err(|_| Status::deadline_exceeded("deadline exceeded on the node"))?,
            None => fut.await,
        };
        match out {
            Ok((r, _)) => r,
            Err(NotRun::ShuttingDown) => Err(Status::unavailable("the node is shutting down")),
            Err(NotRun::Stopped(s)) => Err(convert::search_status(crate::search::stopped(s, "queued"))),
        }
    }
}

fn labels(v: Vec<pb::Label>) -> Vec<(String, String)> {
    v.into_iter().map(|l| (l.key, l.value)).collect()
}

fn pb_labels(v: &[(String, String)]) -> Vec<pb::Label> {
    v.iter().map(|(k, v)| pb::Label { key: k.clone(), value: v.clone() }).collect()
}

/// Phase-1 findings on the wire.
pub fn found_to_pb(f: Found) -> pb::CandidatesResponse {
    pb::CandidatesResponse {
        fingers: f
            .lists
            .into_iter()
            .map(|l| pb::CandList {
                cands: l
                    .into_iter()
                    .map(|c| pb::Cand {
                        similarity: c.similarity,
                        group: c.group,
                        subject: c.template.subject.to_string(),
                        ordinal: c.template.ordinal,
                    })
                    .collect(),
            })
            .collect(),
        groups: f
            .groups
            .into_iter()
            .map(|g| pb::GroupSize { group: g.group, subjects: g.subjects, generation: g.generation })
            .collect(),
        ..Default::default()
    }
}

/// Scores on the wire.
pub fn scored_to_pb(s: Scored, backend: String) -> pb::ScoreResponse {
    pb::ScoreResponse {
        subjects: s
            .subjects
            .into_iter()
            .map(|i| pb::SubjectInfo {
                subject: i.subject.to_string(),
                group: i.group,
                labels: pb_labels(&i.labels),
                templates: i
                    .templates
                    .into_iter()
                    .map(|t| pb::TemplateInfo { position: u32::from(t.position.0), source: t.source })
                    .collect(),
            })
            .collect(),
        scores: s
            .scores
            .into_iter()
            .map(|p| pb::PairScore {
                finger: p.finger,
                subject: p.template.subject.to_string(),
                ordinal: p.template.ordinal,
                sum: p.parts.sum,
                n_p: p.parts.n_p,
                n_r: p.parts.n_r,
                verified: p.consensus.is_some(),
                accepted: p.consensus.map_or(0, |c| c.accepted),
                n_a: p.consensus.map_or(0, |c| c.n_a),
                n_b: p.consensus.map_or(0, |c| c.n_b),
            })
            .collect(),
        backend,
    }
}

type TailStream = Pin<Box<dyn futures::Stream<Item = Result<pb::TailChunk, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl node_server::Node for NodeService {
    type TailStream = TailStream;

    async fn candidates(
        &self,
        req: Request<pb::CandidatesRequest>,
    ) -> Result<Response<pb::CandidatesResponse>, Status> {
        self.check(&req)?;
        let t0 = Instant::now();
        let cancel = Cancel::until(deadline_of(req.metadata(), t0));
        let r = req.into_inner();
        let views = self.views(&r.gallery, r.groups.iter().copied())?;
        let me = self.clone();
        let (k, ef) = (r.k as usize, r.ef as usize);
        if k == 0 || k > 10_000 || ef > 100_000 {
            return Err(Status::invalid_argument(format!("k {k} / ef {ef} out of range")));
        }
        let filter = labels(r.label_filter);
        let gallery = r.gallery.clone();
        let templates = r.templates;
        let job_cancel = cancel.clone();
        let (found, prep) = self
            .run(&cancel, move || {
                let t = Instant::now();
                let probe = me.prepare(&gallery, &templates, &job_cancel)?;
                let prep = t.elapsed();
                let g = me.node.gallery(&gallery).ok_or_else(|| Status::not_found("gallery gone"))?;
                let found = local::candidates(&g.searcher, &views, &probe, &filter, k, ef, &job_cancel)
                    .map_err(convert::search_status)?;
                Ok((found, prep))
            })
            .await?;
        let mut resp = found_to_pb(found);
        resp.prepare_us = prep.as_micros() as u64;
        resp.search_us = t0.elapsed().as_micros() as u64;
        Ok(Response::new(resp))
    }

    async fn score(&self, req: Request<pb::ScoreRequest>) -> Result<Response<pb::ScoreResponse>, Status> {
        self.check(&req)?;
        let cancel = Cancel::until(deadline_of(req.metadata(), Instant::now()));
        let r = req.into_inner();
        let views = self.views(&r.gallery, r.pairs.iter().map(|p| p.group))?;
        let pairs: Vec<Pair> = r
            .pairs
            .into_iter()
            .map(|p| Pair {
                finger: p.finger,
                group: p.group,
                template: TemplateRef { subject: p.subject.into(), ordinal: p.ordinal },
                verify: p.verify,
            })
            .collect();
        let me = self.clone();
        let (gallery, templates) = (r.gallery, r.templates);
        let job_cancel = cancel.clone();
        let scored = self
            .run(&cancel, move || {
                let probe = me.prepare(&gallery, &templates, &job_cancel)?;
                if let Some(bad) = pairs.iter().find(|p| p.finger as usize >= probe.len()) {
                    return Err(Status::invalid_argument(format!("pair names probe finger {}", bad.finger)));
                }
                let g = me.node.gallery(&gallery).ok_or_else(|| Status::not_found("gallery gone"))?;
                local::score(&g.searcher, &views, &probe, &pairs, &job_cancel).map_err(convert::search_status)
            })
            .await?;
        Ok(Response::new(scored_to_pb(scored, self.node.backend())))
    }

    async fn write(&self, req: Request<pb::WriteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        let (op, n) = match r.op {
            Some(pb::write_request::Op::Enroll(e)) => {
                let parsed = convert::parse_templates(&e.templates, crate::gallery::MAX_TEMPLATES, &self.limits)?;
                let n = parsed.fingers.len() as u32;
                let op = WriteOp::Enroll {
                    subject: e.subject,
                    labels: labels(e.labels),
                    templates: parsed.fingers,
                    replace: e.replace,
                };
                (op, n)
            }
            Some(pb::write_request::Op::Delete(d)) => (WriteOp::Delete { subject: d.subject }, 0),
            None => return Err(Status::invalid_argument("a write needs an operation")),
        };
        if let WriteOp::Enroll { subject, .. } | WriteOp::Delete { subject } = &op
            && crate::groups::group_of(subject, self.node.map().groups()) != r.group
        {
            return Err(Status::invalid_argument(format!("subject '{subject}' does not belong to group {}", r.group)));
        }
        let (sequence, replicas) = self.node.write(&r.gallery, r.group, op).await?;
        Ok(Response::new(pb::WriteResponse { sequence, templates: n, replicas }))
    }

    async fn replicate(&self, req: Request<pb::ReplicateRequest>) -> Result<Response<pb::ReplicateResponse>, Status> {
        self.check(&req)?;
        let applied = self.node.replicate(req.into_inner()).await?;
        Ok(Response::new(pb::ReplicateResponse { applied }))
    }

    async fn tail(&self, req: Request<pb::TailRequest>) -> Result<Response<Self::TailStream>, Status> {
        self.check(&req)?;
        let rx = self.node.tail_stream(req.into_inner())?;
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn lookup(&self, req: Request<pb::LookupRequest>) -> Result<Response<pb::LookupResponse>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        let slot =
            self.node.slot(&r.gallery, r.group).filter(|s| s.state() == SlotState::Ready).ok_or_else(|| {
                Status::failed_precondition(format!("{}/g{:04} is not ready here", r.gallery, r.group))
            })?;
        let g = slot.gallery().ok_or_else(|| Status::unavailable("the group is not open"))?;
        let Some(v) = g.subject(&r.subject) else { return Ok(Response::new(pb::LookupResponse::default())) };
        let mut fingers = Vec::with_capacity(v.templates.len());
        for (t, source) in v.templates.iter().zip(&v.sources) {
            let iso = if r.include_templates {
                template::write(std::slice::from_ref(t), Format::Iso2005)
                    .map_err(|e| Status::internal(format!("writing the template: {e}")))?
            } else {
                Vec::new()
            };
            fingers.push(pb::LookupFinger {
                finger_position: u32::from(t.finger_position.0),
                minutiae: t.minutiae.len() as u32,
                source: source.clone(),
                iso_template: iso,
            });
        }
        Ok(Response::new(pb::LookupResponse { found: true, labels: pb_labels(&v.labels), fingers }))
    }

    async fn groups(&self, req: Request<pb::GroupsRequest>) -> Result<Response<pb::GroupsResponse>, Status> {
        self.check(&req)?;
        let mut groups = Vec::new();
        for g in self.node.galleries() {
            for slot in g.slots() {
                let s = &slot;
                let state = s.state();
                let mut st = pb::GroupState {
                    gallery: g.name.clone(),
                    group: s.group,
                    state: state.name().into(),
                    error: if let super::SlotState::Failed(e) = &state { e.clone() } else { String::new() },
                    ..Default::default()
                };
                if let (Some(gal), Some(part)) = (s.gallery(), s.part()) {
                    let snap = gal.snapshot();
                    st.subjects = part.subjects(&snap);
                    st.templates = snap.templates() as u64;
                    st.generation = snap.generation;
                    st.shards = snap.shards.len() as u32;
                    st.wal_bytes = gal.wal_bytes();
                    st.last_sequence = gal.last_record().map(|(s, _)| s).unwrap_or(0);
                    st.delta_templates = snap.delta.live().count() as u64;
                    st.tombstones = snap.delta.tombstones.len() as u64;
                    let problems = gal.problems();
                    if let Ok(m) = gal.manifest() {
                        st.shard_list = m
                            .shards
                            .iter()
                            .map(|e| {
                                let err = problems.iter().find(|p| p.name == e.name).map(|p| p.error.clone());
                                let mut s = crate::server::admin::shard_msg(
                                    e,
                                    if err.is_some() { "left out" } else { "serving" },
                                    err.unwrap_or_default(),
                                    &g.name,
                                );
                                s.group = slot.group;
                                s.nodes = vec![self.node.id().to_string()];
                                s
                            })
                            .collect();
                    }
                }
                groups.push(st);
            }
        }
        Ok(Response::new(pb::GroupsResponse { node: self.node.id().to_string(), groups, backend: self.node.backend() }))
    }

    async fn shard(&self, req: Request<pb::ShardRequest>) -> Result<Response<pb::ShardResponse>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        let slot = self
            .node
            .slot(&r.gallery, r.group)
            .ok_or_else(|| Status::failed_precondition(format!("{}/g{:04} is not held here", r.gallery, r.group)))?;
        let g = slot.gallery().ok_or_else(|| Status::unavailable("the group is not open"))?;
        let (action, name) = (r.action, r.name);
        let e = tokio::task::spawn_blocking(move || match action.as_str() {
            "load" => g.attach_shard(&name),
            "unload" => g.detach_shard(&name),
            other => Err(crate::gallery::GalleryError::Invalid(format!("unknown shard action '{other}'"))),
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(gallery_status)?;
        Ok(Response::new(pb::ShardResponse {
            name: e.name,
            file: e.file,
            templates: e.templates,
            subjects: e.subjects,
            bytes: e.bytes,
        }))
    }
}

/// A hex digest of a probe's bytes (for logs).
pub fn probe_digest(templates: &[crate::server::pb::FingerTemplate]) -> String {
    hex(&probe_key(templates))
}
