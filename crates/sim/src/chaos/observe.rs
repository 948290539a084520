//! What the swarm and the hosts show: the services each manager lists, and
//! the task processes really running, found in /proc by the variables every
//! chaos service gives its tasks (so a process no store knows is found too).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::model::State;

/// Every chaos service's name prefix.
pub const PREFIX: &str = "chaos-";
/// The variables a chaos task carries (Docker's templates fill them in).
pub const SLOT_VAR: &str = "CHAOS_SLOT";
pub const TASK_VAR: &str = "CHAOS_TASK";
pub const GEN_VAR: &str = "CHAOS_GEN";

/// The chaos services of a `GET /services` answer, as model states.
pub fn services(list: &Value) -> BTreeMap<String, State> {
    let mut out = BTreeMap::new();
    for s in list.as_array().into_iter().flatten() {
        let spec = &s["Spec"];
        let Some(name) = spec["Name"].as_str().filter(|n| n.starts_with(PREFIX)) else {
            continue;
        };
        let replicas = spec["Mode"]["Replicated"]["Replicas"].as_u64().unwrap_or(0);
        out.insert(
            name.to_string(),
            State::Present {
                replicas,
                generation: generation(spec),
            },
        );
    }
    out
}

/// The `CHAOS_GEN` of a service spec (0 when missing).
pub fn generation(spec: &Value) -> u64 {
    spec["TaskTemplate"]["ContainerSpec"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str()?.strip_prefix(GEN_VAR)?.strip_prefix('='))
        .find_map(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A task process found on the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskProcess {
    pub pid: u32,
    /// `service.slot`.
    pub slot: String,
    pub task: String,
    /// The host of cluster `prefix` whose cgroup holds it (a process
    /// task's daemon or a container's dockerd --cgroup-parent); None when
    /// it is in none of them.
    pub host: Option<String>,
}

/// Every chaos task process on this machine, with its host in the cluster
/// that cluster.sh made as `prefix`.
pub fn processes(prefix: &str) -> Vec<TaskProcess> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let dir = e.path();
        let Ok(environ) = std::fs::read(dir.join("environ")) else {
            continue;
        };
        let mut slot = None;
        let mut task = None;
        for var in environ.split(|b| *b == 0) {
            let var = String::from_utf8_lossy(var);
            if let Some(v) = var.strip_prefix(SLOT_VAR).and_then(|v| v.strip_prefix('=')) {
                slot = Some(v.to_string());
            } else if let Some(v) = var.strip_prefix(TASK_VAR).and_then(|v| v.strip_prefix('=')) {
                task = Some(v.to_string());
            }
        }
        let (Some(slot), Some(task)) = (slot, task) else {
            continue;
        };
        // A shell the task's process started inherits the variables: only
        // the process whose parent does not carry them counts.
        if parent_is_task(&dir) {
            continue;
        }
        let host = std::fs::read_to_string(dir.join("cgroup"))
            .ok()
            .and_then(|c| host_of_cgroup(&c, prefix));
        out.push(TaskProcess {
            pid,
            slot,
            task,
            host,
        });
    }
    out
}

fn parent_is_task(dir: &Path) -> bool {
    let ppid = std::fs::read_to_string(dir.join("stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            after.split_whitespace().nth(1)?.parse::<u32>().ok()
        });
    let Some(ppid) = ppid else { return false };
    std::fs::read(format!("/proc/{ppid}/environ"))
        .map(|env| {
            env.split(|b| *b == 0)
                .any(|v| v.starts_with(SLOT_VAR.as_bytes()))
        })
        .unwrap_or(false)
}

/// The host in `/proc/PID/cgroup` (v1 or v2): cluster.sh puts every
/// process of a host under `/flotilla-cluster/<prefix>/<host>/`.
fn host_of_cgroup(cgroup: &str, prefix: &str) -> Option<String> {
    let marker = format!("/flotilla-cluster/{prefix}/");
    cgroup.lines().find_map(|line| {
        let (_, after) = line.split_once(&marker)?;
        let host = after.split('/').next()?;
        (!host.is_empty()).then(|| host.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_process_is_placed_on_its_host_by_its_cgroup() {
        let v2 = "0::/flotilla-cluster/chaos/worker01/daemons\n";
        assert_eq!(host_of_cgroup(v2, "chaos").as_deref(), Some("worker01"));
        let container = "12:pids:/flotilla-cluster/chaos/manager2/docker/4f2a\n11:cpu:/\n";
        assert_eq!(
            host_of_cgroup(container, "chaos").as_deref(),
            Some("manager2")
        );
        assert_eq!(host_of_cgroup(v2, "other"), None);
        assert_eq!(host_of_cgroup("0::/user.slice\n", "chaos"), None);
    }

    #[test]
    fn services_are_read_as_states() {
        let list = json!([
            {"Spec": {"Name": "chaos-c0-1", "Mode": {"Replicated": {"Replicas": 3}},
              "TaskTemplate": {"ContainerSpec": {"Env": ["A=1", "CHAOS_GEN=4"]}}}},
            {"Spec": {"Name": "other", "Mode": {"Replicated": {"Replicas": 1}}}},
        ]);
        assert_eq!(
            services(&list),
            BTreeMap::from([(
                "chaos-c0-1".to_string(),
                State::Present {
                    replicas: 3,
                    generation: 4
                }
            )])
        );
    }
}
