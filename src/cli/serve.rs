//! `whorl serve` and the client commands: identify, verify, enroll, delete,
//! subject, shards, stats, probes, and `bench --server`.

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use whorl::rescore::BackendChoice;
use whorl::server::client::{self, ClientOptions, Clients};
use whorl::server::config::Config;
use whorl::server::loadgen::{self, BenchProbe, LoadOptions, Report};
use whorl::server::pb;
use whorl::synth::{Subjects, Synth, SynthParams};
use whorl::template::{self, Format};

/// A runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

#[derive(Args)]
pub struct ServeArgs {
    /// TOML configuration (see `whorl::server::config`); flags and
    /// environment variables override it.
    #[arg(long, env = "WHORL_CONFIG")]
    config: Option<PathBuf>,
    /// Gallery folder.
    #[arg(long, env = "WHORL_GALLERY")]
    gallery: Option<PathBuf>,
    /// gRPC address, e.g. 0.0.0.0:50051.
    #[arg(long, env = "WHORL_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Prometheus `/metrics` address.
    #[arg(long, env = "WHORL_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Re-scoring backend: cpu, gpu or auto.
    #[arg(long, env = "WHORL_BACKEND")]
    backend: Option<BackendChoice>,
    /// Search workers (searches running at once); 0: one per core.
    #[arg(long)]
    workers: Option<usize>,
    /// Threads each search may use.
    #[arg(long)]
    threads_per_search: Option<usize>,
    /// Searches admitted at once (running or queued); more are shed.
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Audit trail (JSON lines).
    #[arg(long, env = "WHORL_AUDIT")]
    audit: Option<PathBuf>,
    /// Serve beyond loopback without authentication: every caller on the
    /// network may enrol, delete and read templates. Refused without this.
    #[arg(long)]
    dangerously_allow_unauthenticated_network: bool,
}

impl ServeArgs {
    fn config(self) -> Result<Config> {
        let mut c = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        if let Some(g) = self.gallery {
            c.gallery.path = g;
        }
        if let Some(l) = self.listen {
            c.server.listen = l;
        }
        if self.metrics_listen.is_some() {
            c.server.metrics_listen = self.metrics_listen;
        }
        if let Some(b) = self.backend {
            c.backend.choice = b;
        }
        if let Some(w) = self.workers {
            c.server.workers = w;
        }
        if let Some(t) = self.threads_per_search {
            c.server.threads_per_search = t;
        }
        if let Some(m) = self.max_in_flight {
            c.server.max_in_flight = m;
        }
        if self.audit.is_some() {
            c.audit.path = self.audit;
        }
        if self.dangerously_allow_unauthenticated_network {
            c.server.dangerously_allow_unauthenticated_network = true;
        }
        c.check()?;
        Ok(c)
    }
}

/// `whorl serve` with a `[cluster]` section: a cluster node.
fn serve_node(cfg: Config) -> Result<()> {
    let grace = Duration::from_secs(cfg.server.shutdown_grace_s);
    runtime()?.block_on(async move {
        let running = whorl::cluster::node::run::start(cfg).await?;
        eprintln!(
            "whorl: cluster node {} serving its node service on {}{}; SIGTERM or Ctrl-C stops",
            running.node.id(),
            running.addr,
            running.metrics_addr.map(|m| format!(", metrics on http://{m}/metrics")).unwrap_or_default()
        );
        stop_signal().await;
        eprintln!("whorl: stopping (resigning primaries, draining)");
        running.shutdown(grace).await?;
        Ok(())
    })
}

/// `whorl route`: the public API over a cluster.
pub fn route(a: ServeArgs) -> Result<()> {
    let cfg = a.config()?;
    if cfg.router.is_none() {
        bail!("whorl route needs a [router] section in its configuration (see whorl::cluster::config)");
    }
    let grace = Duration::from_secs(cfg.server.shutdown_grace_s);
    runtime()?.block_on(async move {
        let running = whorl::cluster::route::start(cfg).await?;
        eprintln!(
            "whorl: routing gRPC on {}{}; SIGTERM or Ctrl-C stops",
            running.addr,
            running.metrics_addr.map(|m| format!(", metrics on http://{m}/metrics")).unwrap_or_default()
        );
        stop_signal().await;
        running.shutdown(grace).await?;
        Ok(())
    })
}

