//! Rolling updates and rollback on the docker executor: the seed's
//! two-at-a-time update with a delay (seen in the task timestamps), an
//! update whose containers exit at once (paused, or rolled back), a manual
//! rollback through the docker CLI, and start-first keeping every replica
//! up. A "new image" is a fresh tag of the test image, removed afterwards.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn docker_swarm() -> Daemon {
    let d = Daemon::start(Executor::Docker);
    d.init(&[]);
    d
}

/// A new tag of the test image, untagged when dropped.
struct Tag(String);

impl Tag {
    fn new(what: &str) -> Tag {
        let name = format!("flotilla-busybox:upd-{what}-{}", std::process::id());
        engine(&["tag", IMAGE, &name]).ok();
        Tag(name)
    }
}

impl Drop for Tag {
    fn drop(&mut self) {
        let _ = engine(&["rmi", &self.0]);
    }
}

fn image_of(t: &Value) -> &str {
    t["Spec"]["ContainerSpec"]["Image"]
        .as_str()
        .unwrap_or_default()
}

fn time_of(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .to_utc()
}

fn update_status(d: &Daemon, service: &str) -> Value {
    d.service(service)["UpdateStatus"].clone()
}

/// Waits until `service`'s UpdateStatus.State is `state`.
#[track_caller]
fn wait_for_state(d: &Daemon, service: &str, state: &str, timeout: Duration) -> Value {
    wait_for(timeout, &format!("update state {state}"), || {
        let st = update_status(d, service);
        if st["State"] == state {
            Ok(st)
        } else {
            Err(format!("{st} / {}", summary(&d.tasks(service))))
        }
    })
}

