//! Streaming, crash-safe shard writer.
//!
//! Templates are appended one at a time; each per-template section streams
//! to its own spill file beside the target (memory stays bounded: only the
//! subject table, label table and string heap are held, all proportional
//! to the subjects). [`ShardWriter::finish`] lays the sections out at
//! 64-byte boundaries in a temporary file, computing each CRC32C while
//! copying, writes the header and section table, fsyncs, renames over the
//! target and fsyncs the folder: a reader sees the whole shard or none.
//!
//! Before that, unless the spec says otherwise, it builds the HNSW graph
//! of every finger position over the embeddings exactly as stored (read
//! back from their spill file) and lays them out as the graphs section, so
//! the graphs are covered by the same checksums and published with the
//! shard in one rename.

use super::ShardError;
use super::format::*;
use crate::embed::EmbeddingId;
use crate::index::{IndexParams, VectorKind};
use crate::mcc::{MccParams, Prepared};
use crate::template::Template;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// What a shard is built with.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardSpec {
    /// The embedding of the vectors.
    pub embedding: EmbeddingId,
    /// The cylinder parameters of the prepared blobs.
    pub mcc: MccParams,
    /// How embeddings are stored.
    pub vectors: VectorKind,
    /// Build the HNSW graphs with these parameters (`None`: an empty graphs section).
    pub graphs: Option<IndexParams>,
}

impl ShardSpec {
    /// A spec with f32 embeddings and graphs of the default parameters.
    pub fn new(embedding: EmbeddingId, mcc: MccParams) -> ShardSpec {
        ShardSpec { embedding, mcc, vectors: VectorKind::F32, graphs: Some(IndexParams::default()) }
    }
}

/// One template to store.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The subject (person) it belongs to.
    pub subject: &'a str,
    /// The subject's labels (key, value); the first template of a subject sets them.
    pub labels: &'a [(String, String)],
    /// The template (its minutiae are stored so vectors can be re-derived).
    pub template: &'a Template,
    /// Its prepared cylinders.
    pub prepared: &'a Prepared,
    /// Its embedding (unit vector of the spec's dimension).
    pub embedding: &'a [f32],
}

/// Counts and checksums of a finished shard.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardSummary {
    /// The file.
    pub path: PathBuf,
    /// Templates.
    pub templates: u64,
    /// Subjects.
    pub subjects: u64,
    /// File size.
    pub bytes: u64,
    /// (section, offset, length, crc) of each section.
    pub sections: Vec<(SectionKind, u64, u64, u32)>,
}

/// The per-template sections that stream through spill files.
const SPILLED: [SectionKind; 9] = [
    SectionKind::TemplateSubject,
    SectionKind::FingerPosition,
    SectionKind::PreparedOffsets,
    SectionKind::Embeddings,
    SectionKind::Prepared,
    SectionKind::MinutiaeOffsets,
    SectionKind::Minutiae,
    SectionKind::EmbeddingScales,
    SectionKind::TemplateChecks,
];
/// Spill of the finger positions.
const SPILL_FINGERS: usize = 1;
/// Spill of the embeddings.
const SPILL_EMBEDDINGS: usize = 3;
/// Spill of the embedding scales.
const SPILL_SCALES: usize = 7;
/// Spill of the per-template checks.
const SPILL_CHECKS: usize = 8;

/// Writes one shard.
pub struct ShardWriter {
    path: PathBuf,
    spec: ShardSpec,
    spill_paths: Vec<PathBuf>,
    spills: Vec<BufWriter<File>>,
    subject_index: HashMap<String, u32>,
    subjects: Vec<SubjectRecord>,
    labels: Vec<LabelRecord>,
    strings: Vec<u8>,
    templates: u64,
    prepared_words: u64,
    minutiae_bytes: u64,
    finished: bool,
}

fn io(path: &Path, e: std::io::Error) -> ShardError {
    ShardError::Io { file: path.display().to_string(), what: e.to_string() }
}

