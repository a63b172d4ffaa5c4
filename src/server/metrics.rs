//! Prometheus metrics (prometheus-client, OpenMetrics text) served over
//! HTTP at `/metrics`: request counts and latencies per method and status,
//! stage latencies, in-flight requests, shed requests, work stopped by a
//! deadline or a departed caller (per stage), GPU fall-backs to the CPU,
//! connections (open, and closed by the limits), compactions, comparisons,
//! the re-scoring backend and the gallery's size.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodCode {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoppedLabel {
    stage: String,
    why: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GalleryLabel {
    gallery: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubscriberLabel {
    gallery: String,
    subscriber: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

type Hist<L> = Family<L, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

fn latency_histogram() -> Histogram {
    // 0.1 ms to 6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<MethodCode, Counter>,
    latency: Hist<MethodLabel>,
    stages: Hist<StageLabel>,
    shed: Family<MethodLabel, Counter>,
    in_flight: Gauge,
    comparisons: Counter,
    backend: Family<BackendLabel, Gauge>,
    templates: Gauge,
    subjects: Gauge,
    shards: Gauge,
    generation: Gauge,
    problems: Gauge,
    stopped: Family<StoppedLabel, Counter>,
    gpu_fallbacks: Family<ReasonLabel, Counter>,
    connections: Gauge,
    connections_closed: Family<ReasonLabel, Counter>,
    compactions: Family<ReasonLabel, Counter>,
    saturated: Gauge,
    by_gallery_subjects: Family<GalleryLabel, Gauge>,
    by_gallery_templates: Family<GalleryLabel, Gauge>,
    raised: Family<GalleryLabel, Counter>,
    backlog: Family<SubscriberLabel, Gauge>,
    oldest: Family<SubscriberLabel, FloatGauge>,
    expired: Family<GalleryLabel, Gauge>,
    last_event: Family<GalleryLabel, Gauge>,
    cluster: Family<NameLabel, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("whorl");
        let requests = Family::<MethodCode, Counter>::default();
        registry.register("requests", "gRPC requests by method and status code", requests.clone());
        let latency: Hist<MethodLabel> = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register("request_duration_seconds", "Server-side latency by method", latency.clone());
        let stages: Hist<StageLabel> = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register("stage_duration_seconds", "Identification latency by pipeline stage", stages.clone());
        let shed = Family::<MethodLabel, Counter>::default();
        registry.register("shed", "Requests refused with RESOURCE_EXHAUSTED because the server was full", shed.clone());
        let in_flight = Gauge::default();
        registry.register(
            "in_flight",
            "Searches admitted and not yet answered (running and queued)",
            in_flight.clone(),
        );
        let comparisons = Counter::default();
        registry.register("comparisons", "Cylinder comparisons made", comparisons.clone());
        let backend = Family::<BackendLabel, Gauge>::default();
        registry.register("backend", "The re-scoring backend in use (1)", backend.clone());
        let templates = Gauge::default();
        registry.register("gallery_templates", "Templates searchable", templates.clone());
        let subjects = Gauge::default();
        registry.register("gallery_subjects", "Subjects searchable", subjects.clone());
        let shards = Gauge::default();
        registry.register("gallery_shards", "Shards served", shards.clone());
        let generation = Gauge::default();
        registry.register("gallery_generation", "Gallery snapshot generation", generation.clone());
        let problems = Gauge::default();
        registry.register("gallery_problems", "Shards left out as damaged (degraded when > 0)", problems.clone());
        let stopped = Family::<StoppedLabel, Counter>::default();
        registry.register(
            "stopped",
            "Searches stopped inside a stage because the deadline passed or the caller went away",
            stopped.clone(),
        );
        let gpu_fallbacks = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "gpu_fallbacks",
            "GPU batches re-scored on the CPU instead, by reason",
            gpu_fallbacks.clone(),
        );
        let connections = Gauge::default();
        registry.register("connections", "Open gRPC connections", connections.clone());
        let connections_closed = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "connections_closed",
            "Connections closed by the server's limits (handshake_timeout, idle_timeout, over_limit)",
            connections_closed.clone(),
        );
        let compactions = Family::<ReasonLabel, Counter>::default();
        registry.register("compactions", "Compactions done, by trigger (rpc, auto)", compactions.clone());
        let saturated = Gauge::default();
        registry.register(
            "saturated",
            "1 while every search slot is taken (health says NOT_SERVING)",
            saturated.clone(),
        );
        let by_gallery_subjects = Family::<GalleryLabel, Gauge>::default();
        registry.register("subjects", "Subjects searchable, per gallery", by_gallery_subjects.clone());
        let by_gallery_templates = Family::<GalleryLabel, Gauge>::default();
        registry.register("templates", "Templates searchable, per gallery", by_gallery_templates.clone());
        let raised = Family::<GalleryLabel, Counter>::default();
        registry.register("notifications_raised", "Hit notifications raised, per gallery", raised.clone());
        let backlog = Family::<SubscriberLabel, Gauge>::default();
        registry.register(
            "notifications_backlog",
            "Hit notifications not yet acknowledged, per gallery and subscriber",
            backlog.clone(),
        );
        let oldest = Family::<SubscriberLabel, FloatGauge>::default();
        registry.register(
            "notifications_oldest_unacked_seconds",
            "Age of the oldest unacknowledged notification, per gallery and subscriber",
            oldest.clone(),
        );
        let expired = Family::<GalleryLabel, Gauge>::default();
        registry.register(
            "notifications_expired_unacked",
            "Notifications dropped by retention before every subscriber acknowledged them",
            expired.clone(),
        );
        let last_event = Family::<GalleryLabel, Gauge>::default();
        registry.register(
            "notifications_last_sequence",
            "Sequence number of the last notification",
            last_event.clone(),
        );
        let cluster = Family::<NameLabel, Gauge>::default();
        registry.register(
            "cluster",
            "Cluster router state: nodes_up, groups_unready, hedges, retries, partial answers",
            cluster.clone(),
        );
        Metrics {
            by_gallery_subjects,
            by_gallery_templates,
            raised,
            backlog,
            oldest,
            expired,
            last_event,
            cluster,
            registry,
            requests,
            latency,
            stages,
            shed,
            in_flight,
            comparisons,
            backend,
            templates,
            subjects,
            shards,
            generation,
            problems,
            stopped,
            gpu_fallbacks,
            connections,
            connections_closed,
            compactions,
            saturated,
        }
    }

    /// Counts a search stopped by its deadline or a departed caller.
    pub fn stopped(&self, e: &crate::search::SearchError) {
        use crate::search::SearchError;
        let (stage, why) = match e {
            SearchError::Deadline(s) => (s, "deadline"),
            SearchError::Cancelled(s) => (s, "cancelled"),
            _ => return,
        };
        self.stopped.get_or_create(&StoppedLabel { stage: stage.clone(), why: why.into() }).inc();
    }

    /// Searches stopped in `stage` so far (deadline and cancelled).
    pub fn stopped_in(&self, stage: &str) -> u64 {
        ["deadline", "cancelled"]
            .iter()
            .map(|w| self.stopped.get_or_create(&StoppedLabel { stage: stage.into(), why: (*w).into() }).get())
            .sum()
    }

    /// Counts a GPU batch re-scored on the CPU.
    pub fn gpu_fallback(&self, reason: &str) {
        self.gpu_fallbacks.get_or_create(&ReasonLabel { reason: reason.into() }).inc();
    }

    /// GPU fall-backs so far, all reasons.
    pub fn gpu_fallbacks_total(&self) -> u64 {
        ["timeout", "lost", "error"]
            .iter()
            .map(|r| self.gpu_fallbacks.get_or_create(&ReasonLabel { reason: (*r).into() }).get())
            .sum()
    }

    /// Sets the open-connections gauge.
    pub fn set_connections(&self, n: usize) {
        self.connections.set(n as i64);
    }

    /// Counts a connection closed by a limit.
    pub fn connection_closed(&self, reason: &str) {
        self.connections_closed.get_or_create(&ReasonLabel { reason: reason.into() }).inc();
    }

    /// Connections closed for `reason` so far.
    pub fn connections_closed(&self, reason: &str) -> u64 {
        self.connections_closed.get_or_create(&ReasonLabel { reason: reason.into() }).get()
    }

    /// Counts a compaction.
    pub fn compacted(&self, trigger: &str) {
        self.compactions.get_or_create(&ReasonLabel { reason: trigger.into() }).inc();
    }

    /// Compactions so far, every trigger.
    pub fn compactions_total(&self) -> u64 {
        ["rpc", "auto"].iter().map(|r| self.compactions.get_or_create(&ReasonLabel { reason: (*r).into() }).get()).sum()
    }

    /// Sets the saturation gauge.
    pub fn set_saturated(&self, on: bool) {
        self.saturated.set(i64::from(on));
    }

    /// Counts a finished request.
    pub fn request(&self, method: &str, code: tonic::Code, took: Duration) {
        let code = super::audit::code_name(code).to_string();
        self.requests.get_or_create(&MethodCode { method: method.to_string(), code }).inc();
        self.latency.get_or_create(&MethodLabel { method: method.to_string() }).observe(took.as_secs_f64());
    }

    /// Records one identification's stage timings.
    pub fn stages(&self, stages: &[(&str, Duration)], comparisons: usize) {
        for (s, d) in stages {
            self.stages.get_or_create(&StageLabel { stage: (*s).to_string() }).observe(d.as_secs_f64());
        }
        self.comparisons.inc_by(comparisons as u64);
    }

    /// Counts a shed request.
    pub fn shed(&self, method: &str) {
        self.shed.get_or_create(&MethodLabel { method: method.to_string() }).inc();
    }

    /// Total requests shed so far.
    pub fn shed_total(&self) -> u64 {
        let mut n = 0;
        for m in ["Identify", "IdentifyStream", "Verify", "Enroll", "Delete"] {
            n += self.shed.get_or_create(&MethodLabel { method: m.into() }).get();
        }
        n
    }

    /// Sets the in-flight gauge.
    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.set(n as i64);
    }

    /// Names the backend in use.
    pub fn set_backend(&self, name: &str) {
        self.backend.clear();
        self.backend.get_or_create(&BackendLabel { backend: name.to_string() }).set(1);
    }

    /// Sets the gallery gauges.
    pub fn set_gallery(&self, templates: u64, subjects: u64, shards: usize, generation: u64, problems: usize) {
        self.templates.set(templates as i64);
        self.subjects.set(subjects as i64);
        self.shards.set(shards as i64);
        self.generation.set(generation as i64);
        self.problems.set(problems as i64);
    }

    /// Publishes one gallery's size.
    pub fn set_gallery_size(&self, gallery: &str, subjects: u64, templates: u64) {
        let l = GalleryLabel { gallery: gallery.to_string() };
        self.by_gallery_subjects.get_or_create(&l).set(subjects as i64);
        self.by_gallery_templates.get_or_create(&l).set(templates as i64);
    }

    /// Counts a notification raised.
    pub fn notification_raised(&self, gallery: &str) {
        self.raised.get_or_create(&GalleryLabel { gallery: gallery.to_string() }).inc();
    }

    /// Notifications raised in `gallery` so far.
    pub fn notifications_raised(&self, gallery: &str) -> u64 {
        self.raised.get_or_create(&GalleryLabel { gallery: gallery.to_string() }).get()
    }

    /// Publishes a gallery's notification backlog.
    pub fn set_notification_backlog(&self, gallery: &str, b: &crate::notify::Backlog) {
        let g = GalleryLabel { gallery: gallery.to_string() };
        self.expired.get_or_create(&g).set(b.expired_unacked as i64);
        self.last_event.get_or_create(&g).set(b.last as i64);
        for (sub, (n, age)) in &b.subscribers {
            let l = SubscriberLabel { gallery: gallery.to_string(), subscriber: sub.clone() };
            self.backlog.get_or_create(&l).set(*n as i64);
            self.oldest.get_or_create(&l).set(age.as_secs_f64());
        }
    }

    /// Publishes a cluster router gauge (nodes_up, groups_unready, hedges, ...).
    pub fn set_cluster(&self, name: &str, v: i64) {
        self.cluster.get_or_create(&NameLabel { name: name.to_string() }).set(v);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut s, &self.registry) {
            tracing::error!("encoding metrics: {e}");
        }
        s
    }
}

/// Serves `GET /metrics` on `addr` until `shutdown` resolves; returns the bound address.
pub async fn serve(
    metrics: Arc<Metrics>,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = Arc::clone(&metrics);
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    m.encode(),
                )
            }
        }),
    );
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!("metrics server: {e}");
        }
    });
    Ok((bound, handle))
}
