//! What the kernel path writes for one table: pure, no I/O, so every rule
//! is tested without a kernel.
//!
//! A [`Plan`] is the table as the kernel sees it (IPv4 routes, each with
//! the endpoints new connections may go to); [`rules`] turns it into one
//! `iptables-restore --noflush` input, which the kernel applies as one
//! transaction. Declaring a chain there empties it first, so each run
//! replaces Flotilla's mesh chains whole and leaves every other rule
//! alone; chains of routes that went away are emptied and deleted in the
//! same run.
//!
//! - `nat` FLOTILLA-MESH (hooked into OUTPUT for the node's own clients,
//!   and jumped to from FLOTILLA-MESH-PRE for traffic arriving): one jump
//!   per route, by destination (a route's own address, or any local
//!   address for a port published on every address) and port, to the
//!   route's chain.
//! - `nat` FLOTILLA-MESH-PRE (PREROUTING): traffic for the service
//!   network (VIPs, task addresses) goes to FLOTILLA-MESH only from the
//!   interfaces allowed to reach it (loopback, container bridges), as the
//!   filter guard on those addresses lets only them reach the proxy: NAT
//!   comes before that guard, so it must say the same.
//! - `nat` FLM-<t|u>-[<address in hex>-]<port>, one per route with
//!   endpoints: marks the connection (connmark bit [`MARK`]), then DNATs it
//!   to one endpoint, each equally likely (rule i of n takes 1/(n-i) of
//!   what reaches it). Only a connection's first packet passes nat: a
//!   rewrite of the chains leaves the connections already open where they
//!   are (conntrack keeps their translation).
//! - `nat` FLOTILLA-MESH-SNAT (POSTROUTING): a marked connection that
//!   leaves the node (its endpoint is on another node) takes the node's
//!   own address as its source, so the answer comes back through this
//!   node's NAT and the other node's task-port guard knows the source. A
//!   connection to an endpoint on this node keeps its client's address.
//!   Where the node keeps clients' addresses ([`KeepClient`], see
//!   `crate::client_addr`), the route chains also mark the packet
//!   ([`MARK`]) so policy routing sends a connection for another node into
//!   the tunnel, where it keeps its source; and an endpoint on this node
//!   that is a container's host port is DNATed to the container itself
//!   (its address and port as the engine's own DNAT has them), so the
//!   engine's docker-proxy, which would hide the client, is not in the
//!   way. Loopback clients, and clients on a container bridge (marked
//!   [`HAIRPIN_MARK`] on arrival: their answer must come back through
//!   this node), are still sent on from the node's address.
//! - `filter` FLOTILLA-MESH-INPUT (INPUT): a route with no endpoint left
//!   refuses (TCP reset, ICMP port unreachable); and, since the kernel
//!   path turns on `route_localnet` so a loopback client can reach an
//!   endpoint on another node, packets for 127.0.0.0/8 that arrive on any
//!   other interface are dropped unless they belong to a translated or
//!   established connection (as kube-proxy does).
//! - `filter` FLOTILLA-MESH-FWD (FORWARD): marked connections are
//!   accepted, ahead of a FORWARD policy of DROP (Docker's).
//! - `filter` FLOTILLA-MESH-ACCT (INPUT but from loopback, FORWARD,
//!   OUTPUT: each packet passes one of them once): counts the bytes of
//!   each route's connections, two rules per route (from the client, to
//!   it), matched by the connection's original destination and named by
//!   a comment (`<route chain>/in`, `/out`). Only marked packets are
//!   sent there.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::protocol::Protocol;
use crate::table::{MeshTable, RouteKey};

/// The chains the kernel path owns, and where they hook in.
pub const MESH_CHAIN: &str = "FLOTILLA-MESH";
pub const PRE_CHAIN: &str = "FLOTILLA-MESH-PRE";
pub const SNAT_CHAIN: &str = "FLOTILLA-MESH-SNAT";
pub const INPUT_CHAIN: &str = "FLOTILLA-MESH-INPUT";
pub const FORWARD_CHAIN: &str = "FLOTILLA-MESH-FWD";
pub const ACCT_CHAIN: &str = "FLOTILLA-MESH-ACCT";
/// Every route's chain name starts so.
pub const ROUTE_PREFIX: &str = "FLM-";

pub use crate::marks::MARK;

/// The connmark bit of a connection that arrived from a container bridge.
pub const HAIRPIN_MARK: u32 = 0x0400_0000;

/// One route as the kernel path serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    pub protocol: Protocol,
    /// The route's own address (a VIP, a task address); `None`: the
    /// mesh's address (every local address, or the bind address).
    pub at: Option<Ipv4Addr>,
    pub port: u16,
    /// Healthy, undrained endpoints, in table order. Empty: refused.
    pub endpoints: Vec<SocketAddrV4>,
}

