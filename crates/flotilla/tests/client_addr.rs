//! The client's own address through the routing mesh (moby#25526): a
//! manager and two workers in network namespaces (docker executor), a
//! service whose one task (a container on worker01) answers each HTTP
//! request with the address it came from (busybox httpd's CGI
//! `$REMOTE_ADDR`), a UDP echo there that answers with the sender's address
//! (`flotilla-udpfrom`), and a client in a namespace of its own on the cluster's
//! bridge. A request and a datagram through EVERY node's address (worker01:
//! the task is there; the others send it on to worker01) must reach the
//! task from the client's address: first on the kernel path, then, each
//! daemon restarted with `--mesh userspace`, on the proxy. Needs root,
//! iproute2, iptables, VXLAN and the test images.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::cluster::{wait_timed as wait_until, Cluster};

const PREFIX: &str = "fcad";
const SUBNET: &str = "10.213.88";
const HOSTS: [&str; 3] = ["manager", "worker01", "worker02"];
const CLIENT_NS: &str = "fcad-client";
const CLIENT_ADDR: &str = "10.213.88.200";
const PORT: u16 = 18300;
const UDP_PORT: u16 = 18301;
const PROXY_PORT: u16 = 18302;

fn sh(script: &str) -> Output {
    Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("sh")
}

/// A machine on the hosts' network, outside the swarm: a namespace on the
/// cluster's bridge with an address of its own. Gone on drop.
struct Client;

impl Client {
    fn new() -> Client {
        let ns = CLIENT_NS;
        let out = sh(&format!(
            "ip netns del {ns} 2>/dev/null; ip link del fcad-vcl 2>/dev/null; \
             set -e; ip netns add {ns}; \
             ip link add fcad-vcl type veth peer name fcad-vcl-p; \
             ip link set fcad-vcl-p netns {ns}; \
             ip link set fcad-vcl master {PREFIX}-br up; \
             ip -n {ns} link set lo up; ip -n {ns} link set fcad-vcl-p up; \
             ip -n {ns} addr add {CLIENT_ADDR}/24 dev fcad-vcl-p"
        ));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Client
    }

