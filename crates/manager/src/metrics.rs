//! What a manager tells Prometheus, read at scrape time.
//!
//! - Docker's `swarm_manager_*` families, from the replicated store: every
//!   manager has them, as every Swarm manager does.
//! - Flotilla's cluster figures (each service's replicas, tasks and
//!   update, each node's state) and the dispatcher's come from the leader
//!   only: a sum over all managers counts each once, and a follower's
//!   dispatcher has no sessions to tell of.
//! - Raft's figures: each manager its own.
//!
//! A scrape holds the store's read lock only to copy one entry per service
//! and per node: the per-service task counts are kept by the store as
//! tasks change (`flotilla_store::counts`), so no scrape walks the tasks.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use flotilla_store::counts::{TaskCounts, TASK_STATES, TASK_STATE_NAMES};
use flotilla_store::metrics::{seconds_histogram, Emit};
use flotilla_store::models::{
    NodeSpecRoleEnum, NodeState, Service, ServiceUpdateStatusStateEnum as UpdateState, TaskState,
};
use flotilla_store::state::{node_hostname, service_name, NodeExt, TaskExt};
use flotilla_store::{ChangeMark, State, Store};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::orchestrator::jobs::{job_of, Job};
use crate::orchestrator::{is_global, mode_name, replicas};

type Fmt = Result<(), std::fmt::Error>;

/// The manager's timings, process-wide as SwarmKit keeps them.
pub struct ManagerMetrics {
    /// From a task's creation to its first RUNNING report (Docker's
    /// `swarm_dispatcher_scheduling_delay_seconds`).
    pub scheduling_delay: Histogram,
    /// From a service's create or spec update to all its tasks running
    /// that spec, by `kind` (create, update).
    pub converge: Family<[(&'static str, &'static str); 1], Histogram>,
}

const CONVERGE_BUCKETS: [f64; 12] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

pub static METRICS: LazyLock<ManagerMetrics> = LazyLock::new(|| ManagerMetrics {
    scheduling_delay: seconds_histogram(),
    converge: Family::new_with_constructor(|| Histogram::new(CONVERGE_BUCKETS)),
});

pub fn register(r: &mut Registry) {
    let m = &*METRICS;
    r.register(
        "swarm_dispatcher_scheduling_delay_seconds",
        "Scheduling delay is the time a task takes to go from NEW to RUNNING state",
        m.scheduling_delay.clone(),
    );
    r.register(
        "flotilla_service_converge_seconds",
        "Time from a service's create or spec update until all its tasks run that spec (leader)",
        m.converge.clone(),
    );
}

/// What the dispatcher tells the metrics (`Dispatcher::figures`).
#[derive(Debug, Clone, Copy)]
pub struct DispatcherFigures {
    /// Nodes with an assignment stream open.
    pub sessions: usize,
    /// Nodes it marked Down.
    pub heartbeat_failures: u64,
}

