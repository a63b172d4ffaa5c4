//! The shard's on-disk structures: `#[repr(C)]` little-endian records with
//! explicit padding, read in place through bytemuck. Sizes are asserted.

use bytemuck::{Pod, Zeroable};

/// Magic bytes at offset 0.
pub const MAGIC: [u8; 8] = *b"WHORLSHD";
/// Current format version (2: embedding scales and HNSW graph sections;
/// 3: a CRC32C per template of its cylinders and minutiae).
pub const VERSION: u32 = 3;
/// Versions this build reads.
pub const VERSIONS_READ: [u32; 3] = [1, 2, 3];
/// Sections start at multiples of this.
pub const ALIGN: u64 = 64;
/// Header flags, bits 0-1: how embeddings are stored (0 f32, 1 f16, 2 int8).
pub const FLAG_VECTORS: u32 = 3;
/// Header flag value: embeddings are IEEE f16 instead of f32 (versions 1 and 2).
pub const FLAG_F16: u32 = 1;
/// Header flag value: embeddings are int8 with a scale per template (version 2).
pub const FLAG_I8: u32 = 2;

/// The file header (128 bytes at offset 0).
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct FileHeader {
    /// `WHORLSHD`.
    pub magic: [u8; 8],
    /// Format version.
    pub version: u32,
    /// [`FLAG_VECTORS`] bits; the others are reserved (0).
    pub flags: u32,
    /// Templates in the shard.
    pub templates: u64,
    /// Distinct subjects.
    pub subjects: u64,
    /// Embedding method name, NUL-padded.
    pub embedding_method: [u8; 8],
    /// Embedding version.
    pub embedding_version: u32,
    /// Embedding dimension.
    pub embedding_dim: u32,
    /// Layout version of the prepared (cylinder) blobs.
    pub prepared_layout: u32,
    /// CRC32C of the cylinder parameters (JSON of `MccParams`).
    pub mcc_params_crc: u32,
    /// Cylinder radius R, σ_S, σ_D, μ_Ψ, Ω, min_VC (f32 each).
    pub mcc_params: [f32; 6],
    /// min_M.
    pub mcc_min_m: u32,
    /// Entries in the section table that follows the header.
    pub section_count: u32,
    /// CRC32C of the header (this field as 0) and the section table.
    pub table_crc: u32,
    /// Zero.
    pub reserved: [u32; 9],
}

/// One entry of the section table (32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct SectionEntry {
    /// [`SectionKind`] code.
    pub kind: u32,
    /// Reserved (0).
    pub flags: u32,
    /// Byte offset in the file (multiple of [`ALIGN`]).
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// CRC32C of the section's bytes.
    pub crc32c: u32,
    /// Reserved (0).
    pub reserved: u32,
}

/// One subject (16 bytes): its id and labels in the string heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct SubjectRecord {
    /// Offset of the id in the string heap.
    pub id_offset: u32,
    /// Length of the id in bytes.
    pub id_len: u32,
    /// First label in the label table.
    pub labels_start: u32,
    /// Number of labels.
    pub labels_count: u32,
}

/// One label (16 bytes): key and value in the string heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct LabelRecord {
    /// Key offset.
    pub key_offset: u32,
    /// Key length.
    pub key_len: u32,
    /// Value offset.
    pub value_offset: u32,
    /// Value length.
    pub value_len: u32,
}

/// Template header in the minutiae section (16 bytes), followed by its minutiae.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct MinutiaeHeader {
    /// Number of minutiae that follow.
    pub count: u32,
    /// x resolution, px/cm.
    pub resolution_x: u16,
    /// y resolution, px/cm.
    pub resolution_y: u16,
    /// Image width.
    pub width: u16,
    /// Image height.
    pub height: u16,
    /// Finger position.
    pub finger: u8,
    /// Impression type.
    pub impression: u8,
    /// View number.
    pub view: u8,
    /// Finger quality.
    pub quality: u8,
}

