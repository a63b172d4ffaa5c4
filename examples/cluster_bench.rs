//! Cluster measurements on loopback, every part real (etcd, `whorl serve`
//! nodes, `whorl route`), printed as markdown tables:
//!
//! 1. Enrolment and search through a router with 1, 2 and 3 nodes, next to
//!    one plain `whorl serve` holding the same subjects (router cost, and
//!    what the cluster answers against one node: same mates at rank 1).
//! 2. Failover: a node SIGKILLed under load and restarted: failed and
//!    partial answers, latency before / while down / after, enrolments
//!    acknowledged and refused meanwhile, and the catch-up time.
//!
//! ```text
//! cargo build --release && cargo run --release --example cluster_bench -- \
//!     --subjects 1000 --seconds 8
//! ```
//!
//! On one machine every process shares its cores: the figures say what
//! the router and replication cost next to one server in the same run, not
//! how throughput grows with machines (the capacity model does that from
//! per-node figures).

#[path = "../tests/support/cluster_harness.rs"]
mod harness;

use harness::{Cluster, Layout, Proc, port};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use whorl::server::client::{self, ClientOptions, Clients};
use whorl::server::loadgen::{self, BenchProbe, LoadOptions, Report};
use whorl::server::pb;
use whorl::synth::{Subjects, Synth, SynthParams};
use whorl::template::{self, Format, Template};

struct Args {
    subjects: u64,
    fingers: u32,
    seconds: u64,
    bin: PathBuf,
    nodes: Vec<usize>,
}

