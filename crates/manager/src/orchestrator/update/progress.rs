//! Where an update stands, read from the store alone so that any leader,
//! at any time, reaches the same view: which slots it has touched, which
//! of them failed, and which still hold one of its `parallelism` places.
//!
//! The updater labels each task it creates with the update it belongs to
//! (`Task.runtime.update` = the update's state and start time); a slot joined the
//! update when its first such task was created. As in SwarmKit, each of
//! the `parallelism` places takes the next slot as soon as its last one
//! has a running task and `delay` has passed, so one slow task holds up
//! one place, not a whole batch. A new task that ends before it runs, or
//! within the monitor period after it started running (the store records
//! when: `Task.runtime.running_since`), is a failure of the update.

use chrono::{DateTime, Utc};
use flotilla_store::models::{Service, Task, TaskState};
use flotilla_store::state::{update_of, State, TaskExt};

use super::{is_live, may_run, SlotTasks};
use crate::orchestrator::{is_up_to_date, parse_time};

/// A slot the current update has replaced (or is replacing).
pub struct UpdateSlot<'s, 'a> {
    pub slot: &'s SlotTasks<'a>,
    /// When the updater created the slot's first task of this update.
    pub started: DateTime<Utc>,
    /// The first of the slot's new tasks that ended before it had run for
    /// the monitor period, and when it ended.
    pub failure: Option<(&'a Task, DateTime<Utc>)>,
}

/// Whether a task ended on its own in a way the update counts against it:
/// it failed, was rejected, or exited. A task stopped because it was asked
/// to (SHUTDOWN) or whose node went away is not the new spec's fault.
pub fn ended_badly(t: &Task) -> bool {
    matches!(
        t.state(),
        TaskState::FAILED | TaskState::REJECTED | TaskState::COMPLETE
    )
}

fn status_time(t: &Task) -> Option<DateTime<Utc>> {
    parse_time(&t.status.as_ref().and_then(|s| s.timestamp.clone()))
}

/// When the store first saw the task running.
pub fn running_since(t: &Task) -> Option<DateTime<Utc>> {
    parse_time(&t.runtime.running_since)
}

/// The slots of this update with their failures.
pub fn update_slots<'s, 'a>(
    svc: &Service,
    slots: &'s [SlotTasks<'a>],
    label: &str,
    monitor: chrono::Duration,
) -> Vec<UpdateSlot<'s, 'a>> {
    slots
        .iter()
        .filter_map(|slot| {
            let started = slot
                .tasks
                .iter()
                .filter(|t| is_up_to_date(svc, t) && update_of(t) == Some(label))
                .filter_map(|t| parse_time(&t.created_at))
                .min()?;
            let failure = slot
                .tasks
                .iter()
                .filter(|t| is_up_to_date(svc, t) && ended_badly(t))
                .filter(|t| parse_time(&t.created_at).is_some_and(|c| c >= started))
                .filter_map(|t| Some((*t, status_time(t)?)))
                .filter(|(t, ended)| running_since(t).is_none_or(|r| *ended <= r + monitor))
                .min_by_key(|(_, ended)| *ended);
            Some(UpdateSlot {
                slot,
                started,
                failure,
            })
        })
        .collect()
}

/// Where one slot of the update stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotProgress {
    /// Holds its place until something happens to a task (the old one
    /// stops, the new one runs or fails).
    Busy,
    /// Its new task runs (or failed): the place is free at this time, once
    /// the delay has passed.
    SettledAt(DateTime<Utc>),
}

pub fn slot_progress(state: &State, svc: &Service, u: &UpdateSlot) -> SlotProgress {
    // The place is held until the slot's old task can no longer run: with
    // start-first it is stopped once the new one runs, and only then does
    // the next slot start, so no more than `parallelism` extra tasks run.
    if u.slot
        .tasks
        .iter()
        .any(|t| !is_up_to_date(svc, t) && may_run(state, t))
    {
        return SlotProgress::Busy;
    }
    let new: Vec<&&Task> = u
        .slot
        .tasks
        .iter()
        .filter(|t| is_up_to_date(svc, t))
        .filter(|t| parse_time(&t.created_at).is_some_and(|c| c >= u.started))
        .collect();
    // The slot is settled from the first time one of its new tasks ran,
    // or failed: whatever happens to it later is the restart policy's.
    let ran = new
        .iter()
        .filter_map(|t| match running_since(t) {
            Some(at) => Some(at),
            None if t.state() == TaskState::RUNNING => status_time(t),
            None => None,
        })
        .min();
    let failed = u.failure.map(|(_, ended)| ended);
    if let Some(at) = [ran, failed].into_iter().flatten().min() {
        return SlotProgress::SettledAt(at);
    }
    let waiting = u
        .slot
        .tasks
        .iter()
        .any(|t| is_live(t) && !is_up_to_date(svc, t))
        || new.iter().any(|t| t.desired() <= TaskState::RUNNING);
    if waiting {
        SlotProgress::Busy
    } else {
        // Scaled away, or the task ended and was not replaced.
        SlotProgress::SettledAt(u.started)
    }
}
