//! The router's public face: the same `Identification`, `Gallery` and
//! `Notifications` services as `whorl serve`, so existing clients (the
//! CLI, grpcio, grpcurl) work unchanged against a cluster. Authorisation,
//! the audit trail, metrics, the reply's gallery sections and hit
//! notifications are the server's ([`crate::server`]); the searches and
//! writes go to the nodes through the [`Router`].

mod gallery;
mod identify;

use super::map::GallerySpec;
use super::router::Router;
use crate::server::audit::{Audit, Event};
use crate::server::auth::{Auth, Caller};
use crate::server::config::{Config, Role};
use crate::server::metrics::Metrics;
use crate::server::notifications::Notifier;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tonic::{Code, Request, Status};

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
}
