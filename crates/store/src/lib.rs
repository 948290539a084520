//! The cluster's object store: every object a manager knows (the swarm
//! itself, nodes, networks, services, tasks) held in memory, changed only by applying
//! [`Op`]s that went through Raft, and persisted with the Raft log in redb.
//!
//! - [`state`]: the objects and the queries on them.
//! - [`ops`]: the changes, and how each one applies (deterministically, so
//!   every manager ends with the same state), one file per kind of object.
//! - `alloc`: what ops hand out as they apply (published ports, service
//!   VIPs, task addresses), pure allocators apart from the objects.
//! - [`networks`]: swarm networks (overlay, ingress), the objects.
//! - [`secrets`]: secrets and configs.
//! - [`network`]: the service network as nodes see it (routing table, DNS).
//! - [`raft`]: openraft's storage (log, vote, snapshots in redb) and the
//!   state machine that applies ops.
//! - [`error`]: what a write can fail with, typed.
//! - [`host_options`]: the container options the swarm spec has no field
//!   for (privileged, devices, shm size), kept as reserved labels.
//! - [`logs`], [`exec`]: messages of `service logs` and `exec` across the cluster.
//! - [`store`]: the handle the rest of the manager uses: read, propose, watch.

mod alloc;
mod changes;
pub mod counts;
pub mod error;
pub mod exec;
pub mod host_options;
pub mod ids;
pub mod logs;
mod merge;
pub mod metrics;
pub mod network;
pub mod networks;
mod objects;
pub mod ops;
pub mod raft;
mod routing;
pub mod secrets;
mod service;
pub mod state;
pub mod store;
mod task;

pub use changes::{ChangeMark, Interest};
pub use error::{Kind, StoreError};
pub use ops::Op;
pub use state::State;
pub use store::{Store, StoreConfig};

/// The object models are Docker's own (bollard's generated ones), so what
/// the store holds is what the Engine API serves; Service and Task are ours,
/// for the fields bollard's models lack (PreviousSpec; Flotilla's per-task
/// state).
pub mod models {
    pub use crate::networks::Network;
    pub use crate::service::Service;
    pub use crate::task::{Attachment, RegistryAuth, Task, TaskRuntime};
    pub use bollard::models::*;
}
