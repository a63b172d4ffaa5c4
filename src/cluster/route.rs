//! Running a router: `whorl route`.
//!
//! The public services over the cluster on the gRPC port, with the
//! server's connection limits, TLS and tokens; health NOT_SERVING until
//! the map is read and the nodes polled once (the `liveness` service is
//! SERVING for as long as the process runs); Prometheus metrics, the
//! cluster's among them (nodes up, groups without a ready replica,
//! hedges, retries, partial answers).

use super::config::read_token;
use super::front::{Front, FrontServices};
use super::node::run::map_source;
use super::peer::Peers;
use super::router::{Router, RouterOptions};
use crate::mcc::Matcher;
use crate::notify::{etcd::EtcdStore, file::FileStore};
use crate::search::impostor::ImpostorModel;
use crate::server::audit::Audit;
use crate::server::config::Config;
use crate::server::metrics::Metrics;
use crate::server::notifications::{NotificationService, Notifier};
use crate::server::{ServeError, conn, pb};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tonic_health::ServingStatus;

/// A running router.
pub struct RunningRouter {
    /// The gRPC address bound.
    pub addr: SocketAddr,
    /// The metrics address bound.
    pub metrics_addr: Option<SocketAddr>,
    /// The router's state.
    pub front: Arc<Front>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serve: tokio::task::JoinHandle<Result<(), ServeError>>,
    health: tonic_health::server::HealthReporter,
    metrics_stop: Option<tokio::sync::oneshot::Sender<()>>,
    audit_thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for RunningRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningRouter").field("addr", &self.addr).finish_non_exhaustive()
    }
}

fn io(e: impl std::fmt::Display) -> ServeError {
    ServeError::Io(e.to_string())
}

const SERVICES: [&str; 4] = ["", "whorl.v1.Identification", "whorl.v1.Gallery", "whorl.v1.Notifications"];

