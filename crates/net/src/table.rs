//! What the daemon feeds the mesh: published ports and the task endpoints
//! behind them. Plain data, no I/O.
//!
//! A route listens either on the mesh's own address (`insert`: a port
//! published in ingress mode, on every address of the node) or on one
//! specific local address (`insert_at`: a service VIP or a task address).
//! Both kinds may share a port number: the kernel hands a connection to the
//! socket bound to its exact destination address first, to the wildcard one
//! otherwise.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::error::TableError;
use crate::proxy_protocol::ProxyVersion;

pub use crate::protocol::Protocol;

/// A running task reachable at `addr` (its node's address and the host port
/// its executor reports for the target port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub task_id: String,
    pub addr: SocketAddr,
    /// False while the task's health check fails: kept in the table so the
    /// caller need not filter, never chosen for a new connection.
    pub healthy: bool,
}

/// A port published in ingress mode by a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPort {
    pub service_id: String,
    pub protocol: Protocol,
    pub published: u16,
    pub target: u16,
}

/// The service behind one published port and its endpoints for the target port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub service_id: String,
    pub target: u16,
    pub endpoints: Vec<Endpoint>,
    /// TCP connections start with this PROXY protocol header (opted in per
    /// published port): served by the proxy, on either path.
    pub proxy_protocol: Option<ProxyVersion>,
}

/// Where a route listens: its protocol, its local address (`None`: the
/// mesh's own bind address) and its port.
pub(crate) type RouteKey = (Protocol, Option<IpAddr>, u16);

/// Every route of the node, keyed by (protocol, local address, port), and
/// where the mesh connects to endpoints from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshTable {
    routes: BTreeMap<RouteKey, Route>,
    source: Option<IpAddr>,
    client: Option<ClientPath>,
}

/// The node keeps clients' addresses ([`crate::ClientAddr`] is set up):
/// what the meshes need to know of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientPath {
    /// The networks of this node's container bridges: a client there
    /// keeps being sent on from the node's address (its answer must come
    /// back through the node, not straight over the bridge).
    pub bridges: Vec<(std::net::Ipv4Addr, u8)>,
}

impl ClientPath {
    /// Whether a connection from `client` may keep its address.
    pub fn keeps(&self, client: IpAddr) -> bool {
        let IpAddr::V4(v4) = client else {
            return false;
        };
        if v4.is_loopback() || v4.is_unspecified() {
            return false;
        }
        !self.bridges.iter().any(|(net, prefix)| {
            let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
            u32::from(v4) & mask == u32::from(*net)
        })
    }
}

impl MeshTable {
    pub fn new() -> MeshTable {
        MeshTable::default()
    }

    /// Adds a published port, listening on the mesh's own address, with
    /// the endpoints of its service for the port's target. Inserting the
    /// same port of the same service again adds the endpoints to it; a port
    /// claimed by another service (or by another target of the same service)
    /// is refused, so the mesh can never send one port's traffic to two
    /// services.
    pub fn insert(
        &mut self,
        port: PublishedPort,
        endpoints: Vec<Endpoint>,
    ) -> Result<(), TableError> {
        self.insert_key(None, port, endpoints)
    }

    /// Like `insert`, but the route listens on `ip:port.published` only (a
    /// service VIP, say), beside any route on the same port number at
    /// another address or at the mesh's own address.
    pub fn insert_at(
        &mut self,
        ip: IpAddr,
        port: PublishedPort,
        endpoints: Vec<Endpoint>,
    ) -> Result<(), TableError> {
        self.insert_key(Some(ip), port, endpoints)
    }

