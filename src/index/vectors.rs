//! Stored vectors and the queries scored against them.
//!
//! A gallery keeps its embeddings in one of three forms ([`VectorKind`]),
//! chosen when it is built:
//!
//! * `f32`: 4 bytes a value, exact;
//! * `f16`: IEEE binary16, 2 bytes a value (relative error below 2^-11);
//! * `int8`: 1 byte a value plus one f32 scale per row: row `r` stands for
//!   `scale[r] · q[r][i]` with `q` in -127..=127 and `scale = max|v| / 127`
//!   (symmetric scalar quantisation per vector).
//!
//! Scores are inner products with a unit f32 query. For `int8` rows the
//! query is quantised to i16 once per search ([`Query`]), so every row
//! costs one integer kernel call and one multiplication.

use super::kernels::{Kernels, kernels, prefetch};
use serde::{Deserialize, Serialize};

/// How a gallery stores its embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum VectorKind {
    /// 4-byte floats.
    #[default]
    #[serde(rename = "f32")]
    F32,
    /// IEEE half-precision floats.
    #[serde(rename = "f16")]
    F16,
    /// Signed bytes with an f32 scale per row.
    #[serde(rename = "int8")]
    I8,
}

impl VectorKind {
    /// Every kind.
    pub const ALL: [VectorKind; 3] = [VectorKind::F32, VectorKind::F16, VectorKind::I8];

    /// Bytes per stored value.
    pub fn value_bytes(self) -> usize {
        match self {
            VectorKind::F32 => 4,
            VectorKind::F16 => 2,
            VectorKind::I8 => 1,
        }
    }

    /// Bytes of per-row scale.
    pub fn scale_bytes(self) -> usize {
        if self == VectorKind::I8 { 4 } else { 0 }
    }

    /// The name used in configuration and reports.
    pub fn name(self) -> &'static str {
        match self {
            VectorKind::F32 => "f32",
            VectorKind::F16 => "f16",
            VectorKind::I8 => "int8",
        }
    }

    /// From its name.
    pub fn parse(s: &str) -> Option<VectorKind> {
        VectorKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Encodes a row: appends its values' little-endian bytes to `values`
    /// and returns its scale (1 for float kinds).
    pub fn encode(self, v: &[f32], values: &mut Vec<u8>) -> f32 {
        match self {
            VectorKind::F32 => {
                values.extend(v.iter().flat_map(|x| x.to_le_bytes()));
                1.0
            }
            VectorKind::F16 => {
                values.extend(v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()));
                1.0
            }
            VectorKind::I8 => {
                let max = v.iter().fold(0f32, |m, x| if x.is_finite() { m.max(x.abs()) } else { m });
                let scale = max / 127.0;
                let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                values.extend(v.iter().map(|x| (x * inv).round().clamp(-127.0, 127.0) as i8 as u8));
                scale
            }
        }
    }
}

impl std::fmt::Display for VectorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The values of stored rows, typed.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    /// f32 rows.
    F32(&'a [f32]),
    /// f16 rows (binary16 bits).
    F16(&'a [u16]),
    /// i8 rows and their scales.
    I8 {
        /// Values.
        values: &'a [i8],
        /// One scale per row.
        scales: &'a [f32],
    },
}

/// Stored rows of `dim` values, read in place.
#[derive(Debug, Clone, Copy)]
pub struct Vectors<'a> {
    /// The values.
    pub rows: Rows<'a>,
    /// Values per row.
    pub dim: usize,
}

/// A query prepared for one kind of rows (reused between searches).
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// The query as f32 (f32 and f16 rows).
    pub f: Vec<f32>,
    /// The query quantised (i8 rows).
    pub q: Vec<i16>,
    /// Value of one unit of `q`.
    pub q_scale: f32,
}

/// Largest magnitude of a quantised query value for `dim` values (keeps
/// the i8 kernel's i32 lanes from overflowing, see `kernels.rs`).
fn query_limit(dim: usize) -> f32 {
    if dim <= 4096 { 32767.0 } else { (32767.0 * 4096.0 / dim as f32).floor().max(1.0) }
}

