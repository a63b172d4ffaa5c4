//! Inner-product kernels of the candidate index, chosen once at run time.
//!
//! Three row types, one query type each:
//!
//! | rows | query | kernel |
//! |---|---|---|
//! | f32 | f32 | fused multiply-add |
//! | f16 (IEEE binary16 bits) | f32 | rows widened to f32 (F16C), fused multiply-add |
//! | i8 | i16 | rows sign-extended to i16, `madd` pairs into i32 |
//!
//! The i8 kernel is asymmetric on purpose: the query keeps 15 bits of
//! precision, so quantisation error comes from the stored rows alone.
//! Every 16-lane i32 accumulator adds at most `dim / 16` pair sums of
//! `2 · 32767 · 127`, which stays below 2^31 up to `dim` = 4128; longer
//! queries are quantised to fewer bits (see `vectors.rs`).
//!
//! [`kernels`] returns a table of function pointers picked by CPU features
//! (AVX-512F+BW, else AVX2+FMA+F16C, else portable Rust); `WHORL_SIMD=portable`
//! or `avx2` forces a lower tier (tests compare every tier with the portable
//! one). Slices of unequal length are compared over the shorter length.
//!
//! This module holds the index's only `unsafe`: calls of `#[target_feature]`
//! functions, each made reachable only through a table built after the CPU
//! check, and the loads inside them, each from a chunk whose length was
//! checked by `chunks_exact`.

#![allow(unsafe_code)]

use std::sync::OnceLock;

/// The kernels this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Plain Rust (the compiler may still vectorise it).
    Portable,
    /// AVX2, FMA and F16C.
    Avx2,
    /// AVX-512 F and BW.
    Avx512,
}

/// Inner-product kernels of one tier.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    /// The tier.
    pub tier: Tier,
    /// f32 · f32.
    pub f32: fn(&[f32], &[f32]) -> f32,
    /// f32 query · f16 row (raw binary16 bits).
    pub f16: fn(&[f32], &[u16]) -> f32,
    /// i16 query · i8 row, exact in i32.
    pub i8: fn(&[i16], &[i8]) -> i32,
}

const PORTABLE: Kernels =
    Kernels { tier: Tier::Portable, f32: dot_f32_portable, f16: dot_f16_portable, i8: dot_i8_portable };

/// The fastest kernels this CPU runs (detected once), unless `WHORL_SIMD`
/// asks for a lower tier.
pub fn kernels() -> &'static Kernels {
    static K: OnceLock<Kernels> = OnceLock::new();
    K.get_or_init(|| {
        let cap = std::env::var("WHORL_SIMD").unwrap_or_default();
        for tier in [Tier::Avx512, Tier::Avx2] {
            let allowed = match cap.as_str() {
                "portable" => false,
                "avx2" => tier == Tier::Avx2,
                _ => true,
            };
            if let Some(k) = tier_kernels(tier).filter(|_| allowed) {
                return k;
            }
        }
        PORTABLE
    })
}

