//! A running server: readiness, the line `whorl serve` prints once its
//! galleries are open, and graceful shutdown.

use super::{Running, SERVICES, ServeError, config};
use std::sync::Arc;
use std::time::Duration;
use tonic_health::ServingStatus;

impl Running {
    /// Whether every gallery is settled (open or failed), one serves, and
    /// health says SERVING.
    pub fn ready(&self) -> bool {
        let all = self.state.catalog.all();
        all.iter().all(|e| e.settled())
            && all.iter().any(|e| e.serving().is_some())
            && self.state.opened.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until every gallery is settled and one serves (or all failed).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let t0 = std::time::Instant::now();
        loop {
            if self.ready() {
                return Ok(());
            }
            let all = self.state.catalog.all();
            if all.iter().all(|e| e.settled())
                && let Some(e) = all.first().and_then(|e| e.searcher().err())
            {
                return Err(e.message().to_string());
            }
            if t0.elapsed() > timeout {
                return Err(format!("the gallery did not open within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The one line `whorl serve` prints once the gallery is open: address,
    /// gallery size, backend, TLS and authentication mode, metrics.
    /// `None` until then.
    pub fn ready_line(&self) -> Option<String> {
        use crate::table::count;
        if !self.ready() {
            return None;
        }
        let cfg = &self.state.cfg;
        let tls = match &cfg.tls {
            None => "TLS off",
            Some(t) if t.client_ca.is_some() => "TLS with client certificates",
            Some(_) => "TLS",
        };
        let tokens = &cfg.auth.tokens;
        let auth = if tokens.is_empty() {
            "auth off (no tokens: any caller may search and administer)".to_string()
        } else {
            let admin = tokens.iter().filter(|t| t.role == config::Role::Admin).count();
            let notify = tokens.iter().filter(|t| t.role == config::Role::Notify).count();
            format!("auth by bearer token ({} search, {admin} admin, {notify} notify)", tokens.len() - admin - notify)
        };
        let mut galleries = Vec::new();
        let mut backend = String::new();
        for e in self.state.catalog.all() {
            match e.serving() {
                Some(s) => {
                    let views = s.views();
                    let shards: usize = views.iter().map(|v| v.snap.shards.len()).sum();
                    let left_out: usize = s.parts().iter().map(|p| p.gallery.problems().len()).sum();
                    backend = s.backend();
                    galleries.push(format!(
                        "{}{}{}: {} subjects, {} templates in {shards} shard{}{}",
                        e.name,
                        if e.default { " (default)" } else { "" },
                        if e.notify { " (notifies)" } else { "" },
                        count(views.iter().map(|v| v.subjects).sum::<u64>()),
                        count(views.iter().map(|v| v.snap.templates() as u64).sum::<u64>()),
                        if shards == 1 { "" } else { "s" },
                        if left_out > 0 {
                            format!(" ({left_out} left out as damaged: see `whorl shards`)")
                        } else {
                            String::new()
                        },
                    ));
                }
                None => galleries.push(format!("{}: {}", e.name, e.status().1)),
            }
        }
        Some(format!(
            "ready on {}: {}; backend {backend}; {tls}; {auth}{}",
            self.addr,
            galleries.join("; "),
            self.metrics_addr.map(|m| format!("; metrics http://{m}/metrics")).unwrap_or_default()
        ))
    }

    /// Graceful shutdown: NOT_SERVING, stop accepting, let admitted
    /// requests finish (up to `shutdown_grace_s`), drain the audit trail,
    /// close the gallery (releasing its lock) unless a caller still holds
    /// [`Running::state`].
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        self.loader.abort();
        if let Some(w) = self.watcher.lock().ok().and_then(|mut w| w.take()) {
            w.abort();
        }
        for s in SERVICES {
            self.health.set_service_status(s, ServingStatus::NotServing).await;
        }
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let grace = Duration::from_secs(self.state.cfg.server.shutdown_grace_s);
        let served = match tokio::time::timeout(grace, &mut self.serve).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(ServeError::Transport(e.to_string())),
            Err(_) => {
                tracing::warn!("requests still running after the {grace:?} grace period: closing");
                self.serve.abort();
                Ok(())
            }
        };
        self.loader.abort();
        if let Some(s) = self.metrics_stop.take() {
            let _ = s.send(());
        }
        if let Ok(mut a) = self.state.audit.lock() {
            a.close();
        }
        if let Some(t) = self.audit_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        // Close the gallery (and release its lock) before returning, once
        // the last connection task lets go of the state (bounded wait).
        let Running { state, .. } = self;
        let t0 = std::time::Instant::now();
        while Arc::strong_count(&state) > 1 && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(state);
        served
    }
}
