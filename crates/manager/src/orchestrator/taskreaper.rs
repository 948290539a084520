//! The task reaper deletes tasks nobody needs to see any more: tasks of
//! removed services and scaled-away slots once they have stopped, and the
//! oldest history beyond the task history limit (default 5 per slot).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use flotilla_store::ids::format_time;
use flotilla_store::models::{Task, TaskState};
use flotilla_store::state::NodeExt;
use flotilla_store::state::{is_terminal, State, TaskExt};
use flotilla_store::{Interest, Op};

use super::set_desired;
use super::Plan;

pub const DEFAULT_HISTORY: i64 = 5;

/// What the reaper is told of: a task that starts running only ever
/// becomes one that cannot go yet, and changes no slot's history.
pub const INTEREST: Interest = Interest::NotStarts;

pub fn history_limit(state: &State) -> i64 {
    state
        .cluster
        .as_ref()
        .and_then(|c| c.spec.as_ref())
        .and_then(|s| s.orchestration.as_ref())
        .and_then(|o| o.task_history_retention_limit)
        .unwrap_or(DEFAULT_HISTORY)
}

/// A task can go once nothing runs it: it stopped, it never reached a
/// node, or its node is gone or down.
fn stopped(state: &State, t: &Task) -> bool {
    if is_terminal(t.state()) || t.state() < TaskState::ASSIGNED {
        return true;
    }
    match t.node() {
        None => true,
        Some(n) => state.nodes.get(n).is_none_or(|node| node.is_down()),
    }
}

pub fn reconcile(state: &State, now: DateTime<Utc>) -> Plan {
    reconcile_only(state, now, None)
}

/// Looks at the tasks of the services in `only` (of every service, removed
/// ones included, when `None`).
pub fn reconcile_only(state: &State, now: DateTime<Utc>, only: Option<&BTreeSet<String>>) -> Plan {
    let tasks: Box<dyn Iterator<Item = &Task>> = match only {
        None => Box::new(state.tasks.values().map(|t| &**t)),
        Some(ids) => Box::new(ids.iter().flat_map(|id| state.tasks_of_service(id))),
    };
    let mut plan = Plan::default();
    let now_s = format_time(now);
    let limit = history_limit(state);
    let mut groups: BTreeMap<(&str, i64, &str), Vec<&Task>> = BTreeMap::new();
    for t in tasks {
        let orphan = !state.services.contains_key(t.service());
        if orphan && t.desired() < TaskState::REMOVE {
            plan.ops.push(set_desired(t, TaskState::REMOVE, &now_s));
            continue;
        }
        if t.desired() == TaskState::REMOVE {
            if stopped(state, t) {
                plan.ops.push(Op::RemoveTask {
                    id: t.id_str().to_string(),
                });
            }
            continue;
        }
        // Replicated tasks group by slot, global ones by node.
        let node = if t.slot_no() == 0 {
            t.node().unwrap_or_default()
        } else {
            ""
        };
        groups
            .entry((t.service(), t.slot_no(), node))
            .or_default()
            .push(t);
    }
    if limit < 0 {
        return plan;
    }
    for ((service, _, _), tasks) in groups.iter_mut() {
        // The restart policy counts a slot's attempts from its tasks: keep
        // MaxAttempts + 1 of them, as SwarmKit does, or a slot that failed
        // that often would be restarted again once its history was cut.
        let attempts = state
            .services
            .get(*service)
            .map_or(0, |svc| super::restart::policy(svc).max_attempts as i64);
        let limit = if attempts > 0 {
            limit.max(attempts + 1)
        } else {
            limit
        };
        if tasks.len() as i64 <= limit {
            continue;
        }
        let mut old: Vec<&&Task> = tasks
            .iter()
            .filter(|t| t.desired() > TaskState::RUNNING && stopped(state, t))
            .collect();
        old.sort_by_key(|t| t.created_at.clone());
        let excess = tasks.len() - limit.max(0) as usize;
        for t in old.into_iter().take(excess) {
            plan.ops.push(Op::RemoveTask {
                id: t.id_str().to_string(),
            });
        }
    }
    plan
}
