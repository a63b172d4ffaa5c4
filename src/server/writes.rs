//! Changing the gallery over gRPC: Enroll, Delete and Compact, and the
//! automatic compaction policy.
//!
//! * **Admission.** Writes have their own limit
//!   (`limits.max_writes_in_flight`; more are shed with RESOURCE_EXHAUSTED
//!   before anything is parsed) and run on blocking threads, never on the
//!   search workers: a compaction holds writes back while it runs, and
//!   searches must not queue behind them.
//! * **Deadlines and callers that leave.** The work checks the call's
//!   [`Cancel`] while it parses, builds cylinders and waits for the log; a
//!   call that stops there changed nothing (DEADLINE_EXCEEDED or
//!   CANCELLED). Once the record is logged the change stands and the call
//!   waits for it (a few milliseconds: fsyncs), so its answer is the truth.
//! * **Audit before acknowledgement.** A logged change's audit line is
//!   written and fsynced before the reply ([`super::audit::Audit::record_durable`]),
//!   also when the caller has gone.
//! * **Compaction by the server.** The gallery is locked by the serving
//!   process, so it is compacted here: the `Compact` RPC, and on its own
//!   when the log passes `[gallery] compact_log_bytes` or
//!   `compact_log_records` (checked after every write and once the gallery
//!   opens). One compaction at a time.

use super::audit::Event;
use super::auth::Caller;
use super::catalog::Entry;
use super::config::Role;
use super::convert;
use super::pb;
use super::service::{Services, State, deadline_of};
use crate::cancel::Cancel;
use crate::gallery::{MAX_TEMPLATES, MAX_TEXT, WriteMode};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tonic::{Code, Request, Response, Status};

/// Clears a gallery's `compacting` flag when its compaction ends.
struct Compacting(Arc<Entry>);

impl Drop for Compacting {
    fn drop(&mut self) {
        self.0.compacting.store(false, Ordering::SeqCst);
    }
}

impl State {
    /// Records an audit event and waits until it is on disk (blocking).
    pub fn audit_durable(&self, e: Event) -> Result<(), String> {
        let audit = self.audit.lock().map(|a| a.clone()).map_err(|_| "audit lock poisoned".to_string())?;
        audit.record_durable(e)
    }
}

