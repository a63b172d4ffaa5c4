//! A cluster on loopback, every part real: an etcd server, three `whorl
//! serve` node processes (groups of 2 replicas), `whorl route` processes,
//! and a single `whorl serve` holding the same gallery for reference.
//!
//! * The cluster answers exactly as one node holding the same gallery
//!   (ranked subjects, fused scores to the bit, decisions), for mated and
//!   non-mated, single-finger and ten-print probes.
//! * Enrolled through a router: found at once through another; deleted: gone.
//! * A node SIGKILLed while searches and enrolments stream: no search
//!   fails or comes back partial, no acknowledged enrolment is lost, and
//!   the restarted node catches up and serves again.
//! * Both replicas of a group down: partial answers with the right share,
//!   or UNAVAILABLE when complete answers are required.
//! * etcd stopped mid-run: searching goes on; a router restarted; a node
//!   frozen with SIGSTOP: searches still answer (hedged to its replicas).

#[path = "support/cluster_harness.rs"]
mod harness;

use harness::{Cluster, Layout, Proc, port};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::Code;
use whorl::cluster::peer::Peers;
use whorl::server::client::{self, ClientOptions, Clients};
use whorl::server::pb;
use whorl::synth::{Subjects, Synth, SynthParams};
use whorl::template::{self, Format, Template};

const GROUPS: u32 = 8;
const FINGERS: u32 = 10;

fn population() -> Subjects {
    Subjects::new(Synth::new(SynthParams::default(), 44), FINGERS)
}

fn iso(t: &Template) -> Vec<u8> {
    template::write(std::slice::from_ref(t), Format::Iso2005).unwrap()
}

fn enroll_req(gallery: &str, s: u64, fingers: &[Template]) -> pb::EnrollRequest {
    pb::EnrollRequest {
        subject_id: Subjects::id(s),
        templates: fingers.iter().map(|t| client::finger(iso(t))).collect(),
        labels: [("priority".to_string(), (s % 4).to_string())].into(),
        gallery: gallery.into(),
        ..Default::default()
    }
}

fn identify_req(fingers: &[Template], partial: bool) -> pb::IdentifyRequest {
    pb::IdentifyRequest {
        probe: Some(client::probe(fingers.iter().map(iso).collect())),
        max_candidates: 10,
        allow_partial: partial,
        ..Default::default()
    }
}

async fn enroll_until_ok(c: &mut Clients, r: pb::EnrollRequest) {
    let t0 = Instant::now();
    loop {
        match c.gallery.enroll(r.clone()).await {
            Ok(_) => return,
            Err(s) if s.code() == Code::Unavailable && t0.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("enrolling {}: {s:?}", r.subject_id),
        }
    }
}

