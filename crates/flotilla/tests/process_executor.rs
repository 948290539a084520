//! The process executor (`--executor process`): a task's command runs as a
//! host process, its output feeds `service logs`, and the restart policy
//! applies to how the process ends.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn process_swarm() -> Daemon {
    let d = Daemon::start(Executor::Process);
    d.init(&[]);
    d
}

/// Polls `f` for `period` and fails as soon as it is false: for checking
/// that something does NOT happen (a task that must not be replaced).
#[track_caller]
fn assert_stays(period: Duration, what: &str, mut f: impl FnMut() -> Result<(), String>) {
    let end = Instant::now() + period;
    while Instant::now() < end {
        if let Err(e) = f() {
            panic!("no longer {what}: {e}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn task_runs_as_host_process_and_logs() {
    let d = process_swarm();
    d.flotilla(&[
        "service",
        "create",
        "-d",
        "--name",
        "hello",
        IMAGE,
        "sh",
        "-c",
        "echo hello from $$; exec sleep 30",
    ])
    .ok();
    let task = wait_for(Duration::from_secs(20), "a running task", || {
        let running = d.tasks_in_state("hello", "running");
        running
            .first()
            .cloned()
            .ok_or_else(|| summary(&d.tasks("hello")))
    });
    // The log names the shell's pid; that pid is a live `sleep` on this
    // host (the shell exec'd it), not a container.
    let logs = wait_for(Duration::from_secs(10), "hello in service logs", || {
        let out = d.flotilla(&["service", "logs", "hello"]).ok();
        if out.stdout.contains("hello from ") {
            Ok(out.stdout)
        } else {
            Err(out.stdout)
        }
    });
    let line = logs.lines().find(|l| l.contains("hello from ")).unwrap();
    let prefix = format!("hello.1.{}@{HOSTNAME}", &task_id(&task)[..12]);
    assert!(
        line.starts_with(&prefix),
        "{line:?} should start with {prefix:?}"
    );
    let pid: u32 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let cmdline =
        std::fs::read(format!("/proc/{pid}/cmdline")).expect("the task's process is alive");
    assert_eq!(
        String::from_utf8_lossy(&cmdline).replace('\0', " ").trim(),
        "sleep 30"
    );
    assert!(
        d.containers(true).is_empty(),
        "no container for a process task"
    );
    // A root daemon runs a task that names no user as nobody, not as root.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .unwrap();
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(uid, "65534", "the task runs as nobody: {status}");
    }

    // Removing the service ends the process.
    d.flotilla(&["service", "rm", "hello"]).ok();
    wait_until(Duration::from_secs(20), "the process to end", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });
}

#[test]
fn task_without_command_is_rejected() {
    let d = process_swarm();
    d.flotilla(&["service", "create", "-d", "--name", "nocmd", IMAGE])
        .ok();
    wait_until(Duration::from_secs(20), "a rejected task", || {
        !d.tasks_in_state("nocmd", "rejected").is_empty()
    });
    let ps = d.flotilla(&["service", "ps", "--no-trunc", "nocmd"]).ok();
    let t = Table::parse(&ps.stdout);
    let row = t
        .rows
        .iter()
        .find(|r| t.cell(r, "CURRENT STATE").starts_with("Rejected "))
        .unwrap_or_else(|| panic!("no Rejected row:\n{}", ps.stdout));
    let err = t.cell(row, "ERROR");
    assert!(err.contains("task has no command"), "ERROR column {err:?}");
}

#[test]
fn on_failure_restarts_stop_after_max_attempts() {
    let d = process_swarm();
    d.flotilla(&[
        "service",
        "create",
        "-d",
        "--name",
        "failing",
        "--restart-condition",
        "on-failure",
        "--restart-max-attempts",
        "2",
        "--restart-delay",
        "100ms",
        IMAGE,
        "sh",
        "-c",
        "exit 1",
    ])
    .ok();
    // The first run and two restarts.
    let three_failed = || {
        let tasks = d.tasks("failing");
        let failed = tasks.iter().filter(|t| task_state(t) == "failed").count();
        if tasks.len() == 3 && failed == 3 {
            Ok(())
        } else {
            Err(summary(&tasks))
        }
    };
    wait_for(Duration::from_secs(30), "3 failed tasks", three_failed);
    // Ten restart delays later there is still no fourth.
    assert_stays(Duration::from_secs(1), "3 failed tasks", three_failed);
    for t in d.tasks("failing") {
        assert_eq!(task_slot(&t), 1);
        assert!(task_err(&t).contains("exit (1)"), "{}", task_err(&t));
    }
    let ls = d
        .flotilla(&["service", "ls", "--format", "{{.Replicas}}"])
        .ok();
    assert_eq!(ls.stdout.trim(), "0/1");
}

#[test]
fn restart_condition_none_completes_without_replacement() {
    let d = process_swarm();
    d.flotilla(&[
        "service",
        "create",
        "-d",
        "--name",
        "once",
        "--restart-condition",
        "none",
        "--restart-delay",
        "100ms",
        IMAGE,
        "true",
    ])
    .ok();
    let one_complete = || {
        let tasks = d.tasks("once");
        if tasks.len() == 1 && task_state(&tasks[0]) == "complete" {
            Ok(())
        } else {
            Err(summary(&tasks))
        }
    };
    wait_for(Duration::from_secs(20), "one complete task", one_complete);
    // With a 100 ms restart delay, any replacement would show well within
    // this window.
    assert_stays(
        Duration::from_millis(1500),
        "one complete task",
        one_complete,
    );
    let ps = d.flotilla(&["service", "ps", "once"]).ok();
    let t = Table::parse(&ps.stdout);
    assert_eq!(t.rows.len(), 1, "{}", ps.stdout);
    assert!(
        t.cell(&t.rows[0], "CURRENT STATE").starts_with("Complete "),
        "{}",
        ps.stdout
    );
}

/// Host processes outlive a `kill -9` of the daemon, and the restarted
/// daemon adopts them: same tasks, same processes, none started twice.
#[test]
fn processes_are_adopted_after_kill9() {
    let mut d = process_swarm();
    d.flotilla(&[
        "service",
        "create",
        "-d",
        "--replicas",
        "2",
        "--name",
        "bg",
        IMAGE,
        "sh",
        "-c",
        "echo pid $$; exec sleep 60",
    ])
    .ok();
    wait_until(Duration::from_secs(20), "2 running tasks", || {
        running_ids(&d).len() == 2
    });
    let tasks = running_ids(&d);
    let pids = wait_for(Duration::from_secs(10), "both pids in the logs", || {
        let out = d.flotilla(&["service", "logs", "bg"]).ok();
        let mut pids: Vec<u32> = out
            .stdout
            .lines()
            .filter_map(|l| l.rsplit_once("pid ")?.1.trim().parse().ok())
            .collect();
        pids.sort();
        if pids.len() == 2 {
            Ok(pids)
        } else {
            Err(out.stdout)
        }
    });

    d.kill9();
    for pid in &pids {
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} outlived the daemon"
        );
    }
    d.restart();
    wait_for(Duration::from_secs(30), "the node Ready again", || {
        let out = d.flotilla(&["node", "ls", "--format", "{{.Status}}"]).ok();
        if out.stdout.trim() == "Ready" {
            Ok(())
        } else {
            Err(out.stdout)
        }
    });
    assert_stays(
        Duration::from_secs(3),
        "the same 2 tasks and processes",
        || {
            let now = running_ids(&d);
            let out = d.flotilla(&["service", "logs", "bg"]).ok();
            let starts = out.stdout.lines().filter(|l| l.contains("pid ")).count();
            if now == tasks && starts == 2 {
                Ok(())
            } else {
                Err(format!(
                    "tasks {now:?} (were {tasks:?}), {starts} starts in the logs"
                ))
            }
        },
    );
    d.flotilla(&["service", "rm", "bg"]).ok();
}

/// Ids of the running tasks of `bg`, sorted.
fn running_ids(d: &Daemon) -> Vec<String> {
    let mut ids: Vec<String> = d
        .tasks_in_state("bg", "running")
        .iter()
        .map(|t| task_id(t).to_string())
        .collect();
    ids.sort();
    ids
}
