//! Job services (`replicated-job`, `global-job`): tasks that run to
//! completion, as SwarmKit's jobs orchestrator runs them. A job's tasks
//! want COMPLETE rather than RUNNING; one that completes is never started
//! again, one that fails is replaced under the restart policy (condition
//! `any` meaning `on-failure`: a completed job is not re-run). Each update
//! of the service starts a new iteration (`JobStatus.JobIteration`): the
//! tasks of older ones still running are removed, and the job runs again.
//!
//! - replicated-job: at most `MaxConcurrent` tasks at once until
//!   `TotalCompletions` have completed, one slot each (from 0, as
//!   SwarmKit numbers them);
//! - global-job: one task on every eligible node, nodes that join later
//!   included.

use std::collections::{BTreeMap, BTreeSet};

/// What the jobs orchestrator is told of: a job's task that starts running
/// changes no count it keeps (running and waiting tasks count alike).
pub const INTEREST: flotilla_store::Interest = flotilla_store::Interest::NotStarts;

use chrono::{DateTime, Utc};
use flotilla_store::ids::format_time;
use flotilla_store::models::{
    Service, Task, TaskSpecRestartPolicyConditionEnum as Condition, TaskState,
};
use flotilla_store::state::{is_terminal, State, TaskExt};
use flotilla_store::Op;

use super::restart::{self, Policy};
use super::{node_keeps_tasks, parse_time, replacement, set_desired, Plan};

/// Which kind of job a service is, with its counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    Replicated {
        max_concurrent: u64,
        total_completions: u64,
    },
    Global,
}

/// The service's job mode, if it is a job. Counts are as the API fills
/// them in at create (MaxConcurrent 1, TotalCompletions = MaxConcurrent).
pub fn job_of(svc: &Service) -> Option<Job> {
    let mode = svc.spec.as_ref()?.mode.as_ref()?;
    if let Some(r) = mode.replicated_job.as_ref() {
        let max_concurrent = r.max_concurrent.unwrap_or(1).max(0) as u64;
        let total_completions = r
            .total_completions
            .map_or(max_concurrent, |t| t.max(0) as u64);
        return Some(Job::Replicated {
            max_concurrent,
            total_completions,
        });
    }
    mode.global_job.is_some().then_some(Job::Global)
}

pub fn is_job(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(is_job_spec)
}

pub fn is_job_spec(spec: &flotilla_store::models::ServiceSpec) -> bool {
    spec.mode
        .as_ref()
        .is_some_and(|m| m.replicated_job.is_some() || m.global_job.is_some())
}

/// The iteration the service's tasks should belong to.
pub fn iteration(svc: &Service) -> u64 {
    svc.job_status
        .as_ref()
        .and_then(|j| j.job_iteration.as_ref())
        .and_then(|v| v.index)
        .unwrap_or(0)
}

fn task_iteration(t: &Task) -> Option<u64> {
    t.job_iteration.as_ref().map(|v| v.index.unwrap_or(0))
}

/// Reconciles the job services in `only` (all of them when `None`).
pub fn reconcile_only(state: &State, now: DateTime<Utc>, only: Option<&BTreeSet<String>>) -> Plan {
    let mut plan = Plan::default();
    for svc in super::services_in(state, only) {
        if let Some(job) = job_of(svc) {
            reconcile_service(state, svc, job, now, &mut plan);
        }
    }
    plan
}

/// Where a task of the job belongs: its slot, or its node.
type Place = (i64, String);

/// What one place holds in the current iteration.
#[derive(Default)]
struct PlaceView {
    completed: bool,
    /// A task still wanted (desired READY or COMPLETE) that has not ended.
    active: bool,
    /// Its last task failed and the policy gives up on it.
    given_up: bool,
}

impl PlaceView {
    /// Nothing runs or will run here, and nothing is finished: a place
    /// to (re)fill.
    fn idle(&self) -> bool {
        !self.completed && !self.active && !self.given_up
    }
}

