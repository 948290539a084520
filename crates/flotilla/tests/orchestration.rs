//! Orchestration on the docker executor: drain and activate, constraints
//! nobody satisfies, global services, task history, containers removed
//! behind the daemon's back, healthchecks, and rolling image updates.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn docker_swarm(init_args: &[&str]) -> Daemon {
    let d = Daemon::start(Executor::Docker);
    d.init(init_args);
    d
}

/// Waits for the one running task of `service`, optionally not `other_than`.
#[track_caller]
fn running_task(d: &Daemon, service: &str, other_than: Option<&str>) -> Value {
    wait_for(
        Duration::from_secs(30),
        &format!("a new running task of {service}"),
        || {
            let tasks = d.tasks(service);
            tasks
                .iter()
                .find(|t| {
                    task_state(t) == "running"
                        && Some(task_id(t)) != other_than
                        && !task_container(t).is_empty()
                })
                .cloned()
                .ok_or_else(|| summary(&tasks))
        },
    )
}

#[test]
fn drain_shuts_tasks_down_and_active_brings_them_back() {
    let d = docker_swarm(&[]);
    d.flotilla(&with_forever(&[
        "service",
        "create",
        "-d",
        "--replicas",
        "2",
        "--name",
        "web",
        IMAGE,
    ]))
    .ok();
    wait_until(Duration::from_secs(30), "2 running tasks", || {
        d.tasks_in_state("web", "running").len() == 2
    });
    let first: Vec<String> = d
        .tasks("web")
        .iter()
        .map(|t| task_id(t).to_string())
        .collect();

    d.flotilla(&["node", "update", "--availability", "drain", "self"])
        .ok();
    wait_for(
        Duration::from_secs(30),
        "the first tasks shut down, none running",
        || {
            let tasks = d.tasks("web");
            let first_down = tasks
                .iter()
                .filter(|t| first.iter().any(|id| id == task_id(t)))
                .all(|t| task_state(t) == "shutdown");
            let running = tasks.iter().filter(|t| task_state(t) == "running").count();
            if first_down && running == 0 && d.containers(false).is_empty() {
                Ok(())
            } else {
                Err(summary(&tasks))
            }
        },
    );
    let nodes = d
        .flotilla(&["node", "ls", "--format", "{{.Availability}}"])
        .ok();
    assert_eq!(nodes.stdout.trim(), "Drain");

    // Through the docker CLI this time, with the node's ID.
    d.docker(&["node", "update", "--availability", "active", &d.node_id()])
        .ok();
    wait_until(Duration::from_secs(30), "2 running tasks again", || {
        d.tasks_in_state("web", "running").len() == 2 && d.containers(false).len() == 2
    });
}

#[test]
fn unsatisfiable_constraint_leaves_task_pending() {
    let d = docker_swarm(&[]);
    d.flotilla(&with_forever(&[
        "service",
        "create",
        "-d",
        "--name",
        "pinned",
        "--constraint",
        "node.labels.zone==mars",
        IMAGE,
    ]))
    .ok();
    let reason = "no suitable node (scheduling constraints not satisfied on 1 node)";
    wait_for(
        Duration::from_secs(20),
        "a pending task with the reason",
        || {
            let tasks = d.tasks("pinned");
            match tasks.as_slice() {
                [t] if task_state(t) == "pending" && task_err(t) == reason => Ok(()),
                _ => Err(format!("{tasks:?}")),
            }
        },
    );
    let ps = d.flotilla(&["service", "ps", "--no-trunc", "pinned"]).ok();
    let t = Table::parse(&ps.stdout);
    assert_eq!(t.rows.len(), 1, "{}", ps.stdout);
    assert!(
        t.cell(&t.rows[0], "CURRENT STATE").starts_with("Pending "),
        "{}",
        ps.stdout
    );
    assert!(
        t.cell(&t.rows[0], "ERROR").contains(reason),
        "{}",
        ps.stdout
    );
    assert!(d.containers(true).is_empty());

    // Once the node has the label, the same task is placed and runs.
    d.flotilla(&["node", "update", "--label-add", "zone=mars", "self"])
        .ok();
    wait_until(Duration::from_secs(30), "the task running", || {
        d.tasks_in_state("pinned", "running").len() == 1 && d.containers(false).len() == 1
    });
}

#[test]
fn global_service_runs_one_task_on_the_node() {
    let d = docker_swarm(&[]);
    d.flotilla(&with_forever(&[
        "service", "create", "-d", "--mode", "global", "--name", "agent", IMAGE,
    ]))
    .ok();
    wait_until(Duration::from_secs(30), "the global task running", || {
        d.tasks_in_state("agent", "running").len() == 1
    });
    assert_eq!(
        d.tasks("agent").len(),
        1,
        "exactly one task: {}",
        summary(&d.tasks("agent"))
    );
    assert_eq!(d.containers(true).len(), 1);
    let ls = d
        .flotilla(&["service", "ls", "--format", "{{.Mode}} {{.Replicas}}"])
        .ok();
    assert_eq!(ls.stdout.trim(), "global 1/1");
}