/// What must agree between the cluster and the reference.
fn summary(r: &pb::IdentifyResponse) -> (i32, Vec<(String, u64, bool)>, u64) {
    (
        r.decision,
        r.candidates.iter().map(|c| (c.subject_id.clone(), c.fused_score.to_bits(), c.hit)).collect(),
        r.operating_point.as_ref().map_or(0, |o| o.gallery_subjects),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_answers_as_one_node_and_enrolments_and_deletions_are_seen_at_once() {
    let Some(mut cl) = Cluster::start("equal", Layout::small(Path::new(env!("CARGO_BIN_EXE_whorl")))).await else {
        return;
    };
    let pop = population();
    const SUBJECTS: u64 = 240;
    // The reference: one ordinary server holding the same subjects.
    let ref_dir = cl.dir.join("reference");
    whorl::gallery::Gallery::create(&ref_dir, &whorl::embed::Embedder::default(), &whorl::mcc::Matcher::default())
        .unwrap();
    let ref_port = port();
    let _reference = Proc::spawn(
        Path::new(env!("CARGO_BIN_EXE_whorl")),
        &cl.dir.join("reference.log"),
        &[
            "serve",
            "--gallery",
            ref_dir.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{ref_port}"),
            "--backend",
            "cpu",
            "--workers",
            "1",
        ],
    );
    let mut r = cl.client(0).await;
    let mut one = {
        let t0 = Instant::now();
        loop {
            if let Ok(c) = client::connect(&format!("http://127.0.0.1:{ref_port}"), &ClientOptions::default()).await {
                break c;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "the reference server did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    for s in 0..SUBJECTS {
        let fingers = pop.templates(s, 0);
        enroll_until_ok(&mut r, enroll_req("main", s, &fingers)).await;
        enroll_until_ok(&mut one, enroll_req("", s, &fingers)).await;
    }
    // 100 mated and 100 non-mated probes, one finger and ten.
    let mut compared = 0;
    for (s, fingers_in_probe) in (0..100).chain(SUBJECTS + 1000..SUBJECTS + 1100).flat_map(|s| [(s, 1usize), (s, 10)]) {
        let probe: Vec<Template> = pop.templates(s, 1).into_iter().take(fingers_in_probe).collect();
        let a = r.identification.identify(identify_req(&probe, false)).await.unwrap().into_inner();
        let b = one.identification.identify(identify_req(&probe, false)).await.unwrap().into_inner();
        assert_eq!(summary(&a), summary(&b), "subject {s}, {fingers_in_probe} finger(s)");
        assert!(!a.partial);
        if s < 100 && fingers_in_probe == 10 {
            assert_eq!(a.candidates[0].subject_id, Subjects::id(s), "ten-print mate ranked first");
        }
        compared += 1;
    }
    assert_eq!(compared, 400);
    // Enrolled through one router, found through another at once; deleted: gone.
    let url2 = cl.add_router();
    let mut r2 = cl.client(1).await;
    let newcomer = Subjects::new(Synth::new(SynthParams::default(), 4242), FINGERS);
    let fingers = newcomer.templates(7, 0);
    let mut req = enroll_req("main", 0, &fingers);
    req.subject_id = "NEW-7".into();
    enroll_until_ok(&mut r, req).await;
    let probe = newcomer.templates(7, 1);
    let got = r2.identification.identify(identify_req(&probe, false)).await.unwrap().into_inner();
    assert_eq!(got.candidates[0].subject_id, "NEW-7", "via {url2}");
    assert_eq!(got.decision, pb::Decision::Hit as i32);
    let subj = r2
        .gallery
        .get_subject(pb::GetSubjectRequest { subject_id: "NEW-7".into(), gallery: "main".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(subj.fingers.len(), FINGERS as usize);
    r.gallery.delete(pb::DeleteRequest { subject_id: "NEW-7".into(), gallery: "main".into() }).await.unwrap();
    let got = r2.identification.identify(identify_req(&probe, false)).await.unwrap().into_inner();
    assert!(got.candidates.iter().all(|c| c.subject_id != "NEW-7"));
    let e = r2
        .gallery
        .get_subject(pb::GetSubjectRequest { subject_id: "NEW-7".into(), gallery: "main".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Stats through the router count the cluster's subjects (as its polls,
    // twice a second, last saw them).
    let t0 = Instant::now();
    loop {
        let st = r.gallery.stats(pb::StatsRequest { gallery: "main".into() }).await.unwrap().into_inner();
        if st.subjects == SUBJECTS {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "the router counts {} subjects, not {SUBJECTS}", st.subjects);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(cl.routers.pop());
    // A group moved to the node that did not hold it (copy, catch up,
    // switch, drop), as an operator does when a node joins: the answers
    // stay the same, and the old holder lets the group go.
    let before = cl.holders(0).await;
    let to = (0..cl.nodes.len()).find(|n| !before.contains(n)).unwrap();
    let from = before[0];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_whorl"))
        .args(["cluster", "move", "--etcd", &cl.etcd.url, "--cluster", &cl.name, "--group", "0"])
        .args(["--from", &cl.node_ids[from], "--to", &cl.node_ids[to], "--wait", "120s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "cluster move: {}", String::from_utf8_lossy(&out.stderr));
    let mut after = cl.holders(0).await;
    after.sort();
    let mut want: Vec<usize> = before.iter().copied().filter(|&n| n != from).chain([to]).collect();
    want.sort();
    assert_eq!(after, want, "group 0 moved from {from} to {to}");
    cl.wait_healthy(Duration::from_secs(120)).await;
    for s in (0..100).step_by(5).chain(SUBJECTS + 1000..SUBJECTS + 1010) {
        let probe: Vec<Template> = pop.templates(s, 1).into_iter().take(2).collect();
        let a = r.identification.identify(identify_req(&probe, false)).await.unwrap().into_inner();
        let b = one.identification.identify(identify_req(&probe, false)).await.unwrap().into_inner();
        assert_eq!(summary(&a), summary(&b), "after the move, subject {s}");
    }
    let peers = Peers::new(None).unwrap();
    let map = cl.store().await.map();
    let t0 = Instant::now();
    loop {
        let mut c = peers.node(&map.nodes[&cl.node_ids[from]].addr).unwrap();
        let held = c.groups(whorl::cluster::pb::GroupsRequest {}).await.unwrap().into_inner();
        if !held.groups.iter().any(|g| g.group == 0) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the old holder kept group 0: {held:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_nothing_and_both_replicas_down_is_partial_or_unavailable() {
    let Some(mut cl) = Cluster::start("faults", Layout::small(Path::new(env!("CARGO_BIN_EXE_whorl")))).await else {
        return;
    };
    let pop = population();
    let mut r = cl.client(0).await;
    const SUBJECTS: u64 = 120;
    for s in 0..SUBJECTS {
        enroll_until_ok(&mut r, enroll_req("main", s, &pop.templates(s, 0)[..4])).await;
    }
    // Searches and enrolments stream while node 1 is SIGKILLed and restarted.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let searched = Arc::new(AtomicU64::new(0));
    let searcher = {
        let (mut c, stop, failed, searched) = (cl.client(0).await, stop.clone(), failed.clone(), searched.clone());
        tokio::spawn(async move {
            let pop = population();
            let mut s = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let probe = pop.templates(s % SUBJECTS, 1);
                match c.identification.identify(identify_req(&probe[..2], false)).await.map(|r| r.into_inner()) {
                    // Complete, and the mate among the candidates (rank 1 is
                    // not asked: live enrolments of other people can
                    // outrank a weak two-finger mate, as on one node).
                    Ok(r)
                        if !r.partial
                            && r.galleries.iter().all(|g| g.searched_fraction == 1.0 && g.error.is_none())
                            && r.candidates.iter().any(|x| x.subject_id == Subjects::id(s % SUBJECTS)) => {}
                    other => {
                        eprintln!("search {s} during the kill: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                searched.fetch_add(1, Ordering::Relaxed);
                s += 1;
            }
        })
    };
    let enroller = {
        let (mut c, stop) = (cl.client(0).await, stop.clone());
        tokio::spawn(async move {
            let pop = Subjects::new(Synth::new(SynthParams::default(), 99), FINGERS);
            let mut acked = Vec::new();
            let mut refused = 0;
            let mut s = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut req = enroll_req("main", s, &pop.templates(s, 0)[..2]);
                req.subject_id = format!("LIVE-{s}");
                match c.gallery.enroll(req).await {
                    Ok(_) => acked.push(format!("LIVE-{s}")),
                    Err(st) => {
                        assert!(matches!(st.code(), Code::Unavailable | Code::AlreadyExists), "{st:?}");
                        refused += 1;
                    }
                }
                s += 1;
            }
            (acked, refused)
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cl.nodes[1].signal("KILL");
    tokio::time::sleep(Duration::from_secs(6)).await;
    cl.nodes[1].restart();
    cl.wait_healthy(Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    searcher.await.unwrap();
    let (acked, refused) = enroller.await.unwrap();
    eprintln!(
        "{} searches ({} failed), {} enrolments acknowledged, {refused} refused while a node was away",
        searched.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        acked.len()
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "a search failed or was partial while one node was down");
    assert!(!acked.is_empty());
    // Every acknowledged enrolment is on both replicas: ask each node directly.
    let store = cl.store().await;
    let map = store.map();
    let peers = Peers::new(None).unwrap();
    for id in &acked {
        let g = whorl::groups::group_of(id, GROUPS);
        for n in map.replicas(g) {
            let mut c = peers.node(&map.nodes[n].addr).unwrap();
            let look = c
                .lookup(whorl::cluster::pb::LookupRequest {
                    gallery: "main".into(),
                    group: g,
                    subject: id.clone(),
                    include_templates: false,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(look.found, "acknowledged {id} missing on replica {n} of group {g}");
        }
    }
    // Both replicas of one group down: partial (with the right share) or UNAVAILABLE.
    // Killing group 0's two holders loses every group held by those two
    // nodes alone.
    let holders = cl.holders(0).await;
    let mut lost_groups = Vec::new();
    for g in 0..GROUPS {
        if cl.holders(g).await.iter().all(|n| holders.contains(n)) {
            lost_groups.push(g);
        }
    }
    // Subjects per group as the nodes hold them: every acknowledged
    // enrolment, and possibly some refused ones that reached a primary
    // before the quorum failed (never acknowledged, so allowed either way).
    let mut per_group = vec![0u64; GROUPS as usize];
    for n in map.nodes.values() {
        let mut c = peers.node(&n.addr).unwrap();
        let st = c.groups(whorl::cluster::pb::GroupsRequest {}).await.unwrap().into_inner();
        for g in st.groups.iter().filter(|g| g.gallery == "main") {
            per_group[g.group as usize] = per_group[g.group as usize].max(g.subjects);
        }
    }
    let total: u64 = per_group.iter().sum();
    assert!(total >= SUBJECTS + acked.len() as u64, "{total} held, {} acknowledged", SUBJECTS + acked.len() as u64);
    let lost: u64 = lost_groups.iter().map(|&g| per_group[g as usize]).sum();
    // The router weighs groups by the sizes its polls last saw: wait until
    // it has seen the last enrolments.
    let t0 = Instant::now();
    loop {
        let st = r.gallery.stats(pb::StatsRequest { gallery: "main".into() }).await.unwrap().into_inner();
        if st.subjects == total {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the router counts {} subjects, the nodes {total}",
            st.subjects
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for &h in &holders {
        cl.nodes[h].signal("KILL");
    }
    let probe = pop.templates(1, 1);
    let t0 = Instant::now();
    let partial = loop {
        let e = r.identification.identify(identify_req(&probe[..1], false)).await;
        if let Err(s) = &e
            && s.code() == Code::Unavailable
        {
            let p = r.identification.identify(identify_req(&probe[..1], true)).await.unwrap().into_inner();
            break p;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "a group with no replica must not be searched silently: {e:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(partial.partial);
    let want = (total - lost) as f64 / total as f64;
    let got = partial.galleries[0].searched_fraction;
    assert!((got - want).abs() < 1e-9, "searched fraction {got}, expected {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_away_a_router_restarted_and_a_frozen_node_do_not_stop_searches() {
    let Some(mut cl) = Cluster::start("outages", Layout::small(Path::new(env!("CARGO_BIN_EXE_whorl")))).await else {
        return;
    };
    let pop = population();
    let mut r = cl.client(0).await;
    // "other" raises no notifications; "main" does (its events live in etcd).
    for s in 0..60 {
        enroll_until_ok(&mut r, enroll_req("other", s, &pop.templates(s, 0)[..2])).await;
    }
    enroll_until_ok(&mut r, enroll_req("main", 7, &pop.templates(7, 0)[..2])).await;
    let search_in = |c: &mut Clients, s: u64, gallery: &str, tx: &str| {
        let probe = pop.templates(s, 1);
        let mut c = c.clone();
        let mut req = identify_req(&probe[..2], false);
        req.galleries = vec![gallery.to_string()];
        req.transaction_id = tx.to_string();
        async move {
            let mut req = tonic::Request::new(req);
            req.set_timeout(Duration::from_secs(10));
            c.identification.identify(req).await.map(|r| r.into_inner())
        }
    };
    let search = |c: &mut Clients, s: u64| search_in(c, s, "other", "");
    // etcd stopped: the last known map serves.
    cl.etcd.stop();
    for s in 0..20 {
        let a = search(&mut r, s).await.unwrap();
        assert_eq!(a.candidates[0].subject_id, Subjects::id(s), "etcd down");
    }
    // A hit in a notifying gallery cannot be answered before its event is
    // durable: UNAVAILABLE, and the same transaction retried later raises
    // exactly one event.
    let e = search_in(&mut r, 7, "main", "tx-7").await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("retry with the same transaction_id"), "{e:?}");
    cl.etcd.restart().unwrap();
    let t0 = Instant::now();
    let ids = loop {
        match search_in(&mut r, 7, "main", "tx-7").await {
            Ok(a) => break a.galleries[0].notifications.clone(),
            Err(e) if t0.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("after etcd came back: {e:?}"),
        }
    };
    let again = search_in(&mut r, 7, "main", "tx-7").await.unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(again.galleries[0].notifications, ids, "a retried transaction raises no second event");
    // A router SIGKILLed and started again: the event it raised (kept in
    // etcd) is still there, once.
    cl.routers[0].0.restart();
    let mut r = cl.client(0).await;
    let t0 = Instant::now();
    let events = loop {
        let sub = pb::SubscribeRequest { subscriber: "ice".into(), ..Default::default() };
        match r.notifications.subscribe(sub).await {
            Ok(s) => {
                let mut s = s.into_inner();
                let mut got = Vec::new();
                while let Ok(Ok(Some(ev))) = tokio::time::timeout(Duration::from_millis(800), s.message()).await {
                    got.push(ev);
                }
                break got;
            }
            Err(e) if t0.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("subscribing after the router restart: {e:?}"),
        }
    };
    assert_eq!(
        events.iter().map(|e| (e.gallery.as_str(), e.subject_id.clone())).collect::<Vec<_>>(),
        vec![("main", Subjects::id(7))],
        "{events:?}"
    );
    for s in 20..30 {
        let t0 = Instant::now();
        loop {
            match search(&mut r, s).await {
                Ok(a) => {
                    assert_eq!(a.candidates[0].subject_id, Subjects::id(s));
                    break;
                }
                Err(e) if t0.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("after the router restart: {e:?}"),
            }
        }
    }
    // A node frozen: every search still answers, hedged to the other replicas.
    cl.nodes[2].signal("STOP");
    for s in 30..50 {
        let a = search(&mut r, s).await.unwrap();
        assert!(!a.partial);
        assert_eq!(a.candidates[0].subject_id, Subjects::id(s), "node frozen");
    }
    cl.nodes[2].signal("CONT");
    let text = cl.routers[0].0.log_text();
    assert!(text.contains("hedging") || text.contains("retrying"), "the router never hedged around the frozen node");
}

/// The TOML blocks of a Kubernetes ConfigMap (`name: |` literal blocks).
fn configmap_blocks(yaml: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in yaml.lines() {
        if let Some((_, text)) = current.as_mut() {
            if line.trim().is_empty() || line.starts_with("    ") {
                text.push_str(line.strip_prefix("    ").unwrap_or(""));
                text.push('\n');
                continue;
            }
            out.extend(current.take());
        }
        if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(": |")) {
            current = Some((name.trim().to_string(), String::new()));
        }
    }
    out.extend(current);
    out
}

#[test]
fn the_kubernetes_configmap_holds_valid_node_and_router_configurations() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/configmap.yaml");
    let blocks = configmap_blocks(&std::fs::read_to_string(path).unwrap());
    let names: Vec<&str> = blocks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["node.toml", "router.toml"]);
    for (name, text) in &blocks {
        // As shipped, the token hashes are placeholders a server refuses
        // (so nobody deploys them by mistake); as an operator fills them in:
        let unfilled = whorl::server::config::Config::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let e = unfilled.check().unwrap_err().to_string();
        assert!(e.contains("token_sha256 must be 64 hex digits"), "{name}: {e}");
        let text = text
            .replace("REPLACE_WITH_SHA256_OF_THE_ADMIN_TOKEN", &"a".repeat(64))
            .replace("REPLACE_WITH_SHA256_OF_THE_SEARCH_TOKEN", &"b".repeat(64));
        let cfg = whorl::server::config::Config::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        cfg.check().unwrap_or_else(|e| panic!("{name}: {e}"));
        match name.as_str() {
            "node.toml" => assert!(cfg.cluster.is_some() && cfg.router.is_none(), "{name}"),
            _ => assert!(cfg.router.is_some() && cfg.cluster.is_none(), "{name}"),
        }
    }
}