impl KernelRoute {
    /// The route's chain: at most 20 bytes (iptables allows 28).
    pub fn chain(&self) -> String {
        let p = match self.protocol {
            Protocol::Tcp => 'T',
            Protocol::Udp => 'U',
        };
        match self.at {
            None => format!("{ROUTE_PREFIX}{p}-{}", self.port),
            Some(ip) => format!("{ROUTE_PREFIX}{p}-{:08X}-{}", u32::from(ip), self.port),
        }
    }

    /// The match of packets for this route.
    fn destination(&self, bind: Option<Ipv4Addr>) -> String {
        let proto = self.protocol;
        let to = match self.at.or(bind) {
            Some(ip) => format!("-d {ip}/32"),
            None => "-m addrtype --dst-type LOCAL".to_string(),
        };
        format!("{to} -p {proto} -m {proto} --dport {}", self.port)
    }
}

/// What the kernel path writes for one table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Where the mesh's own routes answer: `None` for every local address
    /// (a bind address of 0.0.0.0), else that address only.
    pub bind: Option<Ipv4Addr>,
    /// Routes at their own address first, then the mesh's: a connection
    /// to a VIP on a port also published on every address goes to the
    /// VIP's service, as the user-space listeners' exact-address match.
    pub routes: Vec<KernelRoute>,
    /// The source of connections sent to another node: the node's own
    /// address when the host has it; `None`: the outgoing interface's
    /// address (MASQUERADE).
    pub snat: Option<Ipv4Addr>,
    /// Traffic arriving for this network reaches the routes only from
    /// these interfaces (`+` ends a prefix, as iptables'); `None`: from
    /// anywhere.
    pub guard: Option<AddrGuard>,
    /// Connections keep their clients' addresses.
    pub keep_client: Option<KeepClient>,
}

/// What keeping clients' addresses adds to a plan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeepClient {
    /// Containers on this node that endpoints were rewritten to: their
    /// connections leave by a bridge, with the client's address.
    pub containers: BTreeSet<Ipv4Addr>,
}

/// The service network and the interfaces that may reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrGuard {
    pub network: (Ipv4Addr, u8),
    pub interfaces: Vec<String>,
    /// Interfaces whose traffic for local addresses other than the
    /// service network is not the mesh's: overlay bridges, whose VIPs are
    /// local addresses balanced by the overlay's own NAT chain, on any
    /// port (a published port of another service among them).
    pub not_ours: Vec<String>,
}

impl Plan {
    /// The route chains this plan declares.
    pub fn chains(&self) -> BTreeSet<String> {
        self.routes
            .iter()
            .filter(|r| !r.endpoints.is_empty())
            .map(KernelRoute::chain)
            .collect()
    }
}

/// The plan of `table` for a mesh at `bind` (0.0.0.0: every local
/// address): endpoints unhealthy or in `drained` left out, and those of
/// TCP routes in `unready` (not accepting connections yet) unless no
/// other is left, routes in
/// `unserved` (their port could not be reserved) left out altogether, as
/// IPv6 routes and endpoints are (iptables is IPv4).
#[allow(clippy::too_many_arguments)]
pub fn plan(
    table: &MeshTable,
    bind: Ipv4Addr,
    drained: &HashSet<String>,
    unready: &HashSet<SocketAddr>,
    unserved: &BTreeSet<RouteKey>,
    snat: Option<Ipv4Addr>,
    guard: Option<&AddrGuard>,
    containers: &HashMap<(Protocol, u16), SocketAddrV4>,
) -> Plan {
    // Clients keep their addresses only where the node's own address is
    // known: it tells this node's endpoints from the others'.
    let mut keep_client = match (table.client_path(), snat) {
        (Some(_), Some(own)) => Some((own, KeepClient::default())),
        _ => None,
    };
    let mut own = Vec::new();
    let mut mesh = Vec::new();
    for (protocol, ip, port, route) in table.iter() {
        if unserved.contains(&(protocol, ip, port)) {
            continue;
        }
        let at = match ip {
            None => None,
            Some(IpAddr::V4(v4)) => Some(v4),
            Some(IpAddr::V6(_)) => continue,
        };
        let live: Vec<SocketAddrV4> = route
            .endpoints
            .iter()
            .filter(|e| e.healthy && !drained.contains(&e.task_id))
            .filter_map(|e| match e.addr {
                SocketAddr::V4(v4) => Some(v4),
                SocketAddr::V6(_) => None,
            })
            .collect();
        // Those not accepting yet only when no other is: a connection
        // refused by a task about to listen is no worse than one refused
        // by the mesh, and it may be listening by now.
        let accepting: Vec<SocketAddrV4> = live
            .iter()
            .filter(|e| protocol == Protocol::Udp || !unready.contains(&SocketAddr::V4(**e)))
            .copied()
            .collect();
        let mut endpoints = if accepting.is_empty() {
            live
        } else {
            accepting
        };
        if let Some((node, keep)) = keep_client.as_mut() {
            for e in endpoints.iter_mut().filter(|e| e.ip() == node) {
                if let Some(container) = containers.get(&(protocol, e.port())) {
                    keep.containers.insert(*container.ip());
                    *e = *container;
                }
            }
        }
        let route = KernelRoute {
            protocol,
            at,
            port,
            endpoints,
        };
        if at.is_some() {
            own.push(route);
        } else {
            mesh.push(route);
        }
    }
    own.extend(mesh);
    Plan {
        bind: (!bind.is_unspecified()).then_some(bind),
        routes: own,
        snat,
        guard: guard.cloned(),
        keep_client: keep_client.map(|(_, keep)| keep),
    }
}

