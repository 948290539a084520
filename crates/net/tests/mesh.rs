//! The routing mesh over real sockets on 127.0.0.1: round robin, drains,
//! dead endpoints, ports coming and going, isolation of services, UDP
//! flows, half-close and bulk transfers through splice.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use flotilla_net::{Endpoint, Mesh, MeshConfig, MeshError, MeshTable, Protocol, PublishedPort};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

async fn backends(ids: &[&str]) -> Vec<TcpBackend> {
    let mut started = Vec::new();
    for id in ids {
        started.push(TcpBackend::start(id).await);
    }
    started
}

fn endpoints(backends: &[TcpBackend]) -> Vec<Endpoint> {
    backends.iter().map(TcpBackend::endpoint).collect()
}

async fn count_ids(port: u16, requests: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..requests {
        *counts.entry(identify(port).await).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn round_robin_reaches_every_endpoint_evenly() {
    let tasks = backends(&["t1", "t2", "t3"]).await;
    let port = free_tcp_port();
    let mesh = Mesh::new(LOCALHOST);
    mesh.apply(tcp_table("web", port, endpoints(&tasks)))
        .await
        .unwrap();

    let counts = count_ids(port, 30).await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&n| n == 10), "uneven: {counts:?}");
}

#[tokio::test]
async fn removed_endpoint_gets_no_new_connections_but_open_ones_go_on() {
    let tasks = backends(&["t1", "t2", "t3"]).await;
    let port = free_tcp_port();
    let mesh = Mesh::new(LOCALHOST);
    let table = tcp_table("web", port, endpoints(&tasks));
    mesh.apply(table.clone()).await.unwrap();

    let (mut open, drained) = connect_and_identify(port).await;
    mesh.remove_endpoint(&drained);
    let counts = count_ids(port, 20).await;
    assert!(
        !counts.contains_key(&drained),
        "drained {drained} still chosen: {counts:?}"
    );
    assert_eq!(counts.len(), 2, "{counts:?}");

    // The store lags behind a stop: a table that still lists the task keeps
    // it drained.
    mesh.apply(table).await.unwrap();
    let counts = count_ids(port, 10).await;
    assert!(
        !counts.contains_key(&drained),
        "re-added by apply: {counts:?}"
    );

    // The connection opened before the drain still works both ways.
    within("write", open.write_all(b"still here"))
        .await
        .unwrap();
    let mut echoed = [0u8; 10];
    within("read", open.read_exact(&mut echoed)).await.unwrap();
    assert_eq!(&echoed, b"still here");
}

#[tokio::test]
async fn dead_endpoint_is_skipped_without_a_failed_request() {
    let tasks = backends(&["t1", "t2"]).await;
    let dead = Endpoint {
        task_id: "dead".into(),
        addr: (LOCALHOST, free_tcp_port()).into(),
        healthy: true,
    };
    let mut listed = endpoints(&tasks);
    listed.insert(1, dead);
    let port = free_tcp_port();
    let mesh = Mesh::new(LOCALHOST);
    mesh.apply(tcp_table("web", port, listed)).await.unwrap();

    // Every one of these must succeed: identify() panics otherwise.
    let counts = count_ids(port, 30).await;
    assert_eq!(
        counts.keys().cloned().collect::<HashSet<_>>(),
        HashSet::from(["t1".into(), "t2".into()])
    );
}

#[tokio::test]
async fn unhealthy_endpoint_is_never_chosen() {
    let tasks = backends(&["t1", "t2"]).await;
    let mut listed = endpoints(&tasks);
    listed[0].healthy = false;
    let port = free_tcp_port();
    let mesh = Mesh::new(LOCALHOST);
    mesh.apply(tcp_table("web", port, listed)).await.unwrap();

    let counts = count_ids(port, 10).await;
    assert_eq!(counts, HashMap::from([("t2".to_string(), 10)]));
}

