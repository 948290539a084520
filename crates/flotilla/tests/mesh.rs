//! The routing mesh and service discovery on the seed's cluster: a manager
//! and three workers, each a network namespace with its own dockerd. The
//! test process sits on the cluster's bridge and talks to every node's
//! address, like an outside client would.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{looked_up, node_line, wait_timed as wait_until, Cluster};

const HOSTS: [&str; 4] = ["manager", "worker01", "worker02", "worker03"];

/// One HTTP GET over a new connection: the body (the task's hostname).
fn get(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(b"GET / HTTP/1.0\r\nHost: mesh\r\n\r\n")
        .map_err(|e| format!("send {addr}: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("read {addr}: {e}"))?;
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.contains(" 200 ") => Ok(body.trim().to_string()),
        _ => Err(format!("{addr} answered {text:?}")),
    }
}

fn udp_echo(addr: SocketAddr, payload: &str) -> Result<String, String> {
    let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    s.send_to(payload.as_bytes(), addr)
        .map_err(|e| format!("send {addr}: {e}"))?;
    let mut buf = [0u8; 1500];
    let (n, _) = s
        .recv_from(&mut buf)
        .map_err(|e| format!("recv {addr}: {e}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

fn node_addr(c: &Cluster, host: &str) -> String {
    c.ok(
        "manager",
        &["node", "inspect", "--format", "{{.Status.Addr}}", host],
    )
    .trim()
    .to_string()
}

/// `docker exec` in the first container of `service` found on any host.
fn exec_in(c: &Cluster, service: &str, cmd: &[&str]) -> (bool, String) {
    for host in HOSTS {
        let out = c.run(&[
            "docker",
            "--prefix",
            "ftmesh",
            host,
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={service}"),
        ]);
        let ids = String::from_utf8_lossy(&out.stdout).to_string();
        let Some(id) = ids.lines().next() else {
            continue;
        };
        let mut args = vec!["docker", "--prefix", "ftmesh", host, "exec", id];
        args.extend_from_slice(cmd);
        let out = c.run(&args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return (out.status.success(), text);
    }
    (false, format!("no container of {service} on any host"))
}

#[test]
fn slow_mesh_routes_published_ports_from_every_node_and_names_resolve() {
    let c = Cluster::up("ftmesh", "10.213.41", 1, 3, "docker");
    let addrs: BTreeMap<&str, String> = HOSTS.iter().map(|h| (*h, node_addr(&c, h))).collect();

    // worker03 runs nothing, yet answers on the published port.
    c.ok(
        "manager",
        &["node", "update", "--availability", "drain", "worker03"],
    );
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
            "2s",
            "flotilla-hello",
        ],
    );
    wait_until(Duration::from_secs(90), "10 running tasks", || {
        c.running("manager", "helloworld").len() == 10
    });
    let ls = c.ok("manager", &["service", "ls"]);
    assert!(ls.contains("*:8080->8080/tcp"), "{ls}");

    // Every node answers, and 100 requests through one node reach all ten.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for host in HOSTS {
        let addr: SocketAddr = format!("{}:8080", addrs[host]).parse().unwrap();
        wait_until(Duration::from_secs(10), "the mesh on every node", || {
            get(addr).is_ok()
        });
    }
    let via: SocketAddr = format!("{}:8080", addrs["worker03"]).parse().unwrap();
    for _ in 0..100 {
        let who = get(via).expect("request through worker03");
        *seen.entry(who).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 10, "100 requests reached {seen:?}");
    println!("100 requests through worker03 (no task there): {seen:?}");

    // A second service reaches the first by name, from inside its container.
    c.ok(
        "manager",
        &[
            "service",
            "create",
            "-d",
            "--name",
            "client",
            "flotilla-busybox",
            "sleep",
            "100000",
        ],
    );
    wait_until(Duration::from_secs(60), "the client running", || {
        c.running("manager", "client").len() == 1
    });
    let (ok, body) = exec_in(&c, "client", &["wget", "-qO-", "http://helloworld:8080/"]);
    assert!(ok && body.trim().len() == 12, "wget by name: {body}");
    let outsider = Outsider::new(&addrs["manager"]);
    outsiders_do_not_reach_the_service_network(&c, &outsider, &addrs["manager"]);
    task_ports_answer_only_the_swarm(&c, &outsider, &addrs);
    let (ok, text) = exec_in(&c, "client", &["nslookup", "tasks.helloworld"]);
    let tasks = looked_up(&text);
    assert!(ok && tasks.len() == 10, "tasks.helloworld: {text}");
    assert!(tasks.iter().all(|a| a.starts_with("198.18.")), "{tasks:?}");
    let (_, text) = exec_in(&c, "client", &["nslookup", "nosuchservice"]);
    assert!(
        text.contains("NXDOMAIN") || text.contains("can't find"),
        "{text}"
    );

    // dnsrr: the name answers the task addresses, each reachable.
    c.ok(
        "manager",
        &[
            "service",
            "create",
            "-d",
            "--name",
            "rr",
            "--replicas",
            "2",
            "--endpoint-mode",
            "dnsrr",
            "-p",
            "mode=host,target=8080",
            "flotilla-hello",
        ],
    );
    wait_until(Duration::from_secs(60), "rr running", || {
        c.running("manager", "rr").len() == 2
    });
    wait_until(Duration::from_secs(10), "rr's two addresses", || {
        looked_up(&exec_in(&c, "client", &["nslookup", "rr"]).1).len() == 2
    });
    let (ok, body) = exec_in(&c, "client", &["wget", "-qO-", "http://rr:8080/"]);
    assert!(ok && body.trim().len() == 12, "wget rr: {body}");
    // A host-mode port is public: the outsider reaches it.
    let (host, port) = task_host_port(&c, "rr", "8080/tcp");
    let url = format!("http://{}:{port}/", addrs[host.as_str()]);
    let direct = outsider.run(&format!("curl -sS -m 3 {url}"));
    assert!(
        direct.status.success(),
        "rr's host-mode port {url} from outside: {}",
        String::from_utf8_lossy(&direct.stderr)
    );
    drop(outsider);

    // UDP through any node.
    c.ok(
        "manager",
        &[
            "service",
            "create",
            "-d",
            "--name",
            "echo",
            "--replicas",
            "2",
            "-p",
            "9999:9999/udp",
            "flotilla-udpecho",
        ],
    );
    wait_until(Duration::from_secs(60), "echo running", || {
        c.running("manager", "echo").len() == 2
    });
    for host in HOSTS {
        let addr: SocketAddr = format!("{}:9999", addrs[host]).parse().unwrap();
        wait_until(Duration::from_secs(10), "a UDP answer", || {
            udp_echo(addr, "ping").is_ok_and(|r| r.ends_with(" ping"))
        });
    }

    // A rolling update while a client keeps asking: no request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok_count, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok_count, failures) = (stop.clone(), ok_count.clone(), failures.clone());
        let addr: SocketAddr = format!("{}:8080", addrs["manager"]).parse().unwrap();
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match get(addr) {
                    Ok(_) => ok_count.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        errors.push(e);
                        failures.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            errors
        })
    };
    c.ok(
        "manager",
        &[
            "service",
            "update",
            "-d",
            "--env-add",
            "VERSION=2",
            "--update-parallelism",
            "2",
            "--update-delay",
            "0s",
            "helloworld",
        ],
    );
    wait_until(Duration::from_secs(120), "the update completed", || {
        c.ok(
            "manager",
            &[
                "service",
                "inspect",
                "--format",
                "{{.UpdateStatus.State}}",
                "helloworld",
            ],
        )
        .trim()
            == "completed"
    });
    stop.store(true, Ordering::Relaxed);
    let errors = load.join().unwrap();
    println!(
        "during the rolling update: {} requests ok, {} failed",
        ok_count.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed)
    );
    assert!(
        errors.is_empty(),
        "requests failed during the update: {errors:?}"
    );

    // A worker dies: once it is Down, every request succeeds again.
    c.host_op("kill", "worker01");
    wait_until(Duration::from_secs(30), "worker01 down", || {
        node_line(&c.ok("manager", &["node", "ls"]), "worker01").contains("Down")
    });
    // Each node's mesh drops worker01's tasks when the routing table
    // written after the Down reaches it, a moment later: under a loaded
    // CI a request sent at once still met the dead task (connect timed
    // out). Within a few seconds, 30 requests in a row must all succeed.
    for host in ["manager", "worker02", "worker03"] {
        let addr: SocketAddr = format!("{}:8080", addrs[host]).parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match (0..30).find_map(|_| get(addr).err()) {
                None => break,
                Some(_) if std::time::Instant::now() < deadline => {}
                Some(e) => panic!("through {host} 10 s after worker01 was Down: {e}"),
            }
        }
    }
}

