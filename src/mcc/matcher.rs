//! Matching two prepared templates: the Γ stage ([`super::gamma`]) then
//! LSS-R ([`super::lssr`]), both in integer arithmetic so that the GPU
//! computes the same score bit for bit. The hot path allocates nothing:
//! [`Scratch`] is owned by the caller.

use super::consensus::{self, Consensus, ConsensusScratch, Verified};
use super::gamma::{self, GammaScratch, PairCounts};
use super::lssr::{LssrScratch, lssr};
use super::lut::{Luts, Q16, angle_diff};
use super::params::MccParams;
use super::prepared::{Prepared, PreparedRef};
use crate::template::Template;
use rayon::prelude::*;

/// Reusable buffers for one thread's matches.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    gamma: GammaScratch,
    lssr: LssrScratch,
    consensus: ConsensusScratch,
}

impl Scratch {
    /// Empty buffers; they grow to the largest match seen and stay.
    pub fn new() -> Scratch {
        Scratch::default()
    }
}

/// The integer result of a match: `score = sum / (n_p · 2^16)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScoreParts {
    /// Σ of the selected relaxed similarities, Q16.
    pub sum: u32,
    /// n_P (0 when either template has no cylinder).
    pub n_p: u32,
    /// n_R, the number of pairs relaxed.
    pub n_r: u32,
}

impl ScoreParts {
    /// The score in [0, 1].
    pub fn score(&self) -> f32 {
        if self.n_p == 0 { 0.0 } else { (f64::from(self.sum) / (f64::from(self.n_p) * f64::from(Q16))) as f32 }
    }
}

/// Which implementation of the Γ stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable u64 popcounts.
    Portable,
    /// AVX-512 VPOPCNTDQ (chosen automatically where the CPU has it).
    Avx512,
}

/// The cylinder matcher: parameters and their lookup tables.
#[derive(Debug, Clone)]
pub struct Matcher {
    params: MccParams,
    luts: Luts,
    kernel: Kernel,
}

impl Default for Matcher {
    fn default() -> Matcher {
        Matcher::new(MccParams::default())
    }
}

impl Matcher {
    /// A matcher for `params`, using the fastest kernel this CPU runs.
    pub fn new(params: MccParams) -> Matcher {
        let luts = Luts::new(&params);
        Matcher { params, luts, kernel: Self::best_kernel() }
    }

    fn best_kernel() -> Kernel {
        #[cfg(all(target_arch = "x86_64", whorl_avx512))]
        if super::kernel_x86::available() {
            return Kernel::Avx512;
        }
        Kernel::Portable
    }

    /// The same matcher with the portable kernel (for tests and comparisons).
    pub fn portable(mut self) -> Matcher {
        self.kernel = Kernel::Portable;
        self
    }

    /// The kernel in use.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The parameters.
    pub fn params(&self) -> &MccParams {
        &self.params
    }

    /// The lookup tables (uploaded to the GPU as they are).
    pub fn luts(&self) -> &Luts {
        &self.luts
    }

    /// Builds the cylinders of a template.
    pub fn prepare(&self, t: &Template) -> Prepared {
        super::cylinder::prepare(t, &self.params)
    }

    /// Builds the cylinders of a template, stopping (between minutiae) when
    /// `cancel` says so: the work is quadratic in the minutiae.
    pub fn prepare_until(&self, t: &Template, cancel: &crate::cancel::Cancel) -> Result<Prepared, crate::cancel::Stop> {
        super::cylinder::prepare_checked(t, &self.params, &mut || cancel.check())
    }

    /// Popcounts of cylinder `i` of `a` and `j` of `b` (no matchability test).
    pub fn pair_counts(a: PreparedRef, i: usize, b: PreparedRef, j: usize) -> PairCounts {
        gamma::pair_counts(a.cylinder(i), b.cylinder(j))
    }

    /// γ in Q16 of cylinder `i` of `a` and `j` of `b` (0 when not matchable),
    /// from the plain definition.
    pub fn similarity(&self, a: PreparedRef, i: usize, b: PreparedRef, j: usize) -> u32 {
        if angle_diff(a.angle(i), b.angle(j)) > self.luts.delta_theta {
            return 0;
        }
        let c = Self::pair_counts(a, i, b, j);
        gamma::gamma_from(&self.luts, c.both, c.a, c.b, c.xor)
    }

    /// The similarity score of two prepared templates, in [0, 1].
    pub fn score(&self, a: PreparedRef, b: PreparedRef, s: &mut Scratch) -> f32 {
        self.score_parts(a, b, s).score()
    }

    /// The integer parts of the score (what the GPU must reproduce exactly).
    pub fn score_parts(&self, a: PreparedRef, b: PreparedRef, s: &mut Scratch) -> ScoreParts {
        if a.is_empty() || b.is_empty() {
            return ScoreParts::default();
        }
        let n_p = self.luts.np[a.len().min(b.len()).min(255)];
        self.gamma_stage(a, b, &mut s.gamma);
        let (sum, n_r) = lssr(&self.luts, a, b, &mut s.gamma.keys, n_p, &mut s.lssr);
        ScoreParts { sum, n_p, n_r }
    }

    /// The matcher's integers and the second, geometric pass
    /// ([`consensus`]): what decisions on the top candidates rest on.
    pub fn verify_parts(&self, a: PreparedRef, b: PreparedRef, s: &mut Scratch) -> Verified {
        let parts = self.score_parts(a, b, s);
        if parts.n_p == 0 {
            return Verified::default();
        }
        // LSS-R reordered the keys but kept every one of them.
        let accepted = consensus::accepted(&self.luts, a, b, &mut s.gamma.keys, &mut s.consensus);
        Verified { parts, consensus: Consensus { accepted, n_a: a.len() as u32, n_b: b.len() as u32 } }
    }

    /// The Γ stage as the matcher runs it (its kernel, the direction
    /// window walk): the keys `γ << 32 | !(i·n_B + j)` of every pair with
    /// γ > 0, in no particular order. For tests against the plain definition.
    pub fn gamma_keys<'s>(&self, a: PreparedRef, b: PreparedRef, s: &'s mut Scratch) -> &'s [u64] {
        s.gamma.keys.clear();
        if !a.is_empty() && !b.is_empty() {
            self.gamma_stage(a, b, &mut s.gamma);
        }
        &s.gamma.keys
    }

    fn gamma_stage(&self, a: PreparedRef, b: PreparedRef, s: &mut GammaScratch) {
        if self.kernel == Kernel::Avx512 {
            return self.gamma_stage_fast(a, b, s);
        }
        gamma::gamma_stage(&self.luts, a, b, s, |ca, pa, cb, pb| gamma::gamma_portable(&self.luts, ca, pa, cb, pb));
    }

    fn gamma_stage_fast(&self, a: PreparedRef, b: PreparedRef, s: &mut GammaScratch) {
        #[cfg(all(target_arch = "x86_64", whorl_avx512))]
        super::kernel_x86::gamma_stage(&self.luts, a, b, s);
        #[cfg(not(all(target_arch = "x86_64", whorl_avx512)))]
        gamma::gamma_stage(&self.luts, a, b, s, |ca, pa, cb, pb| gamma::gamma_portable(&self.luts, ca, pa, cb, pb));
    }

    /// Scores `probe` against every candidate, in parallel (rayon), each
    /// thread reusing one [`Scratch`].
    pub fn score_many(&self, probe: PreparedRef, candidates: &[PreparedRef]) -> Vec<f32> {
        candidates.par_iter().map_init(Scratch::new, |s, c| self.score(probe, *c, s)).collect()
    }
}
