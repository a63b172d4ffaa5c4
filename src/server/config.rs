//! The server's configuration: a TOML file, overridden by command-line
//! flags and environment variables (`whorl serve --help` lists them).
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:50051"
//! metrics_listen = "127.0.0.1:9108"     # Prometheus /metrics; omit to disable
//! workers = 0                           # searches at once; 0 = one per core
//! threads_per_search = 1                # threads each search may use
//! max_in_flight = 64                    # admitted searches (running + queued); more are shed
//! max_message_bytes = 4194304           # larger requests: RESOURCE_EXHAUSTED
//! shutdown_grace_s = 30                 # in-flight requests get this long to finish
//! # Listening beyond loopback needs authentication (tokens or mTLS); this
//! # turns the refusal off and makes every caller on the network an admin:
//! dangerously_allow_unauthenticated_network = false
//!
//! [limits]                              # what one client may ask of the server
//! max_minutiae_per_view = 255           # per finger view, any format (ISO/ANSI records cannot hold more)
//! max_minutiae_per_probe = 1500         # all views of one request (a probe or an enrolment)
//! max_candidates = 100                  # candidates one identification may ask for
//! max_labels = 32                       # labels per subject, and label filters per search
//! max_label_bytes = 256                 # each label key and each value
//! max_writes_in_flight = 4              # enrolments and deletions admitted at once; more are shed
//! max_connections = 1024                # open connections; more are closed as they arrive
//! handshake_timeout_s = 10              # a connection must start HTTP/2 (or TLS) within this
//! idle_timeout_s = 600                  # a connection with no traffic either way is closed
//! audit_refusals_per_s = 20             # audit lines per second for refused calls; the rest are counted
//!
//! [gallery]
//! path = "/srv/whorl/gallery"
//! verify_on_open = true                 # CRC every section before serving a shard (format 3:
//!                                       # cylinders and minutiae per template, when first read)
//! sync = "per-record"                   # or "group": enrolment durability
//! compact_log_bytes = 16777216          # compact when the write-ahead log passes this (0: never)
//! compact_log_records = 100000          # ... or holds this many records (0: never)
//! index = "whorl"                       # or "hnsw_rs": whorl's graphs inside the shards (searched in
//!                                       # place) or hnsw_rs files beside them (built when missing)
//!
//! [search]                              # see whorl::search::SearchConfig
//! candidates_per_finger = 100
//! ef = 512                              # HNSW breadth for partitions up to ef_reference templates
//! ef_reference = 100000                 # larger partitions: ef scaled by size / ef_reference (0: off)
//! default_fpir = 0.01
//! round2_subjects = 64                  # ten-prints: subjects whose other fingers are re-scored
//!
//! [backend]
//! choice = "auto"                       # cpu | gpu | auto (WHORL_BACKEND overrides)
//! gpu_resident_mib = 4096
//! gpu_poll_timeout_ms = 10000           # a GPU batch taking longer: the GPU is dropped, the CPU takes over
//!                                       # (a software adapter such as lavapipe needs far more)
//!
//! [tls]                                 # omit for plaintext (loopback only!)
//! cert = "server.pem"
//! key = "server.key"
//! client_ca = "ca.pem"                  # set: clients must present a certificate (mTLS)
//!
//! [[auth.tokens]]                       # no tokens: authentication is off (loopback only!)
//! name = "booking-station-7"
//! role = "search"                       # search: identify, verify; admin: also enrol, delete, shards
//! token_sha256 = "9f86d0..."            # or token = "..." (hashed on load, never logged)
//!
//! [audit]
//! path = "audit.jsonl"                  # append-only JSON lines (created 0600)
//! ```
//!
//! Why each limit exists (the attacks they answer are measured in
//! `benches/reports/hardening.md`): preparing a probe is quadratic in its
//! minutiae, so the minutiae caps bound one request's work (checked while
//! parsing, before any cylinder is built); `max_candidates`, `max_labels`
//! and `max_label_bytes` keep replies far below `max_message_bytes` (and
//! a reply that would still pass it loses its last candidates rather than
//! failing); the connection limits answer clients that open connections
//! and never speak. Parse errors of this file name the line and column but
//! never echo its text (it holds tokens).

pub use super::limits::LimitsSection;
use crate::rescore::BackendChoice;
use crate::search::SearchConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything `whorl serve` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Network and limits.
    pub server: ServerSection,
    /// The gallery folder.
    pub gallery: GallerySection,
    /// Pipeline tunables.
    pub search: SearchConfig,
    /// Re-scoring backend.
    pub backend: BackendSection,
    /// TLS, when set.
    pub tls: Option<TlsSection>,
    /// Bearer tokens.
    pub auth: AuthSection,
    /// What one client may ask.
    pub limits: LimitsSection,
    /// The audit log.
    pub audit: AuditSection,
    /// More named galleries (each searched, enrolled, compacted on its own).
    pub galleries: Vec<NamedGallery>,
    /// Hit notifications.
    pub notifications: NotificationsSection,
    /// Set: this server is a node of a cluster (see [`crate::cluster::config`]).
    pub cluster: Option<crate::cluster::config::ClusterSection>,
    /// Set: this process routes for a cluster (`whorl route`).
    pub router: Option<crate::cluster::config::RouterSection>,
}

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

