//! The embedding model: pair-histogram binning plus a learned centring and
//! PCA whitening ([`super::whiten`]), stored in a small file made by
//! `whorl embed-train` and built into the binary.
//!
//! # File (little-endian)
//!
//! | bytes | field |
//! |------:|-------|
//! | 8 | magic `WHORLEMB` |
//! | 4 | file version (1) |
//! | 4 | embedding version (bumped whenever vectors change) |
//! | 4, 4, 4, 4 | distance bins, α bins, β bins (u32), largest distance (f32) |
//! | 4, 4 | input dimension D_in, output dimension D_out |
//! | 4·D_in | mean (f32) |
//! | 2·D_in·D_out | whitening projection, D_out rows of D_in (IEEE f16) |
//! | 4 | CRC32C of everything before |

use super::pairs::PairBins;
use super::whiten::Whitening;

/// Magic bytes.
pub const MAGIC: &[u8; 8] = b"WHORLEMB";

/// Why a model file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// Wrong magic or version, truncated, inconsistent sizes.
    #[error("embedding model: {0}")]
    Invalid(String),
    /// The checksum does not match.
    #[error("embedding model: CRC32C mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum {
        /// Stored.
        stored: u32,
        /// Computed.
        computed: u32,
    },
}

/// Binning and whitening.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedModel {
    /// Version of the vectors this model makes.
    pub version: u32,
    /// Histogram binning.
    pub bins: PairBins,
    /// Centring and whitening (input `bins.dim()`).
    pub whitening: Whitening,
}

impl EmbedModel {
    /// Serialises (the projection as f16).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        let b = &self.bins;
        for v in [1u32, self.version, b.d_bins as u32, b.a_bins as u32, b.b_bins as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&b.d_max.to_le_bytes());
        out.extend_from_slice(&(self.whitening.din as u32).to_le_bytes());
        out.extend_from_slice(&(self.whitening.dout as u32).to_le_bytes());
        for m in &self.whitening.mean {
            out.extend_from_slice(&m.to_le_bytes());
        }
        for p in &self.whitening.proj {
            out.extend_from_slice(&half::f16::from_f32(*p).to_le_bytes());
        }
        let crc = crate::checksum::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads and checks a model.
    pub fn from_bytes(b: &[u8]) -> Result<EmbedModel, ModelError> {
        let bad = |m: String| ModelError::Invalid(m);
        if b.len() < 44 || &b[..8] != MAGIC {
            return Err(bad("not a whorl embedding model (magic)".into()));
        }
        let (body, tail) = b.split_at(b.len() - 4);
        let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let computed = crate::checksum::crc32c(body);
        if stored != computed {
            return Err(ModelError::Checksum { stored, computed });
        }
        let u = |i: usize| u32::from_le_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
        if u(8) != 1 {
            return Err(bad(format!("file version {} (expected 1)", u(8))));
        }
        let bins = PairBins {
            d_bins: u(16) as usize,
            a_bins: u(20) as usize,
            b_bins: u(24) as usize,
            d_max: f32::from_bits(u(28)),
        };
        let (din, dout) = (u(32) as usize, u(36) as usize);
        let sane = (1..=64).contains(&bins.d_bins)
            && (1..=64).contains(&bins.a_bins)
            && (1..=64).contains(&bins.b_bins)
            && bins.d_max.is_finite()
            && bins.d_max > 0.0;
        if !sane || din != bins.dim() || dout == 0 || dout > din {
            return Err(bad(format!("inconsistent sizes: bins {bins:?}, D_in {din}, D_out {dout}")));
        }
        let need = 40 + 4 * din + 2 * din * dout;
        if body.len() != need {
            return Err(bad(format!("{} bytes, expected {need}", body.len())));
        }
        let mean: Vec<f32> =
            body[40..40 + 4 * din].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let proj: Vec<f32> =
            body[40 + 4 * din..].chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
        if mean.iter().chain(&proj).any(|v| !v.is_finite()) {
            return Err(bad("non-finite value".into()));
        }
        Ok(EmbedModel { version: u(12), bins, whitening: Whitening { din, dout, mean, proj } })
    }
}
