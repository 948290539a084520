//! The aggregate the page draws: nodes with their tasks as compact boxes,
//! services with their replica counts, ports, networks, update progress and
//! the reason they are short of tasks. Built here, on the server, from the
//! Engine API's objects, so a page for 10,000 tasks receives a few hundred
//! kilobytes of numbers instead of the daemon's JSON.

use std::collections::HashMap;

use bollard::models::{Network, Node, Service, Task};
use serde::Serialize;

use crate::format::enum_text;

/// Task states in the order the page's `states` table lists them; a box
/// carries the index.
pub(crate) const STATES: &[&str] = &[
    "new",
    "allocated",
    "pending",
    "assigned",
    "accepted",
    "preparing",
    "ready",
    "starting",
    "running",
    "complete",
    "shutdown",
    "failed",
    "rejected",
    "remove",
    "orphaned",
];

/// One node's or the unassigned column's task: [service index, state index, slot].
pub(crate) type TaskBox = [u32; 3];

#[derive(Debug, Serialize, Default)]
pub(crate) struct Model {
    pub states: &'static [&'static str],
    pub info: Info,
    pub services: Vec<ServiceRow>,
    pub nodes: Vec<NodeRow>,
    /// Tasks that want to run but have no node yet (pending).
    pub unassigned: Vec<TaskBox>,
}

#[derive(Debug, Serialize, Default)]
pub(crate) struct Info {
    pub name: String,
    pub version: String,
    pub cluster: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct ServiceRow {
    pub id: String,
    pub name: String,
    pub image: String,
    pub mode: String,
    pub running: u64,
    pub desired: u64,
    pub ports: Vec<String>,
    pub networks: Vec<String>,
    pub update: Option<UpdateRow>,
    /// Why tasks are short: the newest pending, rejected or failed task's
    /// error, as the daemon wrote it.
    pub problem: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct UpdateRow {
    /// Docker's update state: updating, paused, completed,
    /// rollback_started, rollback_paused, rollback_completed.
    pub state: String,
    pub message: String,
    /// Tasks of the new spec running, of `total`.
    pub done: u64,
    pub total: u64,
}

#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct NodeRow {
    pub id: String,
    pub hostname: String,
    pub role: String,
    pub leader: bool,
    pub availability: String,
    pub state: String,
    pub addr: String,
    pub engine: String,
    pub cpus: f64,
    pub memory: i64,
    pub tasks: Vec<TaskBox>,
}

/// Desired states of a task that is meant to exist: the others (shutdown,
/// remove, complete) are history, shown in a service's task list only.
fn wanted(task: &Task) -> bool {
    matches!(
        enum_text(&task.desired_state).as_str(),
        "running" | "ready" | "accepted" | "new" | "pending" | "assigned"
    )
}

fn state_index(state: &str) -> u32 {
    STATES.iter().position(|s| *s == state).unwrap_or(0) as u32
}

/// Builds the aggregate from the daemon's lists.
pub(crate) fn build(
    info: Info,
    nodes: &[Node],
    services: &[Service],
    tasks: &[Task],
    networks: &[Network],
) -> Model {
    let mut services: Vec<&Service> = services.iter().collect();
    services.sort_by_key(|s| service_name(s));
    let index: HashMap<&str, u32> = services
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.id.as_deref().map(|id| (id, i as u32)))
        .collect();
    let network_names: HashMap<&str, &str> = networks
        .iter()
        .filter_map(|n| Some((n.id.as_deref()?, n.name.as_deref()?)))
        .collect();
    let mut by_service: HashMap<&str, Vec<&Task>> = HashMap::new();
    for task in tasks {
        if let Some(id) = task.service_id.as_deref() {
            by_service.entry(id).or_default().push(task);
        }
    }
    let rows = services
        .iter()
        .map(|s| {
            let own =
                s.id.as_deref()
                    .and_then(|id| by_service.get(id))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
            service_row(s, own, &network_names)
        })
        .collect();
    let (node_rows, unassigned) = node_rows(nodes, tasks, &index);
    Model {
        states: STATES,
        info,
        services: rows,
        nodes: node_rows,
        unassigned,
    }
}

fn service_name(service: &Service) -> String {
    service
        .spec
        .as_ref()
        .and_then(|s| s.name.clone())
        .unwrap_or_default()
}

