//! Measures what the hardening of issue 12 does to an attack, side by side
//! in one run (the tables of `benches/reports/hardening.md`):
//!
//! 1. the cost of preparing one probe view against its minutiae (why the caps);
//! 2. a normal caller's identify latency alone and while heavy probes
//!    arrive: refused by the caps, the heaviest the caps allow, and with
//!    the caps raised (the server before the fix) with and without
//!    deadlines (cancellation);
//! 3. restart time against the write-ahead log's size, before and after
//!    compaction;
//! 4. silent connections (closed by the handshake timeout and the
//!    connection limit) and an unauthenticated flood (audit lines written).
//!
//! ```sh
//! nice -n 5 cargo run --release --example hardening -- [--subjects 20000] [--seconds 15] [--out DIR] [--sections 1,2,3,4]
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use whorl::embed::Embedder;
use whorl::gallery::{self, BuildOptions, Gallery, GalleryOptions};
use whorl::mcc::Matcher;
use whorl::rescore::BackendChoice;
use whorl::server::client::{self, ClientOptions, Identification};
use whorl::server::config::{Config, Role, TokenEntry};
use whorl::server::loadgen::{self, BenchProbe, LoadOptions};
use whorl::server::pb;
use whorl::synth::{Subjects, Synth, SynthParams};
use whorl::template::{self, Format, Template};

const TOKEN: &str = "bench-admin-token-0123456789";

struct Args {
    subjects: u64,
    seconds: u64,
    out: PathBuf,
    sections: Vec<u32>,
}

fn args() -> Args {
    let mut a = Args {
        subjects: 20_000,
        seconds: 15,
        out: std::env::temp_dir().join("whorl-hardening-bench"),
        sections: vec![1, 2, 3, 4],
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for w in v.chunks(2) {
        match (w[0].as_str(), w.get(1)) {
            ("--subjects", Some(n)) => a.subjects = n.parse().expect("--subjects N"),
            ("--seconds", Some(n)) => a.seconds = n.parse().expect("--seconds N"),
            ("--out", Some(p)) => a.out = p.into(),
            ("--sections", Some(l)) => {
                a.sections = l.split(',').map(|x| x.parse().expect("--sections 1,2,3,4")).collect()
            }
            _ => panic!("usage: hardening [--subjects N] [--seconds S] [--out DIR] [--sections 1,2,3,4]"),
        }
    }
    a
}

/// xyt text of `n` minutiae scattered over a `side`-pixel square.
fn xyt_in(n: usize, seed: u64, side: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n).map(|_| format!("{} {} {}\n", next() % side, next() % side, next() % 360)).collect::<String>().into_bytes()
}

/// The attacker's record: `n` minutiae on one finger-sized image (500 px,
/// an inch at 500 dpi), so every minutia has more neighbours as `n` grows.
fn xyt(n: usize, seed: u64) -> Vec<u8> {
    xyt_in(n, seed, 500)
}

fn prepare_costs() {
    println!("\n## 1. Preparing one view (cylinders + embedding), one thread\n");
    println!("| minutiae | ms, on one 500 px image (denser as n grows) | ms, one minutia per 900 px² |");
    println!("|---|---|---|");
    let (m, e) = (Matcher::default(), Embedder::default());
    let time = |bytes: Vec<u8>, reps: usize| {
        let t = template::parse_as(&bytes, Format::Xyt).unwrap().remove(0);
        let t0 = Instant::now();
        for _ in 0..reps {
            std::hint::black_box((m.prepare(&t), e.embed(&t)));
        }
        t0.elapsed().as_secs_f64() * 1e3 / reps as f64
    };
    for n in [30usize, 60, 120, 255, 500, 1000, 2000, 4000] {
        let reps = if n <= 255 { 5 } else { 1 };
        let spread = ((n as f64).sqrt() * 30.0).max(100.0) as u64;
        println!("| {n} | {:.1} | {:.1} |", time(xyt(n, n as u64), reps), time(xyt_in(n, n as u64, spread), reps));
    }
}

fn gallery_dir(a: &Args) -> PathBuf {
    let dir = a.out.join(format!("gallery-{}", a.subjects));
    if dir.join(gallery::manifest::FILE).exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let pop = Subjects::new(Synth::new(SynthParams::default(), 11), 1);
    let items =
        (0..a.subjects).map(move |s| (Subjects::id(s), Vec::new(), pop.synth.template(pop.finger_ids(s)[0], 0)));
    let t0 = Instant::now();
    gallery::build(&dir, &Embedder::default(), &Matcher::default(), &BuildOptions::default(), items, |_, _| {})
        .unwrap();
    eprintln!("built {} in {:.0} s", dir.display(), t0.elapsed().as_secs_f64());
    dir
}