fn args() -> Args {
    let mut a = Args {
        subjects: 1000,
        fingers: 2,
        seconds: 8,
        bin: std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("whorl"),
        nodes: vec![1, 2, 3],
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < v.len() {
        let x = &v[i + 1];
        match v[i].as_str() {
            "--subjects" => a.subjects = x.parse().unwrap(),
            "--fingers" => a.fingers = x.parse().unwrap(),
            "--seconds" => a.seconds = x.parse().unwrap(),
            "--bin" => a.bin = PathBuf::from(x),
            "--nodes" => a.nodes = x.split(',').map(|n| n.parse().unwrap()).collect(),
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    assert!(a.bin.exists(), "no whorl binary at {} (cargo build --release, or --bin)", a.bin.display());
    a
}

fn population(fingers: u32) -> Subjects {
    Subjects::new(Synth::new(SynthParams::default(), 5), fingers)
}

fn iso(t: &Template) -> Vec<u8> {
    template::write(std::slice::from_ref(t), Format::Iso2005).unwrap()
}

fn enrol_req(gallery: &str, id: String, ts: &[Template]) -> pb::EnrollRequest {
    pb::EnrollRequest {
        subject_id: id,
        templates: ts.iter().map(|t| client::finger(iso(t))).collect(),
        gallery: gallery.into(),
        ..Default::default()
    }
}

async fn connect(url: &str) -> Clients {
    let t0 = Instant::now();
    loop {
        if let Ok(c) = client::connect(url, &ClientOptions::default()).await {
            return c;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "{url} did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Enrols subjects `0..n` from 4 callers (retrying UNAVAILABLE while the
/// cluster settles); enrolments per second.
async fn enrol_all(c: &Clients, gallery: &str, n: u64, fingers: u32) -> f64 {
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (mut c, next, gallery) = (c.clone(), Arc::clone(&next), gallery.to_string());
        tasks.push(tokio::spawn(async move {
            let pop = population(fingers);
            loop {
                let s = next.fetch_add(1, Ordering::Relaxed);
                if s >= n {
                    return;
                }
                let req = enrol_req(&gallery, Subjects::id(s), &pop.templates(s, 0));
                let t = Instant::now();
                loop {
                    match c.gallery.enroll(req.clone()).await {
                        Ok(_) => break,
                        Err(e) if e.code() == tonic::Code::Unavailable && t.elapsed() < Duration::from_secs(60) => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        Err(e) => panic!("enrolling {s}: {e:?}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

/// Mated probes (impression 1 of `fingers` fingers of every 5th subject)
/// and non-mated ones (subjects never enrolled).
fn probes(n: u64, fingers: u32, use_fingers: usize, gallery: &str) -> Arc<Vec<BenchProbe>> {
    let pop = population(fingers);
    let mut v = Vec::new();
    for s in (0..n).step_by(5) {
        let ts = pop.templates(s, 1);
        v.push(BenchProbe {
            name: format!("{gallery}-{s}"),
            probe: client::probe(ts[..use_fingers].iter().map(iso).collect()),
            mate: Some(Subjects::id(s)),
        });
    }
    for s in n + 1_000..n + 1_050 {
        let ts = pop.templates(s, 1);
        v.push(BenchProbe {
            name: format!("nonmated-{s}"),
            probe: client::probe(ts[..use_fingers].iter().map(iso).collect()),
            mate: None,
        });
    }
    Arc::new(v)
}

fn load(concurrency: usize, seconds: u64) -> LoadOptions {
    LoadOptions {
        concurrency,
        duration: Duration::from_secs(seconds),
        max_requests: None,
        timeout: Duration::from_secs(10),
        warmup: 8,
        max_candidates: 10,
        progress: None,
        galleries: Vec::new(),
    }
}

struct Row {
    what: String,
    enrol_per_s: f64,
    c1: Report,
    c4: Report,
}

fn rank1(r: &Report) -> f64 {
    r.accuracy().rank1 * 100.0
}

fn errors(r: &Report) -> usize {
    r.samples.iter().filter(|s| s.code != tonic::Code::Ok).count()
}

async fn measure(what: &str, c: &Clients, probes: &Arc<Vec<BenchProbe>>, seconds: u64, enrol_per_s: f64) -> Row {
    let c1 = loadgen::run(c.identification.clone(), Arc::clone(probes), &load(1, seconds)).await;
    let c4 = loadgen::run(c.identification.clone(), Arc::clone(probes), &load(4, seconds)).await;
    Row { what: what.into(), enrol_per_s, c1, c4 }
}

fn print_rows(rows: &[Row]) {
    println!(
        "| setup | enrolments/s (4 callers) | p50 ms (1 caller) | p99 ms (1 caller) | q/s (4 callers) | p99 ms (4 callers) | rank-1 % | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            r.what,
            r.enrol_per_s,
            r.c1.latency_ms(0.5),
            r.c1.latency_ms(0.99),
            r.c4.qps(),
            r.c4.latency_ms(0.99),
            rank1(&r.c4),
            errors(&r.c1) + errors(&r.c4)
        );
    }
}

async fn scaling(a: &Args) {
    let mut rows = Vec::new();
    for use_fingers in [1usize, a.fingers as usize] {
        // One plain server holding the same subjects.
        let dir = harness::tempdir("bench-single");
        let gdir = dir.join("gallery");
        whorl::gallery::Gallery::create(&gdir, &whorl::embed::Embedder::default(), &whorl::mcc::Matcher::default())
            .unwrap();
        let p = port();
        let _single = Proc::spawn(
            &a.bin,
            &dir.join("serve.log"),
            &["serve", "--gallery", gdir.to_str().unwrap(), "--listen", &format!("127.0.0.1:{p}"), "--backend", "cpu"],
        );
        let c = connect(&format!("http://127.0.0.1:{p}")).await;
        let eps = enrol_all(&c, "", a.subjects, a.fingers).await;
        let pr = probes(a.subjects, a.fingers, use_fingers, "");
        rows.push(measure(&format!("one `whorl serve`, {use_fingers}-finger probes"), &c, &pr, a.seconds, eps).await);
        drop(_single);
        for &n in &a.nodes {
            let layout = Layout {
                nodes: n,
                replicas: n.min(2),
                groups: 16,
                galleries: vec!["main:default".into()],
                workers: 2,
                ..Layout::small(&a.bin)
            };
            let cl = Cluster::start(&format!("bench{n}"), layout).await.expect("etcd is needed");
            let c = cl.client(0).await;
            let eps = enrol_all(&c, "main", a.subjects, a.fingers).await;
            let pr = probes(a.subjects, a.fingers, use_fingers, "main");
            let what = format!(
                "router + {n} node{} (R={}), {use_fingers}-finger probes",
                if n == 1 { "" } else { "s" },
                n.min(2)
            );
            rows.push(measure(&what, &c, &pr, a.seconds, eps).await);
        }
    }
    print_rows(&rows);
}

async fn failover(a: &Args) {
    let layout = Layout {
        nodes: 3,
        replicas: 2,
        groups: 16,
        galleries: vec!["main:default".into()],
        workers: 2,
        ..Layout::small(&a.bin)
    };
    let mut cl = Cluster::start("bench-failover", layout).await.expect("etcd is needed");
    let c = cl.client(0).await;
    enrol_all(&c, "main", a.subjects, a.fingers).await;
    let pr = probes(a.subjects, a.fingers, 1, "main");
    // Searches from 2 callers, each sample stamped with when it started.
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..2usize {
        let (mut c, pr, stop) = (c.clone(), Arc::clone(&pr), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut out: Vec<(f64, f64, bool, bool)> = Vec::new();
            let mut i = k;
            while !stop.load(Ordering::Relaxed) {
                let p = &pr[i % pr.len()];
                let req =
                    pb::IdentifyRequest { probe: Some(p.probe.clone()), max_candidates: 10, ..Default::default() };
                let s = t0.elapsed().as_secs_f64();
                let r = c.identification.identify(req).await;
                let ms = (t0.elapsed().as_secs_f64() - s) * 1e3;
                let (ok, partial) = match &r {
                    Ok(x) => (true, x.get_ref().partial),
                    Err(_) => (false, false),
                };
                out.push((s, ms, ok, partial));
                i += 2;
            }
            out
        }));
    }
    // Enrolments meanwhile, one caller.
    let enrol_stop = Arc::clone(&stop);
    let (mut ec, fingers, base) = (c.clone(), a.fingers, a.subjects);
    let enroller = tokio::spawn(async move {
        let pop = population(fingers);
        let (mut acked, mut refused, mut s) = (0u64, 0u64, base + 10_000);
        while !enrol_stop.load(Ordering::Relaxed) {
            match ec.gallery.enroll(enrol_req("main", Subjects::id(s), &pop.templates(s, 0))).await {
                Ok(_) => acked += 1,
                Err(_) => refused += 1,
            }
            s += 1;
        }
        (acked, refused)
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let kill_at = t0.elapsed().as_secs_f64();
    cl.nodes[1].signal("KILL");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let restart_at = t0.elapsed().as_secs_f64();
    cl.nodes[1].restart();
    cl.wait_healthy(Duration::from_secs(300)).await;
    let healthy_at = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let (acked, refused) = enroller.await.unwrap();
    let phase = |from: f64, to: f64| {
        let v: Vec<&(f64, f64, bool, bool)> = all.iter().filter(|x| x.0 >= from && x.0 < to).collect();
        let mut ms: Vec<f64> = v.iter().map(|x| x.1).collect();
        ms.sort_by(f64::total_cmp);
        let q = |p: f64| if ms.is_empty() { 0.0 } else { ms[((ms.len() - 1) as f64 * p).round() as usize] };
        let failed = v.iter().filter(|x| !x.2).count();
        let partial = v.iter().filter(|x| x.3).count();
        (v.len(), q(0.5), q(0.99), ms.last().copied().unwrap_or(0.0), failed, partial)
    };
    println!("| phase | searches | p50 ms | p99 ms | max ms | failed | partial |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, from, to) in [
        ("before the kill", 0.0, kill_at),
        ("first 2 s after SIGKILL", kill_at, kill_at + 2.0),
        ("node down (rest)", kill_at + 2.0, restart_at),
        ("restarted, catching up", restart_at, healthy_at),
        ("after catch-up", healthy_at, f64::MAX),
    ] {
        let (n, p50, p99, max, failed, partial) = phase(from, to);
        println!("| {name} | {n} | {p50:.1} | {p99:.1} | {max:.1} | {failed} | {partial} |");
    }
    println!();
    println!(
        "enrolments while searching: {acked} acknowledged, {refused} refused (UNAVAILABLE while a group's primary was down); restart to every group ready again: {:.1} s",
        healthy_at - restart_at
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    println!("# cluster bench: {} subjects x {} fingers, {} s per point\n", a.subjects, a.fingers, a.seconds);
    println!("## Router, nodes, one server\n");
    scaling(&a).await;
    println!("\n## Failover (3 nodes, R=2, 1-finger searches from 2 callers, enrolments from 1)\n");
    failover(&a).await;
}