impl ShardWriter {
    /// Starts writing the shard that will appear at `path` when finished.
    pub fn create(path: &Path, spec: ShardSpec) -> Result<ShardWriter, ShardError> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "shard".into());
        let mut spill_paths = Vec::new();
        let mut spills = Vec::new();
        for k in SPILLED {
            let p = dir.join(format!(".{name}.spill-{}-{}", std::process::id(), k as u32));
            spills.push(BufWriter::with_capacity(1 << 20, File::create(&p).map_err(|e| io(&p, e))?));
            spill_paths.push(p);
        }
        Ok(ShardWriter {
            path: path.to_path_buf(),
            spec,
            spill_paths,
            spills,
            subject_index: HashMap::new(),
            subjects: Vec::new(),
            labels: Vec::new(),
            strings: Vec::new(),
            templates: 0,
            prepared_words: 0,
            minutiae_bytes: 0,
            finished: false,
        })
    }

    fn heap(&mut self, s: &str) -> Result<(u32, u32), ShardError> {
        let off =
            u32::try_from(self.strings.len()).map_err(|_| ShardError::Invalid("string heap over 4 GiB".into()))?;
        let len = u32::try_from(s.len()).map_err(|_| ShardError::Invalid("string over 4 GiB".into()))?;
        self.strings.extend_from_slice(s.as_bytes());
        Ok((off, len))
    }

    fn spill(&mut self, k: usize, bytes: &[u8]) -> Result<(), ShardError> {
        self.spills[k].write_all(bytes).map_err(|e| io(&self.spill_paths[k], e))
    }

    /// Appends one template.
    pub fn push(&mut self, e: Entry) -> Result<u64, ShardError> {
        let dim = self.spec.embedding.dim as usize;
        if e.embedding.len() != dim {
            return Err(ShardError::Invalid(format!(
                "embedding of {} values, shard dimension is {dim}",
                e.embedding.len()
            )));
        }
        if e.subject.is_empty() {
            return Err(ShardError::Invalid("empty subject id".into()));
        }
        let subject = match self.subject_index.get(e.subject) {
            Some(&s) => s,
            None => {
                let s =
                    u32::try_from(self.subjects.len()).map_err(|_| ShardError::Invalid("over 2^32 subjects".into()))?;
                let (id_offset, id_len) = self.heap(e.subject)?;
                let labels_start = self.labels.len() as u32;
                for (k, v) in e.labels {
                    let (key_offset, key_len) = self.heap(k)?;
                    let (value_offset, value_len) = self.heap(v)?;
                    self.labels.push(LabelRecord { key_offset, key_len, value_offset, value_len });
                }
                self.subjects.push(SubjectRecord {
                    id_offset,
                    id_len,
                    labels_start,
                    labels_count: e.labels.len() as u32,
                });
                self.subject_index.insert(e.subject.to_string(), s);
                s
            }
        };
        self.spill(0, &subject.to_le_bytes())?;
        self.spill(1, &[e.template.finger_position.0])?;
        self.spill(2, &self.prepared_words.to_le_bytes())?;
        let mut b = Vec::with_capacity(dim * 4);
        let scale = self.spec.vectors.encode(e.embedding, &mut b);
        self.spill(SPILL_EMBEDDINGS, &b)?;
        if self.spec.vectors == VectorKind::I8 {
            self.spill(SPILL_SCALES, &scale.to_le_bytes())?;
        }
        let words: &[u8] = bytemuck::cast_slice(e.prepared.words());
        self.spill(4, words)?;
        let words_crc = crate::checksum::crc32c(words);
        self.prepared_words += e.prepared.words().len() as u64;
        self.spill(5, &self.minutiae_bytes.to_le_bytes())?;
        let t = e.template;
        let head = MinutiaeHeader {
            count: t.minutiae.len() as u32,
            resolution_x: t.resolution_x,
            resolution_y: t.resolution_y,
            width: t.width,
            height: t.height,
            finger: t.finger_position.0,
            impression: t.impression_type.0,
            view: t.view_number,
            quality: t.quality,
        };
        let mut rec = bytemuck::bytes_of(&head).to_vec();
        for m in &t.minutiae {
            let p =
                PackedMinutia { x: m.x, y: m.y, angle: m.angle, kind: m.kind.code(), quality: m.quality, pad: [0; 2] };
            rec.extend_from_slice(bytemuck::bytes_of(&p));
        }
        self.spill(6, &rec)?;
        let mut checks = words_crc.to_le_bytes().to_vec();
        checks.extend_from_slice(&crate::checksum::crc32c(&rec).to_le_bytes());
        self.spill(SPILL_CHECKS, &checks)?;
        self.minutiae_bytes += rec.len() as u64;
        self.templates += 1;
        Ok(self.templates - 1)
    }

    /// Templates written so far.
    pub fn len(&self) -> u64 {
        self.templates
    }

    /// Whether no template was written.
    pub fn is_empty(&self) -> bool {
        self.templates == 0
    }

    /// Builds the graphs, then assembles, checksums and durably publishes the shard.
    pub fn finish(self) -> Result<ShardSummary, ShardError> {
        self.finish_with(&mut |_, _| {})
    }

    /// As [`Self::finish`], calling `progress(done, total)` as graph nodes
    /// are inserted (total: the templates).
    pub fn finish_with(mut self, progress: &mut dyn FnMut(usize, usize)) -> Result<ShardSummary, ShardError> {
        // Closing offsets.
        self.spill(2, &self.prepared_words.to_le_bytes())?;
        self.spill(5, &self.minutiae_bytes.to_le_bytes())?;
        for (w, p) in self.spills.iter_mut().zip(&self.spill_paths) {
            w.flush().map_err(|e| io(p, e))?;
        }
        let graphs = match self.spec.graphs {
            Some(p) => super::graphs::build_section(
                [
                    &self.spill_paths[SPILL_FINGERS],
                    &self.spill_paths[SPILL_EMBEDDINGS],
                    &self.spill_paths[SPILL_SCALES],
                ],
                self.spec.vectors,
                self.spec.embedding.dim as usize,
                &p,
                progress,
            )?,
            None => Vec::new(),
        };
        let path = self.path.clone();
        let mut sections: Vec<(SectionKind, u64, u64, u32)> = Vec::new();
        let table_end =
            (std::mem::size_of::<FileHeader>() + SectionKind::ALL.len() * std::mem::size_of::<SectionEntry>()) as u64;
        let result = crate::fsutil::write_atomic_with(&path, |out| {
            let mut pos = table_end;
            out.write_all(&vec![0u8; table_end as usize])?;
            for kind in SectionKind::ALL {
                let pad = pos.next_multiple_of(ALIGN) - pos;
                out.write_all(&vec![0u8; pad as usize])?;
                pos += pad;
                let (len, crc) = match SPILLED.iter().position(|k| *k == kind) {
                    Some(i) => copy_crc(&self.spill_paths[i], out)?,
                    None => {
                        let bytes: &[u8] = match kind {
                            SectionKind::Subjects => bytemuck::cast_slice(&self.subjects),
                            SectionKind::Labels => bytemuck::cast_slice(&self.labels),
                            SectionKind::Graphs => &graphs,
                            _ => &self.strings,
                        };
                        out.write_all(bytes)?;
                        (bytes.len() as u64, crate::checksum::crc32c(bytes))
                    }
                };
                sections.push((kind, pos, len, crc));
                pos += len;
            }
            let mut header = self.header();
            header.section_count = sections.len() as u32;
            let table: Vec<SectionEntry> = sections
                .iter()
                .map(|&(k, offset, length, crc32c)| SectionEntry {
                    kind: k as u32,
                    flags: 0,
                    offset,
                    length,
                    crc32c,
                    reserved: 0,
                })
                .collect();
            header.table_crc = table_crc(&header, &table);
            out.seek(SeekFrom::Start(0))?;
            out.write_all(bytemuck::bytes_of(&header))?;
            out.write_all(bytemuck::cast_slice(&table))?;
            Ok(())
        });
        self.finished = true;
        self.remove_spills();
        result.map_err(|e| io(&path, e))?;
        let bytes = std::fs::metadata(&path).map_err(|e| io(&path, e))?.len();
        Ok(ShardSummary { path, templates: self.templates, subjects: self.subjects.len() as u64, bytes, sections })
    }

    fn header(&self) -> FileHeader {
        let p = &self.spec.mcc;
        FileHeader {
            magic: MAGIC,
            version: VERSION,
            flags: match self.spec.vectors {
                VectorKind::F32 => 0,
                VectorKind::F16 => FLAG_F16,
                VectorKind::I8 => FLAG_I8,
            },
            templates: self.templates,
            subjects: self.subjects.len() as u64,
            embedding_method: self.spec.embedding.method,
            embedding_version: self.spec.embedding.version,
            embedding_dim: self.spec.embedding.dim,
            prepared_layout: u32::from(crate::mcc::prepared::LAYOUT_VERSION),
            mcc_params_crc: mcc_params_crc(p),
            mcc_params: [p.radius, p.sigma_s, p.sigma_d, p.mu_psi, p.omega, p.min_vc],
            mcc_min_m: p.min_m as u32,
            section_count: 0,
            table_crc: 0,
            reserved: [0; 9],
        }
    }

    fn remove_spills(&mut self) {
        for p in &self.spill_paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if !self.finished {
            self.remove_spills();
        }
    }
}

/// CRC32C of the cylinder parameters (their JSON), stored in the header.
pub fn mcc_params_crc(p: &MccParams) -> u32 {
    crate::checksum::crc32c(&serde_json::to_vec(p).unwrap_or_default())
}

/// CRC32C of the header (with `table_crc` zeroed) followed by the table.
pub fn table_crc(header: &FileHeader, table: &[SectionEntry]) -> u32 {
    let mut h = *header;
    h.table_crc = 0;
    crate::checksum::crc32c_append(crate::checksum::crc32c(bytemuck::bytes_of(&h)), bytemuck::cast_slice(table))
}

/// Copies a spill file into `out`, returning its length and CRC32C.
fn copy_crc(from: &Path, out: &mut File) -> std::io::Result<(u64, u32)> {
    let mut f = File::open(from)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut len, mut crc) = (0u64, 0u32);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((len, crc));
        }
        crc = crate::checksum::crc32c_append(crc, &buf[..n]);
        out.write_all(&buf[..n])?;
        len += n as u64;
    }
}
