//! Swarm networks in the two shapes dockerd shows them: the Engine's
//! `NetworkResource` (`/networks`, `docker network inspect`) and
//! SwarmKit's `Network` inside a task's `NetworksAttachments`. Fields are
//! in the order of dockerd's Go structs, which is the order it writes them.

use std::collections::BTreeMap;

use flotilla_agent::exec::docker::container_name;
use flotilla_store::models::{Network, ObjectVersion, Task, TaskState};
use flotilla_store::network::{mac_of, mac_string};
use flotilla_store::networks::OVERLAY;
use flotilla_store::state::{node_hostname, State, TaskExt};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct NetworkResource {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Created")]
    pub created: String,
    #[serde(rename = "Scope")]
    pub scope: &'static str,
    #[serde(rename = "Driver")]
    pub driver: &'static str,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    #[serde(rename = "Internal")]
    pub internal: bool,
    #[serde(rename = "Attachable")]
    pub attachable: bool,
    #[serde(rename = "Ingress")]
    pub ingress: bool,
    #[serde(rename = "ConfigFrom")]
    pub config_from: ConfigReference,
    #[serde(rename = "ConfigOnly")]
    pub config_only: bool,
    #[serde(rename = "Containers")]
    pub containers: Option<BTreeMap<String, EndpointResource>>,
    #[serde(rename = "Options")]
    pub options: BTreeMap<String, String>,
    /// null when a network has none (dockerd's map comes back nil from
    /// SwarmKit's store), but for ingress's `{}`.
    #[serde(rename = "Labels")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "Peers", skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ipam {
    #[serde(rename = "Driver")]
    pub driver: &'static str,
    #[serde(rename = "Options")]
    pub options: Option<BTreeMap<String, String>>,
    #[serde(rename = "Config")]
    pub config: Vec<IpamConfig>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IpamConfig {
    #[serde(rename = "Subnet", skip_serializing_if = "String::is_empty")]
    pub subnet: String,
    #[serde(rename = "IPRange", skip_serializing_if = "String::is_empty")]
    pub ip_range: String,
    #[serde(rename = "Gateway", skip_serializing_if = "String::is_empty")]
    pub gateway: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigReference {
    #[serde(rename = "Network")]
    pub network: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointResource {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "MacAddress")]
    pub mac_address: String,
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "IP")]
    pub ip: String,
}

fn ipam_config(net: &Network) -> IpamConfig {
    IpamConfig {
        subnet: net.ipam.subnet.to_string(),
        ip_range: net.ipam.range.map(|r| r.to_string()).unwrap_or_default(),
        gateway: net.ipam.gateway.to_string(),
    }
}

/// A network as `GET /networks/{id}` shows it from a manager. On a node
/// that runs tasks of it, as dockerd there shows its local view: those
/// tasks' containers, and the nodes it reaches (`Peers`).
pub fn resource(net: &Network, state: &State, local_node: Option<&str>) -> NetworkResource {
    let view = local_node
        .filter(|_| !net.is_ingress())
        .and_then(|local| local_view(net, state, local));
    let (containers, peers) = match view {
        Some((containers, peers)) => (Some(containers), peers),
        None => (None, Vec::new()),
    };
    NetworkResource {
        name: net.name().to_string(),
        id: net.id.clone(),
        created: net.created_at.clone(),
        scope: "swarm",
        driver: OVERLAY,
        enable_ipv6: false,
        ipam: Ipam {
            driver: "default",
            options: None,
            config: vec![ipam_config(net)],
        },
        internal: net.spec.internal,
        attachable: net.spec.attachable,
        ingress: net.is_ingress(),
        config_from: ConfigReference {
            network: String::new(),
        },
        config_only: false,
        containers,
        options: net.driver_options(),
        labels: (!net.spec.labels.is_empty() || net.is_ingress()).then(|| net.spec.labels.clone()),
        peers,
    }
}

/// A running task's address on `net`.
fn running_on<'a>(t: &'a Task, net: &Network) -> Option<&'a flotilla_store::models::Attachment> {
    (t.state() == TaskState::RUNNING)
        .then(|| t.runtime.networks.iter().find(|a| a.network == net.id))
        .flatten()
}

