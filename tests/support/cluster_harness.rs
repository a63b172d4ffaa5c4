//! A cluster on loopback for tests and benchmarks, every part real: an
//! etcd server, `whorl cluster init`, node processes (`whorl serve` with a
//! `[cluster]` section) and router processes (`whorl route`), each a child
//! process killed when dropped, its stderr in a log file.
//!
//! Shared by `tests/cluster.rs` and `examples/cluster_bench.rs` (included
//! with `#[path]`), which pass the `whorl` binary to run.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use whorl::cluster::local_etcd::{self, LocalEtcd};
use whorl::cluster::peer::Peers;
use whorl::cluster::store::Store;
use whorl::server::client::{self, ClientOptions, Clients};

pub fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("whorl-cluster-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// How to lay a cluster out.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The `whorl` binary.
    pub bin: PathBuf,
    pub nodes: usize,
    pub replicas: usize,
    pub groups: u32,
    /// `--gallery` arguments of `whorl cluster init` (name[:default][:notify]).
    pub galleries: Vec<String>,
    /// Search workers per node.
    pub workers: usize,
    /// Threads one search may use on a node (0: the default).
    pub threads_per_search: usize,
}

impl Layout {
    /// Three nodes, two replicas, eight groups, galleries "main" (default,
    /// notifies) and "other", one worker per node.
    pub fn small(bin: &Path) -> Layout {
        Layout {
            bin: bin.to_path_buf(),
            nodes: 3,
            replicas: 2,
            groups: 8,
            galleries: vec!["main:default:notify".into(), "other".into()],
            workers: 1,
            threads_per_search: 0,
        }
    }
}
pub struct Proc {
    child: Option<Child>,
    pub log: PathBuf,
    args: Vec<String>,
    bin: PathBuf,
}

impl Proc {
    pub fn spawn(bin: &Path, log: &Path, args: &[&str]) -> Proc {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(bin)
            .args(args)
            .env("WHORL_LOG", "info,whorl::cluster=debug")
            .env("XDG_RUNTIME_DIR", "/tmp")
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap();
        Proc {
            child: Some(child),
            log: log.to_path_buf(),
            args: args.iter().map(|s| s.to_string()).collect(),
            bin: bin.to_path_buf(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status();
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills and starts the same command again, its log appended to.
    pub fn restart(&mut self) {
        self.kill();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut again = Proc::spawn(&self.bin, &self.log, &args);
        self.child = again.child.take();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Cluster {
    pub etcd: LocalEtcd,
    pub dir: PathBuf,
    pub name: String,
    pub layout: Layout,
    pub nodes: Vec<Proc>,
    pub node_ids: Vec<String>,
    pub routers: Vec<(Proc, String)>,
}

impl Cluster {
    /// etcd, `whorl cluster init`, the nodes, one router; waits until
    /// ready. `None` when no etcd is installed (and not required).
    pub async fn start(name: &str, layout: Layout) -> Option<Cluster> {
        let etcd = local_etcd::for_tests(name)?;
        let dir = tempdir(name);
        let ids: Vec<String> = (0..layout.nodes).map(|i| format!("n{i}")).collect();
        let mut init = Command::new(&layout.bin);
        init.args(["cluster", "init", "--etcd", &etcd.url, "--cluster", name, "--groups", &layout.groups.to_string()])
            .args(["--replicas", &layout.replicas.to_string(), "--nodes", &ids.join(",")]);
        for g in &layout.galleries {
            init.args(["--gallery", g]);
        }
        let out = init.output().unwrap();
        assert!(out.status.success(), "cluster init: {}", String::from_utf8_lossy(&out.stderr));
        let mut nodes = Vec::new();
        for id in &ids {
            let p = port();
            let cfg = dir.join(format!("{id}.toml"));
            let threads = if layout.threads_per_search > 0 {
                format!("threads_per_search = {}\n", layout.threads_per_search)
            } else {
                String::new()
            };
            std::fs::write(
                &cfg,
                format!(
                    "[server]\nlisten = \"127.0.0.1:{p}\"\nworkers = {}\n{threads}\n[cluster]\nname = \"{name}\"\netcd = [\"{}\"]\nnode_id = \"{id}\"\ndata_dir = \"{}\"\n\n[backend]\nchoice = \"cpu\"\n",
                    layout.workers,
                    etcd.url,
                    dir.join(id).display()
                ),
            )
            .unwrap();
            let log = dir.join(format!("{id}.log"));
            nodes.push(Proc::spawn(&layout.bin, &log, &["serve", "--config", cfg.to_str().unwrap()]));
        }
        let mut c = Cluster { etcd, dir, name: name.to_string(), layout, nodes, node_ids: ids, routers: Vec::new() };
        c.add_router();
        c.wait_healthy(Duration::from_secs(120)).await;
        Some(c)
    }

    pub fn add_router(&mut self) -> String {
        let p = port();
        let cfg = self.dir.join(format!("router{}.toml", self.routers.len()));
        std::fs::write(
            &cfg,
            format!(
                "[server]\nlisten = \"127.0.0.1:{p}\"\n\n[router]\nname = \"{}\"\netcd = [\"{}\"]\nhedge_min_ms = 30\n\n[notifications]\ndir = \"{}\"\n",
                self.name,
                self.etcd.url,
                self.dir.join("events").display()
            ),
        )
        .unwrap();
        let log = self.dir.join(format!("router{}.log", self.routers.len()));
        let proc = Proc::spawn(&self.layout.bin, &log, &["route", "--config", cfg.to_str().unwrap()]);
        let url = format!("http://127.0.0.1:{p}");
        self.routers.push((proc, url.clone()));
        url
    }

    pub async fn store(&self) -> Arc<Store> {
        Store::connect(std::slice::from_ref(&self.etcd.url), &self.name).await.unwrap()
    }

    /// Until every group of every gallery is ready on both replicas and has a primary.
    pub async fn wait_healthy(&self, limit: Duration) {
        let t0 = Instant::now();
        let store = self.store().await;
        let peers = Peers::new(None).unwrap();
        loop {
            let st = whorl::cluster::admin::status(&store.map(), &peers, true).await;
            if st.nodes.len() == self.layout.nodes
                && st.nodes.iter().all(|n| n.up)
                && st.unavailable.is_empty()
                && st.degraded.is_empty()
                && st.leaderless.is_empty()
            {
                return;
            }
            if t0.elapsed() > limit {
                for n in &self.nodes {
                    eprintln!("--- {}\n{}", n.log.display(), n.log_text());
                }
                panic!("the cluster did not become healthy: {st:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn client(&self, router: usize) -> Clients {
        let url = &self.routers[router].1;
        let t0 = Instant::now();
        loop {
            match client::connect(url, &ClientOptions::default()).await {
                Ok(c) => return c,
                Err(e) if t0.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("router {url}: {e}\n{}", self.routers[router].0.log_text()),
            }
        }
    }

    /// The nodes holding `group` (indexes into `nodes`).
    pub async fn holders(&self, group: u32) -> Vec<usize> {
        let m = self.store().await.map();
        m.replicas(group).iter().map(|n| self.node_ids.iter().position(|x| x == n).unwrap()).collect()
    }
}
