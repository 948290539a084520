//! One simulated worker node: it joins through the real join protocol (the
//! root CA checked against the token, a CSR of its own key, a certificate
//! with its own node ID), then runs the real agent — `ManagerSession` over
//! gRPC with mutual TLS and the `Worker` — with a [`SimExecutor`].
//!
//! This is what `flotilla daemon` does on `swarm join` as a worker
//! (crates/api/src/daemon), minus what a simulated node has no use for:
//! no files on disk, no cluster port, no routing mesh, no certificate
//! renewal (the certificates last 90 days; a benchmark lasts minutes).

use std::sync::Arc;

use flotilla_agent::session::ManagerSession;
use flotilla_agent::worker::Worker;
use flotilla_rpc::agent::GrpcTransport;
use flotilla_rpc::peers::Peers;
use flotilla_store::network::host_of;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::exec::{SimConfig, SimExecutor};

/// Where and how a simulated node joins.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    /// A manager's cluster address (`host:port`).
    pub manager: String,
    /// A worker join token (`SWMTKN-1-…`).
    pub token: String,
    /// The address the node advertises (shown as its `Status.Addr`).
    pub addr: String,
    pub sim: SimConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("node {hostname}: joining through {manager}: {reason}")]
    Refused {
        hostname: String,
        manager: String,
        reason: String,
    },
    #[error("node {hostname}: the token is a manager token; simulated nodes are workers only")]
    ManagerToken { hostname: String },
    #[error("node {hostname}: unusable certificate: {reason}")]
    Tls { hostname: String, reason: String },
}

/// A joined node whose agent runs until the stop signal it was given.
pub struct SimNode {
    pub node_id: String,
    pub hostname: String,
    pub exec: Arc<SimExecutor>,
    agent: JoinHandle<()>,
}

impl SimNode {
    /// Joins and starts the agent; the agent stops when `stop` turns true.
    pub async fn join(spec: JoinSpec, stop: watch::Receiver<bool>) -> Result<SimNode, JoinError> {
        let hostname = spec.sim.hostname.clone();
        let exec = Arc::new(SimExecutor::new(spec.sim));
        let description = flotilla_agent::exec::Executor::describe(exec.as_ref())
            .await
            .to_model();
        let joined = flotilla_rpc::ca::join(&spec.manager, &spec.token, &spec.addr, description)
            .await
            .map_err(|reason| JoinError::Refused {
                hostname: hostname.clone(),
                manager: spec.manager.clone(),
                reason: reason.to_string(),
            })?;
        if joined.reply.manager {
            return Err(JoinError::ManagerToken { hostname });
        }
        let tls =
            flotilla_ca::client_config(&joined.root_ca_pem, Some(&joined.cert)).map_err(|e| {
                JoinError::Tls {
                    hostname: hostname.clone(),
                    reason: e.to_string(),
                }
            })?;
        // The sender is dropped: without renewal the configuration never
        // changes, and a receiver keeps the last value.
        let (_, tls) = watch::channel(tls);
        let mut managers = joined.reply.managers.clone();
        if !managers.contains(&spec.manager) {
            managers.push(spec.manager.clone());
        }
        let node_id = joined.reply.node_id.clone();
        let session = ManagerSession::new(
            GrpcTransport::new(Peers::new(tls)),
            managers,
            host_of(&spec.addr).to_string(),
            flotilla_agent::session::NodeOverrides {
                hostname: Some(hostname.clone()),
                ..Default::default()
            },
        );
        let worker = Worker::new(session, exec.clone(), node_id.clone());
        let agent = tokio::spawn(worker.run(stop));
        Ok(SimNode {
            node_id,
            hostname,
            exec,
            agent,
        })
    }

    /// Waits for the agent to end (after the stop signal).
    pub async fn stopped(self) {
        let _ = self.agent.await;
    }
}