/// The engine's own DNAT of its published host ports, from an
/// `iptables-save -t nat` listing: (protocol, host port) to the
/// container's address and port.
pub fn docker_dnats(save: &str) -> HashMap<(Protocol, u16), SocketAddrV4> {
    let mut out = HashMap::new();
    for line in save.lines().filter(|l| l.starts_with("-A DOCKER ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |flag: &str| {
            words
                .iter()
                .position(|w| *w == flag)
                .and_then(|i| words.get(i + 1))
        };
        let protocol = match after("-p") {
            Some(&"tcp") => Protocol::Tcp,
            Some(&"udp") => Protocol::Udp,
            _ => continue,
        };
        let (Some(port), Some(to)) = (after("--dport"), after("--to-destination")) else {
            continue;
        };
        let (Ok(port), Ok(to)) = (port.parse::<u16>(), to.parse::<SocketAddrV4>()) else {
            continue;
        };
        // A listing may have the rule twice (IPv4 and a bridge's hairpin).
        out.entry((protocol, port)).or_insert(to);
    }
    out
}

/// The `iptables-restore --noflush` input that makes the kernel path's
/// chains what `plan` asks, deleting the route chains of `stale` (chains
/// an earlier run wrote) that it no longer declares.
pub fn rules(plan: &Plan, stale: &BTreeSet<String>) -> String {
    let chains = plan.chains();
    let mut s = String::from("*nat\n");
    let _ = writeln!(s, ":{PRE_CHAIN} - [0:0]");
    let _ = writeln!(s, ":{MESH_CHAIN} - [0:0]");
    let _ = writeln!(s, ":{SNAT_CHAIN} - [0:0]");
    let gone: Vec<&String> = stale.difference(&chains).collect();
    for chain in chains.iter().chain(gone.iter().copied()) {
        let _ = writeln!(s, ":{chain} - [0:0]");
    }
    for chain in &gone {
        let _ = writeln!(s, "-X {chain}");
    }
    if let (Some(guard), Some(_)) = (&plan.guard, &plan.keep_client) {
        for dev in guard.interfaces.iter().filter(|d| *d != "lo") {
            let _ = writeln!(
                s,
                "-A {PRE_CHAIN} -i {dev} -j CONNMARK --set-xmark {HAIRPIN_MARK:#x}/{HAIRPIN_MARK:#x}"
            );
        }
    }
    if let Some(AddrGuard {
        network: (net, prefix),
        interfaces,
        not_ours,
    }) = &plan.guard
    {
        for dev in interfaces {
            let _ = writeln!(
                s,
                "-A {PRE_CHAIN} -d {net}/{prefix} -i {dev} -j {MESH_CHAIN}"
            );
        }
        let _ = writeln!(s, "-A {PRE_CHAIN} -d {net}/{prefix} -j RETURN");
        for dev in not_ours {
            let _ = writeln!(s, "-A {PRE_CHAIN} -i {dev} -j RETURN");
        }
    }
    let _ = writeln!(s, "-A {PRE_CHAIN} -j {MESH_CHAIN}");
    let mark = format!("{MARK:#x}/{MARK:#x}");
    for route in plan.routes.iter().filter(|r| !r.endpoints.is_empty()) {
        let chain = route.chain();
        let _ = writeln!(
            s,
            "-A {MESH_CHAIN} {} -j {chain}",
            route.destination(plan.bind)
        );
        let _ = writeln!(s, "-A {chain} -j CONNMARK --set-xmark {mark}");
        if plan.keep_client.is_some() {
            let _ = writeln!(s, "-A {chain} -j MARK --set-xmark {mark}");
        }
        let count = route.endpoints.len();
        for (i, endpoint) in route.endpoints.iter().enumerate() {
            let pick = crate::host::equal_odds(i, count);
            // A DNAT to a port needs the protocol named in its rule.
            let proto = route.protocol;
            let _ = writeln!(
                s,
                "-A {chain} -p {proto}{pick} -j DNAT --to-destination {endpoint}"
            );
        }
    }
    let source = match plan.snat {
        Some(ip) => format!("SNAT --to-source {ip}"),
        None => "MASQUERADE".to_string(),
    };
    match &plan.keep_client {
        None => {
            let _ = writeln!(
                s,
                "-A {SNAT_CHAIN} ! -o lo -m connmark --mark {mark} -j {source}"
            );
        }
        Some(keep) => {
            let hairpin = format!("{HAIRPIN_MARK:#x}/{HAIRPIN_MARK:#x}");
            let device = crate::marks::TUNNEL_DEVICE;
            let _ = writeln!(s, "-A {SNAT_CHAIN} -o lo -j RETURN");
            let _ = writeln!(s, "-A {SNAT_CHAIN} -m connmark ! --mark {mark} -j RETURN");
            let _ = writeln!(s, "-A {SNAT_CHAIN} -s 127.0.0.0/8 -j {source}");
            let _ = writeln!(
                s,
                "-A {SNAT_CHAIN} -m connmark --mark {hairpin} -j {source}"
            );
            let _ = writeln!(s, "-A {SNAT_CHAIN} -o {device} -j RETURN");
            for container in &keep.containers {
                let _ = writeln!(s, "-A {SNAT_CHAIN} -d {container}/32 -j RETURN");
            }
            // An endpoint on a node the tunnel does not reach (yet).
            let _ = writeln!(s, "-A {SNAT_CHAIN} -j {source}");
        }
    }
    s.push_str("COMMIT\n*filter\n");
    let _ = writeln!(s, ":{INPUT_CHAIN} - [0:0]");
    let _ = writeln!(s, ":{FORWARD_CHAIN} - [0:0]");
    let _ = writeln!(s, ":{ACCT_CHAIN} - [0:0]");
    let _ = writeln!(
        s,
        "-A {INPUT_CHAIN} -d 127.0.0.0/8 ! -i lo -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
    );
    for route in plan.routes.iter().filter(|r| r.endpoints.is_empty()) {
        let with = match route.protocol {
            Protocol::Tcp => "tcp-reset",
            Protocol::Udp => "icmp-port-unreachable",
        };
        let _ = writeln!(
            s,
            "-A {INPUT_CHAIN} {} -m conntrack ! --ctstate DNAT -j REJECT --reject-with {with}",
            route.destination(plan.bind)
        );
    }
    let _ = writeln!(s, "-A {FORWARD_CHAIN} -m connmark --mark {mark} -j ACCEPT");
    // Routes at their own address come first: a VIP's connection must
    // not be counted for a published port of the same number.
    for route in plan.routes.iter().filter(|r| !r.endpoints.is_empty()) {
        let chain = route.chain();
        let to = match route.at.or(plan.bind) {
            Some(ip) => format!(" --ctorigdst {ip}/32"),
            None => String::new(),
        };
        for (dir, name) in [("ORIGINAL", "in"), ("REPLY", "out")] {
            let _ = writeln!(
                s,
                "-A {ACCT_CHAIN} -p {} -m conntrack{to} --ctorigdstport {} --ctdir {dir} -m comment --comment {chain}/{name} -j RETURN",
                route.protocol, route.port
            );
        }
    }
    s.push_str("COMMIT\n");
    s
}

