//! The Γ stage with AVX-512 popcounts (VPOPCNTDQ), for x86-64 CPUs that
//! have them (Intel Ice Lake server and later, AMD Zen 4 and later).
//!
//! It computes exactly the integers of [`super::gamma::gamma_portable`]: a
//! cylinder is 28 words, the mask as one 256-bit vector and the six layers as
//! three 512-bit vectors; the layer-count planes as one 512-bit vector (1s,
//! 2s) and one 256-bit vector (4s).
//!
//! This module holds, with `index/kernels.rs`, the crate's only `unsafe`
//! outside the shard reader:
//! calling a `#[target_feature]` function, which is sound only on a CPU with
//! those features. [`gamma_stage`] checks them once (cached) and otherwise
//! runs the portable stage.

#![allow(unsafe_code)]

use super::gamma::{Cyl, CylParts, GammaScratch, Planes, gamma_from, gamma_portable, gamma_stage as stage};
use super::lut::Luts;
use super::prepared::PreparedRef;
use std::arch::x86_64::*;
use std::sync::OnceLock;

/// Whether this CPU runs the AVX-512 kernel (checked once).
pub fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vpopcntdq")
            && std::env::var_os("WHORL_NO_AVX512").is_none()
    })
}

/// Runs the Γ stage with the fastest kernel this CPU has.
pub fn gamma_stage(l: &Luts, a: PreparedRef, b: PreparedRef, s: &mut GammaScratch) {
    if available() {
        // SAFETY: `available()` verified at run time that the CPU supports
        // avx512f, avx512vl and avx512vpopcntdq, the features
        // `gamma_stage_avx512` is compiled for.
        unsafe { gamma_stage_avx512(l, a, b, s) }
    } else {
        stage(l, a, b, s, |ca, pa, cb, pb| gamma_portable(l, ca, pa, cb, pb));
    }
}

#[target_feature(enable = "avx512f,avx512vl,avx512vpopcntdq")]
fn gamma_stage_avx512(l: &Luts, a: PreparedRef, b: PreparedRef, s: &mut GammaScratch) {
    stage(l, a, b, s, |ca, pa, cb, pb| gamma_avx512(l, ca, pa, cb, pb));
}

/// Horizontal sum of the four u64 lanes.
#[target_feature(enable = "avx512f,avx512vl,avx512vpopcntdq")]
#[inline]
fn sum256(v: __m256i) -> u32 {
    let lanes: [u64; 4] = bytemuck::cast(v);
    (lanes[0] + lanes[1] + lanes[2] + lanes[3]) as u32
}

/// γ of two cylinders, as [`gamma_portable`].
#[target_feature(enable = "avx512f,avx512vl,avx512vpopcntdq")]
#[inline]
pub fn gamma_avx512(l: &Luts, a: &Cyl, pa: &Planes, b: &Cyl, pb: &Planes) -> u32 {
    let (a, b): (&CylParts, &CylParts) = (bytemuck::cast_ref(a), bytemuck::cast_ref(b));
    let ma: __m256i = bytemuck::cast(a.mask);
    let mb: __m256i = bytemuck::cast(b.mask);
    let both = sum256(_mm256_popcnt_epi64(_mm256_and_si256(ma, mb)));
    if both < l.min_me_cells {
        return 0;
    }
    // |c_a ∧ c_b| over the 24 layer words.
    let mut ab = _mm512_setzero_si512();
    for k in 0..3 {
        let (x, y): (__m512i, __m512i) = (bytemuck::cast(a.layers[k]), bytemuck::cast(b.layers[k]));
        ab = _mm512_add_epi64(ab, _mm512_popcnt_epi64(_mm512_and_si512(x, y)));
    }
    let ab = _mm512_reduce_add_epi64(ab) as u32;
    let ca = planes_count(pa, mb);
    let cb = planes_count(pb, ma);
    gamma_from(l, both, ca, cb, ca + cb - 2 * ab)
}

/// `|P0 ∧ m| + 2|P1 ∧ m| + 4|P2 ∧ m|`.
#[target_feature(enable = "avx512f,avx512vl,avx512vpopcntdq")]
#[inline]
fn planes_count(p: &Planes, m: __m256i) -> u32 {
    let p01: __m512i = bytemuck::cast(p.p01);
    let p2: __m256i = bytemuck::cast(p.p2);
    let m2 = _mm512_broadcast_i64x4(m);
    // Lanes 0-3 count 1s, lanes 4-7 count 2s: shift the latter left by 1.
    let c01 =
        _mm512_sllv_epi64(_mm512_popcnt_epi64(_mm512_and_si512(p01, m2)), _mm512_set_epi64(1, 1, 1, 1, 0, 0, 0, 0));
    let c2 = _mm256_slli_epi64::<2>(_mm256_popcnt_epi64(_mm256_and_si256(p2, m)));
    _mm512_reduce_add_epi64(c01) as u32 + sum256(c2)
}