    fn insert_key(
        &mut self,
        ip: Option<IpAddr>,
        port: PublishedPort,
        endpoints: Vec<Endpoint>,
    ) -> Result<(), TableError> {
        if port.published == 0 {
            return Err(TableError::PortZero {
                protocol: port.protocol,
                service: port.service_id,
            });
        }
        let key = (port.protocol, ip, port.published);
        match self.routes.get_mut(&key) {
            Some(route) if route.service_id == port.service_id && route.target == port.target => {
                route.endpoints.extend(endpoints);
                Ok(())
            }
            Some(route) => Err(TableError::PortTaken {
                protocol: port.protocol,
                ip,
                port: port.published,
                owner: route.service_id.clone(),
                claimant: port.service_id,
            }),
            None => {
                let route = Route {
                    service_id: port.service_id,
                    target: port.target,
                    endpoints,
                    proxy_protocol: None,
                };
                self.routes.insert(key, route);
                Ok(())
            }
        }
    }

    /// Connections and UDP flows to endpoints come from `source` (the
    /// node's own address, the one other nodes know it by) when this host
    /// has that address; else, as with `None`, from whichever address the
    /// kernel picks.
    pub fn set_source(&mut self, source: Option<IpAddr>) {
        self.source = source;
    }

    pub fn source(&self) -> Option<IpAddr> {
        self.source
    }

    /// Connections keep their clients' addresses (`None`: they come from
    /// the source, as without [`crate::ClientAddr`]).
    pub fn set_client_path(&mut self, client: Option<ClientPath>) {
        self.client = client;
    }

    pub fn client_path(&self) -> Option<&ClientPath> {
        self.client.as_ref()
    }

    /// TCP connections to the published port `published` (on the mesh's
    /// own address) start with a PROXY protocol header of `version`. False
    /// when the table has no such route.
    pub fn set_proxy_protocol(&mut self, published: u16, version: ProxyVersion) -> bool {
        match self.routes.get_mut(&(Protocol::Tcp, None, published)) {
            Some(route) => {
                route.proxy_protocol = Some(version);
                true
            }
            None => false,
        }
    }

    /// Takes the routes that speak the PROXY protocol out of this table:
    /// a table of their own (same source and client path), for the proxy.
    pub fn split_off_proxied(&mut self) -> MeshTable {
        let keys: Vec<RouteKey> = self
            .routes
            .iter()
            .filter(|(_, r)| r.proxy_protocol.is_some())
            .map(|(k, _)| *k)
            .collect();
        let mut out = MeshTable {
            routes: BTreeMap::new(),
            source: self.source,
            client: self.client.clone(),
        };
        for key in keys {
            if let Some(route) = self.routes.remove(&key) {
                out.routes.insert(key, route);
            }
        }
        out
    }

    /// The route of `published` at `ip` (`None`: at the mesh's own address).
    pub fn get(&self, protocol: Protocol, ip: Option<IpAddr>, published: u16) -> Option<&Route> {
        self.routes.get(&(protocol, ip, published))
    }

