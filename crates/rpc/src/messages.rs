//! The JSON payloads of the cluster RPCs.

use flotilla_store::exec::ExecRequest;
use flotilla_store::logs::LogRequest;
use flotilla_store::models::{NodeDescription, Task, TaskStatus};
use flotilla_store::network::RoutingTable;
use flotilla_store::secrets::NodeData;
use flotilla_store::StoreError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProposeReply {
    pub index: u64,
    pub results: Vec<Result<(), StoreError>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddManager {
    pub raft_id: u64,
    pub addr: String,
    /// Set by a manager that forwards the request to the leader: the
    /// joining node's ID (the leader sees the forwarder's certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub description: NodeDescription,
    /// The address other nodes reach this one at.
    pub addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterReply {
    pub heartbeat_ms: u64,
    /// The role the store gives this node (a promotion or demotion shows
    /// here first).
    pub manager: bool,
    /// Every manager's cluster address, for the agent's list.
    pub managers: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// The node's TLSInfo, when it changed since the manager last heard it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<flotilla_store::models::TlsInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub manager: bool,
    /// The root every node must trust and the key its certificate must
    /// come from (a root CA rotation changes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<flotilla_store::state::CaTarget>,
}

pub type StatusBatch = Vec<(String, TaskStatus)>;

/// How many tasks one assignment message carries at most (about 2 KiB of
/// JSON each): a node of 10,000 tasks gets its set in ten messages.
pub const TASKS_PER_MESSAGE: usize = 1000;

/// What the assignment stream carries: the node's tasks (always first,
/// as a whole), then what changed in them (as SwarmKit's incremental
/// assignments do: a node of 100 tasks gets one task when one changes),
/// and the cluster's routing table whenever it changes. The secrets and
/// configs the node's tasks need come, as a whole set, before the tasks
/// that need them, whenever that set changes.
///
/// A whole set of many tasks comes as several messages, so none is large:
/// `TasksPart`s, then the `Tasks` that ends the set (the receiving side
/// puts them together before the agent sees them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AgentUpdate {
    Tasks(Vec<Task>),
    TasksPart(Vec<Task>),
    Changes {
        /// New tasks and new versions of tasks, whole.
        updated: Vec<Task>,
        /// Tasks no longer assigned to the node.
        removed: Vec<String>,
    },
    Routes(RoutingTable),
    Data(NodeData),
    /// A manager wants one of the node's tasks' logs.
    Logs(Box<LogRequest>),
    /// A manager wants a command run in one of the node's tasks.
    Exec(Box<ExecRequest>),
}

/// [`AgentUpdate`] by reference, for the sending side (same JSON).
#[derive(Debug, Serialize)]
pub enum AgentUpdateRef<'a> {
    Tasks(Vec<&'a Task>),
    TasksPart(Vec<&'a Task>),
    Changes {
        updated: Vec<&'a Task>,
        removed: Vec<&'a str>,
    },
    Routes(&'a RoutingTable),
    Data(&'a NodeData),
    Logs(&'a LogRequest),
    Exec(&'a ExecRequest),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootCaReply {
    pub cert_pem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token: String,
    /// The node's own key stays on the node: it sends a CSR.
    pub csr_pem: String,
    pub description: NodeDescription,
    /// Where the new node is reached (its advertise address with the port).
    pub addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinReply {
    pub node_id: String,
    pub manager: bool,
    pub cluster_id: String,
    pub cert_pem: String,
    /// Managers' cluster addresses, for the agent to reach any of them.
    pub managers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewRequest {
    pub csr_pem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewReply {
    pub cert_pem: String,
}
