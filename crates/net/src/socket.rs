//! Binding the mesh's (and the DNS server's) sockets so that routes at
//! specific local addresses (service VIPs) share port numbers with wildcard
//! routes.
//!
//! Linux refuses to bind ip:P while 0.0.0.0:P is bound (EADDRINUSE), in
//! either order, unless both sockets set SO_REUSEPORT. With it, each
//! datagram or connection goes to the socket bound to its exact destination
//! address, and to the wildcard one only when there is none. SO_REUSEADDR
//! lets a port that was just closed be opened again while its old
//! connections linger in TIME_WAIT.
//!
//! The price: SO_REUSEPORT also lets two sockets bind the *same* address and
//! port, and the kernel then spreads connections over both. Within one mesh
//! that never happens (`Mesh::apply` refuses two routes at one address), but
//! another program running as the same user with SO_REUSEPORT (nginx's
//! `reuseport`, a second daemon in the same namespace) would silently share
//! a port with us. So after binding we look for another socket at exactly
//! our address and give the port up if there is one: EADDRINUSE, as without
//! SO_REUSEPORT.
//!
//! [`Outbound`] makes the other end: the sockets the mesh connects to
//! endpoints with, bound to the node's own address when it has one.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, warn};

use crate::table::ClientPath;

/// A listening TCP socket at `addr`, sharing its port with other addresses.
pub(crate) fn tcp_listener(addr: SocketAddr, backlog: i32) -> io::Result<tokio::net::TcpListener> {
    let socket = bind_shared(addr, Type::STREAM, Protocol::TCP)?;
    socket.listen(backlog)?;
    // Only a listening TCP socket is visible to `check_alone`.
    check_alone(addr, false)?;
    tokio::net::TcpListener::from_std(socket.into())
}

/// A UDP socket bound to `addr`, sharing its port with other addresses.
pub(crate) fn udp_socket(addr: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    let socket = bind_shared(addr, Type::DGRAM, Protocol::UDP)?;
    check_alone(addr, true)?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// Where the mesh's connections and UDP flows to endpoints come from: the
/// node's own address (the one the swarm knows it by) when one is set and
/// this host has it, so a node with several addresses always reaches the
/// others from the same one, the one their task-port guards let in. When
/// the address cannot be bound (behind NAT it is not this host's), the
/// kernel picks the source, as without one: a connection never fails for
/// this.
///
/// Where the node keeps clients' addresses (a [`ClientPath`] is set), a
/// connection or flow instead comes from its client's own address
/// (IP_TRANSPARENT, with the mesh's mark so the replies come back to this
/// socket, see `crate::client_addr`); where the kernel refuses that (no
/// CAP_NET_ADMIN), the log says so once and the node's address serves.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    source: ArcSwapOption<IpAddr>,
    client: ArcSwapOption<ClientPath>,
    /// Whether a failed bind of `source` was logged as a warning already.
    told: AtomicBool,
    /// The kernel refused a client's address: not tried again.
    refused: AtomicBool,
}

/// The mark of a socket that connects from a client's address.
const TRANSPARENT_MARK: u32 = crate::marks::MARK | crate::marks::PROXY_MARK;

impl Outbound {
    pub(crate) fn set(&self, source: Option<IpAddr>, client: Option<ClientPath>) {
        let old = self.source.swap(source.map(Arc::new));
        if old.as_deref() != source.as_ref() {
            self.told.store(false, Ordering::Relaxed);
        }
        self.client.store(client.map(Arc::new));
    }

    /// The client's address when the connection to an endpoint should
    /// come from it.
    fn as_client(&self, client: SocketAddr, endpoint: SocketAddr) -> Option<IpAddr> {
        if self.refused.load(Ordering::Relaxed) || !endpoint.is_ipv4() {
            return None;
        }
        let path = self.client.load();
        path.as_deref()
            .filter(|p| p.keeps(client.ip()))
            .map(|_| client.ip())
    }

