//! `whorl cluster ...` (operators) and `whorl capacity`.

use super::serve::runtime;
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use whorl::cluster::admin;
use whorl::cluster::capacity::{self, Demand, NodeSpec, Profile};
use whorl::cluster::config::read_token;
use whorl::cluster::map::{ClusterConfig, GallerySpec, StaticMap};
use whorl::cluster::peer::Peers;
use whorl::cluster::store::Store;

/// Where the cluster is.
#[derive(Args, Clone)]
pub struct Where {
    /// etcd client URL(s), comma-separated.
    #[arg(long, env = "WHORL_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,
    /// The cluster's name (its etcd prefix).
    #[arg(long, env = "WHORL_CLUSTER", default_value = "whorl")]
    cluster: String,
    /// A static map file instead of etcd (status only).
    #[arg(long)]
    map: Option<PathBuf>,
    /// File holding the cluster's internal token (to poll the nodes).
    #[arg(long, env = "WHORL_CLUSTER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

impl Where {
    async fn store(&self) -> Result<std::sync::Arc<Store>> {
        if self.etcd.is_empty() {
            bail!("give --etcd URL (or WHORL_ETCD)");
        }
        Ok(Store::connect(&self.etcd, &self.cluster).await?)
    }

    fn peers(&self) -> Result<Peers> {
        let t = read_token(self.token_file.as_deref()).map_err(|e| anyhow!(e))?;
        Ok(Peers::new(t.as_deref())?)
    }
}

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Create a cluster: its groups, replicas and galleries, placed over the given nodes.
    Init {
        #[command(flatten)]
        at: Where,
        /// Virtual groups (fixed for the cluster's life).
        #[arg(long, default_value_t = 64)]
        groups: u32,
        /// Replicas per group.
        #[arg(long, default_value_t = 2)]
        replicas: u32,
        /// Replicas that must hold a write before it is acknowledged (0: a majority).
        #[arg(long, default_value_t = 0)]
        write_quorum: u32,
        /// Node ids the groups are placed on, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
        /// Galleries: NAME, NAME:default, NAME:notify, NAME:default:notify.
        #[arg(long = "gallery", required = true)]
        galleries: Vec<String>,
    },
    /// Nodes, groups, replicas, primaries, lag and readiness.
    Status {
        #[command(flatten)]
        at: Where,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a gallery to the cluster.
    AddGallery {
        #[command(flatten)]
        at: Where,
        /// NAME, NAME:default, NAME:notify, NAME:default:notify.
        gallery: String,
    },
    /// Move a group from one node to another (copy, catch up, switch, drop).
    Move {
        #[command(flatten)]
        at: Where,
        /// The group.
        #[arg(long)]
        group: u32,
        /// The node giving it up.
        #[arg(long)]
        from: String,
        /// The node taking it.
        #[arg(long)]
        to: String,
        /// How long to wait for the copy.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Move every group off a node (before taking it out).
    Drain {
        #[command(flatten)]
        at: Where,
        /// The node.
        node: String,
        /// How long to wait for each copy.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
}

fn gallery_spec(s: &str) -> Result<(String, GallerySpec)> {
    let mut parts = s.split(':');
    let name = parts.next().unwrap_or_default().to_string();
    let mut spec = GallerySpec::default();
    for p in parts {
        match p {
            "default" => spec.default = true,
            "notify" => spec.notify = true,
            other => bail!("gallery '{s}': unknown flag '{other}' (default, notify)"),
        }
    }
    Ok((name, spec))
}

pub fn cluster(cmd: ClusterCmd) -> Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            ClusterCmd::Init { at, groups, replicas, write_quorum, nodes, galleries } => {
                let mut g = BTreeMap::new();
                for s in &galleries {
                    let (n, spec) = gallery_spec(s)?;
                    g.insert(n, spec);
                }
                if !g.values().any(|s| s.default)
                    && let Some(first) = g.values_mut().next()
                {
                    first.default = true;
                }
                let cfg = ClusterConfig { groups, replicas, write_quorum, galleries: g };
                let store = at.store().await?;
                let placement = admin::init(&store, &cfg, &nodes).await?;
                let mut per: BTreeMap<&str, usize> = BTreeMap::new();
                for p in placement.values() {
                    for n in &p.replicas {
                        *per.entry(n).or_default() += 1;
                    }
                }
                println!(
                    "cluster '{}' created: {groups} groups × {replicas} replicas (writes need {}), galleries {:?}",
                    at.cluster,
                    cfg.quorum(),
                    cfg.galleries.keys().collect::<Vec<_>>()
                );
                for (n, c) in per {
                    println!("  {n}: {c} groups");
                }
                Ok(())
            }
            ClusterCmd::Status { at, json } => {
                let (map, reachable) = match &at.map {
                    Some(p) => (StaticMap::load(p).map_err(|e| anyhow!(e))?, false),
                    None => {
                        let s = at.store().await?;
                        (s.map().as_ref().clone(), s.reachable())
                    }
                };
                let st = admin::status(&map, &at.peers()?, reachable).await;
                if json {
                    println!("{}", serde_json::to_string_pretty(&st)?);
                } else {
                    print_status(&st);
                }
                Ok(())
            }
            ClusterCmd::AddGallery { at, gallery } => {
                let (name, spec) = gallery_spec(&gallery)?;
                admin::add_gallery(&*at.store().await?, &name, spec).await?;
                println!("gallery '{name}' added; the nodes open its groups now");
                Ok(())
            }
            ClusterCmd::Move { at, group, from, to, wait } => {
                let s = at.store().await?;
                admin::move_group(&s, &at.peers()?, group, &from, &to, wait).await?;
                println!("group {group} moved from {from} to {to}");
                Ok(())
            }
            ClusterCmd::Drain { at, node, wait } => {
                let s = at.store().await?;
                let moved = admin::drain(&s, &at.peers()?, &node, wait).await?;
                for (g, to) in &moved {
                    println!("group {g}: {node} → {to}");
                }
                println!("{node} holds no group now ({} moved)", moved.len());
                Ok(())
            }
        }
    })
}

