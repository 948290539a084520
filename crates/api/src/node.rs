//! What the API needs of the node it fronts. The node itself is built in
//! `flotilla-node` (the composition root), which implements [`NodeControl`];
//! the API knows it only through this trait, so arrows point one way.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use flotilla_agent::exec::{Executor, NodeDescription};
use flotilla_manager::Error;
use flotilla_store::models::{SwarmInitRequest, SwarmJoinRequest};
use flotilla_store::Store;

/// The daemon as the routes see it (`State<Arc<Daemon>>`).
pub type Daemon = dyn NodeControl;

#[async_trait]
pub trait NodeControl: Send + Sync + 'static {
    /// What runs on this node whatever its place in a swarm.
    fn local(&self) -> &Local;
    /// Its place in a swarm, if it has one.
    async fn place(&self) -> Option<Place>;
    /// The store, or Docker's error for a node that is no manager.
    async fn store(&self) -> Result<Store, Error>;
    /// `POST /swarm/init`: the new node's ID.
    async fn init(&self, req: SwarmInitRequest) -> Result<String, Error>;
    /// `POST /swarm/join`.
    async fn join(&self, req: SwarmJoinRequest) -> Result<(), Error>;
    /// `POST /swarm/leave`.
    async fn leave(&self, force: bool) -> Result<(), Error>;
    /// The node's ID while it is a locked manager (autolock, restarted).
    async fn locked(&self) -> Option<String>;
    /// `POST /swarm/unlock` on a locked manager.
    async fn unlock(&self, key: &str) -> Result<(), Error>;
    /// A task's logs from the node that runs it (another node: through
    /// the leader), as chunks ending with the one whose `end` is set; Err
    /// says why none can come (node down, no leader).
    async fn remote_logs(
        &self,
        request: flotilla_store::logs::LogRequest,
    ) -> Result<futures::stream::BoxStream<'static, flotilla_store::logs::LogChunk>, String>;
    /// Runs `spec` in `task` on the node that runs it (another node:
    /// through the leader, the node calling this manager back); Err says
    /// why it cannot (node down, no leader, no answer).
    async fn remote_exec(
        &self,
        _task: flotilla_store::models::Task,
        _spec: flotilla_store::exec::ExecSpec,
    ) -> Result<flotilla_manager::execbroker::Attached, String> {
        Err("this node cannot reach other nodes' tasks".into())
    }
    /// A worker: relays its client's exec to a manager, which answers
    /// with the task's side (its first frame `Started`) or its refusal.
    async fn relay_exec(
        &self,
        _request: flotilla_manager::execrelay::RelayRequest,
    ) -> Result<flotilla_manager::execbroker::Attached, flotilla_manager::execrelay::ExecRefusal>
    {
        Err(flotilla_manager::execrelay::ExecRefusal::new(
            503,
            "this node cannot relay an exec to a manager",
        ))
    }
    /// A manager: who serves the execs workers relay to it (the API).
    fn serve_exec_relays(&self, _server: Arc<dyn flotilla_manager::execrelay::ExecOpener>) {}
}

/// The node's own side: its executor, the Docker Engine beside it.
pub struct Local {
    pub exec: Arc<dyn Executor>,
    /// The Docker Engine socket requests outside the swarm API go to.
    pub engine: Option<PathBuf>,
    pub description: NodeDescription,
    pub data_dir: PathBuf,
}

/// A node's place in a swarm.
#[derive(Clone)]
pub struct Place {
    pub node_id: String,
    /// The address other nodes reach it at (`host:port`).
    pub addr: String,
    /// Managers only.
    pub store: Option<Store>,
    /// The managers a worker knows of.
    pub managers: Vec<String>,
}
