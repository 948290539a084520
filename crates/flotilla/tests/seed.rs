//! The seed document's single-node transcript, once through `flotilla` and
//! once through the real docker CLI, and 100 replicas converging on the
//! docker executor.

mod common;

use std::time::Duration;

use common::*;

/// The seed runs `alpine ping enmilocalfunciona.io`; here the local busybox
/// image pings loopback (no registry, and only loopback takes test traffic).
const PING: &[&str] = &["ping", "127.0.0.1"];

/// The seed's steps through one CLI (`flotilla` or `docker`), checking what
/// each prints. `program` is the name the join hint should mention.
fn transcript(d: &Daemon, program: &str, cli: &dyn Fn(&[&str]) -> Out) {
    // swarm init
    let init = cli(&[&["swarm", "init"], LISTEN].concat()).ok();
    let node = d.node_id();
    let first = init.stdout.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!("Swarm initialized: current node ({node}) is now a manager."),
        "{init:#?}"
    );
    let join = init
        .stdout
        .lines()
        .find(|l| l.contains("swarm join --token"))
        .unwrap_or_else(|| panic!("no join line in {init:#?}"));
    assert!(
        join.trim_start()
            .starts_with(&format!("{program} swarm join --token SWMTKN-1-")),
        "{join}"
    );
    let token = join.split_whitespace().nth(4).unwrap();
    assert_token_shape(token);
    let worker = cli(&["swarm", "join-token", "-q", "worker"]).ok();
    assert_eq!(
        worker.stdout.trim(),
        token,
        "the join line shows the worker token"
    );

    // service create (waits for convergence, as without --detach)
    let mut create = vec![
        "service",
        "create",
        "--replicas",
        "1",
        "--name",
        "helloworld",
        IMAGE,
    ];
    create.extend_from_slice(PING);
    let created = cli(&create).ok();
    let id = d.service("helloworld")["ID"].as_str().unwrap().to_string();
    assert_eq!(
        created.stdout.lines().next(),
        Some(id.as_str()),
        "{created:#?}"
    );

    // service ls
    let ls = cli(&["service", "ls"]).ok();
    let t = Table::parse(&ls.stdout);
    assert!(
        t.header
            .starts_with("ID             NAME         MODE         REPLICAS   IMAGE "),
        "{:?}",
        t.header
    );
    assert_eq!(
        t.column_names(),
        ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]
    );
    assert_eq!(t.rows.len(), 1, "{}", ls.stdout);
    let row = &t.rows[0];
    assert_eq!(t.cell(row, "ID"), &id[..12]);
    assert_eq!(t.cell(row, "NAME"), "helloworld");
    assert_eq!(t.cell(row, "MODE"), "replicated");
    assert_eq!(t.cell(row, "REPLICAS"), "1/1");
    assert_eq!(t.cell(row, "IMAGE"), IMAGE);

    // service inspect --pretty
    let pretty = cli(&["service", "inspect", "--pretty", "helloworld"]).ok();
    for want in [
        format!("ID:\t\t{id}\n"),
        "Name:\t\thelloworld\n".into(),
        "Service Mode:\tReplicated\n".into(),
        " Replicas:\t1\n".into(),
        format!(" Image:\t\t{IMAGE}\n"),
        " Args:\t\tping 127.0.0.1".into(),
    ] {
        assert!(
            pretty.stdout.contains(&want),
            "no {want:?} in:\n{}",
            pretty.stdout
        );
    }

    // service ps
    let ps = cli(&["service", "ps", "helloworld"]).ok();
    let t = Table::parse(&ps.stdout);
    assert_eq!(
        t.column_names(),
        [
            "ID",
            "NAME",
            "IMAGE",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
            "PORTS"
        ]
    );
    assert_eq!(t.rows.len(), 1, "{}", ps.stdout);
    assert_eq!(t.cell(&t.rows[0], "NAME"), "helloworld.1");
    assert_eq!(t.cell(&t.rows[0], "NODE"), HOSTNAME);
    assert_eq!(t.cell(&t.rows[0], "DESIRED STATE"), "Running");
    assert!(
        t.cell(&t.rows[0], "CURRENT STATE").starts_with("Running "),
        "{}",
        ps.stdout
    );

    // service scale (waits for convergence too)
    let scaled = cli(&["service", "scale", "helloworld=5"]).ok();
    assert!(
        scaled.stdout.contains("helloworld scaled to 5"),
        "{scaled:#?}"
    );
    let ps = cli(&["service", "ps", "helloworld"]).ok();
    let t = Table::parse(&ps.stdout);
    let mut names = t.column("NAME");
    names.sort();
    assert_eq!(
        names,
        (1..=5)
            .map(|i| format!("helloworld.{i}"))
            .collect::<Vec<_>>(),
        "{}",
        ps.stdout
    );
    assert!(
        t.column("CURRENT STATE")
            .iter()
            .all(|s| s.starts_with("Running ")),
        "{}",
        ps.stdout
    );
    assert_eq!(d.containers(false).len(), 5, "five running containers");

    // node ls
    let nodes = cli(&["node", "ls"]).ok();
    let t = Table::parse(&nodes.stdout);
    assert_eq!(
        t.column_names(),
        [
            "ID",
            "HOSTNAME",
            "STATUS",
            "AVAILABILITY",
            "MANAGER STATUS",
            "ENGINE VERSION"
        ]
    );
    assert_eq!(t.rows.len(), 1, "{}", nodes.stdout);
    let row = &t.rows[0];
    assert_eq!(t.cell(row, "ID"), format!("{node} *"));
    assert_eq!(t.cell(row, "HOSTNAME"), HOSTNAME);
    assert_eq!(t.cell(row, "STATUS"), "Ready");
    assert_eq!(t.cell(row, "AVAILABILITY"), "Active");
    assert_eq!(t.cell(row, "MANAGER STATUS"), "Leader");

    // service logs: every line prefixed `helloworld.SLOT.TASKID@HOST    | `
    let tasks = d.tasks("helloworld");
    let logs = wait_for(
        Duration::from_secs(20),
        "ping lines from every replica",
        || {
            let out = cli(&["service", "logs", "helloworld"]).ok();
            let slots = (1..=5u64).filter(|slot| {
                out.stdout.lines().any(|l| {
                    l.starts_with(&format!("helloworld.{slot}."))
                        && l.contains("bytes from 127.0.0.1")
                })
            });
            if slots.count() == 5 {
                Ok(out)
            } else {
                Err(out.stdout)
            }
        },
    );
    for line in logs.lines() {
        let (prefix, _) = line
            .split_once(" | ")
            .unwrap_or_else(|| panic!("no ` | ` in {line:?}"));
        let ctx = prefix.trim_end();
        let (name, host) = ctx
            .split_once('@')
            .unwrap_or_else(|| panic!("no @ in {line:?}"));
        assert_eq!(host, HOSTNAME, "{line:?}");
        let parts: Vec<&str> = name.split('.').collect();
        assert_eq!(parts.len(), 3, "{line:?}");
        assert_eq!(parts[0], "helloworld");
        assert!(
            tasks.iter().any(|t| task_slot(t).to_string() == parts[1]
                && task_id(t).starts_with(parts[2])
                && parts[2].len() >= 12),
            "{line:?} names no task of helloworld"
        );
    }

    // service rm: nothing left behind, not even stopped containers
    cli(&["service", "rm", "helloworld"]).ok();
    wait_until(
        Duration::from_secs(30),
        "no container of the service left",
        || d.containers(true).is_empty(),
    );
    let ls = cli(&["service", "ls"]).ok();
    assert_eq!(
        ls.lines().len(),
        1,
        "only the header is left: {}",
        ls.stdout
    );
}

