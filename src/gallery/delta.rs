//! The in-memory delta: subjects enrolled and deleted since the last
//! compaction, replayed from the write-ahead log on open and searched
//! together with the shards.
//!
//! A delete is a tombstone: it hides the subject's templates in every shard
//! and the subject's delta entries enrolled before it; a later enrolment of
//! the same id is visible again. Snapshots share entries (`Arc`), so a
//! search holds a consistent view while writers move on.

use crate::mcc::Prepared;
use crate::template::Template;
use std::collections::HashMap;
use std::sync::Arc;

/// One enrolled template.
#[derive(Debug, Clone)]
pub struct DeltaEntry {
    /// Log sequence number of its enrolment.
    pub seq: u64,
    /// Subject id.
    pub subject: Arc<str>,
    /// The subject's labels.
    pub labels: Arc<Vec<(String, String)>>,
    /// The template.
    pub template: Template,
    /// Its cylinders.
    pub prepared: Prepared,
    /// Its embedding.
    pub embedding: Vec<f32>,
}

/// Enrolments and tombstones not yet folded into shards.
#[derive(Debug, Clone, Default)]
pub struct Delta {
    /// Enrolled templates, in log order.
    pub entries: Vec<Arc<DeltaEntry>>,
    /// Deleted subjects and the sequence number of the deletion.
    pub tombstones: HashMap<String, u64>,
    /// Subject id → indices into `entries` (visible or not).
    pub by_subject: HashMap<Arc<str>, Vec<u32>>,
}

impl Delta {
    /// Whether a shard template of `subject` is hidden.
    pub fn hides_shard_subject(&self, subject: &str) -> bool {
        self.tombstones.contains_key(subject)
    }

    /// Whether a delta entry is visible.
    pub fn visible(&self, e: &DeltaEntry) -> bool {
        self.tombstones.get(&*e.subject).is_none_or(|&t| e.seq > t)
    }

    /// Visible entries.
    pub fn live(&self) -> impl Iterator<Item = &Arc<DeltaEntry>> {
        self.entries.iter().filter(|e| self.visible(e))
    }

    /// Visible entries of `subject`.
    pub fn subject_entries<'a>(&'a self, subject: &'a str) -> impl Iterator<Item = &'a Arc<DeltaEntry>> + 'a {
        self.subject_indices(subject).map(|i| &self.entries[i])
    }

    /// Indices into `entries` of the visible entries of `subject`.
    pub fn subject_indices<'a>(&'a self, subject: &'a str) -> impl Iterator<Item = usize> + 'a {
        self.by_subject
            .get(subject)
            .into_iter()
            .flatten()
            .map(|&i| i as usize)
            .filter(move |&i| self.visible(&self.entries[i]))
    }

    /// Appends an entry.
    pub fn push(&mut self, e: Arc<DeltaEntry>) {
        self.by_subject.entry(Arc::clone(&e.subject)).or_default().push(self.entries.len() as u32);
        self.entries.push(e);
    }
}
