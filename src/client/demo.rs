//! The pieces of `whorl demo`: where its gallery is cached, the working
//! copy each run serves (so that a run's enrolments never reach the
//! cache and a second run prints what the first printed), and the split
//! of FVC2002 into enrolled fingers and probes.

use super::ClientError;
use crate::server::client;
use crate::server::loadgen::BenchProbe;
use std::path::{Path, PathBuf};

/// Where the demo keeps built galleries when not told: beside the build
/// that runs it (`target/whorl-demo` when the binary lies in a Cargo
/// target folder, whatever the working folder), else the user's cache
/// folder (`$XDG_CACHE_HOME/whorl/demo` or `~/.cache/whorl/demo`), else
/// `whorl-demo` here.
pub fn default_cache() -> PathBuf {
    if let Some(t) = std::env::current_exe().ok().as_deref().and_then(cargo_target_dir) {
        return t.join("whorl-demo");
    }
    let xdg = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).filter(|p| p.is_absolute());
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")).filter(|p| p.is_absolute());
    match xdg.or(home) {
        Some(c) => c.join("whorl").join("demo"),
        None => PathBuf::from("whorl-demo"),
    }
}

/// The Cargo target folder holding `exe` (it has a `CACHEDIR.TAG` and
/// `exe` lies in its `release/` or `debug/`, possibly under `deps/` or a
/// target triple).
fn cargo_target_dir(exe: &Path) -> Option<PathBuf> {
    exe.ancestors().skip(1).take(4).find(|d| d.join("CACHEDIR.TAG").is_file()).map(Path::to_path_buf)
}

/// The cached gallery of `subjects` synthetic subjects with `seed`.
pub fn gallery_dir(cache: &Path, subjects: u64, seed: u64) -> PathBuf {
    cache.join(format!("gallery-{subjects}-s{seed}-{}", models_tag()))
}

/// What a cached gallery was built with (shard format, embedding, cylinder
/// parameters): a build with other models gets a folder of its own instead
/// of a cache it could not open.
fn models_tag() -> String {
    let e = crate::embed::Embedder::default().id().to_string();
    let m = crate::shard::mcc_params_crc(&crate::mcc::MccParams::default());
    let f = crate::shard::format::VERSION;
    format!("f{f}-{:08x}", crate::checksum::crc32c(format!("{e}/{m:08x}").as_bytes()))
}

/// Makes `dst` a working copy of the gallery `src`: its files hard-linked
/// (copied where linking fails), except the write-ahead log, which is
/// copied because it is appended in place, and lock files, which belong
/// to their folder. Every other gallery file is written once and replaced
/// by renaming, never changed in place, so the copy's enrolments,
/// deletions and compactions never reach `src`. `dst` is emptied first.
pub fn working_copy(src: &Path, dst: &Path) -> Result<(), ClientError> {
    if dst.exists() {
        std::fs::remove_dir_all(dst).map_err(|e| ClientError::io(dst, e))?;
    }
    std::fs::create_dir_all(dst).map_err(|e| ClientError::io(dst, e))?;
    for entry in std::fs::read_dir(src).map_err(|e| ClientError::io(src, e))? {
        let entry = entry.map_err(|e| ClientError::io(src, e))?;
        let name = entry.file_name();
        let lower = name.to_string_lossy().to_ascii_lowercase();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if !is_file || lower.contains("lock") {
            continue;
        }
        let (from, to) = (entry.path(), dst.join(&name));
        let appended_in_place = name == crate::gallery::wal::FILE;
        if appended_in_place || std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).map_err(|e| ClientError::io(&from, e))?;
        }
    }
    Ok(())
}

/// FVC2002 fingers: odd-numbered fingers (101, 103, ...) are enrolled
/// from impression 1 (subject `fvc-DB1-101`) and searched with
/// impressions 2-8; even ones are never enrolled and give the non-mated
/// probes. Returns (enrolments, probes).
pub fn fvc_sets(dirs: &[PathBuf]) -> (Vec<(String, Vec<u8>)>, Vec<BenchProbe>) {
    let (mut enrol, mut probes) = (Vec::new(), Vec::new());
    for d in dirs {
        let db = d.file_name().map(|n| n.to_string_lossy().replace("_B", "")).unwrap_or_default();
        for f in 101..=110u32 {
            let subject = format!("fvc-{db}-{f}");
            let enrolled = f % 2 == 1;
            for k in 1..=8 {
                let Ok(bytes) = std::fs::read(d.join(format!("{f}_{k}.iso"))) else { continue };
                if k == 1 {
                    if enrolled {
                        enrol.push((subject.clone(), bytes));
                    }
                } else {
                    probes.push(BenchProbe {
                        name: format!("{db}/{f}_{k}"),
                        probe: client::probe(vec![bytes]),
                        mate: enrolled.then(|| subject.clone()),
                    });
                }
            }
        }
    }
    (enrol, probes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_copies_leave_the_original_alone() {
        let base = std::env::temp_dir().join(format!("whorl-wc-{}", std::process::id()));
        let (src, dst) = (base.join("src"), base.join("dst"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("shard-0000.whorl"), b"shard").unwrap();
        std::fs::write(src.join(crate::gallery::wal::FILE), b"log").unwrap();
        std::fs::write(src.join("gallery.lock"), b"").unwrap();
        working_copy(&src, &dst).unwrap();
        assert_eq!(std::fs::read(dst.join("shard-0000.whorl")).unwrap(), b"shard");
        assert!(!dst.join("gallery.lock").exists());
        // The log is a copy: appending to it leaves the original as it was.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(dst.join(crate::gallery::wal::FILE)).unwrap();
        f.write_all(b" more").unwrap();
        assert_eq!(std::fs::read(src.join(crate::gallery::wal::FILE)).unwrap(), b"log");
        // A second copy starts afresh.
        working_copy(&src, &dst).unwrap();
        assert_eq!(std::fs::read(dst.join(crate::gallery::wal::FILE)).unwrap(), b"log");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn the_cache_lies_in_the_target_folder_of_a_cargo_build() {
        let base = std::env::temp_dir().join(format!("whorl-tgt-{}", std::process::id()));
        let exe = base.join("target/release/whorl");
        std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
        std::fs::write(base.join("target/CACHEDIR.TAG"), b"Signature: 8a477f597d28d172789f06886806bc55").unwrap();
        assert_eq!(cargo_target_dir(&exe), Some(base.join("target")));
        assert_eq!(cargo_target_dir(&base.join("elsewhere/whorl")), None);
        let _ = std::fs::remove_dir_all(&base);
    }
}
