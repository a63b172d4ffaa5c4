//! The `Gallery` service: subjects, shards, statistics and the galleries
//! themselves (list, add, unload); enrolment, deletion and compaction are
//! in [`super::writes`].

use super::auth::Caller;
use super::catalog::Entry;
use super::config::Role;
use super::convert;
use super::pb;
use super::service::Services;
use crate::gallery::{Gallery, GalleryError};
use crate::template::{self, Format};
use std::path::{Component, Path};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tonic::{Request, Response, Status};

/// A shard's description on the wire.
pub fn shard_msg(e: &crate::gallery::ShardEntry, status: &str, error: String, gallery: &str) -> pb::Shard {
    pb::Shard {
        name: e.name.clone(),
        file: e.file.clone(),
        templates: e.templates,
        subjects: e.subjects,
        bytes: e.bytes,
        status: status.into(),
        error,
        gallery: gallery.to_string(),
        ..Default::default()
    }
}

/// A shard operation run on a gallery (load or unload).
type ShardOp = Box<dyn FnOnce(&Gallery) -> Result<crate::gallery::ShardEntry, GalleryError> + Send>;

impl Services {
    /// LoadShard and UnloadShard: the gallery change off the async threads,
    /// then the GPU's resident shards brought in line, metrics and audit.
    async fn change_shard(
        &self,
        method: &str,
        c: Result<Caller, (Status, String)>,
        gallery: String,
        op: ShardOp,
        status: &'static str,
    ) -> Result<Response<pb::Shard>, Status> {
        let t0 = Instant::now();
        let (res, who) = match c {
            Err((s, who)) => (Err(s), who),
            Ok(c) => {
                let res = match self.scoped(&c, &gallery) {
                    Ok(name) => {
                        let g = name.clone();
                        self.blocking(&name, op).await.map(|e| shard_msg(&e, status, String::new(), &g))
                    }
                    Err(e) => Err(e),
                };
                if res.is_ok() {
                    let st = Arc::clone(&self.st);
                    let _ = tokio::task::spawn_blocking(move || st.sync_resident()).await;
                }
                (res, c.describe())
            }
        };
        self.finish(method, t0, &who, &res, |e| {
            e.subject = res.as_ref().ok().map(|s| format!("{}/{}", s.gallery, s.name));
        });
        self.st.refresh_gallery_metrics();
        res.map(Response::new)
    }

    fn shards_of(&self, e: &Entry) -> Result<Vec<pb::Shard>, Status> {
        let g = self.gallery(&e.name)?;
        let m = g.manifest().map_err(convert::gallery_status)?;
        let problems = g.problems();
        Ok(m.shards
            .iter()
            .map(|s| match problems.iter().find(|p| p.name == s.name) {
                Some(p) => shard_msg(s, "left out", p.error.clone(), &e.name),
                None => shard_msg(s, "serving", String::new(), &e.name),
            })
            .collect())
    }

    fn stats_of(&self, entries: &[Arc<Entry>]) -> pb::StatsResponse {
        let mut r = pb::StatsResponse {
            in_flight: self.st.engine.in_flight() as u32,
            max_in_flight: self.st.engine.max_in_flight() as u32,
            identifications: self.st.identifications.load(Ordering::Relaxed),
            shed: self.st.metrics.shed_total(),
            compactions: self.st.metrics.compactions_total(),
            metrics_address: self.st.metrics_addr.get().map(|a| a.to_string()).unwrap_or_default(),
            ..Default::default()
        };
        for e in entries {
            let info = e.info();
            if let Some(s) = e.serving() {
                r.backend = s.backend();
                for p in s.parts().iter() {
                    r.problems += p.gallery.problems().len() as u32;
                    r.wal_records += p.gallery.wal_records();
                }
            }
            r.templates += info.templates;
            r.subjects += info.subjects;
            r.shards += info.shards;
            r.delta_templates += info.delta_templates;
            r.tombstones += info.tombstones;
            r.wal_bytes += info.wal_bytes;
            r.generation += info.generation;
            r.galleries.push(info);
        }
        r
    }
}

