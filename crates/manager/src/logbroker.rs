//! The log broker, on the leader beside the dispatcher (SwarmKit's
//! logbroker): a manager that serves `service logs` for a task on another
//! node subscribes here; the request goes to that node down its
//! assignment stream, and the chunks the node publishes come back to the
//! subscriber. A node with no open stream (down, or not yet connected)
//! is refused at once: the caller says so rather than wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flotilla_store::logs::{LogChunk, LogRequest};
use tokio::sync::mpsc;

/// Chunks in flight per subscription: a slow reader slows the node down.
const BUFFER: usize = 16;

#[derive(Default)]
pub struct LogBroker {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    /// Where each connected node's requests go (its assignment stream).
    agents: HashMap<String, (u64, mpsc::UnboundedSender<LogRequest>)>,
    subs: HashMap<u64, Sub>,
}

struct Sub {
    node: String,
    tx: mpsc::Sender<LogChunk>,
}

/// Why a subscription could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("node {0} is not connected to the leader (down or restarting)")]
    NotConnected(String),
}

/// A subscription's chunks; dropping it ends the subscription, and the
/// node stops sending at its next chunk.
pub struct Subscription {
    pub rx: mpsc::Receiver<LogChunk>,
    id: u64,
    broker: Arc<LogBroker>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.broker.lock().subs.remove(&self.id);
    }
}

/// A node's stream of requests; dropping it (the stream closed) forgets
/// the node, unless a newer stream replaced it.
pub struct AgentRequests {
    pub rx: mpsc::UnboundedReceiver<LogRequest>,
    node: String,
    id: u64,
    broker: Arc<LogBroker>,
}

impl Drop for AgentRequests {
    /// The node's stream closed: what it was asked for will not come, so
    /// its subscriptions end now, saying why, instead of waiting forever.
    fn drop(&mut self) {
        let mut inner = self.broker.lock();
        if inner
            .agents
            .get(&self.node)
            .is_none_or(|(id, _)| *id != self.id)
        {
            return;
        }
        inner.agents.remove(&self.node);
        inner.subs.retain(|&sub, s| {
            if s.node != self.node {
                return true;
            }
            let _ = s.tx.try_send(LogChunk {
                sub,
                entries: Vec::new(),
                end: Some("the node's connection to the leader closed".into()),
            });
            false
        });
    }
}

impl LogBroker {
    pub fn new() -> Arc<LogBroker> {
        Arc::new(LogBroker::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A node opened its assignment stream: requests for it go there.
    pub fn agent_connected(self: &Arc<Self>, node: &str) -> AgentRequests {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        inner.next += 1;
        let id = inner.next;
        inner.agents.insert(node.to_string(), (id, tx));
        AgentRequests {
            rx,
            node: node.to_string(),
            id,
            broker: self.clone(),
        }
    }

    /// Asks `node` for what `request` names (its `sub` is set here).
    pub fn subscribe(
        self: &Arc<Self>,
        node: &str,
        mut request: LogRequest,
    ) -> Result<Subscription, LogError> {
        let (tx, rx) = mpsc::channel(BUFFER);
        let mut inner = self.lock();
        inner.next += 1;
        let id = inner.next;
        request.sub = id;
        let sent = inner
            .agents
            .get(node)
            .is_some_and(|(_, agent)| agent.send(request).is_ok());
        if !sent {
            return Err(LogError::NotConnected(node.to_string()));
        }
        inner.subs.insert(
            id,
            Sub {
                node: node.to_string(),
                tx,
            },
        );
        Ok(Subscription {
            rx,
            id,
            broker: self.clone(),
        })
    }

    /// A chunk from `node`; false when nobody wants it any more (the node
    /// stops sending), or it is not that node's subscription.
    pub async fn publish(&self, node: &str, chunk: LogChunk) -> bool {
        let tx = {
            let inner = self.lock();
            match inner.subs.get(&chunk.sub) {
                Some(sub) if sub.node == node => sub.tx.clone(),
                _ => return false,
            }
        };
        let last = chunk.end.is_some();
        let delivered = tx.send(chunk).await.is_ok();
        delivered && !last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_store::logs::LogEntry;

    fn request() -> LogRequest {
        LogRequest {
            sub: 0,
            task: Default::default(),
            follow: false,
            tail: None,
            since: None,
            stdout: true,
            stderr: true,
        }
    }

    fn chunk(sub: u64, line: &str, end: Option<&str>) -> LogChunk {
        LogChunk {
            sub,
            entries: vec![LogEntry::new(false, "t".into(), line.as_bytes())],
            end: end.map(str::to_string),
        }
    }

    #[tokio::test]
    async fn a_request_reaches_its_node_and_the_node_s_chunks_come_back() {
        let broker = LogBroker::new();
        let mut agent = broker.agent_connected("n1");
        let mut sub = broker.subscribe("n1", request()).unwrap();
        let asked = agent.rx.recv().await.unwrap();
        assert!(asked.sub > 0);
        // Another node cannot answer for it.
        assert!(!broker.publish("n2", chunk(asked.sub, "x", None)).await);
        assert!(broker.publish("n1", chunk(asked.sub, "one", None)).await);
        assert!(
            !broker
                .publish("n1", chunk(asked.sub, "two", Some("")))
                .await
        );
        assert_eq!(sub.rx.recv().await.unwrap().entries[0].bytes(), b"one");
        assert_eq!(sub.rx.recv().await.unwrap().end.as_deref(), Some(""));
    }

    #[tokio::test]
    async fn a_node_without_a_stream_is_refused_and_a_gone_reader_stops_the_node() {
        let broker = LogBroker::new();
        assert_eq!(
            broker.subscribe("n1", request()).err(),
            Some(LogError::NotConnected("n1".into()))
        );
        let mut agent = broker.agent_connected("n1");
        let sub = broker.subscribe("n1", request()).unwrap();
        let asked = agent.rx.recv().await.unwrap();
        drop(sub);
        assert!(!broker.publish("n1", chunk(asked.sub, "late", None)).await);
        // A reader waiting on a node whose stream closes is told so.
        let mut waiting = broker.subscribe("n1", request()).unwrap();
        drop(agent);
        let last = waiting.rx.recv().await.unwrap();
        assert_eq!(
            last.end.as_deref(),
            Some("the node's connection to the leader closed")
        );
        // Not connected any more.
        assert!(broker.subscribe("n1", request()).is_err());
    }
}
