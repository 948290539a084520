//! What the manager's requests fail with, typed, with the names and ids
//! they concern. The Display is for logs; the API renders Docker's words
//! and status code from the variant (crates/api/src/error.rs), so nothing
//! here spells a gRPC code or an HTTP status.
//!
//! Serde types, so an error keeps its kind when it crosses the network
//! (a node joining through another manager's CA).

use flotilla_store::{Kind, StoreError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Error {
    /// What the store refused (not found, out of sequence, name taken,
    /// port in use, no leader…).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A service spec SwarmKit's validation refuses; the text says why.
    #[error("invalid service spec: {0}")]
    InvalidSpec(String),
    /// A request SwarmKit's validation refuses with InvalidArgument, other
    /// than a service spec's (a swarm spec's certificate expiry).
    #[error("{0}")]
    Rejected(String),
    /// A request refused where the text is all there is (Docker sends
    /// these without a gRPC code).
    #[error("{0}")]
    InvalidArgument(String),
    /// Refused whatever the request says (a pre-defined network's name).
    #[error("{0}")]
    Forbidden(String),
    #[error("invalid join token")]
    InvalidJoinToken,
    #[error("node {node} is the last manager of the swarm")]
    LastManager { node: String },
    /// Demoting `node` would leave `reachable` of `remaining` managers.
    #[error("demoting node {node} loses quorum: {reachable} of {remaining} remaining managers reachable")]
    QuorumLoss {
        node: String,
        reachable: usize,
        remaining: usize,
    },
    #[error("node {node} is a manager: demote it before removing it")]
    ManagerNotDemoted { node: String },
    #[error("node {node} is not down")]
    NodeNotDown { node: String },
    #[error("not supported: {0}")]
    Unimplemented(Unimplemented),
    /// The service has no previous spec to roll back to.
    #[error("service {id} has no previous spec")]
    NoPreviousSpec { id: String },
    /// A node the swarm does not know starts a session.
    #[error("node {node} is not a member of this swarm")]
    NotMember { node: String },
    /// A removed node asks for a certificate.
    #[error("node {node} was removed from this swarm")]
    Removed { node: String },
    #[error("this node is not in a swarm")]
    NotInSwarm,
    /// Not serving, for a reason the text gives.
    #[error("{0}")]
    Unavailable(String),
    /// The request does not fit the node's state (unlocking a node that
    /// is not locked).
    #[error("{0}")]
    Conflict(String),
    /// A credential the caller gave does not fit (a wrong unlock key).
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Internal(String),
}

/// Requests SwarmKit does not implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unimplemented {
    RenameService,
    ChangeServiceMode,
}

impl std::fmt::Display for Unimplemented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unimplemented::RenameService => "renaming a service",
            Unimplemented::ChangeServiceMode => "changing a service's mode",
        })
    }
}

impl Error {
    pub fn not_found(kind: Kind, id: impl Into<String>) -> Self {
        Error::Store(StoreError::not_found(kind, id))
    }

    pub fn out_of_sequence(kind: Kind, id: impl Into<String>, expected: u64, current: u64) -> Self {
        Error::Store(StoreError::OutOfSequence {
            kind,
            id: id.into(),
            expected,
            current,
        })
    }
}

pub type Result<T> = std::result::Result<T, Error>;
