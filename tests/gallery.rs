//! Shards, the gallery folder, the write-ahead log and their faults.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use whorl::embed::Embedder;
use whorl::gallery::{self, BuildOptions, Gallery, GalleryError, GalleryOptions, Manifest};
use whorl::index::IndexParams;
use whorl::mcc::Matcher;
use whorl::shard::{Entry, SectionKind, Shard, ShardError, ShardSpec, ShardWriter};
use whorl::synth::{Synth, SynthParams};
use whorl::template::Template;

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("whorl-gallery-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn small_index() -> IndexParams {
    IndexParams { max_connections: 8, ef_construction: 40 }
}

fn opts() -> GalleryOptions {
    GalleryOptions { index: small_index(), shard_size: 50, ..GalleryOptions::default() }
}

/// Writes a shard of `n` synthetic templates (two per subject) with labels.
fn write_shard(path: &Path, n: u64, f16: bool, seed: u64) -> Vec<(String, Template)> {
    let (e, m) = (Embedder::default(), Matcher::default());
    let spec = ShardSpec { embedding: e.id(), mcc: m.params().clone(), f16 };
    let mut w = ShardWriter::create(path, spec).unwrap();
    let s = Synth::new(SynthParams::default(), seed);
    let mut out = Vec::new();
    for i in 0..n {
        let subject = format!("subject-{:03}", i / 2);
        let t = s.template(i, 0);
        let labels = vec![("watchlist".to_string(), format!("w{}", i % 3)), ("origin".to_string(), "test".to_string())];
        let (p, v) = (m.prepare(&t), e.embed(&t));
        w.push(Entry { subject: &subject, labels: &labels, template: &t, prepared: &p, embedding: &v }).unwrap();
        out.push((subject, t));
    }
    let summary = w.finish().unwrap();
    assert_eq!(summary.templates, n);
    out
}

#[test]
fn shards_round_trip() {
    let dir = tempdir("roundtrip");
    let (e, m) = (Embedder::default(), Matcher::default());
    for f16 in [false, true] {
        let path = dir.join(format!("s{f16}.whorl"));
        let written = write_shard(&path, 9, f16, 3);
        let s = Shard::open(&path).unwrap();
        s.verify().unwrap();
        assert_eq!((s.len(), s.subjects(), s.f16(), s.embedding()), (9, 5, f16, e.id()));
        let mut v = vec![0f32; e.dim()];
        for (t, (subject, tpl)) in written.iter().enumerate() {
            assert_eq!(s.subject_id(s.subject_index(t)).unwrap(), subject);
            assert_eq!(&s.template(t).unwrap(), tpl);
            assert_eq!(s.prepared(t).unwrap().words(), m.prepare(tpl).words());
            assert_eq!(s.finger(t), tpl.finger_position);
            s.embedding_into(t, &mut v);
            let want = e.embed(tpl);
            let tol = if f16 { 2e-3 } else { 0.0 };
            assert!(v.iter().zip(&want).all(|(a, b)| (a - b).abs() <= tol));
        }
        let labels = s.subject_labels(1).unwrap();
        assert_eq!(labels, vec![("watchlist", "w2"), ("origin", "test")]);
    }
    // No spill files are left behind.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("spill"))
        .collect();
    assert!(left.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Golden files: one tiny shard per format version, written by whorl itself
/// (`cargo test --release --test gallery write_golden -- --ignored`), with
/// the JSON of its templates. Every later build must still read them.
#[test]
fn golden_shard_v1_opens() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let s = Shard::open(&root.join("shard-v1.whorl")).expect("golden shard v1");
    s.verify().unwrap();
    assert_eq!((s.header().version, s.len(), s.subjects()), (1, 3, 2));
    let want = whorl::template::parse(&std::fs::read(root.join("shard-v1.json")).unwrap()).unwrap();
    for (t, tpl) in want.iter().enumerate() {
        assert_eq!(&s.template(t).unwrap(), tpl);
        assert!(!s.prepared(t).unwrap().is_empty());
    }
    assert_eq!(s.subject_id(0).unwrap(), "subject-000");
}

#[test]
#[ignore = "writes the golden files; run once per format version"]
fn write_golden() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let written = write_shard(&root.join("shard-v1.whorl"), 3, false, 8);
    let ts: Vec<Template> = written.into_iter().map(|(_, t)| t).collect();
    std::fs::write(root.join("shard-v1.json"), whorl::template::write(&ts, whorl::template::Format::Json).unwrap())
        .unwrap();
}

fn flip(path: &Path, at: u64) {
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x40]).unwrap();
}

