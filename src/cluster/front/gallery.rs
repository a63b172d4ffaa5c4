//! The `Gallery` service of the router: writes to the groups' primaries,
//! subjects, shards, statistics and galleries of the cluster.

use super::FrontServices;
use crate::cluster::map::GallerySpec;
use crate::cluster::{admin, pb as cpb};
use crate::server::audit::Event;
use crate::server::auth::Caller;
use crate::server::config::Role;
use crate::server::{convert, pb};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tonic::{Code, Request, Response, Status};

impl FrontServices {
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
