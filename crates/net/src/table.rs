//! What the daemon feeds the mesh: published ports and the task endpoints
//! behind them. Plain data, no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use crate::error::TableError;

/// Transport of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

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
}

/// Every published port of the cluster, keyed by (protocol, published port).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshTable {
    routes: BTreeMap<(Protocol, u16), Route>,
}

impl MeshTable {
    pub fn new() -> MeshTable {
        MeshTable::default()
    }

    /// Adds a published port with the endpoints of its service for the
    /// port's target. Inserting the same port of the same service again
    /// adds the endpoints to it; a port claimed by another service (or by
    /// another target of the same service) is refused, so the mesh can never
    /// send one port's traffic to two services.
    pub fn insert(
        &mut self,
        port: PublishedPort,
        endpoints: Vec<Endpoint>,
    ) -> Result<(), TableError> {
        if port.published == 0 {
            return Err(TableError::PortZero {
                protocol: port.protocol,
                service: port.service_id,
            });
        }
        let key = (port.protocol, port.published);
        match self.routes.get_mut(&key) {
            Some(route) if route.service_id == port.service_id && route.target == port.target => {
                route.endpoints.extend(endpoints);
                Ok(())
            }
            Some(route) => Err(TableError::PortTaken {
                protocol: port.protocol,
                port: port.published,
                owner: route.service_id.clone(),
                claimant: port.service_id,
            }),
            None => {
                let route = Route {
                    service_id: port.service_id,
                    target: port.target,
                    endpoints,
                };
                self.routes.insert(key, route);
                Ok(())
            }
        }
    }

    pub fn get(&self, protocol: Protocol, published: u16) -> Option<&Route> {
        self.routes.get(&(protocol, published))
    }

    pub fn iter(&self) -> impl Iterator<Item = (Protocol, u16, &Route)> {
        self.routes
            .iter()
            .map(|(&(protocol, port), route)| (protocol, port, route))
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
        assert_eq!(table.get(Protocol::Tcp, 8080).unwrap().endpoints.len(), 2);
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
    fn port_zero_is_refused() {
        let mut table = MeshTable::new();
        assert!(matches!(
            table.insert(port("web", 0, 80), vec![]),
            Err(TableError::PortZero { .. })
        ));
    }
}
