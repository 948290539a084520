//! The updater: rolls a service's slots onto its current task template,
//! `parallelism` slots at a time: each of that many places takes the next
//! slot once its new task runs and `delay` has passed, as SwarmKit's update
//! workers do. A new task that fails before it has run for the monitor
//! period is a failure of the update; failures past the max failure ratio
//! pause the update, are ignored, or roll it back. Once every slot is
//! replaced the update watches one more monitor period, then completes.
//!
//! It is a plain decision over the store, called by the replicated and the
//! global orchestrators in the same pass that restarts tasks, so the two
//! never race on a slot. It holds nothing in memory: the update's state is
//! the service's `UpdateStatus`, its progress the tasks it labelled (see
//! [`progress`]), and its waits are measured from task timestamps. A new
//! leader takes over mid-update by running the same pass.
//!
//! Who may start a task in a slot is decided here too ([`may_start`]): with
//! stop-first (and for every restart) a task only starts once no other
//! task of its slot can be running; start-first lets the new task of an
//! update start beside the old one.

pub mod config;
pub mod progress;

use chrono::{DateTime, Utc};
use flotilla_store::ids::format_time;
use flotilla_store::models::{
    Service, ServiceUpdateStatus, ServiceUpdateStatusStateEnum as Phase, Task, TaskState,
};
use flotilla_store::state::NodeExt;
use flotilla_store::state::{is_terminal, State, TaskExt};
use flotilla_store::Op;

use self::config::{FailureAction, Order};
use self::progress::{slot_progress, update_slots, SlotProgress, UpdateSlot};
use super::{is_up_to_date, new_task, Plan};
use crate::orchestrator::set_desired;

/// A replicated slot number, or the node of a global service's task.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SlotKey {
    Slot(i64),
    Node(String),
}

/// One slot as the orchestrator sees it in this pass.
pub struct SlotTasks<'a> {
    pub key: SlotKey,
    /// Every task of the slot, history included.
    pub tasks: Vec<&'a Task>,
    /// The orchestrator changed this slot in this pass (restart, lost node,
    /// duplicate): the updater leaves it until the next pass.
    pub touched: bool,
}

/// Wanted and not ended.
pub fn is_live(t: &Task) -> bool {
    t.desired() <= TaskState::RUNNING && !is_terminal(t.state())
}

/// Whether a task's workload may be running now or start without further
/// word from the manager: not ended, and either on a node that is not
/// down, or still waiting for a node while wanted.
pub fn may_run(state: &State, t: &Task) -> bool {
    if is_terminal(t.state()) {
        return false;
    }
    match t.node() {
        None => t.desired() <= TaskState::RUNNING,
        Some(n) => state.nodes.get(n).is_some_and(|node| !node.is_down()),
    }
}

/// Whether `t` (desired READY) may be set to RUNNING now, given the other
/// tasks of its slot.
pub fn may_start(state: &State, svc: &Service, slot: &[&Task], t: &Task) -> bool {
    let others: Vec<&&Task> = slot
        .iter()
        .filter(|o| o.id_str() != t.id_str() && may_run(state, o))
        .collect();
    if others.is_empty() {
        return true;
    }
    // start-first: the update's new task starts beside the old ones.
    rolling(svc).is_some_and(|(_, cfg)| cfg.order == Order::StartFirst)
        && is_up_to_date(svc, t)
        && others.iter().all(|o| !is_up_to_date(svc, o))
}

/// Whether the updater created this task (its READY wait is for the old
/// task to stop, not a restart delay).
pub fn is_update_task(t: &Task) -> bool {
    flotilla_store::state::update_of(t).is_some()
}

/// Whether service `id` is being updated or rolled back: the one time a
/// task that starts running is news to its orchestrator (the next batch
/// waits for it). Otherwise the orchestrators need not hear of starts.
pub fn is_rolling(state: &State, id: &str) -> bool {
    state
        .services
        .get(id)
        .is_some_and(|svc| rolling(svc).is_some())
}

/// What the replicated and global orchestrators are told of.
pub const INTEREST: flotilla_store::Interest = flotilla_store::Interest::StartsWhen(is_rolling);

/// The phase and config of the update in progress, if one is.
fn rolling(svc: &Service) -> Option<(Phase, config::Config)> {
    let phase = svc.update_status.as_ref().and_then(|s| s.state)?;
    let spec = svc.spec.as_ref()?;
    match phase {
        Phase::UPDATING => Some((phase, config::config(spec, false))),
        Phase::ROLLBACK_STARTED => Some((phase, config::config(spec, true))),
        _ => None,
    }
}

