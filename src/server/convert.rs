//! Between the wire (protobuf) and the pipeline: templates in, with errors
//! that name the template and the field; replies out; errors to status codes.

use super::config::LimitsSection;
use super::pb;
use crate::gallery::GalleryError;
use crate::search::{self, Decision, Reply, SearchError, SubjectMatch};
use crate::template::{self, FingerPosition, Format, Template};
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::Duration;
use tonic::Status;

/// Templates of a request and the SHA-256 of their bytes (for the audit trail).
#[derive(Debug, Clone)]
pub struct Parsed {
    /// One per finger view holding minutiae, in request order.
    pub fingers: Vec<Template>,
    /// The request's view index of each of `fingers` (empty views are left out).
    pub views: Vec<usize>,
    /// SHA-256 (hex) over every record's length and bytes.
    pub sha256: String,
    /// Time spent parsing.
    pub took: Duration,
}

/// The template format a wire value names (`None`: detect).
pub fn format_of(v: i32) -> Result<Option<Format>, String> {
    Ok(match pb::TemplateFormat::try_from(v).map_err(|_| format!("unknown template format value {v}"))? {
        pb::TemplateFormat::Auto => None,
        pb::TemplateFormat::Iso1979422005 => Some(Format::Iso2005),
        pb::TemplateFormat::Iso1979422011 => Some(Format::Iso2011),
        pb::TemplateFormat::Ansi3782004 => Some(Format::Ansi378_2004),
        pb::TemplateFormat::Ansi3782009 => Some(Format::Ansi378_2009),
        pb::TemplateFormat::AnsiNistType9 => Some(Format::AnsiNist),
        pb::TemplateFormat::NistXyt => Some(Format::Xyt),
        pb::TemplateFormat::Json => Some(Format::Json),
    })
}

/// Checks that need no parsing, before a request is admitted: the number
/// of records (each holds at least one view).
pub fn check_records(records: &[pb::FingerTemplate], max_views: usize) -> Result<(), Status> {
    if records.is_empty() {
        return Err(Status::invalid_argument("the request holds no templates"));
    }
    if records.len() > max_views {
        return Err(Status::invalid_argument(format!(
            "the request holds {} template records; at most {max_views} finger views",
            records.len()
        )));
    }
    Ok(())
}

/// Checks labels (of an enrolment, or a search's label filter) against the
/// limits; the message names the label without quoting all of it.
pub fn check_labels(labels: &HashMap<String, String>, limits: &LimitsSection, what: &str) -> Result<(), Status> {
    if labels.len() > limits.max_labels {
        return Err(Status::invalid_argument(format!(
            "{what}: {} labels, more than the limit of {}",
            labels.len(),
            limits.max_labels
        )));
    }
    let short = |s: &str| -> String {
        if s.len() <= 40 { s.to_string() } else { format!("{}...", s.chars().take(32).collect::<String>()) }
    };
    for (k, v) in labels {
        for (part, text) in [("key", k), ("value", v)] {
            if text.len() > limits.max_label_bytes {
                return Err(Status::invalid_argument(format!(
                    "{what}: label '{}': {part} of {} bytes, more than the limit of {}",
                    short(k),
                    text.len(),
                    limits.max_label_bytes
                )));
            }
        }
    }
    Ok(())
}