#[test]
fn seed_update_two_at_a_time_with_a_delay() {
    let d = docker_swarm();
    let new = Tag::new("seed");
    d.flotilla(&with_forever(&[
        "service",
        "create",
        "-d",
        "--replicas",
        "4",
        "--name",
        "redis",
        "--update-delay",
        "3s",
        "--update-parallelism",
        "2",
        "--rollback-parallelism",
        "0",
        IMAGE,
    ]))
    .ok();
    wait_until(Duration::from_secs(60), "4 running tasks", || {
        d.tasks_in_state("redis", "running").len() == 4
    });

    // Waits with docker's progress display and ends converged.
    let out = d
        .flotilla(&["service", "update", "--image", &new.0, "redis"])
        .ok();
    assert!(out.stdout.starts_with("redis\n"), "{}", out.stdout);
    assert!(
        out.stdout.contains("overall progress: 4 out of 4 tasks"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("verify: Service redis converged"),
        "{}",
        out.stdout
    );

    // As with SwarmKit, the update itself waits the last delay, then
    // watches one monitor period, so it completes a little after the CLI
    // saw every task converged.
    let st = wait_for_state(&d, "redis", "completed", Duration::from_secs(30));
    assert_eq!(st["Message"], "update completed");
    assert!(st["CompletedAt"].is_string(), "{st}");

    // Two tasks were created together; each of the other two once one of
    // the first two ran and the delay (3 s) had passed.
    let tasks = d.tasks("redis");
    let mut created: Vec<_> = tasks
        .iter()
        .filter(|t| image_of(t) == new.0)
        .map(|t| time_of(t["CreatedAt"].as_str().unwrap()))
        .collect();
    created.sort();
    assert_eq!(created.len(), 4, "{}", summary(&tasks));
    assert_eq!(created[0], created[1], "the first two together");
    for later in &created[2..] {
        let gap = *later - created[0];
        assert!(
            gap >= chrono::Duration::seconds(3),
            "created {gap} after the first"
        );
    }
    assert_eq!(
        tasks
            .iter()
            .filter(|t| task_state(t) == "running" && image_of(t) == new.0)
            .count(),
        4
    );

    let pretty = d
        .flotilla(&["service", "inspect", "--pretty", "redis"])
        .ok();
    assert!(
        pretty
            .stdout
            .contains("UpdateStatus:\n State:\t\tcompleted\n Started:\t"),
        "{}",
        pretty.stdout
    );
    assert!(
        pretty.stdout.contains("\n Message:\tupdate completed\n"),
        "{}",
        pretty.stdout
    );

    // `service rollback` through the docker CLI: paced by the rollback
    // config (all at once, set at create), reported as Docker reports it.
    let out = d.docker(&["service", "rollback", "redis"]).ok();
    assert!(out.stdout.contains("rolling back update"), "{}", out.stdout);
    let st = wait_for_state(&d, "redis", "rollback_completed", Duration::from_secs(60));
    assert_eq!(st["Message"], "rollback completed");
    wait_until(
        Duration::from_secs(30),
        "4 running on the old image",
        || {
            d.tasks("redis")
                .iter()
                .filter(|t| task_state(t) == "running" && image_of(t) == IMAGE)
                .count()
                == 4
        },
    );
}

#[test]
fn an_update_whose_tasks_exit_at_once_pauses() {
    let d = docker_swarm();
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
    wait_until(Duration::from_secs(60), "3 running tasks", || {
        d.tasks_in_state("web", "running").len() == 3
    });
    let out = d
        .flotilla(&["service", "update", "--args", "false", "web"])
        .failed();
    assert!(
        out.stderr.contains(
            "service update paused: update paused due to failure or early termination of task "
        ),
        "{}",
        out.stderr
    );
    let st = update_status(&d, "web");
    assert_eq!(st["State"], "paused", "{st}");
    // The first slot tried the new spec. A task that exits at once may be
    // seen running first, and the updater then moves on to the next slot
    // before the failure pauses it (SwarmKit's monitor window works the
    // same way); at least one slot still runs the old spec.
    let old_running = d
        .tasks("web")
        .iter()
        .filter(|t| task_state(t) == "running" && t["Spec"]["ContainerSpec"]["Args"][0] != "false")
        .count();
    assert!(
        (1..=2).contains(&old_running),
        "{old_running} old tasks running: {}",
        summary(&d.tasks("web"))
    );
    let pretty = d.flotilla(&["service", "inspect", "--pretty", "web"]).ok();
    assert!(
        pretty
            .stdout
            .contains("UpdateStatus:\n State:\t\tpaused\n Started:\t"),
        "{}",
        pretty.stdout
    );
}

#[test]
fn failure_action_rollback_brings_every_task_back_to_the_old_spec() {
    let d = docker_swarm();
    d.flotilla(&with_forever(&[
        "service",
        "create",
        "-d",
        "--replicas",
        "3",
        "--update-failure-action",
        "rollback",
        "--rollback-parallelism",
        "0",
        "--name",
        "web",
        IMAGE,
    ]))
    .ok();
    wait_until(Duration::from_secs(60), "3 running tasks", || {
        d.tasks_in_state("web", "running").len() == 3
    });
    let out = d.flotilla(&["service", "update", "--args", "false", "web"]);
    assert!(
        out.stdout
            .contains("rollback: update rolled back due to failure or early termination of task "),
        "{}",
        out.stdout
    );
    let st = wait_for_state(&d, "web", "rollback_completed", Duration::from_secs(60));
    assert_eq!(st["Message"], "rollback completed");
    let spec = d.service("web")["Spec"].clone();
    assert_eq!(spec["TaskTemplate"]["ContainerSpec"]["Args"][0], FOREVER[0]);
    wait_for(
        Duration::from_secs(30),
        "3 running tasks of the old spec",
        || {
            let tasks = d.tasks("web");
            let ok = tasks
                .iter()
                .filter(|t| task_state(t) == "running" && task_desired(t) == "running")
                .filter(|t| t["Spec"]["ContainerSpec"]["Args"][0] == FOREVER[0])
                .count();
            if ok == 3 {
                Ok(())
            } else {
                Err(summary(&tasks))
            }
        },
    );
}

#[test]
fn start_first_never_has_fewer_tasks_running_than_wanted() {
    let d = docker_swarm();
    let new = Tag::new("startfirst");
    d.flotilla(&with_forever(&[
        "service",
        "create",
        "-d",
        "--replicas",
        "2",
        "--update-order",
        "start-first",
        "--update-monitor",
        "1s",
        "--name",
        "web",
        IMAGE,
    ]))
    .ok();
    wait_until(Duration::from_secs(60), "2 running tasks", || {
        d.tasks_in_state("web", "running").len() == 2
    });
    d.flotilla(&["service", "update", "-d", "--image", &new.0, "web"])
        .ok();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut fewest = usize::MAX;
    let mut most = 0;
    loop {
        let tasks = d.tasks("web");
        let running = tasks.iter().filter(|t| task_state(t) == "running").count();
        fewest = fewest.min(running);
        most = most.max(running);
        assert!(running >= 2, "only {running} running: {}", summary(&tasks));
        let done = update_status(&d, "web")["State"] == "completed";
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "update did not complete: {}",
            summary(&tasks)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(most, 3, "the new task ran beside the old one");
    let tasks = d.tasks("web");
    let new_running = tasks
        .iter()
        .filter(|t| task_state(t) == "running" && image_of(t) == new.0)
        .count();
    assert_eq!(new_running, 2, "{}", summary(&tasks));
}
