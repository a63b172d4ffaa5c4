//! The graphs section of a shard: written by the shard writer (one HNSW
//! graph per finger position over the embeddings as stored), checked by
//! the reader when the shard opens. The byte layout is in
//! [`crate::index::layout`].

use super::ShardError;
use super::format::SectionKind;
use super::reader::Shard;
use crate::index::layout::{self, GraphLayout};
use crate::index::{AlignedBytes, IndexParams, VectorKind, VectorsLayout, mapped};
use std::fs::File;
use std::io::Read;
use std::path::Path;

fn io(path: &Path, e: std::io::Error) -> ShardError {
    ShardError::Io { file: path.display().to_string(), what: e.to_string() }
}

/// The graphs section built from the writer's spill files of finger
/// positions, embeddings and embedding scales: one graph per position,
/// over the embeddings exactly as they will be stored.
pub(super) fn build_section(
    [fingers, embeddings, scales]: [&Path; 3],
    vectors: VectorKind,
    dim: usize,
    p: &IndexParams,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<u8>, ShardError> {
    let positions = std::fs::read(fingers).map_err(|e| io(fingers, e))?;
    let mut groups: std::collections::BTreeMap<u8, Vec<u32>> = Default::default();
    for (t, &f) in positions.iter().enumerate() {
        groups.entry(f).or_default().push(t as u32);
    }
    // Embedding values then scales, read into one aligned buffer.
    let size = |f: &Path| std::fs::metadata(f).map(|m| m.len() as usize).map_err(|e| io(f, e));
    let (values_len, scales_len) = (size(embeddings)?, size(scales)?);
    let at = values_len.next_multiple_of(8);
    let mut bytes = AlignedBytes::zeroed(at + scales_len);
    for (f, range) in [(embeddings, 0..values_len), (scales, at..at + scales_len)] {
        File::open(f).and_then(|mut r| r.read_exact(&mut bytes.as_mut()[range])).map_err(|e| io(f, e))?;
    }
    let layout = VectorsLayout { kind: vectors, dim, values: 0..values_len, scales: at..at + scales_len };
    let v = layout.view(bytes.as_ref()).ok_or_else(|| ShardError::Invalid("embedding spill misread".into()))?;
    let total = positions.len();
    let mut base = 0;
    let mut built = Vec::with_capacity(groups.len());
    for (position, rows) in &groups {
        let mut each = |done: usize, _: usize| progress(base + done, total);
        let (g, _) = crate::index::build::build(v, rows, *position, p, mapped::SEED, &mut each)
            .map_err(|e| ShardError::Invalid(format!("graph of finger position {position}: {e}")))?;
        base += rows.len();
        built.push(g);
    }
    Ok(layout::write(p.max_connections, 2 * p.max_connections, p.ef_construction, mapped::SEED, &built))
}

impl Shard {
    /// Reads the graphs section's layout and checks that its partitions
    /// hold every template once, in ascending order, under its own finger
    /// position.
    pub(super) fn check_graphs(&self) -> Result<Vec<GraphLayout>, ShardError> {
        let range = self.range(SectionKind::Graphs);
        let graphs = layout::parse(self.section(SectionKind::Graphs), range.start).map_err(|e| match e {
            crate::index::IndexError::Corrupt { offset, problem } => {
                self.corrupt(SectionKind::Graphs, offset as usize, problem)
            }
            e => self.corrupt(SectionKind::Graphs, range.start, e.to_string()),
        })?;
        if graphs.is_empty() {
            return Ok(graphs);
        }
        let fingers = self.section(SectionKind::FingerPosition);
        let mut seen = 0usize;
        let mut positions = std::collections::HashSet::new();
        for g in &graphs {
            let rows: &[u32] = bytemuck::try_cast_slice(&self.map[g.rows.clone()]).unwrap_or(&[]);
            let ascending = rows.windows(2).all(|w| w[0] < w[1]);
            let own = rows.iter().all(|&r| fingers.get(r as usize) == Some(&g.position));
            if !positions.insert(g.position) || rows.len() != g.nodes || !ascending || !own {
                // Name the finger positions when they are what changed.
                let fr = self.range(SectionKind::FingerPosition);
                if crate::checksum::crc32c(fingers) != self.section_crc(SectionKind::FingerPosition) {
                    return Err(self.corrupt(SectionKind::FingerPosition, fr.start, "CRC32C mismatch".into()));
                }
                return Err(self.corrupt(
                    SectionKind::Graphs,
                    g.rows.start,
                    format!("the graph of finger position {} does not list its templates in order", g.position),
                ));
            }
            seen += rows.len();
        }
        if seen != self.len() {
            return Err(self.corrupt(
                SectionKind::Graphs,
                range.start,
                format!("graphs hold {seen} templates, the shard {}", self.len()),
            ));
        }
        Ok(graphs)
    }
}