#[tokio::test]
async fn service_without_endpoints_closes_the_connection() {
    let port = free_tcp_port();
    let mesh = Mesh::new(LOCALHOST);
    mesh.apply(tcp_table("web", port, vec![])).await.unwrap();

    let mut stream = within("connect", TcpStream::connect((LOCALHOST, port)))
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    let n = within("close", stream.read(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn removed_port_stops_listening_and_new_port_starts() {
    let tasks = backends(&["t1"]).await;
    let (old, new) = (free_tcp_port(), free_tcp_port());
    let mesh = Mesh::new(LOCALHOST);
    mesh.apply(tcp_table("web", old, endpoints(&tasks)))
        .await
        .unwrap();
    assert_eq!(identify(old).await, "t1");

    mesh.apply(tcp_table("web", new, endpoints(&tasks)))
        .await
        .unwrap();
    assert_eq!(mesh.listening(), vec![(Protocol::Tcp, None, new)]);
    let refused = TcpStream::connect((LOCALHOST, old)).await;
    assert!(refused.is_err(), "old port still accepts");
    assert_eq!(identify(new).await, "t1");

    // And the old port can be opened again at once.
    mesh.apply(tcp_table("web", old, endpoints(&tasks)))
        .await
        .unwrap();
    assert_eq!(identify(old).await, "t1");
}

#[tokio::test]
async fn two_services_never_mix() {
    let web = backends(&["web-1", "web-2"]).await;
    let api = backends(&["api-1", "api-2"]).await;
    let (web_port, api_port) = (free_tcp_port(), free_tcp_port());
    let mut table = MeshTable::new();
    add(&mut table, Protocol::Tcp, "web", web_port, endpoints(&web));
    add(&mut table, Protocol::Tcp, "api", api_port, endpoints(&api));
    let mesh = Mesh::new(LOCALHOST);
    mesh.apply(table).await.unwrap();

    for _ in 0..10 {
        assert!(identify(web_port).await.starts_with("web-"));
        assert!(identify(api_port).await.starts_with("api-"));
    }

    // A port handed from one service to another switches completely.
    mesh.apply(tcp_table("api", web_port, endpoints(&api)))
        .await
        .unwrap();
    for _ in 0..10 {
        assert!(identify(web_port).await.starts_with("api-"));
    }
}

#[tokio::test]
async fn a_port_that_cannot_open_is_reported_and_the_others_still_open() {
    let tasks = backends(&["t1"]).await;
    let taken = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let good = free_tcp_port();
    let mut table = MeshTable::new();
    add(
        &mut table,
        Protocol::Tcp,
        "web",
        taken_port,
        endpoints(&tasks),
    );
    add(&mut table, Protocol::Tcp, "api", good, endpoints(&tasks));
    let mesh = Mesh::new(LOCALHOST);

    let Err(MeshError::Ports(failures)) = mesh.apply(table.clone()).await else {
        panic!("ports expected to fail");
    };
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].addr.port(), taken_port);
    assert_eq!(failures[0].service_id, "web");
    assert_eq!(identify(good).await, "t1");

    // Once the port is free, the next apply opens it.
    drop(taken);
    mesh.apply(table).await.unwrap();
    assert_eq!(identify(taken_port).await, "t1");
}

#[tokio::test]
async fn dropping_the_mesh_closes_its_ports() {
    let tasks = backends(&["t1"]).await;
    let port = free_tcp_port();
    let mesh = Mesh::new(LOCALHOST);
    mesh.apply(tcp_table("web", port, endpoints(&tasks)))
        .await
        .unwrap();
    mesh.shutdown().await;
    assert!(TcpStream::connect((LOCALHOST, port)).await.is_err());
}

#[tokio::test]
async fn half_close_still_delivers_the_reply() {
    let tasks = backends(&["t1"]).await;
    let port = free_tcp_port();
    let mesh = Mesh::new(LOCALHOST);
    mesh.apply(tcp_table("web", port, endpoints(&tasks)))
        .await
        .unwrap();

    let mut stream = within("connect", TcpStream::connect((LOCALHOST, port)))
        .await
        .unwrap();
    stream.write_all(b"request").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut reply = Vec::new();
    within("reply until EOF", stream.read_to_end(&mut reply))
        .await
        .unwrap();
    assert_eq!(reply, b"t1\nrequest");
}

async fn bulk_transfer(zero_copy: bool, size: usize) {
    let tasks = backends(&["t1"]).await;
    let port = free_tcp_port();
    let config = MeshConfig {
        zero_copy,
        ..MeshConfig::default()
    };
    let mesh = Mesh::with_config(LOCALHOST, config);
    mesh.apply(tcp_table("web", port, endpoints(&tasks)))
        .await
        .unwrap();

    // A pattern that a lost, doubled or reordered chunk cannot reproduce.
    let sent: Vec<u8> = (0..size)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let stream = within("connect", TcpStream::connect((LOCALHOST, port)))
        .await
        .unwrap();
    let (mut read, mut write) = stream.into_split();
    let payload = sent.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&payload).await.unwrap();
        write.shutdown().await.unwrap();
    });
    let mut received = Vec::with_capacity(size + 3);
    within("bulk echo", read.read_to_end(&mut received))
        .await
        .unwrap();
    within("writer", writer).await.unwrap();
    assert_eq!(&received[..3], b"t1\n");
    assert_eq!(received.len() - 3, sent.len());
    assert!(received[3..] == sent[..], "echoed bytes differ");
}

