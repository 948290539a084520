//! The cluster's service network: published ports, service virtual IPs and
//! task addresses, handed out while ops apply (so no two managers can give
//! one port or address twice), and the routing table every node's mesh and
//! DNS server are built from.
//!
//! Addresses come from one network, 198.18.0.0/16 (RFC 2544's benchmarking
//! range: never a real LAN, so putting its addresses on a host's loopback
//! cannot hide a real neighbour). Its first address is every node's DNS
//! server; the mesh makes every VIP and task address local on every node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use crate::task::Task;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum as Proto,
    EndpointPortConfigPublishModeEnum as Mode, EndpointSpecModeEnum, NodeState,
    ServiceEndpointVirtualIps, TaskState,
};
use serde::{Deserialize, Serialize};

use crate::models::Service;
use crate::ops::StoreError;
use crate::state::{service_name, State, TaskExt};

/// The network service VIPs and task addresses come from.
pub const NETWORK: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 0, 0), 16);
/// Where every node's DNS server listens, and containers' resolver.
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The network's ID and name in VirtualIPs and task attachments.
pub const INGRESS: &str = "ingress";
/// Ingress ports given to services that publish without a port number.
pub const DYNAMIC_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;
/// The ports a task's executor must publish.
pub fn task_ports(task: &Task) -> &[EndpointPortConfig] {
    &task.runtime.ports
}

/// The task's address on the service network, if it has one.
pub fn task_addr(task: &Task) -> Option<Ipv4Addr> {
    task.runtime.addr
}

/// The service's virtual IP, if it has one.
pub fn service_vip(service: &Service) -> Option<Ipv4Addr> {
    service
        .endpoint
        .as_ref()?
        .virtual_ips
        .as_ref()?
        .iter()
        .find_map(|v| v.addr.as_deref().and_then(cidr_ip))
}

fn cidr_ip(cidr: &str) -> Option<Ipv4Addr> {
    cidr.split('/').next()?.parse().ok()
}

fn cidr(ip: Ipv4Addr) -> String {
    format!("{ip}/{}", NETWORK.1)
}

pub fn protocol(p: &EndpointPortConfig) -> Proto {
    match p.protocol {
        Some(Proto::UDP) => Proto::UDP,
        Some(Proto::SCTP) => Proto::SCTP,
        _ => Proto::TCP,
    }
}

pub fn mode(p: &EndpointPortConfig) -> Mode {
    match p.publish_mode {
        Some(Mode::HOST) => Mode::HOST,
        _ => Mode::INGRESS,
    }
}

fn port_no(p: Option<i64>) -> u16 {
    p.and_then(|p| u16::try_from(p).ok()).unwrap_or(0)
}

/// What part of a task's ports its workload depends on: a change in these
/// needs a new task; an ingress published port only moves the mesh.
pub fn workload_ports(ports: &[EndpointPortConfig]) -> BTreeSet<(String, u16, Option<u16>)> {
    ports
        .iter()
        .map(|p| {
            let host = (mode(p) == Mode::HOST).then(|| port_no(p.published_port));
            (protocol(p).to_string(), port_no(p.target_port), host)
        })
        .collect()
}

/// Addresses and ports in use, rebuilt from the objects on load.
#[derive(Debug, Clone, Default)]
pub(crate) struct Allocations {
    addrs: BTreeSet<Ipv4Addr>,
}

impl Allocations {
    pub(crate) fn rebuild(
        services: &BTreeMap<String, Service>,
        tasks: &BTreeMap<String, Task>,
    ) -> Self {
        let mut addrs = BTreeSet::new();
        addrs.extend(services.values().filter_map(service_vip));
        addrs.extend(tasks.values().filter_map(task_addr));
        Allocations { addrs }
    }