fn config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.gallery.path = dir.to_path_buf();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.server.workers = 2;
    c.backend.choice = BackendChoice::Cpu;
    c.auth.tokens = vec![TokenEntry {
        name: "bench".into(),
        role: Role::Admin,
        token: Some(TOKEN.into()),
        token_sha256: None,
        galleries: vec![],
    }];
    c
}

async fn connect(addr: std::net::SocketAddr) -> client::Clients {
    let o = ClientOptions { token: Some(TOKEN.into()), ..ClientOptions::default() };
    client::connect(&format!("http://{addr}"), &o).await.unwrap()
}

/// What attackers got: status codes, and the server's stage times of
/// their answered requests (prepare, candidates, re-scoring; summed, s).
type Got = (std::collections::BTreeMap<String, u64>, [f64; 3]);

/// Attackers: `n` callers sending `probe` back to back with `timeout` (if
/// any) until `stop`.
fn attack(
    ic: Identification,
    n: usize,
    probe: pb::Probe,
    timeout: Option<Duration>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Got>> {
    (0..n)
        .map(|_| {
            let (mut ic, probe, stop) = (ic.clone(), probe.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut codes = std::collections::BTreeMap::new();
                let mut stages = [0f64; 3];
                while !stop.load(Ordering::Relaxed) {
                    let mut req = tonic::Request::new(pb::IdentifyRequest {
                        probe: Some(probe.clone()),
                        max_candidates: 10,
                        ..Default::default()
                    });
                    if let Some(t) = timeout {
                        req.set_timeout(t);
                    }
                    let code = match ic.identify(req).await {
                        Ok(r) => {
                            let t = r.into_inner().timings.unwrap_or_default();
                            let d = |x: Option<prost_types::Duration>| {
                                whorl::server::convert::from_duration(&x).as_secs_f64()
                            };
                            stages[0] += d(t.prepare);
                            stages[1] += d(t.candidates);
                            stages[2] += d(t.rescore);
                            tonic::Code::Ok
                        }
                        Err(e) => e.code(),
                    };
                    *codes.entry(whorl::server::audit::code_name(code).to_string()).or_insert(0) += 1;
                }
                (codes, stages)
            })
        })
        .collect()
}

