//! The cluster's service network as nodes see it: its address and name,
//! where a service's VIP and a task's address and ports are read, and the
//! routing table every node's mesh and DNS server are built from. What
//! hands the ports and addresses out, while ops apply, is `crate::alloc`.
//!
//! Addresses come from one network, 198.18.0.0/16 (RFC 2544's benchmarking
//! range: never a real LAN, so putting its addresses on a host's loopback
//! cannot hide a real neighbour). Its first address is every node's DNS
//! server; the mesh makes every VIP and task address local on every node.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use crate::task::Task;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum as Proto,
    EndpointPortConfigPublishModeEnum as Mode,
};
use serde::{Deserialize, Serialize};

use crate::models::Service;

/// The network service VIPs and task addresses come from.
pub const NETWORK: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 0, 0), 16);
/// [`NETWORK`] as a subnet: the ingress network's.
pub fn mesh_subnet() -> crate::networks::Subnet {
    let (addr, prefix) = NETWORK;
    crate::networks::Subnet { addr, prefix }
}

/// Where every node's DNS server listens, and containers' resolver.
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
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

/// The service's virtual IP on network `network` (an ID), if it has one.
pub fn service_vip(service: &Service, network: &str) -> Option<Ipv4Addr> {
    service
        .endpoint
        .as_ref()?
        .virtual_ips
        .as_ref()?
        .iter()
        .filter(|v| v.network_id.as_deref() == Some(network))
        .find_map(|v| v.addr.as_deref().and_then(cidr_ip))
}

fn cidr_ip(cidr: &str) -> Option<Ipv4Addr> {
    cidr.split('/').next()?.parse().ok()
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

pub(crate) fn port_no(p: Option<i64>) -> u16 {
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

/// Everything a node needs to route and resolve service traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingTable {
    /// The routing mesh: services with ports.
    pub services: Vec<ServiceRoutes>,
    /// The overlay networks that have tasks on them.
    #[serde(default)]
    pub networks: Vec<NetworkRoutes>,
    /// The UDP port VXLAN traffic between nodes uses (`swarm init
    /// --data-path-port`).
    #[serde(default = "default_vxlan_port")]
    pub vxlan_port: u16,
    /// The address of every node of the swarm (its `Status.Addr`, Down
    /// ones too), sorted, each once: where the other nodes' meshes connect
    /// from, so the only sources a node lets reach its tasks' ingress host
    /// ports. Empty in a table from a manager that did not send it.
    #[serde(default)]
    pub node_addrs: Vec<IpAddr>,
    /// The address of the node holding this copy of the table, as it
    /// registered it (so its own `Status.Addr`): set by the node's session
    /// when the table arrives, never sent (every node gets the same
    /// table). Where its mesh connects from, and how it finds its own tasks.
    #[serde(skip)]
    pub own_addr: Option<IpAddr>,
}

impl Default for RoutingTable {
    fn default() -> Self {
        RoutingTable {
            services: Vec::new(),
            networks: Vec::new(),
            vxlan_port: VXLAN_PORT,
            node_addrs: Vec::new(),
            own_addr: None,
        }
    }
}

/// Docker's (and IANA's) VXLAN port.
pub const VXLAN_PORT: u16 = 4789;

fn default_vxlan_port() -> u16 {
    VXLAN_PORT
}

/// One overlay network as every node needs it: where its addresses live
/// (for the forwarding entries between nodes) and the names its tasks
/// resolve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRoutes {
    pub id: String,
    pub name: String,
    pub vni: u32,
    pub subnet: crate::networks::Subnet,
    pub gateway: Ipv4Addr,
    #[serde(default)]
    pub mtu: Option<u32>,
    pub internal: bool,
    /// Every node with a task on the network: its address there and the
    /// address other nodes reach it at (its VXLAN endpoint).
    pub nodes: Vec<NetworkNode>,
    /// Every task on the network that holds its address and has a node,
    /// running or not: a task starting up must be answered too.
    pub endpoints: Vec<NetworkEndpoint>,
    pub services: Vec<NetworkService>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkNode {
    pub node_id: String,
    pub addr: Ipv4Addr,
    pub underlay: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkEndpoint {
    pub task_id: String,
    pub addr: Ipv4Addr,
    pub node_id: String,
}

/// A service as the tasks of one network see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkService {
    pub id: String,
    /// Its name and its aliases on this network.
    pub names: Vec<String>,
    /// None in dnsrr mode.
    pub vip: Option<Ipv4Addr>,
    /// The addresses of its tasks that take traffic (as in the mesh).
    pub tasks: Vec<Ipv4Addr>,
}

/// The MAC address an interface with address `ip` on an overlay network
/// has: Docker's `02:42:` and the address's four bytes, so every node
/// knows every other's without asking.
pub fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// `02:42:0a:00:01:05`.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
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
    /// Published TCP ports (ingress) whose connections start with a PROXY
    /// protocol header, and its version (1 or 2): the service label
    /// [`PROXY_PROTOCOL_LABEL`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_protocol: Vec<(u16, u8)>,
}

