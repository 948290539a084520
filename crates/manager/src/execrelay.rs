//! `exec` from a worker node, beside the exec broker. A worker has no
//! store, so its API cannot find the task nor reach its node: it relays the
//! client's request to a manager over the cluster's mutual TLS (the
//! `Exec.Relay` stream, with the node's own certificate), and the manager
//! serves it as it serves its own API's: it finds the task, runs the
//! command there (through the broker when on another node), and pipes the
//! frames. The manager decides who may: any manager, a worker only when
//! the swarm allows it (`flotilla swarm update --allow-worker-exec`), as
//! exec is a shell into any task of the swarm.
//!
//! The serving itself is the API's (it finds the task, emits the exec
//! events); the cluster port reaches it through [`ExecRelays`], which the
//! node fills in once its API is up.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use flotilla_store::exec::{ExecSpec, Frame, FrameKind};
use flotilla_store::models::{NodeSpecRoleEnum, Swarm};
use serde::{Deserialize, Serialize};

use crate::execbroker::Attached;

/// The SwarmSpec label that lets workers' clients exec (`"true"`).
pub const ALLOW_WORKER_EXEC: &str = "com.flotilla.allow-worker-exec";

pub const WORKER_EXEC_REFUSED: &str =
    "exec from a worker node is not allowed on this swarm (flotilla swarm update --allow-worker-exec)";

/// What the client named: a task (ID or prefix), or a service (ID, name or
/// prefix) and maybe one of its slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecTarget {
    Task(String),
    Service { id: String, slot: Option<i64> },
}

/// A relay's first frame: what to run where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RelayRequest {
    pub target: ExecTarget,
    pub spec: ExecSpec,
}

impl RelayRequest {
    /// The request as the `Hello` frame that opens a relay.
    pub fn to_frame(&self) -> Frame {
        Frame::new(
            FrameKind::Hello,
            serde_json::to_vec(self).unwrap_or_default(),
        )
    }

    pub fn from_frame(frame: &Frame) -> Result<RelayRequest, String> {
        if frame.kind != FrameKind::Hello {
            return Err("an exec relay opens with its request".into());
        }
        serde_json::from_slice(&frame.data).map_err(|e| format!("bad exec relay request: {e}"))
    }
}

/// Why an exec cannot run, as the API would answer it: an HTTP status and
/// Docker's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExecRefusal {
    pub status: u16,
    pub message: String,
}

impl ExecRefusal {
    pub fn new(status: u16, message: impl Into<String>) -> ExecRefusal {
        ExecRefusal {
            status,
            message: message.into(),
        }
    }
}

/// Whether the swarm lets workers' clients exec.
pub fn swarm_allows_worker_exec(swarm: Option<&Swarm>) -> bool {
    swarm
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.labels.as_ref())
        .and_then(|l| l.get(ALLOW_WORKER_EXEC))
        .is_some_and(|v| matches!(v.trim().to_lowercase().as_str(), "true" | "1" | "t"))
}

/// Whether a node whose role is now `role` (the store's, not its
/// certificate's: a demoted manager is a worker) may relay an exec.
pub fn may_relay(role: Option<NodeSpecRoleEnum>, swarm: Option<&Swarm>) -> Result<(), ExecRefusal> {
    if role == Some(NodeSpecRoleEnum::MANAGER) || swarm_allows_worker_exec(swarm) {
        Ok(())
    } else {
        Err(ExecRefusal::new(403, WORKER_EXEC_REFUSED))
    }
}

/// An exec the manager started for a relay.
pub struct Opened {
    /// The task's side, past its `Started` frame.
    pub attached: Attached,
    pub exec_id: String,
    /// Called once with the exit code (None: none came) when it ends.
    pub done: Box<dyn FnOnce(Option<i64>) + Send>,
}

pub type OpenFuture = Pin<Box<dyn Future<Output = Result<Opened, ExecRefusal>> + Send>>;

/// Serves relayed requests: the manager's API.
pub trait ExecOpener: Send + Sync {
    fn open(&self, request: RelayRequest) -> OpenFuture;
}

/// Where the cluster port finds the API that serves relays; empty until
/// the API is up.
#[derive(Clone, Default)]
pub struct ExecRelays(Arc<OnceLock<Arc<dyn ExecOpener>>>);

impl ExecRelays {
    /// The first opener set stays.
    pub fn serve_with(&self, opener: Arc<dyn ExecOpener>) {
        let _ = self.0.set(opener);
    }

    pub fn opener(&self) -> Option<Arc<dyn ExecOpener>> {
        self.0.get().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_store::models::SwarmSpec;
    use std::collections::HashMap;

    fn swarm(label: Option<&str>) -> Swarm {
        Swarm {
            spec: Some(SwarmSpec {
                labels: Some(
                    label
                        .map(|v| HashMap::from([(ALLOW_WORKER_EXEC.to_string(), v.to_string())]))
                        .unwrap_or_default(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_request_travels_in_the_first_frame() {
        let request = RelayRequest {
            target: ExecTarget::Service {
                id: "web".into(),
                slot: Some(2),
            },
            spec: ExecSpec {
                cmd: vec!["sh".into(), "-c".into(), "exit 3".into()],
                attach_stdin: true,
                ..Default::default()
            },
        };
        let frame = request.to_frame();
        assert_eq!(frame.kind, FrameKind::Hello);
        // Through the wire encoding too.
        let (decoded, _) = Frame::decode(&frame.to_bytes()).unwrap().unwrap();
        assert_eq!(RelayRequest::from_frame(&decoded), Ok(request));
        let task = RelayRequest {
            target: ExecTarget::Task("abc".into()),
            spec: ExecSpec::default(),
        };
        assert_eq!(RelayRequest::from_frame(&task.to_frame()), Ok(task));
        assert!(RelayRequest::from_frame(&Frame::new(FrameKind::Stdin, b"{}".to_vec())).is_err());
        assert!(RelayRequest::from_frame(&Frame::new(FrameKind::Hello, b"12".to_vec())).is_err());
    }

    #[test]
    fn managers_may_relay_workers_only_when_the_swarm_allows_it() {
        let manager = Some(NodeSpecRoleEnum::MANAGER);
        let worker = Some(NodeSpecRoleEnum::WORKER);
        let refused = Err(ExecRefusal::new(403, WORKER_EXEC_REFUSED));
        assert_eq!(may_relay(manager, None), Ok(()));
        assert_eq!(may_relay(manager, Some(&swarm(None))), Ok(()));
        assert_eq!(may_relay(worker, None), refused);
        assert_eq!(may_relay(worker, Some(&swarm(None))), refused);
        assert_eq!(may_relay(worker, Some(&swarm(Some("false")))), refused);
        assert_eq!(may_relay(worker, Some(&swarm(Some("yes please")))), refused);
        assert_eq!(may_relay(None, Some(&swarm(None))), refused);
        assert_eq!(may_relay(worker, Some(&swarm(Some("true")))), Ok(()));
        assert_eq!(may_relay(worker, Some(&swarm(Some("1")))), Ok(()));
    }
}