/// Writes the manager's families for `store` (and its dispatcher's).
pub fn encode(e: &mut Emit, store: &Store, dispatcher: Option<DispatcherFigures>) -> Fmt {
    let raft = store.raft_figures();
    let leader = raft.is_leader;
    let figures = store.read(|s| Figures::of(s, leader));

    e.gauge(
        "swarm_manager_leader",
        "Indicates if this manager node is a leader",
        u64::from(leader),
    )?;
    e.gauges(
        "swarm_manager_nodes",
        "The number of nodes",
        NODE_STATES
            .iter()
            .zip(figures.nodes_by_state)
            .map(|(s, n)| ([("state", s.to_string())], n)),
    )?;
    e.gauges(
        "swarm_manager_tasks_total",
        "The number of tasks in the cluster object store",
        TASK_STATE_NAMES
            .iter()
            .zip(figures.tasks_by_state)
            .map(|(s, n)| ([("state", *s)], n)),
    )?;
    for (kind, n) in [
        ("services", figures.service_count),
        ("networks", figures.networks),
        ("secrets", figures.secrets),
        ("configs", figures.configs),
    ] {
        e.gauge(
            &format!("swarm_manager_{kind}_total"),
            &format!("The number of {kind} in the cluster object store"),
            n as u64,
        )?;
    }

    e.gauge("flotilla_raft_term", "This manager's Raft term.", raft.term)?;
    e.gauge(
        "flotilla_raft_last_log_index",
        "The index of the last entry in this manager's Raft log.",
        raft.last_log_index,
    )?;
    e.gauge(
        "flotilla_raft_commit_index",
        "The last Raft index this manager knows committed.",
        raft.committed_index,
    )?;
    e.gauge(
        "flotilla_raft_applied_index",
        "The last Raft index applied to this manager's store.",
        raft.applied_index,
    )?;
    e.counter(
        "flotilla_raft_leader_changes",
        "Times this manager saw the Raft leader change.",
        raft.leader_changes,
    )?;

    if !leader {
        return Ok(());
    }
    if let Some(d) = dispatcher {
        e.gauge(
            "flotilla_dispatcher_sessions",
            "Nodes with an open session to this dispatcher (leader).",
            d.sessions as u64,
        )?;
        e.counter(
            "flotilla_dispatcher_heartbeat_failures",
            "Nodes marked down for missed heartbeats or a closed session (leader).",
            d.heartbeat_failures,
        )?;
    }
    encode_services(e, &figures.services)?;
    e.gauges(
        "flotilla_node_info",
        "Each node, with its role, availability and state as labels (leader).",
        figures.nodes.iter().map(|n| {
            (
                [
                    ("node_id", n.id.as_str()),
                    ("hostname", n.hostname.as_str()),
                    ("role", n.role),
                    ("availability", n.availability.as_str()),
                    ("state", n.state.as_str()),
                ],
                1u64,
            )
        }),
    )?;
    Ok(())
}

