//! One gallery across many machines: shard nodes, a router, etcd.
//!
//! * **Partition by subject.** A subject belongs to one of `V` virtual
//!   groups ([`crate::groups`]); a group is held by `R` nodes (its
//!   replicas), each as a gallery folder per gallery
//!   (`DATA/<gallery>/g0042/`). All of a subject's fingers are in one group,
//!   so fusing them never crosses machines.
//! * **The map** ([`map`]) lives in etcd ([`store`]): settings, placement
//!   (group → replicas), registrations under leases, one elected primary
//!   per (gallery, group), stale marks. A static file can stand in for
//!   etcd on small deployments ([`map::StaticMap`]).
//! * **Nodes** ([`node`]) are `whorl serve --cluster`: they open the
//!   groups placed on them, catch up from the primary before they call a
//!   group ready, answer the router's phase requests and their primary's
//!   replication, and take part in elections.
//! * **Routers** ([`router`]) are stateless `whorl route` processes serving
//!   the public API: an Identify runs the plan of [`crate::search::plan`]
//!   with its phases fanned out to one in-sync replica of every group,
//!   hedged to another replica when one is slow, retried elsewhere when
//!   one fails; merged and decided with the cluster's subject count, so
//!   the answer is the one a single machine holding every group would give.
//! * **Writes** go to the group's primary, which logs the record, sends
//!   it to every other in-sync replica, and acknowledges once `W` replicas
//!   (itself included) hold it durably; a replica that failed to take it
//!   is marked stale in etcd *before* the acknowledgement (conditional on
//!   the writer still being primary). Hence every acknowledged write is on
//!   every replica not marked stale, and a new primary is always chosen
//!   among those. `W` defaults to a majority of `R` (2 of 2, 2 of 3).

pub mod admin;
pub mod capacity;
pub mod config;
pub mod front;
pub mod local_etcd;
pub mod map;
pub mod node;
pub mod pb;
pub mod peer;
pub mod route;
pub mod router;
pub mod store;

/// Errors of the cluster machinery.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// etcd failed or is unreachable.
    #[error("etcd: {0}")]
    Etcd(String),
    /// A setting or request is wrong.
    #[error("{0}")]
    Invalid(String),
    /// A node could not be reached or failed.
    #[error("node {node}: {message}")]
    Node {
        /// The node.
        node: String,
        /// What happened.
        message: String,
    },
    /// Not enough of the cluster is up for what was asked.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A local file or gallery failed.
    #[error("{0}")]
    Local(String),
}