    /// The lowest free address after the DNS server's.
    fn take(&mut self) -> Result<Ipv4Addr, StoreError> {
        let base = u32::from(NETWORK.0);
        let size = 1u32 << (32 - NETWORK.1);
        let mut candidate = u32::from(DNS_ADDR) + 1;
        for used in self.addrs.range(Ipv4Addr::from(candidate)..) {
            if u32::from(*used) != candidate {
                break;
            }
            candidate += 1;
        }
        // The last address is the network's broadcast address.
        if candidate >= base + size - 1 {
            return Err(StoreError::NoFreeAddress {
                network: format!("{}/{}", NETWORK.0, NETWORK.1),
            });
        }
        let ip = Ipv4Addr::from(candidate);
        self.addrs.insert(ip);
        Ok(ip)
    }

    fn release(&mut self, ip: Option<Ipv4Addr>) {
        if let Some(ip) = ip {
            self.addrs.remove(&ip);
        }
    }
}

impl State {
    /// Fills a service's `Endpoint` from its spec before it is stored:
    /// ingress ports checked against every other service and numbered from
    /// 30000 when the spec leaves them open (keeping the number an earlier
    /// version got), and a VIP while it has ports in vip mode.
    pub(crate) fn allocate_endpoint(&mut self, service: &mut Service) -> Result<(), StoreError> {
        let id = service.id.clone().unwrap_or_default();
        let previous = self.services.get(&id);
        let spec = service
            .spec
            .as_ref()
            .and_then(|s| s.endpoint_spec.clone())
            .unwrap_or_default();
        let wanted = spec.ports.clone().unwrap_or_default();
        let old_ports = previous
            .and_then(|s| s.endpoint.as_ref())
            .and_then(|e| e.ports.clone())
            .unwrap_or_default();

        let mut taken: BTreeMap<(Proto, u16), &Service> = BTreeMap::new();
        for other in self
            .services
            .values()
            .filter(|s| s.id.as_deref() != Some(&id))
        {
            for p in other
                .endpoint
                .as_ref()
                .and_then(|e| e.ports.as_ref())
                .into_iter()
                .flatten()
            {
                if mode(p) == Mode::INGRESS {
                    taken.insert((protocol(p), port_no(p.published_port)), other);
                }
            }
        }
        let mut ports = Vec::with_capacity(wanted.len());
        let mut mine: BTreeSet<(Proto, u16)> = BTreeSet::new();
        for p in &wanted {
            let (proto, target) = (protocol(p), port_no(p.target_port));
            let mut port = EndpointPortConfig {
                name: p.name.clone(),
                protocol: Some(proto),
                target_port: Some(i64::from(target)),
                published_port: p.published_port,
                publish_mode: Some(mode(p)),
            };
            if mode(p) == Mode::INGRESS {
                let mut published = port_no(p.published_port);
                if published == 0 {
                    published = old_ports
                        .iter()
                        .find(|o| {
                            mode(o) == Mode::INGRESS
                                && protocol(o) == proto
                                && port_no(o.target_port) == target
                                && !mine.contains(&(proto, port_no(o.published_port)))
                        })
                        .map(|o| port_no(o.published_port))
                        .filter(|p| DYNAMIC_PORTS.contains(p) && !taken.contains_key(&(proto, *p)))
                        .or_else(|| {
                            DYNAMIC_PORTS.clone().find(|p| {
                                !taken.contains_key(&(proto, *p))
                                    && !mine.contains(&(proto, *p))
                                    && !wanted.iter().any(|w| {
                                        protocol(w) == proto && port_no(w.published_port) == *p
                                    })
                            })
                        })
                        .ok_or_else(|| StoreError::NoFreePort {
                            protocol: proto.to_string(),
                        })?;
                } else if let Some(owner) = taken.get(&(proto, published)) {
                    return Err(StoreError::PortInUse {
                        port: published,
                        protocol: proto.to_string(),
                        service_name: service_name(owner).to_string(),
                        service_id: owner.id.clone().unwrap_or_default(),
                    });
                }
                mine.insert((proto, published));
                port.published_port = Some(i64::from(published));
            }
            ports.push(port);
        }

        let dnsrr = spec.mode == Some(EndpointSpecModeEnum::DNSRR);
        let old_vip = previous.and_then(service_vip);
        let vip = if ports.is_empty() || dnsrr {
            self.allocations.release(old_vip);
            None
        } else {
            match old_vip {
                Some(ip) => Some(ip),
                None => Some(self.allocations.take()?),
            }
        };
        let endpoint = service.endpoint.get_or_insert_with(Default::default);
        endpoint.spec = Some(spec);
        endpoint.ports = (!ports.is_empty()).then_some(ports);
        endpoint.virtual_ips = vip.map(|ip| {
            vec![ServiceEndpointVirtualIps {
                network_id: Some(INGRESS.to_string()),
                addr: Some(cidr(ip)),
            }]
        });
        Ok(())
    }

