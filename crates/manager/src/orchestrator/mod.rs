//! Orchestrators decide which tasks should exist: one per slot for a
//! replicated service, one per eligible node for a global one. Each is a
//! plain function from the state (and the time) to a list of store ops;
//! [`crate::leader`] runs them after every commit.

pub mod global;
pub mod jobs;
pub mod rebalance;
pub mod replicated;
pub mod restart;
pub mod taskreaper;
pub mod update;

use std::sync::Arc;

use flotilla_store::ids;
use flotilla_store::models::{
    NodeSpecAvailabilityEnum, Service, Task, TaskRuntime, TaskState, TaskStatus,
};
use flotilla_store::state::NodeExt;
use flotilla_store::state::{service_name, State, TaskExt};
use flotilla_store::Op;

/// What one orchestration pass wants done.
#[derive(Debug, Default)]
pub struct Plan {
    pub ops: Vec<flotilla_store::Op>,
    /// The earliest time a pass must run again even if nothing changes
    /// (a restart delay ending).
    pub wake_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The services this pass did not get to because it reached its
    /// budget: the next pass takes them up, whatever else changed.
    pub rest: std::collections::BTreeSet<String>,
}

/// How many ops a pass decides at most (it finishes no service beyond
/// it): the plan is proposed whole, and 100,000 task creates in one plan
/// held ~200 MB at once and queued every API write behind them.
pub const PASS_BUDGET: usize = 2_000;

impl Plan {
    /// Whether the pass has decided all it may.
    pub fn at_budget(&self) -> bool {
        self.ops.len() >= PASS_BUDGET
    }

    pub fn wake(&mut self, at: chrono::DateTime<chrono::Utc>) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// The services named in `only` that still exist, or every service.
pub fn services_in<'a>(
    state: &'a State,
    only: Option<&'a std::collections::BTreeSet<String>>,
) -> Box<dyn Iterator<Item = &'a Service> + 'a> {
    match only {
        None => Box::new(state.services.values()),
        Some(ids) => Box::new(ids.iter().filter_map(|id| state.services.get(id))),
    }
}

/// The mode as `docker service ls --filter mode=` names it.
pub fn mode_name(s: &Service) -> &'static str {
    use jobs::{job_of, Job};
    match job_of(s) {
        Some(Job::Global) => "global-job",
        Some(Job::Replicated { .. }) => "replicated-job",
        None if is_global(s) => "global",
        None => "replicated",
    }
}

pub fn is_global(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.mode.as_ref())
        .is_some_and(|m| m.global.is_some())
}

pub fn replicas(svc: &Service) -> u64 {
    svc.spec
        .as_ref()
        .and_then(|s| s.mode.as_ref())
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .unwrap_or(1)
        .max(0) as u64
}

