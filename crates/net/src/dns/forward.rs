//! Forwarding names outside our zone to the host's resolvers, as listed in
//! /etc/resolv.conf. The query goes upstream byte for byte (same id, same
//! EDNS), over UDP, or over TCP when the client asked over TCP (a truncated
//! UDP answer makes the client retry over TCP, so that retry must get the
//! whole answer).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::error::ForwardError;

/// Per upstream: a resolver that has not answered by then is skipped for
/// the next one; clients themselves retry after about 5 s.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The resolvers non-local names go to, in resolv.conf order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Upstreams {
    addrs: Vec<SocketAddr>,
}

impl Upstreams {
    pub fn new(addrs: Vec<SocketAddr>) -> Upstreams {
        Upstreams { addrs }
    }

    /// The `nameserver` lines of a resolv.conf, minus our own address (a
    /// node whose resolv.conf points at us must not forward to itself).
    pub fn from_resolv_conf(text: &str, own: SocketAddr) -> Upstreams {
        let addrs = text
            .lines()
            .filter_map(|line| line.trim().strip_prefix("nameserver"))
            .filter_map(|rest| {
                // IPv6 link-local entries may carry a zone ("fe80::1%eth0").
                let ip = rest.trim().split('%').next()?;
                ip.parse::<IpAddr>().ok()
            })
            .map(|ip| SocketAddr::new(ip, 53))
            .filter(|addr| *addr != own)
            .collect();
        Upstreams { addrs }
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// Asks each upstream in turn until one answers.
    pub async fn forward(&self, query: &[u8], over_tcp: bool) -> Result<Message, ForwardError> {
        let mut last = ForwardError::NoUpstream;
        for &addr in &self.addrs {
            let exchange = async {
                if over_tcp {
                    exchange_tcp(addr, query).await
                } else {
                    exchange_udp(addr, query).await
                }
            };
            let answer = match tokio::time::timeout(UPSTREAM_TIMEOUT, exchange).await {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(source)) => {
                    last = ForwardError::Io { addr, source };
                    continue;
                }
                Err(_) => {
                    last = ForwardError::Timeout {
                        addr,
                        timeout_ms: UPSTREAM_TIMEOUT.as_millis(),
                    };
                    continue;
                }
            };
            return Message::from_vec(&answer).map_err(|e| ForwardError::Malformed {
                addr,
                message: e.to_string(),
            });
        }
        Err(last)
    }
}

/// One UDP exchange from a fresh socket (a random source port per query,
/// so an off-path attacker cannot guess where to spoof answers), connected
/// so only the upstream's datagrams are read. Answers whose id is not the
/// query's are stale and skipped.
async fn exchange_udp(addr: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(addr).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = socket.recv(&mut buf).await?;
        if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// One TCP exchange: two-byte length prefix each way (RFC 1035 4.2.2).
async fn exchange_tcp(addr: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let len = u16::try_from(query.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "query too long"))?;
    let mut stream = TcpStream::connect(addr).await?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let answer_len = stream.read_u16().await?;
    let mut answer = vec![0u8; usize::from(answer_len)];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_minus_our_own() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.1\nnameserver 127.0.0.1\n  nameserver fe80::1%eth0\nnameserver bogus\noptions ndots:0\n";
        let own: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let upstreams = Upstreams::from_resolv_conf(text, own);
        let expected: Vec<SocketAddr> = vec![
            "10.0.0.1:53".parse().unwrap(),
            "[fe80::1]:53".parse().unwrap(),
        ];
        assert_eq!(upstreams.addrs, expected);
    }

    #[test]
    fn loopback_stubs_are_kept_when_we_listen_elsewhere() {
        let text = "nameserver 127.0.0.53\nnameserver 198.18.0.1\nnameserver 192.168.1.1\n";
        let own: SocketAddr = "198.18.0.1:53".parse().unwrap();
        let upstreams = Upstreams::from_resolv_conf(text, own);
        let expected: Vec<SocketAddr> = vec![
            "127.0.0.53:53".parse().unwrap(),
            "192.168.1.1:53".parse().unwrap(),
        ];
        assert_eq!(upstreams.addrs, expected);
    }
}
