//! Published ports held by the kernel path: a socket bound to the port on
//! the mesh's address, never listening (TCP) and never read (UDP), so no
//! other program can bind it while the kernel's NAT serves it, and a port
//! another program holds is refused as the proxy refuses it.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};

use crate::protocol::Protocol;

/// A reserved port; dropping it gives the port up.
pub(crate) type Reservation = Socket;

/// Binds `addr` for `protocol`. Without SO_REUSEADDR, so no later socket
/// can share it; when that finds the port in use, a TCP port is tried once
/// more with it, which succeeds only where nothing listens there (what
/// holds the port is connections in TIME_WAIT, say those the proxy of the
/// daemon's last run accepted).
pub(crate) fn reserve(protocol: Protocol, addr: SocketAddr) -> io::Result<Reservation> {
    let kind = match protocol {
        Protocol::Tcp => Type::STREAM,
        Protocol::Udp => Type::DGRAM,
    };
    let bind = |reuse: bool| -> io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), kind, None)?;
        socket.set_reuse_address(reuse)?;
        socket.bind(&addr.into())?;
        Ok(socket)
    };
    match bind(false) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && protocol == Protocol::Tcp => {
            bind(true).map_err(|_| e)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_port_cannot_be_bound_and_answers_nothing() {
        let held = reserve(Protocol::Tcp, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = held.local_addr().unwrap().as_socket().unwrap();
        let err = std::net::TcpListener::bind(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        // Nothing listens: a connection is refused, not queued.
        let refused = std::net::TcpStream::connect(addr).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        // A port another program listens on is refused to us.
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = other.local_addr().unwrap();
        let err = reserve(Protocol::Tcp, taken).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(held);
        assert!(std::net::TcpListener::bind(addr).is_ok());

        let udp = reserve(Protocol::Udp, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = udp.local_addr().unwrap().as_socket().unwrap();
        assert!(std::net::UdpSocket::bind(addr).is_err());
    }
}
