//! The built `whorl` binary as a new user meets it: what it prints, how it
//! fails, and that it repeats itself (issue 13, "the first hour").
//!
//! Each test runs the release binary in a temporary folder on a small
//! synthetic gallery; nothing here asserts on time.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn whorl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_whorl"));
    c.env_remove("WHORL_LOG").env_remove("WHORL_SERVER").env_remove("WHORL_PROGRESS");
    c
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("whorl-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(c: &mut Command) -> Output {
    c.output().expect("running whorl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs and insists on success, returning (stdout, stderr).
fn ok(c: &mut Command) -> (String, String) {
    let o = run(c);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{c:?} failed ({}):\n{out}\n{err}", o.status);
    (out, err)
}

fn build_gallery(dir: &Path, n: u32) -> PathBuf {
    let g = dir.join("g");
    ok(whorl().args(["build", "--synth", &n.to_string(), "--out"]).arg(&g));
    g
}

/// `whorl serve` on a free port, stopped (SIGTERM) when dropped.
struct Server {
    child: Child,
    addr: String,
    ready: String,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Server {
    fn start(gallery: &Path) -> Server {
        let mut child = whorl()
            .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--backend", "auto"])
            .arg("--gallery")
            .arg(gallery)
            // Where Vulkan and Mesa are installed, this is what used to print
            // "error: XDG_RUNTIME_DIR is invalid or not set".
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("NODEVICE_SELECT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting whorl serve");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let ready = loop {
            match rx.recv_timeout(std::time::Duration::from_secs(120)) {
                Ok(l) if l.contains("ready on ") => break l,
                Ok(l) => seen.push(l),
                Err(e) => panic!("whorl serve did not say it was ready ({e}): {seen:?}"),
            }
        };
        assert!(seen.iter().all(|l| !l.contains("error")), "error lines before ready: {seen:?}");
        let after = ready.split("ready on ").nth(1).unwrap_or_default();
        let addr = after.split(':').take(2).collect::<Vec<_>>().join(":");
        Server { child, addr, ready, stderr: rx }
    }

    /// SIGTERM, wait, and the rest of stderr.
    fn stop(mut self) -> String {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let status = self.child.wait().expect("waiting for whorl serve");
        assert!(status.success(), "whorl serve exited with {status}");
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }
}

/// Runs `c` with its stdout already closed, as `whorl ... | head -0` would.
fn with_closed_stdout(c: &mut Command) -> Output {
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawning");
    drop(child.stdout.take());
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait().expect("waiting");
    Output { status, stdout: Vec::new(), stderr: err.into_bytes() }
}

#[test]
fn logs_carry_no_colour_codes_off_a_terminal() {
    let dir = scratch("colour");
    let g = dir.join("g");
    let (_, err) = ok(whorl().args(["--log", "info", "build", "--synth", "200", "--out"]).arg(&g));
    assert!(!err.contains('\u{1b}'), "terminal codes in a log that is not a terminal: {err:?}");
    // Other commands, and an error, carry none either.
    let (_, err) = ok(whorl().args(["--log", "info", "verify"]).arg(&g));
    assert!(!err.contains('\u{1b}'), "{err:?}");
    let o = run(whorl().args(["--log", "debug", "serve", "--listen", "0.0.0.0:1", "--gallery"]).arg(&g));
    let err = text(&o.stderr);
    assert!(!o.status.success() && err.contains("without authentication"), "{err}");
    assert!(!err.contains('\u{1b}'), "terminal codes in an error that is not a terminal: {err:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Fails until the in-shard HNSW index lands: today every fresh build
/// logs "WARN ... index file missing ... rebuilding its index" (issue 13,
/// item 2), which reads like damage.
#[test]
fn a_fresh_build_prints_no_warning() {
    let dir = scratch("warn");
    let g = dir.join("g");
    let (_, err) = ok(whorl().args(["build", "--synth", "200", "--out"]).arg(&g));
    assert!(!err.contains("WARN") && !err.contains("error"), "a fresh build warned: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refused_connections_are_said_in_words() {
    let dir = scratch("refused");
    let f = dir.join("p.iso");
    std::fs::write(&f, b"not read before connecting").unwrap();
    // Port 1 on loopback: nothing listens there.
    let o = run(whorl().args(["identify", "--server", "127.0.0.1:1"]).arg(&f));
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("cannot connect to 127.0.0.1:1: connection refused (is `whorl serve` running?)"), "{err}");
    assert!(!err.contains("tonic::") && !err.contains("ConnectError"), "a debug structure: {err}");
    let o = run(whorl().args(["identify", "--server", "ftp://127.0.0.1:1"]).arg(&f));
    assert!(text(&o.stderr).contains("scheme 'ftp' is not http or https"), "{}", text(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_says_the_thing() {
    let commands: [&[&str]; 9] = [
        &["--help"],
        &["build", "--help"],
        &["serve", "--help"],
        &["demo", "--help"],
        &["bench", "--help"],
        &["probes", "--help"],
        &["status", "--help"],
        &["shards", "--help"],
        &["template", "inspect", "--help"],
    ];
    for args in commands {
        let (out, _) = ok(whorl().args(args));
        assert!(!out.contains("whorl::"), "`whorl {}` points at internal code:\n{out}", args.join(" "));
    }
    let (out, _) = ok(whorl().args(["template", "inspect", "--help"]));
    for v in ["iso2005", "iso2011", "ansi2004", "ansi2009", "an2k", "xyt", "json"] {
        assert!(out.contains(v), "inspect --format does not list {v}:\n{out}");
    }
    let (out, _) = ok(whorl().args(["template", "convert", "--help"]));
    assert!(out.contains("[possible values: iso2005, json]"), "{out}");
}

#[test]
fn probes_counts_what_it_writes() {
    let dir = scratch("probes");
    let p = dir.join("p");
    // 40 mated probes drawn from 50 subjects: draws repeat unless kept apart.
    let (out, _) =
        ok(whorl().args(["probes", "--synth-subjects", "50", "--mated", "40", "--non-mated", "10", "--out"]).arg(&p));
    let files = std::fs::read_dir(&p)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "iso"))
        .count();
    assert_eq!(files, 50, "{out}");
    assert!(out.contains("wrote 50 probes (40 mated, 10 never enrolled) as 50 files"), "{out}");
    let o = run(whorl().args(["probes", "--synth-subjects", "5", "--mated", "6", "--non-mated", "0", "--out"]).arg(&p));
    assert!(!o.status.success() && text(&o.stderr).contains("at most one per subject"), "{}", text(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

/// One served gallery for everything a client does: the ready line,
/// host:port addresses, enrolling twice, shards and stats tables, status,
/// and closed pipes.
#[test]
fn a_served_gallery_from_a_clients_side() {
    let dir = scratch("served");
    let g = build_gallery(&dir, 300);
    let probes = dir.join("p");
    ok(whorl().args(["probes", "--synth-subjects", "300", "--mated", "3", "--non-mated", "1", "--out"]).arg(&probes));
    let server = Server::start(&g);
    for part in ["300 subjects", "300 templates in 1 shard", "backend cpu", "TLS off", "auth off", "metrics http://"] {
        assert!(server.ready.contains(part), "the ready line lacks '{part}': {}", server.ready);
    }
    let addr = server.addr.clone();

    // host:port, exactly as serve prints it.
    let probe = std::fs::read_dir(&probes)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "iso"))
        .unwrap();
    let (out, _) = ok(whorl().args(["identify", "--server", &addr]).arg(&probe));
    assert!(out.contains("| rank") && out.contains("threshold"), "{out}");
    let (out, _) = ok(whorl().args(["identify", "--server", &format!("http://{addr}")]).arg(&probe));
    assert!(out.contains("| rank"), "{out}");

    // Enrolling an id twice says what happened.
    let (first, _) = ok(whorl().args(["enroll", "--server", &addr, "--subject", "alice"]).arg(&probe));
    assert!(first.starts_with("enrolled alice (1 template)"), "{first}");
    let again = run(whorl().args(["enroll", "--server", &addr, "--subject", "alice"]).arg(&probe));
    let err = text(&again.stderr);
    assert!(!again.status.success() && err.contains("alice is already enrolled (1 template): pass --replace"), "{err}");
    let (second, _) = ok(whorl().args(["enroll", "--server", &addr, "--subject", "alice", "--replace"]).arg(&probe));
    assert!(second.contains("alice was already enrolled (1 template): replaced by these 1"), "{second}");

    // Tables, and JSON on request.
    let (out, _) = ok(whorl().args(["shards", "--server", &addr]));
    assert!(out.contains("| shard-0000 ") && out.contains("serving"), "{out}");
    let (out, _) = ok(whorl().args(["shards", "--server", &addr, "stats"]));
    assert!(out.contains("| subjects ") && !out.contains("StatsResponse"), "{out}");
    let (out, _) = ok(whorl().args(["shards", "--server", &addr, "stats", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["subjects"], 301, "{out}");

    // A bad probe's error is counted and explained under the table.
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("empty.json"), br#"{"views":[{"minutiae":[]}]}"#).unwrap();
    std::fs::write(bad.join("probes.tsv"), "empty.json\t-\n").unwrap();
    let (out, _) = ok(whorl()
        .args(["bench", "--server", &addr, "--concurrency", "1", "--once", "--probes"])
        .arg(&bad)
        .env("WHORL_PROGRESS", "plain"));
    assert!(out.contains("INVALID_ARGUMENT 1 [1]"), "{out}");
    assert!(out.contains("[1] INVALID_ARGUMENT, 1 in all: the server refused the probe as malformed."), "{out}");

    // status: gallery, shards, backend, load, latency and errors.
    let (out, _) = ok(whorl().args(["status", "--server", &addr, "--window", "0s"]));
    for part in
        ["SERVING", "301 subjects", "| shard-0000 ", "backend: cpu", "search slots", "| Identify ", "INVALID_ARGUMENT"]
    {
        assert!(out.contains(part), "status lacks '{part}':\n{out}");
    }

    // Closed pipes end commands quietly.
    for args in [vec!["shards", "--server", addr.as_str()], vec!["status", "--server", addr.as_str(), "--window", "0s"]]
    {
        let o = with_closed_stdout(whorl().args(&args));
        assert!(
            o.status.success(),
            "`whorl {}` with a closed stdout: {} {}",
            args.join(" "),
            o.status,
            text(&o.stderr)
        );
    }

    let rest = server.stop();
    assert!(!rest.contains("XDG_RUNTIME_DIR") && !rest.contains("error"), "{rest}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn offline_commands_end_quietly_on_a_closed_pipe() {
    let dir = scratch("pipe");
    let g = build_gallery(&dir, 100);
    for args in [vec!["info"], vec!["verify"]] {
        let o = with_closed_stdout(whorl().args(&args).arg(&g));
        assert!(
            o.status.success() && !text(&o.stderr).contains("panicked"),
            "`whorl {} G` with a closed stdout: {} {}",
            args.join(" "),
            o.status,
            text(&o.stderr)
        );
    }
    let data = whorl::data::data_dir();
    if let Some(d) = data {
        let f = d.join("fvc2002/DB1_B/101_1.iso");
        let o = with_closed_stdout(whorl().args(["template", "inspect"]).arg(&f));
        assert!(o.status.success(), "{} {}", o.status, text(&o.stderr));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The demo twice on one cache: the same accuracy, and the cached gallery
/// untouched by the run's enrolments (issue 13, item 1). Progress comes as
/// plain lines when stderr is not a terminal (item 2).
#[test]
fn the_demo_repeats_itself() {
    let dir = scratch("demo");
    let cache = dir.join("cache");
    let demo = |progress: &str| {
        let mut c = whorl();
        c.args(["demo", "--subjects", "1500", "--backend", "cpu", "--synth-probes", "40", "--concurrency", "2"])
            .arg("--cache")
            .arg(&cache)
            .current_dir(&dir)
            .env("WHORL_PROGRESS", progress)
            .env("WHORL_PROGRESS_SECS", "0.2");
        ok(&mut c)
    };
    let listing = || {
        let mut v: Vec<(String, u64)> = std::fs::read_dir(whorl::client::demo::gallery_dir(&cache, 1500, 11))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len())
            })
            .collect();
        v.sort();
        v
    };
    // Accuracy columns: errors, rank-1, FNIR, FPIR, FNIR @ FPIR 1%.
    let accuracy = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| callers") && !l.starts_with("| -"))
            .map(|l| l.split('|').map(str::trim).skip(8).collect::<Vec<_>>().join(" | "))
            .collect()
    };
    let (first, err) = demo("plain");
    assert!(err.contains("  writing: 1,500 templates...") && err.contains("  indexing"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
    let before = listing();
    let (second, _) = demo("off");
    assert!(second.contains("(cached)"), "{second}");
    assert_eq!(listing(), before, "the run changed the cached gallery");
    let (a, b) = (accuracy(&first), accuracy(&second));
    assert!(!a.is_empty(), "{first}");
    assert_eq!(a, b, "\nfirst run:\n{first}\nsecond run:\n{second}");
    assert!(first.contains("1,500 subjects") || first.contains("1,520 subjects"), "{first}");
    assert!(!first.contains("INVALID_ARGUMENT"), "{first}");
    assert!(!cache.join("run-1500-s11").exists(), "the working copy was left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn capacity_sizes_from_the_committed_profile_and_refuses_a_broken_one() {
    let (out, _) = ok(whorl().args(["capacity"]));
    assert!(out.contains("nodes: ") && out.contains("bound by"), "{out}");
    // The committed profile carries both recall curves, so the cluster's
    // recall (whole-position exact search × what HNSW keeps) is printed.
    assert!(out.contains("mate kept among a finger's candidates: "), "{out}");
    let dir = scratch("capacity");
    let bad = dir.join("profile.json");
    std::fs::write(&bad, "{\"measured_on\": 3}").unwrap();
    let o = run(whorl().arg("capacity").arg("--profile").arg(&bad));
    assert!(!o.status.success(), "a malformed profile must be refused");
    assert!(text(&o.stderr).contains("profile"), "{}", text(&o.stderr));
}