/// `SWMTKN-1-<digest>-<secret>`, lowercase base36.
fn assert_token_shape(token: &str) {
    let parts: Vec<&str> = token.split('-').collect();
    assert_eq!(parts.len(), 4, "{token}");
    assert_eq!(&parts[..2], ["SWMTKN", "1"], "{token}");
    for p in &parts[2..] {
        assert!(
            p.len() >= 25
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
            "{token}"
        );
    }
}

#[test]
fn seed_transcript_through_flotilla() {
    let d = Daemon::start(Executor::Docker);
    transcript(&d, "flotilla", &|args| d.flotilla(args));
}

#[test]
fn seed_transcript_through_docker_cli() {
    let d = Daemon::start(Executor::Docker);
    transcript(&d, "docker", &|args| d.docker(args));
}

/// Both CLIs print the same tables, `--pretty` text and `--format` output
/// for the same state. (Plain JSON `inspect` is left out: the docker CLI
/// re-encodes it through Go structs, so key order and `0` vs `0.0` differ
/// without meaning anything.)
#[test]
fn flotilla_prints_what_docker_prints() {
    let d = Daemon::start(Executor::Docker);
    d.init(&[]);
    let mut create = with_forever(&[
        "service",
        "create",
        "-d",
        "--replicas",
        "2",
        "--name",
        "web",
        IMAGE,
    ]);
    create.splice(2..2, ["--label", "tier=front"]);
    d.flotilla(&create).ok();
    wait_until(Duration::from_secs(30), "2 running tasks", || {
        d.tasks_in_state("web", "running").len() == 2
    });
    let mut mismatches = Vec::new();
    for args in [
        &["service", "ls"][..],
        &["service", "inspect", "--pretty", "web"],
        &["node", "ls"],
        &["service", "ls", "-q"],
        &["service", "ps", "-q", "web"],
        &["node", "inspect", "--pretty", "self"],
        &["node", "ps", "-q", "self"],
        &[
            "service",
            "ps",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Name}} {{.Image}} {{.Node}} {{.DesiredState}}",
            "web",
        ],
        &[
            "service",
            "ls",
            "--format",
            "{{.ID}} {{.Name}} {{.Mode}} {{.Replicas}} {{.Image}}",
        ],
        &["service", "ls", "--filter", "label=tier=front"],
    ] {
        let ours = d.flotilla(args).ok();
        let theirs = d.docker(args).ok();
        if ours.stdout != theirs.stdout {
            mismatches.push(format!(
                "{args:?}\n--- flotilla:\n{}--- docker:\n{}",
                ours.stdout, theirs.stdout
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// 100 replicas of one service reach 100/100 with exactly 100 containers.
#[test]
fn slow_hundred_replicas_converge() {
    let d = Daemon::start(Executor::Docker);
    d.init(&[]);
    let create = with_forever(&[
        "service",
        "create",
        "-d",
        "--replicas",
        "100",
        "--name",
        "web",
        IMAGE,
    ]);
    d.flotilla(&create).ok();
    // Task states seen while converging must only move forward.
    let mut states = StateWatch::default();
    wait_until(Duration::from_secs(240), "100 running tasks", || {
        let tasks = d.tasks("web");
        states.observe(&tasks);
        tasks.iter().filter(|t| task_state(t) == "running").count() == 100
    });
    wait_for(
        Duration::from_secs(30),
        "service ls to show 100/100",
        || {
            let ls = d.flotilla(&["service", "ls"]).ok();
            let t = Table::parse(&ls.stdout);
            match t.column("REPLICAS").first() {
                Some(&"100/100") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
    let running = d.containers(false);
    assert_eq!(running.len(), 100, "running containers of this node");
    assert_eq!(d.containers(true).len(), 100, "no extra stopped containers");
    let mut slots: Vec<u64> = d
        .tasks_in_state("web", "running")
        .iter()
        .map(task_slot)
        .collect();
    slots.sort();
    assert_eq!(
        slots,
        (1..=100).collect::<Vec<u64>>(),
        "one running task per slot"
    );
}

/// One DOCKER_HOST serves `docker ps` too: the Engine API routes Flotilla
/// does not answer pass through to the Docker Engine beside it, streams
/// included.
#[test]
fn docker_engine_routes_pass_through() {
    let d = Daemon::start(Executor::Docker);
    d.init(&[]);
    d.flotilla(&[
        "service",
        "create",
        "-d",
        "--name",
        "talker",
        IMAGE,
        "sh",
        "-c",
        "echo passed-through; exec sleep 60",
    ])
    .ok();
    let task = wait_for(Duration::from_secs(30), "a running task", || {
        let t = d.tasks_in_state("talker", "running");
        t.first()
            .cloned()
            .ok_or_else(|| summary(&d.tasks("talker")))
    });
    let label = format!("label=com.docker.swarm.task.id={}", task_id(&task));
    let through = d
        .docker(&["ps", "-q", "--no-trunc", "--filter", &label])
        .ok();
    let direct = engine(&["ps", "-q", "--no-trunc", "--filter", &label]).ok();
    assert_eq!(through.stdout.trim(), task_container(&task));
    assert_eq!(through.stdout, direct.stdout);
    wait_for(Duration::from_secs(10), "the container's log", || {
        let out = d.docker(&["logs", task_container(&task)]).ok();
        if out.stdout.contains("passed-through") {
            Ok(())
        } else {
            Err(format!("{out:?}"))
        }
    });
}

/// The harness's table reader, on a row with spaces in a cell and an empty
/// one (as `service ps` prints them).
#[test]
fn table_reader_handles_spaces_and_empty_cells() {
    let t = Table::parse(
        "ID             NAME         CURRENT STATE           ERROR     PORTS\n\
         abc            web.1        Running 5 seconds ago             \n",
    );
    assert_eq!(
        t.column_names(),
        ["ID", "NAME", "CURRENT STATE", "ERROR", "PORTS"]
    );
    assert_eq!(t.cell(&t.rows[0], "CURRENT STATE"), "Running 5 seconds ago");
    assert_eq!(t.cell(&t.rows[0], "ERROR"), "");
}
