//! What changed since a controller last looked, so the leader's
//! controllers reconcile the services that changed instead of every
//! service after every commit (100,000 tasks make a full pass cost tens of
//! milliseconds, and there is a pass per commit).
//!
//! Each applied op is scoped: to one service (its spec, update status or
//! one of its tasks), to everything (a node or the cluster object, which
//! every service's decisions read), or to nothing the controllers read (a
//! manager's Raft reachability, or a task's status report on its way to
//! RUNNING). A task's status marks its node changed only when the task
//! joins or leaves the node's assigned set: the node reported that status
//! itself. A reload from a snapshot starts a new epoch, after which every
//! controller makes a full pass.

use std::collections::{BTreeSet, HashMap};

/// Where a controller left off: pass it back to [`State::changed_services`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChangeMark {
    epoch: u64,
    index: u64,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Changes {
    epoch: u64,
    /// The last index applied.
    last: u64,
    /// The last index of a change every service depends on.
    all: u64,
    /// The last index that touched each service (removed services too,
    /// until their last task is gone, so the reaper sees them).
    services: HashMap<String, u64>,
    /// The last index at which one of each service's tasks started
    /// running: news only to the controllers that ask for it.
    started: HashMap<String, u64>,
    /// The last index that touched a task on each node: what the node's
    /// assignments are made of.
    nodes: HashMap<String, u64>,
    /// The nodes touched since [`Changes::take_touched`] last ran, and
    /// whether every node was (a reload).
    touched: Vec<String>,
    touched_all: bool,
}

/// Which changes a controller is told of.
#[derive(Debug, Clone, Copy)]
pub enum Interest {
    All,
    /// All but a task reaching RUNNING: the scheduler's and the task
    /// reaper's decisions never depend on it, and with 100,000 tasks
    /// starting it was most of their passes.
    NotStarts,
    /// All but a task reaching RUNNING, unless the predicate holds for
    /// its service (an orchestrator's: the service is being updated).
    StartsWhen(fn(&crate::State, &str) -> bool),
}

pub(crate) enum Scope {
    Service(String),
    /// A task of the service started running (nothing else changed).
    Started(String),
    /// A task of the service, on these nodes (before and after the op).
    Task(String, Vec<String>),
    /// Like `All`, and the node's own record goes.
    NodeRemoved(String),
    All,
    Nothing,
}

impl Changes {
    /// After a reload: whoever looked before makes a full pass.
    pub(crate) fn reset(&mut self) {
        *self = Changes {
            epoch: self.epoch + 1,
            touched_all: true,
            ..Default::default()
        };
    }

    /// The nodes whose tasks changed since the last call, each once; `None`
    /// when every node's may have.
    pub(crate) fn take_touched(&mut self) -> Option<Vec<String>> {
        let mut nodes = std::mem::take(&mut self.touched);
        if std::mem::take(&mut self.touched_all) {
            return None;
        }
        nodes.sort_unstable();
        nodes.dedup();
        Some(nodes)
    }
}

impl Changes {
    /// Records what an op applied at `index` touched (`Nothing` for an op
    /// that failed). A service gone along with all of its tasks needs
    /// nobody's attention any more (`known` says which services still have
    /// an object or a task): its record goes.
    pub(crate) fn record(&mut self, index: u64, scope: Scope, known: impl Fn(&str) -> bool) {
        self.last = self.last.max(index);
        let service = match scope {
            Scope::Service(id) => id,
            Scope::Task(id, nodes) => {
                for node in nodes {
                    self.touched.push(node.clone());
                    self.nodes.insert(node, index);
                }
                id
            }
            Scope::NodeRemoved(id) => {
                self.touched.push(id.clone());
                self.nodes.remove(&id);
                self.all = index;
                return;
            }
            Scope::All => {
                self.all = index;
                return;
            }
            Scope::Started(id) => {
                if known(&id) {
                    self.started.insert(id, index);
                } else {
                    self.started.remove(&id);
                }
                return;
            }
            Scope::Nothing => return,
        };
        if known(&service) {
            self.services.insert(service, index);
        } else {
            self.started.remove(&service);
            self.services.remove(&service);
        }
    }

