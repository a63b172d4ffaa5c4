//! Building a gallery offline (`whorl build`): templates stream in, are
//! prepared and embedded in parallel, and are written to shards of a fixed
//! size; each finished shard gets its index; the manifest is published
//! last, so an interrupted build leaves no gallery rather than half a one.

use super::manifest::Manifest;
use super::write::entry_of;
use super::{GalleryError, loaded};
use crate::embed::Embedder;
use crate::index::IndexParams;
use crate::mcc::Matcher;
use crate::shard::{Entry, Shard, ShardSpec, ShardWriter};
use crate::template::Template;
use rayon::prelude::*;
use std::path::Path;
use std::time::Instant;

/// How to build.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildOptions {
    /// Templates per shard.
    pub shard_size: usize,
    /// Store embeddings as f16.
    pub f16: bool,
    /// Index parameters.
    pub index: IndexParams,
    /// Templates prepared per parallel batch.
    pub batch: usize,
}

impl Default for BuildOptions {
    fn default() -> BuildOptions {
        BuildOptions { shard_size: 1_000_000, f16: false, index: IndexParams::default(), batch: 4096 }
    }
}

/// What a build did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BuildReport {
    /// Templates written.
    pub templates: u64,
    /// Shards written.
    pub shards: usize,
    /// Bytes of shard files.
    pub shard_bytes: u64,
    /// Seconds preparing, embedding and writing shards.
    pub write_seconds: f64,
    /// Seconds building indexes.
    pub index_seconds: f64,
}

/// One template to enrol: subject id, labels, template.
pub type Item = (String, Vec<(String, String)>, Template);

/// Builds a gallery in `dir` (which must not hold one) from `items`,
/// reporting progress (templates done) to `progress`.
pub fn build(
    dir: &Path,
    embedder: &Embedder,
    matcher: &Matcher,
    opts: &BuildOptions,
    items: impl Iterator<Item = Item>,
    mut progress: impl FnMut(u64, &str),
) -> Result<BuildReport, GalleryError> {
    std::fs::create_dir_all(dir).map_err(|e| GalleryError::Io(format!("{}: {e}", dir.display())))?;
    let _lock = super::GalleryLock::acquire(dir)?;
    if dir.join(super::manifest::FILE).exists() {
        return Err(GalleryError::Invalid(format!("{} already holds a gallery", dir.display())));
    }
    let mut manifest = Manifest::new(embedder.id(), matcher.params().clone());
    let spec = ShardSpec { embedding: embedder.id(), mcc: matcher.params().clone(), f16: opts.f16 };
    let mut report = BuildReport::default();
    let mut writer: Option<(ShardWriter, String)> = None;
    let mut items = items.peekable();
    let mut batch: Vec<Item> = Vec::with_capacity(opts.batch);
    let t0 = Instant::now();
    let mut index_s = 0.0;
    while items.peek().is_some() {
        batch.clear();
        batch.extend(items.by_ref().take(opts.batch));
        let made: Vec<_> = batch.par_iter().map(|(_, _, t)| (matcher.prepare(t), embedder.embed(t))).collect();
        for ((subject, labels, template), (prepared, embedding)) in batch.iter().zip(&made) {
            if writer.is_none() {
                let name = format!("shard-{:04}", manifest.shards.len());
                let w = ShardWriter::create(&dir.join(format!("{name}.whorl")), spec.clone())?;
                writer = Some((w, name));
            }
            if let Some((w, _)) = writer.as_mut() {
                w.push(Entry { subject, labels, template, prepared, embedding })?;
                report.templates += 1;
                if w.len() as usize >= opts.shard_size {
                    let (w, name) = writer.take().expect("checked above");
                    index_s += finish(dir, w, &name, &mut manifest, opts, &mut report, &mut progress)?;
                }
            }
        }
        progress(report.templates, "writing");
    }
    if let Some((w, name)) = writer.take() {
        index_s += finish(dir, w, &name, &mut manifest, opts, &mut report, &mut progress)?;
    }
    manifest.generation = 1;
    manifest.store(dir)?;
    report.index_seconds = index_s;
    report.write_seconds = t0.elapsed().as_secs_f64() - index_s;
    Ok(report)
}

fn finish(
    dir: &Path,
    w: ShardWriter,
    name: &str,
    manifest: &mut Manifest,
    opts: &BuildOptions,
    report: &mut BuildReport,
    progress: &mut impl FnMut(u64, &str),
) -> Result<f64, GalleryError> {
    let summary = w.finish()?;
    let shard = Shard::open(&summary.path)?;
    let entry = entry_of(&shard, name, &format!("{name}.whorl"))?;
    progress(report.templates, "indexing");
    let t = Instant::now();
    loaded::index(dir, &entry, &shard, &opts.index, true)?;
    report.shards += 1;
    report.shard_bytes += entry.bytes;
    manifest.shards.push(entry);
    Ok(t.elapsed().as_secs_f64())
}
