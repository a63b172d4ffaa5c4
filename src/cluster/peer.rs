//! Calling other nodes: one lazily connected channel per address, the
//! cluster's internal token on every call.

use super::ClusterError;
use super::pb::node_client::NodeClient;
use crate::server::client::Bearer;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// A node client with the internal token attached.
pub type Node = NodeClient<InterceptedService<Channel, Bearer>>;

/// Largest message between nodes (a full-copy chunk is 1 MiB).
pub const MAX_MESSAGE: usize = 64 << 20;

/// Channels to the nodes of a cluster.
pub struct Peers {
    bearer: Bearer,
    conns: Mutex<HashMap<String, Node>>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers").finish_non_exhaustive()
    }
}

impl Peers {
    /// Peers called with the internal `token`.
    pub fn new(token: Option<&str>) -> Result<Peers, ClusterError> {
        Ok(Peers { bearer: Bearer::new(token).map_err(ClusterError::Invalid)?, conns: Mutex::new(HashMap::new()) })
    }

    /// A client of the node at `addr` (`http://host:port`); connects on first use.
    pub fn node(&self, addr: &str) -> Result<Node, ClusterError> {
        if let Some(c) = self.conns.lock().ok().and_then(|m| m.get(addr).cloned()) {
            return Ok(c);
        }
        let url = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
        let ep = Endpoint::from_shared(url)
            .map_err(|e| ClusterError::Invalid(format!("node address '{addr}': {e}")))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_millis(1500))
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true);
        let c = NodeClient::with_interceptor(ep.connect_lazy(), self.bearer.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        if let Ok(mut m) = self.conns.lock() {
            m.insert(addr.to_string(), c.clone());
        }
        Ok(c)
    }

    /// Forgets the channel to `addr` (after it failed), so the next call reconnects.
    pub fn reset(&self, addr: &str) {
        if let Ok(mut m) = self.conns.lock() {
            m.remove(addr);
        }
    }
}