fn encode_services(e: &mut Emit, services: &[ServiceFigures]) -> Fmt {
    fn labels(s: &ServiceFigures) -> [(&'static str, &str); 3] {
        [
            ("service", s.name.as_str()),
            ("stack", s.stack.as_str()),
            ("mode", s.mode),
        ]
    }
    e.gauges(
        "flotilla_service_replicas_desired",
        "The tasks a service wants running (leader).",
        services.iter().map(|s| (labels(s), s.desired)),
    )?;
    e.gauges(
        "flotilla_service_replicas_running",
        "A service's tasks running and meant to run (leader).",
        services
            .iter()
            .map(|s| (labels(s), u64::from(s.counts.running))),
    )?;
    // States no task of a service is in are left out: 15 series a service
    // would be mostly zeros.
    e.gauges(
        "flotilla_service_tasks",
        "A service's tasks by observed state, those in no state left out (leader).",
        services.iter().flat_map(|s| {
            let [a, b, c] = labels(s);
            TASK_STATE_NAMES
                .iter()
                .zip(s.counts.by_state)
                .filter(|(_, n)| *n > 0)
                .map(move |(state, n)| ([a, b, c, ("state", *state)], u64::from(n)))
        }),
    )?;
    let updates: Vec<_> = services
        .iter()
        .filter_map(|s| s.update.as_ref().map(|u| (s, u)))
        .collect();
    e.gauges(
        "flotilla_service_update_state",
        "1 for the state of a service's last update or rollback (leader).",
        updates.iter().map(|(s, u)| {
            let [a, b, c] = labels(s);
            ([a, b, c, ("state", u.state.as_str())], 1u64)
        }),
    )?;
    e.gauges(
        "flotilla_service_update_started_timestamp_seconds",
        "When a service's last update or rollback started, in Unix seconds (leader).",
        updates
            .iter()
            .filter_map(|(s, u)| Some((labels(s), u.started?))),
    )?;
    e.gauges(
        "flotilla_service_update_completed_timestamp_seconds",
        "When a service's last update or rollback completed, in Unix seconds (leader).",
        updates
            .iter()
            .filter_map(|(s, u)| Some((labels(s), u.completed?))),
    )?;
    Ok(())
}

const NODE_STATES: [NodeState; 4] = [
    NodeState::UNKNOWN,
    NodeState::DOWN,
    NodeState::READY,
    NodeState::DISCONNECTED,
];

/// What a scrape copies out of the state.
#[derive(Default)]
struct Figures {
    nodes_by_state: [u64; 4],
    tasks_by_state: [u64; TASK_STATES.len()],
    service_count: usize,
    networks: usize,
    secrets: usize,
    configs: usize,
    /// The leader's only.
    services: Vec<ServiceFigures>,
    nodes: Vec<NodeFigures>,
}

struct ServiceFigures {
    name: String,
    stack: String,
    mode: &'static str,
    desired: u64,
    counts: TaskCounts,
    update: Option<UpdateFigures>,
}

struct UpdateFigures {
    state: String,
    started: Option<f64>,
    completed: Option<f64>,
}

struct NodeFigures {
    id: String,
    hostname: String,
    role: &'static str,
    availability: String,
    state: String,
}

impl Figures {
    fn of(s: &State, leader: bool) -> Figures {
        let mut f = Figures {
            service_count: s.services.len(),
            networks: s.networks.len(),
            secrets: s.secrets.len(),
            configs: s.configs.len(),
            ..Default::default()
        };
        for n in s.nodes.values() {
            let i = NODE_STATES
                .iter()
                .position(|x| *x == n.state())
                .unwrap_or(0);
            f.nodes_by_state[i] += 1;
            if leader {
                f.nodes.push(NodeFigures {
                    id: n.id.clone().unwrap_or_default(),
                    hostname: node_hostname(n).to_string(),
                    role: match n.spec.as_ref().and_then(|s| s.role) {
                        Some(NodeSpecRoleEnum::MANAGER) => "manager",
                        _ => "worker",
                    },
                    availability: n.availability().to_string(),
                    state: n.state().to_string(),
                });
            }
        }
        let counts = s.task_counts();
        for c in counts.values() {
            for (total, n) in f.tasks_by_state.iter_mut().zip(c.by_state) {
                *total += u64::from(n);
            }
        }
        if !leader {
            return f;
        }
        for (id, svc) in &s.services {
            let counts = counts.get(id).copied().unwrap_or_default();
            f.services.push(ServiceFigures {
                name: service_name(svc).to_string(),
                stack: stack_of(svc).to_string(),
                mode: mode_name(svc),
                desired: desired(svc, &counts),
                counts,
                update: svc.update_status.as_ref().and_then(|u| {
                    Some(UpdateFigures {
                        state: u.state?.to_string(),
                        started: unix_seconds(u.started_at.as_deref()),
                        completed: unix_seconds(u.completed_at.as_deref()),
                    })
                }),
            });
        }
        f
    }
}

fn stack_of(svc: &Service) -> &str {
    svc.spec
        .as_ref()
        .and_then(|s| s.labels.as_ref())
        .and_then(|l| l.get("com.docker.stack.namespace"))
        .map_or("", String::as_str)
}

/// The tasks `svc` wants, as `docker service ls` counts them (a job's
/// figures cover all its iterations' tasks still to finish).
fn desired(svc: &Service, counts: &TaskCounts) -> u64 {
    match job_of(svc) {
        Some(Job::Replicated { max_concurrent, .. }) => max_concurrent,
        Some(Job::Global) => u64::from(counts.desired_complete),
        None if is_global(svc) => u64::from(counts.desired_running),
        None => replicas(svc),
    }
}

fn unix_seconds(time: Option<&str>) -> Option<f64> {
    let t = chrono::DateTime::parse_from_rfc3339(time?).ok()?;
    Some(t.timestamp_millis() as f64 / 1000.0)
}

/// Records the scheduling delay of a task seen RUNNING for the first time,
/// created at `created_at` (RFC 3339).
pub fn task_started(created_at: Option<&str>) {
    let Some(created) = created_at.and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
    else {
        return;
    };
    let delay = chrono::Utc::now().signed_duration_since(created);
    if let Ok(delay) = delay.to_std() {
        METRICS.scheduling_delay.observe(delay.as_secs_f64());
    }
}

/// Observes `flotilla_service_converge_seconds` while this manager leads:
/// a service created or whose spec changed is timed from when the leader
/// saw it until its tasks meant to run all run its current spec, as many
/// as it wants. Services there at the start are not timed.
pub async fn watch_convergence(store: Store, mut stop: watch::Receiver<bool>) {
    const SETTLE: Duration = Duration::from_millis(50);
    let mut changes = store.subscribe();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut pending: HashMap<String, (Instant, &'static str)> = HashMap::new();
    let mut mark: Option<ChangeMark> = None;
    loop {
        changes.borrow_and_update();
        let now = Instant::now();
        mark = Some(store.read(|s| {
            let scope = mark.as_ref().and_then(|m| s.changed_services(m));
            let first = mark.is_none();
            let ids: Vec<&String> = match &scope {
                Some(ids) => ids.iter().collect(),
                None => s.services.keys().collect(),
            };
            for id in ids {
                let Some(svc) = s.services.get(id) else {
                    seen.remove(id);
                    pending.remove(id);
                    continue;
                };
                if job_of(svc).is_some() {
                    continue;
                }
                let at = svc.updated_at.clone().unwrap_or_default();
                match seen.insert(id.clone(), at.clone()) {
                    None if !first => {
                        pending.insert(id.clone(), (now, "create"));
                    }
                    Some(before) if before != at => {
                        pending.insert(id.clone(), (now, "update"));
                    }
                    _ => {}
                }
                if let Some((since, kind)) = pending.get(id) {
                    if converged(s, svc) {
                        METRICS
                            .converge
                            .get_or_create(&[("kind", *kind)])
                            .observe(since.elapsed().as_secs_f64());
                        pending.remove(id);
                    }
                }
            }
            if scope.is_none() {
                seen.retain(|id, _| s.services.contains_key(id));
                pending.retain(|id, _| s.services.contains_key(id));
            }
            s.change_mark()
        }));
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
        tokio::time::sleep(SETTLE).await;
    }
}

/// All of `svc`'s tasks meant to run run its current template, as many as
/// it wants, and no update of it is under way or paused.
fn converged(s: &State, svc: &Service) -> bool {
    if svc
        .update_status
        .as_ref()
        .and_then(|u| u.state)
        .is_some_and(|st| {
            matches!(
                st,
                UpdateState::UPDATING
                    | UpdateState::PAUSED
                    | UpdateState::ROLLBACK_STARTED
                    | UpdateState::ROLLBACK_PAUSED
            )
        })
    {
        return false;
    }
    let id = svc.id.as_deref().unwrap_or_default();
    let counts = s.task_counts().get(id).copied().unwrap_or_default();
    let want = desired(svc, &counts);
    if u64::from(counts.running) != want || u64::from(counts.desired_running) != want {
        return false;
    }
    let template = svc.spec.as_ref().and_then(|sp| sp.task_template.as_ref());
    s.tasks_of_service(id)
        .filter(|t| t.desired() == TaskState::RUNNING)
        .all(|t| t.state() == TaskState::RUNNING && t.spec.as_deref() == template)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_is_read_as_unix_seconds() {
        assert_eq!(
            unix_seconds(Some("2026-12-07T01:02:03.5Z")),
            Some(1_796_605_323.5)
        );
        assert_eq!(unix_seconds(Some("not a time")), None);
        assert_eq!(unix_seconds(None), None);
    }
}
