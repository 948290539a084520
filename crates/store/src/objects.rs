//! Questions asked of one object at a time (a task's state, a node's
//! availability, a service's name) over bollard's all-optional models, so
//! callers read as the Docker docs do. `state` re-exports them.

use bollard::models::{Node, NodeSpecAvailabilityEnum, NodeState, TaskState};

use crate::models::Service;
use crate::task::Task;

/// Which update created a task, if the updater did (or `rebalance …`
/// for a task the rebalancer made to move a slot, see [`is_move`]).
pub fn update_of(t: &Task) -> Option<&str> {
    t.runtime.update.as_deref()
}

/// What `Task.runtime.update` starts with on a task the rebalancer made
/// to move its slot to another node.
pub const MOVE_MARK: &str = "rebalance";

/// Whether the rebalancer made this task to move its slot.
pub fn is_move(t: &Task) -> bool {
    update_of(t).is_some_and(|u| u.split(' ').next() == Some(MOVE_MARK))
}

/// The node predicates, in one place: what the scheduler, the orchestrators,
/// the dispatcher and the API ask of a node.
pub trait NodeExt {
    /// The state its agent last reported (UNKNOWN when none).
    fn state(&self) -> NodeState;
    fn is_ready(&self) -> bool {
        self.state() == NodeState::READY
    }
    fn is_down(&self) -> bool {
        self.state() == NodeState::DOWN
    }
    /// ACTIVE unless set otherwise.
    fn availability(&self) -> NodeSpecAvailabilityEnum;
    /// Ready and active: new tasks may go there.
    fn takes_new_tasks(&self) -> bool {
        self.is_ready() && self.availability() == NodeSpecAvailabilityEnum::ACTIVE
    }
}

impl NodeExt for Node {
    fn state(&self) -> NodeState {
        self.status
            .as_ref()
            .and_then(|s| s.state)
            .unwrap_or(NodeState::UNKNOWN)
    }
    fn availability(&self) -> NodeSpecAvailabilityEnum {
        self.spec
            .as_ref()
            .and_then(|s| s.availability)
            .unwrap_or(NodeSpecAvailabilityEnum::ACTIVE)
    }
}

/// Shorthands over bollard's all-optional models, so callers read as the
/// domain rather than as `Option` plumbing.
pub trait TaskExt {
    fn id_str(&self) -> &str;
    fn service(&self) -> &str;
    fn node(&self) -> Option<&str>;
    fn state(&self) -> TaskState;
    fn desired(&self) -> TaskState;
    fn slot_no(&self) -> i64;
    fn version_index(&self) -> u64;
    /// The manager wants it running now: desired RUNNING, or COMPLETE for
    /// a job's task (which runs until it exits).
    fn should_run(&self) -> bool {
        matches!(self.desired(), TaskState::RUNNING | TaskState::COMPLETE)
    }
    /// Still wanted: waiting to start (READY) or meant to run.
    fn is_wanted(&self) -> bool {
        self.desired() <= TaskState::COMPLETE
    }
}

impl TaskExt for Task {
    fn id_str(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }
    fn service(&self) -> &str {
        self.service_id.as_deref().unwrap_or_default()
    }
    fn node(&self) -> Option<&str> {
        self.node_id.as_deref().filter(|n| !n.is_empty())
    }
    fn state(&self) -> TaskState {
        self.status
            .as_ref()
            .and_then(|s| s.state)
            .unwrap_or(TaskState::NEW)
    }
    fn desired(&self) -> TaskState {
        self.desired_state.unwrap_or(TaskState::NEW)
    }
    fn slot_no(&self) -> i64 {
        self.slot.unwrap_or(0)
    }
    fn version_index(&self) -> u64 {
        version_of(&self.version)
    }
}

pub fn version_of(v: &Option<bollard::models::ObjectVersion>) -> u64 {
    v.as_ref().and_then(|v| v.index).unwrap_or(0)
}

/// A task is "terminal" once it can never run again.
pub fn is_terminal(state: TaskState) -> bool {
    state > TaskState::RUNNING
}

pub fn service_name(s: &Service) -> &str {
    s.spec
        .as_ref()
        .and_then(|sp| sp.name.as_deref())
        .unwrap_or_default()
}

pub fn node_hostname(n: &Node) -> &str {
    n.description
        .as_ref()
        .and_then(|d| d.hostname.as_deref())
        .unwrap_or_default()
}