#[test]
fn task_history_limit_caps_tasks_per_slot() {
    let d = docker_swarm(&["--task-history-limit", "2"]);
    d.flotilla(&with_forever(&[
        "service",
        "create",
        "-d",
        "--name",
        "flaky",
        "--restart-delay",
        "100ms",
        IMAGE,
    ]))
    .ok();
    // Three kills make four tasks in slot 1; the reaper keeps two.
    let mut task = running_task(&d, "flaky", None);
    for _ in 0..3 {
        engine(&["kill", task_container(&task)]).ok();
        task = running_task(&d, "flaky", Some(task_id(&task)));
    }
    wait_for(Duration::from_secs(20), "2 tasks in the slot", || {
        let tasks = d.tasks("flaky");
        if tasks.len() == 2 {
            Ok(())
        } else {
            Err(summary(&tasks))
        }
    });
    let ps = d.flotilla(&["service", "ps", "flaky"]).ok();
    let t = Table::parse(&ps.stdout);
    assert_eq!(
        t.column("NAME"),
        ["flaky.1", "\\_ flaky.1"],
        "{}",
        ps.stdout
    );
    assert!(
        t.cell(&t.rows[0], "CURRENT STATE").starts_with("Running "),
        "{}",
        ps.stdout
    );
    // Containers of reaped tasks go too.
    wait_for(Duration::from_secs(20), "2 containers", || {
        let c = d.containers(true);
        if c.len() == 2 {
            Ok(())
        } else {
            Err(format!("{c:?}"))
        }
    });
}

#[test]
fn container_removed_behind_the_daemons_back_is_replaced() {
    let d = docker_swarm(&[]);
    d.flotilla(&with_forever(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--restart-delay",
        "100ms",
        IMAGE,
    ]))
    .ok();
    let old = running_task(&d, "web", None);
    engine(&["rm", "-f", task_container(&old)]).ok();
    let new = running_task(&d, "web", Some(task_id(&old)));
    assert_eq!(task_slot(&new), task_slot(&old), "same slot");
    assert_ne!(task_container(&new), task_container(&old));
    let old_now = d.get_json(&format!("/tasks/{}", task_id(&old)));
    assert_ne!(task_state(&old_now), "running", "{old_now}");
    assert_eq!(task_desired(&old_now), "shutdown", "{old_now}");
    let ps = d.flotilla(&["service", "ps", "web"]).ok();
    let t = Table::parse(&ps.stdout);
    assert_eq!(t.column("NAME"), ["web.1", "\\_ web.1"], "{}", ps.stdout);
    assert_eq!(d.containers(false).len(), 1);
}

#[test]
fn healthcheck_task_is_running_only_once_healthy() {
    let d = docker_swarm(&[]);
    d.flotilla(&with_forever(&[
        "service",
        "create",
        "-d",
        "--name",
        "checked",
        HEALTHY_IMAGE,
    ]))
    .ok();
    // The image checks every second, so the container is "starting" for
    // about a second before its first passing check.
    let task = running_task(&d, "checked", None);
    let inspect = engine(&["inspect", task_container(&task)]).ok();
    let container: Value = serde_json::from_str(&inspect.stdout).unwrap();
    let state = &container[0]["State"];
    assert_eq!(state["Health"]["Status"], "healthy", "{state}");
    // The first passing check (the log keeps the last five; this one is
    // read right after the task runs, so the first is still there).
    let first_pass = state["Health"]["Log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["ExitCode"] == 0)
        .map(|l| time(&l["End"]))
        .min()
        .expect("a passing check");
    let running_since = time(&task["Status"]["Timestamp"]);
    eprintln!(
        "started {}, first healthy {first_pass}, running {running_since}",
        state["StartedAt"]
    );
    assert!(
        running_since >= first_pass,
        "task Running at {running_since}, container first healthy at {first_pass} (started {})",
        state["StartedAt"]
    );
}

fn time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .to_utc()
}

