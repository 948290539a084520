//! The guard on this node's task ports: a task's ingress-mode target port
//! is published on a host port (engine-chosen for a container, `PORT_<n>`
//! for a process) on every address of the node, so anyone who reaches the
//! node could reach the task there, around the routing mesh. Swarm users
//! expect such a task to be reachable through the mesh only (Docker keeps
//! it in an ingress namespace), so those host ports answer only this node
//! itself and the swarm's nodes: the meshes, which connect from their
//! node's address. Host-mode ports are public by definition and are left
//! alone; so are the published ports the mesh itself listens on.
//!
//! What to guard is pure ([`plan`], [`rules`], [`Lingering`]); writing it
//! into the kernel is `overlay::host::apply_port_guard`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use flotilla_store::network::{RoutingTable, Transport, NETWORK};
use tokio::time::Instant;

/// The chain of guarded ports, hooked into INPUT (a local listener: a
/// process task, the engine's docker-proxy) and DOCKER-USER (the engine's
/// DNAT to a container).
pub const CHAIN: &str = "FLOTILLA-INGRESS";
/// Who may reach a guarded port: the chain the port rules go to.
pub const FROM_CHAIN: &str = "FLOTILLA-INGRESS-FROM";

/// A host port of this node and its protocol.
pub type HostPort = (Transport, u16);

/// How long a task's ports stay guarded once the table no longer lists
/// the task: it leaves the table when it is told to stop, and its
/// workload may take its stop grace period (10 s by default) to end.
pub const LINGER: Duration = Duration::from_secs(60);

/// What one routing table asks the guard of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Ingress host ports of this node's tasks.
    pub guarded: BTreeSet<HostPort>,
    /// Ports that must answer everyone: the services' published ports
    /// (the mesh's, host-mode ones) and this node's tasks' host-mode host
    /// ports (a process task has one host port per target port, which may
    /// be published both ways). Never guarded.
    pub public: BTreeSet<HostPort>,
    /// The swarm's nodes (IPv4: the guard is iptables').
    pub peers: Vec<Ipv4Addr>,
}

/// Why a table gives the guard nothing to go by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unguarded {
    /// The table does not say which node this is.
    NoOwnAddr,
    /// The node's address is IPv6 (iptables guards IPv4 only).
    Ipv6,
    /// The table does not list this node among the swarm's (a manager
    /// that sends no node addresses): guarding would shut out every mesh.
    NotListed,
}

impl std::fmt::Display for Unguarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unguarded::NoOwnAddr => "this node's address is not an IP address",
            Unguarded::Ipv6 => "this node's address is IPv6, and the guard is IPv4 (iptables) only",
            Unguarded::NotListed => {
                "the managers' routing table does not list the swarm's node addresses (an older manager)"
            }
        })
    }
}

/// This node's share of `table`: its tasks are those whose node address is
/// its own (`own_addr`, the address it registered).
pub fn plan(table: &RoutingTable) -> Result<Plan, Unguarded> {
    let own = table.own_addr.ok_or(Unguarded::NoOwnAddr)?;
    if !own.is_ipv4() {
        return Err(Unguarded::Ipv6);
    }
    if !table.node_addrs.contains(&own) {
        return Err(Unguarded::NotListed);
    }
    let mut guarded = BTreeSet::new();
    let mut public = BTreeSet::new();
    for service in &table.services {
        for p in service.ports.iter().filter(|p| p.published != 0) {
            public.insert((p.transport, p.published));
        }
        for task in service.tasks.iter().filter(|t| t.node_addr == own) {
            for p in task.ports.iter().filter(|p| p.host_port != 0) {
                let port = (p.transport, p.host_port);
                if p.ingress {
                    guarded.insert(port);
                } else {
                    public.insert(port);
                }
            }
        }
    }
    guarded.retain(|p| !public.contains(p));
    let peers = table
        .node_addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
        .collect();
    Ok(Plan {
        guarded,
        public,
        peers,
    })
}

fn proto(t: Transport) -> &'static str {
    match t {
        Transport::Tcp => "tcp",
        Transport::Udp => "udp",
    }
}

