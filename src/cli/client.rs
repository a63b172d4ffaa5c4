//! The client commands: identify, verify-subject, enroll, delete, shards,
//! probes and bench. Each parses its arguments, calls `whorl::client` and
//! prints what comes back.

use super::progress::Progress;
use anyhow::{Result, anyhow};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use whorl::client::bench::{LEGEND, levels_table};
use whorl::client::ops::{self, IdentifyOptions};
use whorl::client::probes::{self, SynthProbeSpec};
use whorl::server::client::{self, ClientOptions, Clients};
use whorl::server::loadgen::{self, BenchProbe, LoadOptions, Report};
use whorl::table::{count, number, seconds};

/// How to reach the server (shared by every client command).
#[derive(Args, Clone)]
pub struct Conn {
    /// Server address: host:port as `whorl serve` prints it (or
    /// http://host:port, https://host:port for TLS).
    #[arg(long, env = "WHORL_SERVER", default_value = "127.0.0.1:50051")]
    pub(super) server: String,
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
    pub(super) fn options(&self) -> ClientOptions {
        ClientOptions {
            token: self.token.clone(),
            ca: self.ca.clone(),
            identity: self.cert.clone().zip(self.key.clone()),
            domain: self.domain.clone(),
            max_message_bytes: None,
        }
    }

    pub(super) async fn connect(&self) -> Result<Clients> {
        Ok(client::connect(&self.server, &self.options()).await?)
    }
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
    /// Deadline, e.g. 10s or 500ms.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print the replies as JSON.
    #[arg(long)]
    json: bool,
    /// Galleries to search (repeat, or comma-separated; default: the server's default set).
    #[arg(long = "gallery", value_delimiter = ',')]
    galleries: Vec<String>,
    /// Transaction id (e.g. a booking number), carried into hit notifications.
    #[arg(long, default_value = "")]
    transaction: String,
    /// Accept a partial answer from a cluster that cannot reach every group.
    #[arg(long)]
    allow_partial: bool,
}

