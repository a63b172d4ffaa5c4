//! What the hardening tests share: a small gallery, a server over it,
//! clients, and hand-made heavy records.

use std::path::{Path, PathBuf};
use std::time::Duration;
use whorl::embed::Embedder;
use whorl::gallery::{self, BuildOptions};
use whorl::index::IndexParams;
use whorl::mcc::Matcher;
use whorl::rescore::BackendChoice;
use whorl::server::client::{self, ClientOptions, Clients};
use whorl::server::config::{Config, Role, TokenEntry};
use whorl::server::pb;
use whorl::synth::{Subjects, Synth, SynthParams};
use whorl::template::{self, Format, Template};

pub const SUBJECTS: u64 = 40;
pub const FINGERS: u32 = 2;
pub const SEARCH_TOKEN: &str = "search-token-abcdef0123456789";
pub const ADMIN_TOKEN: &str = "admin-token-abcdef0123456789";

pub fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("whorl-harden-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub fn population() -> Subjects {
    Subjects::new(Synth::new(SynthParams::default(), 71), FINGERS)
}

/// SUBJECTS × FINGERS synthetic templates in two shards.
pub fn build_gallery(name: &str) -> PathBuf {
    let dir = tempdir(name);
    let pop = population();
    let items =
        (0..SUBJECTS).flat_map(move |s| pop.templates(s, 0).into_iter().map(move |t| (Subjects::id(s), vec![], t)));
    let opts = BuildOptions {
        shard_size: (SUBJECTS * u64::from(FINGERS) / 2) as usize,
        index: IndexParams { max_connections: 8, ef_construction: 40 },
        ..BuildOptions::default()
    };
    gallery::build(&dir, &Embedder::default(), &Matcher::default(), &opts, items, |_, _| {}).unwrap();
    dir
}

pub fn config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.gallery.path = dir.to_path_buf();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.server.workers = 2;
    c.backend.choice = BackendChoice::Cpu;
    c.auth.tokens = vec![
        TokenEntry {
            name: "station".into(),
            role: Role::Search,
            token: Some(SEARCH_TOKEN.into()),
            token_sha256: None,
            galleries: vec![],
        },
        TokenEntry {
            name: "ops".into(),
            role: Role::Admin,
            token: Some(ADMIN_TOKEN.into()),
            token_sha256: None,
            galleries: vec![],
        },
    ];
    c
}

pub async fn start(cfg: Config) -> whorl::server::Running {
    let r = whorl::server::start(cfg).await.unwrap();
    r.wait_ready(Duration::from_secs(300)).await.unwrap();
    r
}

pub async fn connect(r: &whorl::server::Running, token: Option<&str>) -> Clients {
    let o = ClientOptions { token: token.map(str::to_string), ..ClientOptions::default() };
    client::connect(&format!("http://{}", r.addr), &o).await.unwrap()
}

pub fn iso(t: &Template) -> Vec<u8> {
    template::write(std::slice::from_ref(t), Format::Iso2005).unwrap()
}

pub fn request(ts: &[Template]) -> pb::IdentifyRequest {
    pb::IdentifyRequest {
        probe: Some(client::probe(ts.iter().map(iso).collect())),
        max_candidates: 10,
        ..Default::default()
    }
}

/// xyt text of `n` minutiae on one finger-sized image (500 px square): the
/// attacker's record, whose cylinders cost more per minutia as `n` grows.
pub fn xyt(n: usize, seed: u64) -> Vec<u8> {
    let side = 500;
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = String::with_capacity(n * 16);
    for _ in 0..n {
        out.push_str(&format!("{} {} {}\n", next() % side, next() % side, next() % 360));
    }
    out.into_bytes()
}

/// A probe of raw records.
pub fn raw_request(records: Vec<Vec<u8>>) -> pb::IdentifyRequest {
    pb::IdentifyRequest { probe: Some(client::probe(records)), max_candidates: 10, ..Default::default() }
}

/// Polls `f` every 20 ms until it holds, for up to `secs` seconds.
pub async fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(secs), "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn enroll_request(id: &str, ts: &[Template]) -> pb::EnrollRequest {
    pb::EnrollRequest {
        subject_id: id.into(),
        templates: ts.iter().map(|t| client::finger(iso(t))).collect(),
        labels: Default::default(),
        replace: false,
        ..Default::default()
    }
}
