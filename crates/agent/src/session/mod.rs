//! The agent's link to the managers. A node's agent registers, heartbeats,
//! receives its assignments and reports task status through a [`Session`].
//! [`ManagerSession`] is the one every node runs: it decides which manager
//! to call and keeps the agent's state across reconnections, and carries
//! each call over a [`Transport`] (gRPC with mutual TLS, in crates/rpc).
//!
//! - [`transport`]: what one connection to one manager can do.
//! - [`failover`]: which manager to call, after which failure.
//! - [`assignments`]: the node's task set from the assignment stream.
//! - [`reports`]: task status sent in batches.
//! - [`manager`]: the session itself, over a transport.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::TaskStatus;
use flotilla_store::logs::{LogChunk, LogRequest};
use flotilla_store::models::Task;
use flotilla_store::network::RoutingTable;
use flotilla_store::secrets::NodeData;
use flotilla_store::StoreError;
use tokio::sync::watch;

use crate::exec::NodeDescription;

pub mod assignments;
pub mod failover;
pub mod manager;
pub mod reports;
pub mod transport;

#[cfg(test)]
mod tests;

pub use manager::{ManagerSession, NodeOverrides};
pub use transport::{
    FrameStream, Heartbeat, Registered, Registration, Transport, Update, UpdateStream,
};

/// The node's tasks, in task ID order ([`in_id_order`]). A task that did
/// not change since the last set is the same `Arc`: a new set copies
/// nothing, and the worker tells changed tasks apart without comparing
/// them (a node of 100 tasks copied and compared all of them on every
/// change of one).
pub type Assignments = Arc<Vec<Arc<Task>>>;

/// Whether `tasks` are in task ID order, each once, as a session gives them.
pub fn in_id_order(tasks: &[Arc<Task>]) -> bool {
    use flotilla_store::state::TaskExt;
    tasks.windows(2).all(|w| w[0].id_str() < w[1].id_str())
}
pub type Routes = Arc<RoutingTable>;
/// The secrets and configs this node's tasks need.
pub type Data = Arc<NodeData>;

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
    /// The secrets and configs this node's tasks need, updated before the
    /// assignments that bring tasks needing new ones.
    fn data(&self) -> watch::Receiver<Data> {
        watch::channel(Data::default()).1
    }
    /// The node's description as the managers are told it (the session
    /// may name the host otherwise than the executor does).
    fn describe(&self, description: NodeDescription) -> NodeDescription {
        description
    }
    /// Log requests from the managers, once (the node's log server takes
    /// them); None where there are none.
    fn log_requests(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<LogRequest>> {
        None
    }
    /// Sends lines of a log request to the leader; false when nobody
    /// reads them any more.
    async fn publish_logs(&self, _chunk: &LogChunk) -> Result<bool, SessionError> {
        Err(SessionError::NoManager)
    }
    /// Exec requests from the managers, once (the node's exec server
    /// takes them); None where there are none.
    fn exec_requests(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<flotilla_store::exec::ExecRequest>> {
        None
    }
    /// Opens an exec stream to the manager an exec request named.
    async fn exec_attach(
        &self,
        _manager: &str,
        _outgoing: FrameStream,
    ) -> Result<FrameStream, SessionError> {
        Err(SessionError::NoManager)
    }
}
