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
use tokio::sync::watch;

use crate::exec::NodeDescription;

pub type Assignments = Arc<Vec<Task>>;
pub type Routes = Arc<RoutingTable>;

#[async_trait]
pub trait Session: Send + Sync + 'static {
    /// Joins the dispatcher; returns the heartbeat period to keep.
    async fn register(&self, description: NodeDescription) -> Result<Duration, String>;
    async fn heartbeat(&self) -> Result<(), String>;
    /// Every task assigned to this node, re-sent whenever the set changes.
    async fn assignments(&self) -> Result<watch::Receiver<Assignments>, String>;
    /// Fire and forget: the dispatcher batches what it receives.
    fn report(&self, task_id: &str, status: TaskStatus);
    /// The cluster's routing table, for the node's mesh and DNS server;
    /// kept across reconnections. Empty where there is no cluster network.
    fn routes(&self) -> watch::Receiver<Routes> {
        watch::channel(Routes::default()).1
    }
}
