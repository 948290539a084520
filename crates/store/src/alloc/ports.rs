//! Published ports. An ingress port is published on every node, so each
//! number (per protocol) belongs to one service across the cluster; a port
//! the spec leaves open gets a number from the dynamic range, keeping the one
//! an earlier version of the service had. Host-mode ports are each node's
//! own matter (the scheduler's) and pass through unchecked.

use std::collections::{BTreeMap, BTreeSet};

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum as Proto,
    EndpointPortConfigPublishModeEnum as Mode,
};

use crate::error::StoreError;
use crate::models::Service;
use crate::network::{mode, port_no, protocol, DYNAMIC_PORTS};
use crate::objects::service_name;

/// The service an ingress port belongs to, for the error that refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner<'a> {
    pub(crate) name: &'a str,
    pub(crate) id: &'a str,
}

/// The ingress ports other services publish, and whose each one is.
#[derive(Debug, Default)]
pub(crate) struct IngressPorts<'a> {
    taken: BTreeMap<(Proto, u16), Owner<'a>>,
}

impl<'a> IngressPorts<'a> {
    /// The ingress ports `services` publish (their allocated endpoints).
    pub(crate) fn published_by(services: impl IntoIterator<Item = &'a Service>) -> Self {
        let mut ports = IngressPorts::default();
        for svc in services {
            let owner = Owner {
                name: service_name(svc),
                id: svc.id.as_deref().unwrap_or_default(),
            };
            let published = svc.endpoint.as_ref().and_then(|e| e.ports.as_ref());
            for p in published.into_iter().flatten() {
                if mode(p) == Mode::INGRESS {
                    ports.insert(protocol(p), port_no(p.published_port), owner);
                }
            }
        }
        ports
    }

    pub(crate) fn insert(&mut self, proto: Proto, port: u16, owner: Owner<'a>) {
        self.taken.insert((proto, port), owner);
    }

    fn is_free(&self, proto: Proto, port: u16) -> bool {
        !self.taken.contains_key(&(proto, port))
    }

    /// A service's endpoint ports for the `wanted` spec ports, in order:
    /// protocol and mode filled in, each ingress port checked against the
    /// taken ones or numbered when left open. `previous` is what the
    /// service's last version was given.
    pub(crate) fn assign(
        &self,
        wanted: &[EndpointPortConfig],
        previous: &[EndpointPortConfig],
    ) -> Result<Vec<EndpointPortConfig>, StoreError> {
        let mut mine: BTreeSet<(Proto, u16)> = BTreeSet::new();
        let mut ports = Vec::with_capacity(wanted.len());
        for p in wanted {
            let mut port = normalized(p);
            if mode(p) == Mode::INGRESS {
                let proto = protocol(p);
                let published = match port_no(p.published_port) {
                    0 => self.open_port(p, wanted, previous, &mine)?,
                    fixed => self.fixed_port(proto, fixed)?,
                };
                mine.insert((proto, published));
                port.published_port = Some(i64::from(published));
            }
            ports.push(port);
        }
        Ok(ports)
    }

    /// A fixed ingress number: refused when another service publishes it.
    fn fixed_port(&self, proto: Proto, port: u16) -> Result<u16, StoreError> {
        match self.taken.get(&(proto, port)) {
            Some(owner) => Err(StoreError::PortInUse {
                port,
                protocol: proto.to_string(),
                service_name: owner.name.to_string(),
                service_id: owner.id.to_string(),
            }),
            None => Ok(port),
        }
    }

    /// An open ingress port: the number the previous version had for the
    /// same target, if still free; else the lowest dynamic number nobody,
    /// this service included, publishes or asks for.
    fn open_port(
        &self,
        p: &EndpointPortConfig,
        wanted: &[EndpointPortConfig],
        previous: &[EndpointPortConfig],
        mine: &BTreeSet<(Proto, u16)>,
    ) -> Result<u16, StoreError> {
        let (proto, target) = (protocol(p), port_no(p.target_port));
        let kept = previous
            .iter()
            .find(|o| {
                mode(o) == Mode::INGRESS
                    && protocol(o) == proto
                    && port_no(o.target_port) == target
                    && !mine.contains(&(proto, port_no(o.published_port)))
            })
            .map(|o| port_no(o.published_port))
            .filter(|p| DYNAMIC_PORTS.contains(p) && self.is_free(proto, *p));
        let asked = |port: u16| {
            wanted
                .iter()
                .any(|w| protocol(w) == proto && port_no(w.published_port) == port)
        };
        kept.or_else(|| {
            DYNAMIC_PORTS.clone().find(|port| {
                self.is_free(proto, *port) && !mine.contains(&(proto, *port)) && !asked(*port)
            })
        })
        .ok_or_else(|| StoreError::NoFreePort {
            protocol: proto.to_string(),
        })
    }
}