    /// The services one of whose tasks started running after `mark`
    /// (meaningful only where [`Changes::changed_services`] is not `None`).
    pub(crate) fn started_since<'a>(
        &'a self,
        mark: &'a ChangeMark,
    ) -> impl Iterator<Item = &'a String> + 'a {
        self.started
            .iter()
            .filter(|(_, at)| **at > mark.index)
            .map(|(id, _)| id)
    }

    /// Where the controllers are now.
    pub(crate) fn mark(&self) -> ChangeMark {
        ChangeMark {
            epoch: self.epoch,
            index: self.last,
        }
    }

    /// Whether a task on `node` was created, changed or removed after
    /// `mark` (always, after a reload).
    pub(crate) fn node_tasks_changed(&self, node: &str, mark: &ChangeMark) -> bool {
        mark.epoch != self.epoch
            || mark.index == 0
            || self.nodes.get(node).is_some_and(|at| *at > mark.index)
    }

    /// The services (existing or removed) whose spec, status or tasks
    /// changed after `mark`; `None` when something every service depends
    /// on changed, or the state was reloaded: then everything must be
    /// looked at.
    pub(crate) fn changed_services(&self, mark: &ChangeMark) -> Option<BTreeSet<String>> {
        if mark.epoch != self.epoch || self.all > mark.index || mark.index == 0 {
            return None;
        }
        Some(
            self.services
                .iter()
                .filter(|(_, at)| **at > mark.index)
                .map(|(id, _)| id.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Node;
    use crate::ops::tests::{svc, task};
    use crate::ops::Op;
    use crate::state::State;

    /// Service `a` (index 1) and its task `t1` (index 2), not assigned.
    fn service_a_with_task_t1() -> State {
        let mut s = State::default();
        s.apply(1, Op::CreateService(Box::new(svc("a", "web-a"))))
            .unwrap();
        s.apply(2, Op::CreateTask(Box::new(task("t1", "a"))))
            .unwrap();
        s
    }

    #[test]
    fn services_touched_since_a_mark() {
        let mut s = State::default();
        let start = s.change_mark();
        s.apply(1, Op::CreateService(Box::new(svc("a", "web-a"))))
            .unwrap();
        s.apply(2, Op::CreateService(Box::new(svc("b", "web-b"))))
            .unwrap();
        assert_eq!(s.changed_services(&start), None, "nothing seen yet: all");
        let mark = s.change_mark();
        assert_eq!(s.changed_services(&mark), Some(BTreeSet::new()));

        s.apply(3, Op::CreateTask(Box::new(task("t1", "a"))))
            .unwrap();
        s.apply(
            4,
            Op::SetTaskDesired {
                id: "t1".into(),
                desired: crate::models::TaskState::SHUTDOWN,
                updated_at: "x".into(),
            },
        )
        .unwrap();
        assert_eq!(
            s.changed_services(&mark),
            Some(BTreeSet::from(["a".to_string()]))
        );

        // A node changes what every service may decide.
        let mark = s.change_mark();
        s.apply(
            5,
            Op::PutNode(Box::new(Node {
                id: Some("n".into()),
                ..Default::default()
            })),
        )
        .unwrap();
        assert_eq!(s.changed_services(&mark), None);
    }

    #[test]
    fn a_failed_op_or_a_reload_is_handled() {
        let mut s = State::default();
        s.apply(1, Op::CreateService(Box::new(svc("a", "web-a"))))
            .unwrap();
        let mark = s.change_mark();
        assert!(s
            .apply(2, Op::CreateService(Box::new(svc("a", "web-a"))))
            .is_err());
        assert_eq!(s.changed_services(&mark), Some(BTreeSet::new()));
        s.rebuild_indexes();
        assert_eq!(s.changed_services(&mark), None);
    }

    #[test]
    fn a_removed_service_is_remembered_until_its_tasks_are_gone() {
        let mut s = service_a_with_task_t1();
        let mark = s.change_mark();
        s.apply(3, Op::RemoveService { id: "a".into() }).unwrap();
        assert_eq!(
            s.changed_services(&mark),
            Some(BTreeSet::from(["a".to_string()]))
        );
        s.apply(4, Op::RemoveTask { id: "t1".into() }).unwrap();
        assert!(s.changes.services.is_empty());
    }

    #[test]
    fn task_changes_are_tracked_per_node() {
        let mut s = service_a_with_task_t1();
        let mark = s.change_mark();
        assert!(!s.node_tasks_changed("n1", &mark));
        s.apply(
            3,
            Op::AssignTask {
                id: "t1".into(),
                node_id: "n1".into(),
                status: Default::default(),
                generic: None,
            },
        )
        .unwrap();
        assert!(s.node_tasks_changed("n1", &mark));
        assert!(!s.node_tasks_changed("n2", &mark));
        // Whom the state machine wakes: n1, once.
        assert_eq!(s.take_touched_nodes(), Some(vec!["n1".to_string()]));
        assert_eq!(s.take_touched_nodes(), Some(vec![]));
        let mark = s.change_mark();
        s.apply(4, Op::RemoveTask { id: "t1".into() }).unwrap();
        assert!(s.node_tasks_changed("n1", &mark));
        assert_eq!(s.take_touched_nodes(), Some(vec!["n1".to_string()]));
        // A reload wakes every node.
        s.rebuild_indexes();
        assert_eq!(s.take_touched_nodes(), None);
        assert_eq!(s.take_touched_nodes(), Some(vec![]));
    }

    /// A node's own status reports do not change what it is sent; its
    /// service still counts as changed for the controllers.
    #[test]
    fn a_status_report_is_no_change_to_the_node_s_tasks() {
        use crate::models::{TaskState, TaskStatus};
        let mut s = service_a_with_task_t1();
        let assigned = TaskStatus {
            state: Some(TaskState::ASSIGNED),
            ..Default::default()
        };
        s.apply(
            3,
            Op::AssignTask {
                id: "t1".into(),
                node_id: "n1".into(),
                status: assigned,
                generic: None,
            },
        )
        .unwrap();
        let mark = s.change_mark();
        let accepted = TaskStatus {
            state: Some(TaskState::ACCEPTED),
            ..Default::default()
        };
        s.apply(
            4,
            Op::SetTaskStatus {
                id: "t1".into(),
                status: accepted,
            },
        )
        .unwrap();
        assert_eq!(
            s.changed_services(&mark),
            Some(BTreeSet::new()),
            "on its way to RUNNING: no controller's business"
        );
        let running = TaskStatus {
            state: Some(TaskState::RUNNING),
            ..Default::default()
        };
        s.apply(
            5,
            Op::SetTaskStatus {
                id: "t1".into(),
                status: running,
            },
        )
        .unwrap();
        assert!(!s.node_tasks_changed("n1", &mark));
        assert_eq!(
            s.changed_services(&mark),
            Some(BTreeSet::from(["a".to_string()]))
        );
        assert_eq!(
            s.changed_services_for(&mark, Interest::NotStarts),
            Some(BTreeSet::new()),
            "a start is news to the orchestrators only"
        );
        s.apply(
            6,
            Op::SetTaskDesired {
                id: "t1".into(),
                desired: TaskState::SHUTDOWN,
                updated_at: String::new(),
            },
        )
        .unwrap();
        assert!(s.node_tasks_changed("n1", &mark));
        assert_eq!(
            s.changed_services_for(&mark, Interest::NotStarts),
            Some(BTreeSet::from(["a".to_string()])),
            "a desired state is news to every controller"
        );
    }
}
