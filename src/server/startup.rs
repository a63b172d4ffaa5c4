//! Starting the server: binding, the background opening of the galleries,
//! the services and their transport (TLS, message limits, health,
//! reflection), and the metrics listener.

use super::config::Config;
use super::service::{Services, State};
use super::{
    Running, SERVICES, ServeError, audit, auth, catalog, conn, engine, health, metrics, notifications, open_entry, pb,
    shared_backend, tls,
};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tonic_health::ServingStatus;

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
