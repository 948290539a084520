//! A rolling update survives losing the leader halfway: the new leader
//! picks the update up from the store and finishes it, each slot updated
//! exactly once, none skipped. Three managers and two workers in network
//! namespaces (process executor: the image is recorded, so a new tag is a
//! new spec without building anything).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::{wait_timed, Cluster};

fn update_state(c: &Cluster, host: &str) -> String {
    c.flotilla(
        host,
        &[
            "service",
            "inspect",
            "--format",
            "{{.UpdateStatus.State}}",
            "web",
        ],
    )
    .1
    .trim()
    .to_string()
}

/// Tasks per slot: (image, desired state) of each, from `service ps`.
fn slots(c: &Cluster, host: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for t in c.tasks(host, "web") {
        let name = t["Name"]
            .as_str()
            .unwrap_or_default()
            .trim()
            .trim_start_matches("\\_ ")
            .trim()
            .to_string();
        let image = t["Image"].as_str().unwrap_or_default().to_string();
        let desired = t["DesiredState"].as_str().unwrap_or_default().to_string();
        out.entry(name).or_default().push((image, desired));
    }
    out
}

#[test]
fn slow_cluster_update_finishes_exactly_once_after_the_leader_dies() {
    let c = Cluster::up("ftupd", "10.213.40", 3, 2, "process");
    let (ok, text) = c.flotilla(
        "manager1",
        &[
            "service",
            "create",
            "-d",
            "--replicas",
            "4",
            "--name",
            "web",
            "--constraint",
            "node.role==worker",
            "--update-parallelism",
            "1",
            "--update-delay",
            "2s",
            "--update-monitor",
            "1s",
            "--stop-grace-period",
            "1s",
            "flotilla-busybox:v1",
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 0.2; done",
        ],
    );
    assert!(ok, "{text}");
    wait_timed(Duration::from_secs(60), "4 tasks running", || {
        slots(&c, "manager1")
            .values()
            .filter(|ts| ts.iter().any(|(_, d)| d == "Running"))
            .count()
            == 4
    });

    let (ok, text) = c.flotilla(
        "manager1",
        &[
            "service",
            "update",
            "-d",
            "--image",
            "flotilla-busybox:v2",
            "web",
        ],
    );
    assert!(ok, "{text}");
    // Kill the leader once the update is under way: one slot done, others not.
    wait_timed(Duration::from_secs(60), "the first slot updated", || {
        let s = slots(&c, "manager1");
        let done = s
            .values()
            .filter(|ts| {
                ts.iter()
                    .any(|(i, d)| i == "flotilla-busybox:v2" && d == "Running")
            })
            .count();
        (1..4).contains(&done)
    });
    assert_eq!(update_state(&c, "manager1"), "updating");
    c.host_op("kill", "manager1");

    wait_timed(
        Duration::from_secs(120),
        "the update completed under the new leader",
        || update_state(&c, "manager2") == "completed",
    );
    let s = slots(&c, "manager2");
    assert_eq!(s.len(), 4, "{s:?}");
    for (slot, tasks) in &s {
        let new: Vec<_> = tasks
            .iter()
            .filter(|(i, _)| i == "flotilla-busybox:v2")
            .collect();
        assert_eq!(
            new.len(),
            1,
            "slot {slot} updated {} times: {tasks:?}",
            new.len()
        );
        assert_eq!(new[0].1, "Running", "slot {slot}: {tasks:?}");
        let old_running = tasks
            .iter()
            .filter(|(i, d)| i == "flotilla-busybox:v1" && d == "Running")
            .count();
        assert_eq!(
            old_running, 0,
            "slot {slot} still wants its old task: {tasks:?}"
        );
    }
}