/// A gallery folder named by AddGallery: relative, inside the galleries
/// folder (no `..`, no absolute path, no symbolic link out).
fn gallery_folder(root: &Path, rel: &str) -> Result<std::path::PathBuf, Status> {
    let p = Path::new(rel);
    if rel.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Status::invalid_argument(format!("'{rel}' must be a folder name inside the galleries folder")));
    }
    Ok(root.join(p))
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
                subject = Some(format!("{}/{}", r.gallery, r.subject_id));
                let res = self.scoped(&c, &r.gallery).and_then(|name| self.gallery(&name)).and_then(|g| {
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
                let r = req.into_inner();
                let res = if r.gallery.is_empty() {
                    let mut shards = Vec::new();
                    for e in self.st.catalog.all().iter().filter(|e| c.may(&e.name) && e.serving().is_some()) {
                        shards.extend(self.shards_of(e).unwrap_or_default());
                    }
                    Ok(pb::ListShardsResponse { shards })
                } else {
                    self.scoped(&c, &r.gallery)
                        .and_then(|n| self.st.entry(&n))
                        .and_then(|e| self.shards_of(&e))
                        .map(|shards| pb::ListShardsResponse { shards })
                };
                (res, c.describe())
            }
        };
        self.finish("ListShards", t0, &who, &res, |_| {});
        res.map(Response::new)
    }

    async fn load_shard(&self, req: Request<pb::LoadShardRequest>) -> Result<Response<pb::Shard>, Status> {
        let c = self.who(&req, Role::Admin);
        let r = req.into_inner();
        self.change_shard("LoadShard", c, r.gallery, Box::new(move |g| g.attach_shard(&r.file)), "serving").await
    }

    async fn unload_shard(&self, req: Request<pb::UnloadShardRequest>) -> Result<Response<pb::Shard>, Status> {
        let c = self.who(&req, Role::Admin);
        let r = req.into_inner();
        self.change_shard("UnloadShard", c, r.gallery, Box::new(move |g| g.detach_shard(&r.name)), "unloaded").await
    }

    async fn list_galleries(
        &self,
        req: Request<pb::ListGalleriesRequest>,
    ) -> Result<Response<pb::ListGalleriesResponse>, Status> {
        let t0 = Instant::now();
        let (res, who) = match self.who(&req, Role::Search) {
            Err((s, who)) => (Err(s), who),
            Ok(c) => {
                let galleries = self.st.catalog.all().iter().filter(|e| c.may(&e.name)).map(|e| e.info()).collect();
                (Ok(pb::ListGalleriesResponse { galleries }), c.describe())
            }
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
                (self.add_gallery_now(r).await, c.describe())
            }
        };
        self.finish("AddGallery", t0, &who, &res, |e| e.subject = res.as_ref().ok().map(|g| g.name.clone()));
        res.map(Response::new)
    }

    async fn unload_gallery(
        &self,
        req: Request<pb::UnloadGalleryRequest>,
    ) -> Result<Response<pb::GalleryInfo>, Status> {
        let t0 = Instant::now();
        let (res, who) = match self.who(&req, Role::Admin) {
            Err((s, who)) => (Err(s), who),
            Ok(c) if c.galleries.is_some() => (
                Err(Status::permission_denied("unloading galleries needs an admin token limited to no gallery")),
                c.describe(),
            ),
            Ok(c) => {
                let r = req.into_inner();
                let res = if r.name.is_empty() {
                    Err(Status::invalid_argument("name the gallery to unload"))
                } else {
                    self.st.catalog.unload(&r.name).map(|e| {
                        let mut i = e.info();
                        i.status = "unloaded".into();
                        i
                    })
                };
                if res.is_ok() {
                    let st = Arc::clone(&self.st);
                    let _ = tokio::task::spawn_blocking(move || st.sync_resident()).await;
                    self.st.refresh_gallery_metrics();
                }
                (res, c.describe())
            }
        };
        self.finish("UnloadGallery", t0, &who, &res, |e| e.subject = res.as_ref().ok().map(|g| g.name.clone()));
        res.map(Response::new)
    }

    async fn stats(&self, req: Request<pb::StatsRequest>) -> Result<Response<pb::StatsResponse>, Status> {
        let t0 = Instant::now();
        let (res, who) = match self.who(&req, Role::Search) {
            Err((s, who)) => (Err(s), who),
            Ok(c) => {
                let r = req.into_inner();
                let res = if r.gallery.is_empty() {
                    let all: Vec<Arc<Entry>> = self.st.catalog.all().into_iter().filter(|e| c.may(&e.name)).collect();
                    if all.iter().all(|e| e.serving().is_none()) {
                        // Nothing open yet: the first gallery's reason.
                        self.st.searcher("").map(|_| self.stats_of(&all))
                    } else {
                        Ok(self.stats_of(&all))
                    }
                } else {
                    self.scoped(&c, &r.gallery)
                        .and_then(|n| self.st.searcher(&n).map(|_| n))
                        .and_then(|n| self.st.entry(&n))
                        .map(|e| self.stats_of(&[e]))
                };
                (res, c.describe())
            }
        };
        self.finish("Stats", t0, &who, &res, |_| {});
        res.map(Response::new)
    }
}

impl Services {
    /// Opens (or creates) a gallery folder and serves it by name.
    async fn add_gallery_now(&self, r: pb::AddGalleryRequest) -> Result<pb::GalleryInfo, Status> {
        crate::cluster::map::valid_name(&r.name).map_err(Status::invalid_argument)?;
        let root = self.st.cfg.galleries_root();
        let rel = if r.path.is_empty() { r.name.clone() } else { r.path.clone() };
        let dir = gallery_folder(&root, &rel)?;
        let entry = Entry::new(&r.name, dir.clone(), r.default, r.notify);
        if r.notify && self.st.notifier.is_none() {
            return Err(Status::failed_precondition(
                "this server keeps no notifications ([notifications] dir is not set): it cannot add a notifying gallery",
            ));
        }
        self.st.catalog.add(Arc::clone(&entry))?;
        let st = Arc::clone(&self.st);
        let create = r.create;
        let opened = tokio::task::spawn_blocking(move || super::open_entry(&st, &dir, create))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        match opened {
            Ok(s) => {
                entry.opened(Arc::new(s));
                let st = Arc::clone(&self.st);
                let _ = tokio::task::spawn_blocking(move || st.sync_resident()).await;
                self.st.refresh_gallery_metrics();
                Ok(entry.info())
            }
            Err(e) => {
                let _ = self.st.catalog.unload(&r.name);
                Err(Status::failed_precondition(self.st.scrub(&e)))
            }
        }
    }
}
