//! `whorl serve`: serve a gallery until SIGTERM or Ctrl-C.

use super::progress::Progress;
use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use whorl::rescore::BackendChoice;
use whorl::server::config::Config;

/// A runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

#[derive(Args)]
pub struct ServeArgs {
    /// TOML configuration file (every key and its default: README,
    /// "Serving"); flags and environment variables override it.
    #[arg(long, env = "WHORL_CONFIG")]
    config: Option<PathBuf>,
    /// Gallery folder.
    #[arg(long, env = "WHORL_GALLERY")]
    gallery: Option<PathBuf>,
    /// gRPC address, e.g. 0.0.0.0:50051.
    #[arg(long, env = "WHORL_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Prometheus `/metrics` address.
    #[arg(long, env = "WHORL_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Re-scoring backend: cpu, gpu or auto.
    #[arg(long, env = "WHORL_BACKEND")]
    backend: Option<BackendChoice>,
    /// Search workers (searches running at once); 0: one per core.
    #[arg(long)]
    workers: Option<usize>,
    /// Threads each search may use.
    #[arg(long)]
    threads_per_search: Option<usize>,
    /// Searches admitted at once (running or queued); more are shed.
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Audit trail (JSON lines).
    #[arg(long, env = "WHORL_AUDIT")]
    audit: Option<PathBuf>,
    /// Serve beyond loopback without authentication: every caller on the
    /// network may enrol, delete and read templates. Refused without this.
    #[arg(long)]
    dangerously_allow_unauthenticated_network: bool,
}

impl ServeArgs {
    fn config(self) -> Result<Config> {
        let mut c = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        if let Some(g) = self.gallery {
            c.gallery.path = g;
        }
        if let Some(l) = self.listen {
            c.server.listen = l;
        }
        if self.metrics_listen.is_some() {
            c.server.metrics_listen = self.metrics_listen;
        }
        if let Some(b) = self.backend {
            c.backend.choice = b;
        }
        if let Some(w) = self.workers {
            c.server.workers = w;
        }
        if let Some(t) = self.threads_per_search {
            c.server.threads_per_search = t;
        }
        if let Some(m) = self.max_in_flight {
            c.server.max_in_flight = m;
        }
        if self.audit.is_some() {
            c.audit.path = self.audit;
        }
        if self.dangerously_allow_unauthenticated_network {
            c.server.dangerously_allow_unauthenticated_network = true;
        }
        c.check()?;
        Ok(c)
    }
}

/// `whorl serve` with a `[cluster]` section: a cluster node.
fn serve_node(cfg: Config) -> Result<()> {
    let grace = Duration::from_secs(cfg.server.shutdown_grace_s);
    runtime()?.block_on(async move {
        let running = whorl::cluster::node::run::start(cfg).await?;
        eprintln!(
            "whorl: cluster node {} serving its node service on {}{}; SIGTERM or Ctrl-C stops",
            running.node.id(),
            running.addr,
            running.metrics_addr.map(|m| format!(", metrics on http://{m}/metrics")).unwrap_or_default()
        );
        stop_signal().await;
        eprintln!("whorl: stopping (resigning primaries, draining)");
        running.shutdown(grace).await?;
        Ok(())
    })
}

/// `whorl route`: the public API over a cluster.
pub fn route(a: ServeArgs) -> Result<()> {
    let cfg = a.config()?;
    if cfg.router.is_none() {
        bail!("whorl route needs a [router] section in its configuration (see whorl::cluster::config)");
    }
    let grace = Duration::from_secs(cfg.server.shutdown_grace_s);
    runtime()?.block_on(async move {
        let running = whorl::cluster::route::start(cfg).await?;
        eprintln!(
            "whorl: routing gRPC on {}{}; SIGTERM or Ctrl-C stops",
            running.addr,
            running.metrics_addr.map(|m| format!(", metrics on http://{m}/metrics")).unwrap_or_default()
        );
        stop_signal().await;
        running.shutdown(grace).await?;
        Ok(())
    })
}

/// Resolves when SIGTERM or Ctrl-C arrives.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let cfg = a.config()?;
    if cfg.cluster.is_some() {
        return serve_node(cfg);
    }
    let names: Vec<String> = cfg.named_galleries().iter().map(|g| g.path.display().to_string()).collect();
    runtime()?.block_on(async move {
        let running = whorl::server::start(cfg).await?;
        // The port answers at once (health NOT_SERVING); the galleries open
        // behind it. One line says when it serves. A gallery that will not
        // open (another process holds its lock, say) stops the server when
        // no gallery opens.
        let opening = Progress::spinner(&format!("opening {}", names.join(", ")));
        let opened = tokio::select! {
            r = running.wait_ready(Duration::from_secs(u64::MAX / 4)) => Some(r),
            _ = stop_signal() => None,
        };
        drop(opening);
        match opened {
            None => {}
            Some(Err(e)) => {
                let _ = running.shutdown().await;
                return Err(anyhow!("the gallery did not open: {e}"));
            }
            Some(Ok(())) => {
                eprintln!("whorl: {}; SIGTERM or Ctrl-C stops", running.ready_line().unwrap_or_default());
                stop_signal().await;
            }
        }
        eprintln!("whorl: stopping: draining requests");
        running.shutdown().await?;
        eprintln!("whorl: stopped");
        Ok(())
    })
}
