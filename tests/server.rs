//! The gRPC server end to end on loopback: real tonic server, real clients.
//! Mates are found, ten prints beat one, enrolment and deletion take effect
//! at once, a shard unloaded mid-stream leaves every reply consistent, bad
//! input / deadlines / tokens / roles / overload get their status codes,
//! health, reflection, metrics, the audit trail, and graceful shutdown.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;
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

const SUBJECTS: u64 = 200;
const FINGERS: u32 = 4;
const SEARCH_TOKEN: &str = "search-token-abcdef0123456789";
const ADMIN_TOKEN: &str = "admin-token-abcdef0123456789";

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("whorl-server-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn population() -> Subjects {
    Subjects::new(Synth::new(SynthParams::default(), 33), FINGERS)
}

/// SUBJECTS × FINGERS synthetic templates in two shards.
fn build_gallery(name: &str) -> PathBuf {
    let dir = tempdir(name);
    let pop = population();
    let items =
        (0..SUBJECTS).flat_map(move |s| pop.templates(s, 0).into_iter().map(move |t| (Subjects::id(s), vec![], t)));
    let opts = BuildOptions {
        shard_size: (SUBJECTS * u64::from(FINGERS) / 2) as usize,
        index: IndexParams { max_connections: 16, ef_construction: 100 },
        ..BuildOptions::default()
    };
    gallery::build(&dir, &Embedder::default(), &Matcher::default(), &opts, items, |_, _| {}).unwrap();
    dir
}

