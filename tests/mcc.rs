//! The cylinder matcher: properties, kernel equivalence, and accuracy on
//! the real FVC2002 templates.

mod common;

use std::f32::consts::PI;
use whorl::eval;
use whorl::mcc::{Kernel, Matcher, MccParams, Prepared, PreparedRef, Scratch};
use whorl::synth::{Synth, SynthParams};
use whorl::template::{Minutia, Template};

fn fvc_templates() -> Vec<(String, Template)> {
    let Some(root) = common::data_or_skip("mcc on fvc2002") else { return Vec::new() };
    let mut out = Vec::new();
    for db in ["DB1_B", "DB2_B", "DB3_B", "DB4_B"] {
        for p in common::fvc_files(&root, db) {
            let t = whorl::template::parse(&std::fs::read(&p).unwrap()).unwrap().remove(0);
            out.push((format!("{db}/{}", p.file_stem().unwrap().to_string_lossy()), t));
        }
    }
    out
}

/// Rotates a template by `angle` (radians, counter-clockwise on the image) about its centroid and shifts it.
fn transform(t: &Template, angle: f32, dx: f32, dy: f32) -> Template {
    let n = t.minutiae.len() as f32;
    let (cx, cy) = t.minutiae.iter().fold((0.0, 0.0), |a, m| (a.0 + m.x / n, a.1 + m.y / n));
    let (s, c) = angle.sin_cos();
    let minutiae = t
        .minutiae
        .iter()
        .map(|m| {
            // Counter-clockwise on the image with y down: (x, y) -> (x c + y s, -x s + y c).
            let (u, v) = (m.x - cx, m.y - cy);
            Minutia::new(cx + u * c + v * s + dx, cy - u * s + v * c + dy, m.angle + angle, m.kind, m.quality)
        })
        .collect();
    Template { minutiae, ..t.clone() }
}

#[test]
fn a_template_matches_itself_best() {
    let m = Matcher::default();
    let ts = fvc_templates();
    let mut s = Scratch::new();
    for (name, t) in ts.iter().step_by(7) {
        let p = m.prepare(t);
        let own = m.score(p.view(), p.view(), &mut s);
        assert!(own > 0.99, "{name}: self score {own}");
    }
}

#[test]
fn scores_are_nearly_symmetric_and_in_range() {
    let m = Matcher::default();
    let ts = fvc_templates();
    let prepared: Vec<Prepared> = ts.iter().take(80).map(|(_, t)| m.prepare(t)).collect();
    let mut s = Scratch::new();
    let mut worst = 0f32;
    for a in &prepared {
        for b in &prepared {
            let (x, y) = (m.score(a.view(), b.view(), &mut s), m.score(b.view(), a.view(), &mut s));
            assert!((0.0..=1.0).contains(&x), "{x}");
            worst = worst.max((x - y).abs());
        }
    }
    assert!(worst < 0.05, "largest asymmetry {worst}");
}

#[test]
fn rotated_and_translated_copies_still_match() {
    let m = Matcher::default();
    let mut s = Scratch::new();
    for (name, t) in fvc_templates().iter().step_by(11) {
        let p = m.prepare(t);
        // MCC does not match cylinders whose directions differ by more than
        // δ_θ = π/2: it is invariant to rotations well inside ±90°.
        for (angle, dx, dy) in
            [(0.0, 37.0, -21.0), (PI / 6.0, 10.0, 5.0), (-PI / 4.0, -40.0, 60.0), (PI / 3.0, 0.0, 0.0)]
        {
            let q = m.prepare(&transform(t, angle, dx, dy));
            let score = m.score(p.view(), q.view(), &mut s);
            assert!(score > 0.85, "{name} rotated {angle} shifted ({dx},{dy}): {score}");
        }
    }
}

#[test]
fn unrelated_templates_score_low() {
    let m = Matcher::default();
    let synth = Synth::new(SynthParams::default(), 77);
    let prepared: Vec<Prepared> = (0..60).map(|i| m.prepare(&synth.template(i, 0))).collect();
    let mut s = Scratch::new();
    let mut scores = Vec::new();
    for i in 0..prepared.len() {
        for j in i + 1..prepared.len() {
            scores.push(m.score(prepared[i].view(), prepared[j].view(), &mut s));
        }
    }
    let mean = scores.iter().sum::<f32>() / scores.len() as f32;
    let max = scores.iter().copied().fold(0.0, f32::max);
    assert!(mean < 0.15 && max < 0.5, "impostor mean {mean}, max {max}");
}

