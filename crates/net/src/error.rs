//! Typed errors: each says which port, endpoint or address failed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::protocol::Protocol;

/// A table the caller built does not hold together.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// Two services (or one service with two target ports) claim one port
    /// at one address (`ip` `None`: the mesh's own address).
    #[error(
        "published port {}/{protocol} of service {claimant} is already used by service {owner}",
        at(ip, *port)
    )]
    PortTaken {
        protocol: Protocol,
        ip: Option<IpAddr>,
        port: u16,
        owner: String,
        claimant: String,
    },
    /// Port 0 cannot be published: the allocator assigns real ports.
    #[error("service {service} publishes port 0/{protocol}")]
    PortZero { protocol: Protocol, service: String },
}

/// "8080" for the mesh's own address, "198.18.0.2:8080" for a specific one.
fn at(ip: &Option<IpAddr>, port: u16) -> String {
    match ip {
        None => port.to_string(),
        Some(ip) => SocketAddr::new(*ip, port).to_string(),
    }
}

/// One published port that `Mesh::apply` could not open.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}/{protocol} for service {service_id}: {source}")]
pub struct PortFailure {
    pub protocol: Protocol,
    pub addr: SocketAddr,
    pub service_id: String,
    #[source]
    pub source: std::io::Error,
}

/// What `Mesh::apply` reports. Every other port of the table was applied:
/// one port that cannot be opened never holds the others back, and the next
/// `apply` tries the failed ones again.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("{} published port(s) could not be opened: {}", .0.len(), list(.0))]
    Ports(Vec<PortFailure>),
    /// The kernel path could not write its rules: the kernel still has the
    /// last ones written.
    #[error("cannot write the mesh's kernel rules: {0}")]
    Kernel(KernelError),
}

/// Why the kernel path of the mesh cannot be set up or written.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{program} is not installed (the kernel path needs iptables)")]
    NotInstalled { program: String },
    #[error("iptables refused: CAP_NET_ADMIN (or root) is needed")]
    PermissionDenied,
    #[error("the mesh's address is IPv6, and the kernel path is IPv4 (iptables) only")]
    Ipv6,
    #[error("cannot set {path}: {source}")]
    Sysctl {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
}

fn list(failures: &[PortFailure]) -> String {
    let all: Vec<String> = failures.iter().map(|f| f.to_string()).collect();
    all.join("; ")
}

/// Why a single proxied connection could not be set up. Logged where the
/// connection task runs, never returned to the daemon.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("port {port}/{protocol}: service {service_id} has no healthy endpoint")]
    NoEndpoint {
        protocol: Protocol,
        port: u16,
        service_id: String,
    },
    #[error("port {port}/tcp: every endpoint of service {service_id} refused ({tried} tried), last {last_addr}: {last}")]
    AllFailed {
        port: u16,
        service_id: String,
        tried: usize,
        last_addr: SocketAddr,
        last: std::io::Error,
    },
    #[error("port {port}/tcp: relay to task {task_id} at {addr}: {source}")]
    Relay {
        port: u16,
        task_id: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("port {port}/udp: socket to task {task_id} at {addr}: {source}")]
    Upstream {
        port: u16,
        task_id: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Why `LocalAddrs` could not make the device's addresses the wanted ones.
#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    #[error("the routing mesh needs the `ip` command (iproute2) to add service addresses")]
    NoIpCommand,
    #[error("cannot change the addresses of {dev}: CAP_NET_ADMIN (or root) is needed")]
    PermissionDenied { dev: String },
    #[error("cannot add service addresses: there is no network device {dev}")]
    NoDevice { dev: String },
    /// The daemon asked for an address it must not manage.
    #[error("service address {ip} is outside the service network {network}")]
    OutsideNetwork { ip: Ipv4Addr, network: String },
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
}

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot bind the DNS server on {addr}/{protocol}: {source}")]
    Bind {
        addr: SocketAddr,
        protocol: Protocol,
        source: std::io::Error,
    },
    #[error("DNS server on {addr} failed: {message}")]
    Server { addr: SocketAddr, message: String },
}

/// Why a query could not be forwarded to the host's resolvers.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    #[error("no upstream resolver configured")]
    NoUpstream,
    #[error("upstream {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("upstream {addr}: no answer within {timeout_ms} ms")]
    Timeout { addr: SocketAddr, timeout_ms: u128 },
    #[error("upstream {addr}: malformed answer: {message}")]
    Malformed { addr: SocketAddr, message: String },
}
