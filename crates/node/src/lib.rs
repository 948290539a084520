//! The composition root: builds a node from its parts and runs it until a
//! signal stops it, in order.
//!
//! - [`node`]: the node (executor, swarm membership) and its lifecycle:
//!   `swarm init|join|leave`, promotion and demotion, restarts.
//! - `membership`: a node's part in a swarm, as two components with their
//!   own tasks: the manager (store and Raft, cluster port, dispatcher,
//!   leader's controllers) and the agent (worker, network, certificate
//!   renewal).
//! - `certs`: the node's certificate and trusted root: renewal, and
//!   following a root CA rotation.
//! - `identity`, `addr`: what a node keeps on disk; cluster addresses.
//! - `metrics`: `--metrics-addr`, the node's figures for Prometheus.
//!
//! The API (`flotilla-api`) sees the node through its `NodeControl` trait,
//! implemented here by [`node::Handle`].

mod addr;
mod certs;
mod identity;
mod membership;
mod metrics;
pub mod node;

use std::sync::Arc;
use std::time::Duration;

pub use node::{ExecutorKind, Node, NodeConfig};

/// How long an orderly stop may take (Docker's own default is 15 s).
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(15);

/// Starts a node, serves the API as `listen` says, and runs until SIGTERM or
/// SIGINT; then stops in order: the API stops taking requests (open ones
/// get a few seconds), then the agent, the manager and Raft. A stop that
/// hangs does not keep the process alive: past [`SHUTDOWN_BOUND`] it is an
/// error. The node's tasks keep running, to be adopted on the next start.
pub async fn run(cfg: NodeConfig, listen: flotilla_api::listen::Listen) -> anyhow::Result<()> {
    let metrics = match &cfg.metrics_addr {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    let node = Node::start(cfg).await?;
    let (stopping, stop) = tokio::sync::watch::channel(false);
    if let Some(listener) = metrics {
        let (node, stop) = (node.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(listener, &node, stop).await {
                tracing::error!("--metrics-addr: {e:#}");
            }
        });
    }
    let api: Arc<flotilla_api::node::Daemon> = Arc::new(node::Handle(node.clone()));
    let mut api = tokio::spawn(flotilla_api::serve(api, listen, stop));
    let signal = tokio::select! {
        r = terminated() => r?,
        r = &mut api => return r?,
    };
    tracing::info!("{signal}: stopping; tasks keep running");
    let _ = stopping.send(true);
    let stopped = tokio::time::timeout(SHUTDOWN_BOUND, async {
        if let Ok(Err(e)) = api.await {
            tracing::warn!("API: {e:#}");
        }
        node.shutdown().await;
    })
    .await;
    match stopped {
        Ok(()) => {
            tracing::info!("stopped");
            Ok(())
        }
        Err(_) => anyhow::bail!("did not stop within {SHUTDOWN_BOUND:?}; exiting anyway"),
    }
}

/// SIGTERM or SIGINT (Ctrl-C), whichever comes first.
async fn terminated() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
