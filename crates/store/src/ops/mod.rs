//! Changes to the store. Every change is an [`Op`] carried by a Raft entry
//! and applied in log order on every manager, so `apply` must depend only on
//! the op and the state: times and IDs are chosen by the proposer.
//!
//! Task ops are semantic ("assign", "set status") rather than whole-object
//! writes, so the scheduler, the orchestrators and the agents can change
//! different parts of one task without overwriting each other.
//!
//! This file holds the ops and the dispatch; each op applies in a function
//! of its own, grouped by object: `cluster.rs`, `networks.rs`, `nodes.rs`,
//! `services.rs`, `tasks.rs`. Allocation (ports, addresses) is `crate::alloc`'s.

use bollard::models::{
    JoinTokens, ManagerStatus, Node, NodeDescription, NodeSpec, NodeStatus, ObjectVersion,
    Reachability, ServiceUpdateStatus, Swarm, TaskState, TaskStatus, TlsInfo,
};
use serde::{Deserialize, Serialize};

use crate::changes::Scope;
pub use crate::error::{Kind, StoreError};
use crate::models::{Service, Task};
use crate::objects::TaskExt;
use crate::state::{RootRotation, State};

mod allocate;
mod cluster;
mod networks;
mod nodes;
mod secrets;

pub use networks::{service_networks, uses_ingress};
pub use secrets::refers_to;
mod services;
mod tasks;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Op {
    InitCluster {
        swarm: Box<Swarm>,
        ca_key_pem: String,
        /// The unlock key (`SWMKEY-1-…`) of a swarm made with autolock.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unlock_key: Option<String>,
    },
    /// Replace the swarm object (spec, tokens) and its unlock key if its
    /// version is `expected`.
    UpdateCluster {
        expected: u64,
        swarm: Box<Swarm>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unlock_key: Option<String>,
        /// A root CA rotation this update starts (replacing one under way).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        root_rotation: Option<Box<RootRotation>>,
        /// The `ForceRotate` this update answered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_forced_rotation: Option<u64>,
    },
    /// The rotation to the root `cert_pem` is done: it becomes the swarm's
    /// root, with new join tokens (they pin the root's digest).
    FinishRootRotation {
        cert_pem: String,
        join_tokens: JoinTokens,
    },
    /// Which root a node trusts and which key signed its certificate.
    SetNodeTls {
        id: String,
        tls_info: TlsInfo,
    },
    /// Register or re-register a node (description, status, role).
    PutNode(Box<Node>),
    UpdateNodeSpec {
        id: String,
        expected: u64,
        spec: NodeSpec,
        updated_at: String,
    },
    /// What the node's agent reports: its status, and its description when
    /// it (re)registers.
    SetNodeStatus {
        id: String,
        status: NodeStatus,
        description: Option<Box<NodeDescription>>,
        updated_at: String,
    },
    RemoveNode {
        id: String,
    },
    /// A manager's Raft reachability as the leader sees it.
    SetReachability {
        id: String,
        reachability: Reachability,
    },
    /// A node became a Raft member (promoted, joined) or stopped being one.
    SetManagerStatus {
        id: String,
        status: Option<ManagerStatus>,
    },
    /// A swarm network; its subnet, gateway and VXLAN identifier are
    /// decided as it applies.
    CreateNetwork {
        id: String,
        created_at: String,
        spec: Box<crate::networks::NetworkSpec>,
    },
    RemoveNetwork {
        id: String,
    },
    /// A secret or a config.
    CreateData {
        kind: crate::secrets::DataKind,
        object: Box<crate::secrets::DataObject>,
    },
    /// A secret's or config's labels (the only thing that may change), if
    /// its version is `expected`.
    UpdateDataLabels {
        kind: crate::secrets::DataKind,
        id: String,
        expected: u64,
        labels: std::collections::BTreeMap<String, String>,
        updated_at: String,
    },
    RemoveData {
        kind: crate::secrets::DataKind,
        id: String,
    },
    CreateService(Box<Service>),
    /// Replace a service if its version is `expected` (optimistic concurrency).
    UpdateService {
        expected: u64,
        service: Box<Service>,
    },
    /// Record update progress without touching the spec or the version check.
    SetUpdateStatus {
        id: String,
        status: Option<ServiceUpdateStatus>,
    },
    RemoveService {
        id: String,
    },
    CreateTask(Box<Task>),
    /// Bind a pending task to a node (only while it is still unassigned).
    AssignTask {
        id: String,
        node_id: String,
        status: TaskStatus,
        /// The node's generic resources the task gets (named ones by
        /// value, discrete ones by count), when it asks for any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generic: Option<crate::models::GenericResources>,
    },
    /// Observed state: only ever moves forward; same state may refresh the message.
    SetTaskStatus {
        id: String,
        status: TaskStatus,
    },
    /// Desired state: only ever moves forward.
    SetTaskDesired {
        id: String,
        desired: TaskState,
        updated_at: String,
    },
    RemoveTask {
        id: String,
    },
}