impl Services {
    /// A write slot, or RESOURCE_EXHAUSTED.
    fn admit_write(&self, method: &str) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        Arc::clone(&self.st.writes).try_acquire_owned().map_err(|_| {
            self.st.metrics.shed(method);
            Status::resource_exhausted(format!(
                "server saturated: {} enrolments and deletions in flight; retry with backoff",
                self.st.cfg.limits.max_writes_in_flight
            ))
        })
    }

    /// Runs a write on a blocking thread and waits for it; if the caller
    /// goes away, `cancel` is set (the job stops unless it already logged).
    async fn run_write<R: Send + 'static>(
        &self,
        cancel: &Cancel,
        job: impl FnOnce() -> Result<R, Status> + Send + 'static,
    ) -> Result<R, Status> {
        let gone = cancel.on_drop();
        let out = tokio::task::spawn_blocking(job).await;
        gone.disarm();
        out.map_err(|e| Status::internal(format!("gallery task failed: {e}")))?
    }

    /// `Enroll`.
    pub(super) async fn enroll_call(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let t0 = Instant::now();
        let cancel = Cancel::until(deadline_of(req.metadata(), t0));
        let (c, r) = match self.who(&req, Role::Admin) {
            Ok(c) => (c, req.into_inner()),
            Err((s, who)) => {
                self.finish::<()>("Enroll", t0, &who, &Err(s.clone()), |_| {});
                return Err(s);
            }
        };
        let caller = c.describe();
        let (subject, gallery) = (r.subject_id.clone(), r.gallery.clone());
        let res = match self.scoped(&c, &gallery) {
            Ok(name) => self.enroll_one(r, name, caller.clone(), &cancel).await,
            Err(e) => Err(e),
        };
        self.written("Enroll", t0, &caller, subject, &gallery, &res);
        res.map(Response::new)
    }

    /// The gallery a write names, if the caller may write to it.
    pub(super) fn scoped(&self, c: &Caller, gallery: &str) -> Result<String, Status> {
        let e = self.st.entry(gallery)?;
        c.check_gallery(&e.name)?;
        Ok(e.name.clone())
    }

    async fn enroll_one(
        &self,
        r: pb::EnrollRequest,
        gallery: String,
        caller: String,
        cancel: &Cancel,
    ) -> Result<pb::EnrollResponse, Status> {
        let g = self.gallery(&gallery)?;
        if r.subject_id.is_empty() || r.subject_id.len() > MAX_TEXT {
            return Err(Status::invalid_argument(format!("subject_id must be 1-{MAX_TEXT} bytes")));
        }
        convert::check_labels(&r.labels, &self.st.cfg.limits, "labels")?;
        convert::check_records(&r.templates, MAX_TEMPLATES)?;
        let permit = self.admit_write("Enroll")?;
        let (st, job_cancel) = (Arc::clone(&self.st), cancel.clone());
        self.run_write(cancel, move || {
            let _permit = permit;
            job_cancel.check().map_err(|e| st.gallery_status(crate::gallery::GalleryError::Stopped(e)))?;
            let p = convert::parse_templates(&r.templates, MAX_TEMPLATES, &st.cfg.limits)?;
            let n = p.fingers.len() as u32;
            let mode = if r.replace { WriteMode::Replace } else { WriteMode::Create };
            let labels = r.labels.into_iter().collect();
            let sequence = g
                .enroll_with(&r.subject_id, labels, p.fingers, mode, &job_cancel)
                .map_err(|e| st.gallery_status(e))?;
            // Logged: the enrolment stands. Its audit line goes to disk before the reply.
            let mut e = Event::now(caller, "Enroll", Code::Ok);
            e.subject = Some(r.subject_id.clone());
            e.gallery = Some(gallery.to_string());
            e.probe_sha256 = Some(p.sha256);
            st.audit_durable(e).map_err(|m| {
                Status::internal(format!(
                    "enrolled at log sequence {sequence}, but its audit line could not be written ({m}); the enrolment stands"
                ))
            })?;
            Ok(pb::EnrollResponse { sequence, templates: n })
        })
        .await
    }

    /// `Delete`.
    pub(super) async fn delete_call(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let t0 = Instant::now();
        let cancel = Cancel::until(deadline_of(req.metadata(), t0));
        let (c, r) = match self.who(&req, Role::Admin) {
            Ok(c) => (c, req.into_inner()),
            Err((s, who)) => {
                self.finish::<()>("Delete", t0, &who, &Err(s.clone()), |_| {});
                return Err(s);
            }
        };
        let caller = c.describe();
        let (id, gallery) = (r.subject_id, r.gallery);
        let res = match self.scoped(&c, &gallery) {
            Ok(name) => self.delete_one(id.clone(), name, caller.clone(), &cancel).await,
            Err(e) => Err(e),
        };
        self.written("Delete", t0, &caller, id, &gallery, &res);
        res.map(Response::new)
    }

    async fn delete_one(
        &self,
        id: String,
        gallery: String,
        caller: String,
        cancel: &Cancel,
    ) -> Result<pb::DeleteResponse, Status> {
        let g = self.gallery(&gallery)?;
        let permit = self.admit_write("Delete")?;
        let (st, job_cancel) = (Arc::clone(&self.st), cancel.clone());
        self.run_write(cancel, move || {
            let _permit = permit;
            let sequence = g.delete_with(&id, &job_cancel).map_err(|e| st.gallery_status(e))?;
            let mut e = Event::now(caller, "Delete", Code::Ok);
            e.subject = Some(id.to_string());
            e.gallery = Some(gallery.to_string());
            st.audit_durable(e).map_err(|m| {
                Status::internal(format!(
                    "deleted at log sequence {sequence}, but its audit line could not be written ({m}); the deletion stands"
                ))
            })?;
            Ok(pb::DeleteResponse { sequence })
        })
        .await
    }

    /// After a write: metrics; a failure is audited here (a success was
    /// audited durably by the write itself); compaction if the log is long.
    fn written<T>(
        &self,
        method: &str,
        t0: Instant,
        caller: &str,
        subject: String,
        gallery: &str,
        res: &Result<T, Status>,
    ) {
        match res {
            Ok(_) => self.count(method, t0, res),
            Err(_) => self.finish(method, t0, caller, res, |e| {
                e.subject = Some(subject.to_string());
                e.gallery = Some(gallery.to_string());
            }),
        }
        self.st.refresh_gallery_metrics();
        if let Ok(e) = self.st.entry(gallery) {
            self.maybe_compact(&e);
        }
    }

    /// `Compact`.
    pub(super) async fn compact_call(
        &self,
        req: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactResponse>, Status> {
        let t0 = Instant::now();
        let (res, who) = match self.who(&req, Role::Admin) {
            Err((s, who)) => (Err(s), who),
            Ok(c) => {
                let r = req.into_inner();
                let res = match self.scoped(&c, &r.gallery).and_then(|n| self.st.entry(&n)) {
                    Ok(e) => self.compact_now(&e, "rpc").await,
                    Err(e) => Err(e),
                };
                (res, c.describe())
            }
        };
        self.finish("Compact", t0, &who, &res, |_| {});
        res.map(Response::new)
    }

    /// Compacts now (ABORTED if a compaction runs already); `trigger`
    /// labels the metric.
    pub async fn compact_now(&self, entry: &Arc<Entry>, trigger: &'static str) -> Result<pb::CompactResponse, Status> {
        let g = self.gallery(&entry.name)?;
        if entry.compacting.swap(true, Ordering::SeqCst) {
            return Err(Status::aborted(format!("a compaction of gallery '{}' is already running", entry.name)));
        }
        let running = Compacting(Arc::clone(entry));
        let before = g.wal_bytes();
        let t = Instant::now();
        tracing::info!("compaction of {} ({trigger}): log of {before} bytes, {} records", entry.name, g.wal_records());
        let g2 = Arc::clone(&g);
        let report = tokio::task::spawn_blocking(move || {
            let _running = running;
            g2.compact()
        })
        .await
        .map_err(|e| Status::internal(format!("compaction task failed: {e}")))?
        .map_err(|e| self.st.gallery_status(e))?;
        let took = t.elapsed();
        let st = Arc::clone(&self.st);
        let _ = tokio::task::spawn_blocking(move || st.sync_resident()).await;
        self.st.metrics.compacted(trigger);
        self.st.refresh_gallery_metrics();
        tracing::info!(
            "compaction ({trigger}) done in {:.1} s: {} folded, {} removed; log {before} -> {} bytes",
            took.as_secs_f64(),
            report.folded_templates,
            report.removed_templates,
            g.wal_bytes()
        );
        Ok(pb::CompactResponse {
            rewritten: report.rewritten,
            added: report.added,
            removed_templates: report.removed_templates,
            folded_templates: report.folded_templates,
            applied_seq: report.applied_seq,
            wal_bytes_before: before,
            wal_bytes_after: g.wal_bytes(),
            took: Some(prost_types::Duration { seconds: took.as_secs() as i64, nanos: took.subsec_nanos() as i32 }),
        })
    }

    /// Starts a compaction in the background when the log has passed the
    /// configured size or record count and none is running.
    pub fn maybe_compact(&self, entry: &Arc<Entry>) {
        let Ok(g) = self.gallery(&entry.name) else { return };
        let c = &self.st.cfg.gallery;
        let over = (c.compact_log_bytes > 0 && g.wal_bytes() >= c.compact_log_bytes)
            || (c.compact_log_records > 0 && g.wal_records() >= c.compact_log_records);
        if !over || entry.compacting.load(Ordering::SeqCst) {
            return;
        }
        let (me, entry) = (self.clone(), Arc::clone(entry));
        tokio::spawn(async move {
            if let Err(e) = me.compact_now(&entry, "auto").await
                && e.code() != Code::Aborted
            {
                tracing::error!("automatic compaction failed: {}", e.message());
            }
        });
    }
}
