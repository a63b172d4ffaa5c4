//! Running a node: `whorl serve` with a `[cluster]` section.
//!
//! The node service (internal token), health (NOT_SERVING until every
//! group placed here is open and caught up; the `liveness` service is
//! SERVING for as long as the process runs) and reflection on the gRPC
//! port; Prometheus metrics on `metrics_listen`.

use super::service::NodeService;
use super::{MapSource, Node, NodeOptions, SlotState};
use crate::cluster::config::read_token;
use crate::cluster::map::StaticMap;
use crate::cluster::peer::Peers;
use crate::cluster::store::Store;
use crate::cluster::{ClusterError, pb};
use crate::mcc::Matcher;
use crate::search::impostor::ImpostorModel;
use crate::server::config::Config;
use crate::server::engine::Engine;
use crate::server::{ServeError, metrics, pb as api};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

/// A running node.
pub struct RunningNode {
    /// The gRPC address bound.
    pub addr: SocketAddr,
    /// The metrics address bound.
    pub metrics_addr: Option<SocketAddr>,
    /// The node.
    pub node: Arc<Node>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serve: tokio::task::JoinHandle<Result<(), ServeError>>,
    health: tonic_health::server::HealthReporter,
    metrics_stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode").field("addr", &self.addr).finish_non_exhaustive()
    }
}

use crate::server::gallery_options;

/// The map source a `[cluster]` or `[router]` section names: etcd
/// (waiting up to `patience` for it to answer) or a static file.
pub async fn map_source(
    etcd: &[String],
    name: &str,
    map: Option<&std::path::Path>,
    patience: Duration,
) -> Result<MapSource, ClusterError> {
    if let Some(p) = map {
        return StaticMap::load(p).map(|m| MapSource::Static(Arc::new(m))).map_err(ClusterError::Invalid);
    }
    let t0 = std::time::Instant::now();
    loop {
        match Store::connect(etcd, name).await {
            Ok(s) => return Ok(MapSource::Etcd(s)),
            Err(e) if t0.elapsed() < patience => {
                tracing::warn!("{e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn io(e: impl std::fmt::Display) -> ServeError {
    ServeError::Io(e.to_string())
}

/// Starts a node as `cfg` says (it must have a `[cluster]` section).
pub async fn start(cfg: Config) -> Result<RunningNode, ServeError> {
    let cs = cfg.cluster.clone().ok_or_else(|| io("no [cluster] section"))?;
    cs.check().map_err(io)?;
    let token = read_token(cs.token_file.as_deref()).map_err(io)?;
    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .map_err(|e| io(format!("binding {}: {e}", cfg.server.listen)))?;
    let addr = listener.local_addr().map_err(io)?;
    if token.is_none() && !addr.ip().is_loopback() && !cfg.server.dangerously_allow_unauthenticated_network {
        return Err(io(format!(
            "the node service listens on {addr}, beyond loopback, without a cluster token: set cluster.token_file"
        )));
    }
    let id = cs.node_id().map_err(io)?;
    let advertise = cs.advertise.clone().unwrap_or_else(|| format!("http://{addr}"));
    let source = map_source(&cs.etcd, &cs.name, cs.map.as_deref(), Duration::from_secs(60)).await.map_err(io)?;
    let matcher = Matcher::default();
    let model = ImpostorModel::builtin(crate::shard::mcc_params_crc(matcher.params())).map_err(io)?;
    let (rescorer, _gpu) = crate::server::backend(cfg.backend.choice, &matcher, &cfg.backend, None)?;
    let data_dir = if cs.data_dir.as_os_str().is_empty() { cfg.gallery.path.clone() } else { cs.data_dir.clone() };
    let opts = NodeOptions {
        id: id.clone(),
        data_dir,
        advertise,
        search: cfg.search.clone(),
        gallery: gallery_options(&cfg),
        compact_log_bytes: cfg.gallery.compact_log_bytes,
        compact_log_records: cfg.gallery.compact_log_records,
    };
    let peers = Peers::new(token.as_deref()).map_err(io)?;
    let node = Node::new(opts, source, peers, rescorer, model).map_err(io)?;
    node.start();
    let engine =
        Arc::new(Engine::new(cfg.workers(), cfg.server.threads_per_search, cfg.server.max_in_flight).map_err(io)?);
    let svc = NodeService::new(Arc::clone(&node), engine, token.as_deref(), cfg.limits.clone());

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::NotServing).await;
    health.set_service_status("liveness", ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Transport(e.to_string()))?;
    let max = crate::cluster::peer::MAX_MESSAGE;
    let router = tonic::transport::Server::builder().add_service(health_service).add_service(reflection).add_service(
        pb::node_server::NodeServer::new(svc).max_decoding_message_size(max).max_encoding_message_size(max),
    );
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

    let m = Arc::new(metrics::Metrics::new());
    m.set_backend(&node.backend());
    let (metrics_addr, metrics_stop) = match cfg.server.metrics_listen {
        Some(a) => {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let (bound, _) = metrics::serve(Arc::clone(&m), a, async {
                let _ = rx.await;
            })
            .await
            .map_err(|e| io(format!("metrics listener {a}: {e}")))?;
            (Some(bound), Some(tx))
        }
        None => (None, None),
    };
    // Health follows the groups: SERVING once every group placed here is ready.
    let (n2, h2, m2) = (Arc::clone(&node), health.clone(), Arc::clone(&m));
    tokio::spawn(async move {
        let mut was = None;
        loop {
            let slots: Vec<_> = n2.galleries().iter().flat_map(|g| g.slots()).collect();
            let ready = !slots.is_empty() && slots.iter().all(|s| s.state() == SlotState::Ready);
            if was != Some(ready) {
                let st = if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
                h2.set_service_status("", st).await;
                was = Some(ready);
            }
            let (mut t, mut s, mut sh, mut generation) = (0u64, 0u64, 0usize, 0u64);
            for sl in slots.iter().filter(|s| s.state() == SlotState::Ready) {
                if let (Some(g), Some(p)) = (sl.gallery(), sl.part()) {
                    let snap = g.snapshot();
                    t += snap.templates() as u64;
                    s += p.subjects(&snap);
                    sh += snap.shards.len();
                    generation += snap.generation;
                }
            }
            m2.set_gallery(
                t,
                s,
                sh,
                generation,
                slots.iter().filter(|s| matches!(s.state(), SlotState::Failed(_))).count(),
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    tracing::info!("node {id} serving its node service on {addr}");
    Ok(RunningNode { addr, metrics_addr, node, stop: Some(stop), serve, health, metrics_stop })
}

impl RunningNode {
    /// Whether every group placed here is ready.
    pub fn ready(&self) -> bool {
        let slots: Vec<_> = self.node.galleries().iter().flat_map(|g| g.slots()).collect();
        !slots.is_empty() && slots.iter().all(|s| s.state() == SlotState::Ready)
    }

    /// Graceful stop: resign primaries (others take over at once), stop
    /// accepting, let running calls finish.
    pub async fn shutdown(mut self, grace: Duration) -> Result<(), ServeError> {
        self.health.set_service_status("", ServingStatus::NotServing).await;
        self.node.leave().await;
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
        r
    }
}
