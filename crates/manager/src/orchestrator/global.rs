//! Global services: one task on every node that is ready, active and
//! satisfies the placement constraints. A task on a node that stops being
//! eligible (down, drained, relabelled, removed) is shut down, not moved.
//! The updater rolls the nodes' tasks to a new template like slots.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use flotilla_store::ids::format_time;
use flotilla_store::models::{Node, NodeSpecAvailabilityEnum, Service, Task, TaskState};
use flotilla_store::state::NodeExt;
use flotilla_store::state::{is_terminal, State, TaskExt};
use flotilla_store::Op;

use super::restart;
use super::set_desired;
use super::update::{self, SlotKey, SlotTasks};
use super::{is_global, new_task, parse_time, replacement, Plan};
use crate::constraint;

pub fn reconcile(state: &State, now: DateTime<Utc>) -> Plan {
    reconcile_only(state, now, None)
}

/// Reconciles the services in `only` (all of them when `None`).
pub fn reconcile_only(state: &State, now: DateTime<Utc>, only: Option<&BTreeSet<String>>) -> Plan {
    let mut plan = Plan::default();
    for svc in super::services_in(state, only).filter(|s| is_global(s)) {
        reconcile_service(state, svc, now, &mut plan);
    }
    plan
}

/// Whether a node should run a task of `svc`; `keep` is the looser test
/// for a task already there (a paused node keeps its tasks).
pub(super) fn eligible(node: &Node, constraints: &[constraint::Constraint], keep: bool) -> bool {
    let available = match node.availability() {
        NodeSpecAvailabilityEnum::ACTIVE => true,
        NodeSpecAvailabilityEnum::PAUSE => keep,
        _ => false,
    };
    node.is_ready() && available && constraints.iter().all(|c| c.matches(node))
}

fn reconcile_service(state: &State, svc: &Service, now: DateTime<Utc>, plan: &mut Plan) {
    let svc_id = svc.id.clone().unwrap_or_default();
    let now_s = format_time(now);
    let policy = restart::policy(svc);
    let constraints = super::constraints_of(svc);

    let mut by_node: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in state.tasks_of_service(&svc_id) {
        by_node
            .entry(t.node().unwrap_or_default())
            .or_default()
            .push(t);
    }

    let mut for_update = Vec::new();
    for (node_id, node) in &state.nodes {
        let tasks = by_node.remove(node_id.as_str()).unwrap_or_default();
        let live: Vec<&Task> = tasks
            .iter()
            .copied()
            .filter(|t| t.desired() <= TaskState::RUNNING)
            .collect();
        let ok = constraints
            .as_deref()
            .is_some_and(|c| eligible(node, c, !live.is_empty()));
        if !ok {
            for t in live {
                plan.ops.push(set_desired(t, TaskState::SHUTDOWN, &now_s));
            }
            continue;
        }
        let mut wanted = false;
        let mut touched = false;
        let mut started = false;
        for &t in &live {
            wanted = true;
            if is_terminal(t.state()) {
                plan.ops.push(set_desired(t, TaskState::SHUTDOWN, &now_s));
                touched = true;
                if restart::should_restart(&policy, t, &tasks, now) {
                    let new =
                        replacement(state, svc, t, None, Some(node_id), TaskState::READY, &now_s);
                    plan.ops.push(Op::CreateTask(Box::new(new)));
                }
            } else if t.desired() == TaskState::READY && !started {
                // An update's task waits for the old one to stop; a restart
                // for its delay too. One start per node and pass.
                let due = if update::is_update_task(t) {
                    now
                } else {
                    parse_time(&t.created_at).map_or(now, |c| c + policy.delay)
                };
                if now < due {
                    plan.wake(due);
                } else if update::may_start(state, svc, &tasks, t) {
                    plan.ops.push(set_desired(t, TaskState::RUNNING, &now_s));
                    started = true;
                }
            }
        }
        let ended_for_good = tasks
            .iter()
            .filter(|t| t.desired() < TaskState::REMOVE)
            .max_by_key(|t| t.created_at.clone())
            .is_some_and(|t| {
                is_terminal(t.state()) && !restart::should_restart(&policy, t, &tasks, now)
            });
        if !wanted && !ended_for_good {
            let new = new_task(state, svc, None, Some(node_id), TaskState::RUNNING, &now_s);
            plan.ops.push(Op::CreateTask(Box::new(new)));
            touched = true;
        }
        for_update.push(SlotTasks {
            key: SlotKey::Node(node_id.clone()),
            tasks,
            touched,
        });
    }
    // Tasks on nodes that no longer exist.
    for t in by_node.into_values().flatten() {
        if t.desired() <= TaskState::RUNNING {
            plan.ops.push(set_desired(t, TaskState::SHUTDOWN, &now_s));
        }
    }
    update::plan(state, svc, &for_update, now, plan);
}
