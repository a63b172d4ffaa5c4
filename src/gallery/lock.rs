//! One writer per gallery: an exclusive lock on `GALLERY/LOCK`.
//!
//! The serving process and every offline writer (`whorl compact`, `build`,
//! `enroll-stress`, anything that opens a [`super::Gallery`]) take the lock
//! for as long as they may write; a second one is refused with a message
//! naming the holder (pid, host, command, since when), which the holder
//! writes into the file once it has the lock. The lock is `flock(2)`: the
//! kernel drops it when the holder exits, SIGKILL included, so a crash never
//! leaves a gallery locked. Two opens in one process conflict too (each open
//! file description holds its own lock). Read-only tools (`info`, `verify`)
//! take no lock.
//!
//! Why: two processes appending to one write-ahead log issue the same
//! sequence numbers and overwrite each other's records, and a compaction
//! beside a server folds and trims the log under it; both lost acknowledged
//! enrolments (see `benches/reports/hardening.md`). A served gallery is
//! compacted by its server (the `Compact` RPC and `[gallery]
//! compact_log_bytes`/`compact_log_records`).

use super::GalleryError;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// File name inside the gallery folder.
pub const FILE: &str = "LOCK";

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct GalleryLock {
    _file: File,
}

/// Who holds a lock, as its holder wrote it.
fn holder_line() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown host".into());
    let mut command: String = std::env::args().collect::<Vec<_>>().join(" ");
    if command.len() > 300 {
        let cut = (0..=300).rev().find(|&i| command.is_char_boundary(i)).unwrap_or(0);
        command.truncate(cut);
        command.push_str(" ...");
    }
    let since = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    format!("pid {} on {host}, command `{command}`, since {since}", std::process::id())
}

impl GalleryLock {
    /// Takes the lock of the gallery in `dir` (created if missing), or
    /// refuses naming the holder.
    pub fn acquire(dir: &Path) -> Result<GalleryLock, GalleryError> {
        let path = dir.join(FILE);
        let io = |e: std::io::Error| GalleryError::Io(format!("{}: {e}", path.display()));
        let mut file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        // A lock just released can stay held for a moment by a child process
        // forked meanwhile (its copy of the descriptor lives until its exec
        // closes it): try for a little while before naming a holder.
        let mut tries = 0;
        let locked = loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Err(e) if e == rustix::io::Errno::WOULDBLOCK && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => break r,
            }
        };
        match locked {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder =
                    if holder.is_empty() { "another process (it has not written its name yet)" } else { holder };
                return Err(GalleryError::Locked(format!(
                    "{} is in use by {holder}: one process at a time may write a gallery; stop it, or ask the \
                     serving process to compact (the Compact RPC)",
                    dir.display()
                )));
            }
            Err(e) => return Err(io(e.into())),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(holder_line().as_bytes()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(GalleryLock { _file: file })
    }
}
