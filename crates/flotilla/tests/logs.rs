//! `service logs` across the cluster with the real docker CLI: tasks on
//! every node read through the manager (the request goes to each node
//! through the leader's log broker), followed as they print, and a node
//! that is down named in one line instead of a hang.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{wait_timed as wait_until, Cluster};

const PREFIX: &str = "ftlog";

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .arg("-H")
        .arg(format!(
            "unix:///run/flotilla-cluster/{PREFIX}/manager/flotilla.sock"
        ))
        .args(args)
        .output()
        .expect("run docker")
}

/// The hosts that printed in `text` (lines read `task@host | line N on host`).
fn hosts_in(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split_once('@'))
        .filter_map(|(_, rest)| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn slow_service_logs_come_from_every_node_through_the_manager() {
    let c = Cluster::up(PREFIX, "10.213.49", 1, 2, "docker");
    let out = docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "talk",
        "--mode",
        "global",
        "flotilla-busybox",
        "sh",
        "-c",
        "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.3; done",
    ]);
    assert!(out.status.success(), "{out:?}");
    wait_until(Duration::from_secs(60), "talk on three nodes", || {
        c.running("manager", "talk").len() == 3
    });
    let all: BTreeSet<String> = ["manager", "worker01", "worker02"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut seen = BTreeSet::new();
    wait_until(Duration::from_secs(20), "a line from every node", || {
        let out = docker(&["service", "logs", "--tail", "2", "talk"]);
        seen = hosts_in(&String::from_utf8_lossy(&out.stdout));
        seen == all
    });

    // Followed: new lines keep coming from the workers' tasks.
    let mut follow = Command::new("docker")
        .arg("-H")
        .arg(format!(
            "unix:///run/flotilla-cluster/{PREFIX}/manager/flotilla.sock"
        ))
        .args(["service", "logs", "-f", "--tail", "0", "talk"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker service logs -f");
    std::thread::sleep(Duration::from_secs(3));
    let _ = follow.kill();
    let followed = follow.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&followed.stdout);
    assert_eq!(hosts_in(&text), all, "{text}");
    assert!(text.lines().count() >= 9, "{text}");

    // A worker down: its task's logs are a one-line warning, at once.
    c.host_op("kill", "worker02");
    let started = Instant::now();
    let out = docker(&["service", "logs", "--tail", "1", "talk"]);
    // The warning is the task's stderr, where the docker CLI prints it.
    let text = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let warning: Vec<&str> = errors
        .lines()
        .filter(|l| l.contains("flotilla: no logs from task"))
        .collect();
    assert_eq!(warning.len(), 1, "{text}\n{errors}");
    assert!(warning[0].contains("on node worker02"), "{errors}");
    assert!(
        text.lines()
            .any(|l| l.contains("@worker01") && l.contains("line ")),
        "{text}"
    );
}
