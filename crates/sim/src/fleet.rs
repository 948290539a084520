//! Many simulated nodes in one process: joined a bounded number at a time
//! (each join is a CSR signed by the manager and a Raft write, so an
//! unbounded burst would only queue on the manager), with progress, and
//! stopped together.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::StreamExt;
use tokio::sync::watch;

use crate::exec::SimConfig;
use crate::node::{JoinError, JoinSpec, SimNode};

/// How a fleet of simulated nodes joins.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub manager: String,
    pub token: String,
    pub nodes: usize,
    /// Hostnames are `<prefix>-<n>` with n from 1, zero-padded.
    pub prefix: String,
    pub addr: String,
    /// Joins in flight at once.
    pub concurrency: usize,
    /// Attempts per node before the fleet gives up on it.
    pub attempts: u32,
    /// Everything but the hostname, shared by every node.
    pub sim: SimConfig,
}

impl FleetSpec {
    pub fn new(manager: &str, token: &str, nodes: usize) -> FleetSpec {
        FleetSpec {
            manager: manager.to_string(),
            token: token.to_string(),
            nodes,
            prefix: "sim".into(),
            addr: "127.0.0.1".into(),
            concurrency: 64,
            attempts: 5,
            sim: SimConfig::named(""),
        }
    }

    /// The hostname of the `n`th node (from 1).
    pub fn hostname(&self, n: usize) -> String {
        let width = self.nodes.to_string().len().max(4);
        format!("{}-{n:0width$}", self.prefix)
    }
}

/// How far joining got; passed to the progress callback.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub joined: usize,
    pub failed: usize,
    pub total: usize,
    pub elapsed: Duration,
}

pub struct Fleet {
    pub nodes: Vec<SimNode>,
    /// Nodes that could not join after every attempt.
    pub failures: Vec<JoinError>,
    stop: watch::Sender<bool>,
}

impl Fleet {
    /// Joins every node (those that fail are reported in `failures`),
    /// calling `progress` after each one. Gives up once the first batch
    /// of joins has failed with none succeeding.
    pub async fn join(spec: FleetSpec, progress: impl FnMut(Progress)) -> Fleet {
        let (stop, stop_rx) = watch::channel(false);
        let spec = Arc::new(spec);
        let started = Instant::now();
        let mut progress = progress;
        let mut nodes = Vec::with_capacity(spec.nodes);
        let mut failures = Vec::new();
        let mut joins = futures::stream::iter(1..=spec.nodes)
            .map(|n| join_one(spec.clone(), n, stop_rx.clone()))
            .buffer_unordered(spec.concurrency.max(1));
        while let Some(r) = joins.next().await {
            match r {
                Ok(node) => nodes.push(node),
                Err(e) => {
                    tracing::warn!("{e}");
                    failures.push(e);
                }
            }
            progress(Progress {
                joined: nodes.len(),
                failed: failures.len(),
                total: spec.nodes,
                elapsed: started.elapsed(),
            });
            // A wrong token or address fails every node alike: stop early
            // rather than retry thousands of times.
            if nodes.is_empty() && failures.len() >= spec.concurrency.clamp(1, spec.nodes) {
                break;
            }
        }
        Fleet {
            nodes,
            failures,
            stop,
        }
    }

    /// Stops every node's agent and waits for them.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        futures::future::join_all(self.nodes.into_iter().map(SimNode::stopped)).await;
    }
}

/// Joins node `n`, retrying with backoff: a manager under load may time
/// out a handshake or refuse for lack of a leader for a moment.
async fn join_one(
    spec: Arc<FleetSpec>,
    n: usize,
    stop: watch::Receiver<bool>,
) -> Result<SimNode, JoinError> {
    let mut sim = spec.sim.clone();
    sim.hostname = spec.hostname(n);
    let one = JoinSpec {
        manager: spec.manager.clone(),
        token: spec.token.clone(),
        addr: spec.addr.clone(),
        sim,
    };
    let mut backoff = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match SimNode::join(one.clone(), stop.clone()).await {
            Ok(node) => return Ok(node),
            Err(e @ JoinError::ManagerToken { .. }) => return Err(e),
            Err(e) if attempt >= spec.attempts => return Err(e),
            Err(e) => {
                tracing::debug!("{e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_sort_in_join_order() {
        let mut spec = FleetSpec::new("m:2377", "t", 5000);
        assert_eq!(spec.hostname(1), "sim-0001");
        assert_eq!(spec.hostname(5000), "sim-5000");
        spec.nodes = 20_000;
        spec.prefix = "x".into();
        assert_eq!(spec.hostname(42), "x-00042");
    }
}
