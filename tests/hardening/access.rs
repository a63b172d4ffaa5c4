//! Items 3 (no anonymous admin on the network), 4 (audit), 9 (TOML errors,
//! Bearer, health under saturation) and 10 (connections that never speak).

use super::support::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use whorl::server::config::Config;
use whorl::server::pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_authentication_means_loopback_only_unless_loudly_allowed() {
    let dir = build_gallery("exposed");
    let mut cfg = config(&dir);
    cfg.auth.tokens.clear();
    cfg.server.listen = "0.0.0.0:0".parse().unwrap();
    let e = whorl::server::start(cfg.clone()).await.unwrap_err().to_string();
    assert!(
        e.contains("refusing to listen on 0.0.0.0") && e.contains("dangerously_allow_unauthenticated_network"),
        "{e}"
    );
    cfg.server.listen = "[::]:0".parse().unwrap();
    assert!(whorl::server::start(cfg.clone()).await.is_err());
    // Loopback without tokens, the network with tokens, or the loud flag: served.
    let mut ok = cfg.clone();
    ok.server.listen = "127.0.0.1:0".parse().unwrap();
    ok.check().unwrap();
    let mut ok = config(&dir);
    ok.server.listen = "0.0.0.0:0".parse().unwrap();
    ok.check().unwrap();
    cfg.server.listen = "0.0.0.0:0".parse().unwrap();
    cfg.server.dangerously_allow_unauthenticated_network = true;
    let s = whorl::server::start(cfg).await.unwrap();
    s.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn toml_errors_never_echo_the_file() {
    let secret = "s3cr3t-token-0123456789abcdef";
    let text = format!("[[auth.tokens]]\nname = \"ops\"\nrole = \"admin\"\ntoken = \"{secret}\" oops\n");
    let e = Config::parse(&text).unwrap_err();
    assert!(!e.contains(secret) && e.contains("line 4"), "{e}");
    // A token pasted where a role goes: serde would quote the value.
    let text = format!("[[auth.tokens]]\nname = \"ops\"\nrole = \"{secret}\"\ntoken = \"x\"\n");
    let e = Config::parse(&text).unwrap_err();
    assert!(!e.contains(secret) && e.contains("line 3"), "{e}");
    let text = format!("[server]\nmax_in_flight = \"{secret}\"\n");
    let e = Config::parse(&text).unwrap_err();
    assert!(!e.contains(secret), "{e}");
    // Field names still help.
    assert!(Config::parse("[server]\nlisen = 1\n").unwrap_err().contains("lisen"));
    let p = tempdir("toml").with_extension("toml");
    std::fs::write(&p, format!("[server]\nworkers = {secret}\n")).unwrap();
    let e = Config::load(&p).unwrap_err().to_string();
    assert!(!e.contains(secret) && e.contains("line 2"), "{e}");
    let _ = std::fs::remove_file(&p);
}

/// Audit: a denied caller keeps its name, a flood of refusals is counted
/// rather than copied, a shed request is audited unparsed, and an
/// acknowledged enrolment's line is on disk when the reply arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_names_refused_callers_and_survives_floods() {
    let dir = build_gallery("audit");
    let audit = dir.join("audit.jsonl");
    let mut cfg = config(&dir);
    cfg.audit.path = Some(audit.clone());
    cfg.limits.audit_refusals_per_s = 5;
    let server = start(cfg).await;
    let mut c = connect(&server, Some(SEARCH_TOKEN)).await;
    let mut admin = connect(&server, Some(ADMIN_TOKEN)).await;
    let mut anon = connect(&server, None).await;
    let pop = population();
    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&audit).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    // Acknowledged means audited: the line is in the file when the reply comes.
    admin.gallery.enroll(enroll_request("audited", &pop.templates(SUBJECTS + 2, 0))).await.unwrap();
    assert!(read().iter().any(|l| l["method"] == "Enroll" && l["subject"] == "audited" && l["status"] == "OK"));
    admin.gallery.delete(pb::DeleteRequest { subject_id: "audited".into(), ..Default::default() }).await.unwrap();
    assert!(read().iter().any(|l| l["method"] == "Delete" && l["subject"] == "audited" && l["status"] == "OK"));
    // A search token calling Enroll: refused, and audited under its name.
    let e = c.gallery.enroll(enroll_request("x", &pop.templates(1, 0))).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // A flood of unauthenticated calls.
    for _ in 0..200 {
        let e = anon.identification.identify(request(&pop.templates(1, 1))).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    // Shed: audited without a probe hash (nothing was parsed). A fresh
    // second, so that its line is not among the counted ones.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let held: Vec<_> = std::iter::from_fn(|| server.state.engine.try_admit()).collect();
    let e = c.identification.identify(raw_request(vec![xyt(100, 9)])).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    drop(held);
    server.shutdown().await.unwrap();
    let lines = read();
    let denied: Vec<_> =
        lines.iter().filter(|l| l["status"] == "PERMISSION_DENIED" && l["suppressed"].is_null()).collect();
    assert!(
        !denied.is_empty() && denied.iter().all(|l| l["client"].as_str().unwrap().starts_with("station")),
        "{denied:?}"
    );
    let unauth: Vec<_> = lines.iter().filter(|l| l["status"] == "UNAUTHENTICATED").collect();
    let single = unauth.iter().filter(|l| l["suppressed"].is_null()).count() as u64;
    let counted: u64 = unauth.iter().filter_map(|l| l["suppressed"].as_u64()).sum();
    assert_eq!(single + counted, 200, "every refusal is written or counted");
    assert!(unauth.len() < 60, "{} lines for 200 refusals", unauth.len());
    assert!(unauth.iter().any(|l| l["clients_sample"][0].as_str().is_some_and(|c| c.starts_with("unauthenticated"))));
    let shed: Vec<_> =
        lines.iter().filter(|l| l["status"] == "RESOURCE_EXHAUSTED" && l["suppressed"].is_null()).collect();
    assert!(!shed.is_empty() && shed.iter().all(|l| l["probe_sha256"].is_null()), "{shed:?}");
    assert!(!std::fs::read_to_string(&audit).unwrap().contains(SEARCH_TOKEN));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in [audit.clone(), dir.join("wal.log")] {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_saturation_and_bearer_is_case_insensitive() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let dir = build_gallery("health");
    let mut cfg = config(&dir);
    cfg.server.max_in_flight = 4;
    let server = start(cfg).await;
    let c = connect(&server, None).await;
    let mut h = HealthClient::new(c.channel.clone());
    let status = |h: &mut HealthClient<tonic::transport::Channel>| {
        let mut h = h.clone();
        async move {
            h.check(HealthCheckRequest { service: "whorl.v1.Identification".into() }).await.unwrap().into_inner().status
        }
    };
    assert_eq!(status(&mut h).await, ServingStatus::Serving as i32);
    let held: Vec<_> = std::iter::from_fn(|| server.state.engine.try_admit()).collect();
    let t0 = std::time::Instant::now();
    while status(&mut h).await != ServingStatus::NotServing as i32 {
        assert!(t0.elapsed() < Duration::from_secs(5), "health still SERVING while saturated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(held);
    while status(&mut h).await != ServingStatus::Serving as i32 {
        assert!(t0.elapsed() < Duration::from_secs(10), "health still NOT_SERVING after the load went");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // `authorization: BEARER <token>` (RFC 7235: the scheme is case-insensitive).
    let mut ic = pb::identification_client::IdentificationClient::new(c.channel.clone());
    let mut req = tonic::Request::new(request(&population().templates(1, 1)));
    req.metadata_mut().insert("authorization", format!("BEARER {SEARCH_TOKEN}").parse().unwrap());
    assert!(ic.identify(req).await.is_ok());
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads until the server closes the connection (EOF or reset); false if it
/// stays open for `secs` seconds.
async fn closed_within(s: &mut tokio::net::TcpStream, secs: u64) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_closed_and_counted() {
    let dir = build_gallery("conns");
    let mut cfg = config(&dir);
    cfg.limits.handshake_timeout_s = 1;
    cfg.limits.idle_timeout_s = 2;
    cfg.limits.max_connections = 8;
    let server = start(cfg).await;
    let metrics = std::sync::Arc::clone(&server.state.metrics);
    // Eight connections that never speak fill the limit; a ninth is closed at once.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    eventually(5, "eight connections open", || metrics.encode().contains("whorl_connections 8")).await;
    let mut extra = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_within(&mut extra, 1).await, "a connection over the limit stayed open");
    assert_eq!(metrics.connections_closed("over_limit"), 1);
    // The silent ones are closed by the handshake timeout.
    for s in &mut silent {
        assert!(closed_within(s, 5).await, "a silent connection stayed open");
    }
    assert_eq!(metrics.connections_closed("handshake_timeout"), 8);
    // A trickle does not extend the handshake: one byte a quarter second.
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let trickle = async {
        for b in b"PRI * HTTP/2.0\r\n" {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(6), trickle).await.unwrap();
    assert!(closed_within(&mut slow, 3).await, "a trickling handshake stayed open");
    // An HTTP/2 connection that goes quiet after its preface is closed as idle.
    let mut quiet = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    quiet.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    quiet.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // an empty SETTINGS frame
    assert!(closed_within(&mut quiet, 8).await, "an idle connection stayed open");
    assert_eq!(metrics.connections_closed("idle_timeout"), 1);
    // Real clients are served throughout.
    let mut c = connect(&server, Some(SEARCH_TOKEN)).await;
    assert!(c.identification.identify(request(&population().templates(2, 1))).await.is_ok());
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