/// Starts a router as `cfg` says (it must have a `[router]` section).
pub async fn start(cfg: Config) -> Result<RunningRouter, ServeError> {
    cfg.check()?;
    let rs = cfg.router.clone().ok_or_else(|| io("no [router] section"))?;
    let token = read_token(rs.token_file.as_deref()).map_err(io)?;
    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .map_err(|e| io(format!("binding {}: {e}", cfg.server.listen)))?;
    let addr = listener.local_addr().map_err(io)?;
    let source = map_source(&rs.etcd, &rs.name, rs.map.as_deref(), Duration::from_secs(60)).await.map_err(io)?;
    let matcher = Matcher::default();
    let model = ImpostorModel::builtin(crate::shard::mcc_params_crc(matcher.params())).map_err(io)?;
    let opts = RouterOptions {
        search: cfg.search.clone(),
        hedge_min: Duration::from_millis(rs.hedge_min_ms),
        hedge_max: Duration::from_millis(rs.hedge_max_ms),
        ..RouterOptions::default()
    };
    let router = Router::start(source.clone(), Peers::new(token.as_deref()).map_err(io)?, model, opts);
    let (audit, audit_thread) = Audit::open(cfg.audit.path.as_deref(), cfg.limits.audit_refusals_per_s)
        .map_err(|e| io(format!("audit log {:?}: {e}", cfg.audit.path)))?;
    let metrics = Arc::new(Metrics::new());
    let retention = Duration::from_secs_f64(cfg.notifications.retention_days * 86_400.0);
    let store: Option<Arc<dyn crate::notify::EventStore>> = match (source.store(), &cfg.notifications.dir) {
        (Some(s), _) => Some(Arc::new(EtcdStore::new(s.etcd(), s.prefix(), retention))),
        (None, Some(dir)) => Some(Arc::new(FileStore::open(dir, retention).map_err(io)?)),
        (None, None) => None,
    };
    let notifier = store.map(|store| {
        Arc::new(Notifier {
            store,
            priority_label: cfg.notifications.priority_label.clone(),
            model: crate::search::impostor::BUILTIN_NAME.into(),
        })
    });
    let conn_limits = conn::ConnLimits {
        max_connections: cfg.limits.max_connections,
        handshake: Duration::from_secs(cfg.limits.handshake_timeout_s),
        idle: Duration::from_secs(cfg.limits.idle_timeout_s),
    };
    let tls_cfg = cfg.tls.as_ref().map(|t| crate::server::tls(t, conn_limits.handshake)).transpose()?;
    let max_msg = cfg.server.max_message_bytes;
    let metrics_listen = cfg.server.metrics_listen;
    let front = Front::new(Arc::clone(&router), cfg, audit, Arc::clone(&metrics), notifier.clone()).map_err(io)?;
    let svc = FrontServices::new(Arc::clone(&front));

    let (health, health_service) = tonic_health::server::health_reporter();
    for s in SERVICES {
        health.set_service_status(s, ServingStatus::NotServing).await;
    }
    health.set_service_status("liveness", ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Transport(e.to_string()))?;
    let reflection_a = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Transport(e.to_string()))?;
    let notify_svc = notifier.clone().map(|n| {
        let (f1, f2) = (Arc::clone(&front), Arc::clone(&front));
        pb::notifications_server::NotificationsServer::new(NotificationService::new(
            n,
            Arc::clone(&front.auth),
            Arc::new(move || f1.galleries().into_iter().filter(|(_, s)| s.notify).map(|(n, _)| n).collect()),
            Arc::new(move |e| {
                if let Ok(a) = f2.audit.lock() {
                    a.record(e);
                }
            }),
            Arc::clone(&metrics),
        ))
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = tls_cfg {
        builder = builder.tls_config(t).map_err(|e| ServeError::Transport(e.to_string()))?;
    }
    let grpc = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_a)
        .add_service(
            pb::identification_server::IdentificationServer::new(svc.clone())
                .max_decoding_message_size(max_msg)
                .max_encoding_message_size(max_msg),
        )
        .add_service(
            pb::gallery_server::GalleryServer::new(svc)
                .max_decoding_message_size(max_msg)
                .max_encoding_message_size(max_msg),
        )
        .add_optional_service(notify_svc);
    let incoming = conn::incoming(listener, conn_limits, Arc::clone(&metrics));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(async move {
        grpc.serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        })
        .await
        .map_err(|e| ServeError::Transport(e.to_string()))
    });
    let (metrics_addr, metrics_stop) = match metrics_listen {
        Some(a) => {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let (bound, _) = crate::server::metrics::serve(Arc::clone(&metrics), a, async {
                let _ = rx.await;
            })
            .await
            .map_err(|e| io(format!("metrics listener {a}: {e}")))?;
            (Some(bound), Some(tx))
        }
        None => (None, None),
    };
    // Health and the cluster's gauges, from the map and the node polls.
    let (r2, h2, m2, n2) = (Arc::clone(&router), health.clone(), Arc::clone(&metrics), notifier);
    tokio::spawn(async move {
        let mut was = None;
        let mut tick = 0u64;
        loop {
            let map = r2.map();
            let health = r2.health();
            let up = health.values().filter(|h| h.up).count();
            let mut unready = 0;
            for (g, _) in map.galleries() {
                for group in 0..map.groups() {
                    if r2.readable(&g, group).is_empty() {
                        unready += 1;
                    }
                }
            }
            let ready = map.config.is_some() && up > 0;
            if was != Some(ready) {
                let st = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
                for s in SERVICES {
                    h2.set_service_status(s, st).await;
                }
                was = Some(ready);
            }
            m2.set_cluster("nodes_up", up as i64);
            m2.set_cluster("nodes_registered", map.nodes.len() as i64);
            m2.set_cluster("groups_unready", unready);
            m2.set_cluster("hedges", r2.counters.hedges.load(Ordering::Relaxed) as i64);
            m2.set_cluster("retries", r2.counters.retries.load(Ordering::Relaxed) as i64);
            m2.set_cluster("partial_answers", r2.counters.partial.load(Ordering::Relaxed) as i64);
            if tick.is_multiple_of(10)
                && let Some(n) = &n2
            {
                n.housekeep(&m2).await;
            }
            tick += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    tracing::info!("whorl router serving gRPC on {addr}");
    Ok(RunningRouter { addr, metrics_addr, front, stop: Some(stop), serve, health, metrics_stop, audit_thread })
}

impl RunningRouter {
    /// Graceful stop: NOT_SERVING, stop accepting, let running calls
    /// finish within `grace`, drain the audit trail.
    pub async fn shutdown(mut self, grace: Duration) -> Result<(), ServeError> {
        for s in SERVICES {
            self.health.set_service_status(s, ServingStatus::NotServing).await;
        }
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let r = match tokio::time::timeout(grace, &mut self.serve).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(ServeError::Transport(e.to_string())),
            Err(_) => {
                self.serve.abort();
                Ok(())
            }
        };
        if let Some(s) = self.metrics_stop.take() {
            let _ = s.send(());
        }
        if let Ok(mut a) = self.front.audit.lock() {
            a.close();
        }
        if let Some(t) = self.audit_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        r
    }
}