/// The `iptables-restore --noflush` input that makes the guard's chains
/// what `ports` and `peers` ask (declaring a chain empties it first):
///
/// - CHAIN sends a packet of a connection made to a guarded port to
///   FROM_CHAIN. The port is the connection's original destination port
///   (conntrack): the same for a local listener (INPUT) and after the
///   engine's DNAT to a container (DOCKER-USER), where the packet's own
///   port is already the container's. Only the connection's original
///   direction: answers from the task go out as before.
/// - FROM_CHAIN lets through (RETURN: the rest of the firewall still has
///   its say) loopback, this node's own addresses, packets for the service
///   network (VIPs, task addresses, DNS: the mesh's listeners, which may
///   use the same port number, guarded by their own chain), overlay
///   bridges (a VIP's DNAT there keeps the service's target port, which
///   may be the same number too), the mesh's tunnel (another node's mesh
///   with a client's address) and the swarm's nodes; it drops the rest.
///
/// No guarded port, no rule: both chains empty.
pub fn rules(ports: &BTreeSet<HostPort>, peers: &[Ipv4Addr]) -> String {
    let mut s = String::from("*filter\n");
    let _ = writeln!(s, ":{CHAIN} - [0:0]");
    let _ = writeln!(s, ":{FROM_CHAIN} - [0:0]");
    if !ports.is_empty() {
        for &(transport, port) in ports {
            let p = proto(transport);
            let _ = writeln!(
                s,
                "-A {CHAIN} -p {p} -m conntrack --ctdir ORIGINAL --ctorigdstport {port} -g {FROM_CHAIN}"
            );
        }
        let (net, prefix) = NETWORK;
        let _ = writeln!(s, "-A {FROM_CHAIN} -i lo -j RETURN");
        let _ = writeln!(s, "-A {FROM_CHAIN} -m addrtype --src-type LOCAL -j RETURN");
        let _ = writeln!(s, "-A {FROM_CHAIN} -d {net}/{prefix} -j RETURN");
        let _ = writeln!(s, "-A {FROM_CHAIN} -i flo-+ -j RETURN");
        // The mesh's tunnel: what comes through it is another node's mesh
        // sending a client's connection on with the client's address (only
        // the swarm's nodes may send into it, see flotilla_net::client_addr).
        let _ = writeln!(
            s,
            "-A {FROM_CHAIN} -i {} -j RETURN",
            flotilla_net::client_addr::plan::DEVICE
        );
        for peer in peers {
            let _ = writeln!(s, "-A {FROM_CHAIN} -s {peer}/32 -j RETURN");
        }
        let _ = writeln!(s, "-A {FROM_CHAIN} -j DROP");
    }
    s.push_str("COMMIT\n");
    s
}

