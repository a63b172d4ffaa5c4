//! The cylinder similarity γ (Cappelli et al. 2010, eq. 17, bit version)
//! and the Γ stage that fills the candidate pairs of LSS-R.
//!
//! Cylinders a and b are matchable when `|dΦ(θ_a, θ_b)| ≤ δ_θ` and at least
//! min_ME of the base cells are valid in both (`ĉ_ab = ĉ_a ∧ ĉ_b`). Then,
//! with `c_a|b = c_a ∧ ĉ_ab` and norms that are square roots of popcounts,
//! `γ = 1 − ‖c_a|b ⊕ c_b|a‖ / (‖c_a|b‖ + ‖c_b|a‖)`, kept in Q16 and computed
//! from integer popcounts only:
//!
//! * `c_a ⊆ ĉ_a` (no bit is set in an invalid cell), so `c_a|b = c_a ∧ ĉ_b`;
//! * `|c_a ∧ ĉ_b| = Σ_k |c_a,k ∧ ĉ_b|` is read from the three bit-planes of
//!   a's per-cell layer count ([`planes`]): 12 popcounts instead of 24;
//! * `c_a ∧ c_b ⊆ ĉ_ab`, so `|c_a|b ⊕ c_b|a| = |c_a|b| + |c_b|a| − 2|c_a ∧ c_b|`.
//!
//! The portable kernel here is the reference; `kernel_x86` computes the same
//! integers with AVX-512 where the CPU has it.

use super::lut::{Luts, Q16, SQRT_LEN, angle_diff};
use super::params::{LAYER_WORDS, ND};
use super::prepared::{CYL_WORDS, PreparedRef};

/// One cylinder's words: validity mask, then N_D layers.
pub type Cyl = [u64; CYL_WORDS];

/// The same 28 words seen as mask and layers (a free cast of [`Cyl`]).
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct CylParts {
    /// Validity mask of the 208 base cells.
    pub mask: [u64; LAYER_WORDS],
    /// Layers 0-5, two per 8-word group.
    pub layers: [[u64; 8]; 3],
}

const _: () = assert!(std::mem::size_of::<CylParts>() == std::mem::size_of::<Cyl>());

/// Per cell of a cylinder, how many of its N_D layers are set, as three
/// bit-planes (1s, 2s, 4s) of the 256-bit base, so that
/// `Σ_k |c_k ∧ m| = |P0 ∧ m| + 2|P1 ∧ m| + 4|P2 ∧ m|` for any mask `m`.
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Planes {
    /// P0 (words 0-3) and P1 (words 4-7).
    pub p01: [u64; 8],
    /// P2.
    pub p2: [u64; LAYER_WORDS],
}

/// The bit-planes of a cylinder's layer counts: a carry-save adder over the
/// six layers, word by word.
#[inline]
pub fn planes(c: &Cyl) -> Planes {
    debug_assert_eq!(ND, 6);
    let mut p = Planes::default();
    for w in 0..LAYER_WORDS {
        let l = |k: usize| c[LAYER_WORDS * (k + 1) + w];
        let (s1, c1) = (l(0) ^ l(1) ^ l(2), (l(0) & l(1)) | (l(2) & (l(0) ^ l(1))));
        let (s2, c2) = (l(3) ^ l(4) ^ l(5), (l(3) & l(4)) | (l(5) & (l(3) ^ l(4))));
        let (ones, c3) = (s1 ^ s2, s1 & s2);
        p.p01[w] = ones;
        p.p01[LAYER_WORDS + w] = c1 ^ c2 ^ c3;
        p.p2[w] = (c1 & c2) | (c3 & (c1 ^ c2));
    }
    p
}

/// The validity mask (first four words) of a cylinder.
#[inline]
pub fn mask(c: &Cyl) -> [u64; LAYER_WORDS] {
    [c[0], c[1], c[2], c[3]]
}

/// `Σ_k |c_k ∧ m|` from the planes of c.
#[inline]
fn masked_count(p: &Planes, m: &[u64; LAYER_WORDS]) -> u32 {
    let (ones, twos) = p.p01.split_at(LAYER_WORDS);
    let mut n = 0;
    for (((&o, &t), &f), &m) in ones.iter().zip(twos).zip(&p.p2).zip(m) {
        n += (o & m).count_ones() + 2 * (t & m).count_ones() + 4 * (f & m).count_ones();
    }
    n
}

/// Popcounts of one cylinder pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PairCounts {
    /// |ĉ_ab|: base cells valid in both.
    pub both: u32,
    /// ‖c_a|b‖² = popcount(c_a ∧ ĉ_ab).
    pub a: u32,
    /// ‖c_b|a‖² = popcount(c_b ∧ ĉ_ab).
    pub b: u32,
    /// ‖c_a|b ⊕ c_b|a‖².
    pub xor: u32,
}

