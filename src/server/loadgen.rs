//! The closed-loop load generator behind `whorl bench --server`: a number
//! of concurrent callers, each sending its next probe as soon as the last
//! reply came, for a duration; latency, status codes and accuracy (the
//! rank of the known mate, the decision) of every reply.

use super::client::Identification;
use super::pb;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::Code;

/// A probe with what the answer should be.
#[derive(Debug, Clone)]
pub struct BenchProbe {
    /// File name (for reports).
    pub name: String,
    /// Its template records.
    pub probe: pb::Probe,
    /// The enrolled subject it belongs to; `None`: enrolled nowhere (non-mated).
    pub mate: Option<String>,
}

/// Name of the list in a probe folder: `file<TAB>mate` per line, `-` for a
/// non-mated probe.
pub const LIST: &str = "probes.tsv";

/// Reads a probe folder written by `whorl probes` (or by hand).
pub fn read_probes(dir: &Path) -> Result<Vec<BenchProbe>, String> {
    let list = dir.join(LIST);
    let text = std::fs::read_to_string(&list).map_err(|e| format!("{}: {e}", list.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split('\t');
        let (Some(file), mate) = (parts.next(), parts.next()) else { continue };
        let mate = match mate.map(str::trim) {
            None | Some("") => {
                return Err(format!("{}:{}: want 'file<TAB>mate' ('-' for none)", list.display(), i + 1));
            }
            Some("-") => None,
            Some(m) => Some(m.to_string()),
        };
        let files: Vec<&str> = file.split(',').collect();
        let mut records = Vec::new();
        for f in files {
            let p = dir.join(f);
            records.push(std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?);
        }
        out.push(BenchProbe { name: file.to_string(), probe: super::client::probe(records), mate });
    }
    if out.is_empty() {
        return Err(format!("{} lists no probes", list.display()));
    }
    Ok(out)
}

/// How to load the server.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Callers at once.
    pub concurrency: usize,
    /// How long to send for (after the warm-up).
    pub duration: Duration,
    /// Stop after this many requests (whichever comes first), e.g. one pass over the probes.
    pub max_requests: Option<usize>,
    /// Deadline of each request.
    pub timeout: Duration,
    /// Requests sent first and not counted.
    pub warmup: usize,
    /// Candidates asked for.
    pub max_candidates: u32,
    /// Counts replies as they come (after the warm-up), for a progress display.
    pub progress: Option<Arc<AtomicUsize>>,
    /// Galleries each request names (empty: the server's default set).
    pub galleries: Vec<String>,
}

/// One reply.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Which probe.
    pub probe: usize,
    /// Client-side latency.
    pub latency: Duration,
    /// Status code.
    pub code: Code,
    /// Rank of the mate among the candidates (1 = best), when present.
    pub mate_rank: Option<usize>,
    /// The decision was a hit.
    pub hit: bool,
    /// Fused score of the best candidate.
    pub top: Option<f64>,
    /// Server-side total time.
    pub server: Duration,
    /// The status message of an error reply (empty when OK).
    pub message: String,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Callers at once.
    pub concurrency: usize,
    /// Measured wall time.
    pub wall: Duration,
    /// Every reply after the warm-up.
    pub samples: Vec<Sample>,
    /// Whether each probe is mated.
    pub mated: Vec<bool>,
    /// Backend the server reported.
    pub backend: String,
}

/// Sends `probes` round-robin from `concurrency` callers.
pub async fn run(client: Identification, probes: Arc<Vec<BenchProbe>>, o: &LoadOptions) -> Report {
    let next = Arc::new(AtomicUsize::new(0));
    let backend = Arc::new(std::sync::Mutex::new(String::new()));
    // Warm-up.
    for i in 0..o.warmup.min(probes.len()) {
        let _ = one(client.clone(), &probes, i, o).await;
    }
    let t0 = Instant::now();
    let end = t0 + o.duration;
    let mut tasks = Vec::new();
    for _ in 0..o.concurrency.max(1) {
        let (client, probes, next, backend) =
            (client.clone(), Arc::clone(&probes), Arc::clone(&next), Arc::clone(&backend));
        let o = o.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while Instant::now() < end {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if o.max_requests.is_some_and(|m| n >= m) {
                    break;
                }
                let (s, b) = one(client.clone(), &probes, n % probes.len(), &o).await;
                if let Some(b) = b
                    && let Ok(mut x) = backend.lock()
                    && x.is_empty()
                {
                    *x = b;
                }
                if let Some(p) = &o.progress {
                    p.fetch_add(1, Ordering::Relaxed);
                }
                out.push(s);
            }
            out
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        if let Ok(s) = t.await {
            samples.extend(s);
        }
    }
    let wall = t0.elapsed();
    let backend = backend.lock().map(|b| b.clone()).unwrap_or_default();
    Report {
        concurrency: o.concurrency,
        wall,
        samples,
        mated: probes.iter().map(|p| p.mate.is_some()).collect(),
        backend,
    }
}

async fn one(mut client: Identification, probes: &[BenchProbe], i: usize, o: &LoadOptions) -> (Sample, Option<String>) {
    let p = &probes[i];
    let mut req = tonic::Request::new(pb::IdentifyRequest {
        probe: Some(p.probe.clone()),
        max_candidates: o.max_candidates,
        request_id: p.name.clone(),
        galleries: o.galleries.clone(),
        ..Default::default()
    });
    req.set_timeout(o.timeout);
    let t = Instant::now();
    let r = client.identify(req).await;
    let latency = t.elapsed();
    match r {
        Ok(resp) => {
            let r = resp.into_inner();
            let mate_rank =
                p.mate.as_ref().and_then(|m| r.candidates.iter().position(|c| &c.subject_id == m).map(|x| x + 1));
            let server = super::convert::from_duration(&r.timings.as_ref().and_then(|t| t.total));
            let s = Sample {
                probe: i,
                latency,
                code: Code::Ok,
                mate_rank,
                hit: r.decision == pb::Decision::Hit as i32,
                top: r.candidates.first().map(|c| c.fused_score),
                server,
                message: String::new(),
            };
            (s, Some(r.backend))
        }
        Err(e) => (
            Sample {
                probe: i,
                latency,
                code: e.code(),
                mate_rank: None,
                hit: false,
                top: None,
                server: Duration::ZERO,
                message: e.message().to_string(),
            },
            None,
        ),
    }
}

