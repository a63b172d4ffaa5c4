//! Fixed-length embeddings: the first stage of every search turns a
//! template into an L2-normalised `f32` vector whose inner products rank
//! gallery candidates for the cylinder matcher to re-score.
//!
//! The method, chosen by measurement (`benches/reports/embedding.md`): a
//! soft-binned histogram of minutia-pair geometry measured in each pair's
//! own frame ([`pairs`]: translation- and rotation-invariant, tolerant to
//! missing and spurious minutiae, which only change their own pairs),
//! square-rooted, then centred and whitened ([`whiten`]: learned whitening
//! by the covariance of mated differences, the default since model v2, or
//! plain PCA) with parameters learned offline from synthetic templates only
//! ([`model`], `whorl embed-train`). Whitening lifted the synthetic hit
//! rate at 1% penetration from 58% to about 90%; learned whitening against
//! PCA on the same generator is within the measurements' noise (+0.3
//! points at 0.1%; `benches/reports/embedding.md`).
//!
//! The method and its version are recorded with every stored vector
//! ([`EmbeddingId`]), so that vectors made by one version are never
//! searched with another.

pub mod model;
pub mod pairs;
pub mod train;
pub mod whiten;

pub use model::{EmbedModel, ModelError};

use crate::template::Template;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::{Arc, OnceLock};

/// Identifies how vectors were made: method, version and dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EmbeddingId {
    /// Method name (e.g. `mph`).
    pub method: [u8; 8],
    /// Method version: bumped whenever vectors change.
    pub version: u32,
    /// Vector dimension.
    pub dim: u32,
}

impl fmt::Display for EmbeddingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = String::from_utf8_lossy(&self.method);
        write!(f, "{} v{} ({} dims)", name.trim_end_matches('\0'), self.version, self.dim)
    }
}

fn name8(s: &str) -> [u8; 8] {
    let mut out = [0u8; 8];
    for (o, b) in out.iter_mut().zip(s.bytes()) {
        *o = b;
    }
    out
}

/// How templates become vectors.
#[derive(Debug, Clone)]
pub enum Method {
    /// The pair histogram with the default bins, square-rooted and
    /// normalised: no learned parameters (a baseline).
    PairHistogram,
    /// The pair histogram whitened by a learned model ([`model`]): the default.
    Whitened(Arc<EmbedModel>),
}

/// The built-in model (`assets/embed-mph-v2.bin`, made by `whorl embed-train`).
static BUILTIN: &[u8] = include_bytes!("../../assets/embed-mph-v2.bin");

/// The built-in model, parsed and checked once.
pub fn builtin_model() -> Result<Arc<EmbedModel>, ModelError> {
    static MODEL: OnceLock<Result<Arc<EmbedModel>, ModelError>> = OnceLock::new();
    MODEL.get_or_init(|| EmbedModel::from_bytes(BUILTIN).map(Arc::new)).clone()
}

/// The embedder.
#[derive(Debug, Clone)]
pub struct Embedder {
    method: Method,
}

impl Default for Embedder {
    /// The whitened pair histogram with the built-in model. Should that
    /// model ever fail its checks, the raw histogram is used and an error
    /// logged; its different [`EmbeddingId`] keeps it from being mixed with
    /// vectors of the whitened model.
    fn default() -> Embedder {
        match builtin_model() {
            Ok(m) => Embedder::with_method(Method::Whitened(m)),
            Err(e) => {
                tracing::error!("built-in embedding model refused ({e}); using the raw pair histogram");
                Embedder::pair_histogram()
            }
        }
    }
}

impl Embedder {
    /// An embedder using `method`.
    pub fn with_method(method: Method) -> Embedder {
        Embedder { method }
    }

    /// The raw pair-histogram embedder (baseline).
    pub fn pair_histogram() -> Embedder {
        Embedder::with_method(Method::PairHistogram)
    }

    /// What this embedder makes.
    pub fn id(&self) -> EmbeddingId {
        match &self.method {
            Method::PairHistogram => EmbeddingId { method: name8("mph-raw"), version: 1, dim: pairs::DIM as u32 },
            Method::Whitened(m) => {
                EmbeddingId { method: name8("mph-w"), version: m.version, dim: m.whitening.dout as u32 }
            }
        }
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.id().dim as usize
    }

    /// Embeds `t` into `out` (length [`Self::dim`]): an L2-normalised
    /// vector (all zeros only for the raw method on a template with no
    /// pair within range).
    pub fn embed_into(&self, t: &Template, out: &mut [f32]) {
        match &self.method {
            Method::PairHistogram => {
                out.fill(0.0);
                raw_histogram(t, pairs::DEFAULT_BINS, out);
            }
            Method::Whitened(m) => {
                let mut h = vec![0f32; m.bins.dim()];
                raw_histogram(t, m.bins, &mut h);
                m.whitening.apply(&h, out);
            }
        }
    }

    /// Embeds `t` into a new vector.
    pub fn embed(&self, t: &Template) -> Vec<f32> {
        let mut v = vec![0.0; self.dim()];
        self.embed_into(t, &mut v);
        v
    }
}

/// The square-rooted, L2-normalised pair histogram of `t` into `out` (zeroed).
pub fn raw_histogram(t: &Template, bins: pairs::PairBins, out: &mut [f32]) {
    pairs::histogram_with(t, bins, out);
    for v in out.iter_mut() {
        *v = v.sqrt();
    }
    normalise(out);
}

/// Inner product with eight independent accumulators (vectorises without
/// reassociating one long sum).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Scales `v` to unit L2 norm (leaves a zero vector alone). The norm is
/// summed in f64, so the result is unit to within f32 rounding.
pub fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    if n > 0.0 {
        for x in v.iter_mut() {
            *x = (f64::from(*x) / n) as f32;
        }
    }
}