fn not_found(kind: Kind, id: &str) -> StoreError {
    StoreError::not_found(kind, id)
}

fn out_of_sequence(kind: Kind, id: &str, expected: u64, current: u64) -> StoreError {
    StoreError::OutOfSequence {
        kind,
        id: id.to_string(),
        expected,
        current,
    }
}

fn version(index: u64) -> Option<ObjectVersion> {
    Some(ObjectVersion { index: Some(index) })
}

impl State {
    /// Applies one op at log index `index`. An op that fails changes nothing.
    pub fn apply(&mut self, index: u64, op: Op) -> Result<(), StoreError> {
        let scope = self.scope_of(&op);
        let result = self.apply_op(index, op);
        let scope = match result {
            Ok(()) => scope,
            Err(_) => crate::changes::Scope::Nothing,
        };
        self.record_change(index, scope);
        result
    }

    fn apply_op(&mut self, index: u64, op: Op) -> Result<(), StoreError> {
        match op {
            Op::InitCluster {
                swarm,
                ca_key_pem,
                unlock_key,
            } => self.apply_init_cluster(index, *swarm, ca_key_pem, unlock_key),
            Op::UpdateCluster {
                expected,
                swarm,
                unlock_key,
                root_rotation,
                last_forced_rotation,
            } => {
                self.apply_update_cluster(index, expected, *swarm, unlock_key)?;
                self.apply_root_rotation(root_rotation.map(|r| *r), last_forced_rotation);
                Ok(())
            }
            Op::FinishRootRotation {
                cert_pem,
                join_tokens,
            } => self.apply_finish_root_rotation(index, &cert_pem, join_tokens),
            Op::SetNodeTls { id, tls_info } => self.apply_set_node_tls(index, &id, tls_info),
            Op::PutNode(node) => self.apply_put_node(index, *node),
            Op::UpdateNodeSpec {
                id,
                expected,
                spec,
                updated_at,
            } => self.apply_update_node_spec(index, &id, expected, spec, updated_at),
            Op::SetNodeStatus {
                id,
                status,
                description,
                updated_at,
            } => self.apply_set_node_status(index, &id, status, description, updated_at),
            Op::SetManagerStatus { id, status } => {
                self.apply_set_manager_status(index, &id, status)
            }
            Op::SetReachability { id, reachability } => {
                self.apply_set_reachability(index, &id, reachability)
            }
            Op::RemoveNode { id } => self.apply_remove_node(&id),
            Op::CreateNetwork {
                id,
                created_at,
                spec,
            } => self.apply_create_network(index, id, created_at, *spec),
            Op::RemoveNetwork { id } => self.apply_remove_network(&id),
            Op::CreateData { kind, object } => self.apply_create_data(index, kind, *object),
            Op::UpdateDataLabels {
                kind,
                id,
                expected,
                labels,
                updated_at,
            } => self.apply_update_data_labels(index, kind, &id, expected, labels, updated_at),
            Op::RemoveData { kind, id } => self.apply_remove_data(kind, &id),
            Op::CreateService(svc) => self.apply_create_service(index, *svc),
            Op::UpdateService { expected, service } => {
                self.apply_update_service(index, expected, *service)
            }
            Op::SetUpdateStatus { id, status } => self.apply_set_update_status(index, &id, status),
            Op::RemoveService { id } => self.apply_remove_service(&id),
            Op::CreateTask(task) => self.apply_create_task(index, *task),
            Op::AssignTask {
                id,
                node_id,
                status,
                generic,
            } => self.apply_assign_task(index, id, node_id, status, generic),
            Op::SetTaskStatus { id, status } => self.apply_set_task_status(index, id, status),
            Op::SetTaskDesired {
                id,
                desired,
                updated_at,
            } => self.apply_set_task_desired(index, id, desired, updated_at),
            Op::RemoveTask { id } => self.apply_remove_task(&id),
        }
    }