fn node_rows(
    nodes: &[Node],
    tasks: &[Task],
    index: &HashMap<&str, u32>,
) -> (Vec<NodeRow>, Vec<TaskBox>) {
    let mut boxes: HashMap<&str, Vec<TaskBox>> = HashMap::new();
    let mut unassigned = Vec::new();
    for task in tasks.iter().filter(|t| wanted(t)) {
        let Some(&service) = task.service_id.as_deref().and_then(|id| index.get(id)) else {
            continue;
        };
        let state = state_index(&enum_text(&task.status.as_ref().and_then(|s| s.state)));
        let slot = task.slot.unwrap_or(0).max(0) as u32;
        let task_box = [service, state, slot];
        match task.node_id.as_deref().filter(|n| !n.is_empty()) {
            Some(node) => boxes.entry(node).or_default().push(task_box),
            None => unassigned.push(task_box),
        }
    }
    let mut rows: Vec<NodeRow> = nodes
        .iter()
        .map(|n| {
            let mut tasks =
                n.id.as_deref()
                    .and_then(|id| boxes.remove(id))
                    .unwrap_or_default();
            tasks.sort_unstable();
            node_row(n, tasks)
        })
        .collect();
    // Managers first, then by name, as a visualizer's columns.
    rows.sort_by(|a, b| {
        (a.role != "manager", &a.hostname).cmp(&(b.role != "manager", &b.hostname))
    });
    unassigned.sort_unstable();
    (rows, unassigned)
}

fn node_row(node: &Node, tasks: Vec<TaskBox>) -> NodeRow {
    let spec = node.spec.as_ref();
    let description = node.description.as_ref();
    let resources = description.and_then(|d| d.resources.as_ref());
    NodeRow {
        id: node.id.clone().unwrap_or_default(),
        hostname: description
            .and_then(|d| d.hostname.clone())
            .unwrap_or_default(),
        role: enum_text(&spec.and_then(|s| s.role)),
        leader: node
            .manager_status
            .as_ref()
            .and_then(|m| m.leader)
            .unwrap_or(false),
        availability: enum_text(&spec.and_then(|s| s.availability)),
        state: enum_text(&node.status.as_ref().and_then(|s| s.state)),
        addr: node
            .status
            .as_ref()
            .and_then(|s| s.addr.clone())
            .unwrap_or_default(),
        engine: description
            .and_then(|d| d.engine.as_ref())
            .and_then(|e| e.engine_version.clone())
            .unwrap_or_default(),
        cpus: resources.and_then(|r| r.nano_cpus).unwrap_or(0) as f64 / 1e9,
        memory: resources.and_then(|r| r.memory_bytes).unwrap_or(0),
        tasks,
    }
}

fn service_row(service: &Service, tasks: &[&Task], networks: &HashMap<&str, &str>) -> ServiceRow {
    let spec = service.spec.as_ref();
    let mode = spec.and_then(|s| s.mode.as_ref());
    let running_now =
        |t: &&&Task| wanted(t) && enum_text(&t.status.as_ref().and_then(|s| s.state)) == "running";
    let running = tasks.iter().filter(running_now).count() as u64;
    let (mode_name, desired) = match mode {
        Some(m) if m.global.is_some() => {
            ("global", tasks.iter().filter(|t| wanted(t)).count() as u64)
        }
        Some(m) if m.replicated_job.is_some() => (
            "replicated-job",
            m.replicated_job
                .as_ref()
                .and_then(|j| j.total_completions)
                .unwrap_or(1)
                .max(0) as u64,
        ),
        Some(m) if m.global_job.is_some() => (
            "global-job",
            tasks.iter().filter(|t| wanted(t)).count() as u64,
        ),
        _ => (
            "replicated",
            mode.and_then(|m| m.replicated.as_ref())
                .and_then(|r| r.replicas)
                .unwrap_or(1)
                .max(0) as u64,
        ),
    };
    let task_template = spec.and_then(|s| s.task_template.as_ref());
    let image = task_template
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    ServiceRow {
        id: service.id.clone().unwrap_or_default(),
        name: service_name(service),
        // Without the digest a pinned image carries: the page has little room.
        image: image.split('@').next().unwrap_or_default().to_string(),
        mode: mode_name.to_string(),
        running,
        desired,
        ports: ports(service),
        networks: task_template
            .and_then(|t| t.networks.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|n| n.target.as_deref())
            .map(|id| networks.get(id).copied().unwrap_or(id).to_string())
            .collect(),
        update: update_row(service, tasks, desired),
        problem: if running < desired {
            problem(tasks)
        } else {
            None
        },
    }
}