/// What dockerd on `local` shows of a network it runs tasks of: those
/// tasks' containers, and every node with a running task on it. `None`
/// when `local` runs none (found through the node's task index, so most
/// networks cost nothing).
fn local_view(
    net: &Network,
    state: &State,
    local: &str,
) -> Option<(BTreeMap<String, EndpointResource>, Vec<PeerInfo>)> {
    let mut containers = BTreeMap::new();
    for t in state.tasks_on_node(local) {
        let Some(att) = running_on(t, net) else {
            continue;
        };
        let container = t
            .status
            .as_ref()
            .and_then(|s| s.container_status.as_ref())
            .and_then(|c| c.container_id.clone())
            .unwrap_or_else(|| t.id_str().to_string());
        containers.insert(
            container,
            EndpointResource {
                name: container_name(t),
                endpoint_id: t.id_str().to_string(),
                mac_address: mac_string(mac_of(att.addr)),
                ipv4_address: net.cidr(att.addr),
                ipv6_address: String::new(),
            },
        );
    }
    if containers.is_empty() {
        return None;
    }
    let nodes: std::collections::BTreeSet<&str> = state
        .tasks
        .values()
        .filter(|t| running_on(t, net).is_some())
        .filter_map(|t| t.node())
        .collect();
    let peers = nodes
        .into_iter()
        .filter_map(|id| state.nodes.get(id))
        .map(|n| PeerInfo {
            name: node_hostname(n).to_string(),
            ip: n
                .status
                .as_ref()
                .and_then(|s| s.addr.clone())
                .unwrap_or_default(),
        })
        .collect();
    Some((containers, peers))
}

/// SwarmKit's Network object, as a task's `NetworksAttachments` carry it.
#[derive(Debug, Clone, Serialize)]
struct SwarmNetwork {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Version")]
    version: ObjectVersion,
    #[serde(rename = "CreatedAt")]
    created_at: String,
    #[serde(rename = "UpdatedAt")]
    updated_at: String,
    #[serde(rename = "Spec")]
    spec: SwarmNetworkSpec,
    #[serde(rename = "DriverState")]
    driver_state: Driver,
    #[serde(rename = "IPAMOptions")]
    ipam_options: IpamOptions,
}

#[derive(Debug, Clone, Serialize)]
struct SwarmNetworkSpec {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Labels")]
    labels: BTreeMap<String, String>,
    #[serde(
        rename = "DriverConfiguration",
        skip_serializing_if = "Option::is_none"
    )]
    driver_configuration: Option<Driver>,
    #[serde(rename = "Internal", skip_serializing_if = "is_false")]
    internal: bool,
    #[serde(rename = "Attachable", skip_serializing_if = "is_false")]
    attachable: bool,
    #[serde(rename = "Ingress", skip_serializing_if = "is_false")]
    ingress: bool,
    #[serde(rename = "IPAMOptions", skip_serializing_if = "Option::is_none")]
    ipam_options: Option<IpamOptions>,
    #[serde(rename = "Scope")]
    scope: &'static str,
}

fn is_false(b: &bool) -> bool {
    !b
}

