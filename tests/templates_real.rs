//! Template parsers against the real samples in ../shared/data.

mod common;

use whorl::template::{self, Format, Minutia, TemplateError};

const DBS: [&str; 4] = ["DB1_B", "DB2_B", "DB3_B", "DB4_B"];

#[test]
fn every_fvc2002_template_parses_with_its_header_count() {
    let Some(root) = common::data_or_skip("fvc2002 parse") else { return };
    let mut n = 0;
    for db in DBS {
        for path in common::fvc_files(&root, db) {
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(template::detect(&bytes).unwrap(), Format::Iso2005, "{}", path.display());
            let ts = template::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(ts.len(), usize::from(bytes[22]), "{}: views", path.display());
            // The minutiae count byte of view 0 sits at offset 27.
            assert_eq!(ts[0].minutiae.len(), usize::from(bytes[27]), "{}", path.display());
            assert!((13..=69).contains(&ts[0].minutiae.len()));
            assert_eq!((ts[0].resolution_x, ts[0].width, ts[0].height), (197, 300, 400));
            n += 1;
        }
    }
    assert_eq!(n, 320);
}

#[test]
fn fvc2002_records_are_rewritten_byte_for_byte() {
    let Some(root) = common::data_or_skip("fvc2002 rewrite") else { return };
    for db in DBS {
        for path in common::fvc_files(&root, db) {
            let bytes = std::fs::read(&path).unwrap();
            let ts = template::parse(&bytes).unwrap();
            assert_eq!(template::write(&ts, Format::Iso2005).unwrap(), bytes, "{}", path.display());
            let json = template::write(&ts, Format::Json).unwrap();
            assert_eq!(template::parse(&json).unwrap(), ts, "{}: JSON round trip", path.display());
        }
    }
}

fn counts(ts: &[whorl::template::Template]) -> Vec<usize> {
    ts.iter().map(|t| t.minutiae.len()).collect()
}

