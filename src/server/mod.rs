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

use crate::embed::Embedder;
use crate::gallery::{Gallery, GalleryOptions, SyncMode};
use crate::gpu::{GpuOptions, GpuRescorer};
use crate::mcc::Matcher;
use crate::rescore::{AutoRescorer, BackendChoice, CpuRescorer, FallbackHook, Rescorer};
use crate::search::Searcher;
use crate::search::impostor::ImpostorModel;
use config::{BackendSection, Config, SyncChoice};
use service::{Services, Shared, State};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
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
    watcher: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// The services health reports on ("" is the server as a whole).
pub(crate) const SERVICES: [&str; 4] = ["", "whorl.v1.Identification", "whorl.v1.Gallery", "whorl.v1.Notifications"];

/// Warns loudly when the configuration serves the network without authentication.
fn warn_if_exposed(cfg: &Config) {
    if !cfg.server.listen.ip().is_loopback() && !cfg.authenticates() {
        tracing::warn!(
            "SERVING {} WITHOUT AUTHENTICATION (server.dangerously_allow_unauthenticated_network): \
             anyone who can reach this port may enrol, delete and read templates",
            cfg.server.listen
        );
        eprintln!(
            "whorl: WARNING: serving {} without authentication: every caller on the network is an admin",
            cfg.server.listen
        );
    }
}

