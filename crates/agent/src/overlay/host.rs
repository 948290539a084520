//! The node's kernel, through iproute2 and iptables: links, addresses,
//! forwarding entries and firewall chains of the overlay networks. One
//! batch per change (`ip -batch`, `bridge -batch`, `iptables-restore`): a
//! few processes per routing table rather than netlink by hand.

use flotilla_net::host::CommandError;

use super::plan::{hooks, LocalNetwork, Remote};
use flotilla_store::network::mac_string;

/// Runs `program args…` with `input` on its stdin (see
/// `flotilla_net::host`); its stderr on failure.
async fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    flotilla_net::host::run(program, args, input)
        .await
        .map_err(describe)
}

fn describe(e: CommandError) -> String {
    match e {
        CommandError::NotInstalled { program } => format!(
            "{program} is not installed: overlay networks and the service network's guards need iproute2 and iptables"
        ),
        CommandError::Failed { command, message } => format!("{command}: {message}"),
    }
}

pub async fn link_exists(name: &str) -> bool {
    run("ip", &["link", "show", "dev", name], None)
        .await
        .is_ok()
}

/// The bridge (made by the engine) gets its MAC, this node's address and
/// the subnet's route from that address; a VXLAN device (made afresh, so
/// no stale entry survives a restart of the daemon) joins it.
pub async fn set_up(net: &LocalNetwork, vxlan_port: u16) -> Result<(), String> {
    let (br, vx) = (net.bridge(), net.vxlan());
    let mac = mac_string(flotilla_store::network::mac_of(net.node_addr));
    if link_exists(&vx).await {
        run("ip", &["link", "del", "dev", &vx], None).await?;
    }
    let mtu = net.mtu.to_string();
    let subnet = net.subnet.to_string();
    let addr = format!("{}/32", net.node_addr);
    let src = net.node_addr.to_string();
    let vni = net.vni.to_string();
    let port = vxlan_port.to_string();
    let batch = [
        vec!["link", "set", "dev", &br, "address", &mac, "mtu", &mtu],
        vec!["addr", "replace", &addr, "dev", &br],
        vec!["link", "set", "dev", &br, "up"],
        vec![
            "route", "replace", &subnet, "dev", &br, "proto", "kernel", "scope", "link", "src",
            &src,
        ],
        vec![
            "link",
            "add",
            &vx,
            "type",
            "vxlan",
            "id",
            &vni,
            "dstport",
            &port,
            "nolearning",
            "proxy",
        ],
        vec!["link", "set", "dev", &vx, "mtu", &mtu, "master", &br, "up"],
    ];
    for line in batch {
        run("ip", &line, None).await?;
    }
    // A bridge forwarding between its ports must not also answer a task
    // with "use the other gateway" for a VIP it rewrote.
    let _ = tokio::fs::write(format!("/proc/sys/net/ipv4/conf/{br}/send_redirects"), "0").await;
    Ok(())
}

pub async fn tear_down(net_id: &str) -> Result<(), String> {
    let vx = super::plan::vxlan_name(net_id);
    if link_exists(&vx).await {
        run("ip", &["link", "del", "dev", &vx], None).await?;
    }
    Ok(())
}

/// Moves the forwarding entries of `vx` from `old` to `new`: for each
/// address on another node, the neighbour (address → MAC, answered by
/// the VXLAN device so ARP never crosses nodes) and the bridge entry
/// (MAC → node). `replace`, never `append`: a task that moves keeps its
/// address and so its MAC, and an appended entry would be ignored.
pub async fn sync_remotes(
    vx: &str,
    old: &std::collections::BTreeSet<Remote>,
    new: &std::collections::BTreeSet<Remote>,
) -> Result<(), String> {
    let mut ip_batch = String::new();
    let mut fdb_batch = String::new();
    for r in old.difference(new) {
        let still = new.iter().any(|n| n.addr == r.addr);
        if !still {
            ip_batch += &format!("neigh del {} dev {vx}\n", r.addr);
        }
        if !new.iter().any(|n| n.mac == r.mac) {
            fdb_batch += &format!("fdb del {} dev {vx} self\n", mac_string(r.mac));
        }
    }
    for r in new.difference(old) {
        let mac = mac_string(r.mac);
        ip_batch += &format!(
            "neigh replace {} lladdr {mac} dev {vx} nud permanent\n",
            r.addr
        );
        fdb_batch += &format!("fdb replace {mac} dev {vx} dst {} self permanent\n", r.node);
    }
    if !ip_batch.is_empty() {
        run("ip", &["-force", "-batch", "-"], Some(&ip_batch)).await?;
    }
    if !fdb_batch.is_empty() {
        run("bridge", &["-force", "-batch", "-"], Some(&fdb_batch)).await?;
    }
    Ok(())
}

