//! `kill -9` of the daemon: acknowledged writes survive it, and a scale
//! interrupted by it finishes after a restart without duplicate or orphaned
//! containers.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Fails if any slot has two running tasks at once.
#[track_caller]
fn assert_one_running_per_slot(tasks: &[Value]) {
    let mut per_slot: HashMap<u64, usize> = HashMap::new();
    for t in tasks.iter().filter(|t| task_state(t) == "running") {
        *per_slot.entry(task_slot(t)).or_default() += 1;
    }
    let doubled: Vec<_> = per_slot.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "slots with two running tasks: {doubled:?}"
    );
}

#[test]
fn slow_kill9_during_scale_down_from_100_to_20() {
    let mut d = Daemon::start(Executor::Docker);
    d.init(&[]);
    // Tasks that ignore SIGTERM with a 5 s grace period: every stop the agent
    // starts takes 5 s, so the kill below lands once the scale-down is
    // decided but before the node has stopped the containers (checked after
    // the kill).
    d.flotilla(&[
        "service",
        "create",
        "-d",
        "--replicas",
        "100",
        "--name",
        "web",
        "--stop-grace-period",
        "5s",
        IMAGE,
        "sh",
        "-c",
        "trap '' TERM; while :; do sleep 0.2; done",
    ])
    .ok();
    wait_until(Duration::from_secs(240), "100 running tasks", || {
        d.tasks_in_state("web", "running").len() == 100
    });

    let scaled = Instant::now();
    d.flotilla(&["service", "scale", "-d", "web=20"]).ok();
    // The manager's half: 80 tasks told to stop, acknowledged.
    wait_for(Duration::from_secs(10), "80 tasks told to stop", || {
        let tasks = d.tasks("web");
        let mut desired: HashMap<&str, usize> = HashMap::new();
        for t in &tasks {
            *desired.entry(task_desired(t)).or_default() += 1;
        }
        if desired.get("running") == Some(&20) && tasks.len() == 100 {
            Ok(())
        } else {
            Err(format!("desired states {desired:?}"))
        }
    });
    d.kill9();
    let left = d.containers(false).len();
    eprintln!(
        "killed {:?} after the scale; {left} containers running",
        scaled.elapsed()
    );
    // The node's half was not done: more than 20 containers still ran when
    // the daemon died (each stop takes the 5 s grace period).
    assert!(
        left > 20,
        "the kill did not land during the scale-down: {left} containers running \
         {:?} after the scale",
        scaled.elapsed()
    );

    d.restart();
    // Task states seen before and after the restart only move forward.
    let mut states = StateWatch::default();
    wait_for(
        Duration::from_secs(120),
        "exactly 20 containers and 20/20",
        || {
            let tasks = d.tasks("web");
            assert_one_running_per_slot(&tasks);
            states.observe(&tasks);
            let all = d.containers(true).len();
            let running = d.containers(false).len();
            let ls = d
                .flotilla(&["service", "ls", "--format", "{{.Replicas}}"])
                .ok();
            let replicas = ls.stdout.trim().to_string();
            if all == 20 && running == 20 && replicas == "20/20" {
                Ok(())
            } else {
                Err(format!(
                    "{running} running, {all} in all, service ls {replicas}"
                ))
            }
        },
    );
    // `service ps` agrees: 20 running rows, one per slot.
    let ps = d
        .flotilla(&["service", "ps", "--filter", "desired-state=running", "web"])
        .ok();
    let t = Table::parse(&ps.stdout);
    let mut names = t.column("NAME");
    assert_eq!(names.len(), 20, "{}", ps.stdout);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 20, "a slot shows twice: {}", ps.stdout);
    assert!(
        t.column("CURRENT STATE")
            .iter()
            .all(|s| s.starts_with("Running ")),
        "{}",
        ps.stdout
    );
}