/// Popcounts of cylinders `a` and `b`, computed the plain way (layer by
/// layer, with the masks): the definition the fast kernels must match.
pub fn pair_counts(a: &Cyl, b: &Cyl) -> PairCounts {
    let mut c = PairCounts::default();
    for w in 0..LAYER_WORDS {
        c.both += (a[w] & b[w]).count_ones();
    }
    for k in 1..=ND {
        for w in 0..LAYER_WORDS {
            let both = a[w] & b[w];
            let x = a[LAYER_WORDS * k + w] & both;
            let y = b[LAYER_WORDS * k + w] & both;
            c.a += x.count_ones();
            c.b += y.count_ones();
            c.xor += (x ^ y).count_ones();
        }
    }
    c
}

/// Largest γ: Q16 one minus one unit, so that γ and a pair index (16 bits
/// each) pack into the u32 keys the GPU sorts. Only identical masked
/// cylinders would reach 1.
pub const GAMMA_MAX: u32 = Q16 - 1;

/// γ in Q16 from the three counts (0 when `both` is below min_ME or the
/// masked cylinders are empty), at most [`GAMMA_MAX`]. Popcounts never
/// exceed 6 × 256 < SQRT_LEN; the clamps only spare bounds checks.
#[inline]
pub fn gamma_from(l: &Luts, both: u32, pa: u32, pb: u32, px: u32) -> u32 {
    if both < l.min_me_cells {
        return 0;
    }
    let at = |n: u32| l.sqrt[(n as usize).min(SQRT_LEN - 1)];
    let den = at(pa) + at(pb);
    if den == 0 {
        return 0;
    }
    Q16.saturating_sub((at(px) << 16) / den).min(GAMMA_MAX)
}

/// The portable kernel: γ of two cylinders with their planes, testing
/// min_ME on the masks before counting layers.
#[inline]
pub fn gamma_portable(l: &Luts, a: &Cyl, pa: &Planes, b: &Cyl, pb: &Planes) -> u32 {
    let mut both = 0;
    for w in 0..LAYER_WORDS {
        both += (a[w] & b[w]).count_ones();
    }
    if both < l.min_me_cells {
        return 0;
    }
    let ca = masked_count(pa, &mask(b));
    let cb = masked_count(pb, &mask(a));
    let mut ab = 0;
    for w in LAYER_WORDS..CYL_WORDS {
        ab += (a[w] & b[w]).count_ones();
    }
    gamma_from(l, both, ca, cb, ca + cb - 2 * ab)
}

/// Buffers of the Γ stage.
#[derive(Debug, Default, Clone)]
pub struct GammaScratch {
    /// Planes of A's cylinders.
    pub planes_a: Vec<Planes>,
    /// Planes of B's cylinders.
    pub planes_b: Vec<Planes>,
    /// Keys `γ << 32 | !(i·n_B + j)` of the pairs with γ > 0.
    pub keys: Vec<u64>,
}

/// Fills `s.keys` with every pair of non-zero γ, using `kernel` for γ.
///
/// B's cylinders are sorted by direction, so those within δ_θ of θ_a form
/// the circular run that starts at the first one at or after θ_a − δ_θ.
#[inline(always)]
pub fn gamma_stage(
    l: &Luts,
    a: PreparedRef,
    b: PreparedRef,
    s: &mut GammaScratch,
    kernel: impl Fn(&Cyl, &Planes, &Cyl, &Planes) -> u32,
) {
    s.keys.clear();
    let angles_b = b.angles();
    s.planes_a.clear();
    s.planes_a.extend(a.cylinders().iter().map(planes));
    s.planes_b.clear();
    s.planes_b.extend(b.cylinders().iter().map(planes));
    let nb = b.len();
    let cyls_b = b.cylinders();
    for (i, ((ca, pa), &ta)) in a.cylinders().iter().zip(&s.planes_a).zip(a.angles()).enumerate() {
        let start = angles_b.partition_point(|&x| x < ta.wrapping_sub(l.delta_theta as u16));
        let base = (i * nb) as u32;
        // The window is [start, nb) then [0, start), up to the first
        // cylinder out of δ_θ.
        for range in [start..nb, 0..start] {
            let first = range.start;
            let run = cyls_b[range.clone()].iter().zip(&s.planes_b[range.clone()]).zip(&angles_b[range]);
            let mut left = false;
            for (off, ((cb, pb), &tb)) in run.enumerate() {
                if angle_diff(ta, tb) > l.delta_theta {
                    left = true;
                    break;
                }
                let g = kernel(ca, pa, cb, pb);
                if g > 0 {
                    s.keys.push((u64::from(g) << 32) | u64::from(!(base + (first + off) as u32)));
                }
            }
            if left {
                break;
            }
        }
    }
}
