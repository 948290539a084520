//! The routing table built from the state: every node's mesh and DNS
//! server are made from it (see `network` for its types).

use std::net::IpAddr;

use bollard::models::{
    EndpointPortConfigProtocolEnum as Proto, EndpointPortConfigPublishModeEnum as Mode,
    EndpointSpecModeEnum, NodeState, TaskState,
};

use crate::network::{
    mode, port_no, protocol, service_vip, task_addr, PortRoute, RoutingTable, ServiceRoutes,
    TaskPort, TaskRoute, Transport,
};
use crate::objects::{service_name, TaskExt};
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
