//! The gRPC server: `whorl serve`.
//!
//! Start-up binds the port at once and answers health checks with
//! NOT_SERVING while the gallery opens in the background (shards verified,
//! indexes loaded or built, log replayed, cylinders made resident on the
//! GPU); then SERVING. Shutdown (SIGTERM, Ctrl-C) turns health to
//! NOT_SERVING, stops accepting connections, lets admitted requests finish
//! within `shutdown_grace_s`, drains the audit trail, and exits. While
//! every search slot is taken, health says NOT_SERVING (back to SERVING
//! below three quarters), so balancers steer new load elsewhere.
//!
//! * [`config`]: the TOML configuration and its checks (it refuses to
//!   listen beyond loopback without authentication); [`limits`]: what one
//!   client may ask.
//! * [`conn`]: accepting connections within limits (count, handshake and
//!   idle timeouts).
//! * [`auth`], [`audit`], [`metrics`]: who may call, what was done, how it went.
//! * [`engine`]: search workers behind admission control (load shedding).
//! * [`convert`]: wire ↔ pipeline, errors → status codes.
//! * [`service`]: the `Identification` and `Gallery` services.
//! * [`writes`]: enrolment, deletion and compaction (RPC and automatic).
//! * [`client`]: connecting to a server (CLI, benchmarks, tests).
//! * [`loadgen`]: the closed-loop load generator of `whorl bench --server`.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod catalog;
pub mod client;
pub mod config;
pub mod conn;
pub mod convert;
pub mod engine;
mod health;
pub mod identify;
pub mod limits;
pub mod loadgen;
pub mod metrics;
pub mod notifications;
pub mod pb;
pub mod sections;
pub mod service;
pub mod writes;

mod running;
mod startup;

pub use startup::start;

use crate::embed::Embedder;
use crate::gallery::{Gallery, GalleryOptions, SyncMode};
use crate::gpu::{GpuOptions, GpuRescorer};
use crate::mcc::Matcher;
use crate::rescore::{AutoRescorer, BackendChoice, CpuRescorer, FallbackHook, Rescorer};
use crate::search::Searcher;
use crate::search::impostor::ImpostorModel;
use config::{BackendSection, Config, SyncChoice};
use service::{Shared, State};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is refused.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A socket, file or thread could not be set up.
    #[error("{0}")]
    Io(String),
    /// The transport failed.
    #[error("gRPC transport: {0}")]
    Transport(String),
}

/// A re-scorer, and the GPU behind it when there is one (for residency).
pub type Backend = (Arc<dyn Rescorer>, Option<Arc<GpuRescorer>>);

/// The re-scoring backend the configuration asks for: `auto` takes a
/// hardware GPU when there is one (never a software one: lavapipe is far
/// slower than the CPU kernel), `gpu` insists on one (software allowed),
/// `cpu` never looks. A GPU lost, or hung past `gpu_poll_timeout_ms`,
/// while serving falls back to the CPU; `on_fallback` hears of each
/// fall-back. `section`'s binding and dispatch caps (tests set them small)
/// apply to the GPU.
pub fn backend(
    choice: BackendChoice,
    matcher: &Matcher,
    section: &BackendSection,
    on_fallback: Option<FallbackHook>,
) -> Result<Backend, ServeError> {
    let cpu = CpuRescorer::new(matcher.clone());
    let budget = section.gpu_resident_mib << 20;
    let defaults = GpuOptions::default();
    let limits = GpuOptions {
        max_binding: section.gpu_max_binding.or(defaults.max_binding),
        max_items: section.gpu_max_items.or(defaults.max_items),
        poll_timeout: Some(Duration::from_millis(section.gpu_poll_timeout_ms)),
        ..defaults
    };
    let gpu = match choice {
        BackendChoice::Cpu => None,
        BackendChoice::Gpu => {
            let opts = GpuOptions { allow_software: true, ..limits };
            Some(GpuRescorer::new(matcher, &opts, budget).map_err(|e| ServeError::Io(format!("backend gpu: {e}")))?)
        }
        BackendChoice::Auto => {
            let opts = GpuOptions { allow_software: false, ..limits };
            match GpuRescorer::new(matcher, &opts, budget) {
                Ok(g) => Some(g),
                Err(e) => {
                    tracing::info!("no hardware GPU ({e}): re-scoring on the CPU");
                    None
                }
            }
        }
    };
    Ok(match gpu {
        None => (Arc::new(cpu), None),
        Some(g) => {
            let g = Arc::new(g);
            tracing::info!("re-scoring on {}", g.describe());
            let mut auto = AutoRescorer::new(Some(Box::new(Arc::clone(&g))), cpu);
            if let Some(hook) = on_fallback {
                auto = auto.with_fallback_hook(hook);
            }
            (Arc::new(auto), Some(g))
        }
    })
}

