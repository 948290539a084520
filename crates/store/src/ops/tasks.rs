//! Ops on tasks. They are semantic rather than whole-object writes, so the
//! scheduler (assign), the agents (observed status) and the orchestrators
//! (desired state) change different parts of one task without overwriting
//! each other; both states only ever move forward.

use std::sync::Arc;

use bollard::models::{TaskState, TaskStatus};

use super::{not_found, version};
use crate::error::{Kind, StoreError};
use crate::models::Task;
use crate::objects::{is_terminal, TaskExt};
use crate::state::State;

impl State {
    /// Stores a new task, with its address and ports when its service
    /// publishes any.
    pub(super) fn apply_create_task(
        &mut self,
        index: u64,
        mut task: Task,
    ) -> Result<(), StoreError> {
        // A log entry written by an older version carries the updater's
        // mark in a label.
        task.take_legacy_labels();
        let id = task.id.clone().unwrap_or_default();
        if self.tasks.contains_key(&id) {
            return Err(StoreError::IdTaken {
                kind: Kind::Task,
                id,
            });
        }
        self.allocate_task(&mut task)?;
        self.share_spec(&mut task);
        task.version = version(index);
        task.assignment_index = index;
        self.tasks.insert(id.clone(), Arc::new(task));
        self.index_task(&id);
        Ok(())
    }

    /// Binds a pending task to a node, only while it is unassigned.
    pub(super) fn apply_assign_task(
        &mut self,
        index: u64,
        id: String,
        node_id: String,
        status: TaskStatus,
        generic: Option<crate::models::GenericResources>,
    ) -> Result<(), StoreError> {
        let task = self
            .tasks
            .get(&id)
            .ok_or_else(|| not_found(Kind::Task, &id))?;
        // Global tasks are created bound to their node; only that node fits.
        if task.node().is_some_and(|n| n != node_id) || task.state() >= TaskState::ASSIGNED {
            return Err(StoreError::AlreadyAssigned { id });
        }
        let task = task.clone();
        self.allocate_node_addrs(&node_id, &task)?;
        // Only the state holds the task now, so it is changed in place.
        drop(task);
        self.unindex_task(&id);
        if let Some(task) = self.tasks.get_mut(&id).map(Arc::make_mut) {
            task.node_id = Some(node_id);
            if generic.is_some() {
                task.assigned_generic_resources = generic;
            }
            task.updated_at = status.timestamp.clone();
            task.status = Some(status);
            task.version = version(index);
            task.assignment_index = index;
        }
        self.index_task(&id);
        Ok(())
    }

    /// The observed state: the same state may refresh the message; the
    /// first RUNNING report's time is kept.
    pub(super) fn apply_set_task_status(
        &mut self,
        index: u64,
        id: String,
        status: TaskStatus,
    ) -> Result<(), StoreError> {
        self.unindex_task(&id);
        let result = self.set_task_status(index, &id, status);
        self.index_task(&id);
        result
    }

    fn set_task_status(
        &mut self,
        index: u64,
        id: &str,
        status: TaskStatus,
    ) -> Result<(), StoreError> {
        let task = self
            .tasks
            .get_mut(id)
            .map(Arc::make_mut)
            .ok_or_else(|| not_found(Kind::Task, id))?;
        let new = status.state.unwrap_or(TaskState::NEW);
        if new < task.state() {
            return Err(StoreError::StateBackwards {
                id: id.to_string(),
                from: task.state(),
                to: new,
            });
        }
        if new == TaskState::RUNNING && task.state() < TaskState::RUNNING {
            task.runtime.running_since = status.timestamp.clone();
        }
        let stops = crate::alloc::holds_addresses(task) && is_terminal(new);
        // A task the node did not have yet (not assigned before) is news
        // to it, whatever wrote it.
        if task.state() < TaskState::ASSIGNED && new >= TaskState::ASSIGNED {
            task.assignment_index = index;
        }
        task.updated_at = status.timestamp.clone();
        task.status = Some(status);
        task.version = version(index);
        if stops {
            let task = task.clone();
            self.release_task(&task);
        }
        Ok(())
    }

    pub(super) fn apply_set_task_desired(
        &mut self,
        index: u64,
        id: String,
        desired: TaskState,
        updated_at: String,
    ) -> Result<(), StoreError> {
        self.unindex_task(&id);
        let result = self.set_task_desired(index, &id, desired, updated_at);
        self.index_task(&id);
        result
    }

    fn set_task_desired(
        &mut self,
        index: u64,
        id: &str,
        desired: TaskState,
        updated_at: String,
    ) -> Result<(), StoreError> {
        let task = self
            .tasks
            .get_mut(id)
            .map(Arc::make_mut)
            .ok_or_else(|| not_found(Kind::Task, id))?;
        if desired < task.desired() {
            return Err(StoreError::DesiredBackwards {
                id: id.to_string(),
                from: task.desired(),
                to: desired,
            });
        }
        task.desired_state = Some(desired);
        task.updated_at = Some(updated_at);
        task.version = version(index);
        task.assignment_index = index;
        Ok(())
    }

    /// The task goes with its addresses, if it still held them.
    pub(super) fn apply_remove_task(&mut self, id: &str) -> Result<(), StoreError> {
        self.unindex_task(id);
        let task = self
            .tasks
            .remove(id)
            .ok_or_else(|| not_found(Kind::Task, id))?;
        if crate::alloc::holds_addresses(&task) {
            self.release_task(&task);
        }
        Ok(())
    }
}
