//! The generated gRPC messages and services of `proto/whorl/v1`.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("whorl.v1");

/// The encoded descriptor set of the API, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("whorl_descriptor");
