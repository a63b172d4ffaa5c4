//! The gRPC server: `whorl serve`.
//!
//! Start-up binds the port at once and answers health checks with
//! NOT_SERVING while the gallery opens in the background (shards verified,
//! indexes loaded or built, log replayed, cylinders made resident on the
//! GPU); then SERVING. Shutdown (SIGTERM, Ctrl-C) turns health to
//! NOT_SERVING, stops accepting connections, lets admitted requests finish
//! within `shutdown_grace_s`, drains the audit trail, and exits.
//!
//! * [`config`]: the TOML configuration and its checks.
//! * [`auth`], [`audit`], [`metrics`]: who may call, what was done, how it went.
//! * [`engine`]: search workers behind admission control (load shedding).
//! * [`convert`]: wire ↔ pipeline, errors → status codes.
//! * [`service`]: the `Identification` and `Gallery` services.
//! * [`client`]: connecting to a server (CLI, benchmarks, tests).
//! * [`loadgen`]: the closed-loop load generator of `whorl bench --server`.

pub mod audit;
pub mod auth;
pub mod client;
pub mod config;
pub mod convert;
pub mod engine;
pub mod loadgen;
pub mod metrics;
pub mod pb;
pub mod service;

use crate::embed::Embedder;
use crate::gallery::{Gallery, GalleryOptions, SyncMode};
use crate::gpu::{GpuOptions, GpuRescorer};
use crate::mcc::Matcher;
use crate::rescore::{AutoRescorer, BackendChoice, CpuRescorer, Rescorer};
use crate::search::Searcher;
use crate::search::impostor::ImpostorModel;
use config::{BackendSection, Config, SyncChoice};
use service::{Services, State};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic_health::ServingStatus;

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
/// `cpu` never looks. A GPU lost while serving falls back to the CPU.
pub fn backend(choice: BackendChoice, matcher: &Matcher, section: &BackendSection) -> Result<Backend, ServeError> {
    let cpu = CpuRescorer::new(matcher.clone());
    let budget = section.gpu_resident_mib << 20;
    let defaults = GpuOptions::default();
    let limits = GpuOptions {
        max_binding: section.gpu_max_binding.or(defaults.max_binding),
        max_items: section.gpu_max_items.or(defaults.max_items),
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
            (Arc::new(AutoRescorer::new(Some(Box::new(Arc::clone(&g))), cpu)), Some(g))
        }
    })
}

/// Opens the gallery and makes the searcher (blocking: run it off the async threads).
fn open_searcher(cfg: &Config, gpu_slot: &mut Option<Arc<GpuRescorer>>) -> Result<Searcher, String> {
    let matcher = Matcher::default();
    let model = ImpostorModel::builtin(crate::shard::mcc_params_crc(matcher.params())).map_err(|e| e.to_string())?;
    let (rescorer, gpu) = backend(cfg.backend.choice, &matcher, &cfg.backend).map_err(|e| e.to_string())?;
    *gpu_slot = gpu;
    let opts = GalleryOptions {
        verify_on_open: cfg.gallery.verify_on_open,
        build_missing_indexes: cfg.gallery.build_missing_indexes,
        sync: match cfg.gallery.sync {
            SyncChoice::PerRecord => SyncMode::PerRecord,
            SyncChoice::Group => SyncMode::Group,
        },
        ..GalleryOptions::default()
    };
    let path = &cfg.gallery.path;
    let g = Gallery::open(path, Embedder::default(), matcher, opts).map_err(|e| format!("{}: {e}", path.display()))?;
    Searcher::new(Arc::new(g), rescorer, model, cfg.search.clone()).map_err(|e| e.to_string())
}

fn tls(cfg: &config::TlsSection) -> Result<ServerTlsConfig, ServeError> {
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| ServeError::Io(format!("tls: {}: {e}", p.display())));
    let mut t = ServerTlsConfig::new().identity(Identity::from_pem(read(&cfg.cert)?, read(&cfg.key)?));
    if let Some(ca) = &cfg.client_ca {
        t = t.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(t)
}

/// Rewrites the transport's "message too large" (OUT_OF_RANGE, sent as a
/// trailers-only response) to RESOURCE_EXHAUSTED, the code clients retry
/// differently.
fn too_large_is_exhausted<B>(mut r: axum::http::Response<B>) -> axum::http::Response<B> {
    let h = r.headers_mut();
    let is_11 = h.get("grpc-status").is_some_and(|v| v.as_bytes() == b"11");
    let too_large = h.get("grpc-message").is_some_and(|v| {
        let m = String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase();
        m.contains("too%20large") || m.contains("too large")
    });
    if is_11 && too_large {
        h.insert("grpc-status", axum::http::HeaderValue::from_static("8"));
    }
    r
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
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("addr", &self.addr).finish_non_exhaustive()
    }
}

const SERVICES: [&str; 3] = ["", "whorl.v1.Identification", "whorl.v1.Gallery"];

