//! Changing a gallery while it serves: enrolment, deletion, attaching and
//! detaching shards, compaction.

mod compact;
mod shards;

pub use compact::{CompactReport, MigrateReport, migrate};

use super::delta::{Delta, DeltaEntry};
use super::manifest::ShardEntry;
use super::wal::Op;
use super::{Gallery, GalleryError, Snapshot, lock_err};
use crate::cancel::Cancel;
use crate::embed::Embedder;
use crate::mcc::Matcher;
use crate::shard::{SectionKind, Shard};
use crate::template::Template;
use std::sync::Arc;

/// Most templates one enrolment may carry (ten fingers, and spares).
pub const MAX_TEMPLATES: usize = 16;
/// Longest subject id, label key or value.
pub const MAX_TEXT: usize = 256;

/// A subject as the gallery holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectView {
    /// Subject id.
    pub id: String,
    /// Labels.
    pub labels: Vec<(String, String)>,
    /// Templates, from every shard and the delta.
    pub templates: Vec<Template>,
    /// Where each template is: a shard name, or `delta`.
    pub sources: Vec<String>,
    /// Where they are: shard names, or `delta`.
    pub locations: Vec<String>,
}

/// What an enrolment of an id already in the gallery does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// Refuse it: [`GalleryError::AlreadyExists`].
    #[default]
    Create,
    /// The new templates and labels replace all the subject had (one log
    /// record: a search sees the old subject or the new one, never a mix).
    Replace,
}

fn valid_text(what: &str, s: &str) -> Result<(), GalleryError> {
    if s.is_empty() || s.len() > MAX_TEXT || s.chars().any(char::is_control) {
        return Err(GalleryError::Invalid(format!("{what} must be 1-{MAX_TEXT} bytes without control characters")));
    }
    Ok(())
}

/// Applies a logged operation to the delta (on replay and after logging).
pub(super) fn apply(
    delta: &mut Delta,
    embedder: &Embedder,
    matcher: &Matcher,
    seq: u64,
    op: Op,
) -> Result<(), GalleryError> {
    match op {
        Op::Enroll { subject, labels, templates, replace } => {
            if replace {
                hide_before(delta, &subject, seq);
            }
            let subject: Arc<str> = subject.into();
            let labels = Arc::new(labels);
            for t in templates {
                delta.push(Arc::new(entry(embedder, matcher, seq, &subject, &labels, t)));
            }
        }
        Op::Delete { subject } => {
            let s = delta.tombstones.entry(subject).or_insert(seq);
            *s = (*s).max(seq);
        }
    }
    Ok(())
}

/// Hides everything `subject` had before log sequence `seq`: its shard
/// templates and its delta entries (a tombstone just below `seq`, so that
/// entries logged at `seq` stay visible).
fn hide_before(delta: &mut Delta, subject: &str, seq: u64) {
    let t = delta.tombstones.entry(subject.to_string()).or_insert(0);
    *t = (*t).max(seq.saturating_sub(1));
}

/// The first known finger position that appears twice, as a probe refuses it.
fn duplicate_position(templates: &[Template]) -> Option<(usize, u8)> {
    let mut seen = std::collections::HashSet::new();
    templates
        .iter()
        .enumerate()
        .find(|(_, t)| t.finger_position.is_known() && !seen.insert(t.finger_position))
        .map(|(i, t)| (i, t.finger_position.0))
}

/// Whether `subject` is visible in `snap`.
fn exists(snap: &Snapshot, subject: &str) -> bool {
    snap.delta.subject_indices(subject).next().is_some()
        || (!snap.delta.hides_shard_subject(subject) && snap.shards.iter().any(|s| s.by_subject.contains_key(subject)))
}

/// A subject id reserved for one write; released when dropped.
struct Reserved<'a> {
    gallery: &'a Gallery,
    id: String,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.gallery.writing.lock() {
            w.remove(&self.id);
        }
    }
}

fn entry(
    embedder: &Embedder,
    matcher: &Matcher,
    seq: u64,
    subject: &Arc<str>,
    labels: &Arc<Vec<(String, String)>>,
    template: Template,
) -> DeltaEntry {
    let prepared = matcher.prepare(&template);
    let embedding = embedder.embed(&template);
    DeltaEntry { seq, subject: Arc::clone(subject), labels: Arc::clone(labels), template, prepared, embedding }
}

