//! Swarm membership over real processes: `node promote | demote | rm`,
//! `swarm join-token --rotate`, `swarm update`, and `service logs --follow`.
//!
//! The multi-host part runs one cluster of network-namespace hosts
//! (`scripts/cluster.sh`, process executor) through every membership
//! change in turn, since each cluster costs seconds; the rest runs on one
//! daemon.

mod common;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::*;
use serde_json::Value;

const PREFIX: &str = "ftmemb";
const SUBNET: &str = "10.213.53";

/// Docker's answer on a worker to a command only managers serve.
const NOT_A_MANAGER: &str = "Error response from daemon: This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.";
/// Docker's answer to a join with a token that is not (or no longer) the swarm's.
const INVALID_TOKEN: &str = "Error response from daemon: rpc error: code = InvalidArgument desc = A valid join token is necessary to join this cluster";

// ---- helpers for the cluster ----

/// Where cluster.sh keeps a host's files (its socket, its data dir).
fn host_dir(host: &str) -> PathBuf {
    let root =
        std::env::var("FLOTILLA_CLUSTER_STATE").unwrap_or_else(|_| "/run/flotilla-cluster".into());
    PathBuf::from(root).join(PREFIX).join(host)
}

/// The address cluster.sh gives a host of the 1-manager, 3-worker cluster.
fn addr(host: &str) -> String {
    let i = match host {
        "manager" => 1,
        "worker01" => 2,
        "worker02" => 3,
        "worker03" => 4,
        _ => panic!("no host {host}"),
    };
    format!("{SUBNET}.{}", 10 + i)
}

/// `GET path` on a host's API socket; the JSON body of a 200.
fn host_get(host: &str, path: &str) -> Value {
    let r = common::http::request(&host_dir(host).join("flotilla.sock"), "GET", path, None)
        .unwrap_or_else(|e| panic!("GET {path} on {host}: {e}"));
    assert_eq!(r.status, 200, "GET {path} on {host}: {}", r.body);
    r.json()
}

/// `node ls` on `via` as (hostname, id, status, manager status) rows.
fn nodes(c: &Cluster, via: &str) -> Result<Vec<[String; 4]>, String> {
    let (ok, text) = c.flotilla(via, &["node", "ls"]);
    if !ok {
        return Err(text);
    }
    let t = Table::parse(&text);
    Ok(t.rows
        .iter()
        .map(|r| {
            [
                t.cell(r, "HOSTNAME").to_string(),
                t.cell(r, "ID").trim_end_matches(" *").trim().to_string(),
                t.cell(r, "STATUS").to_string(),
                t.cell(r, "MANAGER STATUS").to_string(),
            ]
        })
        .collect())
}

/// Waits until `node ls` on `via` shows `host` once, with this status and
/// manager status; returns its node ID.
#[track_caller]
fn wait_node(c: &Cluster, via: &str, host: &str, status: &str, manager: &str) -> String {
    wait_for(
        Duration::from_secs(30),
        &format!("{host} {status}/{manager:?} in node ls on {via}"),
        || {
            let rows = nodes(c, via)?;
            let mine: Vec<_> = rows.iter().filter(|r| r[0] == host).collect();
            match mine.as_slice() {
                [r] if r[2] == status && r[3] == manager => Ok(r[1].clone()),
                _ => Err(format!("{rows:?}")),
            }
        },
    )
}

/// The validity left on a host's node certificate: whether it still holds
/// `secs` from now (`openssl x509 -checkend`).
fn cert_valid_for(host: &str, secs: u64) -> bool {
    let path = host_dir(host).join("data/swarm/cert.json");
    let cert: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("cert.pem");
    std::fs::write(&pem, cert["cert_pem"].as_str().expect("cert_pem")).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.args(["x509", "-noout", "-checkend", &secs.to_string(), "-in"])
        .arg(&pem);
    let out = run(cmd);
    assert!(
        out.code == 0 || out.code == 1,
        "openssl x509 -checkend: {out:?}"
    );
    out.code == 0
}

/// A write through `via`: a service create that must be committed.
fn create_service(c: &Cluster, via: &str, name: &str) -> Result<(), String> {
    let (ok, text) = c.flotilla(
        via,
        &[
            "service", "create", "-d", "--name", name, IMAGE, "sleep", "1000",
        ],
    );
    if ok || c.flotilla(via, &["service", "ls"]).1.contains(name) {
        Ok(())
    } else {
        Err(text)
    }
}