#[tokio::test]
async fn large_transfer_is_intact_through_splice() {
    bulk_transfer(true, 64 << 20).await;
}

#[tokio::test]
async fn large_transfer_is_intact_through_the_copy_fallback() {
    bulk_transfer(false, 16 << 20).await;
}

async fn udp_exchange(client: &UdpSocket, port: u16, message: &[u8]) -> String {
    udp_exchange_at(client, (LOCALHOST, port).into(), message).await
}

async fn udp_exchange_at(client: &UdpSocket, to: SocketAddr, message: &[u8]) -> String {
    client.send_to(message, to).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, from) = within("udp reply", client.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(from, to, "reply must come from the published address");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn udp_table(port: u16, endpoints: Vec<Endpoint>) -> MeshTable {
    let mut table = MeshTable::new();
    add(&mut table, Protocol::Udp, "echo", port, endpoints);
    table
}

#[tokio::test]
async fn udp_echo_through_the_mesh_with_one_flow_per_client() {
    let (u1, u2) = (UdpBackend::start("u1").await, UdpBackend::start("u2").await);
    let port = free_udp_port();
    let mesh = Mesh::new(LOCALHOST);
    mesh.apply(udp_table(port, vec![u1.endpoint(), u2.endpoint()]))
        .await
        .unwrap();

    let mut seen = HashSet::new();
    for _ in 0..4 {
        let client = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        let first = udp_exchange(&client, port, b"ping").await;
        let (id, payload) = first.split_once(':').unwrap();
        assert_eq!(payload, "ping");
        // The flow sticks: the same client keeps reaching the same task.
        for _ in 0..3 {
            assert_eq!(
                udp_exchange(&client, port, b"again").await,
                format!("{id}:again")
            );
        }
        seen.insert(id.to_string());
    }
    assert_eq!(seen.len(), 2, "flows were not spread: {seen:?}");
}

#[tokio::test]
async fn udp_flow_ends_when_idle_and_the_next_datagram_makes_a_new_one() {
    let (u1, u2) = (UdpBackend::start("u1").await, UdpBackend::start("u2").await);
    let port = free_udp_port();
    let config = MeshConfig {
        udp_idle_timeout: Duration::from_millis(50),
        ..MeshConfig::default()
    };
    let mesh = Mesh::with_config(LOCALHOST, config);
    mesh.apply(udp_table(port, vec![u1.endpoint(), u2.endpoint()]))
        .await
        .unwrap();

    let client = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let first = udp_exchange(&client, port, b"a").await;
    // Real time here: the flow's timer and the sockets must agree on it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = udp_exchange(&client, port, b"a").await;
    assert_ne!(first, second, "an idle flow was kept");
}

#[tokio::test]
async fn udp_flows_are_bounded() {
    let u1 = UdpBackend::start("u1").await;
    let port = free_udp_port();
    let config = MeshConfig {
        udp_max_flows: 1,
        ..MeshConfig::default()
    };
    let mesh = Mesh::with_config(LOCALHOST, config);
    mesh.apply(udp_table(port, vec![u1.endpoint()]))
        .await
        .unwrap();

    let first = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    assert_eq!(udp_exchange(&first, port, b"x").await, "u1:x");
    let second = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    second.send_to(b"y", (LOCALHOST, port)).await.unwrap();
    let mut buf = [0u8; 16];
    let dropped =
        tokio::time::timeout(Duration::from_millis(300), second.recv_from(&mut buf)).await;
    assert!(dropped.is_err(), "a flow beyond the bound was made");
    assert_eq!(udp_exchange(&first, port, b"z").await, "u1:z");
}

#[tokio::test]
async fn udp_endpoint_that_refuses_is_tried_last_by_new_flows() {
    let live = UdpBackend::start("live").await;
    let dead = Endpoint {
        task_id: "dead".into(),
        addr: (LOCALHOST, free_udp_port()).into(),
        healthy: true,
    };
    let port = free_udp_port();
    let mesh = Mesh::new(LOCALHOST);
    mesh.apply(udp_table(port, vec![dead, live.endpoint()]))
        .await
        .unwrap();

    // The first flow goes to the dead endpoint: its datagram is lost (as UDP
    // allows) and the refusal ends the flow; a resend gets a new one.
    let first = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let mut answered = false;
    for _ in 0..5 {
        first.send_to(b"hello", (LOCALHOST, port)).await.unwrap();
        let mut buf = [0u8; 64];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(300), first.recv_from(&mut buf)).await
        {
            assert_eq!(&buf[..n], b"live:hello");
            answered = true;
            break;
        }
    }
    assert!(answered, "no flow reached the live endpoint");

    // New clients now reach the live endpoint at their first datagram.
    for _ in 0..4 {
        let client = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        assert_eq!(udp_exchange(&client, port, b"x").await, "live:x");
    }
}