/// `*:8080->80/tcp` as `docker service ls` writes them (`8080->80/tcp` in
/// host mode).
fn ports(service: &Service) -> Vec<String> {
    let ports = service
        .endpoint
        .as_ref()
        .and_then(|e| e.ports.as_ref())
        .into_iter()
        .flatten();
    ports
        .filter_map(|p| {
            let published = p.published_port?;
            let host_mode = enum_text(&p.publish_mode) == "host";
            Some(format!(
                "{}{published}->{}/{}",
                if host_mode { "" } else { "*:" },
                p.target_port.unwrap_or(0),
                match enum_text(&p.protocol).as_str() {
                    "" => "tcp".to_string(),
                    other => other.to_string(),
                }
            ))
        })
        .collect()
}

/// The update in progress or its outcome: `done` counts the tasks running
/// that were created since the update started (the updater's replacements).
fn update_row(service: &Service, tasks: &[&Task], desired: u64) -> Option<UpdateRow> {
    let status = service.update_status.as_ref()?;
    let state = enum_text(&status.state);
    if state.is_empty() {
        return None;
    }
    let started = crate::client::date_text(&status.started_at).and_then(|d| parse_time(&d));
    let done = tasks
        .iter()
        .filter(|t| wanted(t) && enum_text(&t.status.as_ref().and_then(|s| s.state)) == "running")
        .filter(|t| {
            let created = crate::client::date_text(&t.created_at).and_then(|d| parse_time(&d));
            matches!((created, started), (Some(c), Some(s)) if c >= s)
        })
        .count() as u64;
    Some(UpdateRow {
        state,
        message: status.message.clone().unwrap_or_default(),
        done: done.min(desired),
        total: desired,
    })
}

fn parse_time(text: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(text).ok()
}