/// The kernels of `tier`, if this CPU runs them.
pub fn tier_kernels(tier: Tier) -> Option<Kernels> {
    match tier {
        Tier::Portable => Some(PORTABLE),
        #[cfg(target_arch = "x86_64")]
        Tier::Avx2 => x86::avx2(),
        #[cfg(all(target_arch = "x86_64", whorl_avx512))]
        Tier::Avx512 => x86::avx512(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Asks the CPU to start loading every cache line of `data`.
#[inline(always)]
pub fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let p = data.as_ptr() as *const i8;
        let mut at = 0;
        while at < std::mem::size_of_val(data) {
            // SAFETY: prefetching is a hint: it never faults, whatever the
            // address, and SSE is part of every x86-64 CPU.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.wrapping_add(at)) };
            at += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

fn dot_f32_portable(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    crate::embed::dot(&a[..n], &b[..n])
}

fn dot_f16_portable(q: &[f32], row: &[u16]) -> f32 {
    let n = q.len().min(row.len());
    let (q, row) = (&q[..n], &row[..n]);
    let mut acc = [0f32; 8];
    let (cq, cr) = (q.chunks_exact(8), row.chunks_exact(8));
    let (rq, rr) = (cq.remainder(), cr.remainder());
    for (x, y) in cq.zip(cr) {
        for k in 0..8 {
            acc[k] += x[k] * half::f16::from_bits(y[k]).to_f32();
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in rq.iter().zip(rr) {
        s += x * half::f16::from_bits(*y).to_f32();
    }
    s
}

fn dot_i8_portable(q: &[i16], row: &[i8]) -> i32 {
    let n = q.len().min(row.len());
    let (q, row) = (&q[..n], &row[..n]);
    let mut acc = [0i32; 16];
    let (cq, cr) = (q.chunks_exact(16), row.chunks_exact(16));
    let (rq, rr) = (cq.remainder(), cr.remainder());
    for (x, y) in cq.zip(cr) {
        for k in 0..16 {
            acc[k] += i32::from(x[k]) * i32::from(y[k]);
        }
    }
    let mut s: i32 = acc.iter().sum();
    for (x, y) in rq.iter().zip(rr) {
        s += i32::from(*x) * i32::from(*y);
    }
    s
}

// AVX-512 intrinsics are stable from Rust 1.89; the `whorl_avx512` cfg
// (build.rs) compiles them only there, so the 1.88 MSRV still builds.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::incompatible_msrv)]
mod x86 {
    use super::{Kernels, Tier, dot_f16_portable, dot_f32_portable, dot_i8_portable};
    use std::arch::x86_64::*;

    pub(super) fn avx2() -> Option<Kernels> {
        let ok =
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
        ok.then_some(Kernels { tier: Tier::Avx2, f32: f32_avx2, f16: f16_avx2, i8: i8_avx2 })
    }

    // The safe wrappers below are reachable only through the table `avx2()`
    // returns after checking the CPU.
    fn f32_avx2(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: installed only after avx2, fma and f16c were detected.
        unsafe { f32_avx2_impl(a, b) }
    }
    fn f16_avx2(q: &[f32], r: &[u16]) -> f32 {
        // SAFETY: as above.
        unsafe { f16_avx2_impl(q, r) }
    }
    fn i8_avx2(q: &[i16], r: &[i8]) -> i32 {
        // SAFETY: as above.
        unsafe { i8_avx2_impl(q, r) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn hsum256(v: __m256) -> f32 {
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(_mm256_castps256_ps128(v), hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    fn f32_avx2_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for (x, y) in ca.zip(cb) {
            // SAFETY: x and y hold exactly 16 f32 each.
            unsafe {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr()), _mm256_loadu_ps(y.as_ptr()), s0);
                s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr().add(8)), _mm256_loadu_ps(y.as_ptr().add(8)), s1);
            }
        }
        hsum256(_mm256_add_ps(s0, s1)) + dot_f32_portable(ra, rb)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn f16_avx2_impl(q: &[f32], r: &[u16]) -> f32 {
        let n = q.len().min(r.len());
        let (q, r) = (&q[..n], &r[..n]);
        let (cq, cr) = (q.chunks_exact(8), r.chunks_exact(8));
        let (rq, rr) = (cq.remainder(), cr.remainder());
        let mut s = _mm256_setzero_ps();
        for (x, y) in cq.zip(cr) {
            // SAFETY: x holds 8 f32 and y 8 u16 (16 bytes).
            unsafe {
                let h = _mm_loadu_si128(y.as_ptr() as *const __m128i);
                s = _mm256_fmadd_ps(_mm256_loadu_ps(x.as_ptr()), _mm256_cvtph_ps(h), s);
            }
        }
        hsum256(s) + dot_f16_portable(rq, rr)
    }

    #[target_feature(enable = "avx2")]
    fn i8_avx2_impl(q: &[i16], r: &[i8]) -> i32 {
        let n = q.len().min(r.len());
        let (q, r) = (&q[..n], &r[..n]);
        let (cq, cr) = (q.chunks_exact(16), r.chunks_exact(16));
        let (rq, rr) = (cq.remainder(), cr.remainder());
        let mut s = _mm256_setzero_si256();
        for (x, y) in cq.zip(cr) {
            // SAFETY: x holds 16 i16 (32 bytes) and y 16 i8 (16 bytes).
            unsafe {
                let v = _mm256_cvtepi8_epi16(_mm_loadu_si128(y.as_ptr() as *const __m128i));
                let w = _mm256_loadu_si256(x.as_ptr() as *const __m256i);
                s = _mm256_add_epi32(s, _mm256_madd_epi16(w, v));
            }
        }
        let lanes: [i32; 8] = bytemuck::cast(s);
        lanes.iter().sum::<i32>() + dot_i8_portable(rq, rr)
    }

    #[cfg(whorl_avx512)]
    pub(super) fn avx512() -> Option<Kernels> {
        let ok = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && std::env::var_os("WHORL_NO_AVX512").is_none();
        ok.then_some(Kernels { tier: Tier::Avx512, f32: f32_avx512, f16: f16_avx512, i8: i8_avx512 })
    }

    #[cfg(whorl_avx512)]
    fn f32_avx512(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: installed only after avx512f and avx512bw were detected.
        unsafe { f32_avx512_impl(a, b) }
    }
    #[cfg(whorl_avx512)]
    fn f16_avx512(q: &[f32], r: &[u16]) -> f32 {
        // SAFETY: as above.
        unsafe { f16_avx512_impl(q, r) }
    }
    #[cfg(whorl_avx512)]
    fn i8_avx512(q: &[i16], r: &[i8]) -> i32 {
        // SAFETY: as above.
        unsafe { i8_avx512_impl(q, r) }
    }

    #[cfg(whorl_avx512)]
    #[target_feature(enable = "avx512f")]
    fn f32_avx512_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let (ca, cb) = (a.chunks_exact(32), b.chunks_exact(32));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for (x, y) in ca.zip(cb) {
            // SAFETY: x and y hold exactly 32 f32 each.
            unsafe {
                s0 = _mm512_fmadd_ps(_mm512_loadu_ps(x.as_ptr()), _mm512_loadu_ps(y.as_ptr()), s0);
                s1 = _mm512_fmadd_ps(_mm512_loadu_ps(x.as_ptr().add(16)), _mm512_loadu_ps(y.as_ptr().add(16)), s1);
            }
        }
        _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) + dot_f32_portable(ra, rb)
    }

    #[cfg(whorl_avx512)]
    #[target_feature(enable = "avx512f")]
    fn f16_avx512_impl(q: &[f32], r: &[u16]) -> f32 {
        let n = q.len().min(r.len());
        let (q, r) = (&q[..n], &r[..n]);
        let (cq, cr) = (q.chunks_exact(16), r.chunks_exact(16));
        let (rq, rr) = (cq.remainder(), cr.remainder());
        let mut s = _mm512_setzero_ps();
        for (x, y) in cq.zip(cr) {
            // SAFETY: x holds 16 f32 and y 16 u16 (32 bytes).
            unsafe {
                let h = _mm256_loadu_si256(y.as_ptr() as *const __m256i);
                s = _mm512_fmadd_ps(_mm512_loadu_ps(x.as_ptr()), _mm512_cvtph_ps(h), s);
            }
        }
        _mm512_reduce_add_ps(s) + dot_f16_portable(rq, rr)
    }

    #[cfg(whorl_avx512)]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn i8_avx512_impl(q: &[i16], r: &[i8]) -> i32 {
        let n = q.len().min(r.len());
        let (q, r) = (&q[..n], &r[..n]);
        let (cq, cr) = (q.chunks_exact(32), r.chunks_exact(32));
        let (rq, rr) = (cq.remainder(), cr.remainder());
        let mut s = _mm512_setzero_si512();
        for (x, y) in cq.zip(cr) {
            // SAFETY: x holds 32 i16 (64 bytes) and y 32 i8 (32 bytes).
            unsafe {
                let v = _mm512_cvtepi8_epi16(_mm256_loadu_si256(y.as_ptr() as *const __m256i));
                let w = _mm512_loadu_si512(x.as_ptr() as *const __m512i);
                s = _mm512_add_epi32(s, _mm512_madd_epi16(w, v));
            }
        }
        _mm512_reduce_add_epi32(s) + dot_i8_portable(rq, rr)
    }
}