/// Binds, starts serving (NOT_SERVING until the gallery is open) and
/// returns at once.
pub async fn start(cfg: Config) -> Result<Running, ServeError> {
    cfg.check()?;
    warn_if_exposed(&cfg);
    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .map_err(|e| ServeError::Io(format!("binding {}: {e}", cfg.server.listen)))?;
    let addr = listener.local_addr().map_err(|e| ServeError::Io(e.to_string()))?;
    let (audit, audit_thread) = audit::Audit::open(cfg.audit.path.as_deref(), cfg.limits.audit_refusals_per_s)
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
    let conn_limits = conn::ConnLimits {
        max_connections: cfg.limits.max_connections,
        handshake: Duration::from_secs(cfg.limits.handshake_timeout_s),
        idle: Duration::from_secs(cfg.limits.idle_timeout_s),
    };
    let tls_cfg = cfg.tls.as_ref().map(|t| tls(t, conn_limits.handshake)).transpose()?;
    let metrics_listen = cfg.server.metrics_listen;

    // The galleries open in the background; until then searches get
    // UNAVAILABLE and health says NOT_SERVING. The GPU (chosen first) is
    // shared by every gallery's searcher.
    let catalog = catalog::Catalog::new(
        cfg.named_galleries().into_iter().map(|g| catalog::Entry::new(&g.name, g.path, g.default, g.notify)).collect(),
    );
    let notifier = match &cfg.notifications.dir {
        Some(dir) => {
            let retention = Duration::from_secs_f64(cfg.notifications.retention_days * 86_400.0);
            let store = crate::notify::file::FileStore::open(dir, retention)
                .map_err(|e| ServeError::Io(format!("notifications: {e}")))?;
            Some(Arc::new(notifications::Notifier {
                store: Arc::new(store),
                priority_label: cfg.notifications.priority_label.clone(),
                model: crate::search::impostor::BUILTIN_NAME.into(),
            }))
        }
        None => None,
    };
    let st = Arc::new(State {
        auth: auth::Auth::new(&cfg.auth.tokens)?,
        catalog,
        shared: OnceLock::new(),
        engine,
        audit: Mutex::new(audit),
        metrics: Arc::clone(&metrics),
        gpu: OnceLock::new(),
        model: crate::search::impostor::BUILTIN_NAME.into(),
        identifications: AtomicU64::new(0),
        writes: Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_writes_in_flight)),
        notifier: notifier.clone(),
        metrics_addr: OnceLock::new(),
        opened: std::sync::atomic::AtomicBool::new(false),
        cfg,
    });
    let services = Services::new(Arc::clone(&st));

    let reporter = health.clone();
    let st_load = Arc::clone(&st);
    let watcher = Arc::new(Mutex::new(None));
    let watcher2 = Arc::clone(&watcher);
    let loader = tokio::spawn(async move {
        let st2 = Arc::clone(&st_load);
        let m2 = Arc::clone(&st_load.metrics);
        let made = tokio::task::spawn_blocking(move || shared_backend(&st2.cfg, &m2)).await.map_err(|e| e.to_string());
        match made.and_then(|r| r) {
            Ok((shared, gpu)) => {
                st_load.metrics.set_backend(&shared.rescorer.backend().to_string());
                if let Some(g) = gpu {
                    let _ = st_load.gpu.set(g);
                }
                let _ = st_load.shared.set(shared);
            }
            Err(e) => {
                tracing::error!("the re-scoring backend failed: {e}; health stays NOT_SERVING");
                for g in st_load.catalog.all() {
                    g.failed(e.clone());
                }
                return;
            }
        }
        let mut any = false;
        for entry in st_load.catalog.all() {
            let (st2, dir) = (Arc::clone(&st_load), entry.path.clone());
            match tokio::task::spawn_blocking(move || open_entry(&st2, &dir, false)).await {
                Ok(Ok(s)) => {
                    tracing::info!(
                        "gallery {} ({}) open: {} templates, backend {}",
                        entry.name,
                        entry.path.display(),
                        s.views().iter().map(|v| v.snap.templates()).sum::<usize>(),
                        s.backend()
                    );
                    entry.opened(Arc::new(s));
                    any = true;
                }
                Ok(Err(e)) => {
                    tracing::error!("gallery {} failed to open: {e}", entry.name);
                    entry.failed(e);
                }
                Err(e) => entry.failed(format!("the gallery loader failed: {e}")),
            }
        }
        if !any {
            tracing::error!("no gallery opened; health stays NOT_SERVING");
            return;
        }
        let st2 = Arc::clone(&st_load);
        let _ = tokio::task::spawn_blocking(move || st2.sync_resident()).await;
        st_load.refresh_gallery_metrics();
        for s in SERVICES {
            reporter.set_service_status(s, ServingStatus::Serving).await;
        }
        st_load.opened.store(true, std::sync::atomic::Ordering::Release);
        if let Ok(mut w) = watcher2.lock() {
            *w = Some(tokio::spawn(health::watch_saturation(Arc::clone(&st_load), reporter)));
        }
        // A long log replayed at open: fold it now rather than at the next restart.
        let svc = Services::new(Arc::clone(&st_load));
        for e in st_load.catalog.all() {
            svc.maybe_compact(&e);
        }
    });
    if let Some(n) = notifier.clone() {
        let m = Arc::clone(&st.metrics);
        tokio::spawn(async move {
            loop {
                n.housekeep(&m).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }

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
    let notify_svc = notifier.map(|n| {
        let (cat_st, audit_st) = (Arc::clone(&st), Arc::clone(&st));
        pb::notifications_server::NotificationsServer::new(notifications::NotificationService::new(
            n,
            Arc::new(st.auth.clone()),
            Arc::new(move || cat_st.catalog.all().iter().filter(|e| e.notify).map(|e| e.name.clone()).collect()),
            Arc::new(move |e| audit_st.audit(e)),
            Arc::clone(&st.metrics),
        ))
    });

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
        .add_service(gallery)
        .add_optional_service(notify_svc);
    let incoming = conn::incoming(listener, conn_limits, Arc::clone(&st.metrics));
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
            let _ = st.metrics_addr.set(bound);
            (Some(bound), Some(tx))
        }
        None => (None, None),
    };
    tracing::info!("whorl serving gRPC on {addr}");
    Ok(Running {
        addr,
        metrics_addr,
        state: st,
        health,
        stop: Some(stop),
        serve,
        loader,
        metrics_stop,
        audit_thread,
        watcher,
    })
}

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
