//! The kernel path of the mesh for real: two network namespaces this test
//! makes and removes ("nodes" a and b, a veth pair between them), the
//! mesh's NAT rules written into a's, its endpoints served by real
//! sockets on both. Nothing touches the host's own interfaces or rules.
//! Needs root (and fails, saying so, without it).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use flotilla_net::kernel::AddrGuard;
use flotilla_net::{Endpoint, KernelMesh, MeshTable, Protocol, PublishedPort};

const A: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Every connect and read of the test gives up after this.
const WAIT: Duration = Duration::from_secs(5);

/// A network namespace of our own, removed on drop.
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
        let name = format!("flmk-{tag}-{}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["ip", "-netns", &self.name];
        all.extend(args);
        sh(&all);
    }

    /// Runs `args` inside the namespace; its stdout.
    fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend(args);
        sh(&all)
    }

    /// Runs `f` on a thread that entered the namespace: its sockets and
    /// the processes it starts are in the namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let thread = self.spawn(f);
        match thread.join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the namespace");
            // SAFETY: a valid descriptor of a network namespace; only this
            // thread moves (network namespaces are per thread).
            let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
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
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A task stand-in: each connection gets "<id> <client address>\n", then
/// its bytes echoed. Runs until the test's process ends.
fn tcp_task(ns: &Netns, id: &'static str, addr: SocketAddr) {
    let listener = ns.run(move || TcpListener::bind(addr).expect("bind a task"));
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let peer = conn.peer_addr().map(|a| a.ip().to_string());
                let _ = writeln!(conn, "{id} {}", peer.unwrap_or_default());
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = conn.read(&mut buf) {
                    if conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// A UDP task: answers each datagram with "<id>".
fn udp_task(ns: &Netns, id: &'static str, addr: SocketAddr) {
    let socket = ns.run(move || UdpSocket::bind(addr).expect("bind a udp task"));
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((_, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(id.as_bytes(), from);
        }
    });
}

/// Connects to `to`; the stream and the first line (task id, the address
/// the task saw the connection come from).
fn connect(to: SocketAddr) -> std::io::Result<(TcpStream, String, String)> {
    let stream = TcpStream::connect_timeout(&to, WAIT)?;
    stream.set_read_timeout(Some(WAIT))?;
    let mut line = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let id = words.next().unwrap_or_default().to_string();
    let seen = words.next().unwrap_or_default().to_string();
    Ok((stream, id, seen))
}

/// Which task each of `n` new connections to `to` reached.
fn spread(to: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for _ in 0..n {
        let (_, id, _) = connect(to).unwrap_or_else(|e| panic!("connect to {to}: {e}"));
        *count.entry(id).or_insert(0) += 1;
    }
    count
}

/// `flotilla_mesh_<what>_total` of `service` on the kernel path (with
/// `more` labels), as a scrape shows it.
fn kernel_counter(what: &str, service: &str, more: &str) -> u64 {
    let mut registry = prometheus_client::registry::Registry::default();
    flotilla_net::metrics::register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
    let series =
        format!("flotilla_mesh_{what}_total{{service_id=\"{service}\",path=\"kernel\"{more}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn endpoint(task: &str, addr: SocketAddr) -> Endpoint {
    Endpoint {
        task_id: task.into(),
        addr,
        healthy: true,
    }
}

fn port(service: &str, protocol: Protocol, published: u16) -> PublishedPort {
    PublishedPort {
        service_id: service.into(),
        protocol,
        published,
        target: 80,
    }
}

fn sock(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

/// Node a's mesh: `web` published on 18080 (both tasks on b), the VIP of
/// `api` (a task on a, one on b), `dns` on 18053/udp (on b), `idle` on
/// 18081 with no task.
fn table(web: Vec<Endpoint>) -> MeshTable {
    let mut t = MeshTable::new();
    t.set_source(Some(IpAddr::V4(A)));
    t.insert(port("web", Protocol::Tcp, 18080), web).unwrap();
    let api = vec![endpoint("a1", sock(A, 7004)), endpoint("b3", sock(B, 7003))];
    t.insert_at(IpAddr::V4(VIP), port("api", Protocol::Tcp, 80), api)
        .unwrap();
    let dns = vec![endpoint("u1", sock(B, 7053))];
    t.insert(port("dns", Protocol::Udp, 18053), dns).unwrap();
    t.insert(port("idle", Protocol::Tcp, 18081), vec![])
        .unwrap();
    t
}

fn web_tasks() -> Vec<Endpoint> {
    vec![endpoint("b1", sock(B, 7001)), endpoint("b2", sock(B, 7002))]
}

/// The service network of a's VIP answers a's own clients only.
fn guard() -> AddrGuard {
    AddrGuard {
        network: (Ipv4Addr::new(198, 18, 0, 0), 16),
        interfaces: vec!["lo".into()],
        not_ours: vec![],
    }
}

/// The kernel path's chains and hooks in `ns` (iptables-save lines).
fn mesh_rules(ns: &Netns) -> Vec<String> {
    ns.exec(&["iptables-save"])
        .lines()
        .filter(|l| l.contains("FLOTILLA-MESH") || l.contains("FLM-"))
        .map(str::to_string)
        .collect()
}

#[test]
fn published_ports_and_vips_balance_in_the_kernel_drain_and_clean_up() {
    let a = Netns::create("a");
    let b = Netns::create("b");
    let (va, vb) = (
        format!("flmka{}", std::process::id()),
        format!("flmkb{}", std::process::id()),
    );
    sh(&[
        "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
    ]);
    sh(&["ip", "link", "set", &va, "netns", &a.name]);
    sh(&["ip", "link", "set", &vb, "netns", &b.name]);
    a.ip(&["addr", "add", "10.231.0.1/24", "dev", &va]);
    b.ip(&["addr", "add", "10.231.0.2/24", "dev", &vb]);
    a.ip(&["link", "set", &va, "up"]);
    b.ip(&["link", "set", &vb, "up"]);
    a.ip(&["addr", "add", "198.18.0.2/32", "dev", "lo"]);
    // b routes the service network to a, as a neighbour could.
    b.ip(&["route", "add", "198.18.0.0/16", "via", "10.231.0.1"]);
    // As on a host with Docker: nothing is forwarded unless accepted.
    a.exec(&["iptables", "-P", "FORWARD", "DROP"]);

    tcp_task(&b, "b1", sock(B, 7001));
    tcp_task(&b, "b2", sock(B, 7002));
    tcp_task(&b, "b3", sock(B, 7003));
    tcp_task(&a, "a1", sock(A, 7004));
    udp_task(&b, "u1", sock(B, 7053));

    // A runtime whose worker thread is in a (made there): what the mesh
    // spawns (probes) and every socket and process it makes are in a.
    let rt = std::sync::Arc::new(a.run(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }));
    let on_a = {
        let rt = rt.clone();
        move |f: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
            rt.block_on(rt.spawn(f)).unwrap()
        }
    };
    // A mesh that is dropped without shutdown, as a killed daemon's.
    on_a(Box::pin(async {
        let killed = KernelMesh::start(IpAddr::V4(Ipv4Addr::UNSPECIFIED), Some(guard()))
            .await
            .expect("the kernel path sets up in a namespace of our own");
        killed.apply(table(web_tasks())).await.unwrap();
    }));
    assert!(mesh_rules(&a).iter().any(|l| l.contains("FLM-T-18080")));
    // The settings it turned on stay so (it could not put them back);
    // turned off here to see the next mesh put back what it found.
    for setting in ["net.ipv4.ip_forward", "net.ipv4.conf.all.route_localnet"] {
        a.exec(&["sysctl", "-qw", &format!("{setting}=0")]);
    }
    let mesh = rt
        .block_on(rt.spawn(async {
            KernelMesh::start(IpAddr::V4(Ipv4Addr::UNSPECIFIED), Some(guard()))
                .await
                .unwrap()
        }))
        .unwrap();
    assert!(
        !mesh_rules(&a).iter().any(|l| l.contains("FLM-")),
        "a killed daemon's route chains are removed at start: {:?}",
        mesh_rules(&a)
    );
    let mesh = std::sync::Arc::new(mesh);
    let apply = |m: std::sync::Arc<KernelMesh>, t: MeshTable| {
        rt.block_on(rt.spawn(async move { m.apply(t).await }))
            .unwrap()
    };
    apply(mesh.clone(), table(web_tasks())).unwrap();

    // The published port from a's loopback, to tasks on b: balanced, and
    // b sees the connections come from a's address.
    let published = sock(Ipv4Addr::LOCALHOST, 18080);
    let counts = a.run(move || spread(published, 40));
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(counts.values().all(|&n| n >= 5), "{counts:?}");
    let (_, _, seen) = a.run(move || connect(published)).unwrap();
    assert_eq!(seen, A.to_string());
    // From b, at a's address: in through a's PREROUTING, forwarded back.
    let counts = b.run(move || spread(sock(A, 18080), 20));
    assert_eq!(counts.values().sum::<usize>(), 20, "{counts:?}");

    // The VIP: a task on this node (the client's address kept) and one
    // on b.
    let vip = sock(VIP, 80);
    let counts = a.run(move || spread(vip, 30));
    assert_eq!(
        counts.keys().cloned().collect::<Vec<_>>(),
        ["a1", "b3"],
        "{counts:?}"
    );

    // b is not let in through the VIP: its connection is not translated
    // (and nothing listens at the VIP itself).
    let outside = b.run(move || connect(vip).map(|(_, id, _)| id));
    assert!(outside.is_err(), "b reached {outside:?} through the VIP");

    // UDP through the published port.
    let answer = a.run(|| {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.send_to(b"ping", "127.0.0.1:18053").unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = s
            .recv_from(&mut buf)
            .expect("a UDP answer through the mesh");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    assert_eq!(answer, "u1");

    // No task: refused at once, from this node and from outside; and the
    // published port is held against other programs.
    let refused = a.run(|| connect(sock(Ipv4Addr::LOCALHOST, 18081)).map(|_| ()));
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    let refused = b.run(|| connect(sock(A, 18081)).map(|_| ()));
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    let taken = a.run(|| TcpListener::bind("0.0.0.0:18080").map(|_| ()));
    assert_eq!(taken.unwrap_err().kind(), std::io::ErrorKind::AddrInUse);

    // Drain the task an open connection went to: no new connection
    // reaches it, the open one goes on through the rewrite.
    let (mut open, drained, _) = a.run(move || connect(published)).unwrap();
    let (m, task) = (mesh.clone(), drained.clone());
    on_a(Box::pin(async move { m.remove_endpoint(&task).await }));
    let counts = a.run(move || spread(published, 20));
    assert!(
        counts.len() == 1 && !counts.contains_key(&drained),
        "the drained task {drained} took connections: {counts:?}"
    );
    open.write_all(b"still here").unwrap();
    let mut echo = [0u8; 10];
    open.read_exact(&mut echo)
        .expect("the open connection survives the drain");
    assert_eq!(&echo, b"still here");
    // A table that drops the task as well changes nothing more; once a
    // table has left it out, the drain is forgotten, and a table with
    // both tasks again (a task of that id back) balances over both.
    let rest: Vec<Endpoint> = web_tasks()
        .into_iter()
        .filter(|e| e.task_id != drained)
        .collect();
    apply(mesh.clone(), table(rest)).unwrap();
    // Each rewrite counts the route chains' connections first: 40, 1 and
    // 1 before the drain, 20 after it.
    let web = kernel_counter("connections", "web", "");
    assert!(web >= 62, "{web} connections of web counted");
    // Each of them sent a line and got one back.
    let (sent, received) = (
        kernel_counter("bytes", "web", ",direction=\"in\""),
        kernel_counter("bytes", "web", ",direction=\"out\""),
    );
    assert!(
        sent > 62 * 40 && received > 62 * 40,
        "web: {sent} bytes in, {received} out"
    );
    apply(mesh.clone(), table(web_tasks())).unwrap();
    let counts = a.run(move || spread(published, 40));
    assert_eq!(counts.len(), 2, "{counts:?}");

    // A task that does not accept connections yet (running, not listening)
    // takes none: every connection goes to the other, none is refused;
    // once it listens, it takes its share.
    let mut with_late = web_tasks();
    with_late.push(endpoint("b4", sock(B, 7006)));
    apply(mesh.clone(), table(with_late)).unwrap();
    let counts = a.run(move || spread(published, 30));
    assert!(!counts.contains_key("b4"), "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 30, "{counts:?}");
    tcp_task(&b, "b4", sock(B, 7006));
    let reached = a.run(move || {
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            if spread(published, 10).contains_key("b4") {
                return true;
            }
        }
        false
    });
    assert!(
        reached,
        "a task that started listening never took a connection"
    );

    // Shutdown leaves nothing behind, settings included.
    let m = mesh.clone();
    on_a(Box::pin(async move { m.shutdown().await }));
    assert_eq!(mesh_rules(&a), Vec::<String>::new());
    for setting in ["net.ipv4.ip_forward", "net.ipv4.conf.all.route_localnet"] {
        assert_eq!(a.exec(&["sysctl", "-n", setting]).trim(), "0", "{setting}");
    }
    let freed = a.run(|| TcpListener::bind("0.0.0.0:18080").map(|_| ()));
    assert!(freed.is_ok(), "the published port is given up");
    assert!(
        a.run(move || connect(published).is_err()),
        "nothing serves it"
    );
}