/// The jumps into the kernel path's chains: (table, chain, rule), each put
/// first in its chain.
pub fn hooks() -> [(&'static str, &'static str, String); 8] {
    // Only the mesh's connections enter the accounting chain: every other
    // packet of the node passes with one match.
    let marked = format!("-m connmark --mark {MARK:#x}/{MARK:#x}");
    [
        ("nat", "PREROUTING", format!("-j {PRE_CHAIN}")),
        ("nat", "OUTPUT", format!("-j {MESH_CHAIN}")),
        ("nat", "POSTROUTING", format!("-j {SNAT_CHAIN}")),
        ("filter", "INPUT", format!("-j {INPUT_CHAIN}")),
        ("filter", "FORWARD", format!("-j {FORWARD_CHAIN}")),
        // A packet on loopback passed OUTPUT already.
        (
            "filter",
            "INPUT",
            format!("! -i lo {marked} -j {ACCT_CHAIN}"),
        ),
        ("filter", "FORWARD", format!("{marked} -j {ACCT_CHAIN}")),
        ("filter", "OUTPUT", format!("{marked} -j {ACCT_CHAIN}")),
    ]
}

/// The route chains an `iptables-save` listing shows (`:FLM-… - [0:0]`):
/// what a daemon that was killed left behind.
pub fn route_chains_in(save: &str) -> BTreeSet<String> {
    save.lines()
        .filter_map(|line| line.strip_prefix(':'))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|chain| chain.starts_with(ROUTE_PREFIX))
        .map(str::to_string)
        .collect()
}

/// Each route chain's connections so far, from an `iptables-save -c -t
/// nat` listing: the packets its first rule (the CONNMARK every new
/// connection passes) matched, nat seeing only a connection's first packet.
pub fn route_connections(save: &str) -> Vec<(String, u64)> {
    save.lines()
        .filter_map(|line| {
            let (counters, rule) = line.strip_prefix('[')?.split_once("] ")?;
            let chain = rule.strip_prefix("-A ")?.split_whitespace().next()?;
            if !chain.starts_with(ROUTE_PREFIX) || !rule.contains(" -j CONNMARK ") {
                return None;
            }
            let packets = counters.split(':').next()?.parse().ok()?;
            Some((chain.to_string(), packets))
        })
        .collect()
}

