//! RPC between nodes: gRPC (tonic) carrying Raft between managers.
//!
//! - [`raft`]: openraft's network over gRPC (client) and the service that
//!   hands incoming messages to the local Raft (server).

pub mod raft;

pub mod pb {
    tonic::include_proto!("flotilla.cluster.v1");
}