#[test]
fn poor_templates_give_zero_not_a_panic() {
    let m = Matcher::default();
    let mut s = Scratch::new();
    let one =
        Template { minutiae: vec![Minutia::new(100.0, 100.0, 1.0, Default::default(), 0)], ..Template::default() };
    let empty = Template::default();
    let good = m.prepare(&Synth::new(SynthParams::default(), 1).template(3, 0));
    for t in [&one, &empty] {
        let p = m.prepare(t);
        assert!(p.is_empty(), "a lone minutia has no valid cylinder");
        assert_eq!(m.score(p.view(), good.view(), &mut s), 0.0);
        assert_eq!(m.score(good.view(), p.view(), &mut s), 0.0);
    }
    // Stacked duplicates and collinear minutiae.
    let dup =
        Template { minutiae: vec![Minutia::new(50.0, 50.0, 0.5, Default::default(), 0); 40], ..Template::default() };
    let line = Template {
        minutiae: (0..30).map(|i| Minutia::new(10.0 + 5.0 * i as f32, 80.0, 0.0, Default::default(), 0)).collect(),
        ..Template::default()
    };
    for t in [&dup, &line] {
        let p = m.prepare(t);
        let x = m.score(p.view(), good.view(), &mut s);
        assert!((0.0..=1.0).contains(&x));
    }
}

/// The fast kernels compute the plain definition's integers exactly.
#[test]
fn kernels_agree_with_the_definition() {
    let fast = Matcher::default();
    let portable = Matcher::default().portable();
    if fast.kernel() == Kernel::Portable {
        eprintln!("note: this CPU has no AVX-512 VPOPCNTDQ; comparing the portable kernel with the definition only");
    }
    let mut templates: Vec<Template> = fvc_templates().into_iter().map(|(_, t)| t).collect();
    templates.extend(Synth::new(SynthParams::default(), 3).batch(0..40, 0..2).into_iter().map(|r| r.template));
    let prepared: Vec<Prepared> = templates.iter().map(|t| fast.prepare(t)).collect();
    let (mut s1, mut s2) = (Scratch::new(), Scratch::new());
    let mut pairs = 0;
    for (i, a) in prepared.iter().enumerate() {
        for b in prepared.iter().skip(i % 13).step_by(13) {
            let (x, y) =
                (fast.score_parts(a.view(), b.view(), &mut s1), portable.score_parts(a.view(), b.view(), &mut s2));
            assert_eq!(x, y, "template {i}");
            pairs += 1;
        }
    }
    assert!(pairs > 5000);
    // And cylinder by cylinder, γ from the Γ stage equals γ from the plain popcounts.
    let (a, b) = (prepared[0].view(), prepared[1].view());
    for i in 0..a.len() {
        for j in 0..b.len() {
            let plain = fast.similarity(a, i, b, j);
            let c = Matcher::pair_counts(a, i, b, j);
            assert!(c.xor <= c.a + c.b && c.both <= 208);
            assert!(plain <= 1 << 16);
        }
    }
}

#[test]
fn prepared_blobs_are_validated() {
    let m = Matcher::default();
    let p = m.prepare(&Synth::new(SynthParams::default(), 1).template(0, 0));
    assert!(!p.is_empty());
    let words = p.words().to_vec();
    assert!(Prepared::from_words(words.clone()).is_ok());
    assert!(PreparedRef::new(&words[..words.len() - 1]).is_err());
    let mut bad = words.clone();
    bad[0] = (bad[0] & !0xffff_0000) | (99 << 16);
    assert!(PreparedRef::new(&bad).is_err(), "unknown layout version");
    let mut bad = words;
    bad[0] = (bad[0] & !0xffff) | 999;
    assert!(PreparedRef::new(&bad).is_err(), "too many cylinders");
    assert!(PreparedRef::new(&[]).is_err());
}

/// The target: average EER at most 5% and FMR1000 under 15% on
/// FVC2002 DB1-DB4 (B sets), the FVC protocol.
#[test]
fn fvc2002_accuracy_meets_the_targets() {
    let dirs = whorl::data::fvc2002_dirs();
    if dirs.is_empty() {
        eprintln!("skipped: fvc2002 accuracy: ../shared/data not found");
        return;
    }
    let m = Matcher::new(MccParams::default());
    let rates: Vec<_> = dirs.iter().map(|d| eval::evaluate(&m, &eval::load_database(d).unwrap()).rates).collect();
    let avg = |f: fn(&eval::metrics::Rates) -> f64| rates.iter().map(f).sum::<f64>() / rates.len() as f64;
    let (eer, fmr1000) = (avg(|r| r.eer), avg(|r| r.fmr1000));
    eprintln!("average EER {:.2}%, FMR1000 {:.2}%", 100.0 * eer, 100.0 * fmr1000);
    assert!(eer <= 0.05, "average EER {eer}");
    assert!(fmr1000 < 0.15, "average FMR1000 {fmr1000}");
}

#[test]
fn thresholds_from_real_impostors() {
    let dirs = whorl::data::fvc2002_dirs();
    if dirs.is_empty() {
        return;
    }
    let m = Matcher::default();
    let scores = eval::evaluate(&m, &eval::load_database(&dirs[0]).unwrap());
    let imp: Vec<f32> = scores.impostor.iter().map(|p| p.2).collect();
    let op = whorl::mcc::threshold::threshold_for_fmr(&imp, 0.001).unwrap();
    assert!(op.achieved_fmr <= 0.001);
    let op1 = whorl::mcc::threshold::threshold_for_fmr(&imp, 0.01).unwrap();
    assert!(op1.threshold <= op.threshold && op1.achieved_fmr <= 0.01);
}
