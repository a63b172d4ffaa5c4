//! The in-memory template: one finger view and its minutiae.
//!
//! # Conventions (every parser maps onto these)
//!
//! * **Coordinates** are in pixels of the capture, origin at the upper-left
//!   corner of the image, `x` growing to the right and `y` growing
//!   **downwards** (ISO/IEC 19794-2:2005 clause 7.4.1). They are `f32`
//!   because some formats (ANSI/NIST-ITL Type-9) store millimetres that map
//!   onto fractional pixels.
//! * **Angles** are radians in `[0, 2π)`, measured **counter-clockwise as
//!   seen on the image** from the horizontal axis pointing right (ISO
//!   19794-2:2005 clause 7.4.1). Because `y` grows downwards, the unit vector
//!   of a minutia with angle `θ` is `(cos θ, −sin θ)` in pixel coordinates.
//! * **Resolution** is pixels per centimetre (ISO/ANSI store exactly this;
//!   500 dpi ≈ 197 px/cm).
//!
//! How each format maps onto the convention is documented in its parser
//! module: ISO 2005/2011 angles are in units of 360/256 degrees, ANSI INCITS
//! 378 in units of 2 degrees, ANSI/NIST-ITL in degrees and 0.01 mm, NIST xyt
//! as mindtct writes it (origin bottom-left).

use serde::{Deserialize, Serialize};
use std::f32::consts::TAU;

/// 500 dots per inch expressed in pixels per centimetre, as the standards round it.
pub const DEFAULT_RESOLUTION_PPCM: u16 = 197;

/// The kind of a minutia (ISO 19794-2:2005 clause 7.4.2, two bits on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MinutiaKind {
    /// Type bits `00`: other / undetermined.
    #[default]
    Other,
    /// Type bits `01`: a ridge ending.
    Ending,
    /// Type bits `10`: a ridge bifurcation.
    Bifurcation,
}

impl MinutiaKind {
    /// The two-bit code used by ISO 19794-2 and ANSI INCITS 378.
    pub fn code(self) -> u8 {
        match self {
            MinutiaKind::Other => 0,
            MinutiaKind::Ending => 1,
            MinutiaKind::Bifurcation => 2,
        }
    }

    /// Decodes the two-bit code; `3` is reserved and read as [`MinutiaKind::Other`].
    pub fn from_code(code: u8) -> MinutiaKind {
        match code & 3 {
            1 => MinutiaKind::Ending,
            2 => MinutiaKind::Bifurcation,
            _ => MinutiaKind::Other,
        }
    }
}

/// One minutia, in the conventions of this module.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Minutia {
    /// Horizontal position in pixels, from the left edge.
    pub x: f32,
    /// Vertical position in pixels, from the top edge (grows downwards).
    pub y: f32,
    /// Direction in radians, `[0, 2π)`, counter-clockwise as seen on the image.
    pub angle: f32,
    /// Ending, bifurcation or other.
    pub kind: MinutiaKind,
    /// Quality 0-100 (0: not reported, as ISO 19794-2:2005 allows).
    pub quality: u8,
}

impl Minutia {
    /// A minutia with the angle wrapped into `[0, 2π)`.
    pub fn new(x: f32, y: f32, angle: f32, kind: MinutiaKind, quality: u8) -> Minutia {
        Minutia { x, y, angle: wrap_angle(angle), kind, quality }
    }
}

/// Wraps an angle in radians into `[0, 2π)`.
pub fn wrap_angle(a: f32) -> f32 {
    let w = a.rem_euclid(TAU);
    // rem_euclid can return TAU itself for tiny negative inputs.
    if w >= TAU { 0.0 } else { w }
}

/// Finger position code, ISO 19794-2:2005 Table 2 / ANSI/NIST-ITL Table 8
/// (0 unknown, 1 right thumb ... 5 right little, 6 left thumb ... 10 left little).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct FingerPosition(pub u8);

impl FingerPosition {
    /// Position unknown.
    pub const UNKNOWN: FingerPosition = FingerPosition(0);

    /// Whether the code is one of the ten fingers (1-10).
    pub fn is_known(self) -> bool {
        (1..=10).contains(&self.0)
    }

    /// A short English name ("right index", "unknown", "code 13").
    pub fn name(self) -> String {
        const NAMES: [&str; 11] = [
            "unknown",
            "right thumb",
            "right index",
            "right middle",
            "right ring",
            "right little",
            "left thumb",
            "left index",
            "left middle",
            "left ring",
            "left little",
        ];
        match NAMES.get(self.0 as usize) {
            Some(n) => (*n).to_string(),
            None => format!("code {}", self.0),
        }
    }
}

/// Impression type code, ISO 19794-2:2005 Table 3 (0 live-scan plain,
/// 1 live-scan rolled, 2 non-live plain, 3 non-live rolled, 4 latent,
/// 8 swipe, 9 contactless). Kept as the raw code so no value is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct ImpressionType(pub u8);

/// One finger view: the unit that is embedded, indexed and matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// Which finger.
    pub finger_position: FingerPosition,
    /// How it was captured.
    pub impression_type: ImpressionType,
    /// View number within the record for this finger (ISO: 0-15).
    #[serde(default)]
    pub view_number: u8,
    /// Horizontal resolution in pixels per centimetre.
    pub resolution_x: u16,
    /// Vertical resolution in pixels per centimetre.
    pub resolution_y: u16,
    /// Image width in pixels. Advisory only: extractors get it wrong, so
    /// nothing is rejected or clipped on it.
    pub width: u16,
    /// Image height in pixels (advisory, like `width`).
    pub height: u16,
    /// Finger (view) quality 0-100.
    pub quality: u8,
    /// The minutiae, in record order.
    pub minutiae: Vec<Minutia>,
}

impl Default for Template {
    fn default() -> Template {
        Template {
            finger_position: FingerPosition::UNKNOWN,
            impression_type: ImpressionType(0),
            view_number: 0,
            resolution_x: DEFAULT_RESOLUTION_PPCM,
            resolution_y: DEFAULT_RESOLUTION_PPCM,
            width: 0,
            height: 0,
            quality: 0,
            minutiae: Vec::new(),
        }
    }
}

impl Template {
    /// Mean resolution in pixels per centimetre, never zero (a record that
    /// states 0 is read as 500 dpi, the standards' common default).
    pub fn resolution_ppcm(&self) -> f32 {
        let r = (f32::from(self.resolution_x) + f32::from(self.resolution_y)) / 2.0;
        if r > 0.0 { r } else { f32::from(DEFAULT_RESOLUTION_PPCM) }
    }

    /// Scale factor from this template's pixels to 500-dpi pixels, the unit in
    /// which matcher parameters are given (R = 70 px at 500 dpi, ...).
    pub fn scale_to_500dpi(&self) -> f32 {
        f32::from(DEFAULT_RESOLUTION_PPCM) / self.resolution_ppcm()
    }
}
