//! One Identify over several galleries: a section per gallery (its
//! decision, candidates, operating point computed with its own size,
//! timings, or the error that kept it from answering), and the summary
//! fields of the reply. Shared by the server and the cluster router.

use super::convert;
use super::pb;
use tonic::Status;

/// A section of a gallery that could not answer.
pub fn failed_section(gallery: &str, s: &Status) -> pb::GalleryResult {
    pb::GalleryResult {
        gallery: gallery.to_string(),
        error: Some(pb::RequestError { code: s.code() as i32, message: s.message().to_string() }),
        ..Default::default()
    }
}

/// A gallery's single-gallery answer as its section.
pub fn section(gallery: &str, r: &pb::IdentifyResponse, searched_fraction: f64, partial: bool) -> pb::GalleryResult {
    let mut candidates = r.candidates.clone();
    for c in &mut candidates {
        c.gallery = gallery.to_string();
    }
    pb::GalleryResult {
        gallery: gallery.to_string(),
        decision: r.decision,
        candidates,
        operating_point: r.operating_point.clone(),
        timings: r.timings,
        gallery_generation: r.gallery_generation,
        comparisons: r.comparisons,
        error: None,
        searched_fraction,
        partial,
        notifications: Vec::new(),
    }
}

/// The reply of an Identify from its sections (in request order), and the
/// backend that answered. With one section the summary is that section;
/// with several, HIT when any is, candidates merged best first (each
/// naming its gallery, cut to `want`), the first answering gallery's
/// operating point, summed generations and comparisons. When no gallery
/// could answer, the call fails with the first gallery's error.
pub fn assemble(
    request_id: String,
    sections: Vec<pb::GalleryResult>,
    want: usize,
    backend: String,
) -> Result<pb::IdentifyResponse, Status> {
    let ok: Vec<&pb::GalleryResult> = sections.iter().filter(|s| s.error.is_none()).collect();
    if ok.is_empty() {
        let e = sections.first().and_then(|s| s.error.clone()).unwrap_or_default();
        return Err(Status::new(tonic::Code::from(e.code), e.message));
    }
    let mut candidates: Vec<pb::Candidate> = ok.iter().flat_map(|s| s.candidates.iter().cloned()).collect();
    if ok.len() > 1 {
        // Stable: ties keep the galleries' request order.
        candidates.sort_by(|a, b| b.fused_score.total_cmp(&a.fused_score));
        candidates.truncate(want.max(1));
        for (i, c) in candidates.iter_mut().enumerate() {
            c.rank = i as u32 + 1;
        }
    }
    let hit = ok.iter().any(|s| s.decision == pb::Decision::Hit as i32);
    let first = ok[0];
    Ok(pb::IdentifyResponse {
        request_id,
        decision: if hit { pb::Decision::Hit as i32 } else { pb::Decision::NoHit as i32 },
        candidates,
        operating_point: first.operating_point.clone(),
        timings: if ok.len() == 1 {
            first.timings
        } else {
            ok.iter().filter_map(|s| s.timings).max_by_key(|t| convert::from_duration(&t.total))
        },
        backend,
        gallery_generation: ok.iter().map(|s| s.gallery_generation).sum(),
        comparisons: ok.iter().map(|s| s.comparisons).sum(),
        partial: sections.iter().any(|s| s.partial),
        galleries: sections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(subject: &str, fused: f64, hit: bool) -> pb::Candidate {
        pb::Candidate { subject_id: subject.into(), fused_score: fused, hit, rank: 1, ..Default::default() }
    }

    #[test]
    fn sections_merge_into_one_reply_and_a_failed_gallery_does_not_hide_the_other() {
        let a = pb::IdentifyResponse {
            decision: pb::Decision::NoHit as i32,
            candidates: vec![cand("x", 3.0, false), cand("y", 1.0, false)],
            comparisons: 10,
            ..Default::default()
        };
        let b = pb::IdentifyResponse {
            decision: pb::Decision::Hit as i32,
            candidates: vec![cand("z", 12.0, true)],
            comparisons: 5,
            ..Default::default()
        };
        let r = assemble(
            "r".into(),
            vec![
                section("crim", &a, 1.0, false),
                section("imm", &b, 1.0, false),
                failed_section("gone", &Status::unavailable("unloaded")),
            ],
            2,
            "cpu".into(),
        )
        .unwrap();
        assert_eq!(r.decision, pb::Decision::Hit as i32);
        let got: Vec<(&str, &str, u32)> =
            r.candidates.iter().map(|c| (c.subject_id.as_str(), c.gallery.as_str(), c.rank)).collect();
        assert_eq!(got, vec![("z", "imm", 1), ("x", "crim", 2)]);
        assert_eq!((r.comparisons, r.galleries.len()), (15, 3));
        assert_eq!(r.galleries[2].error.as_ref().unwrap().code, tonic::Code::Unavailable as i32);
        let e = assemble("r".into(), vec![failed_section("g", &Status::not_found("no"))], 5, String::new());
        assert_eq!(e.unwrap_err().code(), tonic::Code::NotFound);
    }
}