#[track_caller]
fn join(c: &Cluster, host: &str, token: &str, manager: &str) -> (bool, String) {
    c.flotilla(
        host,
        &[
            "swarm",
            "join",
            "--token",
            token,
            "--advertise-addr",
            &addr(host),
            &format!("{}:2377", addr(manager)),
        ],
    )
}

fn token(c: &Cluster, via: &str, role: &str) -> String {
    c.ok(via, &["swarm", "join-token", "-q", role])
        .trim()
        .to_string()
}

/// One manager and three workers go through every membership change:
/// removal refused then forced, promotion (the promoted nodes carry the
/// swarm when the old leader dies: they are Raft voters), demotion (the
/// demoted nodes are workers and out of Raft: the last manager takes
/// writes alone once they are gone), removal of a down node, and join
/// token rotation (old tokens refused, new ones admit a worker and a
/// manager), and a root CA rotation. `swarm update --cert-expiry` shows in
/// the certificates issued after it.
#[test]
fn slow_membership_promote_demote_remove_and_rotate_tokens() {
    let c = Cluster::up(PREFIX, SUBNET, 1, 3, "process");
    for h in ["worker01", "worker02", "worker03"] {
        wait_node(&c, "manager", h, "Ready", "");
    }
    let manager_id = wait_node(&c, "manager", "manager", "Ready", "Leader");

    // swarm update --cert-expiry: in the swarm object, and in the
    // certificates issued from now on (promotions and joins below).
    assert_eq!(
        c.ok("manager", &["swarm", "update", "--cert-expiry", "2h"])
            .trim(),
        "Swarm updated."
    );
    let spec = &host_get("manager", "/swarm")["Spec"];
    assert_eq!(spec["CAConfig"]["NodeCertExpiry"], 7_200_000_000_000i64);
    assert_eq!(
        spec["Dispatcher"]["HeartbeatPeriod"], 2_000_000_000i64,
        "the init flag is kept"
    );
    assert!(
        cert_valid_for("worker03", 3 * 3600),
        "issued before: 90 days"
    );

    // node rm: a ready node needs --force, a manager must be demoted first.
    let w3 = wait_node(&c, "manager", "worker03", "Ready", "");
    let (ok, text) = c.flotilla("manager", &["node", "rm", "worker03"]);
    assert!(!ok, "{text}");
    assert_eq!(
        text.trim(),
        format!("Error response from daemon: rpc error: code = FailedPrecondition desc = node {w3} is not down and can't be removed")
    );
    let (ok, text) = c.flotilla("manager", &["node", "rm", "--force", "manager"]);
    assert!(!ok, "{text}");
    assert_eq!(
        text.trim(),
        format!("Error response from daemon: rpc error: code = FailedPrecondition desc = node {manager_id} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal")
    );
    wait_node(&c, "manager", "worker03", "Ready", "");

    // node promote: Reachable managers that serve the manager API.
    assert_eq!(
        c.ok("manager", &["node", "promote", "worker01", "worker02"]),
        "Node worker01 promoted to a manager in the swarm.\nNode worker02 promoted to a manager in the swarm.\n"
    );
    for h in ["worker01", "worker02"] {
        wait_node(&c, "manager", h, "Ready", "Reachable");
        wait_until(
            Duration::from_secs(30),
            &format!("node ls served by {h}"),
            || c.flotilla(h, &["node", "ls"]).0,
        );
        // The promotion renewed its certificate, with the new expiry.
        assert!(cert_valid_for(h, 3600), "{h}: valid for an hour");
        assert!(!cert_valid_for(h, 3 * 3600), "{h}: not for 3 hours");
    }
    let info = host_get("worker01", "/info");
    assert_eq!(info["Swarm"]["ControlAvailable"], true);
    assert_eq!(info["Swarm"]["Managers"], 3);

    // They are Raft voters: with the old leader dead, the two of them
    // are a majority of three and take a write.
    c.host_op("kill", "manager");
    let t0 = Instant::now();
    wait_for(
        Duration::from_secs(30),
        "a write through worker01 with the old leader dead",
        || create_service(&c, "worker01", "after-leader"),
    );
    println!(
        "a promoted node took a write {:?} after the leader died",
        t0.elapsed()
    );
    let leader = wait_for(Duration::from_secs(30), "a new leader", || {
        let rows = nodes(&c, "worker01")?;
        rows.iter()
            .find(|r| r[3] == "Leader")
            .map(|r| r[0].clone())
            .ok_or_else(|| format!("{rows:?}"))
    });
    let other = if leader == "worker01" {
        "worker02"
    } else {
        "worker01"
    };
    wait_node(&c, &leader, "manager", "Down", "Unreachable");

    // node demote: never below a reachable majority of the managers left.
    let (ok, text) = c.flotilla(&leader, &["node", "demote", other]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("rpc error: code = FailedPrecondition desc = can't remove member from the raft: this would result in a loss of quorum"),
        "{text}"
    );
    assert_eq!(
        c.ok(&leader, &["node", "demote", "manager"]),
        "Manager manager demoted in the swarm.\n"
    );
    wait_node(&c, &leader, "manager", "Down", "");
    assert_eq!(
        c.ok(&leader, &["node", "demote", other]),
        format!("Manager {other} demoted in the swarm.\n")
    );
    // A worker: no manager status, its agent back, manager commands refused.
    wait_node(&c, &leader, other, "Ready", "");
    wait_for(
        Duration::from_secs(30),
        &format!("{other} refusing node ls"),
        || {
            let (ok, text) = c.flotilla(other, &["node", "ls"]);
            if !ok && text.trim() == NOT_A_MANAGER {
                Ok(())
            } else {
                Err(text)
            }
        },
    );
    let info = host_get(other, "/info");
    assert_eq!(info["Swarm"]["ControlAvailable"], false);
    assert_eq!(info["Swarm"]["LocalNodeState"], "active");

    // node rm of a down node needs no --force; it leaves node ls.
    assert_eq!(c.ok(&leader, &["node", "rm", "manager"]).trim(), "manager");
    let rows = nodes(&c, &leader).unwrap();
    assert!(rows.iter().all(|r| r[0] != "manager"), "{rows:?}");
    assert_eq!(host_get(&leader, "/info")["Swarm"]["Managers"], 1);

    // Both demoted nodes left Raft: with the other one dead too, the last
    // manager is a majority of one and takes writes (were either still a
    // voter, no write could commit).
    c.host_op("kill", other);
    wait_for(
        Duration::from_secs(30),
        &format!("a write through {leader} alone"),
        || create_service(&c, &leader, "alone"),
    );
    wait_node(&c, &leader, &leader, "Ready", "Leader");

    // node rm --force of a ready worker: it is gone at once.
    assert_eq!(
        c.ok(&leader, &["node", "rm", "--force", "worker03"]).trim(),
        "worker03"
    );
    let rows = nodes(&c, &leader).unwrap();
    assert!(rows.iter().all(|r| r[0] != "worker03"), "{rows:?}");

    // join-token --rotate worker: a new worker token, the manager one kept.
    let (old_worker, old_manager) = (token(&c, &leader, "worker"), token(&c, &leader, "manager"));
    let rotated = c.ok(&leader, &["swarm", "join-token", "--rotate", "worker"]);
    let new_worker = token(&c, &leader, "worker");
    assert_ne!(new_worker, old_worker);
    assert_eq!(token(&c, &leader, "manager"), old_manager);
    assert!(
        rotated.starts_with("Successfully rotated worker join token.\n\n")
            && rotated.contains(&format!("swarm join --token {new_worker} ")),
        "{rotated}"
    );
    // worker03 comes back as a new node: the old token is refused.
    c.ok("worker03", &["swarm", "leave", "--force"]);
    let (ok, text) = join(&c, "worker03", &old_worker, &leader);
    assert!(!ok, "{text}");
    assert_eq!(text.trim(), INVALID_TOKEN);
    let (ok, text) = join(&c, "worker03", &new_worker, &leader);
    assert!(ok, "{text}");
    assert_eq!(text.trim(), "This node joined a swarm as a worker.");
    let w3_again = wait_node(&c, &leader, "worker03", "Ready", "");
    assert_ne!(w3_again, w3, "a new node");
    assert!(!cert_valid_for("worker03", 3 * 3600), "issued with 2h");

    // swarm ca --rotate with the docker CLI, across hosts: the down node
    // goes first (a rotation waits for every node, as SwarmKit's). Every
    // node gets a certificate from the new root and then trusts it, the
    // CLI's progress completes, no session breaks (the tasks keep running
    // where they were), and the join tokens pin the new root.
    wait_node(&c, &leader, other, "Down", "");
    assert_eq!(c.ok(&leader, &["node", "rm", other]).trim(), other);
    let old_root = host_get(&leader, "/swarm")["TLSInfo"]["TrustRoot"]
        .as_str()
        .unwrap()
        .to_string();
    let worker_token = token(&c, &leader, "worker");
    c.ok(
        &leader,
        &[
            "service",
            "create",
            "-d",
            "--mode",
            "global",
            "--name",
            "everywhere",
            IMAGE,
            "sleep",
            "1000",
        ],
    );
    let tasks_before = wait_for(Duration::from_secs(30), "a task on worker03", || {
        let tasks = running_tasks(&leader);
        if tasks.iter().any(|(_, node)| *node == w3_again) {
            Ok(tasks)
        } else {
            Err(format!("{tasks:?}"))
        }
    });
    let t0 = Instant::now();
    let mut cmd = Command::new("timeout");
    cmd.args(["120", "docker", "-H"])
        .arg(format!(
            "unix://{}",
            host_dir(&leader).join("flotilla.sock").display()
        ))
        .args(["swarm", "ca", "--rotate"]);
    let out = run(cmd).ok().stdout;
    println!(
        "swarm ca --rotate on a manager and a worker took {:?}",
        t0.elapsed()
    );
    let swarm = host_get(&leader, "/swarm");
    let new_root = swarm["TLSInfo"]["TrustRoot"].as_str().unwrap();
    assert_ne!(new_root, old_root);
    assert!(out.trim_end().ends_with(new_root.trim()), "{out}");
    assert_eq!(swarm["RootRotationInProgress"], false);
    for h in [leader.as_str(), "worker03"] {
        let node = host_get(&leader, &format!("/nodes/{h}"));
        assert_eq!(
            node["Description"]["TLSInfo"], swarm["TLSInfo"],
            "{h} reports the new root and a certificate from it"
        );
        let on_disk = std::fs::read_to_string(host_dir(h).join("data/swarm/ca.pem")).unwrap();
        assert_eq!(on_disk, new_root, "{h} keeps the new root");
    }
    let after = running_tasks(&leader);
    assert!(
        tasks_before.iter().all(|t| after.contains(t)),
        "no task moved or stopped: before {tasks_before:?}, after {after:?}"
    );
    wait_node(&c, &leader, "worker03", "Ready", "");
    let new_worker = token(&c, &leader, "worker");
    assert_ne!(new_worker, worker_token);
    let old_manager = token(&c, &leader, "manager");

    // join-token --rotate manager: the old manager token is refused, the
    // new one makes worker03 a Reachable manager and a Raft voter.
    c.ok(&leader, &["swarm", "join-token", "--rotate", "manager"]);
    let new_manager = token(&c, &leader, "manager");
    assert_ne!(new_manager, old_manager);
    assert_eq!(token(&c, &leader, "worker"), new_worker);
    c.ok("worker03", &["swarm", "leave", "--force"]);
    c.ok(&leader, &["node", "rm", "--force", &w3_again]);
    let (ok, text) = join(&c, "worker03", &old_manager, &leader);
    assert!(!ok, "{text}");
    assert_eq!(text.trim(), INVALID_TOKEN);
    let (ok, text) = join(&c, "worker03", &new_manager, &leader);
    assert!(ok, "{text}");
    assert_eq!(text.trim(), "This node joined a swarm as a manager.");
    wait_node(&c, &leader, "worker03", "Ready", "Reachable");
    // A voter: writes need it now (two voters), and go through it.
    wait_for(Duration::from_secs(30), "a write through worker03", || {
        create_service(&c, "worker03", "via-new-manager")
    });
    assert!(
        c.ok(&leader, &["service", "ls"])
            .contains("via-new-manager"),
        "the write reached the leader"
    );

    // The removed node comes back: its old certificate is of no use now,
    // the old token's root digest is refused, the new token joins it.
    c.host_op("start", other);
    c.ok(other, &["swarm", "leave", "--force"]);
    let (ok, text) = join(&c, other, &worker_token, &leader);
    assert!(!ok, "{text}");
    let (ok, text) = join(&c, other, &new_worker, &leader);
    assert!(ok, "{text}");
    wait_node(&c, &leader, other, "Ready", "");
    wait_for(
        Duration::from_secs(30),
        &format!("a task on {other} after the rotation"),
        || {
            let (ok, text) = c.flotilla(
                &leader,
                &["service", "update", "-d", "--replicas", "4", "alone"],
            );
            let on_other = c
                .flotilla(
                    &leader,
                    &[
                        "service",
                        "ps",
                        "--filter",
                        "desired-state=running",
                        "alone",
                    ],
                )
                .1;
            if ok
                && on_other
                    .lines()
                    .any(|l| l.contains(other) && l.contains("Running"))
            {
                Ok(())
            } else {
                Err(format!("{text}{on_other}"))
            }
        },
    );
}

