//! The booking-station flow on loopback, every part real: one server with
//! two galleries (criminal records, and immigration records that notify),
//! a booking station's token that may search both, an immigration
//! operator's token limited to its gallery, and an enforcement subscriber.
//!
//! * One Identify answers both galleries, each with its own decision and
//!   operating point; a person in neither raises nothing.
//! * A hit in the notifying gallery raises exactly one event, durable
//!   before the reply: a SIGKILL of the server between the reply and the
//!   delivery loses none and invents none.
//! * A subscriber that disconnects resumes after its last acknowledgement;
//!   filters by label and priority; retention drops old events.
//! * Tokens: who may subscribe, search or enrol which gallery.
//! * A gallery unloaded while a stream of searches runs leaves the other
//!   one answering in every reply.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tonic::Code;
use whorl::embed::Embedder;
use whorl::gallery::{self, BuildOptions};
use whorl::index::IndexParams;
use whorl::mcc::Matcher;
use whorl::rescore::BackendChoice;
use whorl::server::client::{self, ClientOptions, Clients};
use whorl::server::config::{Config, NamedGallery, Role, TokenEntry};
use whorl::server::pb;
use whorl::synth::{Subjects, Synth, SynthParams};
use whorl::template::{self, Format, Template};

const FINGERS: u32 = 2;
const STATION: &str = "station-token-0123456789abcdef";
const ENFORCEMENT: &str = "enforcement-token-0123456789ab";
const CRIMINAL_READER: &str = "criminal-reader-token-012345678";
const IMMIGRATION_OPS: &str = "immigration-ops-token-01234567";
const ADMIN: &str = "admin-token-0123456789abcdef0";

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("whorl-booking-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn population() -> Subjects {
    Subjects::new(Synth::new(SynthParams::default(), 71), FINGERS)
}

fn priority(s: u64) -> String {
    (s % 4).to_string()
}

/// A gallery of `subjects`, each labelled with a priority.
fn build(dir: &Path, subjects: std::ops::Range<u64>) {
    let pop = population();
    let items = subjects.flat_map(move |s| {
        let labels = vec![("priority".to_string(), priority(s)), ("record".to_string(), format!("r{s}"))];
        pop.templates(s, 0).into_iter().map(move |t| (Subjects::id(s), labels.clone(), t))
    });
    let opts =
        BuildOptions { index: IndexParams { max_connections: 16, ef_construction: 100 }, ..BuildOptions::default() };
    gallery::build(dir, &Embedder::default(), &Matcher::default(), &opts, items, |_, _| {}).unwrap();
}

fn token(name: &str, role: Role, t: &str, galleries: &[&str]) -> TokenEntry {
    TokenEntry {
        name: name.into(),
        role,
        token: Some(t.into()),
        token_sha256: None,
        galleries: galleries.iter().map(|g| g.to_string()).collect(),
    }
}

/// Criminal records hold subjects 20..70, immigration records 0..40 (so
/// 20..40 are in both).
fn setup(name: &str) -> (PathBuf, Config) {
    let root = tempdir(name);
    build(&root.join("criminal"), 20..70);
    build(&root.join("immigration"), 0..40);
    let mut c = Config::default();
    c.gallery.path = root.join("criminal");
    c.gallery.name = "criminal".into();
    c.galleries =
        vec![NamedGallery { name: "immigration".into(), path: root.join("immigration"), default: true, notify: true }];
    c.notifications.dir = Some(root.join("events"));
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.server.workers = 2;
    c.backend.choice = BackendChoice::Cpu;
    c.auth.tokens = vec![
        token("station", Role::Search, STATION, &["criminal", "immigration"]),
        token("enforcement", Role::Notify, ENFORCEMENT, &["immigration"]),
        token("criminal-reader", Role::Notify, CRIMINAL_READER, &["criminal"]),
        token("immigration-ops", Role::Admin, IMMIGRATION_OPS, &["immigration"]),
        token("ops", Role::Admin, ADMIN, &[]),
    ];
    (root, c)
}

async fn connect(addr: &str, token: &str) -> Clients {
    let o = ClientOptions { token: Some(token.into()), ..ClientOptions::default() };
    client::connect(addr, &o).await.unwrap()
}

fn iso(t: &Template) -> Vec<u8> {
    template::write(std::slice::from_ref(t), Format::Iso2005).unwrap()
}

/// A booking of subject `s` (a second impression of every finger).
fn booking(s: u64, galleries: &[&str], tx: &str) -> pb::IdentifyRequest {
    let probe = client::probe(population().templates(s, 1).iter().map(iso).collect());
    pb::IdentifyRequest {
        probe: Some(probe),
        max_candidates: 5,
        galleries: galleries.iter().map(|g| g.to_string()).collect(),
        transaction_id: tx.into(),
        ..Default::default()
    }
}

