//! Connecting to a whorl server: one channel (TCP_NODELAY, optional TLS
//! and client certificate) and the generated clients with the bearer token
//! attached to every call.

use super::pb;
use super::pb::gallery_client::GalleryClient;
use super::pb::identification_client::IdentificationClient;
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
    /// The channel (for health and reflection clients).
    pub channel: Channel,
}

/// Connects to `url` (`http://host:port` or `https://...`).
pub async fn connect(url: &str, o: &ClientOptions) -> Result<Clients, String> {
    let mut ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("server URL '{url}': {e}"))?
        .tcp_nodelay(true)
        .connect_timeout(std::time::Duration::from_secs(10));
    if url.starts_with("https://") || o.ca.is_some() || o.identity.is_some() {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
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
        ep = ep.tls_config(t).map_err(|e| format!("TLS: {e}"))?;
    }
    let channel = ep.connect().await.map_err(|e| format!("connecting to {url}: {e:?}"))?;
    let bearer = Bearer::new(o.token.as_deref())?;
    let max = o.max_message_bytes.unwrap_or(64 << 20);
    let identification = IdentificationClient::with_interceptor(channel.clone(), bearer.clone())
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let gallery = GalleryClient::with_interceptor(channel.clone(), bearer)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    Ok(Clients { identification, gallery, channel })
}

/// One template record for a request (format detected by the server).
pub fn finger(data: Vec<u8>) -> pb::FingerTemplate {
    pb::FingerTemplate { data, format: pb::TemplateFormat::Auto as i32, finger_position: 0 }
}

/// A probe of `records`.
pub fn probe(records: Vec<Vec<u8>>) -> pb::Probe {
    pb::Probe { templates: records.into_iter().map(finger).collect() }
}