/// Errors reading or checking the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A value is wrong.
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file. A parse error names the line and column and
    /// never quotes the file (which holds tokens).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.display().to_string(), message: e.to_string() })?;
        Config::parse(&text).map_err(|message| ConfigError::Read { path: path.display().to_string(), message })
    }

    /// Parses TOML text; the error is safe to print (see [`Config::load`]).
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| scrub_toml_error(text, &e))
    }

    /// Checks the values that cannot be checked by their types.
    pub fn check(&self) -> Result<(), ConfigError> {
        if let Some(c) = &self.cluster {
            c.check().map_err(ConfigError::Invalid)?;
        }
        if let Some(r) = &self.router {
            r.check().map_err(ConfigError::Invalid)?;
        }
        let named = self.named_galleries();
        let mut seen = std::collections::HashSet::new();
        for g in &named {
            crate::cluster::map::valid_name(&g.name).map_err(|e| ConfigError::Invalid(format!("gallery name: {e}")))?;
            if !seen.insert(g.name.clone()) {
                return Err(ConfigError::Invalid(format!("gallery '{}' is configured twice", g.name)));
            }
        }
        if named.iter().any(|g| g.notify) && self.notifications.dir.is_none() && self.router.is_none() {
            return Err(ConfigError::Invalid(
                "a gallery notifies: set [notifications] dir (where hit events are kept)".into(),
            ));
        }
        if self.notifications.retention_days.is_nan() || self.notifications.retention_days <= 0.0 {
            return Err(ConfigError::Invalid("notifications.retention_days must be positive".into()));
        }
        if named.is_empty() && self.cluster.is_none() && self.router.is_none() {
            return Err(ConfigError::Invalid(
                "gallery.path is not set (config file, --gallery or WHORL_GALLERY)".into(),
            ));
        }
        if self.server.threads_per_search == 0 || self.server.threads_per_search > 256 {
            return Err(ConfigError::Invalid("server.threads_per_search must be 1-256".into()));
        }
        if self.server.max_in_flight == 0 {
            return Err(ConfigError::Invalid("server.max_in_flight must be at least 1".into()));
        }
        if self.server.max_message_bytes < 1024 {
            return Err(ConfigError::Invalid("server.max_message_bytes must be at least 1024".into()));
        }
        self.check_limits()?;
        self.check_exposure()?;
        for t in &self.auth.tokens {
            match (&t.token, &t.token_sha256) {
                (Some(tok), None) if tok.len() >= 16 => {}
                (Some(_), None) => {
                    return Err(ConfigError::Invalid(format!("token '{}' is shorter than 16 characters", t.name)));
                }
                (None, Some(h)) if h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()) => {}
                (None, Some(_)) => {
                    return Err(ConfigError::Invalid(format!(
                        "token '{}': token_sha256 must be 64 hex digits",
                        t.name
                    )));
                }
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "token '{}' needs exactly one of token and token_sha256",
                        t.name
                    )));
                }
            }
        }
        let c = &self.search;
        if c.candidates_per_finger == 0 || c.ef == 0 || c.max_candidates == 0 {
            return Err(ConfigError::Invalid(
                "search: candidates_per_finger, ef and max_candidates must be positive".into(),
            ));
        }
        if !(c.default_fpir > 0.0 && c.default_fpir < 1.0) {
            return Err(ConfigError::Invalid(format!("search.default_fpir {} is not in (0, 1)", c.default_fpir)));
        }
        Ok(())
    }

    fn check_limits(&self) -> Result<(), ConfigError> {
        self.limits.check()?;
        if self.backend.gpu_poll_timeout_ms == 0 {
            return Err(ConfigError::Invalid("backend.gpu_poll_timeout_ms must be positive".into()));
        }
        Ok(())
    }

    /// Whether callers must prove who they are: tokens, or client certificates (mTLS).
    pub fn authenticates(&self) -> bool {
        !self.auth.tokens.is_empty() || self.tls.as_ref().is_some_and(|t| t.client_ca.is_some())
    }

    /// Refuses to serve beyond loopback without authentication, unless
    /// `server.dangerously_allow_unauthenticated_network` says so.
    fn check_exposure(&self) -> Result<(), ConfigError> {
        let ip = self.server.listen.ip();
        if ip.is_loopback() || self.authenticates() || self.server.dangerously_allow_unauthenticated_network {
            return Ok(());
        }
        Err(ConfigError::Invalid(format!(
            "refusing to listen on {} without authentication: anyone who can reach it would be an admin \
             (enrol, delete, read templates). Configure [[auth.tokens]] or mutual TLS ([tls] client_ca), \
             listen on loopback, or set server.dangerously_allow_unauthenticated_network = true \
             (--dangerously-allow-unauthenticated-network) if the network itself is trusted",
            self.server.listen
        )))
    }

    /// Every gallery served, in order: `[gallery] path` (if set) first,
    /// then `[[galleries]]`.
    pub fn named_galleries(&self) -> Vec<NamedGallery> {
        let mut v = Vec::new();
        if !self.gallery.path.as_os_str().is_empty() {
            v.push(NamedGallery {
                name: self.gallery.name.clone(),
                path: self.gallery.path.clone(),
                default: true,
                notify: self.gallery.notify,
            });
        }
        v.extend(self.galleries.iter().cloned());
        v
    }

    /// The folder galleries added at run time are made in.
    pub fn galleries_root(&self) -> PathBuf {
        self.gallery.root.clone().unwrap_or_else(|| {
            self.named_galleries()
                .first()
                .and_then(|g| g.path.parent().map(std::path::Path::to_path_buf))
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| PathBuf::from("."))
        })
    }

    /// Worker threads to run.
    pub fn workers(&self) -> usize {
        if self.server.workers > 0 {
            self.server.workers
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
    }
}