/// Parses every record of a request: `INVALID_ARGUMENT` names the record
/// (`template 2`), and the parser's error names the field and byte offset.
/// The caps of `limits` are checked as the records are parsed: minutiae per
/// view (by the parsers) and minutiae of all views together.
pub fn parse_templates(
    records: &[pb::FingerTemplate],
    max_views: usize,
    limits: &LimitsSection,
) -> Result<Parsed, Status> {
    let t0 = std::time::Instant::now();
    check_records(records, max_views)?;
    let mut hash = Sha256::new();
    let mut fingers = Vec::new();
    let (mut views, mut view) = (Vec::new(), 0usize);
    let mut minutiae = 0usize;
    let opts = |format| template::ParseOptions {
        format,
        limits: template::Limits { max_views, ..limits.template() },
        ..template::ParseOptions::default()
    };
    for (i, r) in records.iter().enumerate() {
        hash.update((r.data.len() as u64).to_le_bytes());
        hash.update(&r.data);
        let format = format_of(r.format).map_err(|e| Status::invalid_argument(format!("template {i}: {e}")))?;
        if r.finger_position > 10 {
            return Err(Status::invalid_argument(format!(
                "template {i}: finger_position {} is not 0 (as recorded) or 1-10",
                r.finger_position
            )));
        }
        let parsed = template::parse_with(&r.data, &opts(format))
            .map_err(|e| Status::invalid_argument(format!("template {i}: {e}")))?
            .templates;
        if parsed.is_empty() {
            return Err(Status::invalid_argument(format!("template {i}: the record holds no finger views")));
        }
        minutiae += parsed.iter().map(|t| t.minutiae.len()).sum::<usize>();
        if minutiae > limits.max_minutiae_per_probe {
            return Err(Status::invalid_argument(format!(
                "template {i} brings the request to {minutiae} minutiae (all views together), more than the limit of {}",
                limits.max_minutiae_per_probe
            )));
        }
        for mut t in parsed {
            if r.finger_position != 0 {
                t.finger_position = FingerPosition(r.finger_position as u8);
            }
            // A view without minutiae (an unreadable or missing finger of a
            // ten-print) carries no evidence: it is left out, not refused.
            if !t.minutiae.is_empty() {
                views.push(view);
                fingers.push(t);
            }
            view += 1;
        }
        if view > max_views {
            return Err(Status::invalid_argument(format!(
                "the request holds more than {max_views} finger views (template {i} passes the limit)"
            )));
        }
    }
    if fingers.is_empty() {
        return Err(Status::invalid_argument(format!("none of the {view} finger views holds a minutia")));
    }
    let sha256 = super::auth::hex(&hash.finalize());
    Ok(Parsed { fingers, views, sha256, took: t0.elapsed() })
}

/// The pipeline's error as a status.
pub fn search_status(e: SearchError) -> Status {
    match e {
        SearchError::Invalid(m) => Status::invalid_argument(m),
        SearchError::Deadline(m) => {
            Status::deadline_exceeded(format!("deadline exceeded in stage {m}; the work stopped there"))
        }
        SearchError::Cancelled(m) => Status::cancelled(format!("cancelled in stage {m}")),
        SearchError::NotFound(m) => Status::not_found(m),
        SearchError::Internal(m) => Status::internal(m),
        SearchError::Unavailable(m) => Status::unavailable(m),
    }
}

/// The gallery's error as a status.
pub fn gallery_status(e: GalleryError) -> Status {
    match e {
        GalleryError::Invalid(m) => Status::invalid_argument(m),
        GalleryError::NotFound(m) => Status::not_found(m),
        GalleryError::AlreadyExists(m) => Status::already_exists(m),
        GalleryError::Conflict(m) => Status::aborted(m),
        GalleryError::Stopped(crate::cancel::Stop::Deadline) => {
            Status::deadline_exceeded("deadline exceeded before the change was logged: nothing was changed")
        }
        GalleryError::Stopped(crate::cancel::Stop::Cancelled) => Status::cancelled("cancelled: nothing was changed"),
        e @ (GalleryError::Mismatch(_) | GalleryError::Shard(_) | GalleryError::Locked(_)) => {
            Status::failed_precondition(e.to_string())
        }
        e => Status::internal(e.to_string()),
    }
}

/// Drops the last candidates of a reply until it encodes within `limit`
/// bytes (less a margin for framing); returns how many were dropped. The
/// caps on candidates and labels keep this from happening with the default
/// limits; it guards smaller `max_message_bytes`.
pub fn fit_reply(r: &mut pb::IdentifyResponse, limit: usize) -> usize {
    let limit = limit.saturating_sub(256);
    let mut dropped = 0;
    loop {
        let size = r.encoded_len();
        if size <= limit {
            break;
        }
        // The longest list (the summary's or a gallery section's) loses a
        // share of its last candidates: encoding is linear in them.
        let total = r.candidates.len() + r.galleries.iter().map(|g| g.candidates.len()).sum::<usize>();
        let each = (size / total.max(1)).max(1);
        let longest = std::iter::once(&mut r.candidates)
            .chain(r.galleries.iter_mut().map(|g| &mut g.candidates))
            .max_by_key(|l| l.len());
        let Some(list) = longest.filter(|l| !l.is_empty()) else { break };
        let n = (size - limit).div_ceil(each).clamp(1, list.len());
        list.truncate(list.len() - n);
        dropped += n;
    }
    dropped
}