/// Quantile `q` of sorted `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Accuracy over distinct probes (first reply of each).
#[derive(Debug, Clone, Copy, Default)]
pub struct Accuracy {
    /// Mated probes answered.
    pub mated: usize,
    /// Non-mated probes answered.
    pub non_mated: usize,
    /// Mated probes whose mate ranked first.
    pub rank1: f64,
    /// Mated probes with the mate among the candidates.
    pub in_list: f64,
    /// Mated probes not found as a hit at the server's threshold.
    pub fnir: f64,
    /// Non-mated probes that were hits at the server's threshold.
    pub fpir: f64,
    /// FNIR at the threshold giving 1% FPIR on these non-mated probes (empirical).
    pub fnir_at_fpir1: f64,
}

impl Report {
    /// Successful replies per second.
    pub fn qps(&self) -> f64 {
        self.samples.iter().filter(|s| s.code == Code::Ok).count() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Sorted latencies (ms) of successful replies.
    pub fn latencies_ms(&self) -> Vec<f64> {
        let mut v: Vec<f64> =
            self.samples.iter().filter(|s| s.code == Code::Ok).map(|s| s.latency.as_secs_f64() * 1e3).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// Latency quantile in ms.
    pub fn latency_ms(&self, q: f64) -> f64 {
        quantile(&self.latencies_ms(), q)
    }

    /// Replies by status code.
    pub fn codes(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for s in &self.samples {
            *m.entry(super::audit::code_name(s.code).to_string()).or_insert(0) += 1;
        }
        m
    }

    /// Accuracy over distinct probes.
    pub fn accuracy(&self) -> Accuracy {
        let mut seen = vec![false; self.mated.len()];
        let (mut mated, mut non) = (Vec::new(), Vec::new());
        for s in self.samples.iter().filter(|s| s.code == Code::Ok) {
            if std::mem::replace(&mut seen[s.probe], true) {
                continue;
            }
            if self.mated[s.probe] { mated.push(s) } else { non.push(s) }
        }
        let frac = |n: usize, d: usize| if d == 0 { f64::NAN } else { n as f64 / d as f64 };
        let mut tops: Vec<f64> = non.iter().map(|s| s.top.unwrap_or(0.0)).collect();
        tops.sort_by(f64::total_cmp);
        let t1 = if tops.is_empty() { f64::INFINITY } else { quantile(&tops, 0.99) };
        Accuracy {
            mated: mated.len(),
            non_mated: non.len(),
            rank1: frac(mated.iter().filter(|s| s.mate_rank == Some(1)).count(), mated.len()),
            in_list: frac(mated.iter().filter(|s| s.mate_rank.is_some()).count(), mated.len()),
            fnir: frac(mated.iter().filter(|s| !(s.mate_rank == Some(1) && s.hit)).count(), mated.len()),
            fpir: frac(non.iter().filter(|s| s.hit).count(), non.len()),
            fnir_at_fpir1: frac(
                mated.iter().filter(|s| !(s.mate_rank == Some(1) && s.top.unwrap_or(0.0) > t1)).count(),
                mated.len(),
            ),
        }
    }

    /// The markdown header of [`Report::row`].
    pub fn header() -> &'static str {
        "| concurrency | requests | QPS | p50 ms | p95 ms | p99 ms | max ms | errors | rank-1 | FNIR (server threshold) | FPIR (measured) | FNIR @ FPIR 1% |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    }

    /// One markdown row.
    pub fn row(&self) -> String {
        let a = self.accuracy();
        let errors: Vec<String> =
            self.codes().into_iter().filter(|(c, _)| c != "OK").map(|(c, n)| format!("{c} {n}")).collect();
        let pct = |x: f64| if x.is_nan() { "-".to_string() } else { format!("{:.1}%", 100.0 * x) };
        format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {} |",
            self.concurrency,
            self.samples.len(),
            self.qps(),
            self.latency_ms(0.5),
            self.latency_ms(0.95),
            self.latency_ms(0.99),
            self.latency_ms(1.0),
            if errors.is_empty() { "0".to_string() } else { errors.join(", ") },
            pct(a.rank1),
            pct(a.fnir),
            pct(a.fpir),
            pct(a.fnir_at_fpir1),
        )
    }

    /// Latency histogram: (bucket centre ms, share of replies), log-spaced buckets.
    pub fn histogram(&self) -> Vec<(f64, f64)> {
        let v = self.latencies_ms();
        if v.is_empty() {
            return Vec::new();
        }
        let (lo, hi) = (v[0].max(0.01).log10(), v[v.len() - 1].max(0.02).log10() + 1e-9);
        let bins = 40usize;
        let w = (hi - lo) / bins as f64;
        let mut c = vec![0usize; bins];
        for x in &v {
            let b = (((x.max(0.01).log10() - lo) / w) as usize).min(bins - 1);
            c[b] += 1;
        }
        c.iter().enumerate().map(|(i, n)| (10f64.powf(lo + (i as f64 + 0.5) * w), *n as f64 / v.len() as f64)).collect()
    }
}