impl Gallery {
    /// Enrols `templates` (one per finger) under a new `subject`; returns
    /// the log sequence number once the enrolment is durable and
    /// searchable. An id already visible is refused ([`WriteMode::Create`]).
    pub fn enroll(
        &self,
        subject: &str,
        labels: Vec<(String, String)>,
        templates: Vec<Template>,
    ) -> Result<u64, GalleryError> {
        self.enroll_with(subject, labels, templates, WriteMode::Create, &Cancel::default())
    }

    /// Enrols or replaces a subject (see [`WriteMode`]). `cancel` is checked
    /// while the cylinders are made and before the record is logged; once
    /// logged, the enrolment completes whatever happens to the caller.
    pub fn enroll_with(
        &self,
        subject: &str,
        labels: Vec<(String, String)>,
        templates: Vec<Template>,
        mode: WriteMode,
        cancel: &Cancel,
    ) -> Result<u64, GalleryError> {
        self.enroll_logged(subject, labels, templates, mode, cancel).map(|(seq, _)| seq)
    }

    /// [`Gallery::enroll_with`], also returning the record as logged (what
    /// a cluster primary sends its replicas).
    pub fn enroll_logged(
        &self,
        subject: &str,
        labels: Vec<(String, String)>,
        templates: Vec<Template>,
        mode: WriteMode,
        cancel: &Cancel,
    ) -> Result<(u64, Vec<u8>), GalleryError> {
        valid_text("subject id", subject)?;
        for (k, v) in &labels {
            valid_text("label key", k)?;
            valid_text("label value", v)?;
        }
        if templates.is_empty() || templates.len() > MAX_TEMPLATES {
            return Err(GalleryError::Invalid(format!(
                "an enrolment carries 1-{MAX_TEMPLATES} templates, not {}",
                templates.len()
            )));
        }
        if let Some(i) = templates.iter().position(|t| t.minutiae.is_empty()) {
            return Err(GalleryError::Invalid(format!("template {i} has no minutiae")));
        }
        if let Some((i, p)) = duplicate_position(&templates) {
            return Err(GalleryError::Invalid(format!(
                "template {i}: finger position {p} appears twice in the enrolment (as in a probe: one view per known position)"
            )));
        }
        let _id = self.reserve(subject)?;
        let present = exists(&self.snapshot(), subject);
        if mode == WriteMode::Create && present {
            return Err(GalleryError::AlreadyExists(format!(
                "subject '{subject}' is enrolled; delete it first or ask for replacement"
            )));
        }
        // Replacing an absent subject is a plain enrolment (no tombstone).
        let replace = mode == WriteMode::Replace && present;
        // Cylinders and vectors first, so nothing logged can fail to apply.
        let arc: Arc<str> = subject.into();
        let larc = Arc::new(labels.clone());
        let mut entries: Vec<DeltaEntry> = Vec::with_capacity(templates.len());
        for t in &templates {
            cancel.check().map_err(GalleryError::Stopped)?;
            let prepared = self.matcher.prepare_until(t, cancel).map_err(GalleryError::Stopped)?;
            let embedding = self.embedder.embed(t);
            entries.push(DeltaEntry {
                seq: 0,
                subject: Arc::clone(&arc),
                labels: Arc::clone(&larc),
                template: t.clone(),
                prepared,
                embedding,
            });
        }
        let _m = self.maintenance_read(cancel)?;
        cancel.check().map_err(GalleryError::Stopped)?;
        let (rec, payload) =
            self.wal.append_encoded(Op::Enroll { subject: subject.to_string(), labels, templates, replace })?;
        self.publish(|s| {
            let mut delta = (*s.delta).clone();
            if replace {
                hide_before(&mut delta, subject, rec.seq);
            }
            for mut e in entries {
                e.seq = rec.seq;
                delta.push(Arc::new(e));
            }
            Snapshot { generation: s.generation + 1, shards: s.shards.clone(), delta: Arc::new(delta) }
        })?;
        Ok((rec.seq, payload))
    }

    /// Deletes a subject (a tombstone until the next compaction); returns
    /// the log sequence number once durable.
    pub fn delete(&self, subject: &str) -> Result<u64, GalleryError> {
        self.delete_with(subject, &Cancel::default())
    }

