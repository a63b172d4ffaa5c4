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
//!
//! [gallery]
//! path = "/srv/whorl/gallery"
//! verify_on_open = true                 # CRC every section before serving a shard
//! sync = "per-record"                   # or "group": enrolment durability
//!
//! [search]                              # see whorl::search::SearchConfig
//! candidates_per_finger = 100
//! ef = 128
//! default_fpir = 0.01
//! round2_subjects = 64                  # ten-prints: subjects whose other fingers are re-scored
//!
//! [backend]
//! choice = "auto"                       # cpu | gpu | auto (WHORL_BACKEND overrides)
//! gpu_resident_mib = 4096
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
//! path = "audit.jsonl"                  # append-only JSON lines
//! ```

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
    /// The audit log.
    pub audit: AuditSection,
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
        }
    }
}

/// `[gallery]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GallerySection {
    /// The gallery folder.
    pub path: PathBuf,
    /// CRC every section of every shard before serving it.
    pub verify_on_open: bool,
    /// Enrolment durability.
    pub sync: SyncChoice,
    /// Build missing or stale indexes on open.
    pub build_missing_indexes: bool,
}

impl Default for GallerySection {
    fn default() -> GallerySection {
        GallerySection {
            path: PathBuf::new(),
            verify_on_open: true,
            sync: SyncChoice::PerRecord,
            build_missing_indexes: true,
        }
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
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.display().to_string(), message: e.to_string() })?;
        toml::from_str(&text)
            .map_err(|e| ConfigError::Read { path: path.display().to_string(), message: e.to_string() })
    }

    /// Checks the values that cannot be checked by their types.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.gallery.path.as_os_str().is_empty() {
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

    /// Worker threads to run.
    pub fn workers(&self) -> usize {
        if self.server.workers > 0 {
            self.server.workers
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
    }
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
