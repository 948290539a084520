//! Multi-host system tests: every host a network namespace with its own
//! address (and, with the docker executor, its own dockerd), built by
//! `scripts/cluster.sh`, the project's `vagrant up`. Hosts are killed with
//! `kill -9` of everything they run, and cut off with iptables inside
//! their namespace. Slow: they run one at a time (`slow_` prefix).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::{node_line, wait_timed as wait_until, Cluster};

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
            "-p",
            "8080:8080",
            "--stop-grace-period",
            "1s",
            "flotilla-hello",
        ],
    );
    wait_until(Duration::from_secs(60), "10 running tasks", || {
        c.running("manager", "helloworld").len() == 10
    });
    // The seed's `curl localhost:8080` on the manager.
    wait_until(
        Duration::from_secs(10),
        "curl localhost:8080 on the manager",
        || {
            let out = c.run(&[
                "exec",
                "--prefix",
                "ftseed",
                "manager",
                "curl",
                "-s",
                "-m",
                "3",
                "localhost:8080",
            ]);
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim().len() == 12
        },
    );
    // The spread: 10 tasks over 4 nodes is 2 or 3 on each.
    let running = c.running("manager", "helloworld");
    let on = |host: &str| running.iter().filter(|(_, n)| n == host).count();
    for h in ["manager", "worker01", "worker02", "worker03"] {
        assert!(
            (2..=3).contains(&on(h)),
            "{} tasks on {h}: {running:?}",
            on(h)
        );
    }
    let on_w3 = on("worker03");

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
    // Nothing moves back (no rebalancing in Swarm): checked for a while, as
    // a change would come within a reconcile or two.
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        let after: BTreeSet<String> = c
            .running("manager", "helloworld")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(before, after, "tasks moved when worker03 came back");
    }
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
    // Writes sent to a follower while its leader is dead wait for the next
    // leader and go there: each is accepted at its first attempt, none
    // answered "no leader" or held behind the others' timeouts.
    let names: Vec<String> = (0..6).map(|i| format!("after{i}")).collect();
    let answers: Vec<(bool, String, Duration)> = std::thread::scope(|s| {
        let writes: Vec<_> = names
            .iter()
            .map(|name| {
                let c = &c;
                s.spawn(move || {
                    let args = [
                        "service",
                        "create",
                        "-d",
                        "--name",
                        name,
                        "flotilla-busybox",
                        "sleep",
                        "1000",
                    ];
                    let (ok, text) = c.flotilla("manager2", &args);
                    (ok, text, start.elapsed())
                })
            })
            .collect();
        writes
            .into_iter()
            .map(|w| w.join().expect("a writer thread"))
            .collect()
    });
    for (name, (ok, text, _)) in names.iter().zip(&answers) {
        assert!(
            ok,
            "create {name} through manager2 during the failover: {text}"
        );
    }
    let slowest = answers.iter().map(|a| a.2).max().unwrap_or_default();
    println!(
        "6 writes through manager2 sent at the leader's kill were all accepted within {slowest:?}"
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
                .contains("after0")
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
    // The partition took: manager3, cut off, serves its own store, which
    // lacks the service (it may also refuse, having lost the leader).
    let (_, cut_off) = c.flotilla("manager3", &["service", "ls"]);
    assert!(
        !cut_off.contains("during"),
        "manager3 got a write while cut off: {cut_off}"
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

    // Tasks on the workers, to outlive the loss of quorum below.
    c.ok(
        "manager1",
        &[
            "service",
            "create",
            "-d",
            "--name",
            "kept",
            "--replicas",
            "2",
            "--constraint",
            "node.role==worker",
            "flotilla-busybox",
            "sleep",
            "1000",
        ],
    );
    wait_until(
        Duration::from_secs(30),
        "kept running on the workers",
        || running_ids(&c, "kept").len() == 2,
    );
    let before = running_ids(&c, "kept");

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

    // --force-new-cluster on the survivor: a swarm of one manager with
    // everything it knew; the workers' tasks run on, untouched, and the
    // workers take new ones from it (moby#34384: Swarm's could not).
    c.ok("manager1", &["swarm", "init", "--force-new-cluster"]);
    wait_until(
        Duration::from_secs(20),
        "writes again after --force-new-cluster",
        || {
            c.flotilla("manager1", &["service", "scale", "-d", "kept=4"])
                .0
        },
    );
    wait_until(Duration::from_secs(30), "4 kept tasks running", || {
        running_ids(&c, "kept").len() == 4
    });
    let after = running_ids(&c, "kept");
    for id in &before {
        assert!(after.contains(id), "task {id} was replaced: {after:?}");
    }
    let nodes = c.ok("manager1", &["node", "ls"]);
    assert!(node_line(&nodes, "manager1").contains("Leader"), "{nodes}");
    // The lost managers can be demoted and removed.
    c.ok("manager1", &["node", "demote", "manager2", "manager3"]);
    c.ok(
        "manager1",
        &["node", "rm", "--force", "manager2", "manager3"],
    );
}

/// IDs of the service's running tasks, each on a worker.
fn running_ids(c: &Cluster, service: &str) -> Vec<String> {
    let (_, text) = c.flotilla(
        "manager1",
        &[
            "service",
            "ps",
            service,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.ID}} {{.Node}} {{.CurrentState}}",
        ],
    );
    text.lines()
        .filter(|l| l.contains(" worker") && l.contains("Running"))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}
