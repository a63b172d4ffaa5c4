//! Item 1 (heavy probes), 5 (labels and reply size), 6 (re-enrolment) and
//! 8 (a hung GPU).

use super::support::*;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;
use whorl::cancel::Cancel;
use whorl::server::engine::Engine;
use whorl::server::pb;
use whorl::template::{self, Limits, ParseOptions};

/// Every format is capped while parsing: the real samples of each format
/// are refused under a cap below their count, with the view and the count.
#[test]
fn minutiae_caps_apply_to_every_format() {
    let Some(root) = crate::common::data_or_skip("minutiae_caps_apply_to_every_format") else { return };
    let files = [
        "formats/fmr.iso2005",
        "formats/fmr.ansi2004",
        "formats/fmr.ansi2007",
        "formats/type9.an2k",
        "formats/type9-efs.an2k",
        "fvc2002/DB1_B/101_1.iso",
    ];
    let mut samples: Vec<(String, Vec<u8>)> =
        files.iter().map(|f| (f.to_string(), crate::common::read(&root, f))).collect();
    let one = template::parse(&samples[5].1).unwrap();
    samples.push(("json".into(), template::write(&one, template::Format::Json).unwrap()));
    samples.push(("xyt".into(), xyt(30, 1)));
    for (name, bytes) in &samples {
        let all = template::parse(bytes).unwrap();
        let most = all.iter().map(|t| t.minutiae.len()).max().unwrap();
        let view = all.iter().position(|t| t.minutiae.len() == most).unwrap();
        let opts = ParseOptions {
            limits: Limits { max_minutiae_per_view: most - 1, ..Limits::default() },
            ..Default::default()
        };
        let e = template::parse_with(bytes, &opts).unwrap_err().to_string();
        assert!(
            e.contains(&format!("holds {most} minutiae")) && e.contains(&format!("limit of {}", most - 1)),
            "{name}: {e}"
        );
        if name != "xyt" {
            assert!(e.contains(&format!("view {view}")), "{name}: {e}");
        }
        let ok =
            ParseOptions { limits: Limits { max_minutiae_per_view: most, ..Limits::default() }, ..Default::default() };
        assert_eq!(template::parse_with(bytes, &ok).unwrap().templates.len(), all.len(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_probes_are_refused_before_any_cylinder_is_built() {
    let dir = build_gallery("caps");
    let mut cfg = config(&dir);
    cfg.limits.max_minutiae_per_probe = 300;
    let server = start(cfg).await;
    let mut c = connect(&server, Some(SEARCH_TOKEN)).await;
    let pop = population();
    // 4,000 minutiae of xyt: refused while parsing (the review's attack took 4.5 s of a worker).
    let e = c.identification.identify(raw_request(vec![xyt(4000, 2)])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("template 0:") && e.message().contains("holds 4000 minutiae"), "{}", e.message());
    // JSON the same.
    let mut big = pop.templates(1, 1)[0].clone();
    let m = big.minutiae[0];
    big.minutiae = (0..600).map(|i| whorl::template::Minutia { x: (i % 300) as f32, ..m }).collect();
    let json = template::write(std::slice::from_ref(&big), template::Format::Json).unwrap();
    let e = c.identification.identify(raw_request(vec![iso(&pop.templates(2, 1)[0]), json])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("template 1:") && e.message().contains("600 minutiae"), "{}", e.message());
    // Per probe: two views under the per-view cap, over the per-probe one together.
    let e = c.identification.identify(raw_request(vec![xyt(200, 3), xyt(200, 4)])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("template 1 brings the request to 400 minutiae"), "{}", e.message());
    // Candidates and label filters have caps too.
    let mut r = request(&pop.templates(1, 1));
    r.max_candidates = 101;
    assert_eq!(c.identification.identify(r).await.unwrap_err().code(), Code::InvalidArgument);
    let mut r = request(&pop.templates(1, 1));
    r.label_filter = (0..33).map(|i| (format!("k{i}"), "v".to_string())).collect();
    let e = c.identification.identify(r).await.unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("33 labels"), "{e:?}");
    // A full server sheds before it parses: the same garbage is RESOURCE_EXHAUSTED, not INVALID_ARGUMENT.
    let held: Vec<_> = std::iter::from_fn(|| server.state.engine.try_admit()).collect();
    let e = c.identification.identify(raw_request(vec![xyt(4000, 2)])).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    drop(held);
    assert!(c.identification.identify(request(&pop.templates(1, 1))).await.is_ok());
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// With the caps raised, a probe that takes seconds to prepare is stopped
/// inside preparation when its deadline passes or its caller goes away,
/// and the worker is free again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_and_departed_callers_stop_the_work_itself() {
    let dir = build_gallery("cancel");
    let mut cfg = config(&dir);
    cfg.server.workers = 1;
    cfg.limits.max_minutiae_per_view = 100_000;
    cfg.limits.max_minutiae_per_probe = 100_000;
    let server = start(cfg).await;
    let c = connect(&server, Some(SEARCH_TOKEN)).await;
    let heavy = xyt(8000, 5); // tens of seconds of cylinders on one core
    let metrics = Arc::clone(&server.state.metrics);

    // Deadline: answered, and the work stops inside preparation.
    let mut req = tonic::Request::new(raw_request(vec![heavy.clone()]));
    req.set_timeout(Duration::from_millis(400));
    let e = c.identification.clone().identify(req).await.unwrap_err();
    assert!(matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled), "{e:?}");
    eventually(20, "the deadline stopped preparation", || metrics.stopped_in("prepare") == 1).await;
    eventually(5, "the worker is free", || server.state.engine.in_flight() == 0).await;

    // The caller goes away (no deadline): the work stops too.
    let mut ic = c.identification.clone();
    let call = tokio::spawn(async move { ic.identify(raw_request(vec![heavy])).await });
    eventually(10, "the heavy search runs", || server.state.engine.in_flight() == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    call.abort();
    eventually(20, "the departed caller's work stopped", || metrics.stopped_in("prepare") == 2).await;
    eventually(5, "the worker is free", || server.state.engine.in_flight() == 0).await;
    let text = metrics.encode();
    assert!(text.contains("whorl_stopped_total{stage=\"prepare\",why=\"cancelled\"} 1"), "{text}");
    // And the one worker serves a normal search.
    let r = c.identification.clone().identify(request(&population().templates(3, 1))).await.unwrap().into_inner();
    assert_eq!(r.candidates[0].subject_id, whorl::synth::Subjects::id(3));
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A queued job whose caller left gives its slot back at once, not when a
/// busy worker reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_queued_jobs_release_their_slots() {
    let engine = Arc::new(Engine::new(1, 1, 3).unwrap());
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    let e = Arc::clone(&engine);
    let busy = tokio::spawn(async move {
        let p = e.try_admit().unwrap();
        e.run(p, Cancel::default(), move || blocked.recv().is_ok()).await
    });
    eventually(5, "the worker is busy", || engine.in_flight() == 1 && engine.queued() == 0).await;
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (e, r) = (Arc::clone(&engine), Arc::clone(&ran));
    let waiting = tokio::spawn(async move {
        let p = e.try_admit().unwrap();
        e.run(p, Cancel::default(), move || r.store(true, std::sync::atomic::Ordering::SeqCst)).await
    });
    eventually(5, "a job is queued", || engine.in_flight() == 2 && engine.queued() == 1).await;
    waiting.abort();
    eventually(5, "the abandoned job's slot is free while it is still queued", || engine.in_flight() == 1).await;
    release.send(()).unwrap();
    assert!(busy.await.unwrap().unwrap().0);
    eventually(5, "the queue drained", || engine.queued() == 0 && engine.in_flight() == 0).await;
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst), "the abandoned job never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_is_admitted_bounded_by_its_deadline_and_never_appends() {
    let dir = build_gallery("enrol");
    let mut cfg = config(&dir);
    cfg.limits.max_writes_in_flight = 1;
    cfg.limits.max_minutiae_per_view = 100_000;
    cfg.limits.max_minutiae_per_probe = 100_000;
    let server = start(cfg).await;
    let mut admin = connect(&server, Some(ADMIN_TOKEN)).await;
    let pop = population();
    // Full: shed.
    let held = Arc::clone(&server.state.writes).try_acquire_owned().unwrap();
    let e = admin.gallery.enroll(enroll_request("full", &pop.templates(SUBJECTS + 1, 0))).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    drop(held);
    // A deadline stops a heavy enrolment before it is logged: nothing changes.
    let wal = server.state.searcher("").unwrap().gallery().unwrap().wal_bytes();
    let mut r = enroll_request("heavy", &[]);
    r.templates = vec![whorl::server::client::finger(xyt(8000, 6))];
    let mut req = tonic::Request::new(r);
    req.set_timeout(Duration::from_millis(400));
    let e = admin.gallery.enroll(req).await.unwrap_err();
    assert!(matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled), "{e:?}");
    eventually(20, "the enrolment stopped", || server.state.writes.available_permits() == 1).await;
    assert_eq!(server.state.searcher("").unwrap().gallery().unwrap().wal_bytes(), wal, "nothing was logged");
    let e = admin
        .gallery
        .get_subject(pb::GetSubjectRequest {
            subject_id: "heavy".into(),
            include_templates: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_are_capped_and_replies_stay_under_the_message_limit() {
    let dir = build_gallery("labels");
    let mut cfg = config(&dir);
    cfg.server.max_message_bytes = 64 << 10;
    let server = start(cfg).await;
    let mut admin = connect(&server, Some(ADMIN_TOKEN)).await;
    let mut c = connect(&server, Some(SEARCH_TOKEN)).await;
    let pop = population();
    let mut r = enroll_request("many", &pop.templates(SUBJECTS + 1, 0));
    r.labels = (0..33).map(|i| (format!("k{i}"), "v".to_string())).collect();
    let e = admin.gallery.enroll(r).await.unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("33 labels"), "{e:?}");
    let mut r = enroll_request("long", &pop.templates(SUBJECTS + 1, 0));
    r.labels = [("note".to_string(), "x".repeat(300))].into();
    let e = admin.gallery.enroll(r).await.unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("300 bytes"), "{e:?}");
    // Five subjects with the most labels allowed (32 of 256 + 256 bytes: 16 KiB each):
    // a reply ranking them all would pass 64 KiB; it loses its last candidates instead.
    for k in 0..5u64 {
        let mut r = enroll_request(&format!("labelled-{k}"), &pop.templates(SUBJECTS + 10 + k, 0));
        r.labels = (0..32).map(|i| (format!("{i:0>256}"), "v".repeat(256))).collect();
        admin.gallery.enroll(r).await.unwrap();
    }
    let mut req = request(&pop.templates(SUBJECTS + 12, 1));
    req.max_candidates = 20;
    req.label_filter = [(format!("{:0>256}", 0), "v".repeat(256))].into();
    let r = c.identification.identify(req).await.unwrap().into_inner();
    use prost::Message;
    assert!(r.encoded_len() <= 64 << 10, "{} bytes", r.encoded_len());
    assert_eq!(r.candidates[0].subject_id, "labelled-2");
    assert!((1..5).contains(&r.candidates.len()), "{} candidates kept", r.candidates.len());
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_enrolment_is_refused_unless_replacing() {
    let dir = build_gallery("reenrol");
    let server = start(config(&dir)).await;
    let mut admin = connect(&server, Some(ADMIN_TOKEN)).await;
    let pop = population();
    let t = pop.templates(SUBJECTS + 3, 0);
    let fingers = |admin: &mut whorl::server::client::Clients| {
        let mut g = admin.gallery.clone();
        async move {
            g.get_subject(pb::GetSubjectRequest {
                subject_id: "again".into(),
                include_templates: false,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    admin.gallery.enroll(enroll_request("again", &t)).await.unwrap();
    // Ten enrolments of the same id used to append (the review reached 160 templates).
    for _ in 0..3 {
        let e = admin.gallery.enroll(enroll_request("again", &t)).await.unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    }
    assert_eq!(fingers(&mut admin).await.fingers.len(), FINGERS as usize);
    // Shard subjects too.
    let e = admin.gallery.enroll(enroll_request(&whorl::synth::Subjects::id(4), &t)).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    // Explicit replacement: everything the subject had goes.
    let mut r = enroll_request("again", &t[..1]);
    r.replace = true;
    r.labels = [("list".to_string(), "new".to_string())].into();
    admin.gallery.enroll(r).await.unwrap();
    let s = fingers(&mut admin).await;
    assert_eq!((s.fingers.len(), s.labels.get("list").map(String::as_str)), (1, Some("new")));
    // One view per known finger position, as in a probe.
    let e = admin.gallery.enroll(enroll_request("twice", &[t[0].clone(), t[0].clone()])).await.unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("appears twice"), "{e:?}");
    server.shutdown().await.unwrap();
    // The replacement survives a restart (one log record).
    let server = start(config(&dir)).await;
    let mut admin = connect(&server, Some(ADMIN_TOKEN)).await;
    assert_eq!(fingers(&mut admin).await.fingers.len(), 1);
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A GPU batch that outlives the poll timeout (what a hung device does) is
/// re-scored on the CPU with the same integers, and the fall-back counted.
#[test]
fn a_gpu_past_its_poll_timeout_falls_back_to_the_cpu_and_is_counted() {
    use whorl::gpu::{GpuOptions, GpuRescorer};
    use whorl::mcc::Matcher;
    use whorl::rescore::{AutoRescorer, Backend, Candidate, CpuRescorer, Fallback, Query, Rescorer};
    let opts = GpuOptions { poll_timeout: Some(Duration::from_nanos(1)), ..GpuOptions::default() };
    let gpu = match GpuRescorer::new(&Matcher::default(), &opts, 1 << 30) {
        Ok(g) => g,
        Err(e) => {
            assert!(
                std::env::var("WHORL_REQUIRE_GPU").map_or(true, |v| v != "1"),
                "WHORL_REQUIRE_GPU=1 but no GPU: {e}"
            );
            eprintln!("\n*** skipped: no adapter ({e}) ***\n");
            return;
        }
    };
    let m = Matcher::default();
    let prepared: Vec<_> = population().synth.batch(0..64, 0..1).iter().map(|r| m.prepare(&r.template)).collect();
    let queries: Vec<Query> = prepared[..8]
        .iter()
        .map(|p| Query {
            probe: p.view(),
            candidates: prepared.iter().map(|c| Candidate { prepared: c.view(), location: None }).collect(),
        })
        .collect();
    let counted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&counted);
    let auto = AutoRescorer::new(Some(Box::new(gpu)), CpuRescorer::new(m.clone()))
        .with_fallback_hook(Arc::new(move |f| sink.lock().unwrap().push(f)));
    let got = auto.rescore(&queries).unwrap();
    assert_eq!(got, CpuRescorer::new(m).rescore(&queries).unwrap());
    assert_eq!(*counted.lock().unwrap(), vec![Fallback::Timeout]);
    assert!(matches!(auto.backend(), Backend::Cpu(_)), "the hung GPU is out of service");
}
