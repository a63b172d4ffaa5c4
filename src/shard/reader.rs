//! Reading a shard in place through a memory map.
//!
//! [`Shard::open`] maps the file and checks, in this order, the magic, the
//! bounds, the version and the header/section-table checksum, then the
//! section table itself (every kind once, 64-byte aligned, inside the file,
//! not overlapping, lengths consistent with the counts) and the offset
//! arrays (monotonic, ending at their section's length) — no typed slice
//! is handed out before that. It reads only the header, the table and the
//! offsets, so opening costs milliseconds whatever the shard's size.
//! Format 2's graphs section is checked the same way: its headers, every
//! array inside it, and each partition's rows (ascending, in range, of
//! its finger position, every template in exactly one partition) — a few
//! milliseconds per million templates, never a parse of the graph.
//! [`Shard::verify`] checks every section's CRC32C (in format 3 it then
//! counts every template as checked); [`Shard::verify_open`], what a
//! server runs, leaves format 3's cylinders and minutiae to their first
//! read (`checks.rs`).
//!
//! The map is shared (`Arc`): whorl's HNSW graphs keep it to search the
//! graph and embedding sections in place.

#![allow(unsafe_code)]

use super::ShardError;
use super::checks::TemplateChecks;
use super::format::*;
use crate::embed::EmbeddingId;
use crate::index::layout::{self, GraphLayout};
use crate::index::{Bytes, IndexParams, VectorKind, Vectors, VectorsLayout};
use memmap2::Mmap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open, checked shard.
#[derive(Debug)]
pub struct Shard {
    path: PathBuf,
    pub(super) map: Arc<Mmap>,
    header: FileHeader,
    sections: Vec<(SectionKind, Range<usize>, u32)>,
    vectors: VectorKind,
    graphs: Vec<GraphLayout>,
    pub(super) checks: Option<TemplateChecks>,
}

