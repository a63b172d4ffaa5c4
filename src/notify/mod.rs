//! Hit notifications: when a search hits a subject of a gallery that
//! notifies (the immigration records, say), one event is made durable
//! before the search is answered, and subscribers (an enforcement
//! agency's case system) receive it at least once, in order per gallery,
//! until they acknowledge it.
//!
//! * **Never lost**: [`EventStore::append`] returns only once the events
//!   are durable (fsynced to the server's event log, or committed by
//!   etcd for a cluster); the search reply is sent after it.
//! * **Never invented**: only hits raise events, and a search retried with
//!   the same transaction id raises none for a (gallery, subject) it has
//!   already raised one for.
//! * **Ordered, resumable**: events of a gallery carry consecutive
//!   sequence numbers; a subscriber's acknowledgement is cumulative per
//!   gallery and durable, and a subscription starts after it.
//! * **Retention**: events older than the configured retention are
//!   dropped; those some subscriber had not acknowledged are counted.
//!
//! Two stores with one test suite: [`file::FileStore`] (a server's own
//! folder) and [`etcd::EtcdStore`] (a cluster's routers share etcd).

pub mod etcd;
pub mod file;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Errors of an event store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotifyError {
    /// The store could not write or read.
    #[error("notification store: {0}")]
    Store(String),
    /// A request the store refuses.
    #[error("{0}")]
    Invalid(String),
}

/// A hit to record (the store gives it its sequence number and time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// The gallery hit.
    pub gallery: String,
    /// The subject hit.
    pub subject: String,
    /// Its labels.
    pub labels: Vec<(String, String)>,
    /// Its priority (from the priority label).
    pub priority: i64,
    /// Fused score, decades.
    pub fused: f64,
    /// The threshold passed, decades.
    pub threshold: f64,
    /// Target FPIR of the decision (NaN when a threshold was given).
    pub target_fpir: f64,
    /// Subjects in the gallery when searched.
    pub gallery_subjects: u64,
    /// Per-subject false match probability at the threshold.
    pub subject_fmr: f64,
    /// The impostor model.
    pub model: String,
    /// Rank in the reply (1: best).
    pub rank: u32,
    /// Who searched.
    pub client: String,
    /// The caller's transaction id (may be empty).
    pub transaction_id: String,
    /// The caller's request id (may be empty).
    pub request_id: String,
    /// SHA-256 of the probe's bytes.
    pub probe_sha256: String,
}

/// A recorded hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HitEvent {
    /// Sequence number in its gallery (1, 2, ...).
    pub sequence: u64,
    /// When it was recorded, ms since the Unix epoch.
    pub time_ms: u64,
    /// The hit.
    #[serde(flatten)]
    pub hit: NewEvent,
}

impl HitEvent {
    /// `<gallery>/<sequence>`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.hit.gallery, self.sequence)
    }
}

/// The de-duplication key of a hit: retried searches with the same
/// transaction id raise no second event (none without a transaction id).
pub fn dedup_key(e: &NewEvent) -> Option<String> {
    (!e.transaction_id.is_empty()).then(|| {
        let h = crate::groups::key_of(&format!("{}\u{0}{}\u{0}{}", e.gallery, e.transaction_id, e.subject));
        format!("{h:016x}")
    })
}

/// Which events a subscription wants.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    /// Only subjects carrying all of these labels.
    pub labels: Vec<(String, String)>,
    /// Only events of at least this priority.
    pub min_priority: i64,
}

impl Filter {
    /// Whether `e` passes.
    pub fn accepts(&self, e: &HitEvent) -> bool {
        e.hit.priority >= self.min_priority
            && self.labels.iter().all(|(k, v)| e.hit.labels.iter().any(|(hk, hv)| hk == k && hv == v))
    }
}

/// The priority a subject's labels give: the integer value of `label`, 0
/// when absent or not a number.
pub fn priority_of(labels: &[(String, String)], label: &str) -> i64 {
    labels.iter().find(|(k, _)| k == label).and_then(|(_, v)| v.trim().parse().ok()).unwrap_or(0)
}

/// What a gallery's notifications look like now (for metrics).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Backlog {
    /// The last sequence number recorded.
    pub last: u64,
    /// Per subscriber: events not yet acknowledged, and the age of the
    /// oldest of them.
    pub subscribers: BTreeMap<String, (u64, Duration)>,
    /// Events dropped by retention before every subscriber acknowledged them.
    pub expired_unacked: u64,
}

