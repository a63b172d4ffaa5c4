//! The galleries a server serves, by name: the criminal-history and the
//! immigration records in one deployment, each with its own shards, log,
//! index, subject count and decision threshold, searched together or
//! apart. Each opens in the background; a gallery that fails to open is
//! reported in the answers that name it and does not stop the others.

use super::pb;
use crate::gallery::Gallery;
use crate::search::Searcher;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use tonic::Status;

/// One gallery served by name.
#[derive(Debug)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// Its folder.
    pub path: PathBuf,
    /// Searched when an Identify names no gallery.
    pub default: bool,
    /// Hits in it raise notifications.
    pub notify: bool,
    searcher: OnceLock<Arc<Searcher>>,
    load_error: Mutex<Option<String>>,
    /// Set while a compaction of it runs (one at a time).
    pub compacting: AtomicBool,
    unloaded: AtomicBool,
}

impl Entry {
    /// A gallery about to open.
    pub fn new(name: &str, path: PathBuf, default: bool, notify: bool) -> Arc<Entry> {
        Arc::new(Entry {
            name: name.to_string(),
            path,
            default,
            notify,
            searcher: OnceLock::new(),
            load_error: Mutex::new(None),
            compacting: AtomicBool::new(false),
            unloaded: AtomicBool::new(false),
        })
    }

    /// Marks it open.
    pub fn opened(&self, s: Arc<Searcher>) {
        let _ = self.searcher.set(s);
    }

    /// Marks it failed to open.
    pub fn failed(&self, e: String) {
        if let Ok(mut l) = self.load_error.lock() {
            *l = Some(e);
        }
    }

    /// Whether it opened or failed (not loading any more).
    pub fn settled(&self) -> bool {
        self.searcher.get().is_some() || self.load_error.lock().is_ok_and(|e| e.is_some())
    }

    /// Its searcher, or UNAVAILABLE (still loading, failed, unloaded).
    pub fn searcher(&self) -> Result<&Arc<Searcher>, Status> {
        if self.unloaded.load(Ordering::Relaxed) {
            return Err(Status::unavailable(format!("gallery '{}' is unloaded", self.name)));
        }
        self.searcher.get().ok_or_else(|| match self.load_error.lock().ok().and_then(|e| e.clone()) {
            Some(e) => Status::unavailable(format!("gallery '{}' failed to open: {e}", self.name)),
            None => Status::unavailable(format!(
                "gallery '{}' is still loading (health reports NOT_SERVING until every gallery is settled)",
                self.name
            )),
        })
    }

    /// The open searcher, if any (loaded and not unloaded).
    pub fn serving(&self) -> Option<&Arc<Searcher>> {
        self.searcher().ok()
    }

    /// Its gallery folder, open.
    pub fn gallery(&self) -> Result<Arc<Gallery>, Status> {
        self.searcher()?.gallery().ok_or_else(|| Status::unavailable("no gallery is held here"))
    }

    /// Its state and error, for listings.
    pub fn status(&self) -> (&'static str, String) {
        if self.unloaded.load(Ordering::Relaxed) {
            return ("unloaded", String::new());
        }
        if self.searcher.get().is_some() {
            return ("serving", String::new());
        }
        match self.load_error.lock().ok().and_then(|e| e.clone()) {
            Some(e) => ("failed", e),
            None => ("loading", String::new()),
        }
    }

    /// Its description on the wire.
    pub fn info(&self) -> pb::GalleryInfo {
        let (status, error) = self.status();
        let mut i = pb::GalleryInfo {
            name: self.name.clone(),
            status: status.into(),
            error,
            default: self.default,
            notify: self.notify,
            groups: 1,
            ..Default::default()
        };
        if let Some(s) = self.serving() {
            let views = s.views();
            i.subjects = views.iter().map(|v| v.subjects).sum();
            i.templates = views.iter().map(|v| v.snap.templates() as u64).sum();
            i.shards = views.iter().map(|v| v.snap.shards.len() as u32).sum();
            i.generation = views.iter().map(|v| v.snap.generation).sum();
            i.delta_templates = views.iter().map(|v| v.snap.delta.live().count() as u64).sum();
            i.tombstones = views.iter().map(|v| v.snap.delta.tombstones.len() as u64).sum();
            i.groups = s.groups();
            i.wal_bytes = s.parts().iter().map(|p| p.gallery.wal_bytes()).sum();
        }
        i
    }
}