/// Replaces Flotilla's chains with `rules` and makes sure they are hooked
/// in, first, where the kernel looks.
pub async fn apply_iptables(rules: &str) -> Result<(), String> {
    run("iptables-restore", &["-w", "--noflush"], Some(rules)).await?;
    for (table, chain, rule) in hooks() {
        hook_first(table, chain, &rule).await?;
    }
    Ok(())
}

/// Puts `rule` first in `table`'s `chain` unless it is there already.
async fn hook_first(table: &str, chain: &str, rule: &str) -> Result<(), String> {
    flotilla_net::host::hook_first(table, chain, rule)
        .await
        .map_err(describe)
}

/// Whether `table` has a chain called `chain`.
async fn chain_exists(table: &str, chain: &str) -> bool {
    run("iptables", &["-w", "-t", table, "-n", "-L", chain], None)
        .await
        .is_ok()
}

/// Writes the task-port guard's chains (`rules`, from
/// `port_guard::rules`) and hooks them in: into INPUT, and into
/// DOCKER-USER when the Docker Engine made it (it does at start, and
/// jumps there first from FORWARD; made by us, nothing would jump to it).
/// A DOCKER-USER made later is hooked at the next change of the rules.
pub async fn apply_port_guard(rules: &str) -> Result<(), String> {
    run("iptables-restore", &["-w", "--noflush"], Some(rules)).await?;
    for (chain, rule) in crate::port_guard::hooks() {
        if chain == "INPUT" || chain_exists("filter", chain).await {
            hook_first("filter", chain, &rule).await?;
        }
    }
    Ok(())
}

/// Unhooks and deletes the task-port guard's chains (fine when never made):
/// part of [`remove_iptables`], and on its own for a node without the
/// overlay networks (a process executor's).
pub async fn remove_port_guard() {
    use crate::port_guard::{hooks, CHAIN, FROM_CHAIN};
    for (chain, rule) in hooks() {
        let mut delete = vec!["-w", "-D", chain];
        delete.extend(rule.split_whitespace());
        while run("iptables", &delete, None).await.is_ok() {}
    }
    // Emptied first: the first chain's rules name the second.
    for chain in [CHAIN, FROM_CHAIN] {
        let _ = run("iptables", &["-w", "-F", chain], None).await;
    }
    for chain in [CHAIN, FROM_CHAIN] {
        let _ = run("iptables", &["-w", "-X", chain], None).await;
    }
}

/// The chain that keeps the service network (VIPs, task addresses, the
/// DNS server, all on `lo`) to this node and its containers.
const SERVICE_CHAIN: &str = "FLOTILLA-SERVICE-ADDRS";

/// The interfaces that may reach the service network (iptables' `+`
/// ends a prefix): loopback and the container bridges (Docker's, and
/// Flotilla's overlay bridges). The kernel mesh translates connections to
/// VIPs from these only, the same rule before NAT.
pub const SERVICE_NETWORK_FROM: [&str; 5] = ["lo", "docker0", "docker_gwbridge", "br-+", "flo-+"];

/// Linux answers for a local address on any interface: a neighbour that
/// routes the service network (`network`, e.g. 198.18.0.0/15) to this
/// node would reach its VIPs and DNS server around the mesh. Only
/// loopback and the container bridges (Docker's, and Flotilla's overlay
/// bridges) may reach them; the rest is dropped.
pub async fn guard_service_network(network: &str) -> Result<(), String> {
    let mut rules = format!("*filter\n:{c} - [0:0]\n-F {c}\n", c = SERVICE_CHAIN);
    for dev in SERVICE_NETWORK_FROM {
        rules += &format!("-A {SERVICE_CHAIN} -i {dev} -j RETURN\n");
    }
    rules += &format!("-A {SERVICE_CHAIN} -j DROP\nCOMMIT\n");
    run("iptables-restore", &["-w", "--noflush"], Some(&rules)).await?;
    hook_first(
        "filter",
        "INPUT",
        &format!("-d {network} -j {SERVICE_CHAIN}"),
    )
    .await
}

/// Unhooks and deletes Flotilla's chains, the task-port guard's among
/// them (those never made are fine): what `swarm leave` does.
pub async fn remove_iptables() -> Result<(), String> {
    for (table, chain, rule) in hooks() {
        let words: Vec<&str> = rule.split_whitespace().collect();
        let mut delete = vec!["-w", "-t", table, "-D", chain];
        delete.extend(&words);
        while run("iptables", &delete, None).await.is_ok() {}
        let target = words.last().copied().unwrap_or_default();
        let _ = run("iptables", &["-w", "-t", table, "-F", target], None).await;
        let _ = run("iptables", &["-w", "-t", table, "-X", target], None).await;
    }
    remove_port_guard().await;
    Ok(())
}
