//! One shard as the gallery serves it: the mapped file, its HNSW index (one
//! graph per finger position: a probe finger is only ever compared with
//! gallery fingers of the same position, or of unknown position) and a map
//! from subject id to templates.
//!
//! The index is whorl's graphs, read in place from the shard's graphs
//! section (the default; a shard without them, such as format 1, gets
//! graphs built in memory at every open until `whorl migrate` rewrites it),
//! or hnsw_rs's graphs from checksummed files beside the shard, built
//! when missing.

use super::GalleryError;
use super::manifest::ShardEntry;
use crate::embed::EmbeddingId;
use crate::index::{CandidateIndex, HnswRsGraph, IndexError, IndexKind, IndexParams, MappedGraph, saved};
use crate::mcc::MccParams;
use crate::shard::{SectionKind, Shard, mcc_params_crc};
use crate::template::FingerPosition;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The templates of one finger position in a shard and their graph.
#[derive(Debug)]
pub struct Partition {
    /// Their finger position.
    pub position: FingerPosition,
    /// Template ids in the shard, ascending; graph id `i` is template `ids[i]`.
    pub ids: Vec<u32>,
    /// The HNSW graph over their embeddings.
    pub graph: Box<dyn CandidateIndex>,
}

/// A shard loaded for serving.
#[derive(Debug)]
pub struct LoadedShard {
    /// Its manifest entry.
    pub entry: ShardEntry,
    /// The mapped, checked file.
    pub shard: Shard,
    /// The candidate index, one partition per finger position present.
    pub partitions: Vec<Partition>,
    /// Subject id → template ids.
    pub by_subject: HashMap<String, Vec<u32>>,
    /// A key naming this shard's content (GPU residency, caches): its table
    /// CRC and a hash of its name.
    pub key: u64,
}

impl LoadedShard {
    /// Subject id of template `t`.
    pub fn subject_of(&self, t: usize) -> &str {
        self.shard.subject_id(self.shard.subject_index(t)).unwrap_or("")
    }

    /// The partitions a probe of finger position `p` is compared with: its
    /// own position and the unknown one, or every partition when `p` is unknown.
    pub fn partitions_for(&self, p: FingerPosition) -> impl Iterator<Item = &Partition> {
        self.partitions
            .iter()
            .filter(move |x| !p.is_known() || x.position == p || x.position == FingerPosition::UNKNOWN)
    }
}

