//! The prepared template: one flat run of little-endian u64 words that the
//! CPU matcher, the shard files and the GPU buffers all read as is.
//!
//! | words | content |
//! |------:|---------|
//! | 1 | header: `n` (bits 0-15), layout version (bits 16-31), reserved |
//! | 28·n | cylinders: validity mask (4 words: cells 0-207 of the base), then value bits of layers k = 0..5 (4 words each) |
//! | ⌈n/4⌉ | directions θ, u16 in units of 2π/65536, four per word, ascending |
//! | ⌈n²/2⌉ | geometry of each ordered pair (i, j), row-major n×n: u32 = distance in 1/8 px (low 16 bits) · direction of the vector from i to j (high 16 bits); 0 on the diagonal |
//!
//! Cylinders are sorted by direction, so the cylinders of another template
//! within δ_θ of a direction form one circular run. Cell `c` of a layer is
//! bit `c % 64` of word `c / 64`; cells are the (i, j) positions of the
//! 16×16 base whose centre lies within R, in raster order. A value bit is
//! never set in an invalid cell. Keep in sync with `shaders/shared/mcc.wgsl`.

use super::params::LAYER_WORDS;

/// Layout version stored in the header.
pub const LAYOUT_VERSION: u16 = 2;
/// u64 words per cylinder: mask plus six layers.
pub const CYL_WORDS: usize = LAYER_WORDS * 7;
/// Most cylinders a template keeps (indices fit a byte; LSS-R scratch is bounded).
pub const MAX_CYLINDERS: usize = 255;

/// Words of a prepared template with `n` cylinders.
pub fn words_for(n: usize) -> usize {
    1 + CYL_WORDS * n + n.div_ceil(4) + (n * n).div_ceil(2)
}

/// Why words are not a prepared template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreparedError {
    /// No header word.
    #[error("prepared template is empty")]
    Empty,
    /// Unknown layout.
    #[error("prepared template layout version {0} is not supported (expected {LAYOUT_VERSION})")]
    Version(u16),
    /// Too many cylinders.
    #[error("prepared template claims {0} cylinders (at most {MAX_CYLINDERS})")]
    TooMany(usize),
    /// The length does not match the header.
    #[error("prepared template of {n} cylinders needs {need} words, has {have}")]
    Length {
        /// Cylinders in the header.
        n: usize,
        /// Words needed.
        need: usize,
        /// Words present.
        have: usize,
    },
}

/// A prepared template owned in memory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prepared {
    words: Vec<u64>,
}

/// A borrowed prepared template (e.g. from a memory-mapped shard).
#[derive(Debug, Clone, Copy)]
pub struct PreparedRef<'a> {
    words: &'a [u64],
    n: usize,
}

impl Prepared {
    /// Assembles a blob from its parts: per-cylinder words, directions
    /// (ascending), and the n×n pair geometry.
    pub(super) fn assemble(cylinders: &[[u64; CYL_WORDS]], angles: &[u16], geometry: &[u32]) -> Prepared {
        let n = cylinders.len();
        debug_assert!(n <= MAX_CYLINDERS && angles.len() == n && geometry.len() == n * n);
        debug_assert!(angles.windows(2).all(|w| w[0] <= w[1]));
        let mut words = Vec::with_capacity(words_for(n));
        words.push(n as u64 | (u64::from(LAYOUT_VERSION) << 16));
        for c in cylinders {
            words.extend_from_slice(c);
        }
        words.extend(
            angles.chunks(4).map(|c| c.iter().enumerate().fold(0u64, |w, (i, &a)| w | u64::from(a) << (16 * i))),
        );
        words.extend(
            geometry.chunks(2).map(|c| c.iter().enumerate().fold(0u64, |w, (i, &g)| w | u64::from(g) << (32 * i))),
        );
        debug_assert_eq!(words.len(), words_for(n));
        Prepared { words }
    }

    /// A prepared template with no cylinders (a template too poor to match).
    pub fn empty() -> Prepared {
        Prepared::assemble(&[], &[], &[])
    }

    /// Takes ownership of words, checking them.
    pub fn from_words(words: Vec<u64>) -> Result<Prepared, PreparedError> {
        PreparedRef::new(&words)?;
        Ok(Prepared { words })
    }

    /// The words.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// A borrowed view.
    pub fn view(&self) -> PreparedRef<'_> {
        PreparedRef { words: &self.words, n: (self.words.first().copied().unwrap_or(0) & 0xffff) as usize }
    }

    /// Number of (valid) cylinders.
    pub fn len(&self) -> usize {
        self.view().len()
    }

    /// Whether the template has no cylinder.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> PreparedRef<'a> {
    /// Checks the header and length of `words`.
    pub fn new(words: &'a [u64]) -> Result<PreparedRef<'a>, PreparedError> {
        let head = *words.first().ok_or(PreparedError::Empty)?;
        let version = ((head >> 16) & 0xffff) as u16;
        if version != LAYOUT_VERSION {
            return Err(PreparedError::Version(version));
        }
        let n = (head & 0xffff) as usize;
        if n > MAX_CYLINDERS {
            return Err(PreparedError::TooMany(n));
        }
        let need = words_for(n);
        if words.len() != need {
            return Err(PreparedError::Length { n, need, have: words.len() });
        }
        Ok(PreparedRef { words, n })
    }

    /// Number of cylinders.
    #[inline]
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there is no cylinder.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// All words.
    pub fn words(&self) -> &'a [u64] {
        self.words
    }

    /// All cylinders, 28 words each.
    #[inline]
    pub fn cylinders(&self) -> &'a [[u64; CYL_WORDS]] {
        self.words[1..1 + CYL_WORDS * self.n].as_chunks::<CYL_WORDS>().0
    }

    /// The 28 words of cylinder `i`: mask, then six layers.
    #[inline]
    pub fn cylinder(&self, i: usize) -> &'a [u64; CYL_WORDS] {
        let s = 1 + CYL_WORDS * i;
        self.words[s..s + CYL_WORDS].try_into().expect("a cylinder is CYL_WORDS words (length checked in new)")
    }

    /// Direction of cylinder `i`, units of 2π/65536.
    #[inline]
    pub fn angle(&self, i: usize) -> u16 {
        self.angles()[i]
    }

    /// Directions of all cylinders (ascending), units of 2π/65536.
    #[inline]
    pub fn angles(&self) -> &'a [u16] {
        let base = 1 + CYL_WORDS * self.n;
        let words = &self.words[base..base + self.n.div_ceil(4)];
        &bytemuck::cast_slice::<u64, u16>(words)[..self.n]
    }

    /// The n×n geometry, row-major: distance (1/8 px, low 16 bits) and
    /// direction of the vector from `i` to `j` (high 16 bits).
    #[inline]
    pub fn geometry_matrix(&self) -> &'a [u32] {
        let base = 1 + CYL_WORDS * self.n + self.n.div_ceil(4);
        let words = &self.words[base..base + (self.n * self.n).div_ceil(2)];
        &bytemuck::cast_slice::<u64, u32>(words)[..self.n * self.n]
    }

    /// Distance (1/8 px) between the minutiae of cylinders `i` and `j`, and
    /// the direction of the vector from `i` to `j` (units of 2π/65536).
    /// `(0, 0)` when `i == j`.
    #[inline]
    pub fn geometry(&self, i: usize, j: usize) -> (u32, u16) {
        let g = self.geometry_matrix()[i * self.n + j];
        (g & 0xffff, (g >> 16) as u16)
    }
}
