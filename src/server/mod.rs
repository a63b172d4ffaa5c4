//! The gRPC server.

pub mod pb;
