//! The PROXY protocol header (HAProxy's spec, versions 1 and 2): what a
//! published port that opts in sends an endpoint before the client's
//! bytes, so an application that speaks it learns the client's address
//! and the address it connected to, however the connection was carried.

use std::net::SocketAddr;

/// Which version a published port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProxyVersion {
    /// The text header: `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`.
    V1,
    /// The binary header.
    V2,
}

impl ProxyVersion {
    /// From the label's spelling (`v1`, `v2`; `1`, `2`).
    pub fn parse(text: &str) -> Option<ProxyVersion> {
        match text.trim().to_ascii_lowercase().as_str() {
            "v1" | "1" => Some(ProxyVersion::V1),
            "v2" | "2" => Some(ProxyVersion::V2),
            _ => None,
        }
    }
}

/// Version 2's signature, the first 12 bytes of every header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The header for a TCP connection from `client` to `local` (the address
/// and port the client connected to). Mixed families (an IPv4 client of
/// an IPv6 address) are told as IPv6, IPv4 mapped.
pub fn header(version: ProxyVersion, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (client, local) = same_family(client, local);
    match version {
        ProxyVersion::V1 => {
            let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                client.ip(),
                local.ip(),
                client.port(),
                local.port()
            )
            .into_bytes()
        }
        ProxyVersion::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            // Version 2, command PROXY.
            out.push(0x21);
            let mut addrs = Vec::with_capacity(36);
            match (client, local) {
                (SocketAddr::V4(c), SocketAddr::V4(l)) => {
                    // AF_INET, STREAM.
                    out.push(0x11);
                    addrs.extend(c.ip().octets());
                    addrs.extend(l.ip().octets());
                }
                (c, l) => {
                    // AF_INET6, STREAM.
                    out.push(0x21);
                    addrs.extend(v6(c.ip()));
                    addrs.extend(v6(l.ip()));
                }
            }
            addrs.extend(client.port().to_be_bytes());
            addrs.extend(local.port().to_be_bytes());
            out.extend((addrs.len() as u16).to_be_bytes());
            out.extend(addrs);
            out
        }
    }
}

fn v6(ip: std::net::IpAddr) -> [u8; 16] {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

/// Both addresses of one family: IPv4-mapped IPv6 ones as IPv4 when both
/// can be, else both as IPv6.
fn same_family(client: SocketAddr, local: SocketAddr) -> (SocketAddr, SocketAddr) {
    let plain = |a: SocketAddr| match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        v4 => v4,
    };
    let (c, l) = (plain(client), plain(local));
    if c.is_ipv4() == l.is_ipv4() {
        return (c, l);
    }
    let mapped = |a: SocketAddr| {
        SocketAddr::new(
            std::net::IpAddr::V6(std::net::Ipv6Addr::from(v6(a.ip()))),
            a.port(),
        )
    };
    (mapped(c), mapped(l))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn version_1_is_one_line_of_text() {
        let h = header(ProxyVersion::V1, a("10.0.0.9:51000"), a("10.0.0.1:8080"));
        assert_eq!(h, b"PROXY TCP4 10.0.0.9 10.0.0.1 51000 8080\r\n");
        let h = header(ProxyVersion::V1, a("[fd00::9]:1"), a("[fd00::1]:443"));
        assert_eq!(h, b"PROXY TCP6 fd00::9 fd00::1 1 443\r\n");
        // A dual-stack listener's IPv4 client is told as IPv4.
        let h = header(
            ProxyVersion::V1,
            a("[::ffff:10.0.0.9]:2"),
            a("[::ffff:10.0.0.1]:80"),
        );
        assert_eq!(h, b"PROXY TCP4 10.0.0.9 10.0.0.1 2 80\r\n");
    }

    #[test]
    fn version_2_is_the_signature_then_the_addresses() {
        let h = header(ProxyVersion::V2, a("10.0.0.9:51000"), a("10.0.0.1:8080"));
        let mut want = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        want.extend([0x21, 0x11, 0x00, 0x0c]);
        want.extend([10, 0, 0, 9, 10, 0, 0, 1]);
        want.extend([0xc7, 0x38, 0x1f, 0x90]);
        assert_eq!(h, want);
        let h = header(ProxyVersion::V2, a("10.0.0.9:1"), a("[fd00::1]:2"));
        assert_eq!(&h[12..16], &[0x21, 0x21, 0x00, 36]);
        assert_eq!(
            &h[16..32],
            &"::ffff:10.0.0.9"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(h.len(), 16 + 36);
    }

    #[test]
    fn the_label_s_versions() {
        assert_eq!(ProxyVersion::parse("v2"), Some(ProxyVersion::V2));
        assert_eq!(ProxyVersion::parse("1"), Some(ProxyVersion::V1));
        assert_eq!(ProxyVersion::parse("v3"), None);
    }
}
