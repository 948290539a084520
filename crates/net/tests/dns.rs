//! The DNS server over real sockets on 127.0.0.1, queried with messages
//! built by hickory-proto: service names, tasks.<name>, dnsrr, NXDOMAIN,
//! table swaps, and forwarding (to a second server standing in for the
//! host's resolver).

mod common;

use std::net::{IpAddr, SocketAddr};

use common::{within, LOCALHOST};
use flotilla_net::{Dns, DnsService, DnsTable, EndpointMode};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// A running server and the task serving it (stopped on drop).
struct Running {
    dns: Dns,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.dns.shutdown();
        self.task.abort();
    }
}

/// UDP and TCP sockets on one free port. The port comes from TCP port 0;
/// the same UDP port is almost always free, and another is tried if not.
async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let tcp = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        if let Ok(udp) = UdpSocket::bind(tcp.local_addr().unwrap()).await {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP");
}

async fn start(dns: Dns) -> Running {
    let (udp, tcp) = bind_pair().await;
    let addr = udp.local_addr().unwrap();
    let server = dns.clone();
    let task = tokio::spawn(async move {
        server.serve(udp, tcp).await.expect("DNS server failed");
    });
    Running { dns, addr, task }
}

fn service(name: &str, mode: EndpointMode, tasks: &[&str]) -> DnsService {
    DnsService {
        name: name.into(),
        endpoint_mode: mode,
        tasks: tasks.iter().map(|t| t.parse().unwrap()).collect(),
    }
}

fn cluster_table() -> DnsTable {
    let mut table = DnsTable::new();
    table.insert(service(
        "web",
        EndpointMode::Vip("10.0.0.2".parse().unwrap()),
        &["10.0.1.1", "10.0.1.2", "10.0.1.3"],
    ));
    table.insert(service(
        "db",
        EndpointMode::Dnsrr,
        &["10.0.2.1", "10.0.2.2"],
    ));
    table
}

fn query(name: &str, record_type: RecordType, id: u16) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
    message.to_vec().unwrap()
}

async fn ask_udp(server: SocketAddr, name: &str, record_type: RecordType) -> Message {
    let socket = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    socket
        .send_to(&query(name, record_type, 4242), server)
        .await
        .unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, _) = within("DNS answer", socket.recv_from(&mut buf))
        .await
        .unwrap();
    let answer = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(answer.metadata.id, 4242);
    answer
}

async fn ask_tcp(server: SocketAddr, name: &str, record_type: RecordType) -> Message {
    let bytes = query(name, record_type, 77);
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
    Message::from_vec(&answer).unwrap()
}

fn addresses(answer: &Message) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = answer
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[tokio::test]
async fn service_name_answers_the_vip_and_tasks_name_the_task_addresses() {
    let server = start(Dns::with_upstreams((LOCALHOST, 0).into(), vec![])).await;
    server.dns.apply(cluster_table());

    let answer = ask_udp(server.addr, "web.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative);
    assert_eq!(addresses(&answer), ips(&["10.0.0.2"]));

    let answer = ask_udp(server.addr, "tasks.web.", RecordType::A).await;
    assert_eq!(
        addresses(&answer),
        ips(&["10.0.1.1", "10.0.1.2", "10.0.1.3"])
    );

    // Over TCP too.
    let answer = ask_tcp(server.addr, "tasks.web.", RecordType::A).await;
    assert_eq!(
        addresses(&answer),
        ips(&["10.0.1.1", "10.0.1.2", "10.0.1.3"])
    );
}

#[tokio::test]
async fn dnsrr_service_answers_its_tasks_in_rotating_order() {
    let server = start(Dns::with_upstreams((LOCALHOST, 0).into(), vec![])).await;
    server.dns.apply(cluster_table());

    let mut firsts = std::collections::HashSet::new();
    for _ in 0..4 {
        let answer = ask_udp(server.addr, "db.", RecordType::A).await;
        assert_eq!(addresses(&answer), ips(&["10.0.2.1", "10.0.2.2"]));
        firsts.insert(answer.answers[0].data.clone());
    }
    assert_eq!(firsts.len(), 2, "answers were not rotated");
}

#[tokio::test]
async fn unknown_names_get_nxdomain_and_missing_types_get_no_data() {
    let server = start(Dns::with_upstreams((LOCALHOST, 0).into(), vec![])).await;
    server.dns.apply(cluster_table());

    let answer = ask_udp(server.addr, "nope.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    let answer = ask_udp(server.addr, "tasks.nope.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);

    let answer = ask_udp(server.addr, "web.", RecordType::AAAA).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.answers.is_empty());
}