async fn latency_under_attack(a: &Args, dir: &Path) {
    println!("\n## 2. A normal caller's identify latency while heavy probes arrive\n");
    println!(
        "Gallery: {} synthetic subjects; server: 2 search workers, CPU backend; the normal caller sends \
         one-finger synthetic probes back to back (10 s deadline) for {} s per row.\n",
        a.subjects, a.seconds
    );
    println!(
        "| scenario | normal p50 ms | normal p99 ms | normal max ms | normal replies (codes) | attacker replies (codes) | attacker's answered request, server ms: prepare / candidates / re-score | searches stopped in prepare |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let pop = Subjects::new(Synth::new(SynthParams::default(), 11), 1);
    let normal: Arc<Vec<BenchProbe>> = Arc::new(
        (0..200u64)
            .map(|s| {
                let t = pop.synth.template(pop.finger_ids(s)[0], 1);
                BenchProbe {
                    name: format!("{s}"),
                    probe: client::probe(vec![template::write(&[t], Format::Iso2005).unwrap()]),
                    mate: Some(Subjects::id(s)),
                }
            })
            .collect(),
    );
    // The heaviest probe the default caps allow: 10 views of 150 minutiae (1,500),
    // and an ordinary ten-print for comparison (10 synthetic views, about 40 each).
    let capped = client::probe((0..10).map(|k| xyt(150, 100 + k)).collect());
    let heavy = client::probe(vec![xyt(4000, 7)]);
    let tenprint = {
        let ten = Subjects::new(Synth::new(SynthParams::default(), 5), 10);
        client::probe(
            ten.templates(3, 1)
                .iter()
                .map(|t| template::write(std::slice::from_ref(t), Format::Iso2005).unwrap())
                .collect(),
        )
    };
    let scenarios: [(&str, bool, usize, pb::Probe, Option<Duration>); 6] = [
        ("no attack", false, 0, heavy.clone(), None),
        ("4 callers sending ordinary ten-prints (10 views, about 40 minutiae each)", false, 4, tenprint, None),
        ("4 attackers, 4,000-minutiae xyt (default caps: refused while parsing)", false, 4, heavy.clone(), None),
        ("4 attackers, heaviest probe within the caps (10 views x 150 minutiae)", false, 4, capped, None),
        (
            "caps raised (as before the fix), 2 attackers, 4,000 minutiae, 2 s deadline (cancelled at the deadline)",
            true,
            2,
            heavy.clone(),
            Some(Duration::from_secs(2)),
        ),
        (
            "caps raised (as before the fix), 2 attackers, 4,000 minutiae, no deadline (the work runs to the end)",
            true,
            2,
            heavy,
            None,
        ),
    ];
    for (name, raised, n, probe, timeout) in scenarios {
        let mut cfg = config(dir);
        if raised {
            cfg.limits.max_minutiae_per_view = 100_000;
            cfg.limits.max_minutiae_per_probe = 100_000;
        }
        let server = whorl::server::start(cfg).await.unwrap();
        server.wait_ready(Duration::from_secs(600)).await.unwrap();
        let c = connect(server.addr).await;
        let stop = Arc::new(AtomicBool::new(false));
        let attackers = attack(c.identification.clone(), n, probe, timeout, Arc::clone(&stop));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let o = LoadOptions {
            concurrency: 1,
            duration: Duration::from_secs(a.seconds),
            max_requests: None,
            timeout: Duration::from_secs(10),
            warmup: 4,
            max_candidates: 10,
            progress: None,
            galleries: Vec::new(),
        };
        let r = loadgen::run(c.identification.clone(), Arc::clone(&normal), &o).await;
        stop.store(true, Ordering::Relaxed);
        let mut codes = std::collections::BTreeMap::new();
        let mut stages = [0f64; 3];
        for t in attackers {
            if let Ok(Ok((cs, st))) = tokio::time::timeout(Duration::from_secs(60), t).await {
                for (k, v) in cs {
                    *codes.entry(k).or_insert(0u64) += v;
                }
                for (a, b) in stages.iter_mut().zip(st) {
                    *a += b;
                }
            }
        }
        let ok = codes.get("OK").copied().unwrap_or(0).max(1) as f64;
        let per = if codes.contains_key("OK") {
            format!("{:.0} / {:.0} / {:.0}", stages[0] / ok * 1e3, stages[1] / ok * 1e3, stages[2] / ok * 1e3)
        } else {
            "-".into()
        };
        let fmt = |m: &std::collections::BTreeMap<String, u64>| {
            m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        };
        let normal_codes: std::collections::BTreeMap<String, u64> =
            r.codes().into_iter().map(|(k, v)| (k, v as u64)).collect();
        let max = r.latencies_ms().into_iter().fold(0.0, f64::max);
        println!(
            "| {name} | {:.1} | {:.1} | {:.0} | {} | {} | {per} | {} |",
            r.latency_ms(0.5),
            r.latency_ms(0.99),
            max,
            fmt(&normal_codes),
            if n == 0 { "-".into() } else { fmt(&codes) },
            server.state.metrics.stopped_in("prepare")
        );
        server.shutdown().await.unwrap();
    }
}

fn restart_times(a: &Args, dir: &Path) {
    println!("\n## 3. Restart time against the write-ahead log, before and after compaction\n");
    println!("Gallery of {} subjects plus enrolments of 3 fingers each (group commit).\n", a.subjects);
    println!("| enrolments in the log | log MB | open with the log (s) | compaction (s) | open after compaction (s) |");
    println!("|---|---|---|---|---|");
    let s = Synth::new(SynthParams::default(), 91);
    let opts = || GalleryOptions { sync: gallery::SyncMode::Group, ..GalleryOptions::default() };
    let mut next = 0u64;
    for target in [1000u64, 4000] {
        let work = a.out.join(format!("restart-{target}"));
        let _ = std::fs::remove_dir_all(&work);
        copy_dir(dir, &work);
        let g = Gallery::open(&work, Embedder::default(), Matcher::default(), opts()).unwrap();
        std::thread::scope(|sc| {
            for w in 0..2u64 {
                let (g, s) = (&g, &s);
                sc.spawn(move || {
                    for i in (w..target).step_by(2) {
                        // (The generator makes about one impression in 400 without
                        // minutiae, which an enrolment refuses: left out.)
                        let ts: Vec<Template> = (0..3)
                            .map(|k| s.template((next + i) * 10 + k, 0))
                            .filter(|t| !t.minutiae.is_empty())
                            .collect();
                        if ts.is_empty() {
                            continue;
                        }
                        g.enroll(&format!("E{:08}", next + i), vec![("batch".into(), "bench".into())], ts).unwrap();
                    }
                });
            }
        });
        next += target;
        let mb = g.wal_bytes() as f64 / 1048576.0;
        drop(g);
        let t = Instant::now();
        let g = Gallery::open(&work, Embedder::default(), Matcher::default(), opts()).unwrap();
        let with_log = t.elapsed().as_secs_f64();
        let t = Instant::now();
        g.compact().unwrap();
        let compact = t.elapsed().as_secs_f64();
        drop(g);
        let t = Instant::now();
        let g = Gallery::open(&work, Embedder::default(), Matcher::default(), opts()).unwrap();
        let after = t.elapsed().as_secs_f64();
        assert_eq!(g.wal_records(), 0);
        drop(g);
        println!("| {target} | {mb:.1} | {with_log:.2} | {compact:.1} | {after:.2} |");
        let _ = std::fs::remove_dir_all(&work);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() && e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

async fn connections_and_floods(dir: &Path) {
    println!("\n## 4. Silent connections and an unauthenticated flood\n");
    let audit = dir.with_extension("audit.jsonl");
    let _ = std::fs::remove_file(&audit);
    let mut cfg = config(dir);
    cfg.limits.max_connections = 256;
    cfg.limits.handshake_timeout_s = 2;
    cfg.audit.path = Some(audit.clone());
    let server = whorl::server::start(cfg).await.unwrap();
    server.wait_ready(Duration::from_secs(600)).await.unwrap();
    let m = Arc::clone(&server.state.metrics);
    let mut silent = Vec::new();
    for _ in 0..400 {
        if let Ok(s) = tokio::net::TcpStream::connect(server.addr).await {
            silent.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let over = m.connections_closed("over_limit");
    let pop = Subjects::new(Synth::new(SynthParams::default(), 11), 1);
    let probe =
        client::probe(vec![template::write(&[pop.synth.template(pop.finger_ids(3)[0], 1)], Format::Iso2005).unwrap()]);
    // A normal client meanwhile: retries (new connection each time) until served.
    let t0 = Instant::now();
    let mut tries = 0;
    let served = loop {
        tries += 1;
        let o = ClientOptions { token: Some(TOKEN.into()), ..ClientOptions::default() };
        if let Ok(mut c) = client::connect(&format!("http://{}", server.addr), &o).await {
            let r = pb::IdentifyRequest { probe: Some(probe.clone()), max_candidates: 10, ..Default::default() };
            if c.identification.identify(r).await.is_ok() {
                break t0.elapsed();
            }
        }
        if t0.elapsed() > Duration::from_secs(30) {
            break Duration::MAX;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let timed_out = m.connections_closed("handshake_timeout");
    println!("| what | measured |\n|---|---|");
    println!("| silent TCP connections opened | {} |", silent.len());
    println!("| closed at once (over `max_connections` = 256) | {over} |");
    println!("| closed by the 2 s handshake timeout | {timed_out} |");
    println!(
        "| a normal client, retrying every 100 ms from the end of the flood, first served after | {:.2} s ({tries} tries) |",
        served.as_secs_f64()
    );
    drop(silent);
    let anon = client::connect(&format!("http://{}", server.addr), &ClientOptions::default()).await.unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (mut ic, probe, sent) = (anon.identification.clone(), probe.clone(), Arc::clone(&sent));
            tokio::spawn(async move {
                while t0.elapsed() < Duration::from_secs(10) {
                    let _ = ic.identify(pb::IdentifyRequest { probe: Some(probe.clone()), ..Default::default() }).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    server.shutdown().await.unwrap();
    let text = std::fs::read_to_string(&audit).unwrap_or_default();
    let lines = text.lines().filter(|l| l.contains("UNAUTHENTICATED")).count();
    println!("| unauthenticated calls in 10 s (8 callers) | {} |", sent.load(Ordering::Relaxed));
    println!("| audit lines they produced (`audit_refusals_per_s` = 20, the rest counted in summaries) | {lines} |");
    let _ = std::fs::remove_file(&audit);
}

fn main() {
    let a = args();
    std::fs::create_dir_all(&a.out).unwrap();
    println!("# whorl hardening measurements\n");
    let sections: Vec<String> = a.sections.iter().map(u32::to_string).collect();
    println!(
        "Command: `cargo run --release --example hardening -- --subjects {} --seconds {} --sections {}`",
        a.subjects,
        a.seconds,
        sections.join(",")
    );
    let on = |k: u32| a.sections.contains(&k);
    if on(1) {
        prepare_costs();
    }
    let dir = gallery_dir(&a);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    if on(2) {
        rt.block_on(latency_under_attack(&a, &dir));
    }
    if on(3) {
        restart_times(&a, &dir);
    }
    if on(4) {
        rt.block_on(connections_and_floods(&dir));
    }
}
