//! Every knob of the synthetic generator, with defaults that make its
//! templates look like the calibration part of the real FVC2002 templates
//! in `../shared/data` (DB1_B and DB2_B; compare with `whorl synth-stats`
//! and `whorl synth-calibrate`). The held-out part (DB3_B, DB4_B) was not
//! used. The defaults are frozen in `assets/synth-params-v2.json` with
//! their provenance; a test keeps the two equal.

use serde::{Deserialize, Serialize};

/// Parameters of fingers (masters) and their impressions.
///
/// Units: pixels at 500 dpi (197 px/cm), degrees for angles, probabilities
/// in `[0, 1]`. The finger and contact knobs were set by comparing the
/// statistics printed by `whorl synth-stats` with those of FVC2002 DB1_B +
/// DB2_B (`benches/reports/synth-realism.md`); the capture-noise knobs were
/// searched by `whorl synth-calibrate --search` against the match scores of
/// the same two databases (`benches/reports/synth-calibration/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthParams {
    // ---- the finger ----
    /// Half-width of the elliptical finger area holding the master minutiae.
    pub finger_half_width: f32,
    /// Half-height of the finger area.
    pub finger_half_height: f32,
    /// Mean density of master minutiae per 10,000 px².
    pub minutia_density: f32,
    /// Log-normal spread of the density between fingers (sigma of ln).
    pub density_spread: f32,
    /// Minimum distance between master minutiae.
    pub min_minutia_distance: f32,
    /// Probability that a master minutia is a ridge ending (else bifurcation).
    pub ending_fraction: f32,
    /// Probability that a minutia's direction is the one of its two ridge
    /// directions that points down the finger (real extractors show this bias).
    pub downward_bias: f32,
    /// Vertical elongation of the ridge pattern: fingertips are taller than
    /// wide, and the zero-pole model alone gives round, mostly horizontal flow.
    pub pattern_elongation: f32,
    /// Strength of a smooth per-finger field that makes neighbouring
    /// minutiae choose the same way along their ridges (real ones do).
    pub polarity_coherence: f32,
    /// Frequencies of the pattern classes: arch, tented arch, left loop,
    /// right loop, whorl (normalised when drawn).
    pub class_frequencies: [f32; 5],

    // ---- the capture ----
    /// Image width written into templates (advisory, like real headers).
    pub image_width: u16,
    /// Image height written into templates.
    pub image_height: u16,
    /// Half-width of the elliptical contact region of one impression.
    pub contact_half_width: f32,
    /// Half-height of the contact region.
    pub contact_half_height: f32,
    /// Relative spread of the contact region size between impressions.
    pub contact_size_spread: f32,
    /// Standard deviation of where the contact region sits on the finger.
    pub placement_sd: f32,
    /// Standard deviation of the rotation of an impression, degrees.
    pub rotation_sd: f32,
    /// Largest rotation, degrees.
    pub rotation_max: f32,
    /// Standard deviation of the translation in the image.
    pub translation_sd: f32,
    /// Standard deviation of the elastic displacement amplitude.
    pub distortion_sd: f32,
    /// Length scale of the elastic displacement field.
    pub distortion_scale: f32,
    /// Standard deviation of position jitter per minutia.
    pub position_jitter: f32,
    /// Standard deviation of angle jitter per minutia, degrees.
    pub angle_jitter: f32,
    /// Probability that a captured minutia is missed by the extractor.
    pub missing_rate: f32,
    /// Spurious minutiae added, as a fraction of the captured ones (Poisson mean).
    pub spurious_rate: f32,
    /// Probability that an ending is reported as a bifurcation or vice versa.
    pub kind_flip_rate: f32,
    /// Spread (sigma of ln) of a per-impression capture-quality factor that
    /// scales jitter, distortion and the missing rate: some captures are
    /// clean, some poor, as in real galleries.
    pub noise_spread: f32,
    /// Minutia quality range reported (FVC2002's extractor reports 0).
    pub quality_range: (u8, u8),
}

impl Default for SynthParams {
    fn default() -> SynthParams {
        SynthParams {
            finger_half_width: 150.0,
            finger_half_height: 210.0,
            minutia_density: 7.0,
            density_spread: 0.18,
            min_minutia_distance: 6.0,
            ending_fraction: 0.70,
            downward_bias: 0.8,
            pattern_elongation: 1.5,
            polarity_coherence: 0.3,
            class_frequencies: [0.037, 0.029, 0.338, 0.317, 0.279],
            image_width: 300,
            image_height: 400,
            contact_half_width: 107.0,
            contact_half_height: 162.0,
            contact_size_spread: 0.16,
            placement_sd: 20.0,
            rotation_sd: 10.0,
            rotation_max: 35.0,
            translation_sd: 15.0,
            distortion_sd: 3.45,
            distortion_scale: 57.2,
            position_jitter: 0.98,
            angle_jitter: 3.22,
            missing_rate: 0.14,
            spurious_rate: 0.15,
            kind_flip_rate: 0.12,
            noise_spread: 0.5,
            quality_range: (0, 0),
        }
    }
}

/// The frozen calibration (`assets/synth-params-v2.json`): the defaults
/// with the data and commands they came from.
pub const FROZEN: &str = include_str!("../../assets/synth-params-v2.json");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_frozen_calibration() {
        let v: serde_json::Value = serde_json::from_str(FROZEN).unwrap();
        let frozen: SynthParams = serde_json::from_value(v["params"].clone()).unwrap();
        assert_eq!(frozen, SynthParams::default(), "update assets/synth-params-v2.json with the defaults, or back");
        assert!(v["data"].as_str().unwrap().contains("DB1_B + DB2_B only"));
    }
}
