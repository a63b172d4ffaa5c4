//! Attaching a shard file of the gallery folder to a serving gallery, and
//! detaching one.

use super::entry_of;
use crate::gallery::loaded;
use crate::gallery::manifest::ShardEntry;
use crate::gallery::{Gallery, GalleryError, Snapshot, lock_err};
use crate::shard::Shard;
use std::sync::Arc;

impl Gallery {
    /// Adds a shard file lying in the gallery folder to the gallery (checked
    /// and verified first); searches see it from their next snapshot. The
    /// file must be a regular `*.whorl` file of the folder itself (never a
    /// symbolic link), and must not hold the same data as a shard already
    /// served (a copy under another name would count its subjects twice).
    pub fn attach_shard(&self, file: &str) -> Result<ShardEntry, GalleryError> {
        let plain = !file.is_empty() && !file.starts_with('.') && !file.contains(['/', '\\', '\0']);
        if !plain || !file.ends_with(".whorl") {
            return Err(GalleryError::Invalid(format!(
                "'{file}' must be the name of a shard file (*.whorl) in the gallery folder"
            )));
        }
        let path = self.dir.join(file);
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|_| GalleryError::NotFound(format!("no file '{file}' in the gallery folder")))?;
        if meta.file_type().is_symlink() {
            return Err(GalleryError::Invalid(format!(
                "'{file}' is a symbolic link: refused (move or copy the shard file into the gallery folder)"
            )));
        }
        if !meta.is_file() {
            return Err(GalleryError::Invalid(format!("'{file}' is not a regular file")));
        }
        let mut m = self.manifest.lock().map_err(lock_err)?;
        let name = file.strip_suffix(".whorl").unwrap_or(file).to_string();
        if m.shards.iter().any(|s| s.name == name) {
            return Err(GalleryError::AlreadyExists(format!("shard '{name}' is already in the gallery")));
        }
        let shard = Shard::open(&path).map_err(|e| match e {
            crate::shard::ShardError::Magic { .. } => GalleryError::Invalid(format!("'{file}' is not a whorl shard")),
            e => GalleryError::Shard(e),
        })?;
        if let Some(same) = m.shards.iter().find(|s| s.table_crc == shard.header().table_crc) {
            return Err(GalleryError::AlreadyExists(format!(
                "'{file}' holds the same data as shard '{}', already served (a copy would count its subjects twice)",
                same.name
            )));
        }
        loaded::check(&shard, &m.embedding, &m.mcc)?;
        shard.verify()?;
        let entry = entry_of(&shard, &name, file)?;
        let ls = loaded::load(&self.dir, &entry, &m.embedding, &m.mcc, &self.opts)?;
        let mut next = m.clone();
        next.shards.push(entry.clone());
        next.generation += 1;
        next.store(&self.dir)?;
        *m = next;
        self.publish(|s| {
            let mut shards = s.shards.clone();
            shards.push(Arc::new(ls));
            Snapshot { generation: s.generation + 1, shards, delta: Arc::clone(&s.delta) }
        })?;
        Ok(entry)
    }

    /// Removes shard `name` from the gallery (its files stay); searches
    /// already running keep their snapshot.
    pub fn detach_shard(&self, name: &str) -> Result<ShardEntry, GalleryError> {
        let mut m = self.manifest.lock().map_err(lock_err)?;
        let pos = m
            .shards
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| GalleryError::NotFound(format!("shard '{name}'")))?;
        let mut next = m.clone();
        let entry = next.shards.remove(pos);
        next.generation += 1;
        next.store(&self.dir)?;
        *m = next;
        self.publish(|s| Snapshot {
            generation: s.generation + 1,
            shards: s.shards.iter().filter(|x| x.entry.name != name).cloned().collect(),
            delta: Arc::clone(&s.delta),
        })?;
        if let Ok(mut p) = self.problems.write() {
            p.retain(|x| x.name != name);
        }
        Ok(entry)
    }
}