/// Each route chain's bytes so far, (chain, from clients, to them), from
/// an `iptables-save -c -t filter` listing of the accounting chain.
pub fn route_bytes(save: &str) -> Vec<(String, u64, u64)> {
    let mut out: Vec<(String, u64, u64)> = Vec::new();
    for line in save.lines() {
        let Some((counters, rule)) = line.strip_prefix('[').and_then(|l| l.split_once("] ")) else {
            continue;
        };
        if !rule.starts_with(&format!("-A {ACCT_CHAIN} ")) {
            continue;
        }
        let Some(named) = rule.split(" --comment ").nth(1) else {
            continue;
        };
        let named = named.split_whitespace().next().unwrap_or_default();
        let Some((chain, dir)) = named.trim_matches('"').rsplit_once('/') else {
            continue;
        };
        let Some(bytes) = counters
            .split(':')
            .nth(1)
            .and_then(|b| b.parse::<u64>().ok())
        else {
            continue;
        };
        let at = match out.iter().position(|(c, ..)| c == chain) {
            Some(i) => i,
            None => {
                out.push((chain.to_string(), 0, 0));
                out.len() - 1
            }
        };
        match dir {
            "in" => out[at].1 += bytes,
            "out" => out[at].2 += bytes,
            _ => {}
        }
    }
    out
}

