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
//! verify_subjects = 10                  # the strongest subjects the second, geometric pass verifies;
//!                                       # only they can be a hit (0: off, 1:1 too; at most 1000)
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

mod sections;

pub use super::limits::LimitsSection;
use crate::search::SearchConfig;
pub use sections::{
    AuditSection, AuthSection, BackendSection, GallerySection, NamedGallery, NotificationsSection, Role, ServerSection,
    SyncChoice, TlsSection, TokenEntry,
};
use serde::{Deserialize, Serialize};
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
        self.search.check().map_err(|e| ConfigError::Invalid(format!("search: {e}")))
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
        let mut c = Config { gallery: GallerySection { path: "g".into(), ..Default::default() }, ..Default::default() };
        c.search.verify_subjects = crate::search::MAX_VERIFY_SUBJECTS + 1;
        assert!(c.check().unwrap_err().to_string().contains("search: verify_subjects 1001 is over 1000"));
        c.search.verify_subjects = 0;
        c.check().unwrap();
        c.search.ef = 0;
        assert!(c.check().unwrap_err().to_string().contains("must be positive"));
    }
}
