//! Compaction (folding the delta and the tombstones into shards) and
//! migration (rewriting shards of older formats), both by rewriting shards.

use super::entry_of;
use crate::gallery::delta::{Delta, DeltaEntry};
use crate::gallery::loaded::{self, LoadedShard};
use crate::gallery::manifest::ShardEntry;
use crate::gallery::{Gallery, GalleryError, Snapshot, lock_err};
use crate::shard::{Entry, Shard, ShardSpec, ShardWriter};
use std::sync::Arc;

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompactReport {
    /// Shards rewritten without deleted subjects.
    pub rewritten: Vec<String>,
    /// New shards made from the delta.
    pub added: Vec<String>,
    /// Templates removed by deletions.
    pub removed_templates: u64,
    /// Templates moved from the delta into shards.
    pub folded_templates: u64,
    /// Log sequence now folded into shards.
    pub applied_seq: u64,
}

impl Gallery {
    /// Folds the delta and the tombstones into shards: shards holding
    /// deleted subjects are rewritten without them, live delta templates go
    /// into new shards, then the manifest is swapped atomically and the log
    /// emptied. Enrolments wait meanwhile; searches do not.
    pub fn compact(&self) -> Result<CompactReport, GalleryError> {
        let _x = self.maintenance.write().map_err(lock_err)?;
        let mut m = self.manifest.lock().map_err(lock_err)?;
        let snap = self.snapshot();
        let mut report = CompactReport { applied_seq: self.wal.next_seq().saturating_sub(1), ..Default::default() };
        let generation = m.generation + 1;
        let spec =
            ShardSpec { embedding: m.embedding, mcc: m.mcc.clone(), vectors: m.vectors, graphs: Some(self.opts.index) };
        let mut next = m.clone();
        let mut new_loaded: Vec<Arc<LoadedShard>> = Vec::new();
        let mut replaced: Vec<String> = Vec::new();
        // Shards that hold deleted subjects.
        for s in &snap.shards {
            let doomed: usize =
                s.by_subject.iter().filter(|(k, _)| snap.delta.hides_shard_subject(k)).map(|(_, v)| v.len()).sum();
            if doomed == 0 {
                new_loaded.push(Arc::clone(s));
                continue;
            }
            let name = generation_name(&s.entry.name, generation);
            let entry = rewrite(&self.dir, &s.shard, &name, &spec, |subject| !snap.delta.hides_shard_subject(subject))?;
            new_loaded.push(Arc::new(loaded::load(&self.dir, &entry, &m.embedding, &m.mcc, &self.opts)?));
            report.removed_templates += doomed as u64;
            replaced.push(s.entry.name.clone());
            report.rewritten.push(name);
        }
        // The delta, into new shards.
        let live: Vec<&Arc<DeltaEntry>> = snap.delta.live().collect();
        for (k, part) in live.chunks(self.opts.shard_size.max(1)).enumerate() {
            let name = format!("delta-g{generation}-{k:03}");
            let file = format!("{name}.whorl");
            let mut w = ShardWriter::create(&self.dir.join(&file), spec.clone())?;
            for e in part {
                w.push(Entry {
                    subject: &e.subject,
                    labels: &e.labels,
                    template: &e.template,
                    prepared: &e.prepared,
                    embedding: &e.embedding,
                })?;
            }
            report.folded_templates += part.len() as u64;
            let summary = w.finish()?;
            let entry = entry_of(&Shard::open(&summary.path)?, &name, &file)?;
            new_loaded.push(Arc::new(loaded::load(&self.dir, &entry, &m.embedding, &m.mcc, &self.opts)?));
            report.added.push(name);
        }
        next.shards = new_loaded.iter().map(|s| s.entry.clone()).collect();
        next.applied_seq = report.applied_seq;
        next.generation = generation;
        next.store(&self.dir)?;
        *m = next;
        // Records up to applied_seq are now in shards; replay skips them even
        // if the log is not emptied before a crash. The last one stays, for
        // replicas to check theirs against (crate::gallery::replica).
        self.wal.rewrite_keeping_last()?;
        self.publish(|s| Snapshot {
            generation: s.generation + 1,
            shards: new_loaded.clone(),
            delta: Arc::new(Delta::default()),
        })?;
        for name in replaced {
            crate::index::saved::remove_set(&self.dir, &name);
            let _ = std::fs::remove_file(self.dir.join(format!("{name}.whorl")));
        }
        Ok(report)
    }
}

