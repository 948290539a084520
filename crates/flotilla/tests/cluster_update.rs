//! A rolling update survives losing the leader halfway: the new leader
//! picks the update up from the store and finishes it, each slot updated
//! exactly once, none skipped. Three managers and two workers in network
//! namespaces (process executor: the image is recorded, so a new tag is a
//! new spec without building anything).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

const FLOTILLA: &str = env!("CARGO_BIN_EXE_flotilla");
const PREFIX: &str = "ftupd";

fn sh(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster.sh"))
        .args(args)
        .env("FLOTILLA_BIN", FLOTILLA)
        .env("FLOTILLA_CLUSTER_INIT_ARGS", "--dispatcher-heartbeat 2s")
        .env("FLOTILLA_CLUSTER_PREFIX", PREFIX)
        .output()
        .expect("run cluster.sh")
}

struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let _ = sh(&["down", "--prefix", PREFIX]);
    }
}

fn flotilla(host: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["flotilla", "--prefix", PREFIX, host];
    all.extend_from_slice(args);
    let out = sh(&all);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn update_state(host: &str) -> String {
    flotilla(
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
fn slots(host: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let (_, text) = flotilla(
        host,
        &[
            "service",
            "ps",
            "--no-trunc",
            "--format",
            "{{json .}}",
            "web",
        ],
    );
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for t in text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
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

#[track_caller]
fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn slow_cluster_update_finishes_exactly_once_after_the_leader_dies() {
    let _ = sh(&["down", "--prefix", PREFIX]);
    let up = sh(&[
        "up",
        "--prefix",
        PREFIX,
        "--subnet",
        "10.213.40",
        "--managers",
        "3",
        "--workers",
        "2",
        "--executor",
        "process",
    ]);
    let _down = Down;
    assert!(
        up.status.success(),
        "cluster up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let (ok, text) = flotilla(
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
    wait_until(Duration::from_secs(60), "4 tasks running", || {
        slots("manager1")
            .values()
            .filter(|ts| ts.iter().any(|(_, d)| d == "Running"))
            .count()
            == 4
    });

    let (ok, text) = flotilla(
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
    wait_until(Duration::from_secs(60), "the first slot updated", || {
        let s = slots("manager1");
        let done = s
            .values()
            .filter(|ts| {
                ts.iter()
                    .any(|(i, d)| i == "flotilla-busybox:v2" && d == "Running")
            })
            .count();
        (1..4).contains(&done)
    });
    assert_eq!(update_state("manager1"), "updating");
    let kill = sh(&["kill", "--prefix", PREFIX, "manager1"]);
    assert!(kill.status.success());

    wait_until(
        Duration::from_secs(120),
        "the update completed under the new leader",
        || update_state("manager2") == "completed",
    );
    let s = slots("manager2");
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