    /// The scope of `op`, read before it is applied (a task's service).
    pub(crate) fn scope_of(&self, op: &Op) -> Scope {
        let task_scope = |id: &str, to_node: Option<&str>| match self.tasks.get(id) {
            Some(t) => Scope::Task(
                t.service().to_string(),
                t.node()
                    .into_iter()
                    .chain(to_node)
                    .map(str::to_string)
                    .collect(),
            ),
            None => Scope::Nothing,
        };
        match op {
            Op::CreateService(svc) => Scope::Service(svc.id.clone().unwrap_or_default()),
            Op::UpdateService { service, .. } => {
                Scope::Service(service.id.clone().unwrap_or_default())
            }
            Op::SetUpdateStatus { id, .. } | Op::RemoveService { id } => Scope::Service(id.clone()),
            Op::CreateTask(t) => Scope::Task(
                t.service().to_string(),
                t.node().into_iter().map(str::to_string).collect(),
            ),
            Op::AssignTask { id, node_id, .. } => task_scope(id, Some(node_id)),
            Op::SetTaskStatus { id, status } => {
                let Some(task) = self.tasks.get(id) else {
                    return Scope::Nothing;
                };
                let (before, after) = (task.state(), status.state.unwrap_or(task.state()));
                if stage(before) == stage(after) {
                    // ACCEPTED, PREPARING, READY, STARTING: a node's reports
                    // on the way to RUNNING change no controller's decision.
                    // With 100,000 tasks they were most of the commits, and
                    // each made the controllers look at every service they
                    // touched.
                    return Scope::Nothing;
                }
                // A moved task's start is news: its slot's old task stops
                // then (the rebalancer's start-first moves).
                if stage(before) == TaskState::ASSIGNED
                    && after == TaskState::RUNNING
                    && !crate::objects::is_move(task)
                {
                    return Scope::Started(task.service().to_string());
                }
                match task_scope(id, None) {
                    // A node is sent its tasks again when their spec or
                    // desired state change, not their status: it reported
                    // that itself (SwarmKit's dispatcher skips such updates
                    // too), unless the task joins or leaves its set.
                    Scope::Task(service, nodes) => {
                        let assigned = |s: TaskState| s >= TaskState::ASSIGNED;
                        if assigned(before) == assigned(after) {
                            Scope::Task(service, Vec::new())
                        } else {
                            Scope::Task(service, nodes)
                        }
                    }
                    other => other,
                }
            }
            Op::SetTaskDesired { id, .. } | Op::RemoveTask { id } => task_scope(id, None),
            Op::RemoveNode { id } => Scope::NodeRemoved(id.clone()),
            Op::SetReachability { .. }
            | Op::SetManagerStatus { .. }
            | Op::SetNodeTls { .. }
            | Op::FinishRootRotation { .. }
            | Op::CreateData { .. }
            | Op::UpdateDataLabels { .. }
            | Op::RemoveData { .. } => Scope::Nothing,
            _ => Scope::All,
        }
    }

    fn record_change(&mut self, index: u64, scope: Scope) {
        let (services, by_service) = (&self.services, &self.by_service);
        self.changes.record(index, scope, |id| {
            services.contains_key(id) || by_service.contains_key(id)
        });
    }
}

#[cfg(test)]
pub(crate) mod tests;

/// What the controllers tell apart in a task's state: not yet on a node,
/// on its way to running, running, or each way of ending.
fn stage(state: TaskState) -> TaskState {
    match state {
        s if s < TaskState::ASSIGNED => TaskState::PENDING,
        s if s < TaskState::RUNNING => TaskState::ASSIGNED,
        s => s,
    }
}