/// A new task for `svc` in `slot` (replicated) or on `node` (global), as
/// SwarmKit creates them: state NEW, the service's current task template.
pub fn new_task(
    state: &State,
    svc: &Service,
    slot: Option<i64>,
    node: Option<&str>,
    desired: TaskState,
    now: &str,
) -> Task {
    // The template and labels are the ones the service's tasks share, not
    // copies: a pass creating 100,000 tasks held a copy of each per task.
    let (spec, service_labels) = state.shared_for_new_task(svc);
    Task {
        id: Some(ids::new_id()),
        created_at: Some(now.to_string()),
        updated_at: Some(now.to_string()),
        labels: None,
        spec,
        service_id: svc.id.clone(),
        slot,
        node_id: node.map(str::to_string),
        status: Some(TaskStatus {
            timestamp: Some(now.to_string()),
            state: Some(TaskState::NEW),
            message: Some("created".into()),
            ..Default::default()
        }),
        desired_state: Some(desired),
        runtime: TaskRuntime {
            service_name: Some(service_name(svc).to_string()),
            service_labels,
            registry_auth: svc.runtime.registry_auth.clone(),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A service's placement constraints; None when they no longer parse
/// (they were checked when the service was written): then no node fits.
pub(crate) fn constraints_of(svc: &Service) -> Option<Vec<crate::constraint::Constraint>> {
    let exprs = svc
        .spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.placement.as_ref())
        .and_then(|p| p.constraints.clone())
        .unwrap_or_default();
    crate::constraint::parse_all(&exprs).ok()
}

/// The swarm's task defaults (`swarm update --log-driver`) on the tasks
/// `ops` create whose spec names no log driver of its own, as SwarmKit's
/// orchestrators fill them in when they make a task.
pub fn with_task_defaults(state: &State, ops: &mut [Op]) {
    let Some(driver) = state
        .cluster
        .as_ref()
        .and_then(|c| c.spec.as_ref())
        .and_then(|s| s.task_defaults.as_ref())
        .and_then(|d| d.log_driver.as_ref())
        .filter(|d| d.name.as_deref().is_some_and(|n| !n.is_empty()))
    else {
        return;
    };
    for op in ops {
        if let Op::CreateTask(task) = op {
            if let Some(spec) = task.spec.as_mut().map(Arc::make_mut) {
                if spec
                    .log_driver
                    .as_ref()
                    .is_none_or(|l| l.name.as_deref().unwrap_or_default().is_empty())
                {
                    spec.log_driver = Some(flotilla_store::models::TaskSpecLogDriver {
                        name: driver.name.clone(),
                        options: driver.options.clone(),
                    });
                }
            }
        }
    }
}

/// A task that takes over from `ended` in its slot (restart policy, lost
/// node). It keeps `ended`'s task template: only the updater moves a slot
/// to a new template, so a paused update does not spread the new spec and
/// a restart never bypasses the update's pacing.
pub fn replacement(
    state: &State,
    svc: &Service,
    ended: &Task,
    slot: Option<i64>,
    node: Option<&str>,
    desired: TaskState,
    now: &str,
) -> Task {
    let mut task = new_task(state, svc, slot, node, desired, now);
    if ended.spec.is_some() {
        task.spec = ended.spec.clone();
    }
    task
}

/// Whether a task runs the service's current task template and publishes
/// its current target ports (what the docker CLI's `_up-to-date` filter and
/// the updater ask). A new ingress port number alone moves only the mesh.
pub fn is_up_to_date(svc: &Service, task: &Task) -> bool {
    use flotilla_store::network::{task_ports, workload_ports};
    let ports = svc
        .endpoint
        .as_ref()
        .and_then(|e| e.ports.as_deref())
        .unwrap_or_default();
    svc.spec.as_ref().and_then(|s| s.task_template.as_ref()) == task.spec.as_deref()
        && workload_ports(ports) == workload_ports(task_ports(task))
}

/// Whether a node can keep running tasks (ready and not drained).
pub fn node_keeps_tasks(state: &State, node_id: &str) -> bool {
    let Some(node) = state.nodes.get(node_id) else {
        return false;
    };
    !node.is_down() && node.availability() != NodeSpecAvailabilityEnum::DRAIN
}

/// A rebalancer's move whose new task has not run yet, in a slot that
/// still holds the task it replaces: the replicated orchestrator leaves
/// such a pair alone (it would keep the running one and drop the move).
pub fn is_pending_move(t: &Task) -> bool {
    flotilla_store::state::is_move(t)
        && t.state() < TaskState::RUNNING
        && !flotilla_store::state::is_terminal(t.state())
}

/// The op that tells a task what to become.
pub(crate) fn set_desired(t: &Task, desired: TaskState, now: &str) -> Op {
    Op::SetTaskDesired {
        id: t.id_str().to_string(),
        desired,
        updated_at: now.to_string(),
    }
}

pub fn parse_time(s: &Option<String>) -> Option<chrono::DateTime<chrono::Utc>> {
    s.as_deref().and_then(ids::parse_time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_store::models::{
        Swarm, SwarmSpec, SwarmSpecTaskDefaults, SwarmSpecTaskDefaultsLogDriver, TaskSpec,
        TaskSpecLogDriver,
    };

    #[test]
    fn new_tasks_without_a_log_driver_get_the_swarm_s_default() {
        let mut state = State::default();
        state.cluster = Some(Swarm {
            spec: Some(SwarmSpec {
                task_defaults: Some(SwarmSpecTaskDefaults {
                    log_driver: Some(SwarmSpecTaskDefaultsLogDriver {
                        name: Some("local".into()),
                        options: None,
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let plain = Task {
            spec: Some(Arc::new(TaskSpec::default())),
            ..Default::default()
        };
        let own = Task {
            spec: Some(Arc::new(TaskSpec {
                log_driver: Some(TaskSpecLogDriver {
                    name: Some("syslog".into()),
                    options: None,
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let mut ops = vec![
            Op::CreateTask(Box::new(plain)),
            Op::CreateTask(Box::new(own)),
        ];
        with_task_defaults(&state, &mut ops);
        let drivers: Vec<Option<String>> = ops
            .iter()
            .map(|op| match op {
                Op::CreateTask(t) => t.spec.as_ref()?.log_driver.as_ref()?.name.clone(),
                _ => None,
            })
            .collect();
        assert_eq!(drivers, [Some("local".into()), Some("syslog".into())]);
    }
}