#[tokio::test]
async fn tcp_endpoint_that_refused_is_tried_last_by_new_connections() {
    let tasks = backends(&["t1", "t2"]).await;
    let dead = Endpoint {
        task_id: "dead".into(),
        addr: (LOCALHOST, free_tcp_port()).into(),
        healthy: true,
    };
    let mut listed = endpoints(&tasks);
    listed.insert(0, dead);
    let port = free_tcp_port();
    let mesh = Mesh::new(LOCALHOST);
    mesh.apply(tcp_table("web", port, listed)).await.unwrap();

    // Round robin still alternates over the two live tasks: the dead one
    // no longer takes a turn (and so no longer hands its share to one task).
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..12 {
            ids.push(identify(port).await);
        }
        ids
    };
    let counts = ids.iter().fold(HashMap::new(), |mut m, id| {
        *m.entry(id.as_str()).or_insert(0) += 1;
        m
    });
    assert_eq!(counts.len(), 2, "{ids:?}");
    assert!(
        counts.values().all(|&n| (5..=7).contains(&n)),
        "uneven: {ids:?}"
    );
}

/// A second loopback address: all of 127.0.0.0/8 is local on Linux, so it
/// stands in for a service VIP without adding anything to the host.
const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A port free for both TCP and UDP on every address.
fn free_port_everywhere() -> u16 {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP");
}

fn add_at(
    table: &mut MeshTable,
    ip: IpAddr,
    protocol: Protocol,
    service: &str,
    port: u16,
    endpoints: Vec<Endpoint>,
) {
    let published = PublishedPort {
        service_id: service.into(),
        protocol,
        published: port,
        target: 80,
    };
    table
        .insert_at(ip, published, endpoints)
        .expect("valid table");
}

async fn identify_at(ip: IpAddr, port: u16) -> String {
    let mut stream = within("connect", TcpStream::connect((ip, port)))
        .await
        .expect("connect through the mesh");
    let mut id = Vec::new();
    within("id line", async {
        let mut byte = [0u8; 1];
        while stream.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
            id.push(byte[0]);
        }
    })
    .await;
    String::from_utf8(id).unwrap()
}

