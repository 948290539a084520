//! What a store write can fail with, typed, with the objects, names, ids and
//! versions it concerns. The Display here is for logs; the words and status
//! a Docker client sees are rendered once, by the API (crates/api/src/error.rs).
//!
//! The errors are serde types because they cross the network: a follower
//! forwards writes to the leader and gets each op's error back as it was.

use std::time::Duration;

use bollard::models::TaskState;
use serde::{Deserialize, Serialize};

/// The kind of object an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Swarm,
    Node,
    Service,
    Task,
    Network,
    Secret,
    Config,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Swarm => "swarm",
            Kind::Node => "node",
            Kind::Service => "service",
            Kind::Task => "task",
            Kind::Network => "network",
            Kind::Secret => "secret",
            Kind::Config => "config",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {id} not found")]
    NotFound { kind: Kind, id: String },
    /// The writer read version `expected`; the object is at `current`.
    #[error(
        "{kind} {id}: update out of sequence (expected version {expected}, current {current})"
    )]
    OutOfSequence {
        kind: Kind,
        id: String,
        expected: u64,
        current: u64,
    },
    #[error("{kind} name {name} is taken")]
    NameTaken { kind: Kind, name: String },
    #[error("{kind} {id} already exists")]
    IdTaken { kind: Kind, id: String },
    #[error("swarm already initialized")]
    AlreadyInitialized,
    #[error("task {id} is already assigned")]
    AlreadyAssigned { id: String },
    #[error("task {id}: state cannot move back from {from} to {to}")]
    StateBackwards {
        id: String,
        from: TaskState,
        to: TaskState,
    },
    #[error("task {id}: desired state cannot move back from {from} to {to}")]
    DesiredBackwards {
        id: String,
        from: TaskState,
        to: TaskState,
    },
    #[error("node {id} is not a manager")]
    NotAManager { id: String },
    /// An ingress port another service publishes.
    #[error("{protocol} port {port} is in use by service {service_name} ({service_id})")]
    PortInUse {
        port: u16,
        protocol: String,
        service_name: String,
        service_id: String,
    },
    #[error("no free {protocol} port in the dynamic range")]
    NoFreePort { protocol: String },
    #[error("no address left in the service network {network}")]
    NoFreeAddress { network: String },
    /// A network cannot go while a service is attached to it.
    #[error("network {network} is in use by service {service_name} ({service_id})")]
    NetworkInUse {
        network: String,
        service_name: String,
        service_id: String,
    },
    /// A secret or config cannot go while services refer to it.
    #[error("{kind} '{name}' is in use by the following service{}: {}", if services.len() == 1 { "" } else { "s" }, services.join(", "))]
    DataInUse {
        kind: Kind,
        name: String,
        services: Vec<String>,
    },
    /// A service refers to secrets or configs that do not exist (by the
    /// names it gave), in SwarmKit's words.
    #[error("{kind}{} not found: {}", if names.len() == 1 { "" } else { "s" }, names.join(", "))]
    DataNotFound { kind: Kind, names: Vec<String> },
    /// Anything else an op refuses, where the text is all there is.
    #[error("{0}")]
    Invalid(String),
    /// This manager does not lead; `leader` is the leader's cluster
    /// address when one is known.
    #[error("not the leader (leader: {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader { leader: Option<String> },
    #[error("no leader")]
    NoLeader,
    #[error("the write was not confirmed by a majority within {timeout:?}")]
    NotConfirmed { timeout: Duration },
    #[error("the leader at {leader} does not answer: {reason}")]
    LeaderUnreachable { leader: String, reason: String },
    #[error("store write failed: {0}")]
    WriteFailed(String),
    /// This manager's Raft cannot write its data directory (a full disk);
    /// it waits for space and takes writes again once it can.
    #[error("cannot write the data directory: {0}")]
    DiskUnwritable(String),
}

impl StoreError {
    pub fn not_found(kind: Kind, id: impl Into<String>) -> Self {
        StoreError::NotFound {
            kind,
            id: id.into(),
        }
    }
}
