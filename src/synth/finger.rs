//! Master fingers: minutiae sets over a whole finger, following a ridge
//! orientation field.

use super::orientation::{OrientationField, PatternClass};
use super::{SynthParams, gauss, rng_for};
use crate::template::{Minutia, MinutiaKind};
use rand::Rng;
use rand_distr::{Distribution, Poisson};
use std::f32::consts::PI;

/// A synthetic finger: the minutiae every impression of it is drawn from,
/// in pixels relative to the finger centre (y down).
#[derive(Debug, Clone)]
pub struct Finger {
    /// The finger's id (its index in the generated population).
    pub id: u64,
    /// Its ridge-orientation field.
    pub field: OrientationField,
    /// Master minutiae, finger frame.
    pub minutiae: Vec<Minutia>,
    /// Which way along their ridges minutiae tend to point.
    pub polarity: Polarity,
}

impl Finger {
    /// The pattern class of the finger.
    pub fn class(&self) -> PatternClass {
        self.field.class()
    }
}

/// Picks a pattern class by the configured frequencies.
fn draw_class(p: &SynthParams, rng: &mut impl Rng) -> PatternClass {
    let total: f32 = p.class_frequencies.iter().map(|f| f.max(0.0)).sum();
    let mut u = rng.random::<f32>() * total.max(f32::MIN_POSITIVE);
    for (class, f) in PatternClass::ALL.iter().zip(p.class_frequencies) {
        u -= f.max(0.0);
        if u <= 0.0 {
            return *class;
        }
    }
    PatternClass::Whorl
}

/// A smooth field in `[-1, 1]` over the finger (two plane waves of 200-400 px
/// wavelength) that biases which way along its ridge a minutia points, so
/// that neighbours agree as they do in real prints.
#[derive(Debug, Clone)]
pub struct Polarity {
    waves: [(f32, f32, f32); 2],
    strength: f32,
}

impl Polarity {
    fn random(strength: f32, rng: &mut impl Rng) -> Polarity {
        let mut waves = [(0.0, 0.0, 0.0); 2];
        for w in &mut waves {
            let (dir, len) = (rng.random_range(0.0..PI), rng.random_range(200.0..400.0));
            let k = 2.0 * PI / len;
            *w = (k * dir.cos(), k * dir.sin(), rng.random_range(0.0..2.0 * PI));
        }
        Polarity { waves, strength }
    }

    fn at(&self, x: f32, y: f32) -> f32 {
        self.strength * self.waves.iter().map(|&(kx, ky, ph)| (kx * x + ky * y + ph).sin()).sum::<f32>() / 2.0
    }
}

/// Direction of a minutia at `(x, y)` on a ridge of orientation `o`
/// (`[0, π)`): one of the two ways along the ridge, preferring the one
/// pointing down the finger with probability growing with how vertical the
/// ridge is, shifted by the finger's polarity field.
pub(super) fn direction(o: f32, bias: f32, polarity: &Polarity, x: f32, y: f32, rng: &mut impl Rng) -> f32 {
    // With y down and counter-clockwise angles, `o + π` points down when sin(o) > 0.
    let p_down = (0.5 + (bias - 0.5) * o.sin().abs() + polarity.at(x, y)).clamp(0.02, 0.98);
    if rng.random::<f32>() < p_down { o + PI } else { o }
}

/// Generates finger `id` of the population seeded by `seed`.
pub fn generate(p: &SynthParams, seed: u64, id: u64) -> Finger {
    let mut rng = rng_for(seed, id, u32::MAX);
    let class = draw_class(p, &mut rng);
    let field = OrientationField::random(class, &mut rng);
    let polarity = Polarity::random(p.polarity_coherence, &mut rng);
    let density = p.minutia_density / 10_000.0 * gauss(&mut rng, p.density_spread).exp();
    let (a, b) = (p.finger_half_width.max(1.0), p.finger_half_height.max(1.0));
    let mean = f64::from((density * PI * a * b).max(1.0));
    let n = Poisson::new(mean).map(|d| d.sample(&mut rng) as usize).unwrap_or(0);
    let min_d2 = p.min_minutia_distance * p.min_minutia_distance;
    let mut pts: Vec<(f32, f32)> = Vec::with_capacity(n);
    let mut attempts = 0;
    while pts.len() < n && attempts < 40 * n + 100 {
        attempts += 1;
        let (x, y) = (rng.random_range(-a..a), rng.random_range(-b..b));
        if (x / a).powi(2) + (y / b).powi(2) > 1.0 {
            continue;
        }
        if pts.iter().all(|&(u, v)| (u - x).powi(2) + (v - y).powi(2) >= min_d2) {
            pts.push((x, y));
        }
    }
    let minutiae = pts
        .into_iter()
        .map(|(x, y)| {
            let o = field.at_elongated(x, y, p.pattern_elongation);
            let angle = direction(o, p.downward_bias, &polarity, x, y, &mut rng);
            let kind =
                if rng.random::<f32>() < p.ending_fraction { MinutiaKind::Ending } else { MinutiaKind::Bifurcation };
            Minutia::new(x, y, angle, kind, 0)
        })
        .collect();
    Finger { id, field, minutiae, polarity }
}
