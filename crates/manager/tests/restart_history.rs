//! The task reaper and the restart policy together: a slot that keeps
//! failing is restarted `--restart-max-attempts` times and no more, even
//! when that needs more history than the task history limit keeps (the
//! restart policy counts attempts from the slot's tasks).

use std::collections::BTreeSet;

use chrono::{Duration, Utc};
use flotilla_manager::orchestrator::{replicated, taskreaper, Plan};
use flotilla_manager::scheduler;
use flotilla_store::ids::{format_time, now};
use flotilla_store::models::*;
use flotilla_store::state::TaskExt;
use flotilla_store::{Op, State};

struct World {
    state: State,
    index: u64,
}

impl World {
    /// One ready node and a one-replica service that restarts on failure,
    /// at once, at most `attempts` times.
    fn new(attempts: i64) -> World {
        let mut w = World {
            state: State::default(),
            index: 0,
        };
        w.apply(vec![Op::PutNode(Box::new(Node {
            id: Some("n1".into()),
            spec: Some(NodeSpec {
                role: Some(NodeSpecRoleEnum::WORKER),
                availability: Some(NodeSpecAvailabilityEnum::ACTIVE),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: Some(NodeState::READY),
                ..Default::default()
            }),
            ..Default::default()
        }))]);
        let spec = ServiceSpec {
            name: Some("flaky".into()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some("busybox".into()),
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::ON_FAILURE),
                    delay: Some(0),
                    max_attempts: Some(attempts),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..Default::default()
            }),
            ..Default::default()
        };
        w.apply(vec![Op::CreateService(Box::new(Service::from(
            bollard::models::Service {
                id: Some("flaky".into()),
                spec: Some(spec),
                ..Default::default()
            },
        )))]);
        w
    }

    fn apply(&mut self, ops: Vec<Op>) {
        self.index += 1;
        for op in ops {
            let _ = self.state.apply(self.index, op);
        }
    }

    /// Orchestrator, scheduler and reaper until nothing changes, with the
    /// clock past any restart delay.
    fn settle(&mut self) {
        for _ in 0..50 {
            let t = Utc::now() + Duration::seconds(6);
            let mut ops = Vec::new();
            for decide in [
                replicated::reconcile as fn(&State, _) -> Plan,
                taskreaper::reconcile,
            ] {
                ops.extend(decide(&self.state, t).ops);
            }
            ops.extend(scheduler::schedule(&self.state, &format_time(t)));
            if ops.is_empty() {
                return;
            }
            self.apply(ops);
        }
        panic!("did not settle");
    }

    fn status(&mut self, id: &str, state: TaskState) {
        self.apply(vec![Op::SetTaskStatus {
            id: id.into(),
            status: TaskStatus {
                state: Some(state),
                timestamp: Some(now()),
                ..Default::default()
            },
        }]);
    }

    /// Runs the slot's task and fails it, as long as there is one to run;
    /// returns every task ID the slot ever had.
    fn fail_repeatedly(&mut self, times: usize) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        for _ in 0..times {
            self.settle();
            seen.extend(self.state.tasks.keys().cloned());
            let live: Vec<String> = self
                .state
                .tasks
                .values()
                .filter(|t| t.desired() == TaskState::RUNNING && t.state() < TaskState::RUNNING)
                .map(|t| t.id_str().to_string())
                .collect();
            let [id] = live.as_slice() else { break };
            self.status(id, TaskState::RUNNING);
            self.status(id, TaskState::FAILED);
        }
        self.settle();
        seen.extend(self.state.tasks.keys().cloned());
        seen
    }
}

#[test]
fn max_attempts_beyond_the_history_limit_still_stop_the_restarts() {
    // The default history limit is 5 tasks per slot.
    for attempts in [5, 7] {
        let mut w = World::new(attempts);
        let seen = w.fail_repeatedly(20);
        let expected = attempts as usize + 1;
        assert_eq!(seen.len(), expected, "{attempts} attempts: tasks ever");
        assert_eq!(
            w.state.tasks_of_service("flaky").count(),
            expected,
            "{attempts} attempts: the whole history is kept"
        );
        assert!(w
            .state
            .tasks
            .values()
            .all(|t| t.state() == TaskState::FAILED));
    }
}

#[test]
fn fewer_attempts_than_the_history_limit_change_nothing() {
    let mut w = World::new(2);
    let seen = w.fail_repeatedly(20);
    assert_eq!(seen.len(), 3);
    assert_eq!(w.state.tasks_of_service("flaky").count(), 3);
    // Unlimited attempts: the history limit applies as before.
    let mut w = World::new(0);
    w.fail_repeatedly(9);
    assert_eq!(w.state.tasks_of_service("flaky").count(), 5);
}