impl Shard {
    /// Maps and checks `path` (see the module doc).
    pub fn open(path: &Path) -> Result<Shard, ShardError> {
        let file =
            File::open(path).map_err(|e| ShardError::Io { file: path.display().to_string(), what: e.to_string() })?;
        // SAFETY: the map is read-only and private to this process. whorl
        // never modifies a published shard (new shards are written under a
        // temporary name and renamed into place), so the bytes cannot change
        // under the map unless another program truncates or rewrites the file,
        // which the gallery's documentation forbids. Every read below is
        // bounds-checked against `map.len()`.
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| ShardError::Io { file: path.display().to_string(), what: e.to_string() })?;
        let corrupt = |section: &str, offset: u64, problem: String| ShardError::Corrupt {
            file: path.display().to_string(),
            section: section.to_string(),
            offset,
            problem,
        };
        let hsize = std::mem::size_of::<FileHeader>();
        if map.len() < 8 || map[..8] != MAGIC {
            let found = map[..map.len().min(8)].to_vec();
            return Err(ShardError::Magic { file: path.display().to_string(), found });
        }
        if map.len() < hsize {
            return Err(corrupt("header", 0, format!("file is {} bytes, the header needs {hsize}", map.len())));
        }
        let header: FileHeader = bytemuck::pod_read_unaligned(&map[..hsize]);
        if !VERSIONS_READ.contains(&header.version) {
            return Err(ShardError::Version { file: path.display().to_string(), found: header.version });
        }
        let kinds = SectionKind::of_version(header.version);
        let esize = std::mem::size_of::<SectionEntry>();
        let count = header.section_count as usize;
        let table_end = hsize.saturating_add(count.saturating_mul(esize));
        if count != kinds.len() || table_end > map.len() {
            return Err(corrupt(
                "section table",
                hsize as u64,
                format!("{count} entries do not fit a {}-byte file", map.len()),
            ));
        }
        let table: Vec<SectionEntry> =
            map[hsize..table_end].chunks_exact(esize).map(bytemuck::pod_read_unaligned).collect();
        let crc = super::writer::table_crc(&header, &table);
        if crc != header.table_crc {
            return Err(corrupt(
                "header and section table",
                0,
                format!("CRC32C mismatch (stored {:08x}, computed {crc:08x})", header.table_crc),
            ));
        }
        let mut sections = Vec::with_capacity(count);
        let mut last_end = table_end as u64;
        for (i, (e, &want)) in table.iter().zip(kinds).enumerate() {
            let at = (hsize + i * esize) as u64;
            let kind = SectionKind::from_code(e.kind).filter(|k| *k == want).ok_or_else(|| {
                corrupt("section table", at, format!("entry {i} has kind {} (expected {})", e.kind, want as u32))
            })?;
            let end = e.offset.checked_add(e.length).filter(|&x| x <= map.len() as u64);
            if e.offset % ALIGN != 0 || e.offset < last_end || end.is_none() {
                return Err(corrupt(
                    kind.name(),
                    e.offset,
                    format!(
                        "section [{}, +{}) is misaligned, overlapping or outside the {}-byte file",
                        e.offset,
                        e.length,
                        map.len()
                    ),
                ));
            }
            last_end = e.offset + e.length;
            sections.push((kind, e.offset as usize..last_end as usize, e.crc32c));
        }
        if last_end != map.len() as u64 {
            return Err(corrupt(
                "file end",
                last_end,
                format!("{} bytes after the last section", map.len() as u64 - last_end),
            ));
        }
        // Alignment padding belongs to no section: it must be zero, so that
        // no byte of the file goes unchecked.
        let mut gap_start = table_end;
        for (kind, range, _) in &sections {
            if let Some(i) = map[gap_start..range.start].iter().position(|&b| b != 0) {
                return Err(corrupt(
                    &format!("padding before {}", kind.name()),
                    (gap_start + i) as u64,
                    "non-zero padding byte".into(),
                ));
            }
            gap_start = range.end;
        }
        let vectors = match header.flags {
            0 => VectorKind::F32,
            FLAG_F16 => VectorKind::F16,
            FLAG_I8 if header.version >= 2 => VectorKind::I8,
            f => return Err(corrupt("header", 12, format!("unknown flags {f:#x}"))),
        };
        let checks = (header.version >= 3).then(|| TemplateChecks::new(header.templates as usize));
        let mut shard = Shard {
            path: path.to_path_buf(),
            map: Arc::new(map),
            header,
            sections,
            vectors,
            graphs: Vec::new(),
            checks,
        };
        shard.check_shapes()?;
        shard.graphs = shard.check_graphs()?;
        shard.advise_access();
        Ok(shard)
    }

    /// Sections read one template at a time, anywhere in the file: the
    /// cylinders re-scoring reads for each candidate and the minutiae
    /// (format 3 checks these per template).
    pub(super) const RANDOM_ACCESS: [SectionKind; 2] = [SectionKind::Prepared, SectionKind::Minutiae];

    /// Tells the kernel how the sections are read: [`Self::RANDOM_ACCESS`]
    /// without read-around (`MADV_RANDOM`), the rest as usual. On a
    /// gallery larger than the page cache, the default read-around turned
    /// each candidate's 12 KB of cylinders into over 100 KB of disk reads
    /// and pushed the graphs and vectors every search walks out of the
    /// cache (`benches/reports/index/README.md`, "2,000,000 fingers:
    /// beyond the page cache"). A hint only: where it cannot be given,
    /// reads stay correct.
    fn advise_access(&self) {
        for k in Self::RANDOM_ACCESS {
            let r = self.range(k);
            if !r.is_empty() {
                let _ = self.map.advise_range(memmap2::Advice::Random, r.start, r.len());
            }
        }
    }

    pub(super) fn corrupt(&self, kind: SectionKind, offset: usize, problem: String) -> ShardError {
        ShardError::Corrupt {
            file: self.path.display().to_string(),
            section: kind.name().into(),
            offset: offset as u64,
            problem,
        }
    }

    /// Section lengths against the counts, offset arrays monotonic and in range.
    fn check_shapes(&self) -> Result<(), ShardError> {
        let t = self.header.templates as usize;
        let s = self.header.subjects as usize;
        let dim = self.header.embedding_dim as usize;
        let ew = self.vectors.value_bytes();
        let scales = if self.header.version >= 2 { t.checked_mul(self.vectors.scale_bytes()) } else { Some(0) };
        let checks = if self.header.version >= 3 { t.checked_mul(8) } else { Some(0) };
        let want = [
            (SectionKind::TemplateChecks, checks),
            (SectionKind::EmbeddingScales, scales),
            (SectionKind::TemplateSubject, t.checked_mul(4)),
            (SectionKind::FingerPosition, Some(t)),
            (SectionKind::PreparedOffsets, t.checked_add(1).and_then(|x| x.checked_mul(8))),
            (SectionKind::Embeddings, t.checked_mul(dim).and_then(|x| x.checked_mul(ew))),
            (SectionKind::MinutiaeOffsets, t.checked_add(1).and_then(|x| x.checked_mul(8))),
            (SectionKind::Subjects, s.checked_mul(16)),
        ];
        for (k, n) in want {
            let r = self.range(k);
            if Some(r.len()) != n {
                return Err(self.corrupt(
                    k,
                    r.start,
                    format!("{} bytes, expected {:?} for {t} templates, {s} subjects", r.len(), n),
                ));
            }
        }
        if !self.section(SectionKind::Prepared).len().is_multiple_of(8)
            || !self.section(SectionKind::Labels).len().is_multiple_of(16)
        {
            return Err(self.corrupt(
                SectionKind::Prepared,
                self.range(SectionKind::Prepared).start,
                "length not a multiple of its records".into(),
            ));
        }
        for (offsets, data, unit) in [
            (SectionKind::PreparedOffsets, SectionKind::Prepared, 8),
            (SectionKind::MinutiaeOffsets, SectionKind::Minutiae, 1),
        ] {
            let o = self.u64s(offsets);
            let limit = (self.section(data).len() / unit) as u64;
            let bad = o.first() != Some(&0) || o.windows(2).any(|w| w[0] > w[1]) || o.last() != Some(&limit);
            if bad {
                return Err(self.corrupt(
                    offsets,
                    self.range(offsets).start,
                    format!("offsets are not monotonic from 0 to {limit}"),
                ));
            }
        }
        if let Some(i) = self.u32s(SectionKind::TemplateSubject).iter().position(|&x| x as usize >= s) {
            return Err(self.corrupt(
                SectionKind::TemplateSubject,
                self.range(SectionKind::TemplateSubject).start + 4 * i,
                "subject index out of range".into(),
            ));
        }
        Ok(())
    }

    pub(super) fn range(&self, k: SectionKind) -> Range<usize> {
        self.sections.iter().find(|s| s.0 == k).map(|s| s.1.clone()).unwrap_or(0..0)
    }

    pub(super) fn section(&self, k: SectionKind) -> &[u8] {
        &self.map[self.range(k)]
    }

    // Sections start at 64-byte boundaries of a page-aligned map, so these
    // casts only fail on a length that check_shapes has already refused.
    pub(super) fn u64s(&self, k: SectionKind) -> &[u64] {
        bytemuck::try_cast_slice(self.section(k)).unwrap_or(&[])
    }

    pub(super) fn u32s(&self, k: SectionKind) -> &[u32] {
        bytemuck::try_cast_slice(self.section(k)).unwrap_or(&[])
    }

    /// Checks every section's CRC32C; the first mismatch is an error naming
    /// the section and its offset. In format 3 the bytes are then exactly
    /// as written, so every template counts as checked (its own CRC32C was
    /// computed from those bytes) and later reads skip the check. Opening
    /// a gallery for serving runs [`Self::verify_open`] instead.
    pub fn verify(&self) -> Result<(), ShardError> {
        // One pass front to back: read ahead, then back to the serving hints.
        let _ = self.map.advise(memmap2::Advice::Sequential);
        let r = self.verify_sections(|_| true);
        if let (Ok(()), Some(c)) = (&r, &self.checks) {
            c.mark_all();
        }
        let _ = self.map.advise(memmap2::Advice::Normal);
        self.advise_access();
        r
    }

    /// Checks the CRC32C of every section `which` selects.
    pub(super) fn verify_sections(&self, which: impl Fn(SectionKind) -> bool) -> Result<(), ShardError> {
        for (kind, range, crc) in self.sections.iter().filter(|s| which(s.0)) {
            let got = crate::checksum::crc32c_parallel(&self.map[range.clone()]);
            if got != *crc {
                return Err(self.corrupt(
                    *kind,
                    range.start,
                    format!("CRC32C mismatch (stored {crc:08x}, computed {got:08x})"),
                ));
            }
        }
        Ok(())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Templates in the shard.
    pub fn len(&self) -> usize {
        self.header.templates as usize
    }

    /// Whether the shard holds no template.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Distinct subjects.
    pub fn subjects(&self) -> usize {
        self.header.subjects as usize
    }

    /// The header.
    pub fn header(&self) -> &FileHeader {
        &self.header
    }

    /// Whether embeddings are stored as f16.
    pub fn f16(&self) -> bool {
        self.vectors == VectorKind::F16
    }

    /// How embeddings are stored.
    pub fn vector_kind(&self) -> VectorKind {
        self.vectors
    }

    /// Where the embeddings (and their scales) lie in the file.
    pub fn vectors_layout(&self) -> VectorsLayout {
        VectorsLayout {
            kind: self.vectors,
            dim: self.header.embedding_dim as usize,
            values: self.range(SectionKind::Embeddings),
            scales: self.range(SectionKind::EmbeddingScales),
        }
    }

    /// The embeddings, read in place.
    pub fn vectors(&self) -> Vectors<'_> {
        let dim = self.header.embedding_dim as usize;
        let empty = Vectors { rows: crate::index::vectors::Rows::F32(&[]), dim };
        self.vectors_layout().view(&self.map).unwrap_or(empty)
    }

    /// The file's bytes, shared (for indexes searched in place).
    pub fn bytes(&self) -> Bytes {
        self.map.clone()
    }

    /// The checked layout of each finger position's graph (empty for
    /// format 1 and for shards written without graphs).
    pub fn graphs(&self) -> &[GraphLayout] {
        &self.graphs
    }

    /// The parameters the graphs were built with, if the shard has graphs.
    pub fn graph_params(&self) -> Option<IndexParams> {
        let b = self.section(SectionKind::Graphs);
        let h: layout::GraphsHeader = b.get(..64).map(bytemuck::pod_read_unaligned)?;
        Some(IndexParams { max_connections: h.m as usize, ef_construction: h.ef_construction as usize })
    }

    /// The embedding the vectors were made with.
    pub fn embedding(&self) -> EmbeddingId {
        EmbeddingId {
            method: self.header.embedding_method,
            version: self.header.embedding_version,
            dim: self.header.embedding_dim,
        }
    }

    /// (section, offset, length, stored CRC32C) of every section.
    pub fn sections(&self) -> Vec<(SectionKind, u64, u64, u32)> {
        self.sections.iter().map(|(k, r, c)| (*k, r.start as u64, r.len() as u64, *c)).collect()
    }

    /// The stored CRC32C of a section.
    pub fn section_crc(&self, k: SectionKind) -> u32 {
        self.sections.iter().find(|s| s.0 == k).map(|s| s.2).unwrap_or(0)
    }

    /// The f32 embeddings, row after row (`None` if stored otherwise).
    pub fn embeddings_f32(&self) -> Option<&[f32]> {
        match self.vectors {
            VectorKind::F32 => bytemuck::try_cast_slice(self.section(SectionKind::Embeddings)).ok(),
            _ => None,
        }
    }

    /// The embedding of template `t` as f32 (converted from f16 or int8 if
    /// needed); `out` is left as it is when `t` is out of range.
    pub fn embedding_into(&self, t: usize, out: &mut [f32]) {
        self.vectors().row_into(t, out);
    }
}