#[derive(Debug, Clone, Serialize)]
struct Driver {
    #[serde(rename = "Name", skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(rename = "Options", skip_serializing_if = "BTreeMap::is_empty")]
    options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
struct IpamOptions {
    #[serde(rename = "Driver")]
    driver: Driver,
    #[serde(rename = "Configs", skip_serializing_if = "Vec::is_empty")]
    configs: Vec<SwarmIpamConfig>,
}

#[derive(Debug, Clone, Serialize)]
struct SwarmIpamConfig {
    #[serde(rename = "Subnet", skip_serializing_if = "String::is_empty")]
    subnet: String,
    #[serde(rename = "Range", skip_serializing_if = "String::is_empty")]
    range: String,
    #[serde(rename = "Gateway", skip_serializing_if = "String::is_empty")]
    gateway: String,
}

#[derive(Debug, Clone, Serialize)]
struct NetworkAttachment {
    #[serde(rename = "Network")]
    network: SwarmNetwork,
    #[serde(rename = "Addresses")]
    addresses: Vec<String>,
}

fn swarm_network(net: &Network) -> SwarmNetwork {
    let default_driver = || Driver {
        name: "default".into(),
        options: BTreeMap::new(),
    };
    let asked = net.spec.ipam.as_ref().filter(|_| !net.is_ingress());
    SwarmNetwork {
        id: net.id.clone(),
        version: ObjectVersion {
            index: Some(net.version),
        },
        created_at: net.created_at.clone(),
        updated_at: net.updated_at.clone(),
        spec: SwarmNetworkSpec {
            name: net.name().to_string(),
            labels: net.spec.labels.clone(),
            driver_configuration: Some(Driver {
                name: OVERLAY.into(),
                options: net.spec.options.clone(),
            }),
            internal: net.spec.internal,
            attachable: net.spec.attachable,
            ingress: net.is_ingress(),
            // dockerd asks for the default IPAM driver even when the user
            // named no subnet.
            ipam_options: Some(IpamOptions {
                driver: default_driver(),
                configs: asked
                    .map(|a| SwarmIpamConfig {
                        subnet: a.subnet.to_string(),
                        range: a.range.map(|r| r.to_string()).unwrap_or_default(),
                        gateway: a.gateway.map(|g| g.to_string()).unwrap_or_default(),
                    })
                    .into_iter()
                    .collect(),
            }),
            scope: "swarm",
        },
        driver_state: Driver {
            name: OVERLAY.into(),
            options: net.driver_options(),
        },
        ipam_options: IpamOptions {
            driver: default_driver(),
            configs: vec![SwarmIpamConfig {
                subnet: net.ipam.subnet.to_string(),
                range: net.ipam.range.map(|r| r.to_string()).unwrap_or_default(),
                gateway: net.ipam.gateway.to_string(),
            }],
        },
    }
}

/// A task's `NetworksAttachments`: the ingress network first when it has
/// an address there, then its networks in its service's order.
pub fn attachments(task: &Task, state: &State) -> Option<Vec<serde_json::Value>> {
    let ingress = task
        .runtime
        .addr
        .and_then(|ip| Some((state.ingress()?, ip)));
    let nets = task
        .runtime
        .networks
        .iter()
        .filter_map(|a| Some((state.networks.get(&a.network)?, a.addr)));
    let out: Vec<serde_json::Value> = ingress
        .into_iter()
        .chain(nets)
        .filter_map(|(net, ip)| {
            serde_json::to_value(NetworkAttachment {
                network: swarm_network(net),
                addresses: vec![net.cidr(ip)],
            })
            .ok()
        })
        .collect();
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_store::networks::{Ipam as StoreIpam, NetworkSpec, Subnet};

    fn front() -> Network {
        let subnet = Subnet::parse("10.0.1.0/24").unwrap();
        Network {
            id: "d5k81t6tz4cuqmki9h0k2zyg6".into(),
            version: 12,
            created_at: "2026-12-05T02:11:21.966276169Z".into(),
            updated_at: "2026-12-05T02:11:21.966276169Z".into(),
            spec: NetworkSpec {
                name: "front".into(),
                ..Default::default()
            },
            ipam: StoreIpam {
                subnet,
                gateway: subnet.first_host(),
                range: None,
            },
            vni: 4097,
            node_addrs: Default::default(),
        }
    }

    /// What a Swarm manager's dockerd 20.10 answered for `docker network
    /// create -d overlay front` (its inspect, and a task's attachment).
    #[test]
    fn a_network_is_shown_as_dockerd_shows_it() {
        let state = State::default();
        let shown = serde_json::to_string(&resource(&front(), &state, None)).unwrap();
        assert_eq!(
            shown,
            r#"{"Name":"front","Id":"d5k81t6tz4cuqmki9h0k2zyg6","Created":"2026-12-05T02:11:21.966276169Z","Scope":"swarm","Driver":"overlay","EnableIPv6":false,"IPAM":{"Driver":"default","Options":null,"Config":[{"Subnet":"10.0.1.0/24","Gateway":"10.0.1.1"}]},"Internal":false,"Attachable":false,"Ingress":false,"ConfigFrom":{"Network":""},"ConfigOnly":false,"Containers":null,"Options":{"com.docker.network.driver.overlay.vxlanid_list":"4097"},"Labels":null}"#
        );
        let net = serde_json::to_string(&swarm_network(&front())).unwrap();
        assert_eq!(
            net,
            r#"{"ID":"d5k81t6tz4cuqmki9h0k2zyg6","Version":{"Index":12},"CreatedAt":"2026-12-05T02:11:21.966276169Z","UpdatedAt":"2026-12-05T02:11:21.966276169Z","Spec":{"Name":"front","Labels":{},"DriverConfiguration":{"Name":"overlay"},"IPAMOptions":{"Driver":{"Name":"default"}},"Scope":"swarm"},"DriverState":{"Name":"overlay","Options":{"com.docker.network.driver.overlay.vxlanid_list":"4097"}},"IPAMOptions":{"Driver":{"Name":"default"},"Configs":[{"Subnet":"10.0.1.0/24","Gateway":"10.0.1.1"}]}}"#
        );
    }
}