/// The jumps into [`CHAIN`]: (filter chain, rule). DOCKER-USER sees
/// every forwarded packet; only a DNAT'd one can be for a published port
/// (a container's own connection out to the same port number is not).
pub fn hooks() -> [(&'static str, String); 2] {
    [
        ("INPUT", format!("-j {CHAIN}")),
        (
            "DOCKER-USER",
            format!("-m conntrack --ctstate DNAT -j {CHAIN}"),
        ),
    ]
}

/// Ports the table stopped listing, still guarded for [`LINGER`].
#[derive(Debug, Default)]
pub struct Lingering {
    /// What the last table guarded.
    last: BTreeSet<HostPort>,
    /// Ports it no longer does, and since when.
    gone: BTreeMap<HostPort, Instant>,
}

impl Lingering {
    /// The ports to guard at `now` for `plan`: its own, and those earlier
    /// plans guarded within [`LINGER`] unless they are public now.
    pub fn guard(&mut self, plan: &Plan, now: Instant) -> BTreeSet<HostPort> {
        for port in self.last.difference(&plan.guarded) {
            self.gone.entry(*port).or_insert(now);
        }
        self.gone.retain(|port, since| {
            !plan.guarded.contains(port)
                && !plan.public.contains(port)
                && now.duration_since(*since) < LINGER
        });
        self.last = plan.guarded.clone();
        plan.guarded
            .iter()
            .chain(self.gone.keys())
            .copied()
            .collect()
    }

    /// When the next lingering port stops being guarded.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.gone.values().min().map(|since| *since + LINGER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_store::network::{PortRoute, ServiceRoutes, TaskPort, TaskRoute};

    fn task(id: &str, node: &str, ports: &[(Transport, u16, bool)]) -> TaskRoute {
        TaskRoute {
            id: id.into(),
            addr: None,
            node_addr: node.parse().unwrap(),
            ports: ports
                .iter()
                .map(|&(transport, host_port, ingress)| TaskPort {
                    transport,
                    target: 80,
                    host_port,
                    ingress,
                })
                .collect(),
        }
    }

    fn port(transport: Transport, published: u16, ingress: bool) -> PortRoute {
        PortRoute {
            transport,
            target: 80,
            published,
            ingress,
        }
    }

    /// `web` publishes 8080/tcp and 8080/udp through the mesh and 9090 on
    /// its nodes; its tasks run on 10.0.0.1 (this node) and 10.0.0.2.
    fn table() -> RoutingTable {
        use Transport::{Tcp, Udp};
        RoutingTable {
            services: vec![ServiceRoutes {
                id: "s1".into(),
                name: "web".into(),
                vip: None,
                dnsrr: false,
                ports: vec![
                    port(Tcp, 8080, true),
                    port(Udp, 8080, true),
                    port(Tcp, 9090, false),
                ],
                proxy_protocol: Vec::new(),
                tasks: vec![
                    task(
                        "t1",
                        "10.0.0.1",
                        &[(Tcp, 32768, true), (Udp, 32769, true), (Tcp, 9090, false)],
                    ),
                    task("t2", "10.0.0.2", &[(Tcp, 32770, true)]),
                ],
            }],
            node_addrs: ["10.0.0.1", "10.0.0.2", "fd00::3"]
                .iter()
                .map(|a| a.parse().unwrap())
                .collect(),
            own_addr: "10.0.0.1".parse().ok(),
            ..Default::default()
        }
    }

    #[test]
    fn only_this_nodes_ingress_host_ports_are_guarded() {
        let plan = plan(&table()).unwrap();
        assert_eq!(
            plan.guarded,
            BTreeSet::from([(Transport::Tcp, 32768), (Transport::Udp, 32769)])
        );
        assert!(plan.public.contains(&(Transport::Tcp, 9090)));
        assert_eq!(
            plan.peers,
            [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]
        );
        let expected = "\
*filter
:FLOTILLA-INGRESS - [0:0]
:FLOTILLA-INGRESS-FROM - [0:0]
-A FLOTILLA-INGRESS -p tcp -m conntrack --ctdir ORIGINAL --ctorigdstport 32768 -g FLOTILLA-INGRESS-FROM
-A FLOTILLA-INGRESS -p udp -m conntrack --ctdir ORIGINAL --ctorigdstport 32769 -g FLOTILLA-INGRESS-FROM
-A FLOTILLA-INGRESS-FROM -i lo -j RETURN
-A FLOTILLA-INGRESS-FROM -m addrtype --src-type LOCAL -j RETURN
-A FLOTILLA-INGRESS-FROM -d 198.18.0.0/16 -j RETURN
-A FLOTILLA-INGRESS-FROM -i flo-+ -j RETURN
-A FLOTILLA-INGRESS-FROM -i flotilla-ca -j RETURN
-A FLOTILLA-INGRESS-FROM -s 10.0.0.1/32 -j RETURN
-A FLOTILLA-INGRESS-FROM -s 10.0.0.2/32 -j RETURN
-A FLOTILLA-INGRESS-FROM -j DROP
COMMIT
";
        assert_eq!(rules(&plan.guarded, &plan.peers), expected);
    }

    #[test]
    fn no_task_here_no_rule() {
        let mut t = table();
        t.own_addr = "10.0.0.9".parse().ok();
        t.node_addrs.push("10.0.0.9".parse().unwrap());
        let plan = plan(&t).unwrap();
        assert!(plan.guarded.is_empty());
        assert_eq!(
            rules(&plan.guarded, &plan.peers),
            "*filter\n:FLOTILLA-INGRESS - [0:0]\n:FLOTILLA-INGRESS-FROM - [0:0]\nCOMMIT\n"
        );
    }

    #[test]
    fn a_host_mode_port_stays_public_even_on_the_same_host_port() {
        // A process task has one host port per target port: published in
        // host mode too, it answers everyone.
        let mut t = table();
        let both = |host_port, ingress| TaskPort {
            transport: Transport::Tcp,
            target: 80,
            host_port,
            ingress,
        };
        t.services[0].ports.pop();
        t.services[0].tasks[0].ports = vec![both(31000, true), both(31000, false)];
        assert!(plan(&t).unwrap().guarded.is_empty());
        // And a published port is never a task's to guard.
        t.services[0].tasks[0].ports = vec![both(8080, true)];
        assert!(plan(&t).unwrap().guarded.is_empty());
    }

    #[test]
    fn a_table_that_cannot_say_whose_tasks_guards_nothing() {
        let mut t = table();
        t.own_addr = None;
        assert_eq!(plan(&t), Err(Unguarded::NoOwnAddr));
        t.own_addr = "fd00::3".parse().ok();
        assert_eq!(plan(&t), Err(Unguarded::Ipv6));
        // An older manager's table: no node list, ports all "host mode".
        let mut old = table();
        old.node_addrs.clear();
        assert_eq!(plan(&old), Err(Unguarded::NotListed));
    }

    #[test]
    fn a_stopping_tasks_ports_stay_guarded_for_a_while() {
        let start = Instant::now();
        let mut lingering = Lingering::default();
        let mut t = table();
        let all = plan(&t).unwrap();
        assert_eq!(lingering.guard(&all, start), all.guarded);
        assert_eq!(lingering.next_expiry(), None);

        // t1 is told to stop: it leaves the table, its ports stay guarded.
        t.services[0].tasks.remove(0);
        let later = start + Duration::from_secs(5);
        let without = plan(&t).unwrap();
        assert_eq!(lingering.guard(&without, later), all.guarded);
        assert_eq!(lingering.next_expiry(), Some(later + LINGER));
        // Still so on the next table, until the linger is over.
        let again = later + Duration::from_secs(30);
        assert_eq!(lingering.guard(&without, again), all.guarded);
        assert!(lingering.guard(&without, later + LINGER).is_empty());
        assert_eq!(lingering.next_expiry(), None);
    }

    #[test]
    fn a_lingering_port_that_turns_public_is_let_go() {
        let start = Instant::now();
        let mut lingering = Lingering::default();
        let mut t = table();
        lingering.guard(&plan(&t).unwrap(), start);
        // t1 went; a new task here publishes 32768 in host mode.
        t.services[0].tasks[0].ports = vec![TaskPort {
            transport: Transport::Tcp,
            target: 80,
            host_port: 32768,
            ingress: false,
        }];
        let guarded = lingering.guard(&plan(&t).unwrap(), start);
        assert_eq!(guarded, BTreeSet::from([(Transport::Udp, 32769)]));
    }
}