    /// Every route as (protocol, local address or `None` for the mesh's
    /// own, port, route), in that order.
    pub fn iter(&self) -> impl Iterator<Item = (Protocol, Option<IpAddr>, u16, &Route)> {
        self.routes
            .iter()
            .map(|(&(protocol, ip, port), route)| (protocol, ip, port, route))
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Whether any port lists this task: lets the mesh forget drained tasks
    /// once they have left the cluster's picture.
    pub(crate) fn mentions_task(&self, task_id: &str) -> bool {
        self.routes
            .values()
            .any(|route| route.endpoints.iter().any(|e| e.task_id == task_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(service: &str, published: u16, target: u16) -> PublishedPort {
        PublishedPort {
            service_id: service.into(),
            protocol: Protocol::Tcp,
            published,
            target,
        }
    }

    fn endpoint(task: &str, port: u16) -> Endpoint {
        Endpoint {
            task_id: task.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            healthy: true,
        }
    }

    #[test]
    fn same_service_adds_endpoints() {
        let mut table = MeshTable::new();
        table
            .insert(port("web", 8080, 80), vec![endpoint("t1", 1)])
            .unwrap();
        table
            .insert(port("web", 8080, 80), vec![endpoint("t2", 2)])
            .unwrap();
        let route = table.get(Protocol::Tcp, None, 8080).unwrap();
        assert_eq!(route.endpoints.len(), 2);
        assert!(table.mentions_task("t2"));
        assert!(!table.mentions_task("t3"));
    }

    #[test]
    fn another_service_cannot_take_a_port() {
        let mut table = MeshTable::new();
        table.insert(port("web", 8080, 80), vec![]).unwrap();
        let err = table.insert(port("api", 8080, 80), vec![]).unwrap_err();
        assert!(
            matches!(err, TableError::PortTaken { port: 8080, .. }),
            "{err}"
        );
        let err = table.insert(port("web", 8080, 81), vec![]).unwrap_err();
        assert!(matches!(err, TableError::PortTaken { .. }), "{err}");
    }

    #[test]
    fn tcp_and_udp_of_one_port_are_distinct() {
        let mut table = MeshTable::new();
        table.insert(port("web", 53, 53), vec![]).unwrap();
        let udp = PublishedPort {
            protocol: Protocol::Udp,
            ..port("dns", 53, 53)
        };
        table.insert(udp, vec![]).unwrap();
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn a_specific_address_is_a_route_of_its_own() {
        let vip: IpAddr = "198.18.0.2".parse().unwrap();
        let mut table = MeshTable::new();
        table.insert(port("web", 8080, 80), vec![]).unwrap();
        table
            .insert_at(vip, port("api", 8080, 80), vec![endpoint("a1", 1)])
            .unwrap();
        table
            .insert_at(vip, port("api", 8080, 80), vec![endpoint("a2", 2)])
            .unwrap();
        let err = table
            .insert_at(vip, port("web", 8080, 80), vec![])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "published port 198.18.0.2:8080/tcp of service web is already used by service api"
        );
        assert_eq!(
            table.get(Protocol::Tcp, None, 8080).unwrap().service_id,
            "web"
        );
        let at_vip = table.get(Protocol::Tcp, Some(vip), 8080).unwrap();
        assert_eq!(
            (at_vip.service_id.as_str(), at_vip.endpoints.len()),
            ("api", 2)
        );
        let keys: Vec<_> = table.iter().map(|(p, ip, port, _)| (p, ip, port)).collect();
        assert_eq!(
            keys,
            vec![
                (Protocol::Tcp, None, 8080),
                (Protocol::Tcp, Some(vip), 8080)
            ]
        );
        assert!(matches!(
            table.insert_at(vip, port("api", 0, 80), vec![]),
            Err(TableError::PortZero { .. })
        ));
    }

    #[test]
    fn clients_on_a_container_bridge_or_loopback_keep_nothing() {
        let path = ClientPath {
            bridges: vec![("172.17.0.0".parse().unwrap(), 16)],
        };
        let keeps = |a: &str| path.keeps(a.parse().unwrap());
        assert!(keeps("10.213.88.250"));
        assert!(!keeps("172.17.0.5"));
        assert!(!keeps("127.0.0.1"));
        assert!(!keeps("::1"));
        assert!(keeps("172.18.0.5"));
    }

    #[test]
    fn proxied_routes_split_off() {
        let mut table = MeshTable::new();
        table
            .insert(port("web", 8080, 80), vec![endpoint("t1", 1)])
            .unwrap();
        table
            .insert(port("api", 9090, 80), vec![endpoint("a1", 2)])
            .unwrap();
        table.set_source(Some("10.0.0.1".parse().unwrap()));
        assert!(table.set_proxy_protocol(9090, ProxyVersion::V2));
        assert!(!table.set_proxy_protocol(7070, ProxyVersion::V2));
        let proxied = table.split_off_proxied();
        assert_eq!(table.len(), 1);
        assert_eq!(proxied.len(), 1);
        assert_eq!(proxied.source(), table.source());
        let route = proxied.get(Protocol::Tcp, None, 9090).unwrap();
        assert_eq!(route.proxy_protocol, Some(ProxyVersion::V2));
    }

    #[test]
    fn port_zero_is_refused() {
        let mut table = MeshTable::new();
        assert!(matches!(
            table.insert(port("web", 0, 80), vec![]),
            Err(TableError::PortZero { .. })
        ));
    }
}