/// Resolves when SIGTERM or Ctrl-C arrives.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let cfg = a.config()?;
    if cfg.cluster.is_some() {
        return serve_node(cfg);
    }
    runtime()?.block_on(async move {
        let running = whorl::server::start(cfg).await?;
        eprintln!(
            "whorl: serving gRPC on {}{} (health NOT_SERVING until the gallery is open); SIGTERM or Ctrl-C stops",
            running.addr,
            running.metrics_addr.map(|m| format!(", metrics on http://{m}/metrics")).unwrap_or_default()
        );
        // Another process writing the gallery is a reason to stop, not to
        // wait NOT_SERVING (other open failures keep the port answering).
        let (stopped, locked) = tokio::select! {
            _ = stop_signal() => (true, None),
            r = running.wait_ready(Duration::MAX) => (false, r.err().filter(|e| e.contains("gallery locked"))),
        };
        if let Some(e) = locked {
            running.shutdown().await?;
            bail!("{e}");
        }
        if !stopped {
            stop_signal().await;
        }
        eprintln!("whorl: stopping: draining requests");
        running.shutdown().await?;
        eprintln!("whorl: stopped");
        Ok(())
    })
}

#[derive(Args, Clone)]
pub struct Conn {
    /// Server URL.
    #[arg(long, env = "WHORL_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    /// Bearer token.
    #[arg(long, env = "WHORL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) of the server's certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Client certificate (PEM), for mutual TLS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Client key (PEM), for mutual TLS.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Server name to check the certificate against.
    #[arg(long)]
    domain: Option<String>,
}

impl Conn {
    async fn connect(&self) -> Result<Clients> {
        let o = ClientOptions {
            token: self.token.clone(),
            ca: self.ca.clone(),
            identity: self.cert.clone().zip(self.key.clone()),
            domain: self.domain.clone(),
            max_message_bytes: None,
        };
        client::connect(&self.server, &o).await.map_err(|e| anyhow!(e))
    }
}

fn status(e: tonic::Status) -> anyhow::Error {
    anyhow!("{}: {}", whorl::server::audit::code_name(e.code()), e.message())
}

fn read_records(files: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    files.iter().map(|f| std::fs::read(f).with_context(|| format!("reading {}", f.display()))).collect()
}

#[derive(Args)]
pub struct IdentifyArgs {
    #[command(flatten)]
    conn: Conn,
    /// Template files: together, the fingers of one person.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Search each file on its own instead.
    #[arg(long)]
    each: bool,
    /// Candidates wanted.
    #[arg(long, default_value_t = 10)]
    candidates: u32,
    /// Target FPIR of the decision (default: the server's).
    #[arg(long)]
    fpir: Option<f64>,
    /// Deadline.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print the replies as JSON.
    #[arg(long)]
    json: bool,
}

fn print_identify(name: &str, r: &pb::IdentifyResponse) {
    let decision = if r.decision == pb::Decision::Hit as i32 { "HIT" } else { "no hit" };
    let op = r.operating_point.clone().unwrap_or_default();
    let total = whorl::server::convert::from_duration(&r.timings.as_ref().and_then(|t| t.total));
    println!(
        "{name}: {decision} (threshold {:.2} decades for FPIR {} over {} subjects; {} comparisons; {:.1} ms; {})",
        op.threshold,
        op.target_fpir,
        op.gallery_subjects,
        r.comparisons,
        total.as_secs_f64() * 1e3,
        r.backend
    );
    println!("| rank | subject | fused (decades) | hit | fingers (position: score) |");
    println!("|---|---|---|---|---|");
    for c in &r.candidates {
        let f: Vec<String> = c.fingers.iter().map(|f| format!("{}: {:.3}", f.finger_position, f.score)).collect();
        println!("| {} | {} | {:.2} | {} | {} |", c.rank, c.subject_id, c.fused_score, c.hit, f.join(", "));
    }
}