/// Template ids of a shard grouped by finger position, ascending.
pub fn positions(shard: &Shard) -> BTreeMap<u8, Vec<u32>> {
    let mut groups: BTreeMap<u8, Vec<u32>> = BTreeMap::new();
    for t in 0..shard.len() {
        groups.entry(shard.finger(t).0).or_default().push(t as u32);
    }
    groups
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

/// The embeddings of a shard as unit f32 rows (converted when stored otherwise).
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

/// The candidate index of a shard, as `opts` chooses it.
pub fn index(
    dir: &Path,
    entry: &ShardEntry,
    shard: &Shard,
    opts: &super::GalleryOptions,
) -> Result<Vec<Partition>, GalleryError> {
    match opts.index_kind {
        IndexKind::Whorl => whorl_index(entry, shard, &opts.index, opts.build_missing_indexes),
        IndexKind::HnswRs => hnsw_rs_index(dir, entry, shard, &opts.index, opts.build_missing_indexes),
    }
}

/// whorl's graphs of the shard, searched in place; built in memory when
/// the shard has none (and `build` allows).
fn whorl_index(
    entry: &ShardEntry,
    shard: &Shard,
    params: &IndexParams,
    build: bool,
) -> Result<Vec<Partition>, GalleryError> {
    let (bytes, vectors) = (shard.bytes(), shard.vectors_layout());
    if !shard.graphs().is_empty() {
        return shard
            .graphs()
            .iter()
            .map(|l| {
                let g = MappedGraph::open(bytes.clone(), l.clone(), bytes.clone(), vectors.clone())?;
                Ok(Partition { position: FingerPosition(l.position), ids: g.rows(), graph: Box::new(g) })
            })
            .collect();
    }
    if shard.is_empty() {
        return Ok(Vec::new());
    }
    let why = format!("{}: format {} shard without graphs", entry.name, shard.header().version);
    if !build {
        return Err(GalleryError::Index(IndexError::Missing(why)));
    }
    tracing::warn!("{why}: building them in memory (at every open; `whorl migrate` writes them into the shard)");
    positions(shard)
        .into_iter()
        .map(|(p, ids)| {
            let (g, _) = MappedGraph::build(bytes.clone(), vectors.clone(), &ids, p, params, &mut |_, _| {})?;
            Ok(Partition { position: FingerPosition(p), ids, graph: Box::new(g) })
        })
        .collect()
}

/// Loads the hnsw_rs index of `entry`, building and saving it when
/// missing, stale or damaged (and `build` allows).
fn hnsw_rs_index(
    dir: &Path,
    entry: &ShardEntry,
    shard: &Shard,
    params: &IndexParams,
    build: bool,
) -> Result<Vec<Partition>, GalleryError> {
    let emb = shard.embedding();
    let crc = shard.section_crc(SectionKind::Embeddings);
    let groups = positions(shard);
    let counts: Vec<(u8, usize)> = groups.iter().map(|(p, v)| (*p, v.len())).collect();
    match saved::load_set(dir, &entry.name, true, (&emb, crc, &counts)) {
        Ok((graphs, _)) => return Ok(zip(graphs, groups)),
        Err(e) if !build => return Err(GalleryError::Index(e)),
        Err(IndexError::Missing(f)) => tracing::info!("{}: no hnsw_rs index ({f}): building it", entry.name),
        Err(e) => tracing::warn!("{}: {e}; rebuilding its hnsw_rs index", entry.name),
    }
    build_hnsw_rs(dir, entry, shard, params)
}

fn zip(graphs: Vec<(u8, HnswRsGraph)>, groups: BTreeMap<u8, Vec<u32>>) -> Vec<Partition> {
    graphs
        .into_iter()
        .zip(groups)
        .map(|((p, graph), (_, ids))| Partition { position: FingerPosition(p), ids, graph: Box::new(graph) })
        .collect()
}

/// Builds and saves the hnsw_rs index of a shard (replacing any).
pub fn build_hnsw_rs(
    dir: &Path,
    entry: &ShardEntry,
    shard: &Shard,
    params: &IndexParams,
) -> Result<Vec<Partition>, GalleryError> {
    let emb = shard.embedding();
    let crc = shard.section_crc(SectionKind::Embeddings);
    let groups = positions(shard);
    saved::remove_set(dir, &entry.name);
    let vectors = embeddings(shard);
    let dim = emb.dim as usize;
    let mut graphs = Vec::with_capacity(groups.len());
    for (p, ids) in &groups {
        let mut rows = Vec::with_capacity(ids.len() * dim);
        for &t in ids {
            rows.extend_from_slice(&vectors[t as usize * dim..(t as usize + 1) * dim]);
        }
        graphs.push((*p, HnswRsGraph::build(&rows, dim, params, 20_000, |_| {})?));
    }
    let refs: Vec<(u8, &HnswRsGraph)> = graphs.iter().map(|(p, g)| (*p, g)).collect();
    saved::save_set(&refs, dir, &entry.name, emb, crc, *params)?;
    Ok(zip(graphs, groups))
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
        shard.verify_open()?;
    }
    let partitions = index(dir, entry, &shard, opts)?;
    let mut by_subject: HashMap<String, Vec<u32>> = HashMap::with_capacity(shard.subjects());
    for t in 0..shard.len() {
        let id = shard.subject_id(shard.subject_index(t))?;
        by_subject.entry(id.to_string()).or_default().push(t as u32);
    }
    let key = (u64::from(entry.table_crc) << 32) | u64::from(crate::checksum::crc32c(entry.name.as_bytes()));
    Ok(LoadedShard { entry: entry.clone(), shard, partitions, by_subject, key })
}
