//! What one routing table asks of this node's overlay networks: pure, no
//! I/O, so every decision is tested without a kernel.
//!
//! Per swarm network with a task here: a bridge with this node's address
//! and the service VIPs on it, a VXLAN device in the bridge, forwarding
//! entries for every address of the network that lives on another node
//! (each task's and each node's), and the firewall rules: VIPs balanced
//! over their tasks by DNAT, isolation from the node's other networks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use flotilla_store::network::{mac_of, NetworkRoutes, RoutingTable};
use flotilla_store::networks::Subnet;

/// The MTU of a network's interfaces when its options set none: a 1500
/// byte link less VXLAN's 50 bytes of headers, as Docker's overlay driver.
pub const DEFAULT_MTU: u32 = 1450;

/// A swarm network as this node sets it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNetwork {
    pub id: String,
    pub name: String,
    pub vni: u32,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    pub internal: bool,
    /// This node's address on it: the bridge's, where its DNS server
    /// listens and where connections through a VIP come from.
    pub node_addr: Ipv4Addr,
    /// Every address of the network that lives on another node, with the
    /// node's address: the forwarding entries.
    pub remotes: BTreeSet<Remote>,
    /// The service VIPs of the network and the task addresses each
    /// balances over (empty: nothing takes traffic, connections refused).
    pub vips: BTreeMap<Ipv4Addr, Vec<Ipv4Addr>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Remote {
    pub addr: Ipv4Addr,
    pub mac: [u8; 6],
    pub node: IpAddr,
}

impl LocalNetwork {
    /// The Linux bridge tasks attach to (interface names are at most 15
    /// bytes).
    pub fn bridge(&self) -> String {
        bridge_name(&self.id)
    }

    pub fn vxlan(&self) -> String {
        vxlan_name(&self.id)
    }

    /// The local network of the Docker Engine whose bridge this is.
    pub fn engine_network(&self) -> String {
        engine_network_name(&self.id)
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(10)]
}

pub fn bridge_name(id: &str) -> String {
    format!("flo-{}", short(id))
}

pub fn vxlan_name(id: &str) -> String {
    format!("flv-{}", short(id))
}

pub fn engine_network_name(id: &str) -> String {
    format!("flotilla-{}", &id[..id.len().min(12)])
}

/// The networks this node needs: those with a task here, or that a task
/// being prepared here asks for (`wanted`), once this node has an address
/// on them.
pub fn local_networks(
    table: &RoutingTable,
    node_id: &str,
    wanted: &BTreeSet<String>,
) -> Vec<LocalNetwork> {
    table
        .networks
        .iter()
        .filter(|n| wanted.contains(&n.id) || n.endpoints.iter().any(|e| e.node_id == node_id))
        .filter_map(|n| local_network(n, node_id))
        .collect()
}

fn local_network(n: &NetworkRoutes, node_id: &str) -> Option<LocalNetwork> {
    let node_addr = n.nodes.iter().find(|x| x.node_id == node_id)?.addr;
    let underlay: BTreeMap<&str, IpAddr> = n
        .nodes
        .iter()
        .map(|x| (x.node_id.as_str(), x.underlay))
        .collect();
    let mut remotes = BTreeSet::new();
    for e in n.endpoints.iter().filter(|e| e.node_id != node_id) {
        if let Some(node) = underlay.get(e.node_id.as_str()) {
            remotes.insert(Remote {
                addr: e.addr,
                mac: mac_of(e.addr),
                node: *node,
            });
        }
    }
    for x in n.nodes.iter().filter(|x| x.node_id != node_id) {
        remotes.insert(Remote {
            addr: x.addr,
            mac: mac_of(x.addr),
            node: x.underlay,
        });
    }
    let vips = n
        .services
        .iter()
        .filter_map(|s| Some((s.vip?, s.tasks.clone())))
        .collect();
    Some(LocalNetwork {
        id: n.id.clone(),
        name: n.name.clone(),
        vni: n.vni,
        subnet: n.subnet,
        gateway: n.gateway,
        mtu: n.mtu.unwrap_or(DEFAULT_MTU),
        internal: n.internal,
        node_addr,
        remotes,
        vips,
    })
}