/// A machine on the hosts' network that is not in the swarm (a network
/// namespace on the cluster's bridge), routing the service network
/// (198.18.0.0/16) to the manager. Gone on drop.
struct Outsider;

const OUTSIDER_NS: &str = "ftmesh-out";

fn sh(script: &str) -> std::process::Output {
    std::process::Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("sh")
}

impl Outsider {
    fn new(manager: &str) -> Outsider {
        let ns = OUTSIDER_NS;
        let setup = format!(
            "ip netns del {ns} 2>/dev/null; ip link del ftmesh-vout 2>/dev/null; \
             set -e; ip netns add {ns}; \
             ip link add ftmesh-vout type veth peer name ftmesh-vout-p; \
             ip link set ftmesh-vout-p netns {ns}; \
             ip link set ftmesh-vout master ftmesh-br up; \
             ip -n {ns} link set lo up; ip -n {ns} link set ftmesh-vout-p up; \
             ip -n {ns} addr add 10.213.41.250/24 dev ftmesh-vout-p; \
             ip -n {ns} route add 198.18.0.0/16 via {manager}"
        );
        let out = sh(&setup);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Outsider
    }

    /// `cmd` from the outsider, bounded to 5 s.
    fn run(&self, cmd: &str) -> std::process::Output {
        sh(&format!("ip netns exec {OUTSIDER_NS} timeout 5 {cmd}"))
    }
}

