//! `whorl status`: one or more servers at a glance.

use super::client::Conn;
use anyhow::{Result, bail};
use clap::Args;
use std::fmt::Write as _;
use std::time::Duration;
use whorl::client::bench::code_meaning;
use whorl::client::ops;
use whorl::client::status::{self, Metrics, MetricsView, ServerStatus};
use whorl::table::{Table, bytes, count, number, seconds};

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    conn: Conn,
    /// More servers to show (a cluster): host:port, comma-separated.
    #[arg(long, value_delimiter = ',')]
    also: Vec<String>,
    /// Time between the two readings of the metrics that give the
    /// "recent" figures (0s: since start only).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn run(a: StatusArgs) -> Result<()> {
    let servers: Vec<String> = std::iter::once(a.conn.server.clone()).chain(a.also.iter().cloned()).collect();
    let o = a.conn.options();
    let results = super::serve::runtime()?.block_on(async move {
        let tasks: Vec<_> = servers
            .iter()
            .map(|s| {
                let (s, o) = (s.clone(), o.clone());
                tokio::spawn(async move { (s.clone(), status::gather(&s, &o, a.window).await) })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await?);
        }
        anyhow::Ok(out)
    })?;
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if a.json {
        let v: Vec<serde_json::Value> = results.iter().map(|(s, r)| json(s, r)).collect();
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        if results.len() > 1 {
            out!("{}\n", summary(&results))?;
        }
        for (i, (server, r)) in results.iter().enumerate() {
            if i > 0 || results.len() > 1 {
                outln!()?;
            }
            match r {
                Ok(st) => out!("{}", text(st))?,
                Err(e) => outln!("{server}: {e}")?,
            }
        }
    }
    if failed == results.len() {
        bail!("no server answered");
    }
    Ok(())
}

/// One row per server.
fn summary(results: &[(String, Result<ServerStatus, whorl::client::ClientError>)]) -> Table {
    let mut t = Table::new(["server", "health", "subjects", "templates", "shards", "backend", "in flight", "errors"]);
    for (server, r) in results {
        match r {
            Err(e) => {
                t.row([server.clone(), format!("unreachable [{}]", t.len() + 1)]);
                t.note(format!("[{}] {e}", t.len()));
            }
            Ok(st) => {
                let h = st.health.clone().unwrap_or_else(|e| e);
                let errors = match &st.metrics {
                    Metrics::Read(m) => count(m.methods.iter().map(|x| x.errors.0).sum()),
                    _ => "-".into(),
                };
                match &st.stats {
                    Ok(s) => t.row([
                        server.clone(),
                        h,
                        count(s.subjects),
                        count(s.templates),
                        format!(
                            "{}{}",
                            s.shards,
                            if s.problems > 0 { format!(" (+{} left out)", s.problems) } else { String::new() }
                        ),
                        s.backend.clone(),
                        format!("{} of {}", s.in_flight, s.max_in_flight),
                        errors,
                    ]),
                    Err(e) => t.row([server.clone(), h, e.clone()]),
                };
            }
        }
    }
    t
}

fn ms(x: Option<f64>) -> String {
    x.map_or("-".into(), |s| number(s * 1e3))
}

fn text(st: &ServerStatus) -> String {
    let mut o = String::new();
    let health = st.health.clone().unwrap_or_else(|e| format!("unknown ({e})"));
    let _ = writeln!(o, "server {}: {health}", st.server);
    match &st.stats {
        Err(e) => {
            let _ = writeln!(o, "statistics: {e}");
        }
        Ok(s) => {
            let _ = writeln!(
                o,
                "gallery: {} subjects, {} templates in {} shard{} (generation {}); since the last compaction {} templates enrolled, {} subjects deleted, log {}",
                count(s.subjects),
                count(s.templates),
                s.shards,
                if s.shards == 1 { "" } else { "s" },
                s.generation,
                count(s.delta_templates),
                count(s.tombstones),
                bytes(s.wal_bytes)
            );
            let _ = writeln!(o, "backend: {}", s.backend);
            let _ = writeln!(
                o,
                "load: {} of {} search slots in use; {} identifications and {} shed requests since start",
                s.in_flight,
                s.max_in_flight,
                count(s.identifications),
                count(s.shed)
            );
        }
    }
    match &st.shards {
        Err(e) => {
            let _ = writeln!(o, "shards: {e}");
        }
        Ok(sh) => {
            let _ = write!(o, "\n{}", ops::shards_table(sh));
        }
    }
    match &st.metrics {
        Metrics::Off => {
            let _ = writeln!(
                o,
                "\nlatency and errors: the server serves no metrics (start it with --metrics-listen HOST:PORT)"
            );
        }
        Metrics::Failed(e) => {
            let _ = writeln!(o, "\nlatency and errors: {e}");
        }
        Metrics::Read(m) => o.push_str(&metrics_text(m)),
    }
    o
}