/// Where events are kept.
#[tonic::async_trait]
pub trait EventStore: Send + Sync {
    /// Records `events` durably; returns them as recorded (a duplicate of
    /// an earlier transaction's hit returns the earlier event).
    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<HitEvent>, NotifyError>;
    /// Events of `gallery` after sequence `after`, oldest first, at most `limit`.
    async fn read(&self, gallery: &str, after: u64, limit: usize) -> Result<Vec<HitEvent>, NotifyError>;
    /// Waits until some gallery of `cursors` holds an event after its
    /// sequence, or `timeout`.
    async fn wait(&self, cursors: &[(String, u64)], timeout: Duration);
    /// Acknowledges events up to `sequence` of `gallery` for `subscriber`;
    /// returns the acknowledged sequence now (it never goes back).
    async fn ack(&self, subscriber: &str, gallery: &str, sequence: u64) -> Result<u64, NotifyError>;
    /// The sequence `subscriber` has acknowledged in `gallery` (0: none).
    async fn acked(&self, subscriber: &str, gallery: &str) -> Result<u64, NotifyError>;
    /// Drops events older than the retention; returns how many.
    async fn expire(&self) -> Result<u64, NotifyError>;
    /// The backlog of every gallery.
    async fn backlog(&self) -> BTreeMap<String, Backlog>;
}

/// Subscriber names: 1-128 of letters, digits, `-_.@:`.
pub fn valid_subscriber(s: &str) -> Result<(), NotifyError> {
    let ok = !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@:".contains(&b));
    if ok { Ok(()) } else { Err(NotifyError::Invalid(format!("'{s}' is not a valid subscriber name"))) }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
pub(crate) mod suite {
    //! The one test suite both stores pass.

    use super::*;

    pub fn hit(gallery: &str, subject: &str, tx: &str, priority: i64) -> NewEvent {
        NewEvent {
            gallery: gallery.into(),
            subject: subject.into(),
            labels: vec![("priority".into(), priority.to_string())],
            priority,
            fused: 12.5,
            threshold: 7.0,
            target_fpir: 0.01,
            gallery_subjects: 1000,
            subject_fmr: 1e-5,
            model: crate::search::impostor::BUILTIN_NAME.into(),
            rank: 1,
            client: "station-7".into(),
            transaction_id: tx.into(),
            request_id: "r1".into(),
            probe_sha256: "ab".repeat(32),
        }
    }

    /// Appends, reads in order, de-duplicates, acknowledges, resumes.
    pub async fn behaves(s: &dyn EventStore) {
        let a = s.append(vec![hit("imm", "alice", "T1", 3), hit("imm", "bob", "T1", 1)]).await.unwrap();
        assert_eq!(a.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![1, 2]);
        let again = s.append(vec![hit("imm", "alice", "T1", 3)]).await.unwrap();
        assert_eq!(again[0].sequence, 1, "a retried transaction raises no second event");
        let c = s.append(vec![hit("imm", "carol", "", 5), hit("crim", "dan", "T2", 0)]).await.unwrap();
        assert_eq!((c[0].sequence, c[1].sequence), (3, 1), "sequences are per gallery");
        let all = s.read("imm", 0, 100).await.unwrap();
        assert_eq!(all.iter().map(|e| e.hit.subject.as_str()).collect::<Vec<_>>(), ["alice", "bob", "carol"]);
        assert_eq!(s.read("imm", 1, 1).await.unwrap()[0].hit.subject, "bob");
        assert_eq!(s.acked("agency", "imm").await.unwrap(), 0);
        assert_eq!(s.ack("agency", "imm", 2).await.unwrap(), 2);
        assert_eq!(s.ack("agency", "imm", 1).await.unwrap(), 2, "acknowledgements never go back");
        assert_eq!(s.acked("agency", "imm").await.unwrap(), 2);
        assert!(s.ack("agency", "imm", 99).await.is_err(), "cannot acknowledge what was never sent");
        let bl = s.backlog().await;
        assert_eq!(bl["imm"].last, 3);
        assert_eq!(bl["imm"].subscribers["agency"].0, 1);
        // A waiter with nothing new returns at its limit (nothing to assert
        // but that it returns).
        s.wait(&[("imm".into(), 3), ("crim".into(), 1)], Duration::from_millis(50)).await;
        assert!(Filter { labels: vec![], min_priority: 3 }.accepts(&all[0]));
        assert!(!Filter { labels: vec![], min_priority: 3 }.accepts(&all[1]));
    }
}
