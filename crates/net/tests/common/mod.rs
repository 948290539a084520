//! Helpers shared by the black-box tests: echo backends with an identity,
//! free ports, and a bound on every wait. Everything stays on 127.0.0.1.
#![allow(dead_code)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use flotilla_net::{Endpoint, MeshTable, Protocol, PublishedPort};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Every wait in a test is bounded by this.
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(20), future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// A port nobody listens on right now (TCP).
pub fn free_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind((LOCALHOST, 0)).expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

pub fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind((LOCALHOST, 0)).expect("bind port 0");
    socket.local_addr().expect("local addr").port()
}

/// A task stand-in: on each TCP connection it first sends its id and a
/// newline, then echoes everything until the client ends its stream, then
/// ends its own. Dropping it stops accepting; open connections go on.
pub struct TcpBackend {
    pub id: String,
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TcpBackend {
    pub async fn start(id: &str) -> TcpBackend {
        let listener = TcpListener::bind((LOCALHOST, 0))
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let own = id.to_string();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(echo(stream, own.clone()));
            }
        });
        TcpBackend {
            id: id.to_string(),
            addr,
            task,
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            task_id: self.id.clone(),
            addr: self.addr,
            healthy: true,
        }
    }
}

impl Drop for TcpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(mut stream: TcpStream, id: String) {
    if stream
        .write_all(format!("{id}\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let (mut read, mut write) = stream.split();
    let _ = tokio::io::copy(&mut read, &mut write).await;
    let _ = write.shutdown().await;
}

/// A UDP task stand-in: answers each datagram with "<id>:<datagram>".
pub struct UdpBackend {
    pub id: String,
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl UdpBackend {
    pub async fn start(id: &str) -> UdpBackend {
        let socket = UdpSocket::bind((LOCALHOST, 0))
            .await
            .expect("bind udp backend");
        let addr = socket.local_addr().expect("udp backend addr");
        let own = id.to_string();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let mut reply = format!("{own}:").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = socket.send_to(&reply, from).await;
            }
        });
        UdpBackend {
            id: id.to_string(),
            addr,
            task,
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            task_id: self.id.clone(),
            addr: self.addr,
            healthy: true,
        }
    }
}

impl Drop for UdpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A table with one TCP port for one service.
pub fn tcp_table(service: &str, published: u16, endpoints: Vec<Endpoint>) -> MeshTable {
    let mut table = MeshTable::new();
    add(&mut table, Protocol::Tcp, service, published, endpoints);
    table
}

pub fn add(
    table: &mut MeshTable,
    protocol: Protocol,
    service: &str,
    published: u16,
    endpoints: Vec<Endpoint>,
) {
    let port = PublishedPort {
        service_id: service.into(),
        protocol,
        published,
        target: 80,
    };
    table.insert(port, endpoints).expect("valid table");
}

/// Connects through the mesh and reads the id line the backend sends.
pub async fn connect_and_identify(port: u16) -> (TcpStream, String) {
    let mut stream = within("connect", TcpStream::connect((LOCALHOST, port)))
        .await
        .expect("connect through the mesh");
    let id = within("id line", read_line(&mut stream)).await;
    (stream, id)
}

pub async fn identify(port: u16) -> String {
    connect_and_identify(port).await.1
}

async fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = stream.read(&mut byte).await.expect("read id line");
        assert!(
            n == 1,
            "connection closed before the id line (got {:?})",
            String::from_utf8_lossy(&line)
        );
        if byte[0] == b'\n' {
            return String::from_utf8(line).expect("utf-8 id");
        }
        line.push(byte[0]);
    }
}