/// The mark (`Task.runtime.update`) of the update in progress.
fn label_value(status: &ServiceUpdateStatus) -> String {
    let phase = status.state.map(|p| p.to_string()).unwrap_or_default();
    format!(
        "{phase} {}",
        status.started_at.as_deref().unwrap_or_default()
    )
}

/// A slot still holds a task of another template that is wanted.
fn has_old(svc: &Service, slot: &SlotTasks) -> bool {
    slot.tasks
        .iter()
        .any(|t| t.desired() <= TaskState::RUNNING && !is_up_to_date(svc, t))
}

/// Decides the next step of `svc`'s update, if any, into `plan`.
pub fn plan(
    state: &State,
    svc: &Service,
    slots: &[SlotTasks],
    now: DateTime<Utc>,
    plan: &mut Plan,
) {
    let phase = svc.update_status.as_ref().and_then(|s| s.state);
    let Some((phase, cfg)) = rolling(svc) else {
        // Paused updates wait for the next `service update`. Otherwise a
        // template change starts an update; the first batch comes in the
        // next pass, once the status (and so the label) is committed.
        let paused = matches!(phase, Some(Phase::PAUSED | Phase::ROLLBACK_PAUSED));
        if !paused && slots.iter().any(|s| has_old(svc, s)) {
            plan.ops.push(set_status(
                svc,
                None,
                ServiceUpdateStatus {
                    state: Some(Phase::UPDATING),
                    started_at: Some(format_time(now)),
                    completed_at: None,
                    message: Some("update in progress".into()),
                },
            ));
        }
        return;
    };
    let rollback = phase == Phase::ROLLBACK_STARTED;
    let status = svc.update_status.clone().unwrap_or_default();
    let label = label_value(&status);
    let now_s = format_time(now);
    let updating = update_slots(svc, slots, &label, cfg.monitor);

    if let Some(task) = failure_to_act_on(&updating, &cfg) {
        let id = task.id_str();
        let pause = |what: &str, state| {
            let message = format!("{what} paused due to failure or early termination of task {id}");
            set_status(
                svc,
                None,
                ServiceUpdateStatus {
                    state: Some(state),
                    message: Some(message),
                    ..status.clone()
                },
            )
        };
        let op = match cfg.failure_action {
            // A rollback is never rolled back: it pauses.
            _ if rollback => pause("rollback", Phase::ROLLBACK_PAUSED),
            FailureAction::Rollback if svc.previous_spec.is_some() => roll_back(svc, &status, id),
            _ => pause("update", Phase::PAUSED),
        };
        plan.ops.push(op);
        return;
    }

    for u in updating.iter().filter(|u| !u.slot.touched) {
        advance_slot(svc, u, cfg.order, &now_s, plan);
    }

    // A place is taken by a slot still on its way, or settled less than
    // `delay` ago.
    let mut busy = 0;
    let mut free_since: Option<DateTime<Utc>> = None;
    for u in &updating {
        match slot_progress(state, svc, u) {
            SlotProgress::Busy => busy += 1,
            SlotProgress::SettledAt(at) if now < at + cfg.delay => {
                busy += 1;
                plan.wake(at + cfg.delay);
            }
            SlotProgress::SettledAt(at) => free_since = free_since.max(Some(at + cfg.delay)),
        }
    }

    if !slots.iter().any(|s| s.touched || has_old(svc, s)) {
        if busy > 0 {
            return;
        }
        // Every slot replaced: failures still count for one monitor period.
        let complete_at = free_since.map_or(now, |at| at + cfg.monitor);
        if now < complete_at {
            return plan.wake(complete_at);
        }
        let (phase, message) = if rollback {
            (Phase::ROLLBACK_COMPLETED, "rollback completed")
        } else {
            (Phase::COMPLETED, "update completed")
        };
        let done = ServiceUpdateStatus {
            state: Some(phase),
            completed_at: Some(now_s),
            message: Some(message.into()),
            ..status
        };
        plan.ops.push(set_status(svc, None, done));
        return;
    }
    let places = match cfg.parallelism {
        0 => usize::MAX,
        n => n.saturating_sub(busy),
    };
    let todo = next_slots(svc, slots, &updating, places);
    start_slots(state, svc, todo, cfg.order, &label, &now_s, plan);
}

/// The failure that triggers the failure action, if failures (slots of
/// this update whose new task ended early) exceed the max failure ratio of
/// the slots updated so far. Continue never acts.
fn failure_to_act_on<'a>(
    updating: &[UpdateSlot<'_, 'a>],
    cfg: &config::Config,
) -> Option<&'a Task> {
    if cfg.failure_action == FailureAction::Continue {
        return None;
    }
    let failures: Vec<_> = updating.iter().filter_map(|u| u.failure).collect();
    let ratio = failures.len() as f64 / updating.len().max(1) as f64;
    if failures.is_empty() || ratio <= cfg.max_failure_ratio {
        return None;
    }
    // Name the failure that tipped it, as Docker does.
    failures
        .into_iter()
        .max_by_key(|(_, at)| *at)
        .map(|(t, _)| t)
}

