//! How many tasks each service has in each state, kept as tasks change, so
//! that reading the counts (the metrics do, on every scrape) costs one
//! entry per service rather than a walk over every task.

use bollard::models::TaskState;

use crate::objects::TaskExt;
use crate::task::Task;

/// Task states in the order of Docker's `TaskState` (NEW = 0 … ORPHANED).
pub const TASK_STATES: [TaskState; 15] = [
    TaskState::NEW,
    TaskState::ALLOCATED,
    TaskState::PENDING,
    TaskState::ASSIGNED,
    TaskState::ACCEPTED,
    TaskState::PREPARING,
    TaskState::READY,
    TaskState::STARTING,
    TaskState::RUNNING,
    TaskState::COMPLETE,
    TaskState::SHUTDOWN,
    TaskState::FAILED,
    TaskState::REJECTED,
    TaskState::REMOVE,
    TaskState::ORPHANED,
];

/// [`TASK_STATES`] as Docker writes them (lower case).
pub const TASK_STATE_NAMES: [&str; 15] = [
    "new",
    "allocated",
    "pending",
    "assigned",
    "accepted",
    "preparing",
    "ready",
    "starting",
    "running",
    "complete",
    "shutdown",
    "failed",
    "rejected",
    "remove",
    "orphaned",
];

/// One service's tasks, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskCounts {
    /// By observed state, indexed as [`TASK_STATES`].
    pub by_state: [u32; TASK_STATES.len()],
    /// Running and meant to run: Docker's RunningTasks, but for tasks on
    /// a node just found down that the orchestrator has not moved yet.
    pub running: u32,
    /// Meant to run: a global service's desired count.
    pub desired_running: u32,
    /// Meant to complete and not complete yet: a global job's desired count.
    pub desired_complete: u32,
}

impl TaskCounts {
    pub(crate) fn add(&mut self, t: &Task) {
        self.apply(t, |n| *n += 1);
    }

    pub(crate) fn remove(&mut self, t: &Task) {
        self.apply(t, |n| *n = n.saturating_sub(1));
    }

    fn apply(&mut self, t: &Task, f: impl Fn(&mut u32)) {
        let (state, desired) = (t.state(), t.desired());
        f(&mut self.by_state[state as usize]);
        if desired == TaskState::RUNNING {
            f(&mut self.desired_running);
            if state == TaskState::RUNNING {
                f(&mut self.running);
            }
        }
        if desired == TaskState::COMPLETE && state != TaskState::COMPLETE {
            f(&mut self.desired_complete);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_state.iter().all(|n| *n == 0)
    }

    pub fn in_state(&self, state: TaskState) -> u32 {
        self.by_state[state as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::TaskStatus;
    use crate::ops::tests::{svc, task};
    use crate::ops::Op;
    use crate::state::State;
    use proptest::prelude::*;

    fn recount(s: &State) -> std::collections::HashMap<String, TaskCounts> {
        let mut all = std::collections::HashMap::<String, TaskCounts>::new();
        for t in s.tasks.values() {
            all.entry(t.service().to_string()).or_default().add(t);
        }
        all
    }

    proptest! {
        /// Whatever the ops (refused ones included), the kept counts are
        /// what counting every task gives.
        #[test]
        fn kept_counts_equal_a_recount(ops in proptest::collection::vec((0u8..5, 0u8..6, 0usize..15), 1..60)) {
            let mut s = State::default();
            s.apply(1, Op::CreateService(Box::new(svc("a", "web-a")))).unwrap();
            s.apply(2, Op::CreateService(Box::new(svc("b", "web-b")))).unwrap();
            for (i, (kind, t, state)) in ops.into_iter().enumerate() {
                let id = format!("t{t}");
                let op = match kind {
                    0 => Op::CreateTask(Box::new(task(&id, if t % 2 == 0 { "a" } else { "b" }))),
                    1 => Op::SetTaskStatus {
                        id,
                        status: TaskStatus { state: Some(TASK_STATES[state]), ..Default::default() },
                    },
                    2 => Op::SetTaskDesired {
                        id,
                        desired: TASK_STATES[state],
                        updated_at: "x".into(),
                    },
                    3 => Op::AssignTask {
                        id,
                        node_id: "n1".into(),
                        status: TaskStatus { state: Some(TaskState::ASSIGNED), ..Default::default() },
                        generic: None,
                    },
                    _ => Op::RemoveTask { id },
                };
                let _ = s.apply(3 + i as u64, op);
            }
            prop_assert_eq!(s.task_counts(), &recount(&s));
            let mut reloaded = s.clone();
            reloaded.rebuild_indexes();
            prop_assert_eq!(reloaded.task_counts(), &recount(&s));
        }
    }

    #[test]
    fn states_are_indexed_as_docker_orders_them() {
        for (i, s) in TASK_STATES.iter().enumerate() {
            assert_eq!(*s as usize, i, "{s}");
            assert_eq!(s.to_string(), TASK_STATE_NAMES[i]);
        }
    }
}
