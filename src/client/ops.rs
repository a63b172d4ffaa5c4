//! One function per request kind, as the command line sends them, and
//! the tables their replies print as.

use super::ClientError;
use crate::server::client::{self, Clients};
use crate::server::convert::{decision_name, from_duration};
use crate::server::pb;
use crate::table::{Table, bytes, count, number};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// The bytes of each file, in order.
pub fn read_records(files: &[PathBuf]) -> Result<Vec<Vec<u8>>, ClientError> {
    files.iter().map(|f| std::fs::read(f).map_err(|e| ClientError::io(f, e))).collect()
}

/// The searches `identify` sends: all files as one person's fingers, or
/// (`each`) one search per file. Each is (name, files).
pub fn identify_groups(files: &[PathBuf], each: bool) -> Vec<(String, Vec<PathBuf>)> {
    if each {
        files.iter().map(|f| (f.display().to_string(), vec![f.clone()])).collect()
    } else {
        let name = files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" + ");
        vec![(name, files.to_vec())]
    }
}

/// How to search.
#[derive(Debug, Clone)]
pub struct IdentifyOptions {
    /// Candidates wanted.
    pub candidates: u32,
    /// Target FPIR (default: the server's).
    pub fpir: Option<f64>,
    /// Deadline.
    pub timeout: Duration,
    /// Galleries to search (empty: the server's default set).
    pub galleries: Vec<String>,
    /// The caller's transaction id (carried into hit notifications).
    pub transaction_id: String,
    /// Accept a partial answer from a cluster missing some groups.
    pub allow_partial: bool,
}

/// Searches the server for the person whose fingers `files` hold.
pub async fn identify(
    c: &mut Clients,
    name: &str,
    files: &[PathBuf],
    o: &IdentifyOptions,
) -> Result<pb::IdentifyResponse, ClientError> {
    let mut req = tonic::Request::new(pb::IdentifyRequest {
        probe: Some(client::probe(read_records(files)?)),
        max_candidates: o.candidates,
        decision: o.fpir.map(pb::identify_request::Decision::TargetFpir),
        request_id: name.to_string(),
        galleries: o.galleries.clone(),
        transaction_id: o.transaction_id.clone(),
        allow_partial: o.allow_partial,
        ..Default::default()
    });
    req.set_timeout(o.timeout);
    let r = c.identification.identify(req).await.map_err(|e| ClientError::status(name, &e))?;
    Ok(r.into_inner())
}

/// The first line of an identify reply: decision, threshold, work, time.
pub fn identify_summary(name: &str, r: &pb::IdentifyResponse) -> String {
    let decision = if r.decision == pb::Decision::Hit as i32 { "HIT" } else { "no hit" };
    let op = r.operating_point.clone().unwrap_or_default();
    let total = from_duration(&r.timings.as_ref().and_then(|t| t.total));
    format!(
        "{name}: {decision} (threshold {:.2} decades for FPIR {} over {} subjects; {} comparisons; {:.1} ms; {})",
        op.threshold,
        op.target_fpir,
        count(op.gallery_subjects),
        count(r.comparisons),
        total.as_secs_f64() * 1e3,
        r.backend
    )
}

/// One gallery's line of a multi-gallery reply.
pub fn section_summary(g: &pb::GalleryResult) -> String {
    if let Some(e) = &g.error {
        return format!(
            "{}: ERROR {} {}",
            g.gallery,
            crate::server::audit::code_name(tonic::Code::from(e.code)),
            e.message
        );
    }
    let op = g.operating_point.clone().unwrap_or_default();
    let decision = if g.decision == pb::Decision::Hit as i32 { "HIT" } else { "no hit" };
    let top = g.candidates.first().map(|c| format!(", best {} ({:.2} decades)", c.subject_id, c.fused_score));
    format!(
        "{}: {decision} (threshold {:.2} over {} subjects{}){}{}",
        g.gallery,
        op.threshold,
        count(op.gallery_subjects),
        if g.partial {
            format!("; PARTIAL: {:.1}% of subjects searched", 100.0 * g.searched_fraction)
        } else {
            String::new()
        },
        top.unwrap_or_default(),
        if g.notifications.is_empty() { String::new() } else { format!("; notified {}", g.notifications.join(", ")) }
    )
}

