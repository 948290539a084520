//! Where an update stands, read from the store alone so that any leader,
//! at any time, reaches the same view: which slots it has touched, in which
//! batch, which of them failed, and whether the latest batch is done.
//!
//! The updater labels each task it creates with the update it belongs to
//! (`UPDATE_LABEL` = the update's state and start time). A slot joined the
//! update when its first such task was created; tasks created in one pass
//! share their creation time, so equal times form a batch. A batch only
//! starts once the one before it is done, so a task that was still running
//! when the next batch was created had passed its monitor period.

use chrono::{DateTime, Utc};
use flotilla_store::models::{Service, Task, TaskState};
use flotilla_store::state::TaskExt;

use super::{is_live, SlotTasks, UPDATE_LABEL};
use crate::orchestrator::{is_up_to_date, parse_time};

/// A slot the current update has replaced (or is replacing).
pub struct BatchSlot<'s, 'a> {
    pub slot: &'s SlotTasks<'a>,
    /// When the updater created the slot's first task of this update.
    pub started: DateTime<Utc>,
    /// The first of the slot's new tasks that ended before the update
    /// moved past the slot, and when it ended.
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

/// The slots of this update with their batch times and failures.
pub fn batch_slots<'s, 'a>(
    svc: &Service,
    slots: &'s [SlotTasks<'a>],
    label: &str,
) -> Vec<BatchSlot<'s, 'a>> {
    let mut out: Vec<BatchSlot> = slots
        .iter()
        .filter_map(|slot| {
            let started = slot
                .tasks
                .iter()
                .filter(|t| is_up_to_date(svc, t) && update_of(t) == Some(label))
                .filter_map(|t| parse_time(&t.created_at))
                .min()?;
            Some(BatchSlot {
                slot,
                started,
                failure: None,
            })
        })
        .collect();
    let mut starts: Vec<DateTime<Utc>> = out.iter().map(|b| b.started).collect();
    starts.sort();
    starts.dedup();
    for b in &mut out {
        // The update moved past this slot when the next batch started.
        let moved_on = starts.iter().copied().find(|s| *s > b.started);
        b.failure = b
            .slot
            .tasks
            .iter()
            .filter(|t| is_up_to_date(svc, t) && ended_badly(t))
            .filter(|t| parse_time(&t.created_at).is_some_and(|c| c >= b.started))
            .filter_map(|t| Some((*t, status_time(t)?)))
            .filter(|(_, ended)| moved_on.is_none_or(|m| *ended < m))
            .min_by_key(|(_, ended)| *ended);
    }
    out
}

/// Which update created a task, if the updater did.
pub fn update_of(t: &Task) -> Option<&str> {
    t.labels
        .as_ref()
        .and_then(|l| l.get(UPDATE_LABEL))
        .map(String::as_str)
}

/// Where one slot of the latest batch stands.
pub enum SlotProgress {
    /// Done at this time: its new task has run for the monitor period, or
    /// it failed (and the failure ratio tolerates it), or it went away.
    Done(DateTime<Utc>),
    /// Its new task runs and will have run long enough at this time.
    StableAt(DateTime<Utc>),
    /// Waiting for something to happen to a task (start, old one to stop).
    Waiting,
}

pub fn slot_progress(
    svc: &Service,
    b: &BatchSlot,
    monitor: chrono::Duration,
    now: DateTime<Utc>,
) -> SlotProgress {
    let tasks = &b.slot.tasks;
    if tasks.iter().any(|t| is_live(t) && !is_up_to_date(svc, t)) {
        return SlotProgress::Waiting;
    }
    let newest = tasks
        .iter()
        .filter(|t| is_up_to_date(svc, t) && t.desired() <= TaskState::RUNNING)
        .filter(|t| parse_time(&t.created_at).is_some_and(|c| c >= b.started))
        .max_by_key(|t| parse_time(&t.created_at));
    if let Some(t) = newest.filter(|t| t.state() == TaskState::RUNNING) {
        let stable = status_time(t).map_or(now, |r| r + monitor);
        return if now >= stable {
            SlotProgress::Done(stable)
        } else {
            SlotProgress::StableAt(stable)
        };
    }
    if let Some((_, ended)) = b.failure {
        return SlotProgress::Done(ended);
    }
    if newest.is_none() {
        // Scaled away, or the task ended and was not replaced.
        return SlotProgress::Done(b.started);
    }
    SlotProgress::Waiting
}
