//! Raft for the store: openraft's types, log storage in redb, the state
//! machine that applies [`Op`](crate::Op)s, and the network between managers.

pub(crate) mod disk;
mod log_store;
mod network;
pub mod recover;
pub mod seal;
mod snapshot_file;
mod state_machine;

pub use log_store::LogStore;
pub use network::NoNetwork;
pub use snapshot_file::SNAPSHOT_FILE;
pub use state_machine::{StateMachine, StateMachineHandle};

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::ops::{Op, StoreError};

/// One Raft entry's payload: the ops of one proposal, applied in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub ops: Vec<Op>,
}

/// The result of each op of a [`Request`], in the same order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    pub results: Vec<Result<(), StoreError>>,
}

/// A Raft member: where its Raft listens, and which swarm node it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub addr: String,
    pub node_id: String,
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = Peer,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type NodeId = u64;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}