#[test]
fn conformance_samples_parse() {
    let Some(root) = common::data_or_skip("format samples") else { return };
    let cases: [(&str, Format, &[usize], &[u8]); 6] = [
        ("formats/fmr.iso2005", Format::Iso2005, &[27, 22], &[7, 2]),
        ("formats/fmr.ansi2004", Format::Ansi378_2004, &[27, 22, 28], &[7, 2, 3]),
        ("formats/fmr.ansi2007", Format::Ansi378_2009, &[27, 22], &[7, 2]),
        ("formats/type9.an2k", Format::AnsiNist, &[28], &[0]),
        ("formats/type9-15.an2k", Format::AnsiNist, &[28], &[0]),
        ("formats/type9-efs.an2k", Format::AnsiNist, &[60, 35, 68, 37, 54, 48, 53, 59], &[8, 5, 3, 10, 9, 7, 2, 4]),
    ];
    for (file, format, want, positions) in cases {
        let bytes = common::read(&root, file);
        assert_eq!(template::detect(&bytes).unwrap(), format, "{file}");
        let ts = template::parse(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(counts(&ts), want, "{file}");
        let got: Vec<u8> = ts.iter().map(|t| t.finger_position.0).collect();
        assert_eq!(got, positions, "{file}: finger positions");
    }
}

/// Angle difference in degrees, wrapped to [0, 180].
fn angle_diff(a: f32, b: f32) -> f32 {
    let d = (a - b).to_degrees().rem_euclid(360.0);
    d.min(360.0 - d)
}

fn same_minutiae(a: &[Minutia], b: &[Minutia], xy_tol: f32, angle_tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: counts");
    for (i, (p, q)) in a.iter().zip(b).enumerate() {
        assert!(
            (p.x - q.x).abs() <= xy_tol && (p.y - q.y).abs() <= xy_tol,
            "{what}: minutia {i} position {p:?} vs {q:?}"
        );
        assert!(angle_diff(p.angle, q.angle) <= angle_tol, "{what}: minutia {i} angle {p:?} vs {q:?}");
        assert_eq!(p.kind, q.kind, "{what}: minutia {i} kind");
    }
}

#[test]
fn the_same_minutiae_agree_across_formats() {
    let Some(root) = common::data_or_skip("cross-format") else { return };
    let iso = template::parse(&common::read(&root, "formats/fmr.iso2005")).unwrap();
    let ansi = template::parse(&common::read(&root, "formats/fmr.ansi2004")).unwrap();
    let ansi07 = template::parse(&common::read(&root, "formats/fmr.ansi2007")).unwrap();
    // ISO angles are 1.40625-degree units, ANSI 2-degree units: the same minutia within 2 degrees.
    for v in 0..2 {
        same_minutiae(&iso[v].minutiae, &ansi[v].minutiae, 0.0, 2.0, "iso2005 vs ansi2004");
        same_minutiae(&ansi07[v].minutiae, &ansi[v].minutiae, 0.0, 0.0, "ansi2009 vs ansi2004");
    }
    // The legacy Type-9 record holds view 2 of the ANSI record, converted to
    // 0.01 mm, bottom-left origin and angles + 180 degrees: back in pixels it
    // must match up to a vertical translation (the flip height is unknown).
    let t9 = template::parse(&common::read(&root, "formats/type9.an2k")).unwrap();
    let shift = ansi[2].minutiae[0].y - t9[0].minutiae[0].y;
    let moved: Vec<Minutia> = t9[0].minutiae.iter().map(|m| Minutia { y: m.y + shift, ..*m }).collect();
    same_minutiae(&moved, &ansi[2].minutiae, 1.0, 1.0, "type9 legacy vs ansi2004 view 2");
}

#[test]
fn truncated_records_are_refused_with_field_and_offset() {
    let Some(root) = common::data_or_skip("truncated") else { return };
    let cases = [
        (
            "invalid/101_1_truncate_1_byte.iso",
            "extended data length of view 0 at offset 28: record ends after 1 of 2 bytes",
        ),
        (
            "invalid/101_1_truncate_2_bytes.iso",
            "extended data length of view 0 at offset 28: record ends after 0 of 2 bytes",
        ),
        ("invalid/101_1_truncate_3_bytes.iso", "header of view 0 at offset 24: record ends after 3 of 4 bytes"),
    ];
    for (file, msg) in cases {
        let e = template::parse(&common::read(&root, file)).expect_err(file);
        assert!(matches!(e, TemplateError::Malformed { .. }), "{file}: {e:?}");
        assert_eq!(e.to_string(), format!("ISO 19794-2:2005: {msg}"), "{file}");
    }
}

/// Every strict prefix of a binary record is an error, never a partial template.
#[test]
fn every_prefix_of_a_binary_sample_is_refused() {
    let Some(root) = common::data_or_skip("prefixes") else { return };
    let mut files = vec![
        "formats/fmr.iso2005".to_string(),
        "formats/fmr.ansi2004".into(),
        "formats/fmr.ansi2007".into(),
        "formats/type9.an2k".into(),
        "formats/type9-efs.an2k".into(),
    ];
    files.extend(DBS.iter().map(|db| format!("fvc2002/{db}/101_1.iso")));
    for file in files {
        let bytes = common::read(&root, &file);
        let format = template::detect(&bytes).unwrap();
        for cut in 1..bytes.len() {
            let r = template::parse_as(&bytes[..cut], format);
            assert!(r.is_err(), "{file} cut to {cut} bytes parsed as {:?}", r.map(|t| counts(&t)));
        }
    }
}

/// Single-byte mutations of every sample never panic, whichever parser reads them.
#[test]
fn single_byte_mutations_never_panic() {
    let Some(root) = common::data_or_skip("mutations") else { return };
    let mut samples: Vec<Vec<u8>> = ["fmr.iso2005", "fmr.ansi2004", "fmr.ansi2007", "type9.an2k", "type9-efs.an2k"]
        .iter()
        .map(|f| common::read(&root, &format!("formats/{f}")))
        .collect();
    let big = common::read(&root, "formats/type9-15.an2k");
    // The large sample is images in the middle: mutate its records' heads and its Type-9 tail.
    samples.push([&big[..4096], &big[big.len() - 4096..]].concat());
    samples.push(big);
    for db in DBS {
        samples.push(std::fs::read(&common::fvc_files(&root, db)[0]).unwrap());
    }
    samples.push(template::write(&template::parse(&samples[0]).unwrap(), Format::Json).unwrap());
    let mut parses = 0usize;
    for s in &samples {
        let positions: Vec<usize> =
            if s.len() > 20_000 { (0..4096).chain(s.len() - 4096..s.len()).collect() } else { (0..s.len()).collect() };
        let mut m = s.clone();
        for &i in &positions {
            let orig = m[i];
            for v in [0x00, 0xff, orig ^ 0x01, orig ^ 0x80, orig.wrapping_add(1), b'0', 0x1e] {
                m[i] = v;
                let _ = template::parse(&m);
                for f in Format::ALL {
                    let _ = template::parse_as(&m, f);
                }
                parses += 8;
            }
            m[i] = orig;
        }
    }
    assert!(parses > 100_000, "{parses}");
}

#[test]
fn xyt_follows_mindtct_conventions() {
    // mindtct: y from the bottom, theta pointing away from the ISO direction.
    let xyt = b"100 350 270 80\n120 300 90 60\n# comment\n\n150 100 0 10\n";
    let opts = template::ParseOptions {
        format: None,
        xyt: template::xyt::XytOptions { resolution_ppcm: 197, height: Some(400) },
        ..Default::default()
    };
    let p = template::parse_with(xyt, &opts).unwrap();
    assert_eq!(p.format, Format::Xyt);
    let m = &p.templates[0].minutiae;
    assert_eq!(m.len(), 3);
    assert_eq!((m[0].x, m[0].y, m[0].quality), (100.0, 50.0, 80));
    assert!(angle_diff(m[0].angle, 90f32.to_radians()) < 1e-3);
    assert!(angle_diff(m[1].angle, 270f32.to_radians()) < 1e-3);
    assert!(angle_diff(m[2].angle, 180f32.to_radians()) < 1e-3);
    let e = template::parse_as(b"1 2\n", Format::Xyt).unwrap_err();
    assert!(e.to_string().contains("minutia 0"), "{e}");
    let e = template::parse_as(b"1 2 400\n", Format::Xyt).unwrap_err();
    assert!(e.to_string().contains("theta 400"), "{e}");
}

#[test]
fn detection_refuses_what_is_not_a_template() {
    assert_eq!(template::parse(b""), Err(TemplateError::Empty));
    assert!(matches!(template::parse(b"\x89PNG\r\n\x1a\n...."), Err(TemplateError::UnknownFormat(_))));
    assert!(matches!(template::parse(b"FMR\0 99\0......"), Err(TemplateError::UnknownFormat(_))));
    let e = template::parse(b"{\"templates\": [{\"x\": 1}]").unwrap_err();
    assert!(e.to_string().starts_with("whorl JSON:"), "{e}");
}
