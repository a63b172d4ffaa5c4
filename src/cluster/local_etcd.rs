//! A real etcd server started on loopback, for tests, benchmarks and
//! `whorl cluster local`: the `etcd` binary (Debian's `etcd-server`
//! package, or `$WHORL_ETCD`) in a temporary data folder, on free ports,
//! killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running etcd.
#[derive(Debug)]
pub struct LocalEtcd {
    child: Option<Child>,
    /// Its client URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// Its data folder.
    pub dir: PathBuf,
    peer_port: u16,
    client_port: u16,
}

/// The etcd binary to run: `$WHORL_ETCD`, else `etcd` on the PATH or in /usr/bin.
pub fn binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("WHORL_ETCD") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]).map(|d| d.join("etcd")).find(|p| p.is_file())
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalEtcd {
    /// Starts etcd in `dir` (created), waits until it serves clients.
    pub fn start(dir: PathBuf) -> Result<LocalEtcd, String> {
        let client_port = free_port().map_err(|e| e.to_string())?;
        let peer_port = free_port().map_err(|e| e.to_string())?;
        Self::start_on(dir, client_port, peer_port)
    }

    /// Starts etcd on given ports (to restart one on the same address).
    pub fn start_on(dir: PathBuf, client_port: u16, peer_port: u16) -> Result<LocalEtcd, String> {
        let bin = binary().ok_or("no etcd binary (install Debian's etcd-server, or set WHORL_ETCD)")?;
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let url = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut child = Command::new(&bin)
            .args(["--name", "whorl-test", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("whorl-test={peer}")])
            .args(["--log-level", "info", "--logger", "zap"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut said = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // 3.5 and later say the first; 3.4 (Debian 12) the second.
                if !said && (line.contains("ready to serve client requests") || line.contains("serving client traffic"))
                {
                    said = true;
                    let _ = tx.send(());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(()) => Ok(LocalEtcd { child: Some(child), url, dir, peer_port, client_port }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err("etcd did not become ready within 20 s".into())
            }
        }
    }

    /// Stops it (SIGKILL), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let again = LocalEtcd::start_on(self.dir.clone(), self.client_port, self.peer_port)?;
        let mut again = again;
        self.child = again.child.take();
        Ok(())
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An etcd for a test named `name`: `None` (with a note) when no etcd
/// binary is installed, unless `WHORL_REQUIRE_ETCD=1` (CI), which fails.
pub fn for_tests(name: &str) -> Option<LocalEtcd> {
    if binary().is_none() {
        assert!(
            std::env::var("WHORL_REQUIRE_ETCD").ok().as_deref() != Some("1"),
            "WHORL_REQUIRE_ETCD=1 but no etcd binary is installed (Debian: etcd-server)"
        );
        eprintln!("skipped: no etcd binary (install Debian's etcd-server or set WHORL_ETCD)");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("whorl-etcd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    match LocalEtcd::start(dir) {
        Ok(e) => Some(e),
        Err(e) => panic!("etcd: {e}"),
    }
}
