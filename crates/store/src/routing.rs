//! The routing table built from the state: every node's mesh and DNS
//! server are made from it (see `network` for its types).

use std::net::IpAddr;

use bollard::models::{
    EndpointPortConfigProtocolEnum as Proto, EndpointPortConfigPublishModeEnum as Mode,
    EndpointSpecModeEnum, NodeState, TaskState,
};

use crate::network::{
    mode, port_no, protocol, service_vip, task_addr, NetworkEndpoint, NetworkNode, NetworkRoutes,
    NetworkService, PortRoute, RoutingTable, ServiceRoutes, TaskPort, TaskRoute, Transport,
};
use crate::networks::Network;
use crate::objects::{service_name, TaskExt};
use crate::ops::service_networks;
use crate::state::State;
use crate::task::Task;

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
        let ingress = state.ingress().map(|n| n.id.as_str()).unwrap_or_default();
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
                    .spec
                    .as_ref()
                    .and_then(|s| s.endpoint_spec.as_ref())
                    .and_then(|s| s.mode)
                    == Some(EndpointSpecModeEnum::DNSRR);
                let mut tasks: Vec<TaskRoute> = state
                    .tasks_of_service(&id)
                    .filter(|t| takes_traffic(t))
                    .filter_map(|t| task_route(state, t))
                    .collect();
                tasks.sort_by(|a, b| a.id.cmp(&b.id));
                let tcp_ingress: Vec<u16> = ports
                    .iter()
                    .filter(|p| p.ingress && p.transport == Transport::Tcp)
                    .map(|p| p.published)
                    .collect();
                let proxy_protocol = svc
                    .spec
                    .as_ref()
                    .and_then(|s| s.labels.as_ref())
                    .and_then(|l| l.get(crate::network::PROXY_PROTOCOL_LABEL))
                    .map(|label| crate::network::proxy_protocol_ports(label, &tcp_ingress))
                    .unwrap_or_default();
                ServiceRoutes {
                    id,
                    name: service_name(svc).to_string(),
                    vip: service_vip(svc, ingress),
                    dnsrr,
                    ports,
                    tasks,
                    proxy_protocol,
                }
            })
            .collect();
        let networks = state
            .networks
            .values()
            .filter(|n| !n.is_ingress())
            .filter_map(|n| network_routes(state, n))
            .collect();
        let vxlan_port = state
            .cluster
            .as_ref()
            .and_then(|c| c.data_path_port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .unwrap_or(crate::network::VXLAN_PORT);
        RoutingTable {
            services,
            networks,
            vxlan_port,
            node_addrs: node_addrs(state),
            own_addr: None,
        }
    }
}

/// Every node's address, sorted, each once (nodes sharing an address, as
/// several daemons of one host may, are one entry).
fn node_addrs(state: &State) -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = state
        .nodes
        .values()
        .filter_map(|n| n.status.as_ref()?.addr.as_deref()?.parse().ok())
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// Whether a task takes traffic: running, and wanted.
fn takes_traffic(t: &Task) -> bool {
    t.state() == TaskState::RUNNING && t.is_wanted()
}

/// The node's address for other nodes, unless it is down.
fn underlay(state: &State, node: &str) -> Option<IpAddr> {
    let status = state.nodes.get(node)?.status.as_ref()?;
    if status.state == Some(NodeState::DOWN) {
        return None;
    }
    status.addr.as_deref()?.parse().ok()
}

/// A network's routes; `None` while no task is on it.
fn network_routes(state: &State, net: &Network) -> Option<NetworkRoutes> {
    let mut endpoints = Vec::new();
    let mut services = Vec::new();
    let attached = state
        .services
        .values()
        .filter(|svc| service_networks(svc).iter().any(|n| n == &net.id));
    for svc in attached {
        let id = svc.id.clone().unwrap_or_default();
        let mut tasks = Vec::new();
        for t in state.tasks_of_service(&id) {
            let Some(att) = t.runtime.networks.iter().find(|a| a.network == net.id) else {
                continue;
            };
            let Some(node) = t.node() else { continue };
            if !crate::alloc::holds_addresses(t) || underlay(state, node).is_none() {
                continue;
            }
            endpoints.push(NetworkEndpoint {
                task_id: t.id_str().to_string(),
                addr: att.addr,
                node_id: node.to_string(),
            });
            if takes_traffic(t) {
                tasks.push(att.addr);
            }
        }
        tasks.sort();
        let mut names = vec![service_name(svc).to_string()];
        names.extend(aliases(svc, &net.id));
        services.push(NetworkService {
            id,
            names,
            vip: service_vip(svc, &net.id),
            tasks,
        });
    }
    if endpoints.is_empty() {
        return None;
    }
    endpoints.sort_by_key(|e| e.addr);
    let nodes = net
        .node_addrs
        .iter()
        .filter(|(node, _)| endpoints.iter().any(|e| &e.node_id == *node))
        .filter_map(|(node, addr)| {
            Some(NetworkNode {
                node_id: node.clone(),
                addr: *addr,
                underlay: underlay(state, node)?,
            })
        })
        .collect();
    Some(NetworkRoutes {
        id: net.id.clone(),
        name: net.name().to_string(),
        vni: net.vni,
        subnet: net.ipam.subnet,
        gateway: net.ipam.gateway,
        mtu: net.mtu(),
        internal: net.spec.internal,
        nodes,
        endpoints,
        services,
    })
}