#[test]
fn update_image_replaces_tasks() {
    let d = docker_swarm(&[]);
    d.flotilla(&with_forever(&[
        "service",
        "create",
        "-d",
        "--replicas",
        "2",
        "--name",
        "web",
        IMAGE,
    ]))
    .ok();
    wait_until(Duration::from_secs(30), "2 running tasks", || {
        d.tasks_in_state("web", "running").len() == 2
    });
    let old_version = d.service("web")["Version"]["Index"].as_u64().unwrap();

    d.flotilla(&["service", "update", "-d", "--image", HEALTHY_IMAGE, "web"])
        .ok();
    let image_of = |t: &Value| {
        t["Spec"]["ContainerSpec"]["Image"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    wait_for(
        Duration::from_secs(60),
        "2 running tasks of the new image, old ones shut down",
        || {
            let tasks = d.tasks("web");
            let new_running = tasks
                .iter()
                .filter(|t| task_state(t) == "running" && image_of(t) == HEALTHY_IMAGE)
                .count();
            let old_down = tasks
                .iter()
                .filter(|t| image_of(t) == IMAGE)
                .all(|t| task_state(t) == "shutdown");
            if new_running == 2 && old_down && tasks.len() == 4 {
                Ok(())
            } else {
                Err(summary(&tasks))
            }
        },
    );
    let images = engine(&[
        "ps",
        "--format",
        "{{.Image}}",
        "--filter",
        &format!("label=com.docker.swarm.node.id={}", d.node_id()),
    ])
    .ok();
    assert_eq!(
        images.lines(),
        [HEALTHY_IMAGE, HEALTHY_IMAGE],
        "running containers"
    );

    // Each slot: the new task first, then the old one as a history row.
    let ps = d.flotilla(&["service", "ps", "web"]).ok();
    let t = Table::parse(&ps.stdout);
    let rows: Vec<(&str, &str, &str)> = t
        .rows
        .iter()
        .map(|r| {
            (
                t.cell(r, "NAME"),
                t.cell(r, "IMAGE"),
                t.cell(r, "DESIRED STATE"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("web.1", HEALTHY_IMAGE, "Running"),
            ("\\_ web.1", IMAGE, "Shutdown"),
            ("web.2", HEALTHY_IMAGE, "Running"),
            ("\\_ web.2", IMAGE, "Shutdown"),
        ],
        "{}",
        ps.stdout
    );

    // An update from the version before is refused and changes nothing.
    let mut spec = d.service("web")["Spec"].clone();
    spec["TaskTemplate"]["ContainerSpec"]["Image"] = IMAGE.into();
    let r = d.post(
        &format!("/services/web/update?version={old_version}"),
        &spec.to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("update out of sequence"), "{}", r.body);
    assert_eq!(
        d.service("web")["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"],
        HEALTHY_IMAGE
    );
}

/// A task rejected before it ran (here: its image does not exist) is
/// restarted, but only after the restart delay, like any other restart; a
/// loop without the delay floods the store with tasks.
#[test]
fn rejected_tasks_wait_for_the_restart_delay() {
    let d = docker_swarm(&[]);
    d.flotilla(&[
        "service",
        "create",
        "-d",
        "--name",
        "noimg",
        "--restart-delay",
        "2s",
        "flotilla-test-no-such-image:latest",
        "true",
    ])
    .ok();
    // Rejections as the daemon timed them, by task id: the reaper deletes old
    // tasks as it goes, so they are collected while they are there.
    let mut rejected = std::collections::BTreeMap::new();
    wait_for(
        Duration::from_secs(30),
        "three rejected tasks (the first, restarted twice)",
        || {
            for t in d.tasks_in_state("noimg", "rejected") {
                let at = t["Status"]["Timestamp"].as_str().unwrap_or_default();
                let at = chrono::DateTime::parse_from_rfc3339(at)
                    .unwrap_or_else(|e| panic!("{at}: {e}"))
                    .to_utc();
                assert!(task_err(&t).contains("No such image"), "{}", task_err(&t));
                rejected.insert(task_id(&t).to_string(), at);
            }
            if rejected.len() >= 3 {
                Ok(())
            } else {
                Err(format!("{rejected:?}"))
            }
        },
    );
    // Each restart waited for the delay after the rejection before it.
    let mut times: Vec<_> = rejected.values().copied().collect();
    times.sort();
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= chrono::TimeDelta::seconds(2),
            "a rejected task restarted {gap} after the one before, under the 2 s delay: {times:?}"
        );
    }
}

/// `swarm leave --force` on the last manager ends the swarm here and, as
/// Docker does, removes the node's task containers; a new swarm starts
/// empty.
#[test]
fn swarm_leave_force_removes_the_nodes_containers() {
    let d = docker_swarm(&[]);
    d.flotilla(&with_forever(&[
        "service",
        "create",
        "-d",
        "--replicas",
        "2",
        "--name",
        "web",
        IMAGE,
    ]))
    .ok();
    wait_until(Duration::from_secs(30), "2 running containers", || {
        d.tasks_in_state("web", "running").len() == 2 && d.containers(false).len() == 2
    });
    let refused = d.flotilla(&["swarm", "leave"]).failed();
    assert!(refused.stderr.contains("Use `--force`"), "{refused:#?}");
    let left = d.flotilla(&["swarm", "leave", "--force"]).ok();
    assert_eq!(left.stdout.trim(), "Node left the swarm.");
    wait_for(
        Duration::from_secs(20),
        "no container of the node left",
        || {
            let c = d.containers(true);
            if c.is_empty() {
                Ok(())
            } else {
                Err(format!("{c:?}"))
            }
        },
    );
    assert_eq!(d.get_json("/info")["Swarm"]["LocalNodeState"], "inactive");
    assert_eq!(d.get("/services").status, 503);
    d.flotilla(&[&["swarm", "init"], LISTEN].concat()).ok();
    assert!(d.get_json("/services").as_array().unwrap().is_empty());
}
