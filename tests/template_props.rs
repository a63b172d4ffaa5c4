//! Property tests of the template parsers and writers.

use proptest::prelude::*;
use std::f32::consts::TAU;
use whorl::template::{self, FingerPosition, Format, ImpressionType, Minutia, MinutiaKind, Template};

fn kind() -> impl Strategy<Value = MinutiaKind> {
    prop_oneof![Just(MinutiaKind::Other), Just(MinutiaKind::Ending), Just(MinutiaKind::Bifurcation)]
}

fn minutia(max: f32) -> impl Strategy<Value = Minutia> {
    (0.0..max, 0.0..max, 0.0..TAU, kind(), 0u8..=100).prop_map(|(x, y, a, k, q)| Minutia::new(x, y, a, k, q))
}

fn template_strategy(max: f32) -> impl Strategy<Value = Template> {
    (
        0u8..=10,
        0u8..=9,
        0u8..=15,
        1u16..1000,
        1u16..1000,
        any::<u16>(),
        any::<u16>(),
        0u8..=100,
        prop::collection::vec(minutia(max), 0..80),
    )
        .prop_map(|(pos, imp, view, rx, ry, w, h, q, minutiae)| Template {
            finger_position: FingerPosition(pos),
            impression_type: ImpressionType(imp),
            view_number: view,
            resolution_x: rx,
            resolution_y: ry,
            width: w,
            height: h,
            quality: q,
            minutiae,
        })
}

fn angle_diff(a: f32, b: f32) -> f32 {
    let d = (a - b).rem_euclid(TAU);
    d.min(TAU - d)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn json_round_trip_is_exact(ts in prop::collection::vec(template_strategy(20_000.0), 1..4)) {
        let bytes = template::write(&ts, Format::Json).unwrap();
        prop_assert_eq!(template::parse(&bytes).unwrap(), ts);
    }

    #[test]
    fn iso2005_round_trip_within_quantisation(ts in prop::collection::vec(template_strategy(16_383.0), 1..4)) {
        let bytes = template::write(&ts, Format::Iso2005).unwrap();
        let back = template::parse(&bytes).unwrap();
        prop_assert_eq!(back.len(), ts.len());
        for (t, b) in ts.iter().zip(&back) {
            prop_assert_eq!(t.finger_position, b.finger_position);
            prop_assert_eq!(t.impression_type, b.impression_type);
            prop_assert_eq!(t.view_number, b.view_number);
            prop_assert_eq!(t.quality, b.quality);
            prop_assert_eq!((b.resolution_x, b.width), (ts[0].resolution_x, ts[0].width));
            prop_assert_eq!(t.minutiae.len(), b.minutiae.len());
            for (m, n) in t.minutiae.iter().zip(&b.minutiae) {
                prop_assert!((m.x - n.x).abs() <= 0.5 && (m.y - n.y).abs() <= 0.5, "{:?} {:?}", m, n);
                prop_assert!(angle_diff(m.angle, n.angle) <= TAU / 512.0 + 1e-5, "{:?} {:?}", m, n);
                prop_assert_eq!(m.kind, n.kind);
                prop_assert_eq!(m.quality, n.quality);
            }
            // A second trip is exact: the values are now on the format's grid.
            let again = template::parse(&template::write(&back, Format::Iso2005).unwrap()).unwrap();
            prop_assert_eq!(&again, &back);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = template::parse(&bytes);
        for f in Format::ALL {
            let _ = template::parse_as(&bytes, f);
        }
    }

    #[test]
    fn arbitrary_bytes_behind_each_magic_never_panic(
        head in prop_oneof![
            Just(b"FMR\0 20\0".to_vec()),
            Just(b"FMR\x00030\x00".to_vec()),
            Just(b"FMR\x00035\x00".to_vec()),
            Just(b"1.001:".to_vec()),
            Just(b"{\"whorl_templates\":1,\"templates\":".to_vec()),
        ],
        tail in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let bytes = [head, tail].concat();
        let _ = template::parse(&bytes);
        for f in Format::ALL {
            let _ = template::parse_as(&bytes, f);
        }
    }

    #[test]
    fn an2k_shaped_text_never_panics(fields in prop::collection::vec(("[0-9]{1,2}", "[0-9]{1,3}", "[ -~\x1e\x1f]{0,30}"), 0..12)) {
        let mut bytes = b"1.001:".to_vec();
        for (t, n, v) in fields {
            bytes.extend_from_slice(format!("{t}.{n}:{v}").as_bytes());
            bytes.push(0x1d);
        }
        bytes.push(0x1c);
        let _ = template::parse(&bytes);
    }
}

#[test]
fn writing_refuses_what_iso2005_cannot_hold() {
    let mut t =
        Template { minutiae: vec![Minutia::new(-1.0, 5.0, 0.0, MinutiaKind::Ending, 0)], ..Template::default() };
    assert!(template::write(&[t.clone()], Format::Iso2005).is_err());
    t.minutiae = vec![Minutia::new(1.0, 5.0, 0.0, MinutiaKind::Ending, 0); 256];
    assert!(template::write(&[t.clone()], Format::Iso2005).is_err());
    assert!(template::write(&[], Format::Iso2005).is_err());
    assert!(template::write(&[t], Format::Xyt).is_err());
}