/// The spec's port as the endpoint shows it: protocol and mode spelled out.
fn normalized(p: &EndpointPortConfig) -> EndpointPortConfig {
    EndpointPortConfig {
        name: p.name.clone(),
        protocol: Some(protocol(p)),
        target_port: Some(i64::from(port_no(p.target_port))),
        published_port: p.published_port,
        publish_mode: Some(mode(p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(proto: Proto, published: i64, target: i64, mode: Mode) -> EndpointPortConfig {
        EndpointPortConfig {
            protocol: Some(proto),
            published_port: (published != 0).then_some(published),
            target_port: Some(target),
            publish_mode: Some(mode),
            ..Default::default()
        }
    }

    fn tcp(published: i64, target: i64) -> EndpointPortConfig {
        port(Proto::TCP, published, target, Mode::INGRESS)
    }

    fn numbers(ports: &[EndpointPortConfig]) -> Vec<i64> {
        ports.iter().map(|p| p.published_port.unwrap()).collect()
    }

    const WEB: Owner = Owner {
        name: "web",
        id: "svc-1",
    };

    #[test]
    fn open_ports_take_the_lowest_free_dynamic_numbers() {
        let mut taken = IngressPorts::default();
        taken.insert(Proto::TCP, 30000, WEB);
        taken.insert(Proto::TCP, 30002, WEB);
        let ports = taken
            .assign(&[tcp(0, 80), tcp(0, 81), tcp(0, 82)], &[])
            .unwrap();
        assert_eq!(numbers(&ports), vec![30001, 30003, 30004]);
    }

    #[test]
    fn an_open_port_skips_a_number_the_same_spec_asks_for() {
        let ports = IngressPorts::default()
            .assign(&[tcp(0, 80), tcp(30000, 81)], &[])
            .unwrap();
        assert_eq!(numbers(&ports), vec![30001, 30000]);
    }

    #[test]
    fn the_previous_number_is_kept_for_the_same_target() {
        let previous = [tcp(30005, 443), tcp(30007, 80)];
        let ports = IngressPorts::default()
            .assign(&[tcp(0, 80), tcp(0, 443), tcp(0, 8080)], &previous)
            .unwrap();
        assert_eq!(numbers(&ports), vec![30007, 30005, 30000]);
    }

    #[test]
    fn a_previous_number_now_taken_is_replaced() {
        let mut taken = IngressPorts::default();
        taken.insert(Proto::TCP, 30005, WEB);
        let ports = taken.assign(&[tcp(0, 80)], &[tcp(30005, 80)]).unwrap();
        assert_eq!(numbers(&ports), vec![30000]);
    }

    #[test]
    fn a_taken_number_is_refused_naming_its_service() {
        let mut taken = IngressPorts::default();
        taken.insert(Proto::TCP, 8080, WEB);
        assert_eq!(
            taken.assign(&[tcp(8080, 80)], &[]),
            Err(StoreError::PortInUse {
                port: 8080,
                protocol: "tcp".into(),
                service_name: "web".into(),
                service_id: "svc-1".into(),
            })
        );
        // The same number in UDP, or in host mode, is another port.
        let udp = port(Proto::UDP, 8080, 80, Mode::INGRESS);
        let host = port(Proto::TCP, 8080, 80, Mode::HOST);
        assert!(taken.assign(&[udp, host], &[]).is_ok());
    }

    #[test]
    fn a_full_dynamic_range_is_an_error_per_protocol() {
        let mut taken = IngressPorts::default();
        for p in DYNAMIC_PORTS {
            taken.insert(Proto::UDP, p, WEB);
        }
        let udp = port(Proto::UDP, 0, 53, Mode::INGRESS);
        assert_eq!(
            taken.assign(&[udp], &[]),
            Err(StoreError::NoFreePort {
                protocol: "udp".into()
            })
        );
        assert_eq!(numbers(&taken.assign(&[tcp(0, 53)], &[]).unwrap()), [30000]);
    }

    #[test]
    fn host_ports_pass_through_and_protocol_and_mode_are_filled_in() {
        let bare = EndpointPortConfig {
            target_port: Some(80),
            ..Default::default()
        };
        let host = port(Proto::TCP, 8080, 80, Mode::HOST);
        let ports = IngressPorts::default()
            .assign(&[bare, host.clone()], &[])
            .unwrap();
        assert_eq!(ports[0], tcp(30000, 80));
        assert_eq!(ports[1], host);
    }

    #[test]
    fn ports_are_read_from_other_services_endpoints() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "ID": "svc-1",
            "Spec": { "Name": "web" },
            "Endpoint": { "Ports": [
                { "Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress" },
                { "Protocol": "tcp", "TargetPort": 81, "PublishedPort": 9090, "PublishMode": "host" }
            ]}
        }))
        .unwrap();
        let taken = IngressPorts::published_by([&svc]);
        assert_eq!(
            taken.fixed_port(Proto::TCP, 8080),
            Err(StoreError::PortInUse {
                port: 8080,
                protocol: "tcp".into(),
                service_name: "web".into(),
                service_id: "svc-1".into(),
            })
        );
        assert_eq!(taken.fixed_port(Proto::TCP, 9090), Ok(9090));
    }
}