/// The service label that opts published ports into the PROXY protocol:
/// `PUBLISHED[/v1|/v2]`, comma-separated (`8080/v2,8443`; v1 when the
/// version is left out). Ports the service does not publish over TCP in
/// ingress mode, and words that are not such a port, are left out; a
/// port named twice takes its first version.
pub const PROXY_PROTOCOL_LABEL: &str = "com.flotilla.proxy-protocol";

/// Why a [`PROXY_PROTOCOL_LABEL`] value asks for something a service
/// publishing `tcp_ingress` (its TCP ingress published ports) cannot do.
pub fn check_proxy_protocol_label(label: &str, tcp_ingress: &[u16]) -> Result<(), String> {
    for word in label.split(',').map(str::trim) {
        let (port, version) = word.split_once('/').unwrap_or((word, "v1"));
        if !matches!(
            version.trim().to_ascii_lowercase().as_str(),
            "v1" | "1" | "v2" | "2"
        ) {
            return Err(format!(
                "label {PROXY_PROTOCOL_LABEL}: \"{word}\": the PROXY protocol version must be v1 or v2"
            ));
        }
        let Ok(port) = port.trim().parse::<u16>() else {
            return Err(format!(
                "label {PROXY_PROTOCOL_LABEL}: \"{word}\": expected PUBLISHED[/v1|/v2], e.g. 8080/v2"
            ));
        };
        if !tcp_ingress.contains(&port) {
            return Err(format!(
                "label {PROXY_PROTOCOL_LABEL}: port {port} is not published by the service over TCP in ingress mode"
            ));
        }
    }
    Ok(())
}

/// The ports and versions a [`PROXY_PROTOCOL_LABEL`] value asks for,
/// among `tcp_ingress` (the service's published TCP ingress ports).
pub fn proxy_protocol_ports(label: &str, tcp_ingress: &[u16]) -> Vec<(u16, u8)> {
    let mut out: Vec<(u16, u8)> = Vec::new();
    let words = label.split(',').filter_map(|word| {
        let (port, version) = match word.trim().split_once('/') {
            Some((port, v)) => (port, v.trim().to_ascii_lowercase()),
            None => (word.trim(), "v1".to_string()),
        };
        let version = match version.as_str() {
            "v1" | "1" => 1,
            "v2" | "2" => 2,
            _ => return None,
        };
        let port: u16 = port.trim().parse().ok()?;
        tcp_ingress.contains(&port).then_some((port, version))
    });
    // A port named twice: its first mention counts.
    for (port, version) in words {
        if !out.iter().any(|(p, _)| *p == port) {
            out.push((port, version));
        }
    }
    out.sort();
    out
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
    /// Published for the routing mesh (ingress mode): the host port is
    /// the mesh's way to the task, which only the swarm's nodes may use.
    /// False for a host-mode port (public), and in a table from a manager
    /// that did not say, so such a table guards nothing.
    #[serde(default)]
    pub ingress: bool,
}

/// `host` of `host:port` (IPv6 in brackets keeps them): what nodes report
/// as their address, the port being the cluster's.
pub fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn port(published: i64, target: i64, mode: Mode) -> EndpointPortConfig {
        EndpointPortConfig {
            protocol: Some(Proto::TCP),
            published_port: (published != 0).then_some(published),
            target_port: Some(target),
            publish_mode: Some(mode),
            ..Default::default()
        }
    }

    #[test]
    fn the_proxy_protocol_label_names_published_tcp_ports() {
        let ports = [8080, 8443];
        assert_eq!(
            proxy_protocol_ports("8080/v2, 8443 ,9090/v1,x/v2,8080/v1,8443/v3", &ports),
            vec![(8080, 2), (8443, 1)]
        );
        assert!(proxy_protocol_ports("", &ports).is_empty());
        assert_eq!(check_proxy_protocol_label("8080/v2, 8443", &ports), Ok(()));
        assert_eq!(
            check_proxy_protocol_label("8080/v3", &ports).unwrap_err(),
            "label com.flotilla.proxy-protocol: \"8080/v3\": the PROXY protocol version must be v1 or v2"
        );
        assert!(check_proxy_protocol_label("web", &ports)
            .unwrap_err()
            .contains("expected PUBLISHED[/v1|/v2]"));
        assert!(check_proxy_protocol_label("9090", &ports)
            .unwrap_err()
            .contains("port 9090 is not published"));
    }

    #[test]
    fn host_of_strips_the_port() {
        assert_eq!(host_of("127.0.0.1:2377"), "127.0.0.1");
        assert_eq!(host_of("10.0.0.1"), "10.0.0.1");
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