/// Every single byte of a shard, flipped, makes open or verify refuse it,
/// naming the file, a section and an offset.
#[test]
fn every_byte_flip_of_a_shard_is_refused() {
    let dir = tempdir("flips");
    let path = dir.join("one.whorl");
    write_shard(&path, 2, false, 21);
    let len = std::fs::metadata(&path).unwrap().len();
    let sections = Shard::open(&path).unwrap().sections();
    let mut by_section = std::collections::HashMap::new();
    for at in 0..len {
        flip(&path, at);
        let err = Shard::open(&path).and_then(|s| s.verify()).expect_err(&format!("flip at {at} accepted"));
        let msg = err.to_string();
        assert!(msg.contains("one.whorl"), "{msg}");
        if let ShardError::Corrupt { section, offset, .. } = &err {
            assert!(*offset <= len, "{msg}");
            *by_section.entry(section.clone()).or_insert(0) += 1;
        }
        flip(&path, at);
    }
    Shard::open(&path).unwrap().verify().unwrap();
    for (k, _, l, _) in sections {
        if l > 0 {
            assert!(by_section.contains_key(k.name()), "no flip was caught in section {}", k.name());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn truncated_missing_and_foreign_files_give_clear_errors() {
    let dir = tempdir("truncated");
    let path = dir.join("t.whorl");
    write_shard(&path, 4, false, 5);
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 7, 100, 500, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let e = Shard::open(&path).expect_err("truncated shard accepted");
        assert!(e.to_string().contains("t.whorl"), "{e}");
    }
    assert!(matches!(Shard::open(&dir.join("absent.whorl")), Err(ShardError::Io { .. })));
    std::fs::write(&path, b"PNG not a shard at all").unwrap();
    assert!(matches!(Shard::open(&path), Err(ShardError::Magic { .. })));
    let _ = std::fs::remove_dir_all(&dir);
}

fn build_gallery(dir: &Path, n: u64, embedder: &Embedder) {
    let s = Synth::new(SynthParams::default(), 31);
    let items = (0..n).map(|i| (format!("G{i:05}"), vec![("list".to_string(), "demo".to_string())], s.template(i, 0)));
    let opts = BuildOptions { shard_size: 40, index: small_index(), ..BuildOptions::default() };
    let r = gallery::build(dir, embedder, &Matcher::default(), &opts, items, |_, _| {}).unwrap();
    assert_eq!(r.templates, n);
}

#[test]
fn manifest_byte_flips_are_refused() {
    let dir = tempdir("manifest");
    build_gallery(&dir, 10, &Embedder::default());
    let path = dir.join("manifest.json");
    let len = std::fs::metadata(&path).unwrap().len();
    for at in 0..len {
        flip(&path, at);
        assert!(Manifest::load(&dir).is_err(), "manifest flip at {at} accepted");
        flip(&path, at);
    }
    Manifest::load(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_damaged_shard_leaves_the_gallery_degraded_not_down() {
    let dir = tempdir("degraded");
    build_gallery(&dir, 100, &Embedder::default());
    let m = Manifest::load(&dir).unwrap();
    assert_eq!(m.shards.len(), 3);
    // Damage the prepared cylinders of shard 1, remove shard 2.
    let s1 = Shard::open(&dir.join(&m.shards[1].file)).unwrap();
    let (_, off, len, _) = s1.sections().into_iter().find(|s| s.0 == SectionKind::Prepared).unwrap();
    drop(s1);
    flip(&dir.join(&m.shards[1].file), off + len / 2);
    std::fs::remove_file(dir.join(&m.shards[2].file)).unwrap();
    let g = Gallery::open(&dir, Embedder::default(), Matcher::default(), opts()).unwrap();
    let problems = g.problems();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].error.contains("prepared cylinders") && problems[0].error.contains("offset"), "{problems:?}");
    assert!(problems[1].error.contains(&m.shards[2].file), "{problems:?}");
    let snap = g.snapshot();
    assert_eq!(snap.shards.len(), 1);
    assert_eq!(snap.templates(), 40);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn another_embedding_version_is_refused_clearly() {
    let dir = tempdir("mismatch");
    build_gallery(&dir, 5, &Embedder::pair_histogram());
    let e = Gallery::open(&dir, Embedder::default(), Matcher::default(), opts()).unwrap_err();
    assert!(matches!(e, GalleryError::Mismatch(_)) && e.to_string().contains("mph-raw"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_or_stale_indexes_are_rebuilt() {
    let dir = tempdir("reindex");
    build_gallery(&dir, 30, &Embedder::default());
    std::fs::remove_file(dir.join("shard-0000.p01.hnsw.graph")).unwrap();
    let g = Gallery::open(&dir, Embedder::default(), Matcher::default(), opts()).unwrap();
    assert!(g.problems().is_empty());
    assert!(dir.join("shard-0000.p01.hnsw.graph").exists());
    drop(g);
    let meta = dir.join("shard-0000.index.json");
    let text = std::fs::read_to_string(&meta).unwrap().replace("\"vectors_crc32c\": ", "\"vectors_crc32c\": 1");
    std::fs::write(&meta, text).unwrap();
    let no_build = GalleryOptions { build_missing_indexes: false, ..opts() };
    let g = Gallery::open(&dir, Embedder::default(), Matcher::default(), no_build).unwrap();
    assert!(g.problems()[0].error.contains("stale index"), "{:?}", g.problems());
    drop(g);
    let g = Gallery::open(&dir, Embedder::default(), Matcher::default(), opts()).unwrap();
    assert!(g.problems().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn enrol_delete_compact_and_reopen() {
    let dir = tempdir("enrol");
    build_gallery(&dir, 30, &Embedder::default());
    let s = Synth::new(SynthParams::default(), 99);
    let g = Gallery::open(&dir, Embedder::default(), Matcher::default(), opts()).unwrap();
    let before = g.snapshot();
    let seq =
        g.enroll("NEW-1", vec![("list".into(), "watch".into())], vec![s.template(1, 0), s.template(2, 0)]).unwrap();
    assert!(seq >= 1);
    assert_eq!(g.subject("NEW-1").unwrap().templates.len(), 2);
    assert_eq!(g.snapshot().templates(), 32);
    assert_eq!(before.templates(), 30, "an old snapshot does not change");
    g.delete("G00003").unwrap();
    assert!(g.subject("G00003").is_none());
    assert!(matches!(g.delete("nobody"), Err(GalleryError::NotFound(_))));
    assert!(g.enroll("", vec![], vec![s.template(3, 0)]).is_err());
    assert!(g.enroll("x", vec![], vec![]).is_err());
    assert!(g.enroll("x", vec![], vec![Template::default()]).is_err());
    // An enrolled id is refused (ALREADY_EXISTS); delete then re-enrol:
    // the new templates are visible.
    assert!(matches!(g.enroll("G00004", vec![], vec![s.template(4, 0)]), Err(GalleryError::AlreadyExists(_))));
    g.delete("G00004").unwrap();
    g.enroll("G00004", vec![], vec![s.template(5, 0)]).unwrap();
    assert_eq!(g.subject("G00004").unwrap().templates, vec![s.template(5, 0)]);
    drop(g);
    // Reopen: the log is replayed.
    let g = Gallery::open(&dir, Embedder::default(), Matcher::default(), opts()).unwrap();
    assert_eq!(g.subject("NEW-1").unwrap().labels, vec![("list".to_string(), "watch".to_string())]);
    assert!(g.subject("G00003").is_none());
    assert_eq!(g.snapshot().templates(), 30 + 2 - 1 - 1 + 1);
    let r = g.compact().unwrap();
    assert_eq!((r.removed_templates, r.folded_templates), (2, 3));
    assert!(g.snapshot().delta.entries.is_empty());
    assert_eq!(g.snapshot().templates(), 31);
    drop(g);
    let g = Gallery::open(&dir, Embedder::default(), Matcher::default(), opts()).unwrap();
    assert!(g.problems().is_empty());
    assert_eq!(g.snapshot().templates(), 31);
    assert_eq!(g.subject("G00004").unwrap().templates, vec![s.template(5, 0)]);
    assert!(g.subject("G00003").is_none());
    // Trimmed to its last record, which replicas check theirs against.
    assert!(g.wal_bytes() > 16 && g.wal_bytes() < 4096, "the log was trimmed to its last record");
    assert_eq!(g.last_record().unwrap().0, r.applied_seq);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn snapshots_stay_consistent_while_shards_come_and_go() {
    let dir = tempdir("attach");
    build_gallery(&dir, 80, &Embedder::default());
    let g = Arc::new(Gallery::open(&dir, Embedder::default(), Matcher::default(), opts()).unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (g, stop) = (Arc::clone(&g), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut seen = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let snap = g.snapshot();
                let n = snap.shards.len();
                let total: usize = snap.shards.iter().map(|s| s.shard.len()).sum();
                std::thread::yield_now();
                // The same snapshot, read again, is unchanged.
                assert_eq!(snap.shards.len(), n);
                assert_eq!(snap.shards.iter().map(|s| s.shard.len()).sum::<usize>(), total);
                seen += 1;
            }
            seen
        })
    };
    for _ in 0..5 {
        let e = g.detach_shard("shard-0001").unwrap();
        assert_eq!(g.snapshot().shards.len(), 1);
        assert!(g.attach_shard(&e.file).is_ok());
        assert_eq!(g.snapshot().shards.len(), 2);
    }
    assert!(g.attach_shard("../etc/passwd").is_err());
    assert!(matches!(g.detach_shard("nope"), Err(GalleryError::NotFound(_))));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(reader.join().unwrap() > 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_log_truncates_a_torn_tail_and_refuses_mid_log_damage() {
    use gallery::wal::{Op, Wal};
    let dir = tempdir("wal");
    let (w, r) = Wal::open(&dir, gallery::SyncMode::PerRecord).unwrap();
    assert!(r.records.is_empty());
    for i in 0..5 {
        w.append(Op::Delete { subject: format!("s{i}") }).unwrap();
    }
    drop(w);
    let path = dir.join("wal.log");
    let good = std::fs::read(&path).unwrap();
    // A record cut short at every possible point of the last one.
    let last_start = {
        let mut at = 16usize;
        let mut starts = vec![];
        while at < good.len() {
            starts.push(at);
            at += 8 + u32::from_le_bytes(good[at..at + 4].try_into().unwrap()) as usize;
        }
        *starts.last().unwrap()
    };
    for cut in last_start + 1..good.len() {
        std::fs::write(&path, &good[..cut]).unwrap();
        let (_, r) = Wal::open(&dir, gallery::SyncMode::PerRecord).unwrap();
        assert_eq!(r.records.len(), 4, "cut at {cut}");
        assert_eq!(r.truncated.map(|t| t.0), Some(last_start as u64));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), last_start as u64, "tail truncated on disk");
    }
    // A flipped byte in the last record: a torn tail. In an earlier record: refused.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 3] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    assert_eq!(Wal::open(&dir, gallery::SyncMode::PerRecord).unwrap().1.records.len(), 4);
    let mut bad = good.clone();
    bad[16 + 12] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let e = Wal::open(&dir, gallery::SyncMode::PerRecord).unwrap_err();
    assert!(e.to_string().contains("offset 16"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kills an enrolling process with SIGKILL at random moments, at least 20
/// times, and checks after each restart that every acknowledged enrolment is
/// present and that no enrolment is half-visible.
#[test]
fn acknowledged_enrolments_survive_sigkill() {
    use rand::{Rng, SeedableRng};
    let dir = tempdir("crash");
    let bin = env!("CARGO_BIN_EXE_whorl");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut acked: std::collections::BTreeSet<String> = Default::default();
    let mut next = 0u64;
    let fingers = 3;
    let mut kills = 0;
    while kills < 22 {
        let mut child = std::process::Command::new(bin)
            .args(["enroll-stress", "--gallery", dir.to_str().unwrap(), "--start", &next.to_string(), "--count", "400"])
            .args(["--fingers", &fingers.to_string()])
            .arg(if kills % 2 == 0 { "--threads=1" } else { "--threads=2" })
            .args(if kills % 3 == 0 { vec!["--group"] } else { vec![] })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let wait_ms = rng.random_range(50..700);
        std::thread::sleep(std::time::Duration::from_millis(wait_ms));
        child.kill().unwrap(); // SIGKILL
        let out = child.wait_with_output().unwrap();
        kills += 1;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(id) = line.strip_prefix("acked ") {
                acked.insert(id.to_string());
            }
        }
        next += 400;
        // Restart: every acknowledged subject is there, whole; nothing is partial.
        let g = Gallery::open(&dir, Embedder::default(), Matcher::default(), opts()).unwrap();
        for id in &acked {
            let v = g.subject(id).unwrap_or_else(|| panic!("acknowledged {id} lost after kill {kills}"));
            assert_eq!(v.templates.len(), fingers as usize, "{id}");
        }
        let snap = g.snapshot();
        let mut per: std::collections::HashMap<&str, usize> = Default::default();
        for e in snap.delta.live() {
            *per.entry(&e.subject).or_default() += 1;
        }
        assert!(per.values().all(|&c| c == fingers as usize), "a half-visible enrolment");
        if kills % 7 == 0 {
            g.compact().unwrap();
        }
    }
    assert!(acked.len() > 20, "the test enrolled too little to mean anything: {}", acked.len());
    let _ = std::fs::remove_dir_all(&dir);
}