fn section<'a>(r: &'a pb::IdentifyResponse, g: &str) -> &'a pb::GalleryResult {
    r.galleries.iter().find(|s| s.gallery == g).unwrap_or_else(|| panic!("no section for {g}: {r:?}"))
}

fn hit(s: &pb::GalleryResult) -> bool {
    s.decision == pb::Decision::Hit as i32
}

fn sub(subscriber: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest { subscriber: subscriber.into(), ..Default::default() }
}

/// The events that arrive within `wait` (the stream stays open: a quiet
/// spell ends the reading).
async fn drain(c: &mut Clients, req: pb::SubscribeRequest, wait: Duration) -> Vec<pb::HitEvent> {
    let mut s = c.notifications.subscribe(req).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Ok(Ok(Some(ev))) = tokio::time::timeout(wait, s.message()).await {
        out.push(ev);
    }
    out
}

async fn ack(c: &mut Clients, subscriber: &str, ev: &pb::HitEvent) -> u64 {
    let req = pb::AckRequest { subscriber: subscriber.into(), gallery: ev.gallery.clone(), sequence: ev.sequence };
    c.notifications.ack(req).await.unwrap().into_inner().acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_searches_both_galleries_and_a_hit_notifies_once() {
    let (_root, cfg) = setup("both");
    let server = whorl::server::start(cfg).await.unwrap();
    server.wait_ready(Duration::from_secs(300)).await.unwrap();
    let addr = format!("http://{}", server.addr);
    let mut station = connect(&addr, STATION).await;
    let mut enforcement = connect(&addr, ENFORCEMENT).await;

    // In both galleries: two hits, each decided on its own gallery's size;
    // only the immigration hit raises an event.
    let r = station.identification.identify(booking(25, &[], "tx-25")).await.unwrap().into_inner();
    assert_eq!(r.galleries.len(), 2, "{r:?}");
    for g in ["criminal", "immigration"] {
        let s = section(&r, g);
        assert!(s.error.is_none(), "{g}: {s:?}");
        assert!(hit(s), "{g}: {s:?}");
        assert_eq!(s.candidates[0].subject_id, Subjects::id(25), "{g}");
        assert_eq!(s.candidates[0].labels.get("priority"), Some(&priority(25)));
        assert!(s.operating_point.is_some(), "{g}");
    }
    assert_eq!(section(&r, "criminal").notifications.len(), 0);
    assert_eq!(section(&r, "immigration").notifications.len(), 1);
    let crim = section(&r, "criminal").operating_point.clone().unwrap();
    let imm = section(&r, "immigration").operating_point.clone().unwrap();
    assert_eq!((crim.gallery_subjects, imm.gallery_subjects), (50, 40), "each gallery is decided with its own size");
    assert!(crim.threshold > imm.threshold, "the larger gallery needs the higher threshold");

    // Only in immigration; only in criminal; in neither.
    let r = station.identification.identify(booking(5, &[], "tx-5")).await.unwrap().into_inner();
    assert!(hit(section(&r, "immigration")) && !hit(section(&r, "criminal")), "{r:?}");
    let r = station.identification.identify(booking(50, &[], "tx-50")).await.unwrap().into_inner();
    assert!(!hit(section(&r, "immigration")) && hit(section(&r, "criminal")), "{r:?}");
    let r = station.identification.identify(booking(500, &[], "tx-500")).await.unwrap().into_inner();
    assert!(!hit(section(&r, "immigration")) && !hit(section(&r, "criminal")), "{r:?}");
    assert!(r.galleries.iter().all(|s| s.notifications.is_empty()), "a non-hit raises nothing");
    // A retried transaction raises no second event.
    let again = station.identification.identify(booking(25, &[], "tx-25")).await.unwrap().into_inner();
    assert!(hit(section(&again, "immigration")));

    // Exactly the two immigration hits, in order, with who searched and why.
    let evs = drain(&mut enforcement, sub("ice"), Duration::from_millis(800)).await;
    let got: Vec<(u64, String)> = evs.iter().map(|e| (e.sequence, e.subject_id.clone())).collect();
    assert_eq!(got, vec![(1, Subjects::id(25)), (2, Subjects::id(5))], "{evs:?}");
    let e = &evs[0];
    assert_eq!((e.gallery.as_str(), e.transaction_id.as_str()), ("immigration", "tx-25"));
    assert!(e.client.starts_with("station"), "who searched: {e:?}");
    assert_eq!(e.probe_sha256.len(), 64, "{e:?}");
    assert_eq!(e.labels.get("record").map(String::as_str), Some("r25"));
    assert!(e.fused_score > 0.0 && e.operating_point.is_some() && e.rank == 1, "{e:?}");

    // Resume after a disconnect: acknowledged events are not sent again.
    assert_eq!(ack(&mut enforcement, "ice", &evs[0]).await, 1);
    let evs = drain(&mut enforcement, sub("ice"), Duration::from_millis(500)).await;
    assert_eq!(evs.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![2]);
    assert_eq!(ack(&mut enforcement, "ice", &evs[0]).await, 2);
    assert!(drain(&mut enforcement, sub("ice"), Duration::from_millis(500)).await.is_empty());
    // Another subscription name starts from the beginning; filters apply.
    let all = drain(&mut enforcement, sub("audit"), Duration::from_millis(500)).await;
    assert_eq!(all.len(), 2);
    let min = priority(5).parse::<i64>().unwrap().max(priority(25).parse::<i64>().unwrap());
    let filtered = pb::SubscribeRequest { subscriber: "urgent".into(), min_priority: min, ..Default::default() };
    let urgent = drain(&mut enforcement, filtered, Duration::from_millis(500)).await;
    assert!(urgent.iter().all(|e| e.priority >= min) && !urgent.is_empty(), "{urgent:?}");
    let mut labels = std::collections::HashMap::new();
    labels.insert("record".to_string(), "r5".to_string());
    let by_label = pb::SubscribeRequest { subscriber: "r5".into(), label_filter: labels, ..Default::default() };
    let r5 = drain(&mut enforcement, by_label, Duration::from_millis(500)).await;
    assert_eq!(r5.iter().map(|e| e.subject_id.clone()).collect::<Vec<_>>(), vec![Subjects::id(5)]);

    // Tokens. The station searches but neither subscribes nor enrols; a
    // subscriber limited to criminal records sees no immigration events;
    // the immigration operator enrols there only.
    let e = station.notifications.subscribe(sub("station")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut reader = connect(&addr, CRIMINAL_READER).await;
    let named = pb::SubscribeRequest { galleries: vec!["immigration".into()], ..sub("reader") };
    let e = reader.notifications.subscribe(named).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = reader.identification.identify(booking(25, &[], "x")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "a notify token does not search: {e:?}");
    let enrol = |g: &str, s: u64| pb::EnrollRequest {
        subject_id: format!("new-{s}"),
        templates: population().templates(s, 0).iter().map(|t| client::finger(iso(t))).collect(),
        gallery: g.into(),
        ..Default::default()
    };
    let e = station.gallery.enroll(enrol("immigration", 300)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut ops = connect(&addr, IMMIGRATION_OPS).await;
    let e = ops.gallery.enroll(enrol("criminal", 300)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    ops.gallery.enroll(enrol("immigration", 300)).await.unwrap();
    // Found at once, and notified.
    let r = station.identification.identify(booking(300, &["immigration"], "tx-300")).await.unwrap().into_inner();
    assert_eq!(r.galleries.len(), 1);
    assert!(hit(section(&r, "immigration")) && section(&r, "immigration").candidates[0].subject_id == "new-300");
    let evs = drain(&mut enforcement, sub("ice"), Duration::from_millis(500)).await;
    assert_eq!(evs.iter().map(|e| (e.sequence, e.subject_id.as_str())).collect::<Vec<_>>(), vec![(3, "new-300")]);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gallery_unloaded_mid_stream_leaves_the_other_answering() {
    let (_root, cfg) = setup("unload");
    let server = whorl::server::start(cfg).await.unwrap();
    server.wait_ready(Duration::from_secs(300)).await.unwrap();
    let addr = format!("http://{}", server.addr);
    let mut station = connect(&addr, STATION).await;
    let mut ops = connect(&addr, ADMIN).await;
    const N: u64 = 20;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut replies = station
        .identification
        .identify_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let request = |i: u64| {
        let mut r = booking(20 + i % 20, &["criminal", "immigration"], "");
        r.request_id = format!("q{i}");
        r
    };
    let mut out = Vec::new();
    for i in 0..N / 2 {
        tx.send(request(i)).await.unwrap();
        out.push(replies.message().await.unwrap().unwrap());
    }
    // Unloaded while the stream is open: the next replies answer criminal
    // records and say in their immigration section why it did not answer.
    ops.gallery.unload_gallery(pb::UnloadGalleryRequest { name: "immigration".into() }).await.unwrap();
    for i in N / 2..N {
        tx.send(request(i)).await.unwrap();
    }
    drop(tx);
    while let Some(m) = replies.message().await.unwrap() {
        out.push(m);
    }
    assert_eq!(out.len() as u64, N);
    let (mut both, mut without) = (0, 0);
    for m in &out {
        let r = match &m.result {
            Some(pb::identify_stream_response::Result::Response(r)) => r,
            other => panic!("{}: {other:?}", m.request_id),
        };
        let crim = section(r, "criminal");
        assert!(crim.error.is_none() && hit(crim), "{}: {crim:?}", m.request_id);
        let imm = section(r, "immigration");
        match &imm.error {
            None => both += 1,
            Some(e) => {
                assert_eq!(e.code, Code::NotFound as i32, "{e:?}");
                without += 1;
            }
        }
    }
    assert_eq!((both, without), (N / 2, N / 2), "before the unload both answer, after it one");
    // After the unload a search naming only the unloaded gallery fails with its error.
    let mut station = connect(&addr, STATION).await;
    let e = station.identification.identify(booking(25, &["immigration"], "")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    server.shutdown().await.unwrap();
}

/// `whorl serve` as a child process, killed when dropped.
struct Serve(Child);

impl Serve {
    fn start(config: &Path, log: &Path) -> Serve {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_whorl"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("XDG_RUNTIME_DIR", "/tmp")
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap();
        Serve(child)
    }

    fn sigkill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.sigkill();
    }
}

async fn connect_when_up(addr: &str, token: &str) -> Clients {
    let t0 = std::time::Instant::now();
    loop {
        if let Ok(mut c) =
            client::connect(addr, &ClientOptions { token: Some(token.into()), ..Default::default() }).await
        {
            // Serving once a search answers (the galleries may still be opening).
            let probe = booking(500, &["criminal"], "");
            match c.identification.identify(probe).await {
                Err(e) if e.code() == Code::Unavailable => {}
                _ => return c,
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "the server did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_survives_sigkill_between_reply_and_delivery_exactly_once() {
    let (root, mut cfg) = setup("kill");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    cfg.server.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let config = root.join("whorl.toml");
    std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();
    let log = root.join("serve.log");
    let addr = format!("http://127.0.0.1:{port}");

    let mut serve = Serve::start(&config, &log);
    let mut station = connect_when_up(&addr, STATION).await;
    let r = station.identification.identify(booking(7, &[], "tx-7")).await.unwrap().into_inner();
    assert_eq!(section(&r, "immigration").notifications.len(), 1, "{r:?}");
    // Answered, not yet delivered: the server dies.
    serve.sigkill();
    let mut serve = Serve::start(&config, &log);
    let _ = connect_when_up(&addr, STATION).await;
    let mut enforcement = connect(&addr, ENFORCEMENT).await;
    let evs = drain(&mut enforcement, sub("ice"), Duration::from_millis(800)).await;
    assert_eq!(evs.iter().map(|e| (e.sequence, e.subject_id.clone())).collect::<Vec<_>>(), vec![(1, Subjects::id(7))]);
    // Acknowledged, then killed again: nothing comes back, and the
    // numbering goes on after a new hit.
    assert_eq!(ack(&mut enforcement, "ice", &evs[0]).await, 1);
    serve.sigkill();
    let _serve = Serve::start(&config, &log);
    let mut station = connect_when_up(&addr, STATION).await;
    let mut enforcement = connect(&addr, ENFORCEMENT).await;
    assert!(drain(&mut enforcement, sub("ice"), Duration::from_millis(800)).await.is_empty());
    station.identification.identify(booking(8, &[], "tx-8")).await.unwrap();
    let evs = drain(&mut enforcement, sub("ice"), Duration::from_millis(800)).await;
    assert_eq!(evs.iter().map(|e| (e.sequence, e.subject_id.clone())).collect::<Vec<_>>(), vec![(2, Subjects::id(8))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_past_the_retention_are_dropped() {
    let (_root, mut cfg) = setup("retention");
    cfg.notifications.retention_days = 1.0 / 86_400.0;
    let server = whorl::server::start(cfg).await.unwrap();
    server.wait_ready(Duration::from_secs(300)).await.unwrap();
    let addr = format!("http://{}", server.addr);
    let mut station = connect(&addr, STATION).await;
    let mut enforcement = connect(&addr, ENFORCEMENT).await;
    station.identification.identify(booking(3, &[], "")).await.unwrap();
    // Housekeeping runs every 5 s; the event is 1 s old after the first.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(drain(&mut enforcement, sub("late"), Duration::from_millis(500)).await.is_empty());
    server.shutdown().await.unwrap();
}