/// The re-scorer and model every gallery shares (blocking: run it off the
/// async threads); the GPU, when there is one, for shard residency.
fn shared_backend(cfg: &Config, metrics: &Arc<metrics::Metrics>) -> Result<(Shared, Option<Arc<GpuRescorer>>), String> {
    let matcher = Matcher::default();
    let model = ImpostorModel::builtin(crate::shard::mcc_params_crc(matcher.params())).map_err(|e| e.to_string())?;
    let m = Arc::clone(metrics);
    let hook: FallbackHook = Arc::new(move |why| m.gpu_fallback(why.name()));
    let (rescorer, gpu) = backend(cfg.backend.choice, &matcher, &cfg.backend, Some(hook)).map_err(|e| e.to_string())?;
    Ok((Shared { rescorer, model }, gpu))
}

/// The gallery options the configuration asks for.
pub fn gallery_options(cfg: &Config) -> GalleryOptions {
    GalleryOptions {
        verify_on_open: cfg.gallery.verify_on_open,
        build_missing_indexes: cfg.gallery.build_missing_indexes,
        index_kind: cfg.gallery.index,
        sync: match cfg.gallery.sync {
            SyncChoice::PerRecord => SyncMode::PerRecord,
            SyncChoice::Group => SyncMode::Group,
        },
        ..GalleryOptions::default()
    }
}

/// Opens (creating it first when `create` and absent) the gallery in
/// `dir` and makes its searcher (blocking).
pub(crate) fn open_entry(st: &State, dir: &std::path::Path, create: bool) -> Result<Searcher, String> {
    let shared = st.shared.get().ok_or("the re-scoring backend is not ready yet")?;
    let matcher = Matcher::default();
    if create && !dir.join(crate::gallery::manifest::FILE).exists() {
        Gallery::create(dir, &Embedder::default(), &matcher).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let g = Gallery::open(dir, Embedder::default(), matcher, gallery_options(&st.cfg))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Searcher::new(Arc::new(g), Arc::clone(&shared.rescorer), shared.model.clone(), st.cfg.search.clone())
        .map_err(|e| e.to_string())
}

/// The TLS settings of `cfg` (handshakes within `handshake`).
pub fn tls(cfg: &config::TlsSection, handshake: Duration) -> Result<ServerTlsConfig, ServeError> {
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| ServeError::Io(format!("tls: {}: {e}", p.display())));
    let mut t =
        ServerTlsConfig::new().identity(Identity::from_pem(read(&cfg.cert)?, read(&cfg.key)?)).timeout(handshake);
    if let Some(ca) = &cfg.client_ca {
        t = t.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(t)
}

/// A running server.
pub struct Running {
    /// The gRPC address bound.
    pub addr: SocketAddr,
    /// The metrics address bound, if any.
    pub metrics_addr: Option<SocketAddr>,
    /// The shared state (for tests: searcher, engine, metrics).
    pub state: Arc<State>,
    health: tonic_health::server::HealthReporter,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serve: tokio::task::JoinHandle<Result<(), ServeError>>,
    loader: tokio::task::JoinHandle<()>,
    metrics_stop: Option<tokio::sync::oneshot::Sender<()>>,
    audit_thread: Option<std::thread::JoinHandle<()>>,
    watcher: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// The services health reports on ("" is the server as a whole).
pub(crate) const SERVICES: [&str; 4] = ["", "whorl.v1.Identification", "whorl.v1.Gallery", "whorl.v1.Notifications"];