/// The name of a shard rewritten in `generation`: its base name and `-gN`.
fn generation_name(name: &str, generation: u64) -> String {
    format!("{}-g{generation}", name.split("-g").next().unwrap_or(name))
}

/// Writes a copy of `shard` as `{name}.whorl` with `spec` (graphs
/// included), keeping the templates of the subjects `keep` accepts.
fn rewrite(
    dir: &std::path::Path,
    shard: &Shard,
    name: &str,
    spec: &ShardSpec,
    keep: impl Fn(&str) -> bool,
) -> Result<ShardEntry, GalleryError> {
    let file = format!("{name}.whorl");
    let mut w = ShardWriter::create(&dir.join(&file), spec.clone())?;
    let mut emb = vec![0f32; spec.embedding.dim as usize];
    for t in 0..shard.len() {
        let si = shard.subject_index(t);
        let subject = shard.subject_id(si)?;
        if !keep(subject) {
            continue;
        }
        let labels: Vec<(String, String)> =
            shard.subject_labels(si)?.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let template = shard.template(t)?;
        let prepared = crate::mcc::Prepared::from_words(shard.prepared(t)?.words().to_vec())
            .map_err(|e| GalleryError::Invalid(e.to_string()))?;
        shard.embedding_into(t, &mut emb);
        w.push(Entry { subject, labels: &labels, template: &template, prepared: &prepared, embedding: &emb })?;
    }
    let summary = w.finish()?;
    entry_of(&Shard::open(&summary.path)?, name, &file)
}

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MigrateReport {
    /// Shards rewritten (old name, new name).
    pub rewritten: Vec<(String, String)>,
    /// Shards already current.
    pub current: usize,
}

/// Rewrites every shard of the gallery in `dir` that is of an older format
/// or holds no graphs into the current format, graphs included (built
/// with `params`), then swaps the manifest and removes the old files. Run
/// it with no server serving the gallery: it takes the folder for itself.
pub fn migrate(dir: &std::path::Path, params: &crate::index::IndexParams) -> Result<MigrateReport, GalleryError> {
    let mut m = crate::gallery::Manifest::load(dir)?;
    let generation = m.generation + 1;
    let mut report = MigrateReport::default();
    let mut old = Vec::new();
    for entry in m.shards.iter_mut() {
        let shard = Shard::open(&dir.join(&entry.file))?;
        shard.verify()?;
        if shard.header().version == crate::shard::format::VERSION && (!shard.graphs().is_empty() || shard.is_empty()) {
            report.current += 1;
            continue;
        }
        let spec = ShardSpec {
            embedding: shard.embedding(),
            mcc: m.mcc.clone(),
            vectors: shard.vector_kind(),
            graphs: Some(*params),
        };
        let name = generation_name(&entry.name, generation);
        let fresh = rewrite(dir, &shard, &name, &spec, |_| true)?;
        report.rewritten.push((entry.name.clone(), name));
        old.push((entry.name.clone(), entry.file.clone()));
        *entry = fresh;
    }
    if report.rewritten.is_empty() {
        return Ok(report);
    }
    m.generation = generation;
    m.store(dir)?;
    for (name, file) in old {
        crate::index::saved::remove_set(dir, &name);
        let _ = std::fs::remove_file(dir.join(file));
    }
    Ok(report)
}
