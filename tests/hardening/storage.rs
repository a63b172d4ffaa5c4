//! Item 2 (one writer per gallery; the server compacts its own gallery)
//! and item 9 (LoadShard within the gallery folder, no copies, no paths).

use super::support::*;
use tonic::Code;
use whorl::embed::Embedder;
use whorl::gallery::{Gallery, GalleryError, GalleryOptions};
use whorl::mcc::Matcher;
use whorl::server::pb;

fn open(dir: &std::path::Path) -> Result<Gallery, GalleryError> {
    Gallery::open(dir, Embedder::default(), Matcher::default(), GalleryOptions::default())
}

fn whorl(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_whorl")).args(args).output().unwrap()
}

/// Every writer takes the gallery's lock; a second one is refused with a
/// message naming the holder, and the lock goes with the holder.
#[test]
fn one_writer_per_gallery() {
    let dir = build_gallery("lock");
    let g = open(&dir).unwrap();
    let me = format!("pid {}", std::process::id());
    match open(&dir) {
        Err(GalleryError::Locked(m)) => assert!(m.contains(&me) && m.contains("command `"), "{m}"),
        other => panic!("a second open was not refused: {other:?}"),
    }
    let d = dir.to_str().unwrap();
    for args in [
        vec!["compact", d],
        vec!["enroll-stress", "--gallery", d, "--count", "1"],
        vec!["build", "--synth", "10", "--out", d],
    ] {
        let out = whorl(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("is in use by") && err.contains(&me), "{args:?}: {err}");
    }
    // A second server: refused, naming the holder, instead of serving beside it.
    let out = whorl(&["serve", "--gallery", d, "--listen", "127.0.0.1:0", "--backend", "cpu"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is in use by") && err.contains(&me), "serve: {err}");
    // Read-only tools still work beside the holder.
    assert!(whorl(&["verify", d]).status.success());
    drop(g);
    let out = whorl(&["compact", d]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(open(&dir).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The served gallery is compacted by its server (RPC, and automatically
/// past a log size), and nothing acknowledged is lost across it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_compacts_its_own_gallery_without_losing_enrolments() {
    let dir = build_gallery("compact");
    let mut cfg = config(&dir);
    cfg.gallery.compact_log_records = 0;
    cfg.gallery.compact_log_bytes = 0;
    let server = start(cfg).await;
    let mut admin = connect(&server, Some(ADMIN_TOKEN)).await;
    let pop = population();
    let mut acked = Vec::new();
    for k in 0..12u64 {
        let id = format!("online-{k}");
        admin.gallery.enroll(enroll_request(&id, &pop.templates(SUBJECTS + k, 0))).await.unwrap();
        acked.push(id);
    }
    // An offline compaction is refused while the server holds the gallery.
    let out = whorl(&["compact", dir.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is in use by"));
    let r = admin.gallery.compact(pb::CompactRequest { ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(r.folded_templates, 12 * u64::from(FINGERS));
    // The log keeps its last record (replicas check a tail against it):
    // one of the twelve enrolments logged.
    assert!(r.wal_bytes_after <= r.wal_bytes_before / 12 + 16, "{r:?}");
    for k in 12..16u64 {
        let id = format!("online-{k}");
        admin.gallery.enroll(enroll_request(&id, &pop.templates(SUBJECTS + k, 0))).await.unwrap();
        acked.push(id);
    }
    let mut c = connect(&server, Some(SEARCH_TOKEN)).await;
    let found = c.identification.identify(request(&pop.templates(SUBJECTS + 3, 1))).await.unwrap().into_inner();
    assert_eq!(found.candidates[0].subject_id, "online-3");
    assert!(found.candidates[0].fingers.iter().all(|f| f.source != "delta"), "folded into a shard");
    server.shutdown().await.unwrap();

    // Automatic: past 5 records of log.
    let mut cfg = config(&dir);
    cfg.gallery.compact_log_records = 5;
    cfg.gallery.compact_log_bytes = 0;
    let server = start(cfg).await;
    let mut admin = connect(&server, Some(ADMIN_TOKEN)).await;
    for k in 16..22u64 {
        let id = format!("online-{k}");
        admin.gallery.enroll(enroll_request(&id, &pop.templates(SUBJECTS + k, 0))).await.unwrap();
        acked.push(id);
    }
    let st = std::sync::Arc::clone(&server.state);
    let idle = || {
        st.metrics.compactions_total() >= 1
            && !st.entry("").unwrap().compacting.load(std::sync::atomic::Ordering::SeqCst)
    };
    eventually(60, "an automatic compaction", idle).await;
    drop(st);
    let stats = admin.gallery.stats(pb::StatsRequest { ..Default::default() }).await.unwrap().into_inner();
    assert!(stats.compactions >= 1 && stats.wal_records < 6, "{stats:?}");
    server.shutdown().await.unwrap();
    let g = open(&dir).unwrap();
    for id in &acked {
        assert_eq!(g.subject(id).map(|s| s.templates.len()), Some(FINGERS as usize), "{id} lost");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_shard_stays_in_the_gallery_folder_and_refuses_copies() {
    let dir = build_gallery("load");
    let outside = tempdir("load-outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), b"TOPSECRET-bytes-of-another-file").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.join("secret.txt"), dir.join("evil.whorl")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(dir.join("shard-0000.whorl"), dir.join("alias.whorl")).unwrap();
    std::fs::copy(dir.join("shard-0000.whorl"), dir.join("copy.whorl")).unwrap();
    std::fs::write(dir.join("junk.whorl"), b"not a shard at all").unwrap();
    let server = start(config(&dir)).await;
    let mut admin = connect(&server, Some(ADMIN_TOKEN)).await;
    let load = |file: &str| {
        let mut g = admin.gallery.clone();
        let file = file.to_string();
        async move { g.load_shard(pb::LoadShardRequest { file, ..Default::default() }).await.unwrap_err() }
    };
    let abs = dir.display().to_string();
    for (file, code, want) in [
        ("evil.whorl", Code::InvalidArgument, "symbolic link"),
        ("alias.whorl", Code::InvalidArgument, "symbolic link"),
        ("copy.whorl", Code::AlreadyExists, "same data as shard 'shard-0000'"),
        ("junk.whorl", Code::InvalidArgument, "not a whorl shard"),
        ("wal.log", Code::InvalidArgument, "*.whorl"),
        ("nothing.whorl", Code::NotFound, "no file"),
    ] {
        let e = load(file).await;
        assert_eq!(e.code(), code, "{file}: {e:?}");
        assert!(e.message().contains(want), "{file}: {}", e.message());
        assert!(!e.message().contains("TOPSECRET") && !e.message().contains(&abs), "{file}: {}", e.message());
    }
    let stats = admin.gallery.stats(pb::StatsRequest { ..Default::default() }).await.unwrap().into_inner();
    assert_eq!((stats.shards, stats.subjects), (2, SUBJECTS), "nothing counted twice");
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&outside);
}
