//! Keeping the client's address for real: three network namespaces this
//! test makes and removes — nodes a and b (a veth pair between them) and a
//! client c (a veth pair to a) — with the tunnel (`ClientAddr`) on both
//! nodes, a's mesh sending a published port to a task on b, once through
//! the kernel's NAT and once through the proxy. The task must see c's
//! address both times, and shutdown must leave nothing behind. Nothing
//! touches the host's own interfaces or rules. Needs root and VXLAN.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use flotilla_net::{
    ClientAddr, ClientPath, Endpoint, KernelMesh, Mesh, MeshTable, Protocol, PublishedPort,
};

const A: Ipv4Addr = Ipv4Addr::new(10, 232, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 232, 0, 2);
const A_TO_C: Ipv4Addr = Ipv4Addr::new(10, 232, 1, 1);
const C: Ipv4Addr = Ipv4Addr::new(10, 232, 1, 2);
const WAIT: Duration = Duration::from_secs(5);

struct Netns {
    name: String,
}

impl Netns {
    fn create(tag: &str) -> Netns {
        // SAFETY: geteuid has no preconditions and cannot fail.
        assert!(
            unsafe { libc::geteuid() } == 0,
            "this test makes network namespaces: run the suite as root"
        );
        let name = format!("flca-{tag}-{}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-netns", &self.name];
        all.extend(args);
        sh(&all)
    }

    fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend(args);
        sh(&all)
    }

    /// Runs `f` on a thread that entered the namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        let thread = std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the namespace");
            // SAFETY: a valid descriptor of a network namespace; only this
            // thread moves.
            let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        });
        match thread.join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// A runtime whose worker thread is in the namespace: what runs on it
    /// (sockets, the `ip` and `iptables` it starts) is there.
    fn runtime(&self) -> Arc<tokio::runtime::Runtime> {
        Arc::new(self.run(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
        }))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn veth(left: &Netns, right: &Netns, tag: &str, l: &str, r: &str) {
    let (vl, vr) = (
        format!("flca{tag}l{}", std::process::id() % 100_000),
        format!("flca{tag}r{}", std::process::id() % 100_000),
    );
    sh(&[
        "ip", "link", "add", &vl, "type", "veth", "peer", "name", &vr,
    ]);
    sh(&["ip", "link", "set", &vl, "netns", &left.name]);
    sh(&["ip", "link", "set", &vr, "netns", &right.name]);
    left.ip(&["addr", "add", l, "dev", &vl]);
    right.ip(&["addr", "add", r, "dev", &vr]);
    left.ip(&["link", "set", &vl, "up"]);
    right.ip(&["link", "set", &vr, "up"]);
}

/// A task on b: each connection is told the address it came from.
fn who_task(b: &Netns, port: u16) {
    let listener = b.run(move || TcpListener::bind(("0.0.0.0", port)).unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            if let Ok(peer) = conn.peer_addr() {
                let _ = conn.write_all(peer.ip().to_string().as_bytes());
            }
        }
    });
}

/// What the task told c through `to`.
fn seen_from_c(c: &Netns, to: SocketAddr) -> String {
    c.run(move || {
        let mut s = TcpStream::connect_timeout(&to, WAIT).unwrap_or_else(|e| panic!("{to}: {e}"));
        s.set_read_timeout(Some(WAIT)).ok();
        let mut seen = String::new();
        s.read_to_string(&mut seen).unwrap();
        seen
    })
}

fn table(published: u16) -> MeshTable {
    let mut t = MeshTable::new();
    let port = PublishedPort {
        service_id: "who".into(),
        protocol: Protocol::Tcp,
        published,
        target: 9000,
    };
    let task = Endpoint {
        task_id: "b1".into(),
        addr: SocketAddr::from((B, 9000)),
        healthy: true,
    };
    t.insert(port, vec![task]).unwrap();
    t.set_source(Some(IpAddr::V4(A)));
    t.set_client_path(Some(ClientPath::default()));
    t
}

/// Ours in `ns`: the tunnel device, routing rules, chains.
fn leftovers(ns: &Netns) -> Vec<String> {
    let mut out: Vec<String> = ns
        .ip(&["-o", "link", "show"])
        .lines()
        .filter(|l| l.contains("flotilla-ca"))
        .map(str::to_string)
        .collect();
    out.extend(
        ns.ip(&["rule", "show"])
            .lines()
            .filter(|l| l.contains("18000") || l.contains("18001") || l.contains("1810"))
            .map(str::to_string),
    );
    out.extend(
        ns.exec(&["iptables-save"])
            .lines()
            .filter(|l| l.contains("FLOTILLA-CA"))
            .map(str::to_string),
    );
    out
}

#[test]
fn a_task_on_another_node_sees_the_client_through_nat_and_proxy() {
    let a = Netns::create("a");
    let b = Netns::create("b");
    let c = Netns::create("c");
    veth(&a, &b, "ab", "10.232.0.1/24", "10.232.0.2/24");
    veth(&a, &c, "ac", "10.232.1.1/24", "10.232.1.2/24");
    // The client reaches a only; b routes the rest of the world by a, as
    // a node's default route would (reverse-path filtering asks for one).
    b.ip(&["route", "add", "default", "via", "10.232.0.1"]);
    who_task(&b, 9000);

    let (rt_a, rt_b) = (a.runtime(), b.runtime());
    let peers = BTreeSet::from([A, B]);
    let tunnel_b = rt_b
        .block_on(rt_b.spawn({
            let peers = peers.clone();
            async move {
                let t = ClientAddr::start(B).await.expect("the tunnel on b");
                t.apply(&peers).await.unwrap();
                t
            }
        }))
        .unwrap();
    let (tunnel_a, kernel, proxy) = rt_a
        .block_on(rt_a.spawn(async move {
            let t = ClientAddr::start(A).await.expect("the tunnel on a");
            t.apply(&peers).await.unwrap();
            let kernel = KernelMesh::start(IpAddr::V4(Ipv4Addr::UNSPECIFIED), None)
                .await
                .unwrap();
            kernel.apply(table(18080)).await.unwrap();
            let proxy = Mesh::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            proxy.apply(table(18081)).await.unwrap();
            (t, kernel, proxy)
        }))
        .unwrap();
    assert!(!leftovers(&a).is_empty());

    let nat = seen_from_c(&c, SocketAddr::from((A_TO_C, 18080)));
    assert_eq!(nat, C.to_string(), "through a's NAT the task saw {nat}");
    let proxied = seen_from_c(&c, SocketAddr::from((A_TO_C, 18081)));
    assert_eq!(
        proxied,
        C.to_string(),
        "through a's proxy the task saw {proxied}"
    );

    rt_a.block_on(rt_a.spawn(async move {
        proxy.shutdown().await;
        kernel.shutdown().await;
        tunnel_a.shutdown().await;
    }))
    .unwrap();
    rt_b.block_on(rt_b.spawn(async move { tunnel_b.shutdown().await }))
        .unwrap();
    assert_eq!(leftovers(&a), Vec::<String>::new());
    assert_eq!(leftovers(&b), Vec::<String>::new());
}