    /// A socket of `kind` bound to `client`'s address (not this host's);
    /// `None` when the kernel refuses (said once).
    fn transparent(&self, client: IpAddr, kind: Type, protocol: Protocol) -> Option<Socket> {
        let made = (|| {
            let socket = Socket::new(Domain::IPV4, kind, Some(protocol))?;
            socket.set_ip_transparent_v4(true)?;
            socket.set_mark(TRANSPARENT_MARK)?;
            socket.set_nonblocking(true)?;
            socket.bind(&SocketAddr::new(client, 0).into())?;
            Ok::<_, io::Error>(socket)
        })();
        match made {
            Ok(socket) => Some(socket),
            // Not allowed here: for good, said once.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                if !self.refused.swap(true, Ordering::Relaxed) {
                    warn!(
                        error = %e,
                        "routing mesh: cannot connect from clients' addresses (IP_TRANSPARENT and SO_MARK need CAP_NET_ADMIN); connecting from this node's address"
                    );
                }
                None
            }
            // Anything else (out of ports or descriptors): this connection.
            Err(e) => {
                debug!(%client, error = %e, "routing mesh: connecting from this node's address");
                None
            }
        }
    }

    /// A TCP connection to `endpoint` for `client`: from its address where
    /// the node keeps clients' addresses, else as [`Outbound::connect`].
    pub(crate) async fn connect_for(
        &self,
        client: SocketAddr,
        endpoint: SocketAddr,
    ) -> io::Result<tokio::net::TcpStream> {
        if let Some(ip) = self.as_client(client, endpoint) {
            if let Some(socket) = self.transparent(ip, Type::STREAM, Protocol::TCP) {
                let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
                return socket.connect(endpoint).await;
            }
        }
        self.connect(endpoint).await
    }

    /// A UDP socket for `client`'s flow to `endpoint`, as
    /// [`Outbound::connect_for`] chooses its source.
    pub(crate) fn udp_for(
        &self,
        client: SocketAddr,
        endpoint: SocketAddr,
    ) -> io::Result<std::net::UdpSocket> {
        if let Some(ip) = self.as_client(client, endpoint) {
            if let Some(socket) = self.transparent(ip, Type::DGRAM, Protocol::UDP) {
                return Ok(socket.into());
            }
        }
        self.udp(endpoint)
    }

    /// The source for a connection to `endpoint`: of its family only.
    fn source_for(&self, endpoint: SocketAddr) -> Option<IpAddr> {
        let source = self.source.load().as_deref().copied()?;
        (source.is_ipv4() == endpoint.is_ipv4()).then_some(source)
    }

    fn unbound(&self, source: IpAddr, error: &io::Error) {
        if self.told.swap(true, Ordering::Relaxed) {
            debug!(%source, %error, "routing mesh: connecting from the address the kernel picks");
        } else {
            warn!(
                %source,
                %error,
                "routing mesh: cannot connect from this node's address (not an address of this host: behind NAT?); \
                 connecting from the address the kernel picks, which other nodes' task-port guards do not know"
            );
        }
    }

    /// A TCP connection to `endpoint`, from the source when it binds.
    pub(crate) async fn connect(&self, endpoint: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        if let Some(source) = self.source_for(endpoint) {
            match bound_tcp(source, endpoint) {
                Ok(socket) => return socket.connect(endpoint).await,
                Err(e) => self.unbound(source, &e),
            }
        }
        tokio::net::TcpStream::connect(endpoint).await
    }

    /// A UDP socket for a flow to `endpoint` (not connected yet), bound to
    /// the source when it binds.
    pub(crate) fn udp(&self, endpoint: SocketAddr) -> io::Result<std::net::UdpSocket> {
        if let Some(source) = self.source_for(endpoint) {
            match std::net::UdpSocket::bind((source, 0)) {
                Ok(socket) => return Ok(socket),
                Err(e) => self.unbound(source, &e),
            }
        }
        let any: IpAddr = if endpoint.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        std::net::UdpSocket::bind((any, 0))
    }
}