#[tokio::test]
async fn a_route_at_a_specific_address_shares_its_port_with_the_wildcard_route() {
    let (a, b) = (backends(&["a-1"]).await, backends(&["b-1", "b-2"]).await);
    let (ua, ub) = (UdpBackend::start("ua").await, UdpBackend::start("ub").await);
    let port = free_port_everywhere();
    let wildcard = || {
        let mut table = MeshTable::new();
        add(&mut table, Protocol::Tcp, "a", port, endpoints(&a));
        add(&mut table, Protocol::Udp, "a", port, vec![ua.endpoint()]);
        table
    };
    let with_vip = |mut table: MeshTable| {
        add_at(&mut table, VIP, Protocol::Tcp, "b", port, endpoints(&b));
        add_at(
            &mut table,
            VIP,
            Protocol::Udp,
            "b",
            port,
            vec![ub.endpoint()],
        );
        table
    };
    // The production case: the mesh's own address is the wildcard.
    let mesh = Mesh::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED));

    // Wildcard sockets bind first (table order), the VIP's after them.
    mesh.apply(with_vip(wildcard())).await.unwrap();
    assert_eq!(
        mesh.listening(),
        vec![
            (Protocol::Tcp, None, port),
            (Protocol::Tcp, Some(VIP), port),
            (Protocol::Udp, None, port),
            (Protocol::Udp, Some(VIP), port),
        ]
    );
    for _ in 0..4 {
        assert_eq!(identify_at(LOCALHOST, port).await, "a-1");
        assert!(identify_at(VIP, port).await.starts_with("b-"));
    }
    let client = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let to_a = SocketAddr::new(LOCALHOST, port);
    let to_b = SocketAddr::new(VIP, port);
    assert_eq!(udp_exchange_at(&client, to_a, b"x").await, "ua:x");
    // The reply comes from the VIP itself (checked in udp_exchange_at).
    assert_eq!(udp_exchange_at(&client, to_b, b"y").await, "ub:y");

    // Draining a task takes it out of the VIP's route too.
    mesh.remove_endpoint("b-1");
    for _ in 0..4 {
        assert_eq!(identify_at(VIP, port).await, "b-2");
    }

    // The VIP alone: the wildcard is closed, the VIP goes on.
    mesh.apply(with_vip(MeshTable::new())).await.unwrap();
    assert!(TcpStream::connect((LOCALHOST, port)).await.is_err());
    assert_eq!(identify_at(VIP, port).await, "b-2");

    // And the wildcard binds again beside the VIP, in the other order.
    mesh.apply(with_vip(wildcard())).await.unwrap();
    assert_eq!(identify_at(LOCALHOST, port).await, "a-1");
    assert_eq!(identify_at(VIP, port).await, "b-2");
    let client = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    assert_eq!(udp_exchange_at(&client, to_a, b"z").await, "ua:z");
    assert_eq!(udp_exchange_at(&client, to_b, b"w").await, "ub:w");

    // Without the VIP's route, its address falls to the wildcard.
    mesh.apply(wildcard()).await.unwrap();
    assert_eq!(identify_at(VIP, port).await, "a-1");
    mesh.shutdown().await;
}

#[tokio::test]
async fn two_routes_at_one_address_are_refused_rather_than_sharing_it() {
    let (a, b) = (backends(&["a-1"]).await, backends(&["b-1"]).await);
    let port = free_tcp_port();
    let mut table = tcp_table("a", port, endpoints(&a));
    // The mesh's own address, named explicitly: the same socket address as
    // the route above, which SO_REUSEPORT alone would let both bind.
    add_at(
        &mut table,
        LOCALHOST,
        Protocol::Tcp,
        "b",
        port,
        endpoints(&b),
    );
    let mesh = Mesh::new(LOCALHOST);

    let Err(MeshError::Ports(failures)) = mesh.apply(table).await else {
        panic!("ports expected to fail");
    };
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].service_id, "b");
    assert_eq!(failures[0].addr, SocketAddr::new(LOCALHOST, port));
    assert_eq!(mesh.listening(), vec![(Protocol::Tcp, None, port)]);
    for _ in 0..4 {
        assert_eq!(identify(port).await, "a-1");
    }
}

/// A socket bound with SO_REUSEPORT, as another program (nginx with
/// `reuseport`, say) would hold it.
fn foreign_reuseport_socket(udp: bool, port: u16) -> socket2::Socket {
    use socket2::{Domain, Socket, Type};
    let kind = if udp { Type::DGRAM } else { Type::STREAM };
    let socket = Socket::new(Domain::IPV4, kind, None).unwrap();
    socket.set_reuse_port(true).unwrap();
    socket
        .bind(&SocketAddr::new(LOCALHOST, port).into())
        .unwrap();
    if !udp {
        socket.listen(16).unwrap();
    }
    socket
}