fn response_json(r: &pb::IdentifyResponse) -> serde_json::Value {
    serde_json::json!({
        "request_id": r.request_id,
        "decision": whorl::server::convert::decision_name(r.decision),
        "threshold": r.operating_point.as_ref().map(|o| o.threshold),
        "backend": r.backend,
        "generation": r.gallery_generation,
        "candidates": r.candidates.iter().map(|c| serde_json::json!({
            "rank": c.rank, "subject": c.subject_id, "fused": c.fused_score, "hit": c.hit,
            "fingers": c.fingers.iter().map(|f| serde_json::json!({
                "probe_finger": f.probe_finger, "position": f.finger_position, "score": f.score,
                "evidence": f.evidence, "source": f.source})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

pub fn identify(a: IdentifyArgs) -> Result<()> {
    runtime()?.block_on(async move {
        let mut c = a.conn.connect().await?;
        let groups: Vec<(String, Vec<PathBuf>)> = if a.each {
            a.files.iter().map(|f| (f.display().to_string(), vec![f.clone()])).collect()
        } else {
            vec![(a.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" + "), a.files.clone())]
        };
        for (name, files) in groups {
            let mut req = tonic::Request::new(pb::IdentifyRequest {
                probe: Some(client::probe(read_records(&files)?)),
                max_candidates: a.candidates,
                decision: a.fpir.map(pb::identify_request::Decision::TargetFpir),
                request_id: name.clone(),
                ..Default::default()
            });
            req.set_timeout(a.timeout);
            let r = c.identification.identify(req).await.map_err(status).with_context(|| name.clone())?.into_inner();
            if a.json {
                println!("{}", response_json(&r));
            } else {
                print_identify(&name, &r);
            }
        }
        Ok(())
    })
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    conn: Conn,
    /// The enrolled subject claimed.
    #[arg(long)]
    subject: String,
    /// Template files of the person.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Target false match rate.
    #[arg(long)]
    fmr: Option<f64>,
}

pub fn verify(a: VerifyArgs) -> Result<()> {
    runtime()?.block_on(async move {
        let mut c = a.conn.connect().await?;
        let r = c
            .identification
            .verify(pb::VerifyRequest {
                subject_id: a.subject.clone(),
                probe: Some(client::probe(read_records(&a.files)?)),
                decision: a.fmr.map(pb::verify_request::Decision::TargetFmr),
                ..Default::default()
            })
            .await
            .map_err(status)?
            .into_inner();
        let decision = if r.decision == pb::Decision::Hit as i32 { "MATCH" } else { "no match" };
        let score = r.candidate.as_ref().map(|c| c.fused_score).unwrap_or(0.0);
        let thr = r.operating_point.as_ref().map(|o| o.threshold).unwrap_or(0.0);
        println!("{}: {decision} (fused {score:.2} decades, threshold {thr:.2}; {})", a.subject, r.backend);
        Ok(())
    })
}

#[derive(Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    conn: Conn,
    /// Subject id.
    #[arg(long)]
    subject: String,
    /// Labels, key=value.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Template files of the subject's fingers.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Replace the subject if it is enrolled (else: ALREADY_EXISTS).
    #[arg(long)]
    replace: bool,
}

pub fn enroll(a: EnrollArgs) -> Result<()> {
    let mut labels = std::collections::HashMap::new();
    for l in &a.labels {
        let (k, v) = l.split_once('=').ok_or_else(|| anyhow!("label '{l}' is not key=value"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    runtime()?.block_on(async move {
        let mut c = a.conn.connect().await?;
        let templates = read_records(&a.files)?.into_iter().map(client::finger).collect();
        let r = c
            .gallery
            .enroll(pb::EnrollRequest {
                subject_id: a.subject.clone(),
                templates,
                labels,
                replace: a.replace,
                ..Default::default()
            })
            .await
            .map_err(status)?
            .into_inner();
        println!("enrolled {} ({} templates), log sequence {}", a.subject, r.templates, r.sequence);
        Ok(())
    })
}

#[derive(Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    conn: Conn,
    /// Subject id.
    #[arg(long)]
    subject: String,
}

pub fn delete(a: DeleteArgs) -> Result<()> {
    runtime()?.block_on(async move {
        let mut c = a.conn.connect().await?;
        let r = c
            .gallery
            .delete(pb::DeleteRequest { subject_id: a.subject.clone(), ..Default::default() })
            .await
            .map_err(status)?;
        println!("deleted {}, log sequence {}", a.subject, r.into_inner().sequence);
        Ok(())
    })
}

#[derive(Args)]
pub struct ShardsArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: Option<ShardsCmd>,
}

#[derive(Subcommand)]
enum ShardsCmd {
    /// List the shards (the default).
    List,
    /// Load a shard file lying in the gallery folder.
    Load { file: String },
    /// Stop serving a shard.
    Unload { name: String },
    /// Gallery and server statistics.
    Stats,
    /// Fold the server's write-ahead log into shards (the server compacts its own gallery).
    Compact,
}

pub fn shards(a: ShardsArgs) -> Result<()> {
    runtime()?.block_on(async move {
        let mut c = a.conn.connect().await?;
        let print = |s: &pb::Shard| {
            println!(
                "| {} | {} | {} | {} | {:.1} | {}{} |",
                s.name,
                s.file,
                s.templates,
                s.subjects,
                s.bytes as f64 / 1048576.0,
                s.status,
                if s.error.is_empty() { String::new() } else { format!(": {}", s.error) }
            )
        };
        let header = "| shard | file | templates | subjects | MiB | status |\n|---|---|---|---|---|---|";
        match a.cmd.unwrap_or(ShardsCmd::List) {
            ShardsCmd::List => {
                let r = c.gallery.list_shards(pb::ListShardsRequest::default()).await.map_err(status)?.into_inner();
                println!("{header}");
                r.shards.iter().for_each(print);
            }
            ShardsCmd::Load { file } => {
                let s = c
                    .gallery
                    .load_shard(pb::LoadShardRequest { file, ..Default::default() })
                    .await
                    .map_err(status)?
                    .into_inner();
                println!("{header}");
                print(&s);
            }
            ShardsCmd::Unload { name } => {
                let s = c
                    .gallery
                    .unload_shard(pb::UnloadShardRequest { name, ..Default::default() })
                    .await
                    .map_err(status)?
                    .into_inner();
                println!("{header}");
                print(&s);
            }
            ShardsCmd::Stats => {
                let s = c.gallery.stats(pb::StatsRequest::default()).await.map_err(status)?.into_inner();
                println!("{s:#?}");
            }
            ShardsCmd::Compact => {
                let r = c.gallery.compact(pb::CompactRequest::default()).await.map_err(status)?.into_inner();
                println!("{r:#?}");
            }
        }
        Ok(())
    })
}

/// Where synthetic probes come from: the same generator (seed, fingers per
/// subject) the gallery was built with (`whorl build --synth`).
#[derive(Args, Clone)]
pub struct SynthProbeArgs {
    /// Subjects in the synthetic gallery (its templates / fingers per subject).
    #[arg(long)]
    pub(super) synth_subjects: Option<u64>,
    /// Fingers per subject the gallery was built with.
    #[arg(long, default_value_t = 1)]
    pub(super) fingers_per_subject: u32,
    /// Seed the gallery was built with.
    #[arg(long, default_value_t = 11)]
    pub(super) seed: u64,
    /// Mated probes (random enrolled subjects).
    #[arg(long, default_value_t = 500)]
    pub(super) mated: usize,
    /// Non-mated probes (subjects not enrolled).
    #[arg(long, default_value_t = 500)]
    pub(super) non_mated: usize,
    /// Fingers per probe (the first ones of the subject; at most fingers per subject).
    #[arg(long, default_value_t = 1)]
    pub(super) probe_fingers: u32,
    /// Impression used as the probe (0 is the enrolled one).
    #[arg(long, default_value_t = 1)]
    pub(super) impression: u32,
}

/// A synthetic probe: name, ISO records, mate.
pub type SynthProbe = (String, Vec<Vec<u8>>, Option<String>);

/// Synthetic probes.
pub fn synth_probes(a: &SynthProbeArgs) -> Result<Vec<SynthProbe>> {
    let n = a
        .synth_subjects
        .ok_or_else(|| anyhow!("give --probes DIR or --synth-subjects N (the synthetic gallery's size)"))?;
    if n == 0 {
        bail!("--synth-subjects must be positive");
    }
    if a.probe_fingers == 0 || a.probe_fingers > a.fingers_per_subject.max(1) {
        bail!("--probe-fingers must be 1..={}", a.fingers_per_subject.max(1));
    }
    let pop = Subjects::new(Synth::new(SynthParams::default(), a.seed), a.fingers_per_subject);
    let mut rng = a.seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut out = Vec::new();
    let mut make = |s: u64, mate: Option<String>| -> Result<()> {
        let ts: Vec<_> = pop.templates(s, a.impression).into_iter().take(a.probe_fingers as usize).collect();
        let records = ts
            .iter()
            .map(|t| template::write(std::slice::from_ref(t), Format::Iso2005))
            .collect::<Result<Vec<_>, _>>()?;
        out.push((format!("{}_{}", Subjects::id(s), a.impression), records, mate));
        Ok(())
    };
    for _ in 0..a.mated {
        let s = next() % n;
        make(s, Some(Subjects::id(s)))?;
    }
    for i in 0..a.non_mated as u64 {
        make(n + 1_000_000 + i, None)?;
    }
    Ok(out)
}

#[derive(Args)]
pub struct ProbesArgs {
    #[command(flatten)]
    synth: SynthProbeArgs,
    /// Output folder (ISO files and probes.tsv).
    #[arg(long)]
    out: PathBuf,
}

pub fn probes(a: ProbesArgs) -> Result<()> {
    let list = synth_probes(&a.synth)?;
    std::fs::create_dir_all(&a.out)?;
    let mut tsv = String::from("# file(s)\tmate ('-': not enrolled)\n");
    for (name, records, mate) in &list {
        let mut files = Vec::new();
        for (j, r) in records.iter().enumerate() {
            let f = if records.len() == 1 { format!("{name}.iso") } else { format!("{name}_f{j}.iso") };
            std::fs::write(a.out.join(&f), r)?;
            files.push(f);
        }
        tsv.push_str(&format!("{}\t{}\n", files.join(","), mate.as_deref().unwrap_or("-")));
    }
    std::fs::write(a.out.join(loadgen::LIST), tsv)?;
    println!("wrote {} probes to {}", list.len(), a.out.display());
    Ok(())
}

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    conn: Conn,
    /// Callers at once; several (comma-separated) run one after another.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    concurrency: Vec<usize>,
    /// How long each concurrency level runs.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Probe folder (probes.tsv, as `whorl probes` writes it).
    #[arg(long)]
    probes: Option<PathBuf>,
    #[command(flatten)]
    synth: SynthProbeArgs,
    /// Deadline of each request.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Candidates asked for.
    #[arg(long, default_value_t = 20)]
    candidates: u32,
    /// Stop each level after one pass over the probes.
    #[arg(long)]
    once: bool,
    /// Write report.md and latency.png here.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub async fn load_probes(dir: Option<&Path>, synth: &SynthProbeArgs) -> Result<Vec<BenchProbe>> {
    Ok(match dir {
        Some(d) => loadgen::read_probes(d).map_err(|e| anyhow!(e))?,
        None => synth_probes(synth)?
            .into_iter()
            .map(|(name, records, mate)| BenchProbe { name, probe: client::probe(records), mate })
            .collect(),
    })
}

/// Runs the levels and prints (and optionally writes) the report.
pub async fn bench_levels(
    c: &Clients,
    probes: Arc<Vec<BenchProbe>>,
    levels: &[usize],
    o: &LoadOptions,
    out: Option<&Path>,
    title: &str,
) -> Result<Vec<Report>> {
    let mut reports = Vec::new();
    println!("{}", Report::header());
    for &n in levels {
        let o = LoadOptions { concurrency: n, ..o.clone() };
        let r = loadgen::run(c.identification.clone(), Arc::clone(&probes), &o).await;
        println!("{}", r.row());
        reports.push(r);
    }
    if let Some(dir) = out {
        std::fs::create_dir_all(dir)?;
        let backend = reports.first().map(|r| r.backend.clone()).unwrap_or_default();
        let mut md = format!(
            "# {title}\n\nMachine: {} (client and server on one machine).\nDate: {}.\nBackend: {backend}.\nProbes: {} ({} mated).\n\n{}\n",
            super::machine(),
            super::today(),
            probes.len(),
            probes.iter().filter(|p| p.mate.is_some()).count(),
            Report::header()
        );
        for r in &reports {
            md.push_str(&r.row());
            md.push('\n');
        }
        md.push_str("\nLatency histogram (share of replies per log-spaced bucket): latency.png\n");
        std::fs::write(dir.join("report.md"), md)?;
        let names: Vec<String> = reports.iter().map(|r| format!("concurrency {}", r.concurrency)).collect();
        let series: Vec<whorl::plot::Series> = reports
            .iter()
            .zip(&names)
            .map(|(r, n)| whorl::plot::Series { name: n, points: r.histogram() })
            .filter(|s| !s.points.is_empty())
            .collect();
        let xmax = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(1.0f64, f64::max) * 1.5;
        let xmin = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(xmax, f64::min) / 1.5;
        let ymax = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.01f64, f64::max) * 1.1;
        if !series.is_empty() {
            whorl::plot::line_chart(
                &dir.join("latency.png"),
                "Identify latency (client side)",
                ("latency, ms", whorl::plot::Scale::Log(xmin.max(0.001), xmax)),
                ("share of replies", whorl::plot::Scale::Linear(0.0, ymax)),
                &series,
            )?;
        }
        println!("wrote {}", dir.join("report.md").display());
    }
    Ok(reports)
}

pub fn bench(a: BenchArgs) -> Result<()> {
    runtime()?.block_on(async move {
        let c = a.conn.connect().await?;
        let probes = Arc::new(load_probes(a.probes.as_deref(), &a.synth).await?);
        let o = LoadOptions {
            concurrency: 1,
            duration: a.duration,
            max_requests: a.once.then_some(probes.len()),
            timeout: a.timeout,
            warmup: 8.min(probes.len()),
            max_candidates: a.candidates,
        };
        let title = format!("whorl bench --server {}", a.conn.server);
        bench_levels(&c, probes, &a.concurrency, &o, a.out.as_deref(), &title).await?;
        Ok(())
    })
}