    /// The body of `GET url` from the client, or why not.
    fn get(&self, url: &str) -> Result<String, String> {
        let out = sh(&format!(
            "ip netns exec {CLIENT_NS} curl -sS -m 3 --fail {url}"
        ));
        if out.status.success() {
            // httpd listens on IPv6 too: an IPv4 client is `[::ffff:a.b.c.d]`.
            let seen = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let v4 = seen.trim_start_matches("[::ffff:").trim_end_matches(']');
            Ok(v4.to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Client {
    /// One datagram from the client to `to`: the answer, or why none.
    fn udp(&self, to: std::net::SocketAddr) -> Result<String, String> {
        let path = format!("/run/netns/{CLIENT_NS}");
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let ns = std::fs::File::open(&path).map_err(|e| e.to_string())?;
            // SAFETY: a valid namespace descriptor; only this thread moves.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error().to_string());
            }
            let s = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok();
            s.send_to(b"who", to).map_err(|e| e.to_string())?;
            let mut buf = [0u8; 1500];
            let (n, _) = s.recv_from(&mut buf).map_err(|e| format!("{to}: {e}"))?;
            Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
        })
        .join()
        .expect("the client's thread")
    }
}

impl Client {
    /// What a TCP server at `to` says to the client before it closes.
    fn tcp_said(&self, to: std::net::SocketAddr) -> Result<String, String> {
        let path = format!("/run/netns/{CLIENT_NS}");
        std::thread::spawn(move || {
            use std::io::Read;
            use std::os::fd::AsRawFd;
            let ns = std::fs::File::open(&path).map_err(|e| e.to_string())?;
            // SAFETY: a valid namespace descriptor; only this thread moves.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error().to_string());
            }
            let mut s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(3))
                .map_err(|e| format!("{to}: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(3))).ok();
            let mut text = String::new();
            s.read_to_string(&mut text)
                .map_err(|e| format!("{to}: {e}"))?;
            Ok(text.trim().to_string())
        })
        .join()
        .expect("the client's thread")
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        sh(&format!(
            "ip netns del {CLIENT_NS}; ip link del fcad-vcl 2>/dev/null"
        ));
    }
}

fn node_addr(c: &Cluster, host: &str) -> String {
    c.ok(
        "manager",
        &["node", "inspect", "--format", "{{.Status.Addr}}", host],
    )
    .trim()
    .to_string()
}

fn daemon_log(host: &str) -> String {
    std::fs::read_to_string(format!("/run/flotilla-cluster/{PREFIX}/{host}/daemon.log"))
        .unwrap_or_default()
}

/// Through every node, the task must see the client's address. Each node
/// gets a few seconds to have the route (a restarted node its first table).
fn every_node_keeps_the_client(client: &Client, addrs: &BTreeMap<&str, String>, path: &str) {
    for host in HOSTS {
        let url = format!("http://{}:{PORT}/cgi-bin/addr", addrs[host]);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = client.get(&url);
        while last.is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
            last = client.get(&url);
        }
        // Several connections: each is balanced, NATed or proxied anew.
        for _ in 0..3 {
            match &last {
                Ok(seen) => assert_eq!(
                    seen, CLIENT_ADDR,
                    "{path}: through {host} the task saw {seen}, not the client"
                ),
                Err(e) => panic!("{path}: through {host}: {e}"),
            }
            last = client.get(&url);
        }
        println!("{path}: through {host} the task saw the client's {CLIENT_ADDR}");
        let to = format!("{}:{UDP_PORT}", addrs[host]).parse().unwrap();
        let mut answer = client.udp(to);
        let deadline = Instant::now() + Duration::from_secs(10);
        while answer.is_err() && Instant::now() < deadline {
            answer = client.udp(to);
        }
        let want = format!("{CLIENT_ADDR} who");
        match answer {
            Ok(seen) => assert_eq!(seen, want, "{path}: UDP through {host}"),
            Err(e) => panic!("{path}: UDP through {host}: {e}"),
        }
        println!("{path}: UDP through {host} came from the client's {CLIENT_ADDR}");

        // The opted-in port: its task reads the PROXY protocol header.
        let to = format!("{}:{PROXY_PORT}", addrs[host]).parse().unwrap();
        let mut said = client.tcp_said(to);
        let deadline = Instant::now() + Duration::from_secs(10);
        while said.as_ref().map_or(true, |s| s.is_empty()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
            said = client.tcp_said(to);
        }
        let said = said.unwrap_or_else(|e| panic!("{path}: PROXY protocol through {host}: {e}"));
        let want = format!("PROXY TCP4 {CLIENT_ADDR} {} ", addrs[host]);
        assert!(
            said.starts_with(&want) && said.ends_with(&format!(" {PROXY_PORT}")),
            "{path}: PROXY protocol through {host}: the task read {said:?}"
        );
        println!("{path}: PROXY protocol through {host}: {said}");
    }
}

/// Stops `host`'s daemon (SIGTERM: it takes its mesh rules with it) and
/// starts it again with `--mesh MODE`.
fn restart_with_mesh(c: &Cluster, host: &str, mode: &str) {
    let pid_file = format!("/run/flotilla-cluster/{PREFIX}/{host}/flotilla.pid");
    let pid = std::fs::read_to_string(&pid_file).expect("the daemon's pid");
    let pid = pid.trim();
    sh(&format!("kill -TERM {pid}"));
    wait_until(Duration::from_secs(30), "the daemon stopped", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/cluster.sh"
        ))
        .args(["start", "--prefix", PREFIX, host])
        .env("FLOTILLA_BIN", common::FLOTILLA)
        .env("FLOTILLA_MESH", mode)
        .output()
        .expect("cluster.sh start");
    assert!(
        out.status.success(),
        "start {host}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = c;
}

