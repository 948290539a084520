//! RPC between nodes: gRPC (tonic) over mutual TLS on the cluster port.
//!
//! - [`transport`]: TLS done here (certificates can change at run time,
//!   and each RPC sees the caller's verified certificate).
//! - [`raft`]: openraft's network (client) and the local Raft's service.
//! - [`control`]: followers' writes carried to the leader; adding managers.
//! - [`dispatcher`]: the leader's dispatcher, serving agents' sessions.
//! - [`agent`]: the agent's session transport to it (the session itself,
//!   failover and all, is crates/agent's).
//! - [`exec`]: `exec` into tasks on other nodes: the node's call back to
//!   the asking manager, requests forwarded to the leader.
//! - [`ca`]: joining with a token, renewing certificates.
//! - [`error`]: typed errors carried in a status, decoded on the other side.
//! - [`server`]: all of the above on one listener.

pub mod agent;
pub mod auth;
pub mod ca;
pub mod control;
pub mod dispatcher;
pub mod error;
pub mod exec;
pub mod messages;
pub mod peers;
pub mod raft;
pub mod server;
pub mod transport;

pub mod pb {
    tonic::include_proto!("flotilla.cluster.v1");
}

/// The largest message any cluster RPC takes or sends (tonic's default is
/// 4 MiB). What can grow with the swarm is cut to fit well under it:
/// proposals into Raft entries of at most 1 MiB (the store), appends into
/// fewer entries (`raft`), snapshots into 1 MiB chunks, a node's tasks into
/// messages of 1,000.
pub const MAX_MESSAGE: usize = 64 << 20;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::Status;

pub fn to_json<T: Serialize>(v: &T) -> Result<pb::Json, Status> {
    serde_json::to_vec(v)
        .map(|data| pb::Json { data })
        .map_err(|e| Status::internal(format!("encoding: {e}")))
}

pub fn from_json<T: DeserializeOwned>(m: &pb::Json) -> Result<T, Status> {
    serde_json::from_slice(&m.data).map_err(|e| Status::invalid_argument(format!("decoding: {e}")))
}