    /// [`Gallery::delete`], giving up (before logging) when `cancel` stops.
    pub fn delete_with(&self, subject: &str, cancel: &Cancel) -> Result<u64, GalleryError> {
        self.delete_logged(subject, cancel).map(|(seq, _)| seq)
    }

    /// [`Gallery::delete_with`], also returning the record as logged.
    pub fn delete_logged(&self, subject: &str, cancel: &Cancel) -> Result<(u64, Vec<u8>), GalleryError> {
        valid_text("subject id", subject)?;
        let _id = self.reserve(subject)?;
        if !exists(&self.snapshot(), subject) {
            return Err(GalleryError::NotFound(format!("subject '{subject}'")));
        }
        let _m = self.maintenance_read(cancel)?;
        cancel.check().map_err(GalleryError::Stopped)?;
        let (rec, payload) = self.wal.append_encoded(Op::Delete { subject: subject.to_string() })?;
        self.publish(|s| {
            let mut delta = (*s.delta).clone();
            let _ = apply(&mut delta, &self.embedder, &self.matcher, rec.seq, rec.op.clone());
            Snapshot { generation: s.generation + 1, shards: s.shards.clone(), delta: Arc::new(delta) }
        })?;
        Ok((rec.seq, payload))
    }

    /// Reserves `subject` for one write (refused while another write of it runs).
    fn reserve(&self, subject: &str) -> Result<Reserved<'_>, GalleryError> {
        let mut w = self.writing.lock().map_err(lock_err)?;
        if !w.insert(subject.to_string()) {
            return Err(GalleryError::Conflict(format!("another write of subject '{subject}' is in progress")));
        }
        Ok(Reserved { gallery: self, id: subject.to_string() })
    }

    /// The shared maintenance lock, waiting while a compaction holds it
    /// exclusively, as long as `cancel` allows.
    fn maintenance_read(&self, cancel: &Cancel) -> Result<std::sync::RwLockReadGuard<'_, ()>, GalleryError> {
        loop {
            match self.maintenance.try_read() {
                Ok(g) => return Ok(g),
                Err(std::sync::TryLockError::Poisoned(_)) => return Err(lock_err(())),
                Err(std::sync::TryLockError::WouldBlock) => {
                    cancel.check().map_err(GalleryError::Stopped)?;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
    }

    /// The visible templates and labels of `subject`, if any.
    pub fn subject(&self, subject: &str) -> Option<SubjectView> {
        let snap = self.snapshot();
        let mut view = SubjectView {
            id: subject.to_string(),
            labels: Vec::new(),
            templates: Vec::new(),
            sources: Vec::new(),
            locations: Vec::new(),
        };
        if !snap.delta.hides_shard_subject(subject) {
            for s in &snap.shards {
                let Some(ts) = s.by_subject.get(subject) else { continue };
                for &t in ts {
                    if let Ok(tpl) = s.shard.template(t as usize) {
                        view.templates.push(tpl);
                        view.sources.push(s.entry.name.clone());
                    }
                }
                if view.labels.is_empty() {
                    let si = s.shard.subject_index(ts[0] as usize);
                    view.labels = s
                        .shard
                        .subject_labels(si)
                        .map(|l| l.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
                        .unwrap_or_default();
                }
                view.locations.push(s.entry.name.clone());
            }
        }
        let mut in_delta = false;
        for e in snap.delta.subject_entries(subject) {
            view.templates.push(e.template.clone());
            view.sources.push("delta".into());
            view.labels.clone_from(&e.labels);
            in_delta = true;
        }
        if in_delta {
            view.locations.push("delta".into());
        }
        (!view.templates.is_empty()).then_some(view)
    }
}

/// The manifest entry of an opened shard.
pub(super) fn entry_of(shard: &Shard, name: &str, file: &str) -> Result<ShardEntry, GalleryError> {
    let bytes = std::fs::metadata(shard.path())
        .map_err(|e| GalleryError::Io(format!("{}: {e}", shard.path().display())))?
        .len();
    Ok(ShardEntry {
        name: name.to_string(),
        file: file.to_string(),
        templates: shard.len() as u64,
        subjects: shard.subjects() as u64,
        bytes,
        table_crc: shard.header().table_crc,
        embeddings_crc: shard.section_crc(SectionKind::Embeddings),
    })
}