/// Moves a slot of this update along: with start-first, the old task stops
/// once the new one runs; with stop-first, an old task still wanted (a
/// stray from an earlier attempt) stops now.
fn advance_slot(svc: &Service, u: &UpdateSlot, order: Order, now: &str, plan: &mut Plan) {
    let tasks = &u.slot.tasks;
    let new_runs = tasks
        .iter()
        .any(|t| is_up_to_date(svc, t) && is_live(t) && t.state() == TaskState::RUNNING);
    if order == Order::StopFirst || new_runs {
        for t in tasks
            .iter()
            .filter(|t| t.desired() <= TaskState::RUNNING && !is_up_to_date(svc, t))
        {
            plan.ops.push(set_desired(t, TaskState::SHUTDOWN, now));
        }
    }
}

/// The slots to fill `places` free places with: slots still on another
/// template, those without a running task first (they serve nobody).
fn next_slots<'s, 'a>(
    svc: &Service,
    slots: &'s [SlotTasks<'a>],
    updating: &[UpdateSlot],
    places: usize,
) -> Vec<&'s SlotTasks<'a>> {
    let in_update: std::collections::BTreeSet<&SlotKey> =
        updating.iter().map(|u| &u.slot.key).collect();
    let mut todo: Vec<&SlotTasks> = slots
        .iter()
        .filter(|s| !s.touched && !in_update.contains(&s.key))
        .filter(|s| s.tasks.iter().any(|t| is_live(t) && !is_up_to_date(svc, t)))
        .collect();
    todo.sort_by_key(|s| {
        let running = s
            .tasks
            .iter()
            .any(|t| is_live(t) && t.state() == TaskState::RUNNING);
        (running, s.key.clone())
    });
    todo.truncate(places);
    todo
}

/// Replaces the task of each slot in `todo` with one of the current
/// template, labelled with this update.
fn start_slots(
    state: &State,
    svc: &Service,
    todo: Vec<&SlotTasks>,
    order: Order,
    label: &str,
    now: &str,
    plan: &mut Plan,
) {
    for slot in todo {
        let live: Vec<&&Task> = slot
            .tasks
            .iter()
            .filter(|t| t.desired() <= TaskState::RUNNING)
            .collect();
        let desired = match order {
            // Prepared now, started once the old task has stopped.
            Order::StopFirst => {
                for t in &live {
                    plan.ops.push(set_desired(t, TaskState::SHUTDOWN, now));
                }
                TaskState::READY
            }
            Order::StartFirst => {
                for t in live.iter().filter(|t| is_up_to_date(svc, t)) {
                    plan.ops.push(set_desired(t, TaskState::SHUTDOWN, now));
                }
                TaskState::RUNNING
            }
        };
        let (slot_no, node) = match &slot.key {
            SlotKey::Slot(n) => (Some(*n), None),
            SlotKey::Node(n) => (None, Some(n.as_str())),
        };
        let mut task = new_task(state, svc, slot_no, node, desired, now);
        task.runtime.update = Some(label.to_string());
        plan.ops.push(Op::CreateTask(Box::new(task)));
    }
}

/// Failure action rollback: the previous spec comes back, paced by its
/// rollback config. Like Docker, the started time stays and the previous
/// spec is dropped, so a rollback cannot be rolled back into the failure.
fn roll_back(svc: &Service, status: &ServiceUpdateStatus, task: &str) -> Op {
    let mut next = svc.clone();
    next.spec = svc.previous_spec.clone();
    next.previous_spec = None;
    let endpoint_spec = next.spec.as_ref().and_then(|s| s.endpoint_spec.clone());
    if let Some(endpoint) = next.endpoint.as_mut() {
        endpoint.spec = Some(endpoint_spec.unwrap_or_default());
    }
    let status = ServiceUpdateStatus {
        state: Some(Phase::ROLLBACK_STARTED),
        message: Some(format!(
            "update rolled back due to failure or early termination of task {task}"
        )),
        ..status.clone()
    };
    set_status(&next, Some(svc), status)
}

/// Writes the service with a new update status, checked against the
/// version this pass read: a `service update` that lands first wins, and
/// the next pass decides again from it.
fn set_status(next: &Service, read: Option<&Service>, status: ServiceUpdateStatus) -> Op {
    let expected = flotilla_store::state::version_of(&read.unwrap_or(next).version);
    let mut service = next.clone();
    service.update_status = Some(status);
    Op::UpdateService {
        expected,
        service: Box::new(service),
    }
}