/// The aliases a service's spec gives it on network `net`.
fn aliases(svc: &crate::models::Service, net: &str) -> Vec<String> {
    svc.spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.networks.as_ref())
        .into_iter()
        .flatten()
        .filter(|n| n.target.as_deref() == Some(net))
        .flat_map(|n| n.aliases.clone().unwrap_or_default())
        .collect()
}

fn task_route(state: &State, task: &Task) -> Option<TaskRoute> {
    let node_addr = underlay(state, task.node()?)?;
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
                ingress: mode(p) == Mode::INGRESS,
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
    use crate::network::tests::port;
    use bollard::models::{
        EndpointPortConfig, EndpointSpec, Node, NodeStatus, PortStatus, ServiceEndpoint,
        ServiceSpec, TaskStatus,
    };

    fn node(state: &mut State, id: &str, addr: Option<&str>, down: bool) {
        let status = NodeStatus {
            state: Some(if down {
                NodeState::DOWN
            } else {
                NodeState::READY
            }),
            addr: addr.map(str::to_string),
            ..Default::default()
        };
        let node = Node {
            id: Some(id.into()),
            status: Some(status),
            ..Default::default()
        };
        state.nodes.insert(id.into(), node);
    }

    /// A service publishing 8080 through the mesh and 9090 on its nodes,
    /// with one running task on `n1` whose ports are where its executor
    /// published them.
    fn web(state: &mut State) {
        let ports = vec![port(8080, 80, Mode::INGRESS), port(9090, 80, Mode::HOST)];
        let svc = crate::models::Service::from(bollard::models::Service {
            id: Some("s1".into()),
            spec: Some(ServiceSpec {
                name: Some("web".into()),
                endpoint_spec: Some(EndpointSpec {
                    ports: Some(ports.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            endpoint: Some(ServiceEndpoint {
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        });
        state.services.insert("s1".into(), svc);
        let published = vec![
            EndpointPortConfig {
                published_port: Some(32768),
                ..port(8080, 80, Mode::INGRESS)
            },
            port(9090, 80, Mode::HOST),
        ];
        let task = Task {
            id: Some("t1".into()),
            service_id: Some("s1".into()),
            node_id: Some("n1".into()),
            desired_state: Some(TaskState::RUNNING),
            status: Some(TaskStatus {
                state: Some(TaskState::RUNNING),
                port_status: Some(PortStatus {
                    ports: Some(published),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        state.tasks.insert("t1".into(), std::sync::Arc::new(task));
        state.index_task("t1");
    }

    #[test]
    fn the_table_lists_every_node_address_once_in_order() {
        let mut state = State::default();
        node(&mut state, "n1", Some("10.0.0.2"), false);
        node(&mut state, "n2", Some("10.0.0.1"), true);
        node(&mut state, "n3", Some("10.0.0.2"), false);
        node(&mut state, "n4", None, false);
        node(&mut state, "n5", Some("not an address"), false);
        let table = RoutingTable::build(&state);
        let addrs: Vec<String> = table.node_addrs.iter().map(|a| a.to_string()).collect();
        // A Down node is still a member: its mesh may come back any time.
        assert_eq!(addrs, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(table.own_addr, None);
    }

    #[test]
    fn task_ports_say_which_are_the_meshs() {
        let mut state = State::default();
        node(&mut state, "n1", Some("10.0.0.1"), false);
        web(&mut state);
        let table = RoutingTable::build(&state);
        let ports = &table.services[0].tasks[0].ports;
        let seen: Vec<(u16, u16, bool)> = ports
            .iter()
            .map(|p| (p.target, p.host_port, p.ingress))
            .collect();
        assert_eq!(seen, [(80, 32768, true), (80, 9090, false)]);
    }

    #[test]
    fn a_table_without_the_new_fields_still_decodes() {
        let old = r#"{"services":[{"id":"s1","name":"web","vip":null,"dnsrr":false,
            "ports":[],"tasks":[{"id":"t1","addr":null,"node_addr":"10.0.0.1",
            "ports":[{"transport":"tcp","target":80,"host_port":32768}]}]}]}"#;
        let table: RoutingTable = serde_json::from_str(old).expect("an old table");
        assert!(table.node_addrs.is_empty());
        assert!(!table.services[0].tasks[0].ports[0].ingress);
        // What a node is told of itself never travels.
        let mut mine = table.clone();
        mine.own_addr = Some("10.0.0.1".parse().unwrap());
        let sent = serde_json::to_string(&mine).unwrap();
        assert!(!sent.contains("own_addr"), "{sent}");
    }
}
