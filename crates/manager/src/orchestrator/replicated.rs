//! Replicated services: one running task per slot, `replicas` slots.
//!
//! Per slot: a task that ended is shut down and, when the restart policy
//! allows, replaced by a new task that waits out the restart delay in
//! desired state READY; a task whose node is down or drained is replaced at
//! once. A READY task starts only once no other task of its slot can be
//! running. Then slots are added (lowest free numbers) or removed (tasks
//! that are not running first, then from the busiest nodes) to match
//! `replicas`, and the updater moves the remaining slots to a new task
//! template, if there is one, at its own pace.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use flotilla_store::ids::format_time;
use flotilla_store::models::{Service, Task, TaskState};
use flotilla_store::state::{is_terminal, State, TaskExt};
use flotilla_store::Op;

use super::restart::{self, Policy};
use super::update::{self, SlotKey, SlotTasks};
use super::{
    is_global, is_up_to_date, new_task, node_keeps_tasks, parse_time, replacement, replicas,
    set_desired, Plan,
};

pub fn reconcile(state: &State, now: DateTime<Utc>) -> Plan {
    reconcile_only(state, now, None)
}

/// Reconciles the services in `only` (all of them when `None`).
pub fn reconcile_only(state: &State, now: DateTime<Utc>, only: Option<&BTreeSet<String>>) -> Plan {
    reconcile_with(state, now, only, None)
}

/// What else looks at a service's slots once a pass has left them as they
/// were: the rebalancer (`rebalance.rs`), which moves tasks between nodes.
pub trait Moves {
    /// Whether it wants to look at this service.
    fn wants(&self, service: &str) -> bool;
    /// Its decisions for the service, into `plan`.
    fn service(
        &mut self,
        state: &State,
        svc: &Service,
        by_slot: &BTreeMap<i64, Vec<&Task>>,
        now: DateTime<Utc>,
        plan: &mut Plan,
    );
}

/// [`reconcile_only`], and `moves`' decisions for the services it wants
/// looked at whose slots the pass left as they were.
pub fn reconcile_with(
    state: &State,
    now: DateTime<Utc>,
    only: Option<&BTreeSet<String>>,
    mut moves: Option<&mut dyn Moves>,
) -> Plan {
    let mut plan = Plan::default();
    for svc in super::services_in(state, only).filter(|s| !is_global(s) && !super::jobs::is_job(s))
    {
        if plan.at_budget() {
            plan.rest.insert(svc.id.clone().unwrap_or_default());
            continue;
        }
        reconcile_service(
            state,
            svc,
            now,
            &mut plan,
            moves.as_mut().map(|m| &mut **m as _),
        );
    }
    plan
}

/// What became of one slot in this pass.
struct SlotView<'a> {
    /// Tasks still wanted (desired RUNNING or READY) after this pass.
    live: Vec<&'a Task>,
    /// The slot's last task ended and the policy does not restart it: the
    /// slot still counts as one of the replicas.
    finished: bool,
    /// A replacement was created, or a wanted task shut down, in this pass.
    replaced: bool,
}