/// Every gallery served.
#[derive(Debug, Default)]
pub struct Catalog {
    entries: RwLock<Vec<Arc<Entry>>>,
}

impl Catalog {
    /// A catalog of `entries`, in order.
    pub fn new(entries: Vec<Arc<Entry>>) -> Catalog {
        Catalog { entries: RwLock::new(entries) }
    }

    /// Every gallery, in order.
    pub fn all(&self) -> Vec<Arc<Entry>> {
        self.entries.read().map(|e| e.clone()).unwrap_or_default()
    }

    /// The default galleries, in order.
    pub fn defaults(&self) -> Vec<Arc<Entry>> {
        self.all().into_iter().filter(|e| e.default).collect()
    }

    /// The gallery named `name`, or the first default one for "".
    pub fn get(&self, name: &str) -> Result<Arc<Entry>, Status> {
        let all = self.all();
        let found = if name.is_empty() {
            all.iter().find(|e| e.default).or_else(|| all.first()).cloned()
        } else {
            all.iter().find(|e| e.name == name && !e.unloaded.load(Ordering::Relaxed)).cloned()
        };
        found.ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|e| e.name.as_str()).collect();
            Status::not_found(format!("no gallery '{name}' (served: {})", names.join(", ")))
        })
    }

    /// The galleries an Identify names (none: the default set), each once,
    /// in request order.
    pub fn resolve(&self, names: &[String]) -> Result<Vec<Arc<Entry>>, Status> {
        if names.is_empty() {
            let d = self.defaults();
            if d.is_empty() {
                return Err(Status::failed_precondition("no default gallery: name the galleries to search"));
            }
            return Ok(d);
        }
        named(names)?.iter().map(|n| self.get(n)).collect()
    }

    /// Adds a gallery (ALREADY_EXISTS if the name is taken by one served).
    pub fn add(&self, e: Arc<Entry>) -> Result<(), Status> {
        let mut all = self.entries.write().map_err(|_| Status::internal("catalog lock poisoned"))?;
        if let Some(i) = all.iter().position(|x| x.name == e.name) {
            if !all[i].unloaded.load(Ordering::Relaxed) {
                return Err(Status::already_exists(format!("gallery '{}' is served already", e.name)));
            }
            all.remove(i);
        }
        if all.iter().any(|x| x.path == e.path && !x.unloaded.load(Ordering::Relaxed)) {
            return Err(Status::already_exists("that folder is served already as another gallery"));
        }
        all.push(e);
        Ok(())
    }

    /// Stops serving `name`: it leaves the catalog (searches running keep
    /// their snapshots; the gallery closes, releasing its lock, when the
    /// last of them ends).
    pub fn unload(&self, name: &str) -> Result<Arc<Entry>, Status> {
        let e = self.get(name)?;
        e.unloaded.store(true, Ordering::Relaxed);
        if let Ok(mut all) = self.entries.write() {
            all.retain(|x| !Arc::ptr_eq(x, &e));
        }
        Ok(e)
    }
}

/// Gallery names a request gave, checked (at most 64, none empty) and
/// without repeats, in the order given; whether they are served is not
/// asked here.
pub fn named(names: &[String]) -> Result<Vec<String>, Status> {
    if names.len() > 64 {
        return Err(Status::invalid_argument(format!("{} galleries named; at most 64", names.len())));
    }
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        if n.is_empty() {
            return Err(Status::invalid_argument("an empty gallery name"));
        }
        if n.len() > 64 {
            return Err(Status::invalid_argument("a gallery name is at most 64 bytes"));
        }
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    Ok(out)
}
