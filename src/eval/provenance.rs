//! What data each fitted or tuned part of whorl saw, for every report to
//! state. Keep these true whenever a model in `assets/` or a default is
//! refitted (`assets/README.md` records the commands).

/// The cylinder matcher's parameters.
pub const MATCHER: &str = "The matcher (`MccParams::default()`): the parameters of Cappelli et al. 2010 (Table 1), \
unchanged, plus the distortion tolerance of LSS-R's distance term (`rho_stretch`), chosen on the calibration part \
(FVC2002 DB1_B + DB2_B) and on synthetic impressions; FVC2002 DB3_B + DB4_B were not used to choose anything.";

/// The synthetic generator's calibration.
pub const GENERATOR: &str = "The synthetic generator (`SynthParams::default()`, `assets/synth-params-v2.json`): \
template statistics set by hand and capture noise searched (`whorl synth-calibrate --search`) against the \
calibration part only (FVC2002 DB1_B + DB2_B).";

/// The embedding model.
pub const EMBEDDING: &str = "The embedding model (`assets/embed-mph-v2.bin`): learned by `whorl embed-train` from \
synthetic templates of that generator only (no real template).";

/// The impostor model.
pub const IMPOSTOR: &str = "The impostor models (`assets/impostor-mcc-v3.json` for the matcher's score, \
`assets/impostor-verified-v1.json` for the verified score that decides on the strongest candidates): their curves \
fitted by `whorl calibrate-impostors [--score verified]` on synthetic impostor comparisons of that generator; one \
factor on their FMR measured on the real impostor comparisons of the calibration part (FVC2002 DB1_B + DB2_B); \
checked, not fitted, against the held-out part's.";

/// All four, as a markdown list.
pub fn all() -> String {
    [MATCHER, GENERATOR, EMBEDDING, IMPOSTOR].iter().map(|s| format!("* {s}\n")).collect()
}