/// The newest task that is pending, rejected or failed with a reason.
fn problem(tasks: &[&Task]) -> Option<String> {
    tasks
        .iter()
        .filter_map(|t| {
            let status = t.status.as_ref()?;
            let state = enum_text(&status.state);
            if !matches!(state.as_str(), "pending" | "rejected" | "failed") {
                return None;
            }
            let reason = status
                .err
                .clone()
                .filter(|e| !e.is_empty())
                .or_else(|| status.message.clone().filter(|m| !m.is_empty()))?;
            let when = crate::client::date_text(&status.timestamp).and_then(|d| parse_time(&d));
            Some((when, format!("{state}: {reason}")))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, text)| text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(id: &str, host: &str, role: &str, leader: bool, state: &str) -> Node {
        serde_json::from_value(json!({
            "ID": id,
            "Spec": {"Role": role, "Availability": "active"},
            "Description": {"Hostname": host, "Engine": {"EngineVersion": "20.10.24"},
                "Resources": {"NanoCPUs": 2_000_000_000i64, "MemoryBytes": 1_073_741_824i64}},
            "Status": {"State": state, "Addr": "10.0.0.1"},
            "ManagerStatus": if role == "manager" { json!({"Leader": leader}) } else { json!(null) },
        }))
        .unwrap()
    }

    fn service(id: &str, name: &str, replicas: i64) -> Service {
        serde_json::from_value(json!({
            "ID": id,
            "Spec": {"Name": name, "Mode": {"Replicated": {"Replicas": replicas}},
                "TaskTemplate": {"ContainerSpec": {"Image": "busybox:latest@sha256:abc"},
                    "Networks": [{"Target": "net1"}]}},
            "Endpoint": {"Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]},
        }))
        .unwrap()
    }

    fn task(
        service: &str,
        slot: i64,
        node: &str,
        desired: &str,
        state: &str,
        err: &str,
        at: &str,
    ) -> Task {
        serde_json::from_value(json!({
            "ID": format!("{service}{slot}{node}{state}"),
            "ServiceID": service, "Slot": slot, "NodeID": node,
            "DesiredState": desired, "CreatedAt": at,
            "Status": {"State": state, "Err": err, "Timestamp": at},
        }))
        .unwrap()
    }

    #[test]
    fn boxes_go_to_their_nodes_and_history_stays_out() {
        let nodes = [
            node("w1", "worker01", "worker", false, "ready"),
            node("m", "manager", "manager", true, "ready"),
        ];
        let services = [service("s2", "web", 2), service("s1", "api", 1)];
        let t = "2024-01-01T00:00:00Z";
        let tasks = [
            task("s2", 1, "w1", "running", "running", "", t),
            task("s2", 2, "m", "running", "starting", "", t),
            task("s1", 1, "w1", "running", "running", "", t),
            task("s1", 1, "w1", "shutdown", "failed", "exit 1", t),
            task("s2", 3, "", "running", "pending", "no suitable node", t),
        ];
        let networks: Vec<Network> =
            vec![serde_json::from_value(json!({"Id": "net1", "Name": "front"})).unwrap()];
        let m = build(Info::default(), &nodes, &services, &tasks, &networks);
        // Services by name: api is 0, web is 1; the manager's column first.
        assert_eq!(m.services[0].name, "api");
        assert_eq!(m.nodes[0].hostname, "manager");
        assert!(m.nodes[0].leader);
        assert_eq!(m.nodes[0].tasks, vec![[1, state_index("starting"), 2]]);
        assert_eq!(
            m.nodes[1].tasks,
            vec![
                [0, state_index("running"), 1],
                [1, state_index("running"), 1]
            ]
        );
        assert_eq!(m.unassigned, vec![[1, state_index("pending"), 3]]);
        assert_eq!((m.nodes[1].cpus, m.nodes[1].memory), (2.0, 1_073_741_824));
        let web = &m.services[1];
        assert_eq!((web.running, web.desired), (1, 2));
        assert_eq!(web.image, "busybox:latest");
        assert_eq!(web.ports, vec!["*:8080->80/tcp"]);
        assert_eq!(web.networks, vec!["front"]);
        assert_eq!(web.problem.as_deref(), Some("pending: no suitable node"));
        // api runs its one task: the old failure is history, not a problem.
        assert_eq!(
            (m.services[0].running, m.services[0].problem.clone()),
            (1, None)
        );
    }

    #[test]
    fn the_newest_failure_explains_a_short_service() {
        let services = [service("s", "db", 1)];
        let tasks = [
            task(
                "s",
                1,
                "n",
                "shutdown",
                "failed",
                "old",
                "2024-01-01T00:00:00Z",
            ),
            task(
                "s",
                1,
                "n",
                "shutdown",
                "rejected",
                "newer",
                "2024-01-01T00:00:05.5Z",
            ),
            task(
                "s",
                1,
                "n",
                "running",
                "preparing",
                "",
                "2024-01-01T00:00:06Z",
            ),
        ];
        let m = build(Info::default(), &[], &services, &tasks, &[]);
        assert_eq!(m.services[0].problem.as_deref(), Some("rejected: newer"));
    }

    #[test]
    fn update_progress_counts_tasks_made_since_it_started() {
        let mut s = service("s", "web", 3);
        s.update_status = serde_json::from_value(json!({
            "State": "updating", "StartedAt": "2024-01-01T00:00:10Z", "Message": "update in progress"
        }))
        .unwrap();
        let tasks = [
            task(
                "s",
                1,
                "n",
                "running",
                "running",
                "",
                "2024-01-01T00:00:11Z",
            ),
            task(
                "s",
                2,
                "n",
                "running",
                "running",
                "",
                "2024-01-01T00:00:01Z",
            ),
            task(
                "s",
                3,
                "n",
                "running",
                "running",
                "",
                "2024-01-01T00:00:02Z",
            ),
        ];
        let m = build(Info::default(), &[], &[s], &tasks, &[]);
        let u = m.services[0].update.as_ref().unwrap();
        assert_eq!((u.state.as_str(), u.done, u.total), ("updating", 1, 3));
    }

    #[test]
    fn ten_thousand_tasks_aggregate_compactly() {
        let nodes: Vec<Node> = (0..20)
            .map(|i| {
                node(
                    &format!("n{i}"),
                    &format!("host{i}"),
                    "worker",
                    false,
                    "ready",
                )
            })
            .collect();
        let services: Vec<Service> = (0..1000)
            .map(|i| service(&format!("s{i}"), &format!("svc{i}"), 10))
            .collect();
        let t = "2024-01-01T00:00:00Z";
        let tasks: Vec<Task> = (0..10_000)
            .map(|i| {
                task(
                    &format!("s{}", i % 1000),
                    (i / 1000) as i64 + 1,
                    &format!("n{}", i % 20),
                    "running",
                    "running",
                    "",
                    t,
                )
            })
            .collect();
        let start = std::time::Instant::now();
        let m = build(Info::default(), &nodes, &services, &tasks, &[]);
        let json = serde_json::to_string(&m).unwrap();
        // A figure, not an assertion: a loaded CI machine must not fail it
        // (BENCHMARKS.md keeps the dashboard's timings).
        println!(
            "aggregating 10,000 tasks of 1,000 services: {:?}",
            start.elapsed()
        );
        assert_eq!(m.nodes.iter().map(|n| n.tasks.len()).sum::<usize>(), 10_000);
        assert!(json.len() < 600_000, "{} bytes", json.len());
    }
}