fn reconcile_service(state: &State, svc: &Service, job: Job, now: DateTime<Utc>, plan: &mut Plan) {
    let svc_id = svc.id.clone().unwrap_or_default();
    let now_s = format_time(now);
    let current = iteration(svc);
    let mut policy = restart::policy(svc);
    // Restarting a job that completed would run it twice.
    if policy.condition == Condition::ANY {
        policy.condition = Condition::ON_FAILURE;
    }

    let mut places: BTreeMap<Place, Vec<&Task>> = BTreeMap::new();
    for t in state.tasks_of_service(&svc_id) {
        if task_iteration(t) != Some(current) {
            // An older iteration (or not a job's task): it goes if it still runs.
            if t.state() <= TaskState::RUNNING && t.desired() < TaskState::REMOVE {
                plan.ops.push(set_desired(t, TaskState::REMOVE, &now_s));
            }
            continue;
        }
        let place = match job {
            Job::Replicated { .. } => (t.slot_no(), String::new()),
            Job::Global => (0, t.node().unwrap_or_default().to_string()),
        };
        places.entry(place).or_default().push(t);
    }

    let mut views: BTreeMap<Place, PlaceView> = BTreeMap::new();
    for (place, tasks) in &places {
        let view = reconcile_place(
            state, svc, &policy, place, tasks, current, now, &now_s, plan,
        );
        views.insert(place.clone(), view);
    }

    match job {
        Job::Replicated {
            max_concurrent,
            total_completions,
        } => {
            let count = |f: fn(&PlaceView) -> bool| views.values().filter(|v| f(v)).count() as u64;
            let active = count(|v| v.active);
            let done = count(|v| v.completed || v.given_up);
            let new = max_concurrent
                .saturating_sub(active)
                .min(total_completions.saturating_sub(done + active));
            let mut slot = 0;
            for _ in 0..new {
                while views.get(&(slot, String::new())).is_some_and(|v| !v.idle()) {
                    slot += 1;
                }
                let task = job_task(state, svc, Some(slot), None, current, &now_s);
                plan.ops.push(Op::CreateTask(Box::new(task)));
                views.insert(
                    (slot, String::new()),
                    PlaceView {
                        active: true,
                        ..Default::default()
                    },
                );
            }
        }
        Job::Global => {
            let Some(constraints) = super::constraints_of(svc) else {
                return;
            };
            for (node_id, node) in &state.nodes {
                let eligible = super::global::eligible(node, &constraints, false);
                let idle = views.get(&(0, node_id.clone())).is_none_or(PlaceView::idle);
                if eligible && idle {
                    let task = job_task(state, svc, None, Some(node_id), current, &now_s);
                    plan.ops.push(Op::CreateTask(Box::new(task)));
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn reconcile_place(
    state: &State,
    svc: &Service,
    policy: &Policy,
    place: &Place,
    tasks: &[&Task],
    current: u64,
    now: DateTime<Utc>,
    now_s: &str,
    plan: &mut Plan,
) -> PlaceView {
    let mut view = PlaceView {
        completed: tasks.iter().any(|t| t.state() == TaskState::COMPLETE),
        ..Default::default()
    };
    if view.completed {
        return view;
    }
    let (slot, node) = match place {
        (_, n) if !n.is_empty() => (None, Some(n.as_str())),
        (s, _) => (Some(*s), None),
    };
    let mut started = false;
    for &t in tasks.iter().filter(|t| t.desired() <= TaskState::COMPLETE) {
        let lost = t.node().is_some_and(|n| !node_keeps_tasks(state, n));
        if is_terminal(t.state()) {
            plan.ops.push(set_desired(t, TaskState::SHUTDOWN, now_s));
            if restart::should_restart(policy, t, tasks, now) {
                // Waits out the restart delay as READY, from its creation.
                let mut new = replacement(state, svc, t, slot, node, TaskState::READY, now_s);
                new.job_iteration = Some(version(current));
                plan.ops.push(Op::CreateTask(Box::new(new)));
                view.active = true;
            } else {
                view.given_up = true;
            }
        } else if lost {
            // Its node is down or drained: not the task's failure. A
            // replicated job's slot runs again elsewhere at once; a global
            // job's task is not moved (the node runs one when it is back).
            plan.ops.push(set_desired(t, TaskState::SHUTDOWN, now_s));
            if node.is_none() {
                let mut new = replacement(state, svc, t, slot, None, TaskState::COMPLETE, now_s);
                new.job_iteration = Some(version(current));
                plan.ops.push(Op::CreateTask(Box::new(new)));
                view.active = true;
            }
        } else {
            view.active = true;
            if t.desired() == TaskState::READY && !started {
                let due = parse_time(&t.created_at).map_or(now, |c| c + policy.delay);
                if now < due {
                    plan.wake(due);
                } else {
                    plan.ops.push(set_desired(t, TaskState::COMPLETE, now_s));
                    started = true;
                }
            }
        }
    }
    if view.active {
        view.given_up = false;
    } else if !view.given_up {
        // Nothing wanted here: given up if its newest task ended for good.
        view.given_up = tasks
            .iter()
            .max_by_key(|t| t.created_at.clone())
            .is_some_and(|t| {
                is_terminal(t.state()) && !restart::should_restart(policy, t, tasks, now)
            });
    }
    view
}

fn version(index: u64) -> flotilla_store::models::ObjectVersion {
    flotilla_store::models::ObjectVersion { index: Some(index) }
}

/// A new task of the job's current iteration, wanted COMPLETE.
fn job_task(
    state: &State,
    svc: &Service,
    slot: Option<i64>,
    node: Option<&str>,
    iteration: u64,
    now: &str,
) -> Task {
    let mut task = super::new_task(state, svc, slot, node, TaskState::COMPLETE, now);
    task.job_iteration = Some(version(iteration));
    task
}
