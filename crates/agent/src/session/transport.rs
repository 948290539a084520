//! What one connection to one manager can do: the calls of the dispatcher's
//! protocol, each made to the manager it names. Which manager to call, and
//! what to do when one fails, is the session's; crates/rpc carries the calls
//! over gRPC, the tests over a stub.

use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{TaskStatus, TlsInfo};
use flotilla_store::logs::{LogChunk, LogRequest};
use flotilla_store::models::Task;
use flotilla_store::network::RoutingTable;
use flotilla_store::secrets::NodeData;
use flotilla_store::state::CaTarget;
use futures::stream::BoxStream;

use super::SessionError;

/// What a node registers with.
#[derive(Debug, Clone)]
pub struct Registration {
    pub description: bollard::models::NodeDescription,
    /// The address other nodes reach this one at.
    pub addr: String,
}

/// The dispatcher's answer to a registration.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    /// The heartbeat period the dispatcher counts with.
    pub period: Duration,
    /// Whether the swarm wants this node to be a manager.
    pub manager: bool,
    /// Every manager's cluster address (some may have joined since this
    /// node did).
    pub managers: Vec<String>,
}

/// The dispatcher's answer to a heartbeat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Heartbeat {
    /// The role the manager says this node has, when it says.
    pub manager: Option<bool>,
    /// The root and certificate issuer every node must come to, when the
    /// manager says (a root CA rotation changes them).
    pub ca: Option<CaTarget>,
}

/// One message of the assignment stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Every task assigned to the node; the first message but for `Data`.
    Tasks(Vec<Task>),
    /// What changed since the last message: new tasks and new versions,
    /// whole, and the IDs of tasks no longer assigned.
    Changes {
        updated: Vec<Task>,
        removed: Vec<String>,
    },
    /// The cluster's routing table, whenever it changes.
    Routes(RoutingTable),
    /// The secrets and configs the node's tasks need, as a whole, before
    /// the tasks that need them (before the first `Tasks` too).
    Data(NodeData),
    /// A manager wants one of the node's tasks' logs.
    Logs(Box<LogRequest>),
    /// A manager wants a command run in one of the node's tasks.
    Exec(Box<flotilla_store::exec::ExecRequest>),
}

/// Frames of one exec, either way.
pub type FrameStream = BoxStream<'static, flotilla_store::exec::Frame>;

/// The assignment stream; it ends when the manager closes it (it stopped
/// leading) or the connection breaks.
pub type UpdateStream = BoxStream<'static, Result<Update, SessionError>>;

/// Errors say which manager failed and how: `Refused` when it answered with
/// a typed store error (a `NotLeader` naming the leader is followed),
/// `Failed` when it could not be reached or refused otherwise, `Protocol`
/// when a message did not encode or decode.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    async fn register(
        &self,
        manager: &str,
        registration: &Registration,
    ) -> Result<Registered, SessionError>;
    /// `tls` is the node's TLSInfo when it changed since the manager last
    /// heard it.
    async fn heartbeat(
        &self,
        manager: &str,
        tls: Option<&TlsInfo>,
    ) -> Result<Heartbeat, SessionError>;
    async fn assignments(&self, manager: &str) -> Result<UpdateStream, SessionError>;
    async fn report(
        &self,
        manager: &str,
        batch: &[(String, TaskStatus)],
    ) -> Result<(), SessionError>;
    /// Sends lines of a log request; false when nobody reads them any more.
    async fn publish_logs(&self, manager: &str, _chunk: &LogChunk) -> Result<bool, SessionError> {
        Err(SessionError::Failed {
            addr: manager.to_string(),
            message: "this transport carries no logs".into(),
        })
    }
    /// Opens an exec stream to `manager`: `outgoing` goes there (its
    /// first frame is `Hello`), what it sends back comes out.
    async fn exec_attach(
        &self,
        manager: &str,
        _outgoing: FrameStream,
    ) -> Result<FrameStream, SessionError> {
        Err(SessionError::Failed {
            addr: manager.to_string(),
            message: "this transport carries no exec".into(),
        })
    }
}