#[test]
fn slow_the_task_sees_the_client_through_every_node_on_both_paths() {
    let c = Cluster::up(PREFIX, SUBNET, 1, 2, "docker");
    let addrs: BTreeMap<&str, String> = HOSTS.iter().map(|h| (*h, node_addr(&c, h))).collect();
    let client = Client::new();
    // One task, on worker01: through worker01 the endpoint is local, through
    // the manager and worker02 it is on another node.
    let script = "d=$(mktemp -d) && mkdir $d/cgi-bin && \
        printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > $d/cgi-bin/addr && \
        chmod 755 $d $d/cgi-bin $d/cgi-bin/addr && \
        exec busybox httpd -f -p ${PORT_8080:-8080} -h $d";
    let published = format!("{PORT}:8080");
    c.ok(
        "manager",
        &[
            "service",
            "create",
            "-d",
            "--name",
            "who",
            "--constraint",
            "node.hostname==worker01",
            "--stop-grace-period",
            "1s",
            "-p",
            &published,
            "flotilla-busybox",
            "sh",
            "-c",
            script,
        ],
    );
    let udp_published = format!("{UDP_PORT}:9999/udp");
    c.ok(
        "manager",
        &[
            "service",
            "create",
            "-d",
            "--name",
            "udpwho",
            "--constraint",
            "node.hostname==worker01",
            "--stop-grace-period",
            "1s",
            "-p",
            &udp_published,
            "flotilla-udpfrom",
        ],
    );
    // A label that names a port the service does not publish is refused.
    let (ok, text) = c.flotilla(
        "manager",
        &[
            "service",
            "create",
            "--label",
            "com.flotilla.proxy-protocol=18399/v2",
            "-p",
            "18303:80",
            "flotilla-busybox",
            "true",
        ],
    );
    assert!(
        !ok && text.contains("port 18399 is not published by the service"),
        "{text}"
    );
    // Each connection: the task answers the first line it reads, the
    // PROXY protocol header, and closes.
    let proxy_published = format!("{PROXY_PORT}:8080");
    let proxy_label = format!("com.flotilla.proxy-protocol={PROXY_PORT}/v1");
    c.ok(
        "manager",
        &[
            "service",
            "create",
            "-d",
            "--name",
            "proxied",
            "--constraint",
            "node.hostname==worker01",
            "--stop-grace-period",
            "1s",
            "--label",
            &proxy_label,
            "-p",
            &proxy_published,
            "flotilla-busybox",
            "nc",
            "-ll",
            "-p",
            "8080",
            "-e",
            "sh",
            "-c",
            "read line; echo \"$line\"",
        ],
    );
    wait_until(Duration::from_secs(60), "the services running", || {
        ["who", "udpwho", "proxied"]
            .iter()
            .all(|s| c.running("manager", s).len() == 1)
    });
    for host in HOSTS {
        let log = daemon_log(host);
        assert!(
            log.contains("routing mesh: in the kernel"),
            "{host} is not on the kernel path:\n{log}"
        );
        assert!(
            log.contains("routing mesh: clients keep their addresses"),
            "{host} does not keep clients' addresses:\n{log}"
        );
    }
    every_node_keeps_the_client(&client, &addrs, "kernel path");

    for host in HOSTS {
        restart_with_mesh(&c, host, "userspace");
    }
    wait_until(
        Duration::from_secs(60),
        "the services running again",
        || {
            ["who", "udpwho", "proxied"]
                .iter()
                .all(|s| c.running("manager", s).len() == 1)
        },
    );
    for host in HOSTS {
        let log = daemon_log(host);
        assert!(
            log.contains("routing mesh: user-space proxy (--mesh userspace)"),
            "{host} did not restart on the proxy:\n{log}"
        );
    }
    every_node_keeps_the_client(&client, &addrs, "user-space proxy");
}