/// A TOML error as "line L column C: message", with every quoted value of
/// the message replaced (a misplaced token would otherwise be echoed).
fn scrub_toml_error(text: &str, e: &toml::de::Error) -> String {
    let at = match e.span() {
        Some(r) => {
            let before = &text.as_bytes()[..r.start.min(text.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
            format!("line {line} column {col}: ")
        }
        None => String::new(),
    };
    let msg = e.message();
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    // Keep `...` names of fields and sections ("unknown field `lisen`"), drop
    // anything in double quotes (values) and the variant a value named.
    while let Some(i) = rest.find(['"', '`']) {
        let (head, tail) = rest.split_at(i);
        out.push_str(head);
        let quote = &tail[..1];
        let Some(end) = tail[1..].find(quote) else {
            out.push_str("(text withheld)");
            rest = "";
            break;
        };
        let inner = &tail[1..1 + end];
        let is_value = quote == "\"" || head.ends_with("variant ");
        if is_value {
            out.push_str("(value withheld)");
        } else {
            out.push('`');
            out.push_str(inner);
            out.push('`');
        }
        rest = &tail[end + 2..];
    }
    out.push_str(rest);
    format!("{at}{}", out.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses_and_checks() {
        let doc = include_str!("config.rs");
        let start = doc.find("//! ```toml").unwrap();
        let end = doc[start..].find("//! ```\n").unwrap() + start;
        let toml_text: String = doc[start..end]
            .lines()
            .skip(1)
            .map(|l| l.strip_prefix("//! ").unwrap_or(l.strip_prefix("//!").unwrap_or(l)))
            .map(|l| l.replace("9f86d0...", &"9f86d0".repeat(11)[..64]))
            .collect::<Vec<_>>()
            .join("\n");
        let c: Config = toml::from_str(&toml_text).unwrap();
        c.check().unwrap();
        assert_eq!(c.auth.tokens[0].role, Role::Search);
        assert!(c.tls.as_ref().unwrap().client_ca.is_some());
        assert!(!format!("{:?}", c.auth.tokens).contains("9f86"));
    }

    #[test]
    fn bad_configs_are_refused_clearly() {
        assert!(toml::from_str::<Config>("[server]\nlisen = \"x\"").unwrap_err().to_string().contains("lisen"));
        let mut c = Config { gallery: GallerySection { path: "g".into(), ..Default::default() }, ..Default::default() };
        c.check().unwrap();
        c.auth.tokens.push(TokenEntry {
            name: "a".into(),
            role: Role::Admin,
            token: Some("short".into()),
            token_sha256: None,
            galleries: vec![],
        });
        assert!(c.check().unwrap_err().to_string().contains("shorter"));
        c.auth.tokens[0].token_sha256 = Some("00".into());
        assert!(c.check().unwrap_err().to_string().contains("exactly one"));
        let c = Config::default();
        assert!(c.check().unwrap_err().to_string().contains("gallery.path"));
        let mut c = Config { gallery: GallerySection { path: "g".into(), ..Default::default() }, ..Default::default() };
        c.server.threads_per_search = 0;
        assert!(c.check().unwrap_err().to_string().contains("threads_per_search"));
    }
}