/// A TCP socket bound to `source`, its port left to `connect`: with
/// IP_BIND_ADDRESS_NO_PORT one port serves connections to different
/// endpoints, as an unbound socket's does; without it every connection
/// the mesh opens would hold one of the host's ephemeral ports for itself.
fn bound_tcp(source: IpAddr, endpoint: SocketAddr) -> io::Result<tokio::net::TcpSocket> {
    let socket = if endpoint.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    bind_address_no_port(&socket);
    socket.bind(SocketAddr::new(source, 0))?;
    Ok(socket)
}

/// Only an optimisation: a kernel without it (before 4.2) binds a port
/// at `bind`, as elsewhere.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn bind_address_no_port(socket: &tokio::net::TcpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and an option value that lives
    // through the call with its exact size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn bind_address_no_port(_socket: &tokio::net::TcpSocket) {}

fn bind_shared(addr: SocketAddr, kind: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Fails if a socket besides ours is bound to exactly `addr` (listening,
/// for TCP), as the kernel's socket tables of our network namespace list
/// them. Where they cannot be read (no procfs) there is nothing to check.
fn check_alone(addr: SocketAddr, udp: bool) -> io::Result<()> {
    let table = match (udp, addr.is_ipv4()) {
        (false, true) => "tcp",
        (false, false) => "tcp6",
        (true, true) => "udp",
        (true, false) => "udp6",
    };
    // thread-self, not self: a thread may have entered another namespace
    // than the process's main thread (tests do).
    let Ok(text) = std::fs::read_to_string(format!("/proc/thread-self/net/{table}")) else {
        return Ok(());
    };
    if count_bound(&text, addr, udp) > 1 {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "address already in use (by another program's SO_REUSEPORT socket)",
        ));
    }
    Ok(())
}

/// How many sockets of a /proc/net/{tcp,udp}[6] table are bound to `addr`
/// (for TCP: listening there; connections accepted on our socket have the
/// same local address and do not count).
fn count_bound(text: &str, addr: SocketAddr, udp: bool) -> usize {
    /// A listening TCP socket's state in those tables.
    const TCP_LISTEN: &str = "0A";
    let ours = proc_addr(addr);
    text.lines()
        .skip(1)
        .filter(|line| {
            // "sl local_address rem_address st ..."
            let fields: Vec<&str> = line.split_whitespace().take(4).collect();
            fields.len() == 4 && fields[1] == ours && (udp || fields[3] == TCP_LISTEN)
        })
        .count()
}

/// An address as those tables print it: the address as 32-bit words in
/// the host's byte order, in hex, then ':' and the port in hex.
fn proc_addr(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => format!("{:08X}", u32::from_ne_bytes(v4.octets())),
        IpAddr::V6(v6) => v6
            .octets()
            .chunks(4)
            .map(|word| format!("{:08X}", u32::from_ne_bytes(word.try_into().unwrap())))
            .collect(),
    };
    format!("{ip}:{:04X}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_endian = "little")]
    #[test]
    fn reads_the_kernel_socket_tables() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue\n\
           0: 0100007F:1F90 00000000:0000 0A 00000000:00000000\n\
           1: 0100007F:1F90 0100007F:D431 01 00000000:00000000\n\
           2: 00000000:1F90 00000000:0000 0A 00000000:00000000\n\
           3: 0200007F:1F90 00000000:0000 0A 00000000:00000000\n";
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(proc_addr(addr), "0100007F:1F90");
        assert_eq!(count_bound(text, addr, false), 1);
        assert_eq!(count_bound(text, addr, true), 2);
        let wildcard: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(count_bound(text, wildcard, false), 1);
        let v6: SocketAddr = "[::1]:53".parse().unwrap();
        assert_eq!(proc_addr(v6), "00000000000000000000000001000000:0035");
    }
}
