//! The synthetic gallery: seeded, deterministic fingers and impressions at
//! national scale, since nobody has millions of real templates to hand.
//!
//! * A **finger** ([`finger`]) is a set of master minutiae with realistic
//!   density and spacing whose directions follow a ridge-orientation field
//!   of a Henry class ([`orientation`]).
//! * An **impression** ([`impression`]) of a finger is what one capture and
//!   extraction yields: partial contact, elastic distortion, rotation,
//!   translation, jitter, missed and spurious minutiae, kind flips.
//!
//! Every random draw comes from a ChaCha8 stream seeded by
//! `(seed, finger, impression)`, so any template can be regenerated alone
//! and parallel generation gives the same bytes in any order. All knobs are
//! in [`SynthParams`].

pub mod calibrate;
pub mod finger;
pub mod impression;
pub mod orientation;
pub mod pack;
mod params;
pub mod stats;

pub use finger::Finger;
pub use params::{FROZEN, SynthParams};

use crate::template::Template;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// SplitMix64 finaliser: spreads seeds so nearby ids give unrelated streams.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random stream of `(seed, finger, impression)`; `impression == u32::MAX`
/// is the finger's own stream.
pub(crate) fn rng_for(seed: u64, finger: u64, impression: u32) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(mix(seed ^ mix(finger)) ^ u64::from(impression)))
}

/// A normal draw with standard deviation `sd` (0 or less gives 0).
pub(crate) fn gauss(rng: &mut impl Rng, sd: f32) -> f32 {
    if sd > 0.0 && sd.is_finite() {
        let z: f32 = rng.sample(rand_distr::StandardNormal);
        z * sd
    } else {
        0.0
    }
}

/// One generated template with its ground truth.
#[derive(Debug, Clone)]
pub struct SynthRecord {
    /// Finger id: impressions of one finger share it.
    pub finger: u64,
    /// Impression number, from 0.
    pub impression: u32,
    /// The template.
    pub template: Template,
}

/// A seeded population of synthetic fingers.
#[derive(Debug, Clone)]
pub struct Synth {
    params: SynthParams,
    seed: u64,
}

impl Synth {
    /// A population with these parameters and seed.
    pub fn new(params: SynthParams, seed: u64) -> Synth {
        Synth { params, seed }
    }

    /// The parameters.
    pub fn params(&self) -> &SynthParams {
        &self.params
    }

    /// Finger `id`.
    pub fn finger(&self, id: u64) -> Finger {
        finger::generate(&self.params, self.seed, id)
    }

    /// Impression `k` of an already generated finger.
    pub fn impression(&self, finger: &Finger, k: u32) -> Template {
        impression::generate(&self.params, self.seed, finger, k)
    }

    /// Impression `k` of finger `id`.
    pub fn template(&self, id: u64, k: u32) -> Template {
        self.impression(&self.finger(id), k)
    }

    /// Impressions `impressions` of each finger in `fingers`, in parallel,
    /// in (finger, impression) order.
    pub fn batch(&self, fingers: std::ops::Range<u64>, impressions: std::ops::Range<u32>) -> Vec<SynthRecord> {
        fingers
            .into_par_iter()
            .flat_map_iter(|id| {
                let f = self.finger(id);
                impressions.clone().map(move |k| SynthRecord {
                    finger: id,
                    impression: k,
                    template: self.impression(&f, k),
                })
            })
            .collect()
    }

    /// Streams `fingers × impressions` templates to `sink` in order, `chunk`
    /// fingers at a time generated in parallel, so memory stays bounded by
    /// one chunk whatever the total. Stops at the first error from `sink`.
    pub fn stream<E>(
        &self,
        fingers: std::ops::Range<u64>,
        impressions: std::ops::Range<u32>,
        chunk: u64,
        mut sink: impl FnMut(Vec<SynthRecord>) -> Result<(), E>,
    ) -> Result<(), E> {
        let chunk = chunk.max(1);
        let mut start = fingers.start;
        while start < fingers.end {
            let end = (start + chunk).min(fingers.end);
            sink(self.batch(start..end, impressions.clone()))?;
            start = end;
        }
        Ok(())
    }
}

/// A synthetic population of *subjects* (people) for galleries and probes:
/// finger `j` (0-9, finger position `j + 1`) of subject `s` is synthetic
/// finger `10·s + j`. A one-finger subject enrols finger `s mod 10`, so that
/// one-finger galleries spread over all ten positions.
#[derive(Debug, Clone)]
pub struct Subjects {
    /// The finger generator.
    pub synth: Synth,
    /// Fingers enrolled per subject (1-10).
    pub fingers: u32,
}

impl Subjects {
    /// `fingers` (clamped to 1-10) fingers per subject, from `synth`.
    pub fn new(synth: Synth, fingers: u32) -> Subjects {
        Subjects { synth, fingers: fingers.clamp(1, 10) }
    }

    /// The id of subject `s`, as galleries and probe file names carry it.
    pub fn id(s: u64) -> String {
        format!("S{s:09}")
    }

    /// Synthetic finger ids of subject `s`'s enrolled fingers.
    pub fn finger_ids(&self, s: u64) -> Vec<u64> {
        if self.fingers == 1 {
            vec![10 * s + s % 10]
        } else {
            (0..u64::from(self.fingers)).map(|j| 10 * s + j).collect()
        }
    }

    /// Impression `k` of each of subject `s`'s enrolled fingers (0 is the
    /// enrolled one, higher ones are probes).
    pub fn templates(&self, s: u64, k: u32) -> Vec<Template> {
        self.finger_ids(s).into_iter().map(|id| self.synth.template(id, k)).collect()
    }
}