fn config(dir: &std::path::Path) -> Config {
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

async fn start(cfg: Config) -> whorl::server::Running {
    let r = whorl::server::start(cfg).await.unwrap();
    r.wait_ready(Duration::from_secs(300)).await.unwrap();
    r
}

async fn connect(r: &whorl::server::Running, token: Option<&str>) -> Clients {
    let o = ClientOptions { token: token.map(str::to_string), ..ClientOptions::default() };
    client::connect(&format!("http://{}", r.addr), &o).await.unwrap()
}

fn iso(t: &Template) -> Vec<u8> {
    template::write(std::slice::from_ref(t), Format::Iso2005).unwrap()
}

fn probe_of(ts: &[Template]) -> pb::Probe {
    client::probe(ts.iter().map(iso).collect())
}

fn request(ts: &[Template]) -> pb::IdentifyRequest {
    pb::IdentifyRequest { probe: Some(probe_of(ts)), max_candidates: 10, ..Default::default() }
}

async fn identify(c: &mut Clients, ts: &[Template]) -> Result<pb::IdentifyResponse, tonic::Status> {
    c.identification.identify(request(ts)).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mates_found_ten_prints_beat_one_enrol_and_delete_take_effect() {
    let dir = build_gallery("rank");
    let audit = dir.join("audit.jsonl");
    let mut cfg = config(&dir);
    cfg.audit.path = Some(audit.clone());
    let server = start(cfg).await;
    let mut c = connect(&server, Some(SEARCH_TOKEN)).await;
    let mut admin = connect(&server, Some(ADMIN_TOKEN)).await;
    let pop = population();

    // One finger against four.
    let (mut one_rank1, mut four_rank1, mut one_score, mut four_score) = (0, 0, 0.0, 0.0);
    let probes: Vec<u64> = (0..SUBJECTS).step_by(10).collect();
    for &s in &probes {
        let fingers = pop.templates(s, 1);
        let mate = Subjects::id(s);
        let r1 = identify(&mut c, &fingers[..1]).await.unwrap();
        let r4 = identify(&mut c, &fingers).await.unwrap();
        one_rank1 += usize::from(r1.candidates.first().is_some_and(|x| x.subject_id == mate));
        four_rank1 += usize::from(r4.candidates.first().is_some_and(|x| x.subject_id == mate));
        one_score += r1.candidates.iter().find(|x| x.subject_id == mate).map_or(0.0, |x| x.fused_score);
        four_score += r4.candidates.iter().find(|x| x.subject_id == mate).map_or(0.0, |x| x.fused_score);
        assert!(r4.operating_point.as_ref().unwrap().threshold > 0.0);
    }
    let n = probes.len();
    eprintln!(
        "rank-1 one finger {one_rank1}/{n}, four fingers {four_rank1}/{n}; mean fused {:.1} vs {:.1}",
        one_score / n as f64,
        four_score / n as f64
    );
    assert!(one_rank1 * 10 >= n * 7, "one finger rank-1 {one_rank1}/{n}");
    assert_eq!(four_rank1, n, "four fingers find every mate first");
    assert!(four_score > 2.0 * one_score, "fusing fingers adds evidence");
    // A four-finger mate is a hit at the default FPIR.
    let r = identify(&mut c, &pop.templates(3, 1)).await.unwrap();
    assert_eq!(r.decision, pb::Decision::Hit as i32);
    assert!(r.candidates[0].hit);

    // Enrol a new subject: found at once; its labels come back.
    let newcomer = SUBJECTS + 50;
    let t0 = pop.templates(newcomer, 0);
    let enrolled = admin
        .gallery
        .enroll(pb::EnrollRequest {
            subject_id: "new-subject".into(),
            templates: t0.iter().map(|t| client::finger(iso(t))).collect(),
            labels: [("list".to_string(), "watch".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(enrolled.templates, FINGERS);
    let r = identify(&mut c, &pop.templates(newcomer, 1)).await.unwrap();
    assert_eq!(r.candidates[0].subject_id, "new-subject");
    assert_eq!(r.candidates[0].labels.get("list").map(String::as_str), Some("watch"));
    assert!(r.candidates[0].fingers.iter().all(|f| f.source == "delta"));
    let s = admin
        .gallery
        .get_subject(pb::GetSubjectRequest {
            subject_id: "new-subject".into(),
            include_templates: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.fingers.len(), FINGERS as usize);
    assert!(template::parse(&s.fingers[0].iso_template).is_ok());
    // Label filter: only "watch" subjects.
    let mut req = request(&pop.templates(5, 1));
    req.label_filter = [("list".to_string(), "watch".to_string())].into();
    let r = c.identification.identify(req).await.unwrap().into_inner();
    assert!(r.candidates.iter().all(|x| x.subject_id == "new-subject"));

    // Verify 1:1.
    let v = c
        .identification
        .verify(pb::VerifyRequest {
            subject_id: Subjects::id(7),
            probe: Some(probe_of(&pop.templates(7, 1))),
            decision: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.decision, pb::Decision::Hit as i32);
    let v = c
        .identification
        .verify(pb::VerifyRequest {
            subject_id: Subjects::id(8),
            probe: Some(probe_of(&pop.templates(7, 1))),
            decision: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.decision, pb::Decision::NoHit as i32);

    // Delete: gone at once, and NOT_FOUND the second time.
    admin.gallery.delete(pb::DeleteRequest { subject_id: "new-subject".into(), ..Default::default() }).await.unwrap();
    let r = identify(&mut c, &pop.templates(newcomer, 1)).await.unwrap();
    assert!(r.candidates.iter().all(|x| x.subject_id != "new-subject"));
    let e = admin
        .gallery
        .delete(pb::DeleteRequest { subject_id: "new-subject".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let mate = Subjects::id(11);
    admin.gallery.delete(pb::DeleteRequest { subject_id: mate.clone(), ..Default::default() }).await.unwrap();
    let r = identify(&mut c, &pop.templates(11, 1)).await.unwrap();
    assert!(r.candidates.iter().all(|x| x.subject_id != mate), "a deleted shard subject is never returned");

    let stats = c.gallery.stats(pb::StatsRequest { ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(stats.subjects, SUBJECTS - 1);
    assert_eq!(stats.tombstones, 2);
    assert!(stats.identifications >= 2 * n as u64);
    server.shutdown().await.unwrap();

    // The audit trail: one line per call, the probe's hash, never a token.
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains(SEARCH_TOKEN) && !text.contains(ADMIN_TOKEN));
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let identifies: Vec<_> = lines.iter().filter(|l| l["method"] == "Identify").collect();
    assert!(identifies.len() >= 2 * n);
    assert!(identifies.iter().all(|l| l["probe_sha256"].as_str().is_some_and(|h| h.len() == 64)));
    assert!(identifies.iter().all(|l| l["client"].as_str().unwrap().starts_with("station")));
    assert!(lines.iter().any(|l| l["method"] == "Enroll"
        && l["subject"] == "new-subject"
        && l["client"].as_str().unwrap().starts_with("ops")));
    assert!(lines.iter().any(|l| l["method"] == "Delete" && l["status"] == "NOT_FOUND"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_tokens_roles_and_deadlines_get_their_codes() {
    let dir = build_gallery("codes");
    let mut cfg = config(&dir);
    cfg.server.max_message_bytes = 256 << 10;
    let server = start(cfg).await;
    let mut c = connect(&server, Some(SEARCH_TOKEN)).await;
    let pop = population();
    let good = iso(&pop.templates(1, 1)[0]);
    let code = |r: Result<tonic::Response<pb::IdentifyResponse>, tonic::Status>| r.unwrap_err();

    // Garbage bytes: INVALID_ARGUMENT naming the template.
    let mut req = request(&pop.templates(1, 1)[..1]);
    req.probe.as_mut().unwrap().templates.push(client::finger(b"FMR\0 20\0 truncated".to_vec()));
    let e = code(c.identification.identify(req).await);
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("template 1:"), "{}", e.message());
    // A forced format that does not fit: the parser names the field.
    let mut req = request(&[]);
    req.probe = Some(pb::Probe {
        templates: vec![pb::FingerTemplate {
            data: good.clone(),
            format: pb::TemplateFormat::Json as i32,
            finger_position: 0,
        }],
    });
    let e = code(c.identification.identify(req).await);
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("template 0"));
    // Unknown format value.
    let mut req = request(&[]);
    req.probe =
        Some(pb::Probe { templates: vec![pb::FingerTemplate { data: good.clone(), format: 99, finger_position: 0 }] });
    let e = code(c.identification.identify(req).await);
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("unknown template format"), "{}", e.message());
    // Empty probe; no probe at all.
    let e = code(c.identification.identify(request(&[])).await);
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = code(c.identification.identify(pb::IdentifyRequest::default()).await);
    assert_eq!(e.code(), Code::InvalidArgument);
    // An empty view (an unreadable finger) is left out, not refused; the
    // reply numbers probe fingers as the request did. All empty: refused.
    let mut empty = pop.templates(1, 1)[0].clone();
    empty.minutiae.clear();
    let r = identify(&mut c, &[empty.clone(), pop.templates(1, 1)[1].clone()]).await.unwrap();
    assert!(r.candidates.iter().flat_map(|x| &x.fingers).all(|f| f.probe_finger == 1));
    let e = code(c.identification.identify(request(&[empty])).await);
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("holds a minutia"), "{}", e.message());
    // Bad finger position, too many candidates, bad FPIR.
    let mut req = request(&pop.templates(1, 1)[..1]);
    req.probe.as_mut().unwrap().templates[0].finger_position = 11;
    assert_eq!(code(c.identification.identify(req).await).code(), Code::InvalidArgument);
    let mut req = request(&pop.templates(1, 1)[..1]);
    req.max_candidates = 5000;
    assert_eq!(code(c.identification.identify(req).await).code(), Code::InvalidArgument);
    let mut req = request(&pop.templates(1, 1)[..1]);
    req.decision = Some(pb::identify_request::Decision::TargetFpir(1.5));
    assert_eq!(code(c.identification.identify(req).await).code(), Code::InvalidArgument);
    // Too large: RESOURCE_EXHAUSTED, not a broken connection.
    let mut req = request(&[]);
    req.probe = Some(client::probe(vec![vec![0u8; 300 << 10]]));
    let e = code(c.identification.identify(req).await);
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // Expired deadline. tonic's client enforces the same timeout, so with
    // 1 µs either side may answer first: the server's DEADLINE_EXCEEDED or
    // the client's own "Timeout expired".
    let mut req = tonic::Request::new(request(&pop.templates(1, 1)));
    req.set_timeout(Duration::from_micros(1));
    let e = code(c.identification.identify(req).await);
    assert!(
        e.code() == Code::DeadlineExceeded || (e.code() == Code::Cancelled && e.message() == "Timeout expired"),
        "{e:?}"
    );
    // The server's own answer, deterministically: every search slot is
    // held, so a streamed request waits for one until (just before) its
    // deadline and is answered DEADLINE_EXCEEDED inside the stream.
    let held: Vec<_> = std::iter::from_fn(|| server.state.engine.try_admit()).collect();
    assert!(!held.is_empty());
    let mut req = tonic::Request::new(tokio_stream::iter(vec![request(&pop.templates(1, 1))]));
    req.set_timeout(Duration::from_millis(600));
    let mut replies = c.identification.identify_stream(req).await.unwrap().into_inner();
    let first = replies.message().await.unwrap().unwrap();
    let Some(pb::identify_stream_response::Result::Error(e)) = first.result else { panic!("{first:?}") };
    assert_eq!(e.code, Code::DeadlineExceeded as i32, "{e:?}");
    drop(held);
    // ... and the connection still works.
    assert!(identify(&mut c, &pop.templates(1, 1)).await.is_ok());

    // Tokens and roles.
    let mut anon = connect(&server, None).await;
    assert_eq!(code(anon.identification.identify(request(&pop.templates(1, 1))).await).code(), Code::Unauthenticated);
    let mut wrong = connect(&server, Some("not-a-token-0123456789")).await;
    let e = code(wrong.identification.identify(request(&pop.templates(1, 1))).await);
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(!e.message().contains("not-a-token"));
    let e = c
        .gallery
        .enroll(pb::EnrollRequest {
            subject_id: "x".into(),
            templates: vec![client::finger(good.clone())],
            labels: Default::default(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .gallery
        .get_subject(pb::GetSubjectRequest {
            subject_id: Subjects::id(1),
            include_templates: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Not found.
    let mut admin = connect(&server, Some(ADMIN_TOKEN)).await;
    let e = c
        .identification
        .verify(pb::VerifyRequest {
            subject_id: "nobody".into(),
            probe: Some(client::probe(vec![good.clone()])),
            decision: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = admin
        .gallery
        .get_subject(pb::GetSubjectRequest {
            subject_id: "nobody".into(),
            include_templates: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = admin
        .gallery
        .unload_shard(pb::UnloadShardRequest { name: "shard-9999".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Enrolment input.
    let e = admin
        .gallery
        .enroll(pb::EnrollRequest {
            subject_id: String::new(),
            templates: vec![client::finger(good.clone())],
            labels: Default::default(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = admin
        .gallery
        .enroll(pb::EnrollRequest {
            subject_id: "y".into(),
            templates: vec![client::finger(vec![1, 2, 3])],
            labels: Default::default(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("template 0"));
    let e = admin
        .gallery
        .load_shard(pb::LoadShardRequest { file: "../etc/passwd".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_while_admitted_requests_complete() {
    let dir = build_gallery("shed");
    let mut cfg = config(&dir);
    cfg.server.max_in_flight = 3;
    cfg.server.workers = 1;
    cfg.server.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = start(cfg).await;
    let c = connect(&server, Some(SEARCH_TOKEN)).await;
    let pop = population();

    // Full: refused at once.
    let held: Vec<_> = (0..3).map(|_| server.state.engine.try_admit().unwrap()).collect();
    let e = identify(&mut c.clone(), &pop.templates(2, 1)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("retry"), "{}", e.message());
    drop(held);
    assert!(identify(&mut c.clone(), &pop.templates(2, 1)).await.is_ok());

    // A burst of 40 four-finger searches against 3 slots: each is either
    // answered in full or shed, nothing else.
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let mut c = c.clone();
        let ts = pop.templates(i % SUBJECTS, 1);
        tasks.push(tokio::spawn(async move { (i, identify(&mut c, &ts).await) }));
    }
    let (mut ok, mut shed) = (0, 0);
    for t in tasks {
        let (i, r) = t.await.unwrap();
        match r {
            Ok(r) => {
                ok += 1;
                assert_eq!(
                    r.candidates[0].subject_id,
                    Subjects::id(i % SUBJECTS),
                    "an admitted search completes correctly"
                );
            }
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                shed += 1;
            }
        }
    }
    eprintln!("burst: {ok} answered, {shed} shed");
    assert!(ok >= 3 && shed >= 1, "{ok} answered, {shed} shed");
    let stats = c.gallery.clone().stats(pb::StatsRequest { ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(stats.shed, shed + 1);
    assert_eq!(stats.in_flight, 0);

    // Prometheus.
    let text = http_get(server.metrics_addr.unwrap(), "/metrics").await;
    assert!(text.contains("whorl_shed_total{method=\"Identify\"}"), "{text}");
    assert!(text.contains("whorl_requests_total{method=\"Identify\",code=\"OK\"}"));
    assert!(
        text.lines().any(|l| l.starts_with("whorl_stage_duration_seconds_bucket") && l.contains("stage=\"rescore\"")),
        "{text}"
    );
    assert!(text.contains(&format!("whorl_gallery_templates {}", SUBJECTS * u64::from(FINGERS))));
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_unloaded_mid_stream_leaves_every_reply_consistent() {
    let dir = build_gallery("unload");
    let server = start(config(&dir)).await;
    let c = connect(&server, Some(SEARCH_TOKEN)).await;
    let mut admin = connect(&server, Some(ADMIN_TOKEN)).await;
    let pop = population();
    // Subjects of the second shard (the build fills shards in order).
    let second: Vec<u64> = (SUBJECTS / 2..SUBJECTS).step_by(4).collect();
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::IdentifyRequest>(4);
    let mut ic = c.identification.clone();
    let stream = tokio::spawn(async move {
        ic.identify_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner()
    });
    let sender = {
        let second = second.clone();
        let pop = population();
        tokio::spawn(async move {
            for (k, s) in second.iter().cycle().take(60).enumerate() {
                let mut r = request(&pop.templates(*s, 1)[..2]);
                r.request_id = format!("{k}:{s}");
                tx.send(r).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut replies = stream.await.unwrap();
    let mut got = Vec::new();
    let mut unload_generation = None;
    while let Some(item) = replies.message().await.unwrap() {
        got.push(item);
        if got.len() == 15 {
            let s = admin
                .gallery
                .unload_shard(pb::UnloadShardRequest { name: "shard-0001".into(), ..Default::default() })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(s.status, "unloaded");
            let st = admin.gallery.stats(pb::StatsRequest { ..Default::default() }).await.unwrap().into_inner();
            unload_generation = Some(st.generation);
        }
    }
    sender.await.unwrap();
    let g = unload_generation.unwrap();
    assert_eq!(got.len(), 60, "every request of the stream is answered");
    let (mut before, mut after) = (0, 0);
    for (k, item) in got.iter().enumerate() {
        let Some(pb::identify_stream_response::Result::Response(r)) = &item.result else {
            panic!("reply {k}: {item:?}")
        };
        assert!(item.request_id.starts_with(&format!("{k}:")), "replies come in request order");
        let sees = r.candidates.iter().any(|c| c.fingers.iter().any(|f| f.source == "shard-0001"));
        if r.gallery_generation >= g {
            assert!(!sees, "reply {k} (generation {}) sees the unloaded shard", r.gallery_generation);
            after += 1;
        } else {
            // Before the unload the shard is there: the mate (a subject of
            // shard-0001) is ranked first. (Round 2 re-scores only the
            // strongest subjects; the others' unscored fingers count as
            // fingers without evidence, so none outranks the mate by them.)
            let mate: u64 = item.request_id.split(':').nth(1).unwrap().parse().unwrap();
            assert_eq!(r.candidates[0].subject_id, Subjects::id(mate), "reply {k} before the unload finds its mate");
            before += 1;
        }
    }
    assert!(before >= 10 && after >= 10, "{before} before, {after} after");
    // Load it back: found again.
    let s = admin
        .gallery
        .load_shard(pb::LoadShardRequest { file: "shard-0001.whorl".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.status, "serving");
    let r = identify(&mut c.clone(), &pop.templates(second[0], 1)).await.unwrap();
    assert_eq!(r.candidates[0].subject_id, Subjects::id(second[0]));
    let shards = admin.gallery.list_shards(pb::ListShardsRequest { ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(shards.shards.len(), 2);
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_a_gallery_that_will_not_open() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    // A folder with no gallery: the port answers, health says NOT_SERVING,
    // searches say UNAVAILABLE with the reason.
    let missing = tempdir("missing");
    let broken = whorl::server::start(config(&missing)).await.unwrap();
    assert!(broken.wait_ready(Duration::from_secs(30)).await.is_err());
    let c = connect(&broken, Some(SEARCH_TOKEN)).await;
    let mut h = HealthClient::new(c.channel.clone());
    let st = h.check(HealthCheckRequest { service: "whorl.v1.Identification".into() }).await.unwrap().into_inner();
    assert_eq!(st.status, ServingStatus::NotServing as i32);
    let e = identify(&mut c.clone(), &population().templates(1, 1)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("failed to open"), "{}", e.message());
    broken.shutdown().await.unwrap();

    let dir = build_gallery("health");
    let server = start(config(&dir)).await;
    let c = connect(&server, Some(SEARCH_TOKEN)).await;
    let mut h = HealthClient::new(c.channel.clone());
    for s in ["", "whorl.v1.Identification", "whorl.v1.Gallery"] {
        let st = h.check(HealthCheckRequest { service: s.into() }).await.unwrap().into_inner();
        assert_eq!(st.status, ServingStatus::Serving as i32, "{s}");
    }
    let mut rc = ServerReflectionClient::new(c.channel.clone());
    let req = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = rc.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else { panic!("{msg:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["whorl.v1.Identification", "whorl.v1.Gallery", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{names:?}");
    }

    // Graceful shutdown: searches admitted before it complete.
    let pop = population();
    let mut tasks = Vec::new();
    for i in 0..6u64 {
        let mut c = c.clone();
        let ts = pop.templates(i, 1);
        tasks.push(tokio::spawn(async move { identify(&mut c, &ts).await }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let server = Arc::new(tokio::sync::Mutex::new(Some(server)));
    let s2 = Arc::clone(&server);
    let down = tokio::spawn(async move { s2.lock().await.take().unwrap().shutdown().await });
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r.is_ok() || r.as_ref().unwrap_err().code() == Code::Unavailable, "{r:?}");
    }
    down.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&missing);
}

/// A CA, a server certificate for "localhost" and a client certificate, as PEM files in `dir`.
fn certificates(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    std::fs::create_dir_all(dir).unwrap();
    let mut ca_params = CertificateParams::new(vec![]).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "whorl test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |name: &str, purpose: ExtendedKeyUsagePurpose| {
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_pem, client_key) = leaf("booking-station-7", ExtendedKeyUsagePurpose::ClientAuth);
    let w = |n: &str, s: &str| {
        let p = dir.join(n);
        std::fs::write(&p, s).unwrap();
        p
    };
    (
        w("ca.pem", &ca.pem()),
        w("server.pem", &server_pem),
        w("server.key", &server_key),
        w("client.pem", &client_pem),
        w("client.key", &client_key),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_with_a_certificate() {
    let dir = build_gallery("tls");
    let (ca, cert, key, client_cert, client_key) = certificates(&dir.join("pki"));
    let audit = dir.join("audit.jsonl");
    let mut cfg = config(&dir);
    cfg.tls = Some(whorl::server::config::TlsSection { cert, key, client_ca: Some(ca.clone()) });
    cfg.audit.path = Some(audit.clone());
    let server = start(cfg).await;
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    let pop = population();

    // With the client certificate: served, and the audit names the certificate.
    let o = ClientOptions {
        token: Some(SEARCH_TOKEN.into()),
        ca: Some(ca.clone()),
        identity: Some((client_cert, client_key)),
        domain: Some("localhost".into()),
        ..ClientOptions::default()
    };
    let mut c = client::connect(&url, &o).await.unwrap();
    let r = identify(&mut c, &pop.templates(4, 1)).await.unwrap();
    assert_eq!(r.candidates[0].subject_id, Subjects::id(4));

    // Without one: the handshake (or the first call) fails.
    let o = ClientOptions {
        token: Some(SEARCH_TOKEN.into()),
        ca: Some(ca),
        domain: Some("localhost".into()),
        ..ClientOptions::default()
    };
    match client::connect(&url, &o).await {
        Err(_) => {}
        Ok(mut c) => {
            assert!(identify(&mut c, &pop.templates(4, 1)).await.is_err(), "a client without a certificate was served")
        }
    }
    // Plain text to a TLS port: refused.
    let plain = ClientOptions { token: Some(SEARCH_TOKEN.into()), ..ClientOptions::default() };
    match client::connect(&format!("http://{}", server.addr), &plain).await {
        Err(_) => {}
        Ok(mut c) => assert!(identify(&mut c, &pop.templates(4, 1)).await.is_err()),
    }
    server.shutdown().await.unwrap();
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(text.lines().any(|l| l.contains("\"Identify\"") && l.contains("station cert=sha256:")), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The server on the GPU backend, with 1 MiB bindings and 64 items per
/// dispatch (its resident shards span several chunks, its batches several
/// dispatches), answers exactly as on the CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gpu_backend_serves_the_cpus_replies() {
    if common::gpu_or_skip("server on the GPU", common::small_gpu_limits()).is_none() {
        return;
    }
    let dir = build_gallery("gpu");
    let pop = population();
    let probes: Vec<Vec<Template>> = [1u64, 57, 120, 199, SUBJECTS + 3].iter().map(|&s| pop.templates(s, 1)).collect();
    let mut answers = Vec::new();
    for choice in [BackendChoice::Cpu, BackendChoice::Gpu] {
        let mut cfg = config(&dir);
        cfg.backend.choice = choice;
        cfg.backend.gpu_max_binding = Some(1 << 20);
        cfg.backend.gpu_max_items = Some(64);
        let server = start(cfg).await;
        let mut c = connect(&server, Some(SEARCH_TOKEN)).await;
        let mut got = Vec::new();
        for p in &probes {
            got.push(identify(&mut c, &p[..2]).await.unwrap());
            got.push(identify(&mut c, p).await.unwrap());
        }
        server.shutdown().await.unwrap();
        answers.push(got);
    }
    for (k, (cpu, gpu)) in answers[0].iter().zip(&answers[1]).enumerate() {
        assert!(cpu.backend.starts_with("cpu") && gpu.backend.starts_with("gpu"), "{} / {}", cpu.backend, gpu.backend);
        assert_eq!(
            (cpu.decision, &cpu.candidates, cpu.comparisons),
            (gpu.decision, &gpu.candidates, gpu.comparisons),
            "probe {k}"
        );
    }
    assert_eq!(answers[1].len(), 10);
    let _ = std::fs::remove_dir_all(&dir);
}
