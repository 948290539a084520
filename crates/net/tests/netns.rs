//! Service addresses for real, in a network namespace each test makes and
//! removes (nothing is added to the host's own interfaces): `LocalAddrs`
//! keeping lo's addresses, and the mesh and the DNS server listening at
//! those addresses. Needs root (and fails, saying so, without it).

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;

use common::*;
use flotilla_net::{
    AddrError, Dns, DnsService, DnsTable, EndpointMode, LocalAddrs, Mesh, MeshError, MeshTable,
    Protocol, PublishedPort,
};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The service network of these tests.
const NETWORK: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 0, 0), 16);

fn v4(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn set(list: &[&str]) -> BTreeSet<Ipv4Addr> {
    list.iter().map(|s| v4(s)).collect()
}

/// A network namespace of our own, removed on drop.
struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace with lo up. Fails the test where it cannot make
    /// one (the suite runs as root, as CI does): a skipped test would pass.
    fn create(tag: &str) -> Netns {
        // SAFETY: geteuid has no preconditions and cannot fail.
        assert!(
            unsafe { libc::geteuid() } == 0,
            "this test makes a network namespace: run the suite as root"
        );
        let name = format!("flnet-{tag}-{}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2): {e}"));
        assert!(
            out.status.success(),
            "`ip netns add` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    /// Runs `ip -netns <ours> args`, which must succeed.
    fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-netns", &self.name])
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// lo's IPv4 addresses, as "a.b.c.d/len", sorted.
    fn addresses(&self) -> Vec<String> {
        let text = self.ip(&["-4", "-o", "address", "show", "dev", "lo"]);
        let mut all: Vec<String> = text
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                words.find(|w| *w == "inet")?;
                words.next().map(str::to_string)
            })
            .collect();
        all.sort();
        all
    }

    fn addrs(&self) -> LocalAddrs {
        LocalAddrs::new("lo", NETWORK).in_netns(&self.name)
    }

    /// Runs `body` on a runtime of its own, on a thread that entered the
    /// namespace: every socket it makes is in the namespace.
    fn run<F, Fut>(&self, body: F) -> Fut::Output
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future,
        Fut::Output: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        let thread = std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the namespace");
            // SAFETY: a valid descriptor of a network namespace; only this
            // thread moves (network namespaces are per thread).
            let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(body())
        });
        match thread.join() {
            Ok(output) => output,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[tokio::test]
async fn addresses_follow_the_wanted_set_and_nothing_else_is_touched() {
    let ns = Netns::create("addrs");
    // Not ours: outside the network. Ours: anything inside it, leftovers of
    // a killed daemon included, whatever their prefix length.
    ns.ip(&["address", "add", "10.9.9.9/32", "dev", "lo"]);
    ns.ip(&["address", "add", "198.19.0.7/32", "dev", "lo"]);
    ns.ip(&["address", "add", "198.18.9.9/32", "dev", "lo"]);
    ns.ip(&["address", "add", "198.18.0.3/24", "dev", "lo"]);
    let others = ["10.9.9.9/32", "127.0.0.1/8", "198.19.0.7/32"];
    let expect = |ours: &[&str]| {
        let mut all: Vec<String> = others.iter().chain(ours).map(|s| s.to_string()).collect();
        all.sort();
        all
    };
    let addrs = ns.addrs();

    addrs
        .apply(&set(&["198.18.0.1", "198.18.0.3"]))
        .await
        .unwrap();
    assert_eq!(ns.addresses(), expect(&["198.18.0.1/32", "198.18.0.3/32"]));

    addrs
        .apply(&set(&["198.18.0.3", "198.18.0.4"]))
        .await
        .unwrap();
    addrs
        .apply(&set(&["198.18.0.3", "198.18.0.4"]))
        .await
        .unwrap();
    assert_eq!(ns.addresses(), expect(&["198.18.0.3/32", "198.18.0.4/32"]));

    // Changed behind its back: put right by the next apply.
    ns.ip(&["address", "del", "198.18.0.4/32", "dev", "lo"]);
    ns.ip(&["address", "add", "198.18.0.50/32", "dev", "lo"]);
    addrs
        .apply(&set(&["198.18.0.3", "198.18.0.4"]))
        .await
        .unwrap();
    assert_eq!(ns.addresses(), expect(&["198.18.0.3/32", "198.18.0.4/32"]));

    // Refused as a whole: nothing changes.
    let err = addrs
        .apply(&set(&["198.18.0.5", "198.19.0.1"]))
        .await
        .unwrap_err();
    assert!(matches!(err, AddrError::OutsideNetwork { .. }), "{err}");
    assert_eq!(ns.addresses(), expect(&["198.18.0.3/32", "198.18.0.4/32"]));

    addrs.clear().await.unwrap();
    assert_eq!(ns.addresses(), expect(&[]));
    addrs.clear().await.unwrap();

    let missing = LocalAddrs::new("flnet-none0", NETWORK).in_netns(&ns.name);
    let err = missing.apply(&set(&["198.18.0.1"])).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot add service addresses: there is no network device flnet-none0"
    );
}

fn port(service: &str, protocol: Protocol, published: u16) -> PublishedPort {
    PublishedPort {
        service_id: service.into(),
        protocol,
        published,
        target: 80,
    }
}

async fn identify_at(addr: SocketAddr) -> String {
    let mut stream = within("connect", TcpStream::connect(addr))
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let mut id = Vec::new();
    let mut byte = [0u8; 1];
    while within("id", stream.read_exact(&mut byte)).await.is_ok() && byte[0] != b'\n' {
        id.push(byte[0]);
    }
    String::from_utf8(id).unwrap()
}