#[tokio::test]
async fn a_port_another_program_shares_with_so_reuseport_is_not_joined() {
    let tasks = backends(&["t1"]).await;
    let u1 = UdpBackend::start("u1").await;
    let port = free_port_everywhere();
    let tcp = foreign_reuseport_socket(false, port);
    let udp = foreign_reuseport_socket(true, port);
    let mut table = tcp_table("web", port, endpoints(&tasks));
    add(&mut table, Protocol::Udp, "web", port, vec![u1.endpoint()]);
    let mesh = Mesh::new(LOCALHOST);

    let Err(MeshError::Ports(failures)) = mesh.apply(table.clone()).await else {
        panic!("ports expected to fail");
    };
    assert_eq!(failures.len(), 2, "{failures:?}");
    for failure in &failures {
        assert_eq!(failure.source.kind(), std::io::ErrorKind::AddrInUse);
    }
    assert!(mesh.listening().is_empty());

    // Once the other program is gone, the next apply opens both.
    drop((tcp, udp));
    mesh.apply(table).await.unwrap();
    assert_eq!(identify(port).await, "t1");
    let client = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    assert_eq!(udp_exchange(&client, port, b"x").await, "u1:x");
}

/// A TCP backend on 127.0.0.1 that answers each connection with the
/// address it came from.
async fn peer_reporter() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            let _ = stream
                .write_all(format!("{}\n", peer.ip()).as_bytes())
                .await;
        }
    });
    (addr, task)
}

/// The source address a connection through the mesh reached the backend
/// from, with the table's source set to `source`.
async fn tcp_source_seen(source: Option<IpAddr>) -> String {
    let (backend, task) = peer_reporter().await;
    let port = free_tcp_port();
    let mesh = Mesh::new(LOCALHOST);
    let mut table = tcp_table(
        "web",
        port,
        vec![Endpoint {
            task_id: "t1".into(),
            addr: backend,
            healthy: true,
        }],
    );
    table.set_source(source);
    mesh.apply(table).await.unwrap();
    let seen = identify(port).await;
    task.abort();
    seen
}

#[tokio::test]
async fn connections_come_from_the_nodes_own_address() {
    // All of 127/8 is this host's: 127.0.0.2 stands for a second address
    // of a node with several.
    let own: IpAddr = "127.0.0.2".parse().unwrap();
    assert_eq!(tcp_source_seen(Some(own)).await, "127.0.0.2");
    assert_eq!(tcp_source_seen(None).await, "127.0.0.1");
}

#[tokio::test]
async fn an_own_address_this_host_does_not_have_is_no_failure() {
    // 192.0.2.1 (TEST-NET-1): what a node behind NAT advertises, not
    // local. The kernel picks the source, as without one.
    let behind_nat: IpAddr = "192.0.2.1".parse().unwrap();
    assert_eq!(tcp_source_seen(Some(behind_nat)).await, "127.0.0.1");
    let v6: IpAddr = "::1".parse().unwrap();
    assert_eq!(tcp_source_seen(Some(v6)).await, "127.0.0.1");
}

#[tokio::test]
async fn udp_flows_come_from_the_nodes_own_address() {
    // A backend that answers each datagram with its sender's address.
    let backend = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        while let Ok((_, from)) = backend.recv_from(&mut buf).await {
            let _ = backend
                .send_to(from.ip().to_string().as_bytes(), from)
                .await;
        }
    });
    let endpoint = Endpoint {
        task_id: "u1".into(),
        addr: backend_addr,
        healthy: true,
    };
    let port = free_udp_port();
    let mesh = Mesh::new(LOCALHOST);
    for (source, seen) in [("127.0.0.3", "127.0.0.3"), ("192.0.2.1", "127.0.0.1")] {
        let mut table = udp_table(port, vec![endpoint.clone()]);
        table.set_source(source.parse().ok());
        mesh.apply(table).await.unwrap();
        // A new client, so a new flow with the source now set.
        let client = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        assert_eq!(udp_exchange(&client, port, b"who").await, seen);
    }
    task.abort();
}