impl Drop for Outsider {
    fn drop(&mut self) {
        sh(&format!(
            "ip netns del {OUTSIDER_NS}; ip link del ftmesh-vout 2>/dev/null"
        ));
    }
}

/// The node's published port answers an outsider, its VIPs and DNS server
/// do not (a node answers for a local address on any interface unless
/// told not to).
fn outsiders_do_not_reach_the_service_network(c: &Cluster, outsider: &Outsider, manager: &str) {
    let (ok, text) = exec_in(c, "client", &["nslookup", "helloworld"]);
    let vip = looked_up(&text)
        .into_iter()
        .next()
        .expect("helloworld's VIP");
    assert!(ok && vip.starts_with("198.18."), "{text}");
    // The node is reachable from there: its published port answers.
    let published = outsider.run(&format!("curl -sS -m 3 http://{manager}:8080/"));
    assert!(
        published.status.success(),
        "published port from outside: {}",
        String::from_utf8_lossy(&published.stderr)
    );
    let to_vip = outsider.run(&format!("curl -sS -m 3 http://{vip}:8080/"));
    assert!(!to_vip.status.success(), "the VIP answered an outsider");
    let dns = outsider.run("busybox nslookup helloworld 198.18.0.1");
    assert!(
        !String::from_utf8_lossy(&dns.stdout).contains(&vip),
        "the DNS server answered an outsider: {}",
        String::from_utf8_lossy(&dns.stdout)
    );
}

/// A task of `service` and where its node published `target` ("8080/tcp")
/// for it: (the node, the host port), from the node's own dockerd.
fn task_host_port(c: &Cluster, service: &str, target: &str) -> (String, u16) {
    for host in HOSTS {
        let Some(id) = c.container_on(host, service) else {
            continue;
        };
        let out = c.run(&["docker", "--prefix", "ftmesh", host, "port", &id, target]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        // "0.0.0.0:49153" (and its IPv6 twin).
        let port = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("0.0.0.0:")?.parse().ok());
        match port {
            Some(port) => return (host.to_string(), port),
            None => panic!("docker port {id} {target} on {host}: {text:?}"),
        }
    }
    panic!("no container of {service} on any host")
}

/// The host port an ingress task's target port is published on answers
/// the swarm's nodes (their meshes) only: an outsider that reaches the
/// node's published port cannot go around the mesh to the task.
fn task_ports_answer_only_the_swarm(
    c: &Cluster,
    outsider: &Outsider,
    addrs: &BTreeMap<&str, String>,
) {
    let (host, port) = task_host_port(c, "helloworld", "8080/tcp");
    let url = format!("http://{}:{port}/", addrs[host.as_str()]);
    // Another node reaches it directly (so the port is the task's, and
    // the guard lets the swarm in), the node itself too.
    for from in ["worker03", host.as_str()] {
        let out = c.run(&[
            "exec", "--prefix", "ftmesh", from, "curl", "-sS", "-m", "3", &url,
        ]);
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "{url} from {from}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_until(
        Duration::from_secs(10),
        "the task port closed to outsiders",
        || {
            !outsider
                .run(&format!("curl -sS -m 3 {url}"))
                .status
                .success()
        },
    );
    // Still so a moment later, while the published port answers.
    let direct = outsider.run(&format!("curl -sS -m 3 {url}"));
    assert!(
        !direct.status.success(),
        "the task's host port {url} answered an outsider: {}",
        String::from_utf8_lossy(&direct.stdout)
    );
    let published = outsider.run(&format!(
        "curl -sS -m 3 http://{}:8080/",
        addrs[host.as_str()]
    ));
    assert!(
        published.status.success(),
        "the published port of {host} from outside: {}",
        String::from_utf8_lossy(&published.stderr)
    );
}
