//! The agent's link to the managers. A node's agent registers, heartbeats,
//! receives its assignments and reports task status through a [`Session`];
//! on a manager node it is the local dispatcher, on other nodes an RPC
//! client.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::TaskStatus;
use flotilla_store::models::Task;
use flotilla_store::network::RoutingTable;
use flotilla_store::StoreError;
use tokio::sync::watch;

use crate::exec::NodeDescription;

pub type Assignments = Arc<Vec<Task>>;
pub type Routes = Arc<RoutingTable>;

/// Why a session call failed. The session has already moved on to the
/// next manager to try (the leader, when the answer named it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("no manager address known")]
    NoManager,
    /// The manager answered with a store error (not the leader, no leader).
    #[error("manager {addr}: {error}")]
    Refused { addr: String, error: StoreError },
    /// The manager could not be reached, or refused for another reason.
    #[error("manager {addr}: {message}")]
    Failed { addr: String, message: String },
    /// The manager answered something this agent cannot use.
    #[error("manager {addr}: {message}")]
    Protocol { addr: String, message: String },
}

#[async_trait]
pub trait Session: Send + Sync + 'static {
    /// Joins the dispatcher; returns the heartbeat period to keep.
    async fn register(&self, description: NodeDescription) -> Result<Duration, SessionError>;
    async fn heartbeat(&self) -> Result<(), SessionError>;
    /// Every task assigned to this node, re-sent whenever the set changes.
    async fn assignments(&self) -> Result<watch::Receiver<Assignments>, SessionError>;
    /// Fire and forget: the dispatcher batches what it receives.
    fn report(&self, task_id: &str, status: TaskStatus);
    /// The cluster's routing table, for the node's mesh and DNS server;
    /// kept across reconnections. Empty where there is no cluster network.
    fn routes(&self) -> watch::Receiver<Routes> {
        watch::channel(Routes::default()).1
    }
}