fn reconcile_service(
    state: &State,
    svc: &Service,
    now: DateTime<Utc>,
    plan: &mut Plan,
    moves: Option<&mut dyn Moves>,
) {
    let svc_id = svc.id.clone().unwrap_or_default();
    let ops_at_start = plan.ops.len();
    let policy = restart::policy(svc);
    let now_s = format_time(now);
    let mut by_slot: BTreeMap<i64, Vec<&Task>> = BTreeMap::new();
    for t in state.tasks_of_service(&svc_id) {
        by_slot.entry(t.slot_no()).or_default().push(t);
    }

    let mut slots: BTreeMap<i64, SlotView> = BTreeMap::new();
    for (&slot, tasks) in &by_slot {
        let view = reconcile_slot(state, svc, &policy, slot, tasks, now, &now_s, plan);
        if !view.live.is_empty() || view.finished || view.replaced {
            slots.insert(slot, view);
        }
    }

    let want = replicas(svc) as usize;
    if slots.len() < want {
        // A slot a scale-down removed may still have its task stopping (or
        // on a node that has not said it stopped): a new slot takes another
        // number, so that one slot never has two tasks up at once.
        let stopping = |slot: &i64| {
            by_slot
                .get(slot)
                .is_some_and(|ts| ts.iter().any(|t| !is_terminal(t.state())))
        };
        let mut next = 1;
        for _ in slots.len()..want {
            if plan.at_budget() {
                // The rest of its slots come in the next pass; so does
                // its update, which needs them all.
                plan.rest.insert(svc_id);
                return;
            }
            while slots.contains_key(&next) || stopping(&next) {
                next += 1;
            }
            let task = new_task(state, svc, Some(next), None, TaskState::RUNNING, &now_s);
            plan.ops.push(Op::CreateTask(Box::new(task)));
            next += 1;
        }
    } else if slots.len() > want {
        for slot in slots_to_remove(&slots, slots.len() - want) {
            for t in by_slot.get(&slot).into_iter().flatten() {
                if t.desired() < TaskState::REMOVE {
                    plan.ops.push(set_desired(t, TaskState::REMOVE, &now_s));
                }
            }
            slots.remove(&slot);
        }
    }

    let for_update: Vec<SlotTasks> = slots
        .iter()
        .filter_map(|(slot, view)| {
            Some(SlotTasks {
                key: SlotKey::Slot(*slot),
                tasks: by_slot.get(slot)?.clone(),
                touched: view.replaced,
            })
        })
        .collect();
    update::plan(state, svc, &for_update, now, plan);
    if let Some(moves) = moves {
        let untouched = plan.ops.len() == ops_at_start && for_update.iter().all(|s| !s.touched);
        if untouched && moves.wants(&svc_id) {
            moves.service(state, svc, &by_slot, now, plan);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn reconcile_slot<'a>(
    state: &State,
    svc: &Service,
    policy: &Policy,
    slot: i64,
    tasks: &[&'a Task],
    now: DateTime<Utc>,
    now_s: &str,
    plan: &mut Plan,
) -> SlotView<'a> {
    let mut live = Vec::new();
    let mut replaced = false;
    let mut finished = false;
    for &t in tasks.iter().filter(|t| t.desired() <= TaskState::RUNNING) {
        let lost = t.node().is_some_and(|n| !node_keeps_tasks(state, n));
        if is_terminal(t.state()) {
            plan.ops.push(set_desired(t, TaskState::SHUTDOWN, now_s));
            if restart::should_restart(policy, t, tasks, now) {
                // The replacement waits out the restart delay as READY; the
                // delay is measured from its creation, so a new leader can
                // finish the wait without remembering anything.
                let new = replacement(state, svc, t, Some(slot), None, TaskState::READY, now_s);
                plan.ops.push(Op::CreateTask(Box::new(new)));
                replaced = true;
            } else {
                finished = true;
            }
        } else if lost {
            // Node down or drained: replace it now, on its own template.
            plan.ops.push(set_desired(t, TaskState::SHUTDOWN, now_s));
            let new = replacement(state, svc, t, Some(slot), None, TaskState::RUNNING, now_s);
            plan.ops.push(Op::CreateTask(Box::new(new)));
            replaced = true;
        } else {
            live.push(t);
        }
    }

    // Two wanted tasks of one template in a slot (a partitioned node came
    // back): keep the running one, the newest if several. Tasks of two
    // templates are an update in progress: the updater's business.
    for current in [true, false] {
        let mut same: Vec<&Task> = live
            .iter()
            .copied()
            .filter(|t| is_up_to_date(svc, t) == current)
            .collect();
        // Unless the newest is a start-first move that has not run yet:
        // the old task stops once it does (see `rebalance`).
        let newest = same.iter().max_by_key(|t| t.created_at.clone());
        if newest.is_some_and(|t| super::is_pending_move(t)) {
            continue;
        }
        if same.len() > 1 {
            same.sort_by_key(|t| (t.state() == TaskState::RUNNING, t.created_at.clone()));
            same.pop();
            for t in same {
                plan.ops.push(set_desired(t, TaskState::SHUTDOWN, now_s));
                live.retain(|l| l.id_str() != t.id_str());
                replaced = true;
            }
        }
    }

    // At most one start per slot and pass: the tasks it would start beside
    // are judged on the state this pass read.
    if let Some(t) = live
        .iter()
        .filter(|t| t.desired() == TaskState::READY)
        .min_by_key(|t| t.created_at.clone())
    {
        // An update's task waits for the old one to stop, not for a delay.
        let due = if update::is_update_task(t) {
            now
        } else {
            parse_time(&t.created_at).map_or(now, |c| c + policy.delay)
        };
        if now < due {
            plan.wake(due);
        } else if update::may_start(state, svc, tasks, t) {
            plan.ops.push(set_desired(t, TaskState::RUNNING, now_s));
        }
        // Otherwise another task of the slot still runs: the commit that
        // reports it stopped runs this pass again.
    }

    if live.is_empty() && !replaced && !finished {
        finished = slot_is_finished(policy, tasks, now);
    }
    SlotView {
        live,
        finished,
        replaced,
    }
}

/// A slot whose newest task ended for good: it keeps counting toward the
/// replicas instead of being refilled (condition none, on-failure after a
/// clean exit, max attempts reached).
fn slot_is_finished(policy: &Policy, tasks: &[&Task], now: DateTime<Utc>) -> bool {
    let Some(newest) = tasks
        .iter()
        .filter(|t| t.desired() < TaskState::REMOVE)
        .max_by_key(|t| t.created_at.clone())
    else {
        return false;
    };
    is_terminal(newest.state()) && !restart::should_restart(policy, newest, tasks, now)
}

/// Which slots a scale-down removes: slots without a running task first,
/// then slots on the nodes with the most tasks of the service, then the
/// highest slot numbers.
fn slots_to_remove(slots: &BTreeMap<i64, SlotView>, count: usize) -> Vec<i64> {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for view in slots.values() {
        for t in &view.live {
            if let Some(n) = t.node() {
                *per_node.entry(n).or_default() += 1;
            }
        }
    }
    let mut remaining: BTreeSet<i64> = slots.keys().copied().collect();
    let mut out = Vec::new();
    for _ in 0..count {
        let pick = remaining.iter().copied().max_by_key(|slot| {
            let view = &slots[slot];
            let running = view.live.iter().any(|t| t.state() == TaskState::RUNNING);
            let load = view
                .live
                .iter()
                .filter_map(|t| t.node())
                .map(|n| per_node.get(n).copied().unwrap_or(0))
                .max()
                .unwrap_or(0);
            (!running, load, *slot)
        });
        let Some(slot) = pick else { break };
        for t in &slots[&slot].live {
            if let Some(c) = t.node().and_then(|n| per_node.get_mut(n)) {
                *c = c.saturating_sub(1);
            }
        }
        remaining.remove(&slot);
        out.push(slot);
    }
    out
}
