//! The exec broker, beside the log broker: `exec` into a task on another
//! node. The manager whose API holds the client opens a session here and
//! asks the leader to send the request down the node's assignment stream
//! (the leader's broker keeps each connected node's request channel); the
//! node then calls that manager back on a two-way stream that names the
//! session, and the two are joined. A node with no open stream is refused
//! at once; one that does not call back within the wait is an error, not
//! a hang.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_store::exec::{ExecRequest, Frame};
use tokio::sync::{mpsc, oneshot};

/// How long a node gets to call back once asked.
pub const CALLBACK_WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct ExecBroker {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    /// Where each connected node's requests go (its assignment stream), on
    /// the leader.
    agents: HashMap<String, (u64, mpsc::UnboundedSender<ExecRequest>)>,
    /// Sessions of this manager's clients waiting for their node.
    pending: HashMap<u64, (String, oneshot::Sender<Attached>)>,
}

/// A node's side of one exec, as the manager sees it.
pub struct Attached {
    /// What the node sends: `Started`, output, then `Exit` or `Error`.
    pub from_node: mpsc::Receiver<Frame>,
    /// What goes to the node: input, resizes. Dropping it ends the exec.
    pub to_node: mpsc::Sender<Frame>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecBrokerError {
    #[error("node {0} is not connected to the leader (down or restarting)")]
    NotConnected(String),
    #[error("node {node} did not answer the exec request within {secs} s")]
    NoAnswer { node: String, secs: u64 },
    #[error("no exec session {session} waits for node {node}")]
    UnknownSession { session: u64, node: String },
}

/// A session waiting for its node; dropping it forgets the session.
pub struct Pending {
    pub session: u64,
    node: String,
    rx: oneshot::Receiver<Attached>,
    broker: Arc<ExecBroker>,
}

impl Pending {
    /// The node's side, once it called back within `within`.
    pub async fn attached(mut self, within: Duration) -> Result<Attached, ExecBrokerError> {
        match tokio::time::timeout(within, &mut self.rx).await {
            Ok(Ok(attached)) => Ok(attached),
            _ => Err(ExecBrokerError::NoAnswer {
                node: self.node.clone(),
                secs: within.as_secs(),
            }),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.broker.lock().pending.remove(&self.session);
    }
}

/// A node's stream of exec requests; dropping it (the stream closed)
/// forgets the node, unless a newer stream replaced it.
pub struct AgentExecs {
    pub rx: mpsc::UnboundedReceiver<ExecRequest>,
    node: String,
    id: u64,
    broker: Arc<ExecBroker>,
}

impl Drop for AgentExecs {
    fn drop(&mut self) {
        let mut inner = self.broker.lock();
        if inner
            .agents
            .get(&self.node)
            .is_some_and(|(id, _)| *id == self.id)
        {
            inner.agents.remove(&self.node);
        }
    }
}

impl ExecBroker {
    pub fn new() -> Arc<ExecBroker> {
        Arc::new(ExecBroker::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A node opened its assignment stream (on the leader): requests for
    /// it go there.
    pub fn agent_connected(self: &Arc<Self>, node: &str) -> AgentExecs {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        inner.next += 1;
        let id = inner.next;
        inner.agents.insert(node.to_string(), (id, tx));
        AgentExecs {
            rx,
            node: node.to_string(),
            id,
            broker: self.clone(),
        }
    }

    /// Sends `request` down its node's assignment stream (on the leader).
    pub fn send(&self, request: ExecRequest) -> Result<(), ExecBrokerError> {
        let node = request.task.node_id.clone().unwrap_or_default();
        let inner = self.lock();
        match inner.agents.get(&node) {
            Some((_, agent)) if agent.send(request).is_ok() => Ok(()),
            _ => Err(ExecBrokerError::NotConnected(node)),
        }
    }

    /// A session of this manager waiting for `node` to call back. Its ID
    /// is not guessable, though only `node` may answer it anyway.
    pub fn open(self: &Arc<Self>, node: &str) -> Pending {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        let mut session = rand::random::<u64>() >> 11;
        while session == 0 || inner.pending.contains_key(&session) {
            session = rand::random::<u64>() >> 11;
        }
        inner.pending.insert(session, (node.to_string(), tx));
        Pending {
            session,
            node: node.to_string(),
            rx,
            broker: self.clone(),
        }
    }

    /// `node` called back for `session`: its side goes to the waiting client.
    pub fn attach(
        &self,
        session: u64,
        node: &str,
        attached: Attached,
    ) -> Result<(), ExecBrokerError> {
        let unknown = || ExecBrokerError::UnknownSession {
            session,
            node: node.to_string(),
        };
        let mut inner = self.lock();
        match inner.pending.get(&session) {
            Some((expected, _)) if expected == node => {}
            _ => return Err(unknown()),
        }
        let (_, tx) = inner.pending.remove(&session).ok_or_else(unknown)?;
        tx.send(attached).map_err(|_| unknown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_store::exec::{ExecSpec, FrameKind};
    use flotilla_store::models::Task;

    fn request(node: &str, session: u64) -> ExecRequest {
        ExecRequest {
            session,
            task: Task {
                node_id: Some(node.into()),
                ..Default::default()
            },
            spec: ExecSpec::default(),
            manager: "m1:2377".into(),
        }
    }

    fn pipe() -> (Attached, mpsc::Sender<Frame>, mpsc::Receiver<Frame>) {
        let (up_tx, up_rx) = mpsc::channel(4);
        let (down_tx, down_rx) = mpsc::channel(4);
        (
            Attached {
                from_node: up_rx,
                to_node: down_tx,
            },
            up_tx,
            down_rx,
        )
    }

    #[tokio::test]
    async fn the_node_that_calls_back_is_joined_to_its_client() {
        let broker = ExecBroker::new();
        let mut agent = broker.agent_connected("n1");
        let pending = broker.open("n1");
        let session = pending.session;
        broker.send(request("n1", session)).unwrap();
        assert_eq!(agent.rx.recv().await.unwrap().session, session);
        // Another node cannot take the session.
        let (wrong, _, _) = pipe();
        assert!(broker.attach(session, "n2", wrong).is_err());
        let (side, up, mut down) = pipe();
        broker.attach(session, "n1", side).unwrap();
        let mut client = pending.attached(CALLBACK_WAIT).await.unwrap();
        up.send(Frame::exit(3)).await.unwrap();
        assert_eq!(client.from_node.recv().await.unwrap().number(), Some(3));
        client.to_node.send(Frame::resize(1, 2)).await.unwrap();
        assert_eq!(down.recv().await.unwrap().kind, FrameKind::Resize);
    }

    #[tokio::test]
    async fn a_node_not_connected_or_silent_is_an_error_not_a_hang() {
        let broker = ExecBroker::new();
        assert_eq!(
            broker.send(request("n1", 1)),
            Err(ExecBrokerError::NotConnected("n1".into()))
        );
        let agent = broker.agent_connected("n1");
        let pending = broker.open("n1");
        let session = pending.session;
        broker.send(request("n1", session)).unwrap();
        assert_eq!(
            pending.attached(Duration::from_millis(20)).await.err(),
            Some(ExecBrokerError::NoAnswer {
                node: "n1".into(),
                secs: 0
            })
        );
        // The session is gone with its client: a late call back is refused.
        let (late, _, _) = pipe();
        assert!(broker.attach(session, "n1", late).is_err());
        drop(agent);
        assert!(broker.send(request("n1", 2)).is_err());
    }
}
