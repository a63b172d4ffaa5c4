//! A server at a glance (`whorl status`): health, gallery size, shards
//! and their state, backend and load from the Stats and ListShards calls;
//! latency percentiles and errors, since start and over the last few
//! seconds, from the server's own Prometheus endpoint when it serves one
//! (Stats says where).

use super::promtext::{self, Buckets, Sample};
use super::{ClientError, ops};
use crate::server::client::{self, ClientOptions};
use crate::server::pb;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// What was learned about one server; each part holds its own error so
/// that one failing call does not hide the rest.
#[derive(Debug, Clone)]
pub struct ServerStatus {
    /// The address asked.
    pub server: String,
    /// Health (`SERVING`, `NOT_SERVING`), or why it is unknown.
    pub health: Result<String, String>,
    /// The Stats call.
    pub stats: Result<pb::StatsResponse, String>,
    /// The ListShards call.
    pub shards: Result<Vec<pb::Shard>, String>,
    /// The Prometheus figures.
    pub metrics: Metrics,
}

/// The Prometheus part.
#[derive(Debug, Clone)]
pub enum Metrics {
    /// The server serves no metrics endpoint.
    Off,
    /// It does, but it could not be read.
    Failed(String),
    /// Read.
    Read(MetricsView),
}

/// Figures of one method.
#[derive(Debug, Clone, Default)]
pub struct MethodView {
    /// gRPC method, e.g. `Identify`.
    pub method: String,
    /// Requests since start, and within the window.
    pub requests: (u64, u64),
    /// Of which not OK.
    pub errors: (u64, u64),
    /// Latency percentiles (p50, p95, p99) in seconds since start.
    pub since_start: [Option<f64>; 3],
    /// The same within the window.
    pub recent: [Option<f64>; 3],
}

/// Errors of one (method, code).
#[derive(Debug, Clone, Default)]
pub struct ErrorCount {
    /// Method.
    pub method: String,
    /// Status code name.
    pub code: String,
    /// Since start, and within the window.
    pub count: (u64, u64),
}

/// What the metrics endpoint said.
#[derive(Debug, Clone, Default)]
pub struct MetricsView {
    /// The page read.
    pub url: String,
    /// Between the two readings ("recent").
    pub window: Duration,
    /// Per method, busiest first.
    pub methods: Vec<MethodView>,
    /// Every non-OK count.
    pub errors: Vec<ErrorCount>,
    /// Identify's stages: (stage, p50, p99) in seconds since start.
    pub stages: Vec<(String, Option<f64>, Option<f64>)>,
}

const LATENCY: &str = "whorl_request_duration_seconds";
const STAGES: &str = "whorl_stage_duration_seconds";
const REQUESTS: &str = "whorl_requests_total";

/// Reads one server. `window`: time between the two metrics readings
/// (zero: one reading, no recent figures).
pub async fn gather(server: &str, o: &ClientOptions, window: Duration) -> Result<ServerStatus, ClientError> {
    let mut c = client::connect(server, o).await?;
    let mut health_client = tonic_health::pb::health_client::HealthClient::new(c.channel.clone());
    let health = match health_client.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await {
        Ok(r) => Ok(r.into_inner().status().as_str_name().to_string()),
        Err(e) => Err(ClientError::status("health", &e).to_string()),
    };
    let stats = ops::stats(&mut c, "").await.map_err(|e| e.to_string());
    let shards = ops::list_shards(&mut c, "").await.map_err(|e| e.to_string());
    let metrics = match stats.as_ref().map(|s| s.metrics_address.clone()) {
        Ok(a) if !a.is_empty() => read_metrics(&reachable(&a, server), window).await,
        _ => Metrics::Off,
    };
    Ok(ServerStatus { server: server.to_string(), health, stats, shards, metrics })
}

/// The metrics address as seen from here: an unspecified host (0.0.0.0,
/// [::]) becomes the host the gRPC address named.
fn reachable(metrics: &str, server: &str) -> String {
    let Ok(sock) = metrics.parse::<std::net::SocketAddr>() else { return metrics.to_string() };
    if !sock.ip().is_unspecified() {
        return metrics.to_string();
    }
    let url = client::server_url(server).unwrap_or_default();
    let host = url.parse::<tonic::codegen::http::Uri>().ok().and_then(|u| u.host().map(str::to_string));
    match host {
        Some(h) => format!("{h}:{}", sock.port()),
        None => format!("127.0.0.1:{}", sock.port()),
    }
}

async fn read_metrics(addr: &str, window: Duration) -> Metrics {
    let first = match promtext::fetch(addr).await {
        Ok(t) => promtext::parse(&t),
        Err(e) => return Metrics::Failed(e.to_string()),
    };
    let t0 = Instant::now();
    let second = if window.is_zero() {
        None
    } else {
        tokio::time::sleep(window).await;
        match promtext::fetch(addr).await {
            Ok(t) => Some(promtext::parse(&t)),
            Err(e) => return Metrics::Failed(e.to_string()),
        }
    };
    let elapsed = if second.is_some() { t0.elapsed() } else { Duration::ZERO };
    let now = second.as_deref().unwrap_or(&first);
    let before: &[Sample] = if second.is_some() { &first } else { &[] };
    Metrics::Read(view(promtext::metrics_url(addr), now, before, elapsed))
}

fn counts(samples: &[Sample]) -> Vec<(String, String, u64)> {
    samples
        .iter()
        .filter(|s| s.name == REQUESTS)
        .map(|s| (s.label("method").to_string(), s.label("code").to_string(), s.value.max(0.0) as u64))
        .collect()
}

fn percentiles(b: &Buckets) -> [Option<f64>; 3] {
    [0.5, 0.95, 0.99].map(|q| promtext::quantile(b, q))
}

/// Builds the view from the latest reading and an earlier one (empty:
/// no window).
pub fn view(url: String, now: &[Sample], before: &[Sample], window: Duration) -> MetricsView {
    let (c_now, c_before) = (counts(now), counts(before));
    let prior = |m: &str, c: &str| c_before.iter().find(|x| x.0 == m && x.1 == c).map_or(0, |x| x.2);
    let methods: BTreeSet<&str> = c_now.iter().map(|x| x.0.as_str()).collect();
    let mut out = MetricsView { url, window, ..MetricsView::default() };
    for m in methods {
        let mut v = MethodView { method: m.to_string(), ..MethodView::default() };
        for (_, code, n) in c_now.iter().filter(|x| x.0 == m) {
            let recent = n.saturating_sub(prior(m, code));
            v.requests.0 += n;
            v.requests.1 += recent;
            if code != "OK" {
                v.errors.0 += n;
                v.errors.1 += recent;
                out.errors.push(ErrorCount { method: m.to_string(), code: code.clone(), count: (*n, recent) });
            }
        }
        let b_now = promtext::buckets(now, LATENCY, &[("method", m)]);
        v.since_start = percentiles(&b_now);
        if !window.is_zero() {
            v.recent = percentiles(&promtext::minus(&b_now, &promtext::buckets(before, LATENCY, &[("method", m)])));
        }
        out.methods.push(v);
    }
    out.methods.sort_by(|a, b| b.requests.0.cmp(&a.requests.0).then(a.method.cmp(&b.method)));
    let stages: BTreeSet<&str> =
        now.iter().filter(|s| s.name == format!("{STAGES}_bucket")).map(|s| s.label("stage")).collect();
    for st in stages {
        let b = promtext::buckets(now, STAGES, &[("stage", st)]);
        out.stages.push((st.to_string(), promtext::quantile(&b, 0.5), promtext::quantile(&b, 0.99)));
    }
    out
}
