//! Ridge-orientation fields of synthetic fingers.
//!
//! Loops, whorls and tented arches use the zero-pole model of Sherlock and
//! Monro ("A model for interpreting fingerprint topology", Pattern
//! Recognition 26(7), 1993): with cores `c_i` and deltas `d_j` as points of
//! the complex plane,
//! `O(z) = O_∞ + ½ (Σ arg(z − c_i) − Σ arg(z − d_j))  (mod π)`.
//! Plain arches, which have no singular points, follow ridges shaped like
//! `y = y0 + h·exp(−x²/2s²)`. A small low-frequency wobble is added so that
//! no two fingers of a class share one field.
//!
//! Coordinates are pixels relative to the finger centre with `y` down; the
//! orientation is the crate's angle convention (counter-clockwise as seen on
//! the image), so the maths is done in a frame with `y` up.

use rand::Rng;
use std::f32::consts::PI;

/// Henry pattern classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternClass {
    /// Plain arch: no singular points.
    Arch,
    /// Tented arch: a core above a delta.
    TentedArch,
    /// Left loop: one core, one delta to its right.
    LeftLoop,
    /// Right loop: one core, one delta to its left.
    RightLoop,
    /// Whorl: two cores, two deltas.
    Whorl,
}

impl PatternClass {
    /// Index in [`super::SynthParams::class_frequencies`].
    pub const ALL: [PatternClass; 5] = [
        PatternClass::Arch,
        PatternClass::TentedArch,
        PatternClass::LeftLoop,
        PatternClass::RightLoop,
        PatternClass::Whorl,
    ];
}

/// One finger's orientation field.
#[derive(Debug, Clone)]
pub struct OrientationField {
    class: PatternClass,
    /// Cores and deltas in the y-up frame.
    cores: Vec<(f32, f32)>,
    deltas: Vec<(f32, f32)>,
    /// Arch bump height and width.
    arch: (f32, f32),
    /// Low-frequency wobble: (amplitude rad, kx, ky, phase) twice.
    wobble: [(f32, f32, f32, f32); 2],
}

impl OrientationField {
    /// Draws a field of class `class`.
    pub fn random(class: PatternClass, rng: &mut impl Rng) -> OrientationField {
        let mut cores = Vec::new();
        let mut deltas = Vec::new();
        // Positions in the y-up frame: positive y is towards the finger tip.
        let core = (rng.random_range(-25.0..25.0), rng.random_range(-10.0..50.0));
        match class {
            PatternClass::Arch => {}
            PatternClass::TentedArch => {
                cores.push(core);
                deltas.push((core.0 + rng.random_range(-10.0..10.0), core.1 - rng.random_range(50.0..90.0)));
            }
            PatternClass::LeftLoop | PatternClass::RightLoop => {
                let side = if class == PatternClass::LeftLoop { 1.0 } else { -1.0 };
                cores.push(core);
                deltas.push((core.0 + side * rng.random_range(60.0..110.0), core.1 - rng.random_range(70.0..130.0)));
            }
            PatternClass::Whorl => {
                let gap = rng.random_range(10.0..35.0);
                cores.push((core.0, core.1 + gap / 2.0));
                cores.push((core.0 + rng.random_range(-8.0..8.0), core.1 - gap / 2.0));
                deltas.push((core.0 - rng.random_range(70.0..110.0), core.1 - rng.random_range(70.0..130.0)));
                deltas.push((core.0 + rng.random_range(70.0..110.0), core.1 - rng.random_range(70.0..130.0)));
            }
        }
        let mut wobble = [(0.0, 0.0, 0.0, 0.0); 2];
        for w in &mut wobble {
            *w = (
                rng.random_range(0.0..0.12),
                rng.random_range(-0.02..0.02),
                rng.random_range(-0.02..0.02),
                rng.random_range(0.0..2.0 * PI),
            );
        }
        OrientationField {
            class,
            cores,
            deltas,
            arch: (rng.random_range(30.0..90.0), rng.random_range(60.0..110.0)),
            wobble,
        }
    }

    /// The pattern class.
    pub fn class(&self) -> PatternClass {
        self.class
    }

    /// Ridge orientation in radians, `[0, π)`, at image-frame point `(x, y)`
    /// relative to the finger centre, of the pattern stretched vertically by
    /// `elongation` (the field is evaluated at `y / k` and its direction
    /// vector scaled by `k` along y).
    pub fn at_elongated(&self, x: f32, y: f32, elongation: f32) -> f32 {
        let k = elongation.max(0.1);
        let o = self.at(x, y / k);
        (k * o.sin()).atan2(o.cos()).rem_euclid(PI)
    }

    /// Ridge orientation in radians, `[0, π)`, at image-frame point `(x, y)`
    /// relative to the finger centre.
    pub fn at(&self, x: f32, y: f32) -> f32 {
        let (x, y) = (x, -y); // to the y-up frame
        let mut o = match self.class {
            PatternClass::Arch => {
                let (h, s) = self.arch;
                // Bumps grow towards the finger tip (y up).
                let hh = h * (0.5 + 0.5 * ((y + 200.0) / 400.0).clamp(0.0, 1.0));
                let slope = -hh * x / (s * s) * (-x * x / (2.0 * s * s)).exp();
                slope.atan()
            }
            _ => {
                let arg = |(px, py): (f32, f32)| (y - py).atan2(x - px);
                let c: f32 = self.cores.iter().copied().map(arg).sum();
                let d: f32 = self.deltas.iter().copied().map(arg).sum();
                0.5 * (c - d)
            }
        };
        for &(a, kx, ky, ph) in &self.wobble {
            o += a * (kx * x + ky * y + ph).sin();
        }
        o.rem_euclid(PI)
    }
}