    pub(crate) fn release_service(&mut self, service: &Service) {
        self.allocations.release(service_vip(service));
    }

    /// Gives a new task of a service with ports its address and the ports
    /// its executor must publish.
    pub(crate) fn allocate_task(&mut self, task: &mut Task) -> Result<(), StoreError> {
        let Some(service) = self.services.get(task.service()) else {
            return Ok(());
        };
        let ports = service
            .endpoint
            .as_ref()
            .and_then(|e| e.ports.clone())
            .unwrap_or_default();
        if ports.is_empty() {
            return Ok(());
        }
        task.runtime.addr = Some(self.allocations.take()?);
        task.runtime.ports = ports;
        Ok(())
    }

    pub(crate) fn release_task(&mut self, task: &Task) {
        self.allocations.release(task_addr(task));
    }
}

/// Everything a node needs to route and resolve service traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingTable {
    pub services: Vec<ServiceRoutes>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRoutes {
    pub id: String,
    pub name: String,
    /// None in dnsrr mode and for services without ports.
    pub vip: Option<Ipv4Addr>,
    pub dnsrr: bool,
    pub ports: Vec<PortRoute>,
    /// Tasks that take traffic: running, wanted running, on a node that is
    /// not down.
    pub tasks: Vec<TaskRoute>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRoute {
    pub transport: Transport,
    pub target: u16,
    pub published: u16,
    /// Ingress: every node listens on `published`. Host: only the task's
    /// node does, through its engine.
    pub ingress: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRoute {
    pub id: String,
    pub addr: Option<Ipv4Addr>,
    /// Where each target port is reachable: the node's address and the host
    /// port the executor reported.
    pub node_addr: IpAddr,
    pub ports: Vec<TaskPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPort {
    pub transport: Transport,
    pub target: u16,
    pub host_port: u16,
}

fn transport(proto: Proto) -> Option<Transport> {
    match proto {
        Proto::TCP => Some(Transport::Tcp),
        Proto::UDP => Some(Transport::Udp),
        _ => None,
    }
}

impl RoutingTable {
    /// Services without ports have no addresses and nothing to route, so
    /// they are left out: the table every node receives stays as small as
    /// the routed part of the cluster.
    pub fn build(state: &State) -> RoutingTable {
        let services = state
            .services
            .values()
            .filter(|svc| {
                svc.endpoint
                    .as_ref()
                    .and_then(|e| e.ports.as_ref())
                    .is_some_and(|p| !p.is_empty())
            })
            .map(|svc| {
                let id = svc.id.clone().unwrap_or_default();
                let ports: Vec<PortRoute> = svc
                    .endpoint
                    .as_ref()
                    .and_then(|e| e.ports.as_ref())
                    .into_iter()
                    .flatten()
                    .filter_map(|p| {
                        Some(PortRoute {
                            transport: transport(protocol(p))?,
                            target: port_no(p.target_port),
                            published: port_no(p.published_port),
                            ingress: mode(p) == Mode::INGRESS,
                        })
                    })
                    .collect();
                let dnsrr = svc
                    .endpoint
                    .as_ref()
                    .and_then(|e| e.spec.as_ref())
                    .and_then(|s| s.mode)
                    == Some(EndpointSpecModeEnum::DNSRR);
                let mut tasks: Vec<TaskRoute> = state
                    .tasks_of_service(&id)
                    .filter(|t| {
                        t.state() == TaskState::RUNNING && t.desired() <= TaskState::RUNNING
                    })
                    .filter_map(|t| task_route(state, t))
                    .collect();
                tasks.sort_by(|a, b| a.id.cmp(&b.id));
                ServiceRoutes {
                    id,
                    name: service_name(svc).to_string(),
                    vip: service_vip(svc),
                    dnsrr,
                    ports,
                    tasks,
                }
            })
            .collect();
        RoutingTable { services }
    }
}

fn task_route(state: &State, task: &Task) -> Option<TaskRoute> {
    let node = state.nodes.get(task.node()?)?;
    let status = node.status.as_ref()?;
    if status.state == Some(NodeState::DOWN) {
        return None;
    }
    let node_addr: IpAddr = status.addr.as_deref()?.parse().ok()?;
    let ports = task
        .status
        .as_ref()
        .and_then(|s| s.port_status.as_ref())
        .and_then(|p| p.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(TaskPort {
                transport: transport(protocol(p))?,
                target: port_no(p.target_port),
                host_port: port_no(p.published_port),
            })
        })
        .collect();
    Some(TaskRoute {
        id: task.id_str().to_string(),
        addr: task_addr(task),
        node_addr,
        ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Op;
    use bollard::models::{EndpointSpec, ServiceSpec};

    fn port(published: i64, target: i64, mode: Mode) -> EndpointPortConfig {
        EndpointPortConfig {
            protocol: Some(Proto::TCP),
            published_port: (published != 0).then_some(published),
            target_port: Some(target),
            publish_mode: Some(mode),
            ..Default::default()
        }
    }

    fn svc(id: &str, ports: Vec<EndpointPortConfig>) -> Service {
        Service::from(bollard::models::Service {
            id: Some(id.into()),
            spec: Some(ServiceSpec {
                name: Some(format!("svc-{id}")),
                endpoint_spec: Some(EndpointSpec {
                    ports: Some(ports),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn published(s: &State, id: &str) -> Vec<i64> {
        s.services[id]
            .endpoint
            .as_ref()
            .and_then(|e| e.ports.as_ref())
            .into_iter()
            .flatten()
            .map(|p| p.published_port.unwrap_or(0))
            .collect()
    }

    fn update(s: &mut State, index: u64, service: Service) -> Result<(), StoreError> {
        let expected =
            crate::state::version_of(&s.services[service.id.as_deref().unwrap()].version);
        s.apply(
            index,
            Op::UpdateService {
                expected,
                service: Box::new(service),
            },
        )
    }

    #[test]
    fn ingress_ports_are_numbered_and_kept() {
        let mut s = State::default();
        let ports = vec![port(0, 80, Mode::INGRESS), port(0, 443, Mode::INGRESS)];
        s.apply(1, Op::CreateService(Box::new(svc("a", ports.clone()))))
            .unwrap();
        assert_eq!(published(&s, "a"), vec![30000, 30001]);
        s.apply(
            2,
            Op::CreateService(Box::new(svc("b", vec![port(0, 80, Mode::INGRESS)]))),
        )
        .unwrap();
        assert_eq!(published(&s, "b"), vec![30002]);
        // An update keeps the numbers the service already had.
        update(&mut s, 3, svc("a", ports)).unwrap();
        assert_eq!(published(&s, "a"), vec![30000, 30001]);
    }

    #[test]
    fn a_taken_ingress_port_is_refused_naming_its_owner() {
        let mut s = State::default();
        s.apply(
            1,
            Op::CreateService(Box::new(svc("a", vec![port(8080, 80, Mode::INGRESS)]))),
        )
        .unwrap();
        let err = s
            .apply(
                2,
                Op::CreateService(Box::new(svc("b", vec![port(8080, 80, Mode::INGRESS)]))),
            )
            .unwrap_err();
        assert_eq!(
            err,
            StoreError::PortInUse {
                port: 8080,
                protocol: "tcp".into(),
                service_name: "svc-a".into(),
                service_id: "a".into(),
            }
        );
        assert!(!s.services.contains_key("b"));
        // Host mode on the same number is a node-local matter.
        s.apply(
            3,
            Op::CreateService(Box::new(svc("c", vec![port(8080, 80, Mode::HOST)]))),
        )
        .unwrap();
        // Once the owner is gone the port is free.
        s.apply(4, Op::RemoveService { id: "a".into() }).unwrap();
        s.apply(
            5,
            Op::CreateService(Box::new(svc("b", vec![port(8080, 80, Mode::INGRESS)]))),
        )
        .unwrap();
    }

    #[test]
    fn vips_and_task_addresses_are_unique_and_reused_after_release() {
        let mut s = State::default();
        s.apply(
            1,
            Op::CreateService(Box::new(svc("a", vec![port(8080, 80, Mode::INGRESS)]))),
        )
        .unwrap();
        assert_eq!(
            service_vip(&s.services["a"]),
            Some(Ipv4Addr::new(198, 18, 0, 2))
        );
        for (i, id) in ["t1", "t2"].into_iter().enumerate() {
            let task = Task {
                id: Some(id.into()),
                service_id: Some("a".into()),
                ..Default::default()
            };
            s.apply(2 + i as u64, Op::CreateTask(Box::new(task)))
                .unwrap();
        }
        assert_eq!(
            task_addr(&s.tasks["t1"]),
            Some(Ipv4Addr::new(198, 18, 0, 3))
        );
        assert_eq!(
            task_addr(&s.tasks["t2"]),
            Some(Ipv4Addr::new(198, 18, 0, 4))
        );
        assert_eq!(task_ports(&s.tasks["t1"]).len(), 1);
        s.apply(5, Op::RemoveTask { id: "t1".into() }).unwrap();
        let task = Task {
            id: Some("t3".into()),
            service_id: Some("a".into()),
            ..Default::default()
        };
        s.apply(6, Op::CreateTask(Box::new(task))).unwrap();
        assert_eq!(
            task_addr(&s.tasks["t3"]),
            Some(Ipv4Addr::new(198, 18, 0, 3))
        );
        // The index is rebuilt the same from the objects (snapshot load).
        let before = s.allocations.addrs.clone();
        s.rebuild_indexes();
        assert_eq!(s.allocations.addrs, before);
    }

    #[test]
    fn a_service_without_ports_gets_no_addresses() {
        let mut s = State::default();
        s.apply(1, Op::CreateService(Box::new(svc("a", vec![]))))
            .unwrap();
        assert_eq!(service_vip(&s.services["a"]), None);
        let task = Task {
            id: Some("t".into()),
            service_id: Some("a".into()),
            ..Default::default()
        };
        s.apply(2, Op::CreateTask(Box::new(task))).unwrap();
        assert_eq!(task_addr(&s.tasks["t"]), None);
        assert!(task_ports(&s.tasks["t"]).is_empty());
    }

    #[test]
    fn a_new_published_number_alone_keeps_tasks() {
        let a = workload_ports(&[port(8080, 80, Mode::INGRESS)]);
        assert_eq!(a, workload_ports(&[port(9090, 80, Mode::INGRESS)]));
        assert_ne!(a, workload_ports(&[port(8080, 81, Mode::INGRESS)]));
        assert_ne!(
            workload_ports(&[port(8080, 80, Mode::HOST)]),
            workload_ports(&[port(9090, 80, Mode::HOST)])
        );
    }
}
