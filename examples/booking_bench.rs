//! The booking flow's costs, printed as markdown tables:
//!
//! 1. A search of two galleries in one call against a search of one (the
//!    same probes; latency from one caller, throughput from four).
//! 2. How long a hit notification takes to reach a connected subscriber,
//!    counted from the moment the booking station has its reply (and from
//!    when it sent the request), while other searches load the server.
//!
//! ```text
//! cargo run --release --example booking_bench -- --subjects 3000 --seconds 8 --events 200
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use whorl::embed::Embedder;
use whorl::gallery::{self, BuildOptions};
use whorl::mcc::Matcher;
use whorl::rescore::BackendChoice;
use whorl::server::client::{self, ClientOptions, Clients};
use whorl::server::config::{Config, NamedGallery};
use whorl::server::loadgen::{self, BenchProbe, LoadOptions, Report};
use whorl::server::pb;
use whorl::synth::{Subjects, Synth, SynthParams};
use whorl::template::{self, Format, Template};

const FINGERS: u32 = 2;

struct Args {
    subjects: u64,
    seconds: u64,
    events: usize,
}

fn args() -> Args {
    let mut a = Args { subjects: 3000, seconds: 8, events: 200 };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for w in v.chunks(2) {
        match (w[0].as_str(), w.get(1)) {
            ("--subjects", Some(x)) => a.subjects = x.parse().unwrap(),
            ("--seconds", Some(x)) => a.seconds = x.parse().unwrap(),
            ("--events", Some(x)) => a.events = x.parse().unwrap(),
            (o, _) => panic!("unknown option {o}"),
        }
    }
    a
}

fn population() -> Subjects {
    Subjects::new(Synth::new(SynthParams::default(), 91), FINGERS)
}

fn iso(t: &Template) -> Vec<u8> {
    template::write(std::slice::from_ref(t), Format::Iso2005).unwrap()
}

fn build(dir: &Path, subjects: std::ops::Range<u64>) {
    let pop = population();
    let items = subjects.flat_map(move |s| pop.templates(s, 0).into_iter().map(move |t| (Subjects::id(s), vec![], t)));
    gallery::build(dir, &Embedder::default(), &Matcher::default(), &BuildOptions::default(), items, |_, _| {}).unwrap();
}

fn probe(s: u64) -> pb::Probe {
    client::probe(population().templates(s, 1).iter().map(iso).collect())
}

/// Mated probes of subjects in both galleries, and non-mated ones.
fn probes(n: u64) -> Arc<Vec<BenchProbe>> {
    let mut v: Vec<BenchProbe> = (n / 2..n)
        .step_by(10)
        .map(|s| BenchProbe { name: format!("s{s}"), probe: probe(s), mate: Some(Subjects::id(s)) })
        .collect();
    v.extend((2 * n..2 * n + 50).map(|s| BenchProbe { name: format!("n{s}"), probe: probe(s), mate: None }));
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

async fn connect(addr: &str) -> Clients {
    client::connect(addr, &ClientOptions::default()).await.unwrap()
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[((v.len() - 1) as f64 * q).round() as usize] }
}

