//! Building a gallery offline (`whorl build`): templates stream in, are
//! prepared and embedded in parallel, and are written to shards of a fixed
//! size; the shard writer builds each shard's graphs into it (and, for an
//! hnsw_rs gallery, its hnsw_rs files are built beside it); the manifest
//! is published last, so an interrupted build leaves no gallery rather
//! than half a one.

use super::manifest::Manifest;
use super::write::entry_of;
use super::{GalleryError, loaded};
use crate::embed::Embedder;
use crate::index::{IndexKind, IndexParams, VectorKind};
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
    /// How embeddings are stored (default int8: a quarter of f32's bytes
    /// for the same candidate recall, see `benches/reports/index/`).
    pub vectors: VectorKind,
    /// Which HNSW implementation the gallery is built for (whorl's graphs
    /// are always written into the shards; hnsw_rs adds its files).
    pub index_kind: IndexKind,
    /// Index parameters.
    pub index: IndexParams,
    /// Templates prepared per parallel batch.
    pub batch: usize,
}

impl Default for BuildOptions {
    fn default() -> BuildOptions {
        BuildOptions {
            shard_size: 1_000_000,
            vectors: VectorKind::I8,
            index_kind: IndexKind::Whorl,
            index: IndexParams::default(),
            batch: 4096,
        }
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
    /// Seconds finishing shards: building their graphs (and hnsw_rs
    /// files), assembling and checksumming them.
    pub index_seconds: f64,
}

/// One template to enrol: subject id, labels, template.
pub type Item = (String, Vec<(String, String)>, Template);

/// Where a build is, for front ends to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildProgress<'a> {
    /// Templates prepared, embedded and written so far.
    Writing {
        /// Templates done.
        templates: u64,
    },
    /// Graph nodes of shard `shard` inserted so far.
    Graphs {
        /// The shard.
        shard: &'a str,
        /// Nodes done.
        done: usize,
        /// Nodes in the shard.
        total: usize,
    },
    /// Building shard `shard`'s hnsw_rs files.
    HnswRs {
        /// The shard.
        shard: &'a str,
    },
}

/// Builds a gallery in `dir` (which must not hold one) from `items`,
/// reporting progress (templates written, and what is being done) to `progress`.
pub fn build(
    dir: &Path,
    embedder: &Embedder,
    matcher: &Matcher,
    opts: &BuildOptions,
    items: impl Iterator<Item = Item>,
    mut progress: impl FnMut(u64, &str),
) -> Result<BuildReport, GalleryError> {
    let mut written = 0;
    build_with(dir, embedder, matcher, opts, items, |p| match p {
        BuildProgress::Writing { templates } => {
            written = templates;
            progress(templates, "writing")
        }
        BuildProgress::Graphs { .. } => progress(written, "indexing"),
        BuildProgress::HnswRs { .. } => progress(written, "indexing (hnsw_rs)"),
    })
}

/// As [`build`], reporting every stage, graph builds included, to `progress`.
pub fn build_with(
    dir: &Path,
    embedder: &Embedder,
    matcher: &Matcher,
    opts: &BuildOptions,
    items: impl Iterator<Item = Item>,
    mut progress: impl FnMut(BuildProgress<'_>),
) -> Result<BuildReport, GalleryError> {
    std::fs::create_dir_all(dir).map_err(|e| GalleryError::Io(format!("{}: {e}", dir.display())))?;
    let _lock = super::GalleryLock::acquire(dir)?;
    if dir.join(super::manifest::FILE).exists() {
        return Err(GalleryError::Invalid(format!("{} already holds a gallery", dir.display())));
    }
    let mut manifest = Manifest::new(embedder.id(), matcher.params().clone());
    manifest.vectors = opts.vectors;
    let spec = ShardSpec {
        embedding: embedder.id(),
        mcc: matcher.params().clone(),
        vectors: opts.vectors,
        graphs: Some(opts.index),
    };
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
        progress(BuildProgress::Writing { templates: report.templates });
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
    progress: &mut impl FnMut(BuildProgress<'_>),
) -> Result<f64, GalleryError> {
    let t = Instant::now();
    let summary = w.finish_with(&mut |done, total| progress(BuildProgress::Graphs { shard: name, done, total }))?;
    let shard = Shard::open(&summary.path)?;
    let entry = entry_of(&shard, name, &format!("{name}.whorl"))?;
    if opts.index_kind == IndexKind::HnswRs {
        progress(BuildProgress::HnswRs { shard: name });
        loaded::build_hnsw_rs(dir, &entry, &shard, &opts.index)?;
    }
    report.shards += 1;
    report.shard_bytes += entry.bytes;
    manifest.shards.push(entry);
    Ok(t.elapsed().as_secs_f64())
}