#[test]
fn acknowledged_writes_survive_kill9() {
    let mut d = Daemon::start(Executor::Docker);
    d.init(&[]);
    let worker = d
        .flotilla(&["swarm", "join-token", "-q", "worker"])
        .ok()
        .stdout;
    let manager = d
        .flotilla(&["swarm", "join-token", "-q", "manager"])
        .ok()
        .stdout;

    // Ten services, each with something of its own in its spec; the kill
    // follows the last acknowledgement at once.
    let mut ids = Vec::new();
    for i in 0..10 {
        let (name, env, label) = (format!("svc{i}"), format!("N={i}"), format!("idx={i}"));
        let replicas = (i % 2).to_string();
        let args = with_forever(&[
            "service",
            "create",
            "-d",
            "--name",
            &name,
            "--replicas",
            &replicas,
            "--env",
            &env,
            "--label",
            &label,
            IMAGE,
        ]);
        ids.push(d.flotilla(&args).ok().stdout.trim().to_string());
    }
    d.kill9();
    d.restart();

    for (i, id) in ids.iter().enumerate() {
        let svc = d.service(&format!("svc{i}"));
        assert_eq!(svc["ID"], id.as_str());
        let spec = &svc["Spec"];
        assert_eq!(
            spec["Mode"]["Replicated"]["Replicas"],
            (i % 2) as u64,
            "{spec}"
        );
        assert_eq!(spec["Labels"]["idx"], i.to_string(), "{spec}");
        let c = &spec["TaskTemplate"]["ContainerSpec"];
        assert_eq!(c["Env"], serde_json::json!([format!("N={i}")]), "{spec}");
        assert_eq!(c["Image"], IMAGE, "{spec}");
        assert_eq!(c["Args"][0], "sh", "{spec}");
    }
    let ls = d.flotilla(&["service", "ls", "-q"]).ok();
    assert_eq!(ls.lines().len(), 10, "{}", ls.stdout);

    let node = d.node_id();
    wait_for(Duration::from_secs(30), "the node Ready again", || {
        let out = d
            .flotilla(&[
                "node",
                "ls",
                "--format",
                "{{.ID}} {{.Status}} {{.ManagerStatus}}",
            ])
            .ok();
        if out.stdout.trim() == format!("{node} Ready Leader") {
            Ok(())
        } else {
            Err(out.stdout)
        }
    });
    assert_eq!(
        d.flotilla(&["swarm", "join-token", "-q", "worker"])
            .ok()
            .stdout,
        worker
    );
    assert_eq!(
        d.flotilla(&["swarm", "join-token", "-q", "manager"])
            .ok()
            .stdout,
        manager
    );

    // The five one-replica services run again, each on one container.
    wait_until(Duration::from_secs(60), "5 running containers", || {
        d.containers(false).len() == 5 && d.containers(true).len() == 5
    });
}

/// A daemon killed while its tasks run finds their containers again: the
/// same tasks keep the same containers, and none is started twice.
#[test]
fn running_containers_are_adopted_after_kill9() {
    let mut d = Daemon::start(Executor::Docker);
    d.init(&[]);
    d.flotilla(&with_forever(&[
        "service",
        "create",
        "-d",
        "--replicas",
        "3",
        "--name",
        "web",
        IMAGE,
    ]))
    .ok();
    wait_until(Duration::from_secs(30), "3 running tasks", || {
        d.tasks_in_state("web", "running").len() == 3
    });
    let before = running_task_containers(&d);
    let containers = d.containers(true);

    d.restart();
    // Long enough for the agent to reconcile and the node to be Ready again.
    wait_for(Duration::from_secs(30), "the node Ready again", || {
        let out = d.flotilla(&["node", "ls", "--format", "{{.Status}}"]).ok();
        if out.stdout.trim() == "Ready" {
            Ok(())
        } else {
            Err(out.stdout)
        }
    });
    let settle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle {
        assert_eq!(
            running_task_containers(&d),
            before,
            "tasks and containers after restart"
        );
        assert_eq!(
            d.containers(true),
            containers,
            "no container started or removed"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// (task id, container id) of every running task, sorted.
fn running_task_containers(d: &Daemon) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = d
        .tasks_in_state("web", "running")
        .iter()
        .map(|t| (task_id(t).to_string(), task_container(t).to_string()))
        .collect();
    v.sort();
    v
}
