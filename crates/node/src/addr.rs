//! Docker's rules for the addresses a node listens on and advertises.

use flotilla_manager::Error;

pub const DEFAULT_PORT: u16 = 2377;

fn has_port(a: &str) -> bool {
    a.parse::<std::net::SocketAddr>().is_ok()
        || (!a.contains("::")
            && a.rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok()))
}

fn with_port(a: &str, port: u16) -> String {
    if has_port(a) {
        a.to_string()
    } else {
        format!("{a}:{port}")
    }
}

pub use flotilla_store::network::host_of;

/// The cluster port's listen address: `0.0.0.0:2377` unless given.
pub fn listen_addr(listen: Option<&str>) -> Result<std::net::SocketAddr, Error> {
    let l = listen.filter(|l| !l.is_empty()).unwrap_or("0.0.0.0:2377");
    with_port(l, DEFAULT_PORT).parse().map_err(|_| {
        Error::InvalidArgument(format!("invalid listen address {l}: expected IP[:PORT]"))
    })
}

/// The advertise address if given, else the listen address unless it is a
/// wildcard, else this host's outbound address; the listen port unless a
/// port is given.
pub fn advertise_addr(
    advertise: Option<&str>,
    listen: std::net::SocketAddr,
) -> Result<String, Error> {
    let port = listen.port();
    if let Some(a) = advertise.filter(|a| !a.is_empty()) {
        let addr = with_port(a, port);
        if host_of(&addr).parse::<std::net::IpAddr>().is_err() {
            return Err(Error::InvalidArgument(format!(
                "advertise address must be a non-zero IP address or network interface (with optional port number): {a}"
            )));
        }
        return Ok(addr);
    }
    if !listen.ip().is_unspecified() {
        return Ok(listen.to_string());
    }
    // The address the kernel would use for outbound traffic; connecting a
    // UDP socket sends nothing.
    let ip = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into());
    Ok(format!("{ip}:{port}"))
}

/// How this node reaches its own cluster port.
pub fn local_addr(listen: std::net::SocketAddr, advertise: &str) -> String {
    if listen.ip().is_unspecified() {
        format!("127.0.0.1:{}", listen.port())
    } else if listen.port() == 0 {
        advertise.to_string()
    } else {
        listen.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let any = listen_addr(None).unwrap();
        assert_eq!(any.to_string(), "0.0.0.0:2377");
        assert_eq!(
            advertise_addr(Some("10.1.2.3"), any).unwrap(),
            "10.1.2.3:2377"
        );
        assert_eq!(
            advertise_addr(Some("10.1.2.3:4000"), any).unwrap(),
            "10.1.2.3:4000"
        );
        let l = listen_addr(Some("127.0.0.5")).unwrap();
        assert_eq!(advertise_addr(None, l).unwrap(), "127.0.0.5:2377");
        assert!(advertise_addr(Some("not an ip"), any).is_err());
        assert!(advertise_addr(None, any).unwrap().ends_with(":2377"));
    }
}
