//! The generated messages and service of `proto/whorl/cluster/v1`.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("whorl.cluster.v1");