impl<'a> Vectors<'a> {
    /// Number of rows.
    pub fn len(&self) -> usize {
        if self.dim == 0 {
            return 0;
        }
        match self.rows {
            Rows::F32(v) => v.len() / self.dim,
            Rows::F16(v) => v.len() / self.dim,
            Rows::I8 { values, scales } => (values.len() / self.dim).min(scales.len()),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kind of the rows.
    pub fn kind(&self) -> VectorKind {
        match self.rows {
            Rows::F32(_) => VectorKind::F32,
            Rows::F16(_) => VectorKind::F16,
            Rows::I8 { .. } => VectorKind::I8,
        }
    }

    /// Row `r` as f32 (dequantised); false, with `out` untouched, when out of range.
    pub fn row_into(&self, r: usize, out: &mut [f32]) -> bool {
        let d = self.dim;
        let span = r.checked_mul(d).and_then(|a| Some(a..a.checked_add(d)?));
        let Some(span) = span else { return false };
        match self.rows {
            Rows::F32(v) => match v.get(span) {
                Some(row) => out.iter_mut().zip(row).for_each(|(o, x)| *o = *x),
                None => return false,
            },
            Rows::F16(v) => match v.get(span) {
                Some(row) => out.iter_mut().zip(row).for_each(|(o, x)| *o = half::f16::from_bits(*x).to_f32()),
                None => return false,
            },
            Rows::I8 { values, scales } => match (values.get(span), scales.get(r)) {
                (Some(row), Some(s)) => out.iter_mut().zip(row).for_each(|(o, x)| *o = f32::from(*x) * s),
                _ => return false,
            },
        }
        true
    }

    /// Prepares the f32 query `v` for these rows.
    pub fn prepare(&self, v: &[f32], out: &mut Query) {
        out.f.clear();
        out.q.clear();
        match self.rows {
            Rows::F32(_) | Rows::F16(_) => out.f.extend_from_slice(v),
            Rows::I8 { .. } => {
                let max = v.iter().fold(0f32, |m, x| if x.is_finite() { m.max(x.abs()) } else { m });
                let limit = query_limit(self.dim);
                out.q_scale = if max > 0.0 { max / limit } else { 0.0 };
                let inv = if max > 0.0 { limit / max } else { 0.0 };
                out.q.extend(v.iter().map(|x| (x * inv).round().clamp(-limit, limit) as i16));
            }
        }
    }

    /// Prepares stored row `r` as a query (exactly: i8 rows widen to i16
    /// with their own scale); an empty query when out of range.
    pub fn prepare_row(&self, r: usize, out: &mut Query) {
        out.f.clear();
        out.q.clear();
        let d = self.dim;
        let Some(span) = r.checked_mul(d).and_then(|a| Some(a..a.checked_add(d)?)) else { return };
        match self.rows {
            Rows::F32(v) => out.f.extend_from_slice(v.get(span).unwrap_or(&[])),
            Rows::F16(v) => out.f.extend(v.get(span).unwrap_or(&[]).iter().map(|x| half::f16::from_bits(*x).to_f32())),
            Rows::I8 { values, scales } => {
                out.q.extend(values.get(span).unwrap_or(&[]).iter().map(|x| i16::from(*x)));
                out.q_scale = scales.get(r).copied().unwrap_or(0.0);
            }
        }
    }

    /// A scorer of `query` (prepared by [`Self::prepare`] or
    /// [`Self::prepare_row`]) against these rows.
    pub fn scorer<'q>(&self, query: &'q Query) -> Scorer<'a, 'q> {
        let q = match self.rows {
            Rows::I8 { .. } => Q::I(&query.q, query.q_scale),
            _ => Q::F(&query.f),
        };
        Scorer { v: *self, query: q, k: kernels() }
    }

    /// A scorer of stored row `r` against the others: f32 rows are read in
    /// place, other kinds prepared into `tmp` (see [`Self::prepare_row`]).
    pub fn row_scorer<'q>(&self, r: usize, tmp: &'q mut Query) -> Scorer<'a, 'q>
    where
        'a: 'q,
    {
        if let Rows::F32(v) = self.rows {
            let d = self.dim;
            let row = r.checked_mul(d).and_then(|a| v.get(a..a.checked_add(d)?)).unwrap_or(&[]);
            return Scorer { v: *self, query: Q::F(row), k: kernels() };
        }
        self.prepare_row(r, tmp);
        self.scorer(tmp)
    }
}

/// The query a [`Scorer`] holds: f32 values, or i16 values and their unit.
#[derive(Clone, Copy)]
enum Q<'q> {
    F(&'q [f32]),
    I(&'q [i16], f32),
}

/// Scores one prepared query against stored rows.
#[derive(Clone, Copy)]
pub struct Scorer<'a, 'q> {
    v: Vectors<'a>,
    query: Q<'q>,
    k: &'static Kernels,
}

impl Scorer<'_, '_> {
    /// Inner product of the query with row `r`; −∞ when `r` is out of range
    /// (a damaged reference is never the best candidate).
    #[inline]
    pub fn score(&self, r: usize) -> f32 {
        let d = self.v.dim;
        let a = r.wrapping_mul(d);
        match (self.v.rows, self.query) {
            (Rows::F32(v), Q::F(q)) => {
                v.get(a..a.wrapping_add(d)).map_or(f32::NEG_INFINITY, |row| (self.k.f32)(q, row))
            }
            (Rows::F16(v), Q::F(q)) => {
                v.get(a..a.wrapping_add(d)).map_or(f32::NEG_INFINITY, |row| (self.k.f16)(q, row))
            }
            (Rows::I8 { values, scales }, Q::I(q, unit)) => match (values.get(a..a.wrapping_add(d)), scales.get(r)) {
                (Some(row), Some(s)) => (self.k.i8)(q, row) as f32 * (unit * s),
                _ => f32::NEG_INFINITY,
            },
            _ => f32::NEG_INFINITY,
        }
    }

    /// Starts loading row `r`.
    #[inline]
    pub fn prefetch(&self, r: usize) {
        let d = self.v.dim;
        let a = r.wrapping_mul(d);
        let span = a..a.wrapping_add(d);
        match self.v.rows {
            Rows::F32(v) => prefetch(v.get(span).unwrap_or(&[])),
            Rows::F16(v) => prefetch(v.get(span).unwrap_or(&[])),
            Rows::I8 { values, scales } => {
                prefetch(values.get(span).unwrap_or(&[]));
                prefetch(scales.get(r..r + 1).unwrap_or(&[]));
            }
        }
    }
}