/// A decision oneof of a request.
pub fn identify_decision(d: Option<pb::identify_request::Decision>) -> Option<Decision> {
    d.map(|d| match d {
        pb::identify_request::Decision::TargetFpir(f) => Decision::Fpir(f),
        pb::identify_request::Decision::Threshold(t) => Decision::Threshold(t),
    })
}

/// A decision oneof of a verification.
pub fn verify_decision(d: Option<pb::verify_request::Decision>) -> Option<Decision> {
    d.map(|d| match d {
        pb::verify_request::Decision::TargetFmr(f) => Decision::Fpir(f),
        pb::verify_request::Decision::Threshold(t) => Decision::Threshold(t),
    })
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// A protobuf duration as a std one (negative: zero).
pub fn from_duration(d: &Option<prost_types::Duration>) -> Duration {
    d.as_ref().map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)).unwrap_or_default()
}

fn candidate(rank: usize, m: SubjectMatch) -> pb::Candidate {
    pb::Candidate {
        rank: rank as u32,
        subject_id: m.subject,
        fused_score: m.fused,
        hit: m.hit,
        verified: m.verified,
        fingers: m
            .fingers
            .into_iter()
            .map(|f| pb::FingerScore {
                probe_finger: f.probe_finger as u32,
                finger_position: u32::from(f.position),
                score: f.score,
                evidence: f.decades,
                tries: f.tries as u32,
                source: f.source,
                n_p: f.n_p,
            })
            .collect(),
        labels: m.labels.into_iter().collect(),
        gallery: String::new(),
    }
}

fn operating_point(op: &search::fusion::OperatingPoint, model: &str) -> pb::OperatingPoint {
    pb::OperatingPoint {
        target_fpir: op.target_fpir,
        gallery_subjects: op.subjects,
        subject_fmr: op.subject_fmr,
        threshold: op.threshold,
        model: model.to_string(),
    }
}

fn timings(r: &Reply, queue: Duration, parse: Duration, total: Duration) -> pb::StageTimings {
    pb::StageTimings {
        queue: Some(duration(queue)),
        parse: Some(duration(parse)),
        prepare: Some(duration(r.timings.prepare)),
        candidates: Some(duration(r.timings.candidates)),
        rescore: Some(duration(r.timings.rescore)),
        fuse: Some(duration(r.timings.fuse)),
        total: Some(duration(total)),
    }
}

/// `hit` or `no_hit`, for logs, the audit trail and JSON output.
pub fn decision_name(d: i32) -> &'static str {
    if d == pb::Decision::Hit as i32 { "hit" } else { "no_hit" }
}

fn decision(hit: bool) -> i32 {
    if hit { pb::Decision::Hit as i32 } else { pb::Decision::NoHit as i32 }
}

/// An identification reply on the wire.
pub fn identify_response(
    r: Reply,
    request_id: String,
    model: &str,
    queue: Duration,
    parse: Duration,
    total: Duration,
) -> pb::IdentifyResponse {
    pb::IdentifyResponse {
        request_id,
        decision: decision(r.hit),
        operating_point: Some(operating_point(&r.operating_point, model)),
        timings: Some(timings(&r, queue, parse, total)),
        backend: r.backend.clone(),
        gallery_generation: r.generation,
        comparisons: r.comparisons as u64,
        candidates: r.candidates.into_iter().enumerate().map(|(i, m)| candidate(i + 1, m)).collect(),
        ..Default::default()
    }
}

/// A verification reply on the wire.
pub fn verify_response(r: Reply, model: &str, queue: Duration, parse: Duration, total: Duration) -> pb::VerifyResponse {
    pb::VerifyResponse {
        decision: decision(r.hit),
        operating_point: Some(operating_point(&r.operating_point, model)),
        timings: Some(timings(&r, queue, parse, total)),
        backend: r.backend.clone(),
        gallery_generation: r.generation,
        candidate: r.candidates.into_iter().next().map(|m| candidate(1, m)),
    }
}
