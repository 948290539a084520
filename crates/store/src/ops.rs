//! Changes to the store. Every change is an [`Op`] carried by a Raft entry
//! and applied in log order on every manager, so `apply` must depend only on
//! the op and the state: times and IDs are chosen by the proposer.
//!
//! Task ops are semantic ("assign", "set status") rather than whole-object
//! writes, so the scheduler, the orchestrators and the agents can change
//! different parts of one task without overwriting each other.

use crate::task::Task;
use bollard::models::{
    ManagerStatus, Node, NodeDescription, NodeSpec, NodeStatus, ObjectVersion, Reachability,
    ServiceUpdateStatus, Swarm, TaskState, TaskStatus,
};
use serde::{Deserialize, Serialize};

pub use crate::error::{Kind, StoreError};
use crate::models::Service;
use crate::state::{service_name, version_of, State, TaskExt};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Op {
    InitCluster {
        swarm: Box<Swarm>,
        ca_key_pem: String,
    },
    /// Replace the swarm object (spec, tokens) if its version is `expected`.
    UpdateCluster {
        expected: u64,
        swarm: Box<Swarm>,
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
                mut swarm,
                ca_key_pem,
            } => {
                if self.cluster.is_some() {
                    return Err(StoreError::AlreadyInitialized);
                }
                swarm.version = version(index);
                self.cluster = Some(*swarm);
                self.root_ca_key = Some(ca_key_pem);
            }
            Op::UpdateCluster {
                expected,
                mut swarm,
            } => {
                let current = self
                    .cluster
                    .as_ref()
                    .ok_or_else(|| not_found(Kind::Swarm, ""))?;
                let current = version_of(&current.version);
                if current != expected {
                    let id = swarm.id.clone().unwrap_or_default();
                    return Err(out_of_sequence(Kind::Swarm, &id, expected, current));
                }
                swarm.version = version(index);
                self.cluster = Some(*swarm);
            }
            Op::PutNode(mut node) => {
                let id = node.id.clone().unwrap_or_default();
                node.version = version(index);
                self.nodes.insert(id, *node);
            }
            Op::UpdateNodeSpec {
                id,
                expected,
                spec,
                updated_at,
            } => {
                let node = self
                    .nodes
                    .get_mut(&id)
                    .ok_or_else(|| not_found(Kind::Node, &id))?;
                let current = version_of(&node.version);
                if current != expected {
                    return Err(out_of_sequence(Kind::Node, &id, expected, current));
                }
                node.spec = Some(spec);
                node.updated_at = Some(updated_at);
                node.version = version(index);
            }
            Op::SetNodeStatus {
                id,
                status,
                description,
                updated_at,
            } => {
                let node = self
                    .nodes
                    .get_mut(&id)
                    .ok_or_else(|| not_found(Kind::Node, &id))?;
                node.status = Some(status);
                if let Some(d) = description {
                    node.description = Some(*d);
                }
                node.updated_at = Some(updated_at);
                node.version = version(index);
            }
            Op::SetManagerStatus { id, status } => {
                let node = self
                    .nodes
                    .get_mut(&id)
                    .ok_or_else(|| not_found(Kind::Node, &id))?;
                node.manager_status = status;
                node.version = version(index);
            }
            Op::SetReachability { id, reachability } => {
                let node = self
                    .nodes
                    .get_mut(&id)
                    .ok_or_else(|| not_found(Kind::Node, &id))?;
                let ms = node
                    .manager_status
                    .as_mut()
                    .ok_or_else(|| StoreError::NotAManager { id: id.clone() })?;
                ms.reachability = Some(reachability);
                node.version = version(index);
            }
            Op::RemoveNode { id } => {
                self.nodes
                    .remove(&id)
                    .ok_or_else(|| not_found(Kind::Node, &id))?;
            }
            Op::CreateService(mut svc) => {
                let id = svc.id.clone().unwrap_or_default();
                let name = service_name(&svc);
                if self.services.values().any(|s| service_name(s) == name) {
                    return Err(StoreError::NameTaken {
                        kind: Kind::Service,
                        name: name.to_string(),
                    });
                }
                self.allocate_endpoint(&mut svc)?;
                svc.version = version(index);
                self.services.insert(id, *svc);
            }
            Op::UpdateService {
                expected,
                mut service,
            } => {
                let id = service.id.clone().unwrap_or_default();
                let current = self
                    .services
                    .get(&id)
                    .ok_or_else(|| not_found(Kind::Service, &id))?;
                let current = version_of(&current.version);
                if current != expected {
                    return Err(out_of_sequence(Kind::Service, &id, expected, current));
                }
                let name = service_name(&service);
                if self
                    .services
                    .iter()
                    .any(|(other, s)| *other != id && service_name(s) == name)
                {
                    return Err(StoreError::NameTaken {
                        kind: Kind::Service,
                        name: name.to_string(),
                    });
                }
                self.allocate_endpoint(&mut service)?;
                service.version = version(index);
                self.services.insert(id, *service);
            }
            Op::SetUpdateStatus { id, status } => {
                let svc = self
                    .services
                    .get_mut(&id)
                    .ok_or_else(|| not_found(Kind::Service, &id))?;
                svc.update_status = status;
                svc.version = version(index);
            }
            Op::RemoveService { id } => {
                let svc = self
                    .services
                    .remove(&id)
                    .ok_or_else(|| not_found(Kind::Service, &id))?;
                self.release_service(&svc);
            }
            Op::CreateTask(mut task) => {
                // A log entry written by an older version carries the
                // updater's mark in a label.
                task.take_legacy_labels();
                let id = task.id.clone().unwrap_or_default();
                if self.tasks.contains_key(&id) {
                    return Err(StoreError::IdTaken {
                        kind: Kind::Task,
                        id,
                    });
                }
                self.allocate_task(&mut task)?;
                task.version = version(index);
                self.tasks.insert(id.clone(), *task);
                self.index_task(&id);
            }
            Op::AssignTask {
                id,
                node_id,
                status,
            } => {
                let task = self
                    .tasks
                    .get(&id)
                    .ok_or_else(|| not_found(Kind::Task, &id))?;
                // Global tasks are created bound to their node; only that node fits.
                if task.node().is_some_and(|n| n != node_id) || task.state() >= TaskState::ASSIGNED
                {
                    return Err(StoreError::AlreadyAssigned { id });
                }
                self.unindex_task(&id);
                if let Some(task) = self.tasks.get_mut(&id) {
                    task.node_id = Some(node_id);
                    task.updated_at = status.timestamp.clone();
                    task.status = Some(status);
                    task.version = version(index);
                }
                self.index_task(&id);
            }
            Op::SetTaskStatus { id, status } => {
                let task = self
                    .tasks
                    .get_mut(&id)
                    .ok_or_else(|| not_found(Kind::Task, &id))?;
                let new = status.state.unwrap_or(TaskState::NEW);
                if new < task.state() {
                    return Err(StoreError::StateBackwards {
                        id,
                        from: task.state(),
                        to: new,
                    });
                }
                if new == TaskState::RUNNING && task.state() < TaskState::RUNNING {
                    task.runtime.running_since = status.timestamp.clone();
                }
                task.updated_at = status.timestamp.clone();
                task.status = Some(status);
                task.version = version(index);
            }
            Op::SetTaskDesired {
                id,
                desired,
                updated_at,
            } => {
                let task = self
                    .tasks
                    .get_mut(&id)
                    .ok_or_else(|| not_found(Kind::Task, &id))?;
                if desired < task.desired() {
                    return Err(StoreError::DesiredBackwards {
                        id,
                        from: task.desired(),
                        to: desired,
                    });
                }
                task.desired_state = Some(desired);
                task.updated_at = Some(updated_at);
                task.version = version(index);
            }
            Op::RemoveTask { id } => {
                self.unindex_task(&id);
                let task = self
                    .tasks
                    .remove(&id)
                    .ok_or_else(|| not_found(Kind::Task, &id))?;
                self.release_task(&task);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bollard::models::ServiceSpec as Spec;

    pub(crate) fn svc(id: &str, name: &str) -> Service {
        Service::from(bollard::models::Service {
            id: Some(id.into()),
            spec: Some(Spec {
                name: Some(name.into()),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    pub(crate) fn task(id: &str, svc: &str) -> Task {
        Task {
            id: Some(id.into()),
            service_id: Some(svc.into()),
            status: Some(TaskStatus {
                state: Some(TaskState::NEW),
                ..Default::default()
            }),
            desired_state: Some(TaskState::RUNNING),
            ..Default::default()
        }
    }

    #[test]
    fn duplicate_service_name_is_a_conflict_and_changes_nothing() {
        let mut s = State::default();
        s.apply(1, Op::CreateService(Box::new(svc("a", "web"))))
            .unwrap();
        let err = s
            .apply(2, Op::CreateService(Box::new(svc("b", "web"))))
            .unwrap_err();
        assert_eq!(
            err,
            StoreError::NameTaken {
                kind: Kind::Service,
                name: "web".into()
            }
        );
        assert_eq!(s.services.len(), 1);
    }

    #[test]
    fn stale_service_version_is_out_of_sequence() {
        let mut s = State::default();
        s.apply(5, Op::CreateService(Box::new(svc("a", "web"))))
            .unwrap();
        let err = s
            .apply(
                6,
                Op::UpdateService {
                    expected: 4,
                    service: Box::new(svc("a", "web2")),
                },
            )
            .unwrap_err();
        assert_eq!(err, out_of_sequence(Kind::Service, "a", 4, 5));
        s.apply(
            7,
            Op::UpdateService {
                expected: 5,
                service: Box::new(svc("a", "web2")),
            },
        )
        .unwrap();
        assert_eq!(version_of(&s.services["a"].version), 7);
    }

    #[test]
    fn task_state_never_moves_back() {
        let mut s = State::default();
        s.apply(1, Op::CreateTask(Box::new(task("t", "a"))))
            .unwrap();
        let running = TaskStatus {
            state: Some(TaskState::RUNNING),
            ..Default::default()
        };
        s.apply(
            2,
            Op::SetTaskStatus {
                id: "t".into(),
                status: running,
            },
        )
        .unwrap();
        let back = TaskStatus {
            state: Some(TaskState::PREPARING),
            ..Default::default()
        };
        assert!(s
            .apply(
                3,
                Op::SetTaskStatus {
                    id: "t".into(),
                    status: back
                }
            )
            .is_err());
        assert_eq!(s.tasks["t"].state(), TaskState::RUNNING);
    }

    #[test]
    fn the_first_running_report_is_remembered() {
        let mut s = State::default();
        s.apply(1, Op::CreateTask(Box::new(task("t", "a"))))
            .unwrap();
        let report = |state, at: &str| Op::SetTaskStatus {
            id: "t".into(),
            status: TaskStatus {
                state: Some(state),
                timestamp: Some(at.into()),
                ..Default::default()
            },
        };
        let since = |s: &State| s.tasks["t"].runtime.running_since.clone();
        s.apply(2, report(TaskState::STARTING, "t1")).unwrap();
        assert_eq!(since(&s), None);
        s.apply(3, report(TaskState::RUNNING, "t2")).unwrap();
        s.apply(4, report(TaskState::RUNNING, "t3")).unwrap();
        s.apply(5, report(TaskState::FAILED, "t4")).unwrap();
        assert_eq!(since(&s).as_deref(), Some("t2"));
    }

    #[test]
    fn assignment_updates_node_index_once() {
        let mut s = State::default();
        s.apply(1, Op::CreateTask(Box::new(task("t", "a"))))
            .unwrap();
        let st = TaskStatus {
            state: Some(TaskState::ASSIGNED),
            ..Default::default()
        };
        s.apply(
            2,
            Op::AssignTask {
                id: "t".into(),
                node_id: "n".into(),
                status: st.clone(),
            },
        )
        .unwrap();
        assert!(s
            .apply(
                3,
                Op::AssignTask {
                    id: "t".into(),
                    node_id: "m".into(),
                    status: st
                }
            )
            .is_err());
        assert_eq!(s.tasks_on_node("n").count(), 1);
        assert_eq!(s.tasks_on_node("m").count(), 0);
        s.apply(4, Op::RemoveTask { id: "t".into() }).unwrap();
        assert_eq!(s.tasks_on_node("n").count(), 0);
        assert_eq!(s.tasks_of_service("a").count(), 0);
    }
}