/// The chains Flotilla owns, and where they hook in.
pub const INPUT_CHAIN: &str = "FLOTILLA-INPUT";
pub const VIP_CHAIN: &str = "FLOTILLA-VIP";
pub const SNAT_CHAIN: &str = "FLOTILLA-SNAT";

/// The `iptables-restore --noflush` input that sets Flotilla's chains to
/// what `networks` need (declaring a chain there empties it first, so a
/// run replaces the chains whole and leaves every other rule alone):
///
/// - `filter` FLOTILLA-INPUT: a network's addresses on this node (its
///   address, VIPs, DNS) answer only to its own bridge, and its bridge
///   reaches nothing else of the node: a task on `front` cannot use the
///   node to get to `back`.
/// - `nat` FLOTILLA-VIP: a connection to a VIP from its network goes to
///   one of the service's tasks, each equally likely, any port.
/// - `nat` FLOTILLA-SNAT: such a connection leaves with the node's address
///   as its source, so the answer comes back through this node's NAT
///   whichever node the task is on.
pub fn iptables_rules(networks: &[LocalNetwork]) -> String {
    let mut s = String::new();
    s.push_str("*filter\n");
    let _ = writeln!(s, ":{INPUT_CHAIN} - [0:0]");
    let _ = writeln!(s, "-A {INPUT_CHAIN} -i lo -j RETURN");
    for n in networks {
        let (br, subnet) = (n.bridge(), n.subnet);
        let _ = writeln!(s, "-A {INPUT_CHAIN} -d {subnet} ! -i {br} -j DROP");
        let _ = writeln!(s, "-A {INPUT_CHAIN} -i {br} ! -d {subnet} -j DROP");
    }
    s.push_str("COMMIT\n*nat\n");
    let _ = writeln!(s, ":{VIP_CHAIN} - [0:0]");
    let _ = writeln!(s, ":{SNAT_CHAIN} - [0:0]");
    for n in networks {
        let br = n.bridge();
        for (vip, tasks) in &n.vips {
            for (i, task) in tasks.iter().enumerate() {
                let pick = flotilla_net::host::equal_odds(i, tasks.len());
                let _ = writeln!(
                    s,
                    "-A {VIP_CHAIN} -i {br} -d {vip}/32{pick} -j DNAT --to-destination {task}"
                );
            }
        }
        let _ = writeln!(
            s,
            "-A {SNAT_CHAIN} -o {br} -m conntrack --ctstate DNAT -j SNAT --to-source {}",
            n.node_addr
        );
    }
    s.push_str("COMMIT\n");
    s
}