/// The running tasks of the cluster, as `service ps` shows them (ID, node).
fn running_tasks(via: &str) -> Vec<(String, String)> {
    let services = host_get(via, "/services");
    let mut out = Vec::new();
    for s in services.as_array().unwrap() {
        let id = s["ID"].as_str().unwrap();
        let filter = format!("{{\"service\":[\"{id}\"],\"desired-state\":[\"running\"]}}");
        let tasks = host_get(via, &format!("/tasks?filters={}", urlencode(&filter)));
        for t in tasks.as_array().unwrap() {
            if t["Status"]["State"] == "running" {
                out.push((
                    t["ID"].as_str().unwrap().to_string(),
                    t["NodeID"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    out.sort();
    out
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---- one daemon ----

/// `swarm update` changes only the settings it is given, the swarm object
/// shows them (API and docker CLI), and a lower task history limit trims
/// the history already kept.
#[test]
fn swarm_update_changes_settings_and_trims_task_history() {
    let d = Daemon::start(Executor::Process);
    d.init(&[]);
    let before = d.get_json("/swarm");
    assert_eq!(
        before["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"],
        5
    );
    assert_eq!(
        before["Spec"]["Dispatcher"]["HeartbeatPeriod"],
        5_000_000_000i64
    );

    // Four forced updates: five tasks in slot 1, all kept (limit 5).
    d.flotilla(&with_forever(&[
        "service", "create", "-d", "--name", "hist", IMAGE,
    ]))
    .ok();
    for i in 1..=5 {
        wait_for(
            Duration::from_secs(30),
            &format!("{i} tasks, one running"),
            || {
                let tasks = d.tasks("hist");
                let running = tasks.iter().filter(|t| task_state(t) == "running").count();
                if tasks.len() == i && running == 1 {
                    Ok(())
                } else {
                    Err(summary(&tasks))
                }
            },
        );
        if i < 5 {
            d.flotilla(&["service", "update", "-d", "--force", "hist"])
                .ok();
        }
    }

    let out = d
        .flotilla(&[
            "swarm",
            "update",
            "--task-history-limit",
            "2",
            "--dispatcher-heartbeat",
            "7s",
            "--cert-expiry",
            "48h",
        ])
        .ok();
    assert_eq!(out.stdout, "Swarm updated.\n");
    let after = d.get_json("/swarm");
    let spec = &after["Spec"];
    assert_eq!(spec["Orchestration"]["TaskHistoryRetentionLimit"], 2);
    assert_eq!(spec["Dispatcher"]["HeartbeatPeriod"], 7_000_000_000i64);
    assert_eq!(spec["CAConfig"]["NodeCertExpiry"], 172_800_000_000_000i64);
    assert_eq!(spec["Name"], "default");
    assert!(
        after["Version"]["Index"].as_u64() > before["Version"]["Index"].as_u64(),
        "{after}"
    );
    assert_eq!(after["JoinTokens"], before["JoinTokens"], "tokens kept");
    // The docker CLI reads the same settings from /info.
    let docker = d
        .docker(&["info", "--format", "{{json .Swarm.Cluster.Spec}}"])
        .ok();
    let seen: Value = serde_json::from_str(docker.stdout.trim()).unwrap();
    for (section, field) in [
        ("Orchestration", "TaskHistoryRetentionLimit"),
        ("Dispatcher", "HeartbeatPeriod"),
        ("CAConfig", "NodeCertExpiry"),
    ] {
        assert_eq!(seen[section][field], spec[section][field], "{seen}");
    }

    // The effect: the history is cut to two tasks, the running one kept.
    wait_for(Duration::from_secs(20), "slot 1 cut to 2 tasks", || {
        let tasks = d.tasks("hist");
        let running = tasks.iter().filter(|t| task_state(t) == "running").count();
        if tasks.len() == 2 && running == 1 {
            Ok(())
        } else {
            Err(summary(&tasks))
        }
    });

    // A flag not given keeps its value.
    d.flotilla(&["swarm", "update", "--task-history-limit", "3"])
        .ok();
    let spec = &d.get_json("/swarm")["Spec"];
    assert_eq!(spec["Orchestration"]["TaskHistoryRetentionLimit"], 3);
    assert_eq!(spec["Dispatcher"]["HeartbeatPeriod"], 7_000_000_000i64);
    assert_eq!(spec["CAConfig"]["NodeCertExpiry"], 172_800_000_000_000i64);
}

/// A CLI run as a child whose stdout lines arrive on a channel; killed on drop.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Follower {
    fn spawn(mut cmd: Command) -> Follower {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the follower");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits until a line ending with `text` has arrived; fails the test if
    /// the follower exits first.
    #[track_caller]
    fn wait_line(&mut self, text: &str) -> String {
        wait_for(Duration::from_secs(20), &format!("a line {text:?}"), || {
            self.seen.extend(self.lines.try_iter());
            if let Some(l) = self.seen.iter().find(|l| l.ends_with(text)) {
                return Ok(l.clone());
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the follower exited ({status}); it printed {:?}", self.seen);
            }
            Err(format!("{:?}", self.seen))
        })
    }

    fn still_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `service logs --follow` (flotilla and docker CLIs) keeps streaming:
/// lines the task writes after the follow began reach the follower.
#[test]
fn service_logs_follow_shows_lines_written_later() {
    let d = Daemon::start(Executor::Process);
    d.init(&[]);
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let script = format!(
        "trap 'exit 0' TERM; echo first; while [ ! -e {go} ]; do sleep 0.1; done; \
         echo second; echo third; while :; do sleep 0.2; done",
        go = go.display()
    );
    d.flotilla(&[
        "service", "create", "-d", "--name", "chatty", IMAGE, "sh", "-c", &script,
    ])
    .ok();
    let task = wait_for(Duration::from_secs(20), "a running task", || {
        d.tasks_in_state("chatty", "running")
            .first()
            .cloned()
            .ok_or_else(|| summary(&d.tasks("chatty")))
    });
    let prefix = format!("chatty.1.{}@{HOSTNAME}", &task_id(&task)[..12]);

    let mut flotilla = Command::new(FLOTILLA);
    flotilla
        .args(["-H", &d.host(), "service", "logs", "--follow", "chatty"])
        .env_remove("FLOTILLA_HOST");
    let mut docker = Command::new("docker");
    docker
        .args(["service", "logs", "-f", "chatty"])
        .env("DOCKER_HOST", d.host())
        .env_remove("DOCKER_CONTEXT");
    let mut followers = [Follower::spawn(flotilla), Follower::spawn(docker)];
    for f in &mut followers {
        let line = f.wait_line("| first");
        assert!(line.starts_with(&prefix), "{line:?} starts with {prefix:?}");
        assert!(f.still_running(), "a follower keeps running");
    }
    // Nothing after "first" until the task is told to go on.
    assert!(
        followers
            .iter_mut()
            .all(|f| f.seen.iter().all(|l| !l.ends_with("| second"))),
        "second before the trigger"
    );
    std::fs::write(&go, "").unwrap();
    for f in &mut followers {
        let second = f.wait_line("| second");
        let third = f.wait_line("| third");
        assert!(second.starts_with(&prefix) && third.starts_with(&prefix));
        let at = |l: &str| f.seen.iter().position(|s| s.ends_with(l)).unwrap();
        assert!(at("| first") < at("| second") && at("| second") < at("| third"));
        assert!(f.still_running(), "a follower keeps following");
    }
    // Without --follow the same lines come, and the command ends.
    let out = d.flotilla(&["service", "logs", "chatty"]).ok();
    let lines: Vec<&str> = out
        .lines()
        .iter()
        .map(|l| l.rsplit("| ").next().unwrap())
        .collect();
    assert_eq!(lines, ["first", "second", "third"], "{}", out.stdout);
}