fn print_status(st: &admin::ClusterStatus) {
    println!(
        "{} groups × {} replicas (writes need {}); galleries: {}; etcd {}",
        st.groups,
        st.replicas,
        st.write_quorum,
        st.galleries.join(", "),
        if st.etcd_reachable { "reachable" } else { "NOT reachable (static map, or last known map)" }
    );
    println!(
        "\n{:<16} {:<28} {:>5} {:>7} {:>7} {:>8} {:>9} {:>8}  backend",
        "node", "address", "up", "groups", "ready", "primary", "subjects", "max lag"
    );
    for n in &st.nodes {
        let ready = n.groups.iter().filter(|g| g.state == "ready" && !g.stale).count();
        let primary = n.groups.iter().filter(|g| g.primary).count();
        let subjects: u64 = n.groups.iter().map(|g| g.subjects).sum();
        let lag = n.groups.iter().map(|g| g.lag).max().unwrap_or(0);
        println!(
            "{:<16} {:<28} {:>5} {:>7} {:>7} {:>8} {:>9} {:>8}  {}",
            n.id,
            n.addr,
            if n.up { "yes" } else { "NO" },
            n.groups.len(),
            ready,
            primary,
            subjects,
            lag,
            if n.up { n.backend.clone() } else { n.error.clone() }
        );
    }
    let show = |what: &str, v: &[(String, u32)]| {
        if !v.is_empty() {
            let list: Vec<String> = v.iter().take(12).map(|(g, n)| format!("{g}/g{n:04}")).collect();
            println!("{what} ({}): {}{}", v.len(), list.join(" "), if v.len() > 12 { " ..." } else { "" });
        }
    };
    println!();
    show("UNAVAILABLE groups (no ready replica)", &st.unavailable);
    show("degraded groups (fewer ready replicas than placed)", &st.degraded);
    show("groups without a primary (writes wait)", &st.leaderless);
    if st.unavailable.is_empty() && st.degraded.is_empty() && st.leaderless.is_empty() {
        println!("every group of every gallery is ready on all its replicas and has a primary");
    }
}