#[tokio::test]
async fn apply_swaps_every_name_at_once() {
    let server = start(Dns::with_upstreams((LOCALHOST, 0).into(), vec![])).await;
    server.dns.apply(cluster_table());
    assert_eq!(
        addresses(&ask_udp(server.addr, "web.", RecordType::A).await),
        ips(&["10.0.0.2"])
    );

    let mut table = DnsTable::new();
    table.insert(service(
        "api",
        EndpointMode::Vip("10.0.0.9".parse().unwrap()),
        &[],
    ));
    server.dns.apply(table);
    let answer = ask_udp(server.addr, "web.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        addresses(&ask_udp(server.addr, "api.", RecordType::A).await),
        ips(&["10.0.0.9"])
    );
}

#[tokio::test]
async fn other_names_are_forwarded_to_the_upstream_resolver() {
    // The "host resolver": a second server that knows an outside name.
    let upstream = start(Dns::with_upstreams((LOCALHOST, 0).into(), vec![])).await;
    let mut outside = DnsTable::new();
    outside.insert(service(
        "www.example.com",
        EndpointMode::Dnsrr,
        &["192.0.2.7"],
    ));
    upstream.dns.apply(outside);

    let server = start(Dns::with_upstreams(
        (LOCALHOST, 0).into(),
        vec![upstream.addr],
    ))
    .await;
    server.dns.apply(cluster_table());

    let answer = ask_udp(server.addr, "www.example.com.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&answer), ips(&["192.0.2.7"]));
    let answer = ask_tcp(server.addr, "www.example.com.", RecordType::A).await;
    assert_eq!(addresses(&answer), ips(&["192.0.2.7"]));
    // Our own names are still answered locally.
    assert_eq!(
        addresses(&ask_udp(server.addr, "web.", RecordType::A).await),
        ips(&["10.0.0.2"])
    );
}

#[tokio::test]
async fn other_names_are_refused_without_an_upstream() {
    let server = start(Dns::with_upstreams((LOCALHOST, 0).into(), vec![])).await;
    let answer = ask_udp(server.addr, "www.example.com.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
}

#[tokio::test]
async fn shutdown_ends_serve() {
    let dns = Dns::with_upstreams((LOCALHOST, 0).into(), vec![]);
    let (udp, tcp) = bind_pair().await;
    let serving = tokio::spawn({
        let dns = dns.clone();
        async move { dns.serve(udp, tcp).await }
    });
    dns.shutdown();
    within("serve to end", serving).await.unwrap().unwrap();
}

#[tokio::test]
async fn run_binds_a_specific_address_and_answers_from_it() {
    // 127.0.0.2 is local without adding anything (all of 127/8 is), and
    // stands in for the service address 198.18.0.1 the daemon uses.
    let ip: IpAddr = "127.0.0.2".parse().unwrap();
    let addr = {
        let (udp, _tcp) = bind_pair().await;
        SocketAddr::new(ip, udp.local_addr().unwrap().port())
    };
    let dns = Dns::with_upstreams(addr, vec![]);
    dns.apply(cluster_table());
    let server = dns.clone();
    let serving = tokio::spawn(async move { server.run().await });

    let socket = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    // The first query may race the bind: ask until answered.
    let (n, from) = within("DNS over UDP", async {
        loop {
            socket
                .send_to(&query("web", RecordType::A, 7), addr)
                .await
                .unwrap();
            let wait = std::time::Duration::from_millis(100);
            if let Ok(got) = tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
                break got.unwrap();
            }
        }
    })
    .await;
    assert_eq!(from, addr, "the answer must come from the server's address");
    let answer = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(addresses(&answer), ips(&["10.0.0.2"]));
    assert_eq!(
        addresses(&ask_tcp(addr, "web", RecordType::A).await),
        ips(&["10.0.0.2"])
    );

    dns.shutdown();
    within("server ends", serving).await.unwrap().unwrap();
}