/// Binds, starts serving (NOT_SERVING until the gallery is open) and
/// returns at once.
pub async fn start(cfg: Config) -> Result<Running, ServeError> {
    cfg.check()?;
    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .map_err(|e| ServeError::Io(format!("binding {}: {e}", cfg.server.listen)))?;
    let addr = listener.local_addr().map_err(|e| ServeError::Io(e.to_string()))?;
    let (audit, audit_thread) = audit::Audit::open(cfg.audit.path.as_deref())
        .map_err(|e| ServeError::Io(format!("audit log {:?}: {e}", cfg.audit.path)))?;
    let workers = cfg.workers();
    let engine = engine::Engine::new(workers, cfg.server.threads_per_search, cfg.server.max_in_flight)
        .map_err(|e| ServeError::Io(e.to_string()))?;
    let metrics = Arc::new(metrics::Metrics::new());
    let (health, health_service) = tonic_health::server::health_reporter();
    for s in SERVICES {
        health.set_service_status(s, ServingStatus::NotServing).await;
    }
    let max_msg = cfg.server.max_message_bytes;
    let tls_cfg = cfg.tls.as_ref().map(tls).transpose()?;
    let metrics_listen = cfg.server.metrics_listen;

    // The gallery opens in the background; until then searches get
    // UNAVAILABLE and health says NOT_SERVING. The GPU (chosen as the
    // gallery opens) is part of the state, so the state is made after it.
    let cfg2 = cfg.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let mut gpu = None;
        let s = open_searcher(&cfg2, &mut gpu);
        (s, gpu)
    });
    let st = Arc::new(State {
        auth: auth::Auth::new(&cfg.auth.tokens)?,
        cfg,
        searcher: OnceLock::new(),
        load_error: Mutex::new(None),
        engine,
        audit: Mutex::new(audit),
        metrics: Arc::clone(&metrics),
        gpu: OnceLock::new(),
        model: "impostor-mcc-v2".into(),
        identifications: AtomicU64::new(0),
    });
    let services = Services::new(Arc::clone(&st));

    let reporter = health.clone();
    let st_load = Arc::clone(&st);
    let loader = tokio::spawn(async move {
        match opened.await {
            Ok((Ok(searcher), gpu)) => {
                let s = Arc::new(searcher);
                tracing::info!(
                    "gallery {} open: {} templates, backend {}",
                    st_load.cfg.gallery.path.display(),
                    s.gallery().snapshot().templates(),
                    s.backend()
                );
                st_load.metrics.set_backend(&s.backend());
                if let Some(g) = gpu {
                    let _ = st_load.gpu.set(g);
                }
                let _ = st_load.searcher.set(s);
                let st2 = Arc::clone(&st_load);
                let _ = tokio::task::spawn_blocking(move || st2.sync_resident()).await;
                st_load.refresh_gallery_metrics();
                for s in SERVICES {
                    reporter.set_service_status(s, ServingStatus::Serving).await;
                }
            }
            Ok((Err(e), _)) => {
                tracing::error!("the gallery failed to open: {e}; health stays NOT_SERVING");
                if let Ok(mut l) = st_load.load_error.lock() {
                    *l = Some(e);
                }
            }
            Err(e) => tracing::error!("the gallery loader failed: {e}"),
        }
    });

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Transport(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Transport(e.to_string()))?;
    let ident = pb::identification_server::IdentificationServer::new(services.clone())
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);
    let gallery = pb::gallery_server::GalleryServer::new(services)
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);

    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = tls_cfg {
        builder = builder.tls_config(t).map_err(|e| ServeError::Transport(e.to_string()))?;
    }
    let router = builder
        .layer(tower::util::MapResponseLayer::new(too_large_is_exhausted))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ident)
        .add_service(gallery);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
            .map_err(|e| ServeError::Transport(e.to_string()))
    });

    let (metrics_addr, metrics_stop) = match metrics_listen {
        Some(a) => {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let (bound, _) = metrics::serve(metrics, a, async {
                let _ = rx.await;
            })
            .await
            .map_err(|e| ServeError::Io(format!("metrics listener {a}: {e}")))?;
            (Some(bound), Some(tx))
        }
        None => (None, None),
    };
    tracing::info!("whorl serving gRPC on {addr}");
    Ok(Running { addr, metrics_addr, state: st, health, stop: Some(stop), serve, loader, metrics_stop, audit_thread })
}

impl Running {
    /// Whether the gallery is open and searches are served.
    pub fn ready(&self) -> bool {
        self.state.searcher.get().is_some()
    }

    /// Waits until the gallery is open (or failed to open).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let t0 = std::time::Instant::now();
        loop {
            if self.ready() {
                return Ok(());
            }
            if let Some(e) = self.state.load_error.lock().ok().and_then(|e| e.clone()) {
                return Err(e);
            }
            if t0.elapsed() > timeout {
                return Err(format!("the gallery did not open within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Graceful shutdown: NOT_SERVING, stop accepting, let admitted
    /// requests finish (up to `shutdown_grace_s`), drain the audit trail.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
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
        served
    }
}
