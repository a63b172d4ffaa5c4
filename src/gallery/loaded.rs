//! One shard as the gallery serves it: the mapped file, its HNSW index and
//! a map from subject id to templates.

use super::GalleryError;
use super::manifest::ShardEntry;
use crate::embed::EmbeddingId;
use crate::index::{Graph, IndexMeta, IndexParams, saved};
use crate::mcc::MccParams;
use crate::shard::{SectionKind, Shard, mcc_params_crc};
use std::collections::HashMap;
use std::path::Path;

/// A shard loaded for serving.
#[derive(Debug)]
pub struct LoadedShard {
    /// Its manifest entry.
    pub entry: ShardEntry,
    /// The mapped, checked file.
    pub shard: Shard,
    /// The candidate index over its embeddings.
    pub index: Graph,
    /// Subject id → template ids.
    pub by_subject: HashMap<String, Vec<u32>>,
}

impl LoadedShard {
    /// Subject id of template `t`.
    pub fn subject_of(&self, t: usize) -> &str {
        self.shard.subject_id(self.shard.subject_index(t)).unwrap_or("")
    }
}

/// Checks a shard file against what the gallery expects.
pub fn check(shard: &Shard, embedding: &EmbeddingId, mcc: &MccParams) -> Result<(), GalleryError> {
    let file = shard.path().display().to_string();
    if shard.embedding() != *embedding {
        return Err(GalleryError::Shard(crate::shard::ShardError::Mismatch {
            file,
            found: shard.embedding().to_string(),
            expected: embedding.to_string(),
        }));
    }
    if shard.header().mcc_params_crc != mcc_params_crc(mcc) {
        return Err(GalleryError::Shard(crate::shard::ShardError::Mismatch {
            file,
            found: format!("cylinder parameters {:08x}", shard.header().mcc_params_crc),
            expected: format!("cylinder parameters {:08x}", mcc_params_crc(mcc)),
        }));
    }
    Ok(())
}

/// The embeddings of a shard as f32 rows (converted when stored as f16).
pub fn embeddings(shard: &Shard) -> std::borrow::Cow<'_, [f32]> {
    match shard.embeddings_f32() {
        Some(v) => std::borrow::Cow::Borrowed(v),
        None => {
            let dim = shard.embedding().dim as usize;
            let mut out = vec![0f32; shard.len() * dim];
            for (t, row) in out.chunks_exact_mut(dim).enumerate() {
                shard.embedding_into(t, row);
                crate::embed::normalise(row);
            }
            std::borrow::Cow::Owned(out)
        }
    }
}

/// Loads the index of `entry`, building and saving it when missing or stale.
pub fn index(
    dir: &Path,
    entry: &ShardEntry,
    shard: &Shard,
    params: &IndexParams,
    build: bool,
) -> Result<Graph, GalleryError> {
    let emb = shard.embedding();
    let crc = shard.section_crc(SectionKind::Embeddings);
    match saved::load(dir, &entry.name, true, Some((&emb, crc))) {
        Ok((g, _)) => return Ok(g),
        Err(e) if !build => return Err(GalleryError::Index(e)),
        Err(e) => tracing::warn!("{}: index {e}; rebuilding", entry.name),
    }
    let vectors = embeddings(shard);
    let graph = Graph::build(&vectors, emb.dim as usize, params, 20_000, |_| {})?;
    let meta = IndexMeta {
        format: 1,
        embedding: emb,
        count: 0,
        vectors_crc32c: crc,
        params: *params,
        hnsw_base: String::new(),
    };
    saved::save(&graph, dir, &entry.name, meta)?;
    Ok(graph)
}

/// Opens, checks, optionally verifies, and indexes one shard of the manifest.
pub fn load(
    dir: &Path,
    entry: &ShardEntry,
    embedding: &EmbeddingId,
    mcc: &MccParams,
    opts: &super::GalleryOptions,
) -> Result<LoadedShard, GalleryError> {
    let shard = Shard::open(&dir.join(&entry.file))?;
    if shard.header().table_crc != entry.table_crc {
        return Err(GalleryError::Invalid(format!(
            "{}: file is not the one the manifest lists (table CRC {:08x}, manifest {:08x})",
            entry.file,
            shard.header().table_crc,
            entry.table_crc
        )));
    }
    check(&shard, embedding, mcc)?;
    if opts.verify_on_open {
        shard.verify()?;
    }
    let index = index(dir, entry, &shard, &opts.index, opts.build_missing_indexes)?;
    let mut by_subject: HashMap<String, Vec<u32>> = HashMap::with_capacity(shard.subjects());
    for t in 0..shard.len() {
        let id = shard.subject_id(shard.subject_index(t))?;
        by_subject.entry(id.to_string()).or_default().push(t as u32);
    }
    Ok(LoadedShard { entry: entry.clone(), shard, index, by_subject })
}
