//! Multi-host system tests: every host a network namespace with its own
//! address (and, with the docker executor, its own dockerd), built by
//! `scripts/cluster.sh`, the project's `vagrant up`. Hosts are killed with
//! `kill -9` of everything they run, and cut off with iptables inside
//! their namespace. Slow: they run one at a time (`slow_` prefix).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

const FLOTILLA: &str = env!("CARGO_BIN_EXE_flotilla");

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster.sh")
}

/// A cluster for one test; `down` runs on drop, pass or fail.
struct Cluster {
    prefix: String,
}

fn sh(args: &[&str], prefix: &str) -> Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .env("FLOTILLA_BIN", FLOTILLA)
        .env("FLOTILLA_CLUSTER_INIT_ARGS", "--dispatcher-heartbeat 2s")
        .env("FLOTILLA_CLUSTER_PREFIX", prefix)
        .output()
        .expect("run cluster.sh")
}

impl Cluster {
    fn up(prefix: &str, subnet: &str, managers: u32, workers: u32, executor: &str) -> Cluster {
        let c = Cluster {
            prefix: prefix.to_string(),
        };
        let _ = sh(&["down", "--prefix", prefix], prefix);
        let (m, w) = (managers.to_string(), workers.to_string());
        let out = sh(
            &[
                "up",
                "--prefix",
                prefix,
                "--subnet",
                subnet,
                "--managers",
                &m,
                "--workers",
                &w,
                "--executor",
                executor,
            ],
            prefix,
        );
        assert!(
            out.status.success(),
            "cluster up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        sh(args, &self.prefix)
    }

    /// `flotilla ARGS` against `host`; returns (success, stdout+stderr).
    fn flotilla(&self, host: &str, args: &[&str]) -> (bool, String) {
        let mut all = vec!["flotilla", "--prefix", &self.prefix, host];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    #[track_caller]
    fn ok(&self, host: &str, args: &[&str]) -> String {
        let (ok, text) = self.flotilla(host, args);
        assert!(ok, "flotilla {args:?} on {host} failed: {text}");
        text
    }

    fn host_op(&self, op: &str, host: &str) {
        let out = self.run(&[op, "--prefix", &self.prefix, host]);
        assert!(
            out.status.success(),
            "{op} {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Tasks of `service` as JSON lines through `service ps --format`.
    fn tasks(&self, host: &str, service: &str) -> Vec<Value> {
        let (ok, text) = self.flotilla(
            host,
            &[
                "service",
                "ps",
                "--no-trunc",
                "--format",
                "{{json .}}",
                service,
            ],
        );
        if !ok {
            return Vec::new();
        }
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn running(&self, host: &str, service: &str) -> Vec<(String, String)> {
        self.tasks(host, service)
            .into_iter()
            .filter(|t| {
                t["DesiredState"] == "Running"
                    && t["CurrentState"]
                        .as_str()
                        .unwrap_or_default()
                        .starts_with("Running")
            })
            .map(|t| {
                (
                    t["ID"].as_str().unwrap_or_default().to_string(),
                    t["Node"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run(&["down", "--prefix", &self.prefix]);
    }
}

#[track_caller]
fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    start.elapsed()
}

fn node_line<'a>(node_ls: &'a str, host: &str) -> &'a str {
    node_ls
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == host))
        .unwrap_or_default()
}

/// The seed's cluster: a manager and three workers with their own
/// dockerds. A worker that dies has its tasks started again on the others,
/// with the seed's history rows; when it returns nothing moves.
#[test]
fn slow_cluster_seed_worker_dies_and_returns() {
    let c = Cluster::up("ftseed", "10.213.31", 1, 3, "docker");
    let nodes = c.ok("manager", &["node", "ls"]);
    for h in ["manager", "worker01", "worker02", "worker03"] {
        assert!(
            node_line(&nodes, h).contains("Ready"),
            "{h} not ready:\n{nodes}"
        );
    }
    c.ok(
        "manager",
        &[
            "service",
            "create",
            "-d",
            "--replicas",
            "10",
            "--name",
            "helloworld",
            "--stop-grace-period",
            "1s",
            "flotilla-busybox",
            "sleep",
            "100000",
        ],
    );
    wait_until(Duration::from_secs(60), "10 running tasks", || {
        c.running("manager", "helloworld").len() == 10
    });
    let on_w3 = c
        .running("manager", "helloworld")
        .iter()
        .filter(|(_, n)| n == "worker03")
        .count();
    assert!(on_w3 > 0, "the spread put nothing on worker03");

    c.host_op("kill", "worker03");
    let took = wait_until(
        Duration::from_secs(30),
        "all 10 tasks running on the other nodes",
        || {
            let r = c.running("manager", "helloworld");
            r.len() == 10 && r.iter().all(|(_, n)| n != "worker03")
        },
    );
    println!("worker03's {on_w3} tasks ran elsewhere {took:?} after the kill (heartbeat 2 s)");
    let ps = c.ok("manager", &["service", "ps", "helloworld"]);
    let history = ps
        .lines()
        .filter(|l| {
            l.contains(" \\_ helloworld.") && l.contains("worker03") && l.contains("Shutdown")
        })
        .count();
    assert_eq!(history, on_w3, "history rows for worker03's tasks:\n{ps}");
    assert!(node_line(&c.ok("manager", &["node", "ls"]), "worker03").contains("Down"));

    let before: BTreeSet<String> = c
        .running("manager", "helloworld")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    c.host_op("start", "worker03");
    wait_until(Duration::from_secs(30), "worker03 ready again", || {
        node_line(&c.ok("manager", &["node", "ls"]), "worker03").contains("Ready")
    });
    std::thread::sleep(Duration::from_secs(4));
    let after: BTreeSet<String> = c
        .running("manager", "helloworld")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(before, after, "tasks moved when worker03 came back");
    // Its old containers are stopped: its dockerd runs none of them.
    let out = c.run(&[
        "docker",
        "--prefix",
        "ftseed",
        "worker03",
        "ps",
        "-q",
        "--filter",
        "label=com.docker.swarm.service.name=helloworld",
    ]);
    wait_until(
        Duration::from_secs(20),
        "worker03's stale containers stopped",
        || {
            let out = c.run(&[
                "docker",
                "--prefix",
                "ftseed",
                "worker03",
                "ps",
                "-q",
                "--filter",
                "label=com.docker.swarm.service.name=helloworld",
            ]);
            String::from_utf8_lossy(&out.stdout).trim().is_empty()
        },
    );
    drop(out);
}

/// Three managers and two workers: the leader dies, another takes writes
/// within seconds; it comes back with its state; a partitioned manager
/// catches up once healed; losing quorum gives Docker's no-leader error.
#[test]
fn slow_cluster_managers_survive_leader_loss_and_partitions() {
    let c = Cluster::up("ftraft", "10.213.32", 3, 2, "process");
    let nodes = c.ok("manager1", &["node", "ls"]);
    assert!(node_line(&nodes, "manager1").contains("Leader"), "{nodes}");
    for h in ["manager2", "manager3"] {
        assert!(node_line(&nodes, h).contains("Reachable"), "{nodes}");
    }

    c.host_op("kill", "manager1");
    let start = Instant::now();
    let took = wait_until(
        Duration::from_secs(10),
        "a write through manager2 after the leader died",
        || {
            c.flotilla(
                "manager2",
                &[
                    "service",
                    "create",
                    "-d",
                    "--name",
                    "after",
                    "flotilla-busybox",
                    "sleep",
                    "1000",
                ],
            )
            .0
        },
    );
    println!(
        "new leader took a write {took:?} after the kill ({:?} in all)",
        start.elapsed()
    );
    wait_until(
        Duration::from_secs(10),
        "manager1 shown Unreachable",
        || node_line(&c.ok("manager2", &["node", "ls"]), "manager1").contains("Unreachable"),
    );

    c.host_op("start", "manager1");
    wait_until(
        Duration::from_secs(20),
        "manager1 back with the new service",
        || {
            c.flotilla("manager1", &["service", "ls"])
                .1
                .contains("after")
        },
    );
    wait_until(Duration::from_secs(20), "manager1 Reachable again", || {
        node_line(&c.ok("manager2", &["node", "ls"]), "manager1").contains("Reachable")
    });

    c.host_op("partition", "manager3");
    wait_until(
        Duration::from_secs(20),
        "a write while manager3 is cut off",
        || {
            c.flotilla(
                "manager1",
                &[
                    "service",
                    "create",
                    "-d",
                    "--name",
                    "during",
                    "flotilla-busybox",
                    "sleep",
                    "1000",
                ],
            )
            .0 || c
                .flotilla("manager1", &["service", "ls"])
                .1
                .contains("during")
        },
    );
    c.host_op("heal", "manager3");
    wait_until(
        Duration::from_secs(30),
        "manager3 caught up after the partition",
        || {
            c.flotilla("manager3", &["service", "ls"])
                .1
                .contains("during")
        },
    );

    // Two of three managers gone: no quorum, Docker's message.
    c.host_op("kill", "manager2");
    c.host_op("kill", "manager3");
    let (ok, text) = c.flotilla(
        "manager1",
        &[
            "service",
            "create",
            "-d",
            "--name",
            "nope",
            "flotilla-busybox",
            "sleep",
            "1",
        ],
    );
    assert!(!ok, "a write without quorum succeeded");
    assert!(text.contains("The swarm does not have a leader"), "{text}");
}
