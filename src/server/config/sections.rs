//! The sections of the configuration other than `[limits]`: `[server]`,
//! `[gallery]` and `[[galleries]]`, `[notifications]`, `[backend]`,
//! `[tls]`, `[auth]` (its tokens and their roles) and `[audit]`.

use crate::rescore::BackendChoice;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// gRPC address.
    pub listen: SocketAddr,
    /// Prometheus metrics address (`/metrics`), if any.
    pub metrics_listen: Option<SocketAddr>,
    /// Search worker threads (0: one per core).
    pub workers: usize,
    /// Threads one search may use for its fingers, shards and candidates
    /// (its own pool: more lowers one request's latency when few run at once).
    pub threads_per_search: usize,
    /// Searches admitted at once (running and queued); more are shed.
    pub max_in_flight: usize,
    /// Largest request or reply message.
    pub max_message_bytes: usize,
    /// Seconds in-flight requests get to finish on shutdown.
    pub shutdown_grace_s: u64,
    /// Serve beyond loopback without authentication (every caller an admin).
    pub dangerously_allow_unauthenticated_network: bool,
}

impl Default for ServerSection {
    fn default() -> ServerSection {
        ServerSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: None,
            workers: 0,
            threads_per_search: 1,
            max_in_flight: 64,
            max_message_bytes: 4 << 20,
            shutdown_grace_s: 30,
            dangerously_allow_unauthenticated_network: false,
        }
    }
}

/// `[gallery]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GallerySection {
    /// The gallery folder (one gallery; `[[galleries]]` adds more).
    pub path: PathBuf,
    /// Its name (what requests name it by).
    pub name: String,
    /// Where galleries added at run time (AddGallery) live (default: the
    /// folder holding the first configured gallery).
    pub root: Option<PathBuf>,
    /// Hits in it raise notifications.
    pub notify: bool,
    /// CRC every section of every shard before serving it (format 3: the
    /// cylinders and minutiae template by template, when first read).
    pub verify_on_open: bool,
    /// Enrolment durability.
    pub sync: SyncChoice,
    /// Build missing or stale indexes on open.
    pub build_missing_indexes: bool,
    /// Compact once the write-ahead log passes this many bytes (0: never).
    pub compact_log_bytes: u64,
    /// Compact once the write-ahead log holds this many records (0: never).
    pub compact_log_records: u64,
    /// HNSW implementation searched: `whorl` (default) or `hnsw_rs`.
    pub index: crate::index::IndexKind,
}

impl Default for GallerySection {
    fn default() -> GallerySection {
        GallerySection {
            path: PathBuf::new(),
            name: "default".into(),
            root: None,
            notify: false,
            verify_on_open: true,
            sync: SyncChoice::PerRecord,
            build_missing_indexes: true,
            compact_log_bytes: 16 << 20,
            compact_log_records: 100_000,
            index: crate::index::IndexKind::Whorl,
        }
    }
}

/// `[[galleries]]`: a named gallery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedGallery {
    /// Its name (1-64 of a-z, 0-9, '-', '_').
    pub name: String,
    /// Its folder.
    pub path: PathBuf,
    /// Searched when an Identify names no gallery.
    #[serde(default = "yes")]
    pub default: bool,
    /// Hits in it raise notifications.
    #[serde(default)]
    pub notify: bool,
}

fn yes() -> bool {
    true
}

/// `[notifications]`: hit notifications of the galleries that notify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsSection {
    /// Folder of the event logs (needed when a gallery notifies; a
    /// router keeps its events in etcd instead).
    pub dir: Option<PathBuf>,
    /// Events are dropped this many days after they happened.
    pub retention_days: f64,
    /// The subject label holding an integer priority (offence level).
    pub priority_label: String,
}

impl Default for NotificationsSection {
    fn default() -> NotificationsSection {
        NotificationsSection { dir: None, retention_days: 30.0, priority_label: "priority".into() }
    }
}

/// Write-ahead log durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncChoice {
    /// fsync every record before acknowledging it.
    PerRecord,
    /// Group commit: concurrent enrolments share an fsync.
    Group,
}

/// `[backend]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendSection {
    /// cpu, gpu or auto.
    pub choice: BackendChoice,
    /// GPU memory for resident shard cylinders, MiB.
    pub gpu_resident_mib: u64,
    /// Longest wait for one GPU batch, ms; past it the GPU is taken out of
    /// service and the CPU re-scores (counted in `whorl_gpu_fallbacks_total`).
    pub gpu_poll_timeout_ms: u64,
    /// Cap on one GPU storage binding, bytes (default: the device's limit;
    /// `WHORL_GPU_MAX_BINDING`). Tests set it small to run the multi-chunk paths.
    pub gpu_max_binding: Option<u64>,
    /// Cap on work items per GPU dispatch (default: the device's limit;
    /// `WHORL_GPU_MAX_ITEMS`). Tests set it small to run the multi-batch paths.
    pub gpu_max_items: Option<usize>,
}

impl Default for BackendSection {
    fn default() -> BackendSection {
        BackendSection {
            choice: BackendChoice::Auto,
            gpu_resident_mib: 4096,
            gpu_poll_timeout_ms: 10_000,
            gpu_max_binding: None,
            gpu_max_items: None,
        }
    }
}

/// `[tls]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA that client certificates must chain to (mutual TLS), if any.
    pub client_ca: Option<PathBuf>,
}

/// A caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Identify and verify; list shards and stats.
    Search,
    /// Everything: also enrol, delete, read subjects and manage shards.
    Admin,
    /// Subscribe to hit notifications and acknowledge them (nothing else).
    Notify,
}

impl Role {
    /// Whether this role may make a call that needs `need`: an admin may
    /// do everything, the others only their own kind of call.
    pub fn allows(self, need: Role) -> bool {
        self == Role::Admin || self == need
    }
}

/// One bearer token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it (logged and audited instead of the token).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The token itself (hashed when loaded).
    pub token: Option<String>,
    /// Or its SHA-256, hex.
    pub token_sha256: Option<String>,
    /// The galleries it may use (empty: every one).
    #[serde(default)]
    pub galleries: Vec<String>,
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a token.
        f.debug_struct("TokenEntry").field("name", &self.name).field("role", &self.role).finish_non_exhaustive()
    }
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// The accepted tokens; none turns authentication off.
    pub tokens: Vec<TokenEntry>,
}

/// `[audit]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSection {
    /// JSON-lines file; none: audit events go to the log only.
    pub path: Option<PathBuf>,
}