/// The input that empties and deletes every chain of the kernel path,
/// `route_chains` among them (the hooks must be gone first: a chain
/// something jumps to cannot be deleted).
pub fn removal(route_chains: &BTreeSet<String>) -> String {
    let mut s = String::from("*nat\n");
    let nat: Vec<&str> = [PRE_CHAIN, MESH_CHAIN, SNAT_CHAIN]
        .into_iter()
        .chain(route_chains.iter().map(String::as_str))
        .collect();
    for chain in &nat {
        let _ = writeln!(s, ":{chain} - [0:0]");
    }
    for chain in &nat {
        let _ = writeln!(s, "-X {chain}");
    }
    s.push_str("COMMIT\n*filter\n");
    for chain in [INPUT_CHAIN, FORWARD_CHAIN, ACCT_CHAIN] {
        let _ = writeln!(s, ":{chain} - [0:0]");
    }
    for chain in [INPUT_CHAIN, FORWARD_CHAIN, ACCT_CHAIN] {
        let _ = writeln!(s, "-X {chain}");
    }
    s.push_str("COMMIT\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(text: &str) -> SocketAddrV4 {
        text.parse().unwrap()
    }

    fn three_routes() -> Plan {
        Plan {
            bind: None,
            routes: vec![
                KernelRoute {
                    protocol: Protocol::Tcp,
                    at: Some(Ipv4Addr::new(198, 18, 0, 2)),
                    port: 80,
                    endpoints: vec![ep("10.0.0.1:32768"), ep("10.0.0.2:32769")],
                },
                KernelRoute {
                    protocol: Protocol::Tcp,
                    at: None,
                    port: 8080,
                    endpoints: vec![
                        ep("10.0.0.1:32768"),
                        ep("10.0.0.2:32769"),
                        ep("10.0.0.3:32770"),
                    ],
                },
                KernelRoute {
                    protocol: Protocol::Udp,
                    at: None,
                    port: 5353,
                    endpoints: vec![],
                },
            ],
            snat: Some(Ipv4Addr::new(10, 0, 0, 1)),
            guard: Some(AddrGuard {
                network: (Ipv4Addr::new(198, 18, 0, 0), 16),
                interfaces: vec!["lo".into(), "br-+".into()],
                not_ours: vec!["flo-+".into()],
            }),
            keep_client: None,
        }
    }

    #[test]
    fn the_plan_keeps_live_ipv4_endpoints_and_own_addresses_first() {
        use crate::table::{Endpoint, PublishedPort};
        let port = |published| PublishedPort {
            service_id: "web".into(),
            protocol: Protocol::Tcp,
            published,
            target: 80,
        };
        let endpoint = |task: &str, addr: &str, healthy| Endpoint {
            task_id: task.into(),
            addr: addr.parse().unwrap(),
            healthy,
        };
        let mut table = MeshTable::new();
        let all = vec![
            endpoint("t1", "10.0.0.1:32768", true),
            endpoint("t2", "10.0.0.2:32769", false),
            endpoint("t3", "10.0.0.3:32770", true),
            endpoint("t4", "[fd00::4]:32771", true),
        ];
        table.insert(port(8080), all.clone()).unwrap();
        table.insert(port(9090), all.clone()).unwrap();
        let vip = Ipv4Addr::new(198, 18, 0, 2);
        table.insert_at(IpAddr::V4(vip), port(80), all).unwrap();
        table
            .insert_at("fd00::2".parse().unwrap(), port(80), vec![])
            .unwrap();
        let drained = HashSet::from(["t3".to_string()]);
        let unserved = BTreeSet::from([(Protocol::Tcp, None, 9090)]);
        let none = HashSet::new();
        let p = plan(
            &table,
            Ipv4Addr::UNSPECIFIED,
            &drained,
            &none,
            &unserved,
            None,
            None,
            &HashMap::new(),
        );
        let routes: Vec<(Option<Ipv4Addr>, u16, Vec<SocketAddrV4>)> = p
            .routes
            .iter()
            .map(|r| (r.at, r.port, r.endpoints.clone()))
            .collect();
        let live = vec![ep("10.0.0.1:32768")];
        assert_eq!(
            routes,
            vec![(Some(vip), 80, live.clone()), (None, 8080, live.clone())]
        );
        assert_eq!(p.bind, None);
        let at = plan(
            &table,
            Ipv4Addr::LOCALHOST,
            &drained,
            &none,
            &unserved,
            None,
            None,
            &HashMap::new(),
        );
        assert_eq!(at.bind, Some(Ipv4Addr::LOCALHOST));
        // A task not accepting connections yet is left out of TCP routes
        // while another is there, kept when it is the only one.
        let unready = HashSet::from(["10.0.0.1:32768".parse().unwrap()]);
        let p = plan(
            &table,
            Ipv4Addr::UNSPECIFIED,
            &HashSet::new(),
            &unready,
            &unserved,
            None,
            None,
            &HashMap::new(),
        );
        let t3 = vec![ep("10.0.0.3:32770")];
        assert!(p.routes.iter().all(|r| r.endpoints == t3), "{p:?}");
        let p = plan(
            &table,
            Ipv4Addr::UNSPECIFIED,
            &drained,
            &unready,
            &unserved,
            None,
            None,
            &HashMap::new(),
        );
        assert!(p.routes.iter().all(|r| r.endpoints == live), "{p:?}");
    }

    #[test]
    fn each_route_balances_evenly_and_an_empty_one_refuses() {
        let expected = "\
*nat
:FLOTILLA-MESH-PRE - [0:0]
:FLOTILLA-MESH - [0:0]
:FLOTILLA-MESH-SNAT - [0:0]
:FLM-T-8080 - [0:0]
:FLM-T-C6120002-80 - [0:0]
-A FLOTILLA-MESH-PRE -d 198.18.0.0/16 -i lo -j FLOTILLA-MESH
-A FLOTILLA-MESH-PRE -d 198.18.0.0/16 -i br-+ -j FLOTILLA-MESH
-A FLOTILLA-MESH-PRE -d 198.18.0.0/16 -j RETURN
-A FLOTILLA-MESH-PRE -i flo-+ -j RETURN
-A FLOTILLA-MESH-PRE -j FLOTILLA-MESH
-A FLOTILLA-MESH -d 198.18.0.2/32 -p tcp -m tcp --dport 80 -j FLM-T-C6120002-80
-A FLM-T-C6120002-80 -j CONNMARK --set-xmark 0x2000000/0x2000000
-A FLM-T-C6120002-80 -p tcp -m statistic --mode random --probability 0.50000000 -j DNAT --to-destination 10.0.0.1:32768
-A FLM-T-C6120002-80 -p tcp -j DNAT --to-destination 10.0.0.2:32769
-A FLOTILLA-MESH -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 8080 -j FLM-T-8080
-A FLM-T-8080 -j CONNMARK --set-xmark 0x2000000/0x2000000
-A FLM-T-8080 -p tcp -m statistic --mode random --probability 0.33333333 -j DNAT --to-destination 10.0.0.1:32768
-A FLM-T-8080 -p tcp -m statistic --mode random --probability 0.50000000 -j DNAT --to-destination 10.0.0.2:32769
-A FLM-T-8080 -p tcp -j DNAT --to-destination 10.0.0.3:32770
-A FLOTILLA-MESH-SNAT ! -o lo -m connmark --mark 0x2000000/0x2000000 -j SNAT --to-source 10.0.0.1
COMMIT
*filter
:FLOTILLA-MESH-INPUT - [0:0]
:FLOTILLA-MESH-FWD - [0:0]
:FLOTILLA-MESH-ACCT - [0:0]
-A FLOTILLA-MESH-INPUT -d 127.0.0.0/8 ! -i lo -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A FLOTILLA-MESH-INPUT -m addrtype --dst-type LOCAL -p udp -m udp --dport 5353 -m conntrack ! --ctstate DNAT -j REJECT --reject-with icmp-port-unreachable
-A FLOTILLA-MESH-FWD -m connmark --mark 0x2000000/0x2000000 -j ACCEPT
-A FLOTILLA-MESH-ACCT -p tcp -m conntrack --ctorigdst 198.18.0.2/32 --ctorigdstport 80 --ctdir ORIGINAL -m comment --comment FLM-T-C6120002-80/in -j RETURN
-A FLOTILLA-MESH-ACCT -p tcp -m conntrack --ctorigdst 198.18.0.2/32 --ctorigdstport 80 --ctdir REPLY -m comment --comment FLM-T-C6120002-80/out -j RETURN
-A FLOTILLA-MESH-ACCT -p tcp -m conntrack --ctorigdstport 8080 --ctdir ORIGINAL -m comment --comment FLM-T-8080/in -j RETURN
-A FLOTILLA-MESH-ACCT -p tcp -m conntrack --ctorigdstport 8080 --ctdir REPLY -m comment --comment FLM-T-8080/out -j RETURN
COMMIT
";
        assert_eq!(rules(&three_routes(), &BTreeSet::new()), expected);
    }

    #[test]
    fn kept_clients_go_through_the_tunnel_and_straight_to_local_containers() {
        use crate::table::{ClientPath, Endpoint, PublishedPort};
        let mut table = MeshTable::new();
        let endpoint = |task: &str, addr: &str| Endpoint {
            task_id: task.into(),
            addr: addr.parse().unwrap(),
            healthy: true,
        };
        let port = PublishedPort {
            service_id: "web".into(),
            protocol: Protocol::Tcp,
            published: 8080,
            target: 80,
        };
        table
            .insert(
                port,
                vec![
                    endpoint("t1", "10.0.0.1:32768"),
                    endpoint("t2", "10.0.0.1:32769"),
                    endpoint("t3", "10.0.0.2:32768"),
                ],
            )
            .unwrap();
        table.set_client_path(Some(ClientPath::default()));
        // The engine published t1's port; t2 is a process.
        let save = "*nat\n:DOCKER - [0:0]\n\
            -A DOCKER -i docker0 -j RETURN\n\
            -A DOCKER ! -i docker0 -p tcp -m tcp --dport 32768 -j DNAT --to-destination 172.17.0.2:80\n\
            -A DOCKER ! -i docker0 -p udp -m udp --dport 32769 -j DNAT --to-destination 172.17.0.3:53\n\
            COMMIT\n";
        let containers = docker_dnats(save);
        assert_eq!(containers.len(), 2);
        let own = Some(Ipv4Addr::new(10, 0, 0, 1));
        let guard = three_routes().guard;
        let none = HashSet::new();
        let p = plan(
            &table,
            Ipv4Addr::UNSPECIFIED,
            &none,
            &HashSet::new(),
            &BTreeSet::new(),
            own,
            guard.as_ref(),
            &containers,
        );
        assert_eq!(
            p.routes[0].endpoints,
            vec![
                ep("172.17.0.2:80"),
                ep("10.0.0.1:32769"),
                ep("10.0.0.2:32768")
            ]
        );
        let text = rules(&p, &BTreeSet::new());
        for line in [
            "-A FLOTILLA-MESH-PRE -i br-+ -j CONNMARK --set-xmark 0x4000000/0x4000000\n",
            "-A FLM-T-8080 -j CONNMARK --set-xmark 0x2000000/0x2000000\n-A FLM-T-8080 -j MARK --set-xmark 0x2000000/0x2000000\n",
            "-A FLOTILLA-MESH-SNAT -o lo -j RETURN\n\
             -A FLOTILLA-MESH-SNAT -m connmark ! --mark 0x2000000/0x2000000 -j RETURN\n\
             -A FLOTILLA-MESH-SNAT -s 127.0.0.0/8 -j SNAT --to-source 10.0.0.1\n\
             -A FLOTILLA-MESH-SNAT -m connmark --mark 0x4000000/0x4000000 -j SNAT --to-source 10.0.0.1\n\
             -A FLOTILLA-MESH-SNAT -o flotilla-ca -j RETURN\n\
             -A FLOTILLA-MESH-SNAT -d 172.17.0.2/32 -j RETURN\n\
             -A FLOTILLA-MESH-SNAT -j SNAT --to-source 10.0.0.1\n",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(!text.contains("-i lo -j CONNMARK"), "{text}");
        // Without the node's own address nothing is kept.
        let p = plan(
            &table,
            Ipv4Addr::UNSPECIFIED,
            &none,
            &HashSet::new(),
            &BTreeSet::new(),
            None,
            guard.as_ref(),
            &containers,
        );
        assert_eq!(p.keep_client, None);
        assert_eq!(p.routes[0].endpoints[0], ep("10.0.0.1:32768"));
    }

    #[test]
    fn chains_of_routes_gone_are_deleted_in_the_same_run() {
        let mut p = three_routes();
        p.routes.remove(0);
        let stale: BTreeSet<String> = ["FLM-T-C6120002-80", "FLM-T-8080"]
            .into_iter()
            .map(String::from)
            .collect();
        let text = rules(&p, &stale);
        assert!(text.contains(":FLM-T-C6120002-80 - [0:0]\n-X FLM-T-C6120002-80\n"));
        assert!(!text.contains("-X FLM-T-8080"), "{text}");
        assert_eq!(p.chains(), BTreeSet::from(["FLM-T-8080".to_string()]));
    }

    #[test]
    fn a_bind_address_and_masquerade() {
        let p = Plan {
            bind: Some(Ipv4Addr::LOCALHOST),
            routes: vec![KernelRoute {
                protocol: Protocol::Udp,
                at: None,
                port: 53,
                endpoints: vec![ep("127.0.0.1:4000")],
            }],
            snat: None,
            guard: None,
            keep_client: None,
        };
        let text = rules(&p, &BTreeSet::new());
        assert!(
            text.contains("-A FLOTILLA-MESH-PRE -j FLOTILLA-MESH\n"),
            "{text}"
        );
        assert!(!text.contains("-A FLOTILLA-MESH-PRE -d"), "{text}");
        assert!(text.contains(
            "-A FLOTILLA-MESH -d 127.0.0.1/32 -p udp -m udp --dport 53 -j FLM-U-53\n\
             -A FLM-U-53 -j CONNMARK --set-xmark 0x2000000/0x2000000\n\
             -A FLM-U-53 -p udp -j DNAT --to-destination 127.0.0.1:4000\n"
        ));
        assert!(text.contains("-j MASQUERADE\n"), "{text}");
    }

    #[test]
    fn bytes_are_read_from_the_accounting_chain_by_route() {
        let save = "*filter\n:FLOTILLA-MESH-ACCT - [0:0]\n\
            [90:5400] -A FLOTILLA-MESH-ACCT -m connmark ! --mark 0x2000000/0x2000000 -j RETURN\n\
            [5:300] -A FLOTILLA-MESH-ACCT -d 1.2.3.4/32 -j RETURN\n\
            [10:1500] -A FLOTILLA-MESH-ACCT -p tcp -m conntrack --ctorigdst 198.18.0.2/32 --ctorigdstport 80 --ctdir ORIGINAL -m comment --comment FLM-T-C6120002-80/in -j RETURN\n\
            [8:9000] -A FLOTILLA-MESH-ACCT -p tcp -m conntrack --ctorigdst 198.18.0.2/32 --ctorigdstport 80 --ctdir REPLY -m comment --comment FLM-T-C6120002-80/out -j RETURN\n\
            [2:120] -A FLOTILLA-MESH-ACCT -p tcp -m conntrack --ctorigdstport 8080 --ctdir ORIGINAL -m comment --comment \"FLM-T-8080/in\" -j RETURN\n\
            COMMIT\n";
        assert_eq!(
            route_bytes(save),
            [
                ("FLM-T-C6120002-80".to_string(), 1500, 9000),
                ("FLM-T-8080".to_string(), 120, 0)
            ]
        );
    }

    #[test]
    fn connections_are_read_from_each_route_chain_s_first_rule() {
        let save = "*nat\n:FLM-T-8080 - [0:0]\n\
            [0:0] -A FLOTILLA-MESH -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 8080 -j FLM-T-8080\n\
            [12:720] -A FLM-T-8080 -j CONNMARK --set-xmark 0x2000000/0x2000000\n\
            [7:420] -A FLM-T-8080 -p tcp -m statistic --mode random --probability 0.5 -j DNAT --to-destination 10.0.0.1:80\n\
            [3:180] -A FLM-U-C6120002-53 -j CONNMARK --set-xmark 0x2000000/0x2000000\n\
            COMMIT\n";
        assert_eq!(
            route_connections(save),
            [
                ("FLM-T-8080".to_string(), 12),
                ("FLM-U-C6120002-53".to_string(), 3)
            ]
        );
    }

    #[test]
    fn leftovers_are_found_and_removed() {
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:FLM-T-8080 - [0:0]\n:FLM-U-C6120002-53 - [0:0]\n:FLOTILLA-MESH - [0:0]\n-A FLOTILLA-MESH -j FLM-T-8080\nCOMMIT\n";
        let found = route_chains_in(save);
        assert_eq!(
            found,
            BTreeSet::from(["FLM-T-8080".to_string(), "FLM-U-C6120002-53".to_string()])
        );
        let text = removal(&found);
        assert_eq!(
            text,
            "*nat\n:FLOTILLA-MESH-PRE - [0:0]\n:FLOTILLA-MESH - [0:0]\n:FLOTILLA-MESH-SNAT - [0:0]\n:FLM-T-8080 - [0:0]\n:FLM-U-C6120002-53 - [0:0]\n\
             -X FLOTILLA-MESH-PRE\n-X FLOTILLA-MESH\n-X FLOTILLA-MESH-SNAT\n-X FLM-T-8080\n-X FLM-U-C6120002-53\nCOMMIT\n\
             *filter\n:FLOTILLA-MESH-INPUT - [0:0]\n:FLOTILLA-MESH-FWD - [0:0]\n:FLOTILLA-MESH-ACCT - [0:0]\n\
             -X FLOTILLA-MESH-INPUT\n-X FLOTILLA-MESH-FWD\n-X FLOTILLA-MESH-ACCT\nCOMMIT\n"
        );
    }
}