#[derive(Args)]
pub struct CapacityArgs {
    /// Enrolled identities.
    #[arg(long, default_value_t = 300_000_000.0)]
    identities: f64,
    /// Fingers enrolled per identity.
    #[arg(long, default_value_t = 10.0)]
    fingers: f64,
    /// Average searches per second.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Peak searches per second.
    #[arg(long, default_value_t = 50.0)]
    peak: f64,
    /// Latency target.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// Fingers per probe (10: ten-prints).
    #[arg(long, default_value_t = 10.0)]
    probe_fingers: f64,
    /// Measured per-node figures (default: the ones measured for whorl's report).
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Cores per node.
    #[arg(long, default_value_t = 64.0)]
    cores: f64,
    /// RAM per node, GiB.
    #[arg(long, default_value_t = 512.0)]
    ram_gib: f64,
    /// Disk per node, TB.
    #[arg(long, default_value_t = 8.0)]
    disk_tb: f64,
    /// GPUs per node (0: CPU re-scoring).
    #[arg(long, default_value_t = 0.0)]
    gpus: f64,
    /// Replicas per group.
    #[arg(long, default_value_t = 2.0)]
    replicas: f64,
    /// Virtual groups.
    #[arg(long, default_value_t = 1024.0)]
    groups: f64,
    /// Cores one search may use on a node.
    #[arg(long, default_value_t = 8.0)]
    cores_per_search: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The profile measured for the report (committed with it).
const MEASURED: &str = include_str!("../../benches/reports/cluster/profile.json");

pub fn capacity(a: CapacityArgs) -> Result<()> {
    let text = match &a.profile {
        Some(p) => std::fs::read_to_string(p).with_context(|| p.display().to_string())?,
        None => MEASURED.to_string(),
    };
    let p: Profile = serde_json::from_str(&text).context("reading the profile")?;
    let d = Demand {
        identities: a.identities,
        fingers: a.fingers,
        rate: a.rate,
        peak: a.peak,
        latency_s: a.latency.as_secs_f64(),
        probe_fingers: a.probe_fingers,
    };
    let spec = NodeSpec {
        cores: a.cores,
        ram_bytes: a.ram_gib * (1u64 << 30) as f64,
        disk_bytes: a.disk_tb * 1e12,
        gpus: a.gpus,
        replicas: a.replicas,
        groups: a.groups,
        cores_per_search: a.cores_per_search,
        ..NodeSpec::default()
    };
    let s = capacity::size(&p, &d, &spec);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let gib = (1u64 << 30) as f64;
    println!("profile: {}", p.measured_on);
    println!(
        "gallery: {:.0} identities × {} fingers = {:.2e} fingers, {} replicas; {} search/s average, {} at peak; target {:?}",
        a.identities,
        a.fingers,
        a.identities * a.fingers,
        a.replicas,
        a.rate,
        a.peak,
        a.latency
    );
    println!(
        "nodes: {} ({} cores, {} GiB RAM, {} TB disk, {} GPUs each), bound by {}  [memory {}, disk {}, cpu {}, gpu {}]",
        s.nodes,
        a.cores,
        a.ram_gib,
        a.disk_tb,
        a.gpus,
        s.bound_by,
        s.nodes_by[0],
        s.nodes_by[1],
        s.nodes_by[2],
        s.nodes_by[3]
    );
    println!(
        "RAM (resident candidate stage): {:.0} GiB; disk: {:.1} TB; GPUs: {}",
        s.ram_bytes / gib,
        s.disk_bytes / 1e12,
        s.gpus
    );
    println!(
        "per search: {:.3} core-s candidates ({} groups × {:.0}-finger partitions), {:.3} core-s re-scoring, {:.3} fixed",
        s.core_s[0], a.groups, s.partition, s.core_s[1], s.core_s[2]
    );
    println!(
        "utilisation {:.0}% average, {:.0}% peak; expected latency {:.2} s average, {:.2} s peak: {}",
        s.utilisation[0] * 100.0,
        s.utilisation[1] * 100.0,
        s.latency_s[0],
        s.latency_s[1],
        if s.meets_target { "meets the target" } else { "MISSES the target" }
    );
    match (s.cluster_recall, s.exact_recall, s.recall) {
        (Some(c), Some(e), Some(r)) => println!(
            "mate kept among a finger's candidates: {:.1}% (exact search at the same list length over the {:.2e} fingers of a position: {:.1}%; HNSW over one {:.0}-finger partition: {:.1}%; beyond the measured sizes extrapolated in log size)",
            c * 100.0,
            s.position,
            e * 100.0,
            s.partition,
            r * 100.0
        ),
        (_, _, Some(r)) => println!(
            "candidate-stage mate recall at this partition size (extrapolated from measurements): {:.1}%",
            r * 100.0
        ),
        _ => {}
    }
    Ok(())
}