fn metrics_text(m: &MetricsView) -> String {
    let mut o = String::new();
    let recent = !m.window.is_zero();
    let _ = writeln!(
        o,
        "\nrequests ({}; latency estimated from its histogram buckets{}):",
        m.url,
        if recent { format!("; \"recent\": the last {}", seconds(m.window)) } else { String::new() }
    );
    let mut header = vec!["method", "requests", "errors", "p50 ms", "p95 ms", "p99 ms"];
    if recent {
        header.extend(["recent requests", "recent errors", "recent p50 ms", "recent p99 ms"]);
    }
    let mut t = Table::new(header);
    for v in &m.methods {
        let mut row = vec![
            v.method.clone(),
            count(v.requests.0),
            count(v.errors.0),
            ms(v.since_start[0]),
            ms(v.since_start[1]),
            ms(v.since_start[2]),
        ];
        if recent {
            row.extend([count(v.requests.1), count(v.errors.1), ms(v.recent[0]), ms(v.recent[2])]);
        }
        t.row(row);
    }
    if m.methods.is_empty() {
        t.row(["(no requests yet)"]);
    }
    if !m.errors.is_empty() {
        t.note("Errors by status code (since start; recent in brackets):");
        for e in &m.errors {
            t.note(format!(
                "  {} {}: {} ({}): {}",
                e.method,
                e.code,
                count(e.count.0),
                count(e.count.1),
                code_meaning(&e.code)
            ));
        }
    }
    o.push_str(&t.to_string());
    if !m.stages.is_empty() {
        let mut s = Table::new(["identify stage", "p50 ms", "p99 ms"]);
        for (stage, p50, p99) in &m.stages {
            s.row([stage.clone(), ms(*p50), ms(*p99)]);
        }
        let _ = write!(o, "\n{s}");
    }
    o
}

fn json(server: &str, r: &Result<ServerStatus, whorl::client::ClientError>) -> serde_json::Value {
    let st = match r {
        Err(e) => return serde_json::json!({"server": server, "error": e.to_string()}),
        Ok(st) => st,
    };
    let metrics = match &st.metrics {
        Metrics::Off => serde_json::Value::Null,
        Metrics::Failed(e) => serde_json::json!({"error": e}),
        Metrics::Read(m) => serde_json::json!({
            "url": m.url,
            "window_s": m.window.as_secs_f64(),
            "methods": m.methods.iter().map(|v| serde_json::json!({
                "method": v.method, "requests": v.requests.0, "errors": v.errors.0,
                "p50_s": v.since_start[0], "p95_s": v.since_start[1], "p99_s": v.since_start[2],
                "recent_requests": v.requests.1, "recent_errors": v.errors.1,
                "recent_p50_s": v.recent[0], "recent_p95_s": v.recent[1], "recent_p99_s": v.recent[2],
            })).collect::<Vec<_>>(),
            "errors": m.errors.iter().map(|e| serde_json::json!({
                "method": e.method, "code": e.code, "count": e.count.0, "recent": e.count.1})).collect::<Vec<_>>(),
            "stages": m.stages.iter().map(|(s, a, b)| serde_json::json!({"stage": s, "p50_s": a, "p99_s": b})).collect::<Vec<_>>(),
        }),
    };
    serde_json::json!({
        "server": st.server,
        "health": st.health.as_ref().ok(),
        "stats": st.stats.as_ref().map(ops::stats_json).unwrap_or_else(|e| serde_json::json!({"error": e})),
        "shards": st.shards.as_ref().map(|s| ops::shards_json(s)).unwrap_or_else(|e| serde_json::json!({"error": e})),
        "metrics": metrics,
    })
}