pub fn identify(a: IdentifyArgs) -> Result<()> {
    super::serve::runtime()?.block_on(async move {
        let mut c = a.conn.connect().await?;
        let o = IdentifyOptions {
            candidates: a.candidates,
            fpir: a.fpir,
            timeout: a.timeout,
            galleries: a.galleries.clone(),
            transaction_id: a.transaction.clone(),
            allow_partial: a.allow_partial,
        };
        for (name, files) in ops::identify_groups(&a.files, a.each) {
            let r = ops::identify(&mut c, &name, &files, &o).await?;
            if a.json {
                outln!("{}", ops::response_json(&r))?;
            } else {
                outln!("{}", ops::identify_summary(&name, &r))?;
                if r.galleries.len() > 1 || r.partial {
                    for g in &r.galleries {
                        outln!("  {}", ops::section_summary(g))?;
                    }
                }
                out!("{}", ops::candidates_table(&r))?;
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
    /// The gallery holding the subject (default: the server's first default gallery).
    #[arg(long, default_value = "")]
    gallery: String,
}

pub fn verify(a: VerifyArgs) -> Result<()> {
    super::serve::runtime()?.block_on(async move {
        let mut c = a.conn.connect().await?;
        outln!("{}", ops::verify(&mut c, &a.gallery, &a.subject, &a.files, a.fmr).await?)?;
        Ok(())
    })
}

#[derive(Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    conn: Conn,
    /// Subject id. An id already enrolled is refused unless --replace.
    #[arg(long)]
    subject: String,
    /// Labels, key=value (repeat the flag for several).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Template files of the subject's fingers.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Replace the subject if it is enrolled (all its templates and labels).
    #[arg(long)]
    replace: bool,
    /// The gallery to enrol into (default: the server's first default gallery).
    #[arg(long, default_value = "")]
    gallery: String,
}

pub fn enroll(a: EnrollArgs) -> Result<()> {
    let labels = ops::parse_labels(&a.labels)?;
    super::serve::runtime()?.block_on(async move {
        let mut c = a.conn.connect().await?;
        outln!("{}", ops::enroll(&mut c, &a.gallery, &a.subject, labels, &a.files, a.replace).await?)?;
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
    /// The gallery holding it (default: the server's first default gallery).
    #[arg(long, default_value = "")]
    gallery: String,
}

pub fn delete(a: DeleteArgs) -> Result<()> {
    super::serve::runtime()?.block_on(async move {
        let mut c = a.conn.connect().await?;
        let seq = ops::delete(&mut c, &a.gallery, &a.subject).await?;
        outln!("deleted {}, log sequence {seq}", a.subject)?;
        Ok(())
    })
}

#[derive(Args)]
pub struct ShardsArgs {
    #[command(flatten)]
    conn: Conn,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// The gallery (default: all for list and stats, the first default one otherwise).
    #[arg(long, global = true, default_value = "")]
    gallery: String,
    /// The virtual group whose folder holds the shard (a cluster; 0 on one server).
    #[arg(long, global = true, default_value_t = 0)]
    group: u32,
    #[command(subcommand)]
    cmd: Option<ShardsCmd>,
}

#[derive(Subcommand)]
enum ShardsCmd {
    /// List the shards (the default).
    List,
    /// Load a shard file lying in the server's gallery folder.
    Load {
        /// File name in the gallery folder, e.g. shard-0003.whorl.
        file: String,
    },
    /// Stop serving a shard (its files stay).
    Unload {
        /// Shard name, e.g. shard-0003.
        name: String,
    },
    /// Gallery size, load and backend (`whorl status` shows more).
    Stats,
    /// Fold the gallery's write-ahead log into shards (the server compacts its own gallery).
    Compact,
}

pub fn shards(a: ShardsArgs) -> Result<()> {
    super::serve::runtime()?.block_on(async move {
        let mut c = a.conn.connect().await?;
        let shards = match a.cmd.unwrap_or(ShardsCmd::List) {
            ShardsCmd::List => ops::list_shards(&mut c, &a.gallery).await?,
            ShardsCmd::Load { file } => vec![ops::load_shard(&mut c, &a.gallery, a.group, &file).await?],
            ShardsCmd::Unload { name } => vec![ops::unload_shard(&mut c, &a.gallery, a.group, &name).await?],
            ShardsCmd::Compact => {
                let r = ops::compact(&mut c, &a.gallery).await?;
                outln!(
                    "compacted: {} templates folded, {} removed; log {} -> {} bytes",
                    r.folded_templates,
                    r.removed_templates,
                    r.wal_bytes_before,
                    r.wal_bytes_after
                )?;
                return Ok(());
            }
            ShardsCmd::Stats => {
                let s = ops::stats(&mut c, &a.gallery).await?;
                if a.json {
                    outln!("{}", serde_json::to_string_pretty(&ops::stats_json(&s))?)?;
                } else {
                    out!("{}", ops::stats_table(&s))?;
                }
                return Ok(());
            }
        };
        if a.json {
            outln!("{}", serde_json::to_string_pretty(&ops::shards_json(&shards))?)?;
        } else {
            out!("{}", ops::shards_table(&shards))?;
        }
        Ok(())
    })
}

/// Where synthetic probes come from: the same generator (seed, fingers per
/// subject) the gallery was built with (`whorl build --synth`).
#[derive(Args, Clone)]
pub struct SynthProbeArgs {
    /// Subjects in the synthetic gallery (`whorl build --synth N` with one
    /// finger per subject: N).
    #[arg(long)]
    synth_subjects: Option<u64>,
    /// Fingers per subject the gallery was built with.
    #[arg(long, default_value_t = 1)]
    fingers_per_subject: u32,
    /// Seed the gallery was built with.
    #[arg(long, default_value_t = 11)]
    seed: u64,
    /// Mated probes: distinct enrolled subjects drawn at random.
    #[arg(long, default_value_t = 500)]
    mated: usize,
    /// Non-mated probes (subjects never enrolled).
    #[arg(long, default_value_t = 500)]
    non_mated: usize,
    /// Fingers per probe (the first ones of the subject; at most fingers per subject).
    #[arg(long, default_value_t = 1)]
    probe_fingers: u32,
    /// Impression used as the probe (0 is the enrolled one).
    #[arg(long, default_value_t = 1)]
    impression: u32,
}

impl SynthProbeArgs {
    fn spec(&self) -> Result<SynthProbeSpec> {
        let subjects = self
            .synth_subjects
            .ok_or_else(|| anyhow!("give --probes DIR or --synth-subjects N (the synthetic gallery's size)"))?;
        Ok(SynthProbeSpec {
            subjects,
            fingers_per_subject: self.fingers_per_subject,
            seed: self.seed,
            mated: self.mated,
            non_mated: self.non_mated,
            probe_fingers: self.probe_fingers,
            impression: self.impression,
        })
    }
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
    let list = probes::synth_probes(&a.synth.spec()?)?;
    let w = probes::write_folder(&a.out, &list)?;
    let mated = list.iter().filter(|p| p.mate.is_some()).count();
    outln!(
        "wrote {} probes ({mated} mated, {} never enrolled) as {} files, and their list {}, to {}",
        count(w.probes as u64),
        count((w.probes - mated) as u64),
        count(w.files as u64),
        loadgen::LIST,
        a.out.display()
    )?;
    Ok(())
}

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    conn: Conn,
    /// Callers at once; several (comma-separated) run one after another.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    concurrency: Vec<usize>,
    /// How long each concurrency level runs, e.g. 30s.
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

/// Probes from a folder, or synthetic ones.
fn load_probes(dir: Option<&Path>, synth: &SynthProbeArgs) -> Result<Vec<BenchProbe>> {
    Ok(match dir {
        Some(d) => loadgen::read_probes(d).map_err(|e| anyhow!(e))?,
        None => probes::synth_probes(&synth.spec()?)?.into_iter().map(BenchProbe::from).collect(),
    })
}

/// Runs one load level with a progress display: a bar of replies when the
/// level stops after a set number, a count and the time otherwise.
pub async fn run_level(c: &Clients, probes: &Arc<Vec<BenchProbe>>, o: &LoadOptions, label: &str) -> Report {
    let done = Arc::new(AtomicUsize::new(0));
    let o = LoadOptions { progress: Some(Arc::clone(&done)), ..o.clone() };
    let progress = Progress::new(label, o.max_requests.map(|n| n as u64), "replies");
    let watch = {
        let done = Arc::clone(&done);
        let p = Arc::new(progress);
        let p2 = Arc::clone(&p);
        let task = tokio::spawn(async move {
            loop {
                p2.set_position(done.load(Ordering::Relaxed) as u64);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        (task, p)
    };
    let r = loadgen::run(c.identification.clone(), Arc::clone(probes), &o).await;
    watch.0.abort();
    let _ = watch.0.await;
    drop(watch.1);
    r
}

/// One line per finished level, for the log while the rest runs.
pub fn level_line(r: &Report) -> String {
    format!(
        "  {} callers: {} replies in {}, {} QPS, p50 {} ms",
        r.concurrency,
        count(r.samples.len() as u64),
        seconds(r.wall),
        number(r.qps()),
        number(r.latency_ms(0.5))
    )
}

pub fn bench(a: BenchArgs) -> Result<()> {
    super::serve::runtime()?.block_on(async move {
        let c = a.conn.connect().await?;
        let probes = Arc::new(load_probes(a.probes.as_deref(), &a.synth)?);
        let o = LoadOptions {
            concurrency: 1,
            duration: a.duration,
            max_requests: a.once.then_some(probes.len()),
            timeout: a.timeout,
            warmup: 8.min(probes.len()),
            max_candidates: a.candidates,
            progress: None,
            galleries: Vec::new(),
        };
        let mut reports = Vec::new();
        for &n in &a.concurrency {
            let o = LoadOptions { concurrency: n, ..o.clone() };
            let r = run_level(&c, &probes, &o, &format!("{n} callers")).await;
            eprintln!("{}", level_line(&r));
            reports.push(r);
        }
        out!("{}", levels_table(&reports, &probes))?;
        outln!("\n{LEGEND}")?;
        if let Some(dir) = &a.out {
            let title = format!("whorl bench --server {}", a.conn.server);
            let h =
                whorl::client::bench::ReportHeader { title: &title, machine: &super::machine(), date: &super::today() };
            whorl::client::bench::write_report(dir, &h, &reports, &probes)?;
            outln!("wrote {}", dir.join("report.md").display())?;
        }
        Ok(())
    })
}