async fn udp_exchange(to: SocketAddr, message: &[u8]) -> (SocketAddr, Vec<u8>) {
    let client = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    client.send_to(message, to).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, from) = within("udp reply", client.recv_from(&mut buf))
        .await
        .unwrap();
    (from, buf[..n].to_vec())
}

fn query(name: &str) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = 99;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    message.to_vec().unwrap()
}

fn answer_ips(bytes: &[u8]) -> Vec<IpAddr> {
    let answer = Message::from_vec(bytes).unwrap();
    answer
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

async fn ask_tcp(server: SocketAddr, name: &str) -> Vec<IpAddr> {
    let bytes = query(name);
    let mut stream = within("connect", TcpStream::connect(server)).await.unwrap();
    stream
        .write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&bytes).await.unwrap();
    let len = within("length", stream.read_u16()).await.unwrap();
    let mut answer = vec![0u8; len as usize];
    within("answer", stream.read_exact(&mut answer))
        .await
        .unwrap();
    answer_ips(&answer)
}

/// The daemon's picture on one node: the DNS server at 198.18.0.1:53, a
/// service VIP 198.18.0.2 with port P, another service publishing P (and
/// 53) in ingress mode on the wildcard address.
#[test]
fn mesh_and_dns_listen_at_service_addresses_beside_the_wildcard() {
    let ns = Netns::create("vips");
    let addrs = ns.addrs();
    ns.run(move || async move {
        let dns_ip = v4("198.18.0.1");
        let vip = IpAddr::V4(v4("198.18.0.2"));
        let late_vip = IpAddr::V4(v4("198.18.0.3"));
        addrs
            .apply(&set(&["198.18.0.1", "198.18.0.2"]))
            .await
            .unwrap();

        let ingress = TcpBackend::start("ingress-1").await;
        let web = TcpBackend::start("web-1").await;
        let ingress_udp = UdpBackend::start("ingress-u").await;
        let web_udp = UdpBackend::start("web-u").await;
        let p = 8080;
        let mut table = MeshTable::new();
        let wildcard = [(Protocol::Tcp, p), (Protocol::Tcp, 53), (Protocol::Udp, 53)];
        for (protocol, published) in wildcard {
            let endpoint = match protocol {
                Protocol::Tcp => ingress.endpoint(),
                Protocol::Udp => ingress_udp.endpoint(),
            };
            table
                .insert(port("ingress", protocol, published), vec![endpoint])
                .unwrap();
        }
        table
            .insert_at(vip, port("web", Protocol::Tcp, p), vec![web.endpoint()])
            .unwrap();
        table
            .insert_at(vip, port("web", Protocol::Udp, p), vec![web_udp.endpoint()])
            .unwrap();
        // A VIP whose address is not on lo yet cannot be listened on.
        table
            .insert_at(
                late_vip,
                port("late", Protocol::Tcp, p),
                vec![web.endpoint()],
            )
            .unwrap();
        let mesh = Mesh::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let Err(MeshError::Ports(failures)) = mesh.apply(table.clone()).await else {
            panic!("ports expected to fail");
        };
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(failures[0].addr, SocketAddr::new(late_vip, p));

        let dns_addr = SocketAddr::new(IpAddr::V4(dns_ip), 53);
        let dns = Dns::with_upstreams(dns_addr, vec![]);
        let mut names = DnsTable::new();
        names.insert(DnsService {
            name: "web".into(),
            endpoint_mode: EndpointMode::Vip(vip),
            tasks: vec![],
        });
        dns.apply(names);
        let server = dns.clone();
        let serving = tokio::spawn(async move { server.run().await });

        // UDP answers come from the server's own address; the first query
        // may race the bind, so ask until one is answered.
        let client = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        let mut buf = vec![0u8; 65_535];
        let (n, from) = within("DNS over UDP", async {
            loop {
                client.send_to(&query("web"), dns_addr).await.unwrap();
                let wait = std::time::Duration::from_millis(200);
                if let Ok(got) = tokio::time::timeout(wait, client.recv_from(&mut buf)).await {
                    break got.unwrap();
                }
            }
        })
        .await;
        assert_eq!(from, dns_addr);
        assert_eq!(answer_ips(&buf[..n]), vec![vip]);
        assert_eq!(ask_tcp(dns_addr, "web").await, vec![vip]);

        // Port P: the VIP reaches web, every other address the ingress one.
        assert_eq!(identify_at(SocketAddr::new(vip, p)).await, "web-1");
        assert_eq!(identify_at((LOCALHOST, p).into()).await, "ingress-1");
        assert_eq!(identify_at((dns_ip, p).into()).await, "ingress-1");
        let (from, reply) = udp_exchange(SocketAddr::new(vip, p), b"hi").await;
        assert_eq!(
            (from, reply.as_slice()),
            (SocketAddr::new(vip, p), &b"web-u:hi"[..])
        );
        // Port 53 published in ingress mode coexists with the DNS server.
        assert_eq!(identify_at((LOCALHOST, 53).into()).await, "ingress-1");
        let (_, reply) = udp_exchange((LOCALHOST, 53).into(), b"q").await;
        assert_eq!(reply, b"ingress-u:q");

        // Once its address is there, the next apply opens the late VIP.
        addrs
            .apply(&set(&["198.18.0.1", "198.18.0.2", "198.18.0.3"]))
            .await
            .unwrap();
        mesh.apply(table).await.unwrap();
        assert_eq!(identify_at(SocketAddr::new(late_vip, p)).await, "web-1");

        dns.shutdown();
        within("DNS server ends", serving).await.unwrap().unwrap();
        mesh.shutdown().await;
        addrs.clear().await.unwrap();
    });
    assert!(!ns.addresses().iter().any(|a| a.starts_with("198.18.")));
}