/// The candidates of an identify reply.
pub fn candidates_table(r: &pb::IdentifyResponse) -> Table {
    let mut t = Table::new(["rank", "subject", "gallery", "fused (decades)", "hit", "fingers (position: score)"]);
    for c in &r.candidates {
        let f: Vec<String> = c.fingers.iter().map(|f| format!("{}: {:.3}", f.finger_position, f.score)).collect();
        t.row([
            c.rank.to_string(),
            c.subject_id.clone(),
            c.gallery.clone(),
            format!("{:.2}", c.fused_score),
            if c.hit { "yes" } else { "no" }.to_string(),
            f.join(", "),
        ]);
    }
    t
}

/// An identify reply as JSON.
pub fn response_json(r: &pb::IdentifyResponse) -> serde_json::Value {
    serde_json::json!({
        "request_id": r.request_id,
        "decision": decision_name(r.decision),
        "threshold": r.operating_point.as_ref().map(|o| o.threshold),
        "backend": r.backend,
        "generation": r.gallery_generation,
        "candidates": r.candidates.iter().map(|c| serde_json::json!({
            "rank": c.rank, "subject": c.subject_id, "fused": c.fused_score, "hit": c.hit,
            "fingers": c.fingers.iter().map(|f| serde_json::json!({
                "probe_finger": f.probe_finger, "position": f.finger_position, "score": f.score,
                "evidence": f.evidence, "source": f.source})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Compares `files` with one enrolled subject of `gallery` (1:1).
pub async fn verify(
    c: &mut Clients,
    gallery: &str,
    subject: &str,
    files: &[PathBuf],
    fmr: Option<f64>,
) -> Result<String, ClientError> {
    let r = c
        .identification
        .verify(pb::VerifyRequest {
            subject_id: subject.to_string(),
            probe: Some(client::probe(read_records(files)?)),
            decision: fmr.map(pb::verify_request::Decision::TargetFmr),
            gallery: gallery.to_string(),
        })
        .await
        .map_err(|e| ClientError::status(format!("verifying against {subject}"), &e))?
        .into_inner();
    let decision = if r.decision == pb::Decision::Hit as i32 { "MATCH" } else { "no match" };
    let score = r.candidate.as_ref().map(|c| c.fused_score).unwrap_or(0.0);
    let thr = r.operating_point.as_ref().map(|o| o.threshold).unwrap_or(0.0);
    Ok(format!("{subject}: {decision} (fused {score:.2} decades, threshold {thr:.2}; {})", r.backend))
}

/// `key=value` labels.
pub fn parse_labels(labels: &[String]) -> Result<HashMap<String, String>, ClientError> {
    let mut out = HashMap::new();
    for l in labels {
        let (k, v) = l.split_once('=').ok_or_else(|| ClientError::Invalid(format!("label '{l}' is not key=value")))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Templates a subject holds on the server; `None` when it is not enrolled.
pub async fn subject_templates(c: &mut Clients, gallery: &str, subject: &str) -> Result<Option<usize>, ClientError> {
    let req = pb::GetSubjectRequest {
        subject_id: subject.to_string(),
        include_templates: false,
        gallery: gallery.to_string(),
    };
    match c.gallery.get_subject(req).await {
        Ok(r) => Ok(Some(r.into_inner().fingers.len())),
        Err(e) if e.code() == tonic::Code::NotFound => Ok(None),
        Err(e) => Err(ClientError::status(format!("looking up {subject}"), &e)),
    }
}

/// What an enrolment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// The subject.
    pub subject: String,
    /// Templates this enrolment sent and the server took.
    pub templates: u32,
    /// Log sequence number.
    pub sequence: u64,
    /// Templates the subject held before (`None`: it was new; also `None`
    /// when the server would not say).
    pub before: Option<usize>,
    /// Templates it holds now, when the server says.
    pub after: Option<usize>,
}

impl std::fmt::Display for Enrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = |n: usize| format!("{n} template{}", if n == 1 { "" } else { "s" });
        match (self.before, self.after) {
            (None, _) => {
                write!(f, "enrolled {} ({}), log sequence {}", self.subject, t(self.templates as usize), self.sequence)
            }
            (Some(b), Some(a)) if a == self.templates as usize => write!(
                f,
                "{} was already enrolled ({}): replaced by these {}, log sequence {}",
                self.subject,
                t(b),
                self.templates,
                self.sequence
            ),
            (Some(b), Some(a)) => write!(
                f,
                "{} was already enrolled ({}): the server added these {} to them ({} now), log sequence {}",
                self.subject,
                t(b),
                self.templates,
                t(a),
                self.sequence
            ),
            (Some(b), None) => write!(
                f,
                "{} was already enrolled ({}): the server took these {} as well, log sequence {}",
                self.subject,
                t(b),
                self.templates,
                self.sequence
            ),
        }
    }
}

/// Enrols `files` as `subject` in `gallery` (`replace`: replacing an
/// enrolled subject), saying whether the subject was there before and what
/// the server did with it.
pub async fn enroll(
    c: &mut Clients,
    gallery: &str,
    subject: &str,
    labels: HashMap<String, String>,
    files: &[PathBuf],
    replace: bool,
) -> Result<Enrolled, ClientError> {
    let templates = read_records(files)?.into_iter().map(client::finger).collect();
    // Asking first costs one round trip and tells the user what a second
    // enrolment of the same id does. Whoever may enrol may look up.
    let before = subject_templates(c, gallery, subject).await.unwrap_or(None);
    if let (Some(n), false) = (before, replace) {
        return Err(ClientError::Invalid(format!(
            "{subject} is already enrolled ({n} template{}): pass --replace to replace it",
            if n == 1 { "" } else { "s" }
        )));
    }
    let req =
        pb::EnrollRequest { subject_id: subject.to_string(), templates, labels, replace, gallery: gallery.to_string() };
    let r =
        c.gallery.enroll(req).await.map_err(|e| ClientError::status(format!("enrolling {subject}"), &e))?.into_inner();
    let after = if before.is_some() { subject_templates(c, gallery, subject).await.unwrap_or(None) } else { None };
    Ok(Enrolled { subject: subject.to_string(), templates: r.templates, sequence: r.sequence, before, after })
}

/// Deletes a subject of `gallery`; the log sequence number.
pub async fn delete(c: &mut Clients, gallery: &str, subject: &str) -> Result<u64, ClientError> {
    let r = c
        .gallery
        .delete(pb::DeleteRequest { subject_id: subject.to_string(), gallery: gallery.to_string() })
        .await
        .map_err(|e| ClientError::status(format!("deleting {subject}"), &e))?;
    Ok(r.into_inner().sequence)
}

/// The shards served and those left out.
pub async fn list_shards(c: &mut Clients, gallery: &str) -> Result<Vec<pb::Shard>, ClientError> {
    let r = c
        .gallery
        .list_shards(pb::ListShardsRequest { gallery: gallery.to_string() })
        .await
        .map_err(|e| ClientError::status("listing shards", &e))?;
    Ok(r.into_inner().shards)
}

/// Loads a shard file lying in the server's gallery folder.
pub async fn load_shard(c: &mut Clients, gallery: &str, group: u32, file: &str) -> Result<pb::Shard, ClientError> {
    let r = c
        .gallery
        .load_shard(pb::LoadShardRequest { file: file.to_string(), gallery: gallery.to_string(), group })
        .await
        .map_err(|e| ClientError::status(format!("loading {file}"), &e))?;
    Ok(r.into_inner())
}

/// Stops serving a shard.
pub async fn unload_shard(c: &mut Clients, gallery: &str, group: u32, name: &str) -> Result<pb::Shard, ClientError> {
    let r = c
        .gallery
        .unload_shard(pb::UnloadShardRequest { name: name.to_string(), gallery: gallery.to_string(), group })
        .await
        .map_err(|e| ClientError::status(format!("unloading {name}"), &e))?;
    Ok(r.into_inner())
}

/// The server's gallery and load figures.
pub async fn stats(c: &mut Clients, gallery: &str) -> Result<pb::StatsResponse, ClientError> {
    let r = c
        .gallery
        .stats(pb::StatsRequest { gallery: gallery.to_string() })
        .await
        .map_err(|e| ClientError::status("asking for statistics", &e))?;
    Ok(r.into_inner())
}

/// Shards as a table; a shard left out gets a footnote with its error.
pub fn shards_table(shards: &[pb::Shard]) -> Table {
    let mut t = Table::new(["shard", "file", "templates", "subjects", "size", "state"]);
    for s in shards {
        let state = if s.error.is_empty() {
            s.status.clone()
        } else {
            t.note(format!("[{}] {}: {}", t.len() + 1, s.name, s.error));
            format!("{} [{}]", s.status, t.len())
        };
        t.row([s.name.clone(), s.file.clone(), count(s.templates), count(s.subjects), bytes(s.bytes), state]);
    }
    t
}

/// Stats as a two-column table.
pub fn stats_table(s: &pb::StatsResponse) -> Table {
    let mut t = Table::new(["statistic", "value"]);
    let rows: [(&str, String); 13] = [
        ("subjects", count(s.subjects)),
        ("templates", count(s.templates)),
        ("shards served", s.shards.to_string()),
        ("shards left out (damaged or missing)", s.problems.to_string()),
        ("templates enrolled since the last compaction", count(s.delta_templates)),
        ("subjects deleted since the last compaction", count(s.tombstones)),
        ("write-ahead log", bytes(s.wal_bytes)),
        ("gallery generation", s.generation.to_string()),
        ("re-scoring backend", s.backend.clone()),
        ("searches in flight (running or queued)", format!("{} of {}", s.in_flight, s.max_in_flight)),
        ("identifications since start", count(s.identifications)),
        ("requests shed since start (server full)", count(s.shed)),
        (
            "load",
            format!(
                "{}% of the admission limit",
                number(100.0 * f64::from(s.in_flight) / f64::from(s.max_in_flight.max(1)))
            ),
        ),
    ];
    for (k, v) in rows {
        t.row([k.to_string(), v]);
    }
    t
}

/// Compacts a gallery's log into shards (the server does it).
pub async fn compact(c: &mut Clients, gallery: &str) -> Result<pb::CompactResponse, ClientError> {
    let r = c
        .gallery
        .compact(pb::CompactRequest { gallery: gallery.to_string() })
        .await
        .map_err(|e| ClientError::status("compacting", &e))?;
    Ok(r.into_inner())
}

/// Stats as JSON (field names as in the API).
pub fn stats_json(s: &pb::StatsResponse) -> serde_json::Value {
    serde_json::json!({
        "templates": s.templates, "subjects": s.subjects, "shards": s.shards,
        "delta_templates": s.delta_templates, "tombstones": s.tombstones, "wal_bytes": s.wal_bytes,
        "generation": s.generation, "backend": s.backend, "in_flight": s.in_flight,
        "max_in_flight": s.max_in_flight, "problems": s.problems,
        "identifications": s.identifications, "shed": s.shed,
    })
}

/// Shards as JSON.
pub fn shards_json(shards: &[pb::Shard]) -> serde_json::Value {
    serde_json::Value::Array(
        shards
            .iter()
            .map(|s| {
                serde_json::json!({"name": s.name, "file": s.file, "templates": s.templates, "subjects": s.subjects,
                    "bytes": s.bytes, "status": s.status, "error": s.error})
            })
            .collect(),
    )
}