/// The jumps into Flotilla's chains: (table, chain, rule).
pub fn hooks() -> [(&'static str, &'static str, String); 3] {
    [
        ("filter", "INPUT", format!("-j {INPUT_CHAIN}")),
        ("nat", "PREROUTING", format!("-j {VIP_CHAIN}")),
        ("nat", "POSTROUTING", format!("-j {SNAT_CHAIN}")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_store::network::{NetworkEndpoint, NetworkNode, NetworkService};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn table() -> RoutingTable {
        let node = |id: &str, addr: &str, under: &str| NetworkNode {
            node_id: id.into(),
            addr: ip(addr),
            underlay: under.parse().unwrap(),
        };
        let ep = |t: &str, addr: &str, node: &str| NetworkEndpoint {
            task_id: t.into(),
            addr: ip(addr),
            node_id: node.into(),
        };
        RoutingTable {
            networks: vec![NetworkRoutes {
                id: "frontnetid0123456789".into(),
                name: "front".into(),
                vni: 4097,
                subnet: Subnet::parse("10.0.0.0/24").unwrap(),
                gateway: ip("10.0.0.1"),
                mtu: None,
                internal: false,
                nodes: vec![
                    node("a", "10.0.0.10", "10.213.0.11"),
                    node("b", "10.0.0.11", "10.213.0.12"),
                ],
                endpoints: vec![
                    ep("t1", "10.0.0.3", "a"),
                    ep("t2", "10.0.0.4", "b"),
                    ep("t3", "10.0.0.5", "b"),
                ],
                services: vec![NetworkService {
                    id: "api".into(),
                    names: vec!["api".into()],
                    vip: Some(ip("10.0.0.2")),
                    tasks: vec![ip("10.0.0.3"), ip("10.0.0.4"), ip("10.0.0.5")],
                }],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_node_sets_up_only_the_networks_it_has_tasks_on() {
        let t = table();
        let none = BTreeSet::new();
        assert_eq!(local_networks(&t, "a", &none).len(), 1);
        assert!(
            local_networks(&t, "c", &none).is_empty(),
            "no task, no address"
        );
        let net = &local_networks(&t, "a", &none)[0];
        assert_eq!(net.node_addr, ip("10.0.0.10"));
        assert_eq!(net.mtu, DEFAULT_MTU);
        assert_eq!(net.bridge(), "flo-frontnetid");
        assert_eq!(net.vxlan(), "flv-frontnetid");
        assert_eq!(net.engine_network(), "flotilla-frontnetid01");
        // Remote: b's two tasks and b's own address, never a's.
        let remotes: Vec<Ipv4Addr> = net.remotes.iter().map(|r| r.addr).collect();
        assert_eq!(remotes, [ip("10.0.0.4"), ip("10.0.0.5"), ip("10.0.0.11")]);
        assert!(net
            .remotes
            .iter()
            .all(|r| r.node == "10.213.0.12".parse::<IpAddr>().unwrap()));
        assert_eq!(net.remotes.first().unwrap().mac, [2, 0x42, 10, 0, 0, 4]);
    }

    #[test]
    fn vips_spread_evenly_and_leave_from_the_node_address() {
        let t = table();
        let nets = local_networks(&t, "a", &BTreeSet::new());
        let rules = iptables_rules(&nets);
        let expected = "\
*filter
:FLOTILLA-INPUT - [0:0]
-A FLOTILLA-INPUT -i lo -j RETURN
-A FLOTILLA-INPUT -d 10.0.0.0/24 ! -i flo-frontnetid -j DROP
-A FLOTILLA-INPUT -i flo-frontnetid ! -d 10.0.0.0/24 -j DROP
COMMIT
*nat
:FLOTILLA-VIP - [0:0]
:FLOTILLA-SNAT - [0:0]
-A FLOTILLA-VIP -i flo-frontnetid -d 10.0.0.2/32 -m statistic --mode random --probability 0.33333333 -j DNAT --to-destination 10.0.0.3
-A FLOTILLA-VIP -i flo-frontnetid -d 10.0.0.2/32 -m statistic --mode random --probability 0.50000000 -j DNAT --to-destination 10.0.0.4
-A FLOTILLA-VIP -i flo-frontnetid -d 10.0.0.2/32 -j DNAT --to-destination 10.0.0.5
-A FLOTILLA-SNAT -o flo-frontnetid -m conntrack --ctstate DNAT -j SNAT --to-source 10.0.0.10
COMMIT
";
        assert_eq!(rules, expected);
    }

    #[test]
    fn a_network_a_task_is_being_prepared_for_is_set_up_before_it_runs() {
        let mut t = table();
        t.networks[0].endpoints.retain(|e| e.node_id != "a");
        assert!(local_networks(&t, "a", &BTreeSet::new()).is_empty());
        let wanted = BTreeSet::from(["frontnetid0123456789".to_string()]);
        assert_eq!(local_networks(&t, "a", &wanted).len(), 1);
    }
}