async fn delivery(addr: &str, a: &Args) {
    // Background load: non-hit searches of both galleries from 3 callers.
    let stop = Arc::new(AtomicBool::new(false));
    let mut bg = Vec::new();
    for k in 0..3u64 {
        let (mut c, stop, n) = (connect(addr).await, Arc::clone(&stop), a.subjects);
        bg.push(tokio::spawn(async move {
            let mut i = 0u64;
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let req = pb::IdentifyRequest { probe: Some(probe(2 * n + (k * 1000 + i) % 50)), ..Default::default() };
                if c.identification.identify(req).await.is_ok() {
                    done += 1;
                }
                i += 1;
            }
            done
        }));
    }
    // The subscriber, stamping each event as it arrives.
    let mut sub = connect(addr).await;
    let mut stream = sub
        .notifications
        .subscribe(pb::SubscribeRequest { subscriber: "bench".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let reader = tokio::spawn(async move {
        while let Ok(Some(ev)) = stream.message().await {
            let _ = tx.send((ev.transaction_id.clone(), Instant::now()));
        }
    });
    // Bookings of people in the immigration gallery, one at a time.
    let mut station = connect(addr).await;
    let mut sent: HashMap<String, (Instant, Instant)> = HashMap::new();
    let t0 = Instant::now();
    for i in 0..a.events {
        // Subjects n/2..n are in both galleries: each booking is an immigration hit.
        let s = a.subjects / 2 + i as u64 % (a.subjects / 2);
        let tx_id = format!("B-{i}");
        let req = pb::IdentifyRequest {
            probe: Some(probe(s)),
            galleries: vec!["criminal".into(), "immigration".into()],
            transaction_id: tx_id.clone(),
            ..Default::default()
        };
        let at = Instant::now();
        let r = station.identification.identify(req).await.unwrap().into_inner();
        let replied = Instant::now();
        if r.galleries.iter().any(|g| !g.notifications.is_empty()) {
            sent.insert(tx_id, (at, replied));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = t0.elapsed();
    let mut after_reply = Vec::new();
    let mut after_send = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while after_reply.len() < sent.len() && Instant::now() < deadline {
        if let Ok(Some((tx_id, at))) = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await
            && let Some((s, r)) = sent.get(&tx_id)
        {
            // Negative: the event reached the subscriber before the station had its reply.
            after_reply.push(if at >= *r { (at - *r).as_secs_f64() } else { -(*r - at).as_secs_f64() } * 1e3);
            after_send.push((at - *s).as_secs_f64() * 1e3);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut background = 0;
    for t in bg {
        background += t.await.unwrap();
    }
    reader.abort();
    println!(
        "| events | delivered | from the reply: p50 ms | p99 ms | max ms | from the request: p50 ms | p99 ms | background searches/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let n = after_reply.len();
    let max = after_reply.iter().copied().fold(f64::MIN, f64::max);
    println!(
        "| {} | {n} | {:.2} | {:.2} | {max:.2} | {:.2} | {:.2} | {:.0} |",
        sent.len(),
        quantile(&mut after_reply, 0.5),
        quantile(&mut after_reply, 0.99),
        quantile(&mut after_send, 0.5),
        quantile(&mut after_send, 0.99),
        background as f64 / wall.as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let root: PathBuf = std::env::temp_dir().join(format!("whorl-booking-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    // Criminal records: subjects 0..n; immigration: n/2..3n/2 (half shared).
    build(&root.join("criminal"), 0..a.subjects);
    build(&root.join("immigration"), a.subjects / 2..a.subjects * 3 / 2);
    let mut c = Config::default();
    c.gallery.path = root.join("criminal");
    c.gallery.name = "criminal".into();
    c.galleries =
        vec![NamedGallery { name: "immigration".into(), path: root.join("immigration"), default: true, notify: true }];
    c.notifications.dir = Some(root.join("events"));
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.backend.choice = BackendChoice::Cpu;
    let server = whorl::server::start(c).await.unwrap();
    server.wait_ready(Duration::from_secs(600)).await.unwrap();
    let addr = format!("http://{}", server.addr);
    println!(
        "# booking bench: two galleries of {} subjects x {FINGERS} fingers (half of them in both), {} s per point\n",
        a.subjects, a.seconds
    );
    println!("## One gallery against two in one call (2-finger probes)\n");
    println!("| galleries | p50 ms (1 caller) | p99 ms (1 caller) | q/s (4 callers) | p99 ms (4 callers) | errors |");
    println!("|---|---:|---:|---:|---:|---:|");
    let pr = probes(a.subjects);
    for gs in [vec!["criminal"], vec!["immigration"], vec!["criminal", "immigration"]] {
        let named: Vec<String> = gs.iter().map(|g| g.to_string()).collect();
        let ident = connect(&addr).await.identification;
        let one = loadgen::run(
            ident.clone(),
            Arc::clone(&pr),
            &LoadOptions { galleries: named.clone(), ..load(1, a.seconds) },
        )
        .await;
        let four =
            loadgen::run(ident, Arc::clone(&pr), &LoadOptions { galleries: named.clone(), ..load(4, a.seconds) }).await;
        let errors = |r: &Report| r.samples.iter().filter(|s| s.code != tonic::Code::Ok).count();
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            named.join(" + "),
            one.latency_ms(0.5),
            one.latency_ms(0.99),
            four.qps(),
            four.latency_ms(0.99),
            errors(&one) + errors(&four)
        );
    }
    println!("\n## Hit notification delivery under load (3 callers searching both galleries, bookings every 20 ms)\n");
    delivery(&addr, &a).await;
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&root);
}