/// One stored minutia (16 bytes): the crate conventions, exactly.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct PackedMinutia {
    /// x, pixels.
    pub x: f32,
    /// y, pixels.
    pub y: f32,
    /// Angle, radians.
    pub angle: f32,
    /// Kind code (0 other, 1 ending, 2 bifurcation).
    pub kind: u8,
    /// Quality.
    pub quality: u8,
    /// Zero.
    pub pad: [u8; 2],
}

const _: () = {
    assert!(std::mem::size_of::<FileHeader>() == 128);
    assert!(std::mem::size_of::<SectionEntry>() == 32);
    assert!(std::mem::size_of::<SubjectRecord>() == 16);
    assert!(std::mem::size_of::<LabelRecord>() == 16);
    assert!(std::mem::size_of::<MinutiaeHeader>() == 16);
    assert!(std::mem::size_of::<PackedMinutia>() == 16);
};

/// The sections of a shard, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectionKind {
    /// u32 per template: index of its subject.
    TemplateSubject = 1,
    /// u8 per template: finger position.
    FingerPosition = 2,
    /// u64 per template, plus one: word offsets into [`Self::Prepared`].
    PreparedOffsets = 3,
    /// dim values per template: f32, f16 ([`FLAG_F16`]) or i8 ([`FLAG_I8`]).
    Embeddings = 4,
    /// Prepared cylinder blobs (u64 words), read by the matcher and the GPU in place.
    Prepared = 5,
    /// u64 per template, plus one: byte offsets into [`Self::Minutiae`].
    MinutiaeOffsets = 6,
    /// Per template: a [`MinutiaeHeader`] and its [`PackedMinutia`]s.
    Minutiae = 7,
    /// [`SubjectRecord`] per subject.
    Subjects = 8,
    /// [`LabelRecord`]s.
    Labels = 9,
    /// UTF-8 string heap of subject ids and labels.
    Strings = 10,
    /// f32 per template with int8 embeddings (the scale of its row), else empty (version 2).
    EmbeddingScales = 11,
    /// The HNSW graph of every finger position ([`crate::index::layout`]), or empty (version 2).
    Graphs = 12,
    /// Two u32 per template: the CRC32C of its [`Self::Prepared`] words and
    /// of its [`Self::Minutiae`] record, checked when a template is first
    /// read (version 3).
    TemplateChecks = 13,
}

impl SectionKind {
    /// Every section of the current version, in file order.
    pub const ALL: [SectionKind; 13] = [
        SectionKind::TemplateSubject,
        SectionKind::FingerPosition,
        SectionKind::PreparedOffsets,
        SectionKind::Embeddings,
        SectionKind::Prepared,
        SectionKind::MinutiaeOffsets,
        SectionKind::Minutiae,
        SectionKind::Subjects,
        SectionKind::Labels,
        SectionKind::Strings,
        SectionKind::EmbeddingScales,
        SectionKind::Graphs,
        SectionKind::TemplateChecks,
    ];

    /// The sections of format `version`, in file order.
    pub fn of_version(version: u32) -> &'static [SectionKind] {
        match version {
            1 => &SectionKind::ALL[..10],
            2 => &SectionKind::ALL[..12],
            _ => &SectionKind::ALL,
        }
    }

    /// From the on-disk code.
    pub fn from_code(c: u32) -> Option<SectionKind> {
        SectionKind::ALL.into_iter().find(|k| *k as u32 == c)
    }

    /// A short name for errors and reports.
    pub fn name(self) -> &'static str {
        match self {
            SectionKind::TemplateSubject => "template subjects",
            SectionKind::FingerPosition => "finger positions",
            SectionKind::PreparedOffsets => "prepared offsets",
            SectionKind::Embeddings => "embeddings",
            SectionKind::Prepared => "prepared cylinders",
            SectionKind::MinutiaeOffsets => "minutiae offsets",
            SectionKind::Minutiae => "minutiae",
            SectionKind::Subjects => "subjects",
            SectionKind::Labels => "labels",
            SectionKind::Strings => "strings",
            SectionKind::EmbeddingScales => "embedding scales",
            SectionKind::Graphs => "graphs",
            SectionKind::TemplateChecks => "template checks",
        }
    }
}
