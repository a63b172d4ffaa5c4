//! Connecting to a whorl server: one channel (TCP_NODELAY, optional TLS
//! and client certificate) and the generated clients with the bearer token
//! attached to every call.

use super::pb;
use super::pb::gallery_client::GalleryClient;
use super::pb::identification_client::IdentificationClient;
use super::pb::notifications_client::NotificationsClient;
use std::path::PathBuf;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Bearer(<token>)" } else { "Bearer(none)" })
    }
}

impl Bearer {
    /// Sends `token` (none: no header).
    pub fn new(token: Option<&str>) -> Result<Bearer, String> {
        match token {
            Some(t) => format!("Bearer {t}")
                .parse()
                .map(|v| Bearer(Some(v)))
                .map_err(|_| "the token holds characters a header cannot carry".to_string()),
            None => Ok(Bearer(None)),
        }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

/// An Identification client with the token attached.
pub type Identification = IdentificationClient<InterceptedService<Channel, Bearer>>;
/// A Gallery client with the token attached.
pub type GalleryAdmin = GalleryClient<InterceptedService<Channel, Bearer>>;
/// A Notifications client with the token attached.
pub type Notifications = NotificationsClient<InterceptedService<Channel, Bearer>>;

/// How to reach a server.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Bearer token (also `WHORL_TOKEN` in the CLI).
    pub token: Option<String>,
    /// CA certificate (PEM) that signed the server's; needed for https URLs
    /// served with a private CA.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Name the server's certificate is checked against (default: the URL's host).
    pub domain: Option<String>,
    /// Largest reply accepted, bytes.
    pub max_message_bytes: Option<usize>,
}

/// A connected pair of clients.
#[derive(Debug, Clone)]
pub struct Clients {
    /// Searches.
    pub identification: Identification,
    /// Gallery operations.
    pub gallery: GalleryAdmin,
    /// Hit notifications (subscribers).
    pub notifications: Notifications,
    /// The channel (for health and reflection clients).
    pub channel: Channel,
}

/// Why a client could not reach a server.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The address is not `host:port` or `http(s)://host:port`.
    #[error("server address '{0}': {1}")]
    Address(String, String),
    /// A TLS file could not be read or TLS could not be set up.
    #[error("{0}")]
    Tls(String),
    /// The bearer token holds characters a header cannot carry.
    #[error("the token holds characters a header cannot carry")]
    Token,
    /// The connection failed (refused, timed out, TLS handshake...).
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// host:port as given.
        addr: String,
        /// Why, in words.
        reason: String,
    },
}

/// Default port of `whorl serve`.
pub const DEFAULT_PORT: u16 = 50051;

/// The URL of a server address as people type it: `host:port` (what
/// `whorl serve` prints), `host` (port 50051), `http://host:port` or
/// `https://host:port`.
pub fn server_url(addr: &str) -> Result<String, ConnectError> {
    let a = addr.trim().trim_end_matches('/');
    let bad = |why: &str| ConnectError::Address(addr.to_string(), why.to_string());
    if a.is_empty() {
        return Err(bad("empty"));
    }
    let (scheme, rest) = match a.split_once("://") {
        Some((s, r)) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {
            (s.to_ascii_lowercase(), r)
        }
        Some((s, _)) => return Err(bad(&format!("scheme '{s}' is not http or https"))),
        None => ("http".to_string(), a),
    };
    if rest.is_empty() || rest.contains('/') {
        return Err(bad("want host:port, e.g. 127.0.0.1:50051"));
    }
    let uri: tonic::codegen::http::Uri =
        format!("{scheme}://{rest}").parse().map_err(|e| bad(&format!("want host:port ({e})")))?;
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    Ok(match authority.port_u16() {
        Some(_) => format!("{scheme}://{rest}"),
        None if rest.ends_with(':') => return Err(bad("no port after ':'")),
        None => format!("{scheme}://{rest}:{DEFAULT_PORT}"),
    })
}

/// host:port of a URL made by [`server_url`].
fn host_port(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, r)| r)
}

/// The cause of a failed connection in words: the innermost error that
/// says something (an I/O error's kind, a TLS alert), never a debug dump.
pub fn connect_reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut chain: Vec<&(dyn std::error::Error + 'static)> = vec![e];
    while let Some(s) = chain.last().and_then(|c| c.source()) {
        chain.push(s);
    }
    for c in &chain {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            return match io.kind() {
                K::ConnectionRefused => "connection refused (is `whorl serve` running?)".into(),
                K::TimedOut => "timed out (is the address right, and the port open?)".into(),
                K::ConnectionReset | K::ConnectionAborted => "the connection was closed (TLS on one side only?)".into(),
                K::AddrNotAvailable | K::NotFound => format!("{io} (is the host name right?)"),
                _ => io.to_string(),
            };
        }
    }
    let words: Vec<String> = chain
        .iter()
        .map(|c| c.to_string())
        .filter(|m| !m.is_empty() && m != "transport error" && m != "error trying to connect")
        .collect();
    match words.last() {
        Some(w) if w.contains("dns error") || w.contains("failed to lookup") => {
            format!("{w} (is the host name right?)")
        }
        Some(w) => w.clone(),
        None => e.to_string(),
    }
}

/// Connects to a server: `host:port`, `http://host:port` or `https://...`
/// (see [`server_url`]).
pub async fn connect(addr: &str, o: &ClientOptions) -> Result<Clients, ConnectError> {
    let url = server_url(addr)?;
    let mut ep = Endpoint::from_shared(url.clone())
        .map_err(|e| ConnectError::Address(addr.to_string(), e.to_string()))?
        .tcp_nodelay(true)
        .connect_timeout(std::time::Duration::from_secs(10));
    if url.starts_with("https://") || o.ca.is_some() || o.identity.is_some() {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| ConnectError::Tls(format!("{}: {e}", p.display())));
        let mut t = ClientTlsConfig::new();
        if let Some(ca) = &o.ca {
            t = t.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let Some((c, k)) = &o.identity {
            t = t.identity(Identity::from_pem(read(c)?, read(k)?));
        }
        if let Some(d) = &o.domain {
            t = t.domain_name(d.clone());
        }
        ep = ep.tls_config(t).map_err(|e| ConnectError::Tls(format!("TLS: {}", connect_reason(&e))))?;
    }
    let channel = ep
        .connect()
        .await
        .map_err(|e| ConnectError::Connect { addr: host_port(&url).to_string(), reason: connect_reason(&e) })?;
    let bearer = Bearer::new(o.token.as_deref()).map_err(|_| ConnectError::Token)?;
    let max = o.max_message_bytes.unwrap_or(64 << 20);
    let identification = IdentificationClient::with_interceptor(channel.clone(), bearer.clone())
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let gallery = GalleryClient::with_interceptor(channel.clone(), bearer.clone())
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let notifications = NotificationsClient::with_interceptor(channel.clone(), bearer)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    Ok(Clients { identification, gallery, notifications, channel })
}

/// One template record for a request (format detected by the server).
pub fn finger(data: Vec<u8>) -> pb::FingerTemplate {
    pb::FingerTemplate { data, format: pb::TemplateFormat::Auto as i32, finger_position: 0 }
}

/// A probe of `records`.
pub fn probe(records: Vec<Vec<u8>>) -> pb::Probe {
    pb::Probe { templates: records.into_iter().map(finger).collect() }
}
