//! `[limits]`: what one client may ask of the server, in one place (the
//! keys, with their defaults, are in the example of [`super::config`]).
//! Each answers an attack measured in `benches/reports/hardening.md`:
//!
//! * `max_minutiae_per_view`, `max_minutiae_per_probe`: preparing a probe
//!   is quadratic in its minutiae (1,000 took 0.35 s, 4,000 took 4.5 s);
//!   checked while parsing, before any cylinder is built.
//! * `max_candidates`, `max_labels`, `max_label_bytes`: replies stay far
//!   below `server.max_message_bytes` (3,500 labels once made every reply
//!   ranking their subjects fail).
//! * `max_writes_in_flight`: enrolments and deletions are admitted (and
//!   shed) like searches.
//! * `max_connections`, `handshake_timeout_s`, `idle_timeout_s`: connections
//!   that never speak were held forever.
//! * `audit_refusals_per_s`: a flood of refused calls wrote 93,000 audit
//!   lines in 10 s.

use super::config::ConfigError;
use serde::{Deserialize, Serialize};

/// `[limits]`: what one client may ask of the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Most minutiae in one finger view (any format).
    pub max_minutiae_per_view: usize,
    /// Most minutiae in all views of one request (probe or enrolment).
    pub max_minutiae_per_probe: usize,
    /// Most candidates one identification may ask for.
    pub max_candidates: u32,
    /// Most labels per subject, and label filters per search.
    pub max_labels: usize,
    /// Longest label key or value, bytes.
    pub max_label_bytes: usize,
    /// Enrolments and deletions admitted at once; more are shed.
    pub max_writes_in_flight: usize,
    /// Open connections; more are closed as they arrive.
    pub max_connections: usize,
    /// Seconds a new connection has to start HTTP/2 (or its TLS handshake).
    pub handshake_timeout_s: u64,
    /// Seconds without traffic either way after which a connection is closed.
    pub idle_timeout_s: u64,
    /// Audit lines per second for refused calls (unauthenticated, denied,
    /// shed); more are counted into one summary line per second.
    pub audit_refusals_per_s: u32,
}

impl Default for LimitsSection {
    fn default() -> LimitsSection {
        LimitsSection {
            max_minutiae_per_view: 255,
            max_minutiae_per_probe: 1500,
            max_candidates: 100,
            max_labels: 32,
            max_label_bytes: 256,
            max_writes_in_flight: 4,
            max_connections: 1024,
            handshake_timeout_s: 10,
            idle_timeout_s: 600,
            audit_refusals_per_s: 20,
        }
    }
}

impl LimitsSection {
    /// The per-record caps the template parsers apply.
    pub fn template(&self) -> crate::template::Limits {
        crate::template::Limits {
            max_minutiae_per_view: self.max_minutiae_per_view,
            max_views: crate::gallery::MAX_TEMPLATES,
        }
    }

    /// Checks the values (every limit positive, labels within what the gallery stores).
    pub fn check(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max_minutiae_per_view", self.max_minutiae_per_view as u64),
            ("max_minutiae_per_probe", self.max_minutiae_per_probe as u64),
            ("max_candidates", u64::from(self.max_candidates)),
            ("max_label_bytes", self.max_label_bytes as u64),
            ("max_writes_in_flight", self.max_writes_in_flight as u64),
            ("max_connections", self.max_connections as u64),
            ("handshake_timeout_s", self.handshake_timeout_s),
            ("idle_timeout_s", self.idle_timeout_s),
        ];
        if let Some((k, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!("limits.{k} must be positive")));
        }
        if self.max_label_bytes > crate::gallery::MAX_TEXT {
            return Err(ConfigError::Invalid(format!(
                "limits.max_label_bytes {} is over the gallery's {} bytes",
                self.max_label_bytes,
                crate::gallery::MAX_TEXT
            )));
        }
        Ok(())
    }
}
