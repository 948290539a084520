//! `flotilla exec` across the cluster: a command run in a task on a worker
//! through the manager's API (the request goes down the worker's assignment
//! stream, the worker calls the manager back over the cluster's mutual TLS),
//! with its output kept apart, its exit code, env, working dir, user, piped
//! stdin and a terminal; the errors; the exec events; a client that goes
//! away taking the command with it; and a worker's own API, which relays to
//! the manager only while the swarm allows workers to exec. One cluster for
//! every check.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::cluster::{wait_timed as wait_until, Cluster};
use common::FLOTILLA;

const PREFIX: &str = "fexec";

fn socket() -> String {
    format!("unix:///run/flotilla-cluster/{PREFIX}/manager/flotilla.sock")
}

/// `flotilla exec ARGS` against the manager, with `stdin` piped in.
fn exec(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(FLOTILLA)
        .args(["-H", &socket(), "exec"])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flotilla exec");
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("flotilla exec output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A shell line run under `script`, so the CLI has a terminal.
fn in_terminal(line: &str) -> String {
    let out = Command::new("timeout")
        .args(["30", "script", "-qec", line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script");
    text(&out.stdout)
}

#[test]
fn exec_runs_commands_in_tasks_on_other_nodes() {
    let started = Instant::now();
    let c = Cluster::up(PREFIX, "10.213.86", 1, 2, "docker");
    c.docker_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "box",
        "--replicas",
        "2",
        "--constraint",
        "node.role==worker",
        "--env",
        "GREETING=hello",
        "flotilla-busybox",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 0.2; done",
    ]);
    c.docker_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "idle",
        "--replicas",
        "0",
        "flotilla-busybox",
        "true",
    ]);
    wait_until(
        Duration::from_secs(60),
        "box running on the workers",
        || c.running("manager", "box").len() == 2,
    );

    // Events of the execs to come, as `docker events` shows them.
    let mut events = Command::new("docker")
        .args(["-H", &socket(), "events", "--filter", "type=container"])
        .args([
            "--format",
            r#"{{.Action}}|{{index .Actor.Attributes "exitCode"}}|{{index .Actor.Attributes "com.docker.swarm.service.name"}}"#,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker events");
    let (lines_tx, lines) = mpsc::channel();
    let events_out = events.stdout.take().expect("events stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(events_out).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(300));

    // Output kept apart, and the exit code.
    let t = Instant::now();
    let out = exec(&["box", "sh", "-c", "echo hi; echo oops >&2; exit 3"], None);
    let first = t.elapsed();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(text(&out.stdout), "hi\n");
    assert_eq!(text(&out.stderr), "oops\n");

    // -e, -w, -u, and the task's own environment.
    let out = exec(
        &[
            "-e",
            "A=1",
            "-w",
            "/tmp",
            "-u",
            "1234",
            "box",
            "sh",
            "-c",
            "echo $A $GREETING; pwd; id -u",
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "1 hello\n/tmp\n1234\n");

    // Piped stdin, to its end.
    let out = exec(&["-i", "box", "cat"], Some("data\nmore\n"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "data\nmore\n");

    // Much output, and much input, arrive whole.
    let t = Instant::now();
    let out = exec(&["box", "head", "-c", "20000000", "/dev/zero"], None);
    let took = t.elapsed();
    assert!(out.status.success(), "{:?}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 20_000_000);
    let input = "x".repeat(5_000_000);
    let out = exec(&["-i", "box", "wc", "-c"], Some(&input));
    assert_eq!(text(&out.stdout).trim(), "5000000", "{out:?}");
    eprintln!("20 MB of output in {took:?}");

    // SERVICE.SLOT and TASK pick the tasks they name.
    let tasks = c.running("manager", "box");
    assert_eq!(tasks.len(), 2);
    for slot in ["1", "2"] {
        let out = exec(&[&format!("box.{slot}"), "hostname"], None);
        assert!(out.status.success(), "{out:?}");
    }
    let task_id = tasks[0].0.clone();
    let out = exec(&[&task_id[..10], "true"], None);
    assert!(out.status.success(), "exec by task ID prefix: {out:?}");

    // A terminal: the task sees a pty, its size, and a resize.
    let fl = format!("{FLOTILLA} -H {}", socket());
    let seen = in_terminal(&format!("{fl} exec -t box tty"));
    assert!(seen.contains("/dev/pts/"), "tty printed {seen:?}");
    let seen = in_terminal(&format!(
        "stty rows 33 cols 101; {fl} exec -t box sh -c 'sleep 0.5; stty size'"
    ));
    assert!(seen.contains("33 101"), "initial size: {seen:?}");
    let seen = in_terminal(&format!(
        "stty rows 20 cols 70; {fl} exec -t box sh -c 'sleep 2; stty size' & sleep 1; \
         stty rows 44 cols 120; kill -WINCH $!; wait"
    ));
    assert!(seen.contains("44 120"), "after a resize: {seen:?}");

    // Errors: one line, non-zero.
    let out = exec(&["nosuch", "true"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Error response from daemon: no such service or task: nosuch\n"
    );
    let out = exec(&["idle", "true"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Error response from daemon: service idle has no running task\n"
    );
    let out = exec(&["box.7", "true"], None);
    assert_eq!(
        text(&out.stderr),
        "Error response from daemon: slot 7 of service box has no running task\n"
    );
    // What the worker's engine says of a command it cannot run, as `docker
    // exec` shows it (126 from this engine, 127 from newer ones).
    let out = exec(&["box", "nosuchcommand"], None);
    assert!(matches!(out.status.code(), Some(126 | 127)), "{out:?}");
    assert!(
        text(&out.stdout).contains("executable file not found"),
        "{out:?}"
    );

    // The API's own errors, as JSON.
    let out = Command::new("curl")
        .args(["-s", "-w", " %{http_code}", "--unix-socket"])
        .arg(format!(
            "/run/flotilla-cluster/{PREFIX}/manager/flotilla.sock"
        ))
        .args([
            "-X",
            "POST",
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: tcp",
        ])
        .args([
            "-d",
            r#"{"Cmd":["true"]}"#,
            "http://x/flotilla/v1/tasks/nosuch/exec",
        ])
        .output()
        .expect("curl");
    assert_eq!(
        text(&out.stdout),
        r#"{"message":"task nosuch not found"} 404"#
    );

    // From a worker's own API into a task on the other worker: refused
    // unless the swarm allows it; then relayed by the manager.
    let on_b = tasks
        .iter()
        .find(|(_, node)| node == "worker02")
        .map(|(id, _)| id.clone())
        .expect("a box task on worker02");
    let refused = "Error response from daemon: exec from a worker node is not allowed on this \
                   swarm (flotilla swarm update --allow-worker-exec)\n";
    let out = exec_on(PREFIX, "worker01", &[&on_b, "true"], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stderr), refused);
    c.ok("manager", &["swarm", "update", "--allow-worker-exec"]);
    let t = Instant::now();
    let out = exec_on(
        PREFIX,
        "worker01",
        &[&on_b, "sh", "-c", "echo relayed; echo oops >&2; exit 5"],
        None,
    );
    let relayed = t.elapsed();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert_eq!(text(&out.stdout), "relayed\n");
    assert_eq!(text(&out.stderr), "oops\n");
    let out = exec_on(
        PREFIX,
        "worker01",
        &["-i", &on_b, "cat"],
        Some("up\nand back\n"),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "up\nand back\n");
    let out = exec_on(PREFIX, "worker01", &["box.2", "true"], None);
    assert!(out.status.success(), "SERVICE.SLOT from a worker: {out:?}");
    let t = Instant::now();
    let out = exec_on(
        PREFIX,
        "worker01",
        &[&on_b, "head", "-c", "20000000", "/dev/zero"],
        None,
    );
    let relayed_20mb = t.elapsed();
    assert_eq!(out.stdout.len(), 20_000_000, "{:?}", text(&out.stderr));
    let on_worker =
        format!("{FLOTILLA} -H unix:///run/flotilla-cluster/{PREFIX}/worker01/flotilla.sock");
    let seen = in_terminal(&format!(
        "stty rows 20 cols 70; {on_worker} exec -t {on_b} sh -c 'tty; sleep 2; stty size' & \
         sleep 1; stty rows 44 cols 120; kill -WINCH $!; wait"
    ));
    assert!(seen.contains("/dev/pts/"), "{seen:?}");
    assert!(
        seen.contains("44 120"),
        "a resize through the relay: {seen:?}"
    );
    // Its client going away ends the command, through both hops.
    let marker = "sleep 4343";
    let mut client = Command::new(FLOTILLA)
        .args([
            "-H",
            &format!("unix:///run/flotilla-cluster/{PREFIX}/worker01/flotilla.sock"),
            "exec",
            &on_b,
            "sh",
            "-c",
            marker,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("flotilla exec");
    let running = || {
        Command::new("pgrep")
            .args(["-f", marker])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    wait_until(
        Duration::from_secs(15),
        "the relayed command running",
        running,
    );
    let _ = client.kill();
    let _ = client.wait();
    let relayed_gone = wait_until(Duration::from_secs(15), "the relayed command ended", || {
        !running()
    });
    // The manager's refusals reach the worker's client unchanged.
    let out = exec_on(PREFIX, "worker01", &["nosuch", "true"], None);
    assert_eq!(
        text(&out.stderr),
        "Error response from daemon: no such service or task: nosuch\n"
    );
    let out = exec_on(PREFIX, "worker01", &["idle", "true"], None);
    assert_eq!(
        text(&out.stderr),
        "Error response from daemon: service idle has no running task\n"
    );
    c.ok("manager", &["swarm", "update", "--allow-worker-exec=false"]);
    let out = exec_on(PREFIX, "worker01", &[&on_b, "true"], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stderr), refused);
    eprintln!(
        "first exec relayed from a worker: {relayed:?}; 20 MB relayed in {relayed_20mb:?}; \
         relayed command ended {relayed_gone:?} after its client"
    );

    // Every exec made its events: create, start, die with the exit code;
    // a relayed one on the manager that served it.
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !got.iter().any(|l: &String| l == "exec_die|5|box") {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => got.push(line),
            Err(_) => panic!("no exec_die with exit code 5 in {got:?}"),
        }
    }
    assert!(
        got.starts_with(&[
            "exec_create: sh -c echo hi; echo oops >&2; exit 3||box".to_string(),
            "exec_start: sh -c echo hi; echo oops >&2; exit 3||box".to_string(),
        ]),
        "{got:?}"
    );
    assert!(got.iter().any(|l| l == "exec_die|3|box"), "{got:?}");
    assert!(
        got.iter()
            .any(|l| l == "exec_start: sh -c echo relayed; echo oops >&2; exit 5||box"),
        "{got:?}"
    );
    let _ = events.kill();
    let _ = events.wait();

    // A client that goes away ends its command on the worker.
    let marker = "sleep 4242";
    let mut client = Command::new(FLOTILLA)
        .args(["-H", &socket(), "exec", "box", "sh", "-c", marker])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("flotilla exec");
    let running = || {
        Command::new("pgrep")
            .args(["-f", marker])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    wait_until(Duration::from_secs(15), "the command running", running);
    let _ = client.kill();
    let _ = client.wait();
    let gone = wait_until(Duration::from_secs(15), "the command ended", || !running());
    eprintln!(
        "first exec {first:?}; command ended {gone:?} after its client; whole test {:?}",
        started.elapsed()
    );
}

/// `flotilla exec ARGS` against `host` of cluster `prefix`.
fn exec_on(prefix: &str, host: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(FLOTILLA)
        .args([
            "-H",
            &format!("unix:///run/flotilla-cluster/{prefix}/{host}/flotilla.sock"),
            "exec",
        ])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("flotilla exec");
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("flotilla exec output")
}

/// The process executor: the command runs on the worker as a host process
/// with the task's environment, working dir and user, in its network
/// namespace, on a pty with `-t`; through any of three managers (two of
/// them followers); from the worker's own socket through a manager, and
/// another when that one dies; and a dead worker is a clear error, not a
/// hang.
#[test]
fn exec_runs_commands_beside_process_tasks() {
    const P: &str = "fexec2";
    let c = Cluster::up(P, "10.213.89", 3, 1, "process");
    c.ok(
        "manager1",
        &[
            "service",
            "create",
            "-d",
            "--name",
            "proc",
            "--constraint",
            "node.role==worker",
            "--env",
            "GREETING=hello",
            "--workdir",
            "/tmp",
            "flotilla-busybox",
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 0.2; done",
        ],
    );
    wait_until(Duration::from_secs(60), "proc running", || {
        c.running("manager1", "proc").len() == 1
    });
    let exec_at = |args: &[&str], stdin| exec_on(P, "manager1", args, stdin);
    for manager in ["manager1", "manager2", "manager3"] {
        let out = exec_on(
            P,
            manager,
            &["proc", "sh", "-c", "echo hi; echo oops >&2; exit 3"],
            None,
        );
        assert_eq!(out.status.code(), Some(3), "through {manager}: {out:?}");
        assert_eq!(text(&out.stdout), "hi\n");
        assert_eq!(text(&out.stderr), "oops\n");
    }
    // The task's env and dir, its user (nobody under a root daemon), -e, -w, -u.
    let out = exec_at(&["proc", "sh", "-c", "echo $GREETING; pwd; id -u"], None);
    assert_eq!(text(&out.stdout), "hello\n/tmp\n65534\n", "{out:?}");
    let out = exec_at(
        &[
            "-e",
            "GREETING=bye",
            "-w",
            "/",
            "-u",
            "0",
            "proc",
            "sh",
            "-c",
            "echo $GREETING; pwd; id -u",
        ],
        None,
    );
    assert_eq!(text(&out.stdout), "bye\n/\n0\n", "{out:?}");
    let out = exec_at(&["-i", "proc", "cat"], Some("piped\n"));
    assert_eq!(text(&out.stdout), "piped\n", "{out:?}");
    let out = exec_at(&["proc", "nosuchcommand"], None);
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    assert!(text(&out.stderr).contains("executable file not found"));
    let fl = format!("{FLOTILLA} -H unix:///run/flotilla-cluster/{P}/manager2/flotilla.sock");
    let seen = in_terminal(&format!(
        "stty rows 20 cols 70; {fl} exec -t proc sh -c 'tty; stty size; sleep 2; stty size' & \
         sleep 1; stty rows 44 cols 120; kill -WINCH $!; wait"
    ));
    assert!(seen.contains("/dev/pts/"), "{seen:?}");
    assert!(seen.contains("20 70"), "{seen:?}");
    assert!(seen.contains("44 120"), "{seen:?}");

    // From the worker's own socket once the swarm allows it, through a
    // manager; and through another once the first (the leader, at the
    // head of the worker's list) is gone.
    let out = exec_on(P, "worker01", &["proc", "true"], None);
    assert_eq!(out.status.code(), Some(1), "refused by default: {out:?}");
    c.ok("manager1", &["swarm", "update", "--allow-worker-exec"]);
    let out = exec_on(P, "worker01", &["proc", "sh", "-c", "echo $GREETING"], None);
    assert_eq!(text(&out.stdout), "hello\n", "{out:?}");
    c.host_op("kill", "manager1");
    let failover = wait_until(
        Duration::from_secs(30),
        "an exec from the worker through another manager",
        || {
            exec_on(P, "worker01", &["proc", "true"], None)
                .status
                .success()
        },
    );
    eprintln!("exec from the worker again {failover:?} after its manager died");

    // The worker dies: one line and a non-zero exit, at once.
    c.host_op("kill", "worker01");
    let t = Instant::now();
    let out = exec_on(P, "manager2", &["proc", "true"], None);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stderr).lines().count(), 1, "{out:?}");
    assert!(took < Duration::from_secs(12), "took {took:?}: {out:?}");
    eprintln!(
        "exec into a dead worker's task: {:?} in {took:?}",
        text(&out.stderr)
    );
}
