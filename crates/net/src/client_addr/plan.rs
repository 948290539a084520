//! What keeping clients' addresses writes: pure, no I/O, so every command
//! and rule is tested without a kernel.
//!
//! One VXLAN device ([`DEVICE`]) carries, between the swarm's nodes, the
//! connections the mesh sends to another node's task with the client's
//! own source address. Each node's device has a MAC made of its address
//! ([`mac`]), and every peer gets a forwarding entry (its MAC to its
//! address), a permanent neighbour entry and routes, so nothing is learnt
//! or flooded. Its index (1..=255, kept for as long as the peer is listed)
//! names what comes back to it:
//!
//! - out: a packet marked [`crate::marks::MARK`] (the kernel path
//!   marks its connections so; the proxy's sockets carry the mark) is
//!   routed by table [`PEERS_TABLE`], which sends each peer's address into
//!   the device; anything else falls through to the main table. The
//!   device's own UDP packets inherit the mark, so a rule before it sends
//!   UDP to [`TUNNEL_PORT`] by the main table (else they would loop).
//! - in: a new connection arriving on the device from peer `i` (by its
//!   source MAC) keeps `i` in the connmark bits [`PEER_MASK`]; its replies
//!   (from a container's bridge, or from a local process) get those bits
//!   as their packet mark, and rule `fwmark i` sends them back into the
//!   device to peer `i`, whose conntrack undoes its DNAT and forwards them
//!   to the client.
//! - the proxy: a connection made from a client's address (IP_TRANSPARENT)
//!   is marked [`PROXY_MARK`] beside the mesh's mark; its replies are
//!   routed by table [`LOCAL_TABLE`] (`local 0.0.0.0/0 dev lo`), so they
//!   reach the proxy's socket instead of leaving for the client.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::marks::MARK;
pub use crate::marks::{PROXY_MARK, TUNNEL_DEVICE as DEVICE};
/// Its UDP port: not the overlay networks' (4789), so neither sees the
/// other's packets.
pub const TUNNEL_PORT: u16 = 4790;
/// Its VXLAN identifier (one device, one identifier).
pub const VNI: u32 = 4096;
/// VXLAN's headers: the device's MTU is the underlay's less these.
pub const OVERHEAD: u32 = 50;
/// The connmark bits naming the peer a connection came from.
pub const PEER_MASK: u32 = 0x00FF_0000;
const PEER_SHIFT: u32 = 16;
/// Routing tables and their rules' priorities (before main's 32766).
pub const OUTER_PREF: u32 = 17999;
pub const PEERS_TABLE: u32 = 18000;
pub const LOCAL_TABLE: u32 = 18001;
/// Peer `i`'s table and rule: this plus `i`.
pub const PEER_TABLE_BASE: u32 = 18100;
/// The most peers the connmark bits can name.
pub const MAX_PEERS: usize = 255;

/// The chains, and where they hook in.
pub const PRE_CHAIN: &str = "FLOTILLA-CA-PRE";
pub const OUT_CHAIN: &str = "FLOTILLA-CA-OUT";
pub const POST_CHAIN: &str = "FLOTILLA-CA-POST";
pub const IN_CHAIN: &str = "FLOTILLA-CA-IN";

/// A node's MAC on the device: `02:fc:` and its IPv4 address, so every
/// node knows every other's without asking.
pub fn mac(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:fc:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// Each peer's index: those `old` had keep theirs (the connections they
/// carry are marked with it), new ones take the lowest free. Peers past
/// [`MAX_PEERS`] get none (their connections are sent from this node's
/// address, as without the tunnel).
pub fn assign(old: &BTreeMap<Ipv4Addr, u8>, peers: &BTreeSet<Ipv4Addr>) -> BTreeMap<Ipv4Addr, u8> {
    let mut out: BTreeMap<Ipv4Addr, u8> = old
        .iter()
        .filter(|(ip, _)| peers.contains(ip))
        .map(|(ip, i)| (*ip, *i))
        .collect();
    let mut taken: BTreeSet<u8> = out.values().copied().collect();
    for ip in peers {
        if out.contains_key(ip) {
            continue;
        }
        let Some(free) = (1..=MAX_PEERS as u8).find(|i| !taken.contains(i)) else {
            break;
        };
        taken.insert(free);
        out.insert(*ip, free);
    }
    out
}

fn peer_mark(index: u8) -> String {
    format!("{:#x}/{PEER_MASK:#x}", u32::from(index) << PEER_SHIFT)
}

/// `ip -batch` input that makes the device and the rules every peer
/// shares (the device gets the node's address too: reverse-path filtering
/// passes nothing on a device without an IPv4 address).
pub fn device_setup(own: Ipv4Addr, mtu: u32) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "link add {DEVICE} type vxlan id {VNI} local {own} dstport {TUNNEL_PORT} nolearning"
    );
    let _ = writeln!(s, "link set {DEVICE} address {} mtu {mtu}", mac(own));
    let _ = writeln!(s, "addr add {own}/32 dev {DEVICE} noprefixroute");
    let _ = writeln!(s, "link set {DEVICE} up");
    let _ = writeln!(
        s,
        "rule add ipproto udp dport {TUNNEL_PORT} lookup main pref {OUTER_PREF}"
    );
    let _ = writeln!(
        s,
        "rule add fwmark {MARK:#x}/{MARK:#x} lookup {PEERS_TABLE} pref {PEERS_TABLE}"
    );
    let both = MARK | PROXY_MARK;
    let _ = writeln!(
        s,
        "rule add fwmark {PROXY_MARK:#x}/{both:#x} lookup {LOCAL_TABLE} pref {LOCAL_TABLE}"
    );
    let _ = writeln!(
        s,
        "route replace local 0.0.0.0/0 dev lo table {LOCAL_TABLE}"
    );
    s
}

/// `ip -batch` input that removes the device, its rules and tables, those
/// of `prefs` (rules a killed daemon left, see [`rule_prefs_in`]) among them.
pub fn teardown(prefs: &BTreeSet<u32>) -> String {
    let mut s = format!("link del {DEVICE}\n");
    let ours: BTreeSet<u32> = [OUTER_PREF, PEERS_TABLE, LOCAL_TABLE]
        .into_iter()
        .chain(prefs.iter().copied())
        .collect();
    for pref in ours {
        let _ = writeln!(s, "rule del pref {pref}");
    }
    for table in [PEERS_TABLE, LOCAL_TABLE] {
        let _ = writeln!(s, "route flush table {table}");
    }
    for pref in prefs.iter().filter(|p| **p > PEER_TABLE_BASE) {
        let _ = writeln!(s, "route flush table {pref}");
    }
    s
}

/// The priorities of the rules in `ip rule show` that are ours.
pub fn rule_prefs_in(rules: &str) -> BTreeSet<u32> {
    rules
        .lines()
        .filter_map(|l| l.split(':').next()?.trim().parse::<u32>().ok())
        .filter(|p| (OUTER_PREF..=PEER_TABLE_BASE + MAX_PEERS as u32).contains(p))
        .collect()
}

/// What `old` peers becoming `new` changes: (`ip -batch` input, `bridge
/// -batch` input).
pub fn peer_changes(
    old: &BTreeMap<Ipv4Addr, u8>,
    new: &BTreeMap<Ipv4Addr, u8>,
) -> (String, String) {
    let (mut ip, mut bridge) = (String::new(), String::new());
    for (peer, index) in old.iter().filter(|(p, i)| new.get(p) != Some(i)) {
        let table = PEER_TABLE_BASE + u32::from(*index);
        let _ = writeln!(ip, "rule del pref {table}");
        let _ = writeln!(ip, "route flush table {table}");
        let _ = writeln!(ip, "route del {peer}/32 table {PEERS_TABLE}");
        let _ = writeln!(ip, "neigh del {peer} dev {DEVICE}");
        let _ = writeln!(bridge, "fdb del {} dev {DEVICE} dst {peer}", mac(*peer));
    }
    for (peer, index) in new.iter().filter(|(p, i)| old.get(p) != Some(i)) {
        let table = PEER_TABLE_BASE + u32::from(*index);
        let mac = mac(*peer);
        let _ = writeln!(bridge, "fdb replace {mac} dev {DEVICE} dst {peer}");
        let _ = writeln!(
            ip,
            "neigh replace {peer} lladdr {mac} dev {DEVICE} nud permanent"
        );
        let _ = writeln!(
            ip,
            "route replace {peer}/32 via {peer} dev {DEVICE} onlink table {PEERS_TABLE}"
        );
        let _ = writeln!(
            ip,
            "route replace default via {peer} dev {DEVICE} onlink table {table}"
        );
        let _ = writeln!(
            ip,
            "rule add fwmark {} lookup {table} pref {table}",
            peer_mark(*index)
        );
    }
    (ip, bridge)
}

/// The `iptables-restore --noflush` input of the marks (mangle) and of the
/// guard on the tunnel's port (filter: only the peers may send to it).
pub fn rules(peers: &BTreeMap<Ipv4Addr, u8>) -> String {
    let mut s = String::from("*mangle\n");
    for chain in [PRE_CHAIN, OUT_CHAIN, POST_CHAIN] {
        let _ = writeln!(s, ":{chain} - [0:0]");
    }
    for (peer, index) in peers {
        let _ = writeln!(
            s,
            "-A {PRE_CHAIN} -i {DEVICE} -m conntrack --ctstate NEW -m mac --mac-source {} -j CONNMARK --set-xmark {}",
            mac(*peer),
            peer_mark(*index)
        );
    }
    let mesh = format!("{MARK:#x}/{MARK:#x}");
    let proxy = format!("{PROXY_MARK:#x}/{PROXY_MARK:#x}");
    let both = MARK | PROXY_MARK;
    let _ = writeln!(
        s,
        "-A {OUT_CHAIN} -m mark --mark {proxy} -j CONNMARK --set-xmark {proxy}"
    );
    for chain in [PRE_CHAIN, OUT_CHAIN] {
        let _ = writeln!(
            s,
            "-A {chain} -m conntrack --ctdir REPLY -m connmark ! --mark 0x0/{PEER_MASK:#x} -j CONNMARK --restore-mark --nfmask {PEER_MASK:#x} --ctmask {PEER_MASK:#x}"
        );
        let _ = writeln!(
            s,
            "-A {chain} -m conntrack --ctdir REPLY -m connmark --mark {proxy} -j MARK --set-xmark {PROXY_MARK:#x}/{both:#x}"
        );
        let _ = writeln!(
            s,
            "-A {chain} -m conntrack --ctdir ORIGINAL -m connmark --mark {mesh} -j MARK --set-xmark {mesh}"
        );
    }
    // The tunnel's MTU is the underlay's less VXLAN's headers: both ends
    // of a TCP connection through it are told so in its SYNs.
    let _ = writeln!(
        s,
        "-A {POST_CHAIN} -o {DEVICE} -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu"
    );
    s.push_str("COMMIT\n*filter\n");
    let _ = writeln!(s, ":{IN_CHAIN} - [0:0]");
    for peer in peers.keys() {
        let _ = writeln!(
            s,
            "-A {IN_CHAIN} -s {peer}/32 -p udp -m udp --dport {TUNNEL_PORT} -j RETURN"
        );
    }
    let _ = writeln!(
        s,
        "-A {IN_CHAIN} -p udp -m udp --dport {TUNNEL_PORT} -j DROP"
    );
    s.push_str("COMMIT\n");
    s
}

/// The jumps into the chains: (table, chain, rule).
pub fn hooks() -> [(&'static str, &'static str, String); 4] {
    [
        ("mangle", "PREROUTING", format!("-j {PRE_CHAIN}")),
        ("mangle", "OUTPUT", format!("-j {OUT_CHAIN}")),
        ("mangle", "POSTROUTING", format!("-j {POST_CHAIN}")),
        ("filter", "INPUT", format!("-j {IN_CHAIN}")),
    ]
}

/// The input that empties and deletes the chains (once unhooked).
pub fn removal() -> String {
    let mut s = String::from("*mangle\n");
    for chain in [PRE_CHAIN, OUT_CHAIN, POST_CHAIN] {
        let _ = writeln!(s, ":{chain} - [0:0]\n-X {chain}");
    }
    let _ = writeln!(
        s,
        "COMMIT\n*filter\n:{IN_CHAIN} - [0:0]\n-X {IN_CHAIN}\nCOMMIT"
    );
    s
}

/// From `ip -4 -o addr show`: the interface holding `own` (the underlay,
/// whose MTU the tunnel's follows) and the networks of the container
/// bridges (Docker's, Flotilla's overlays): a client there reaching a
/// container on the same bridge must see the answer come from the address
/// it asked, so its connections keep going out from this node's address.
pub fn interfaces(text: &str, own: Ipv4Addr) -> (Option<String>, Vec<(Ipv4Addr, u8)>) {
    let mut underlay = None;
    let mut bridges = Vec::new();
    for line in text.lines() {
        // "4: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0 ..."
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| *w == "inet") else {
            continue;
        };
        let (Some(dev), Some(cidr)) = (words.get(1), words.get(at + 1)) else {
            continue;
        };
        let Some((ip, prefix)) = cidr.split_once('/') else {
            continue;
        };
        let (Ok(ip), Ok(prefix)) = (ip.parse::<Ipv4Addr>(), prefix.parse::<u8>()) else {
            continue;
        };
        let dev = dev.split('@').next().unwrap_or(dev);
        if ip == own && dev != DEVICE && underlay.is_none() {
            underlay = Some(dev.to_string());
        }
        let bridge = dev == "docker0"
            || dev == "docker_gwbridge"
            || dev.starts_with("br-")
            || dev.starts_with("flo-");
        if bridge && prefix <= 32 {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            bridges.push((Ipv4Addr::from(u32::from(ip) & mask), prefix));
        }
    }
    (underlay, bridges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn peers_keep_their_index_and_new_ones_take_the_lowest_free() {
        let first = assign(
            &BTreeMap::new(),
            &BTreeSet::from([ip("10.0.0.2"), ip("10.0.0.3"), ip("10.0.0.4")]),
        );
        assert_eq!(first.values().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        let second = assign(&first, &BTreeSet::from([ip("10.0.0.4"), ip("10.0.0.1")]));
        assert_eq!(second[&ip("10.0.0.4")], 3);
        assert_eq!(second[&ip("10.0.0.1")], 1);
        let many: BTreeSet<Ipv4Addr> = (0..300u32)
            .map(|i| Ipv4Addr::from(0x0a00_0000 + i))
            .collect();
        assert_eq!(assign(&BTreeMap::new(), &many).len(), MAX_PEERS);
    }

    #[test]
    fn the_device_and_a_peer_s_routes() {
        assert_eq!(mac(ip("10.213.88.12")), "02:fc:0a:d5:58:0c");
        let setup = device_setup(ip("10.0.0.1"), 1450);
        assert_eq!(
            setup,
            "link add flotilla-ca type vxlan id 4096 local 10.0.0.1 dstport 4790 nolearning\n\
             link set flotilla-ca address 02:fc:0a:00:00:01 mtu 1450\n\
             addr add 10.0.0.1/32 dev flotilla-ca noprefixroute\n\
             link set flotilla-ca up\n\
             rule add ipproto udp dport 4790 lookup main pref 17999\n\
             rule add fwmark 0x2000000/0x2000000 lookup 18000 pref 18000\n\
             rule add fwmark 0x1000000/0x3000000 lookup 18001 pref 18001\n\
             route replace local 0.0.0.0/0 dev lo table 18001\n"
        );
        let old = BTreeMap::from([(ip("10.0.0.3"), 2)]);
        let new = BTreeMap::from([(ip("10.0.0.2"), 1)]);
        let (ip_text, bridge) = peer_changes(&old, &new);
        assert_eq!(
            ip_text,
            "rule del pref 18102\nroute flush table 18102\nroute del 10.0.0.3/32 table 18000\nneigh del 10.0.0.3 dev flotilla-ca\n\
             neigh replace 10.0.0.2 lladdr 02:fc:0a:00:00:02 dev flotilla-ca nud permanent\n\
             route replace 10.0.0.2/32 via 10.0.0.2 dev flotilla-ca onlink table 18000\n\
             route replace default via 10.0.0.2 dev flotilla-ca onlink table 18101\n\
             rule add fwmark 0x10000/0xff0000 lookup 18101 pref 18101\n"
        );
        assert_eq!(
            bridge,
            "fdb del 02:fc:0a:00:00:03 dev flotilla-ca dst 10.0.0.3\n\
             fdb replace 02:fc:0a:00:00:02 dev flotilla-ca dst 10.0.0.2\n"
        );
        assert_eq!(peer_changes(&new, &new), (String::new(), String::new()));
    }

    #[test]
    fn marks_follow_connections_both_ways() {
        let text = rules(&BTreeMap::from([(ip("10.0.0.2"), 1)]));
        for line in [
            "-A FLOTILLA-CA-PRE -i flotilla-ca -m conntrack --ctstate NEW -m mac --mac-source 02:fc:0a:00:00:02 -j CONNMARK --set-xmark 0x10000/0xff0000",
            "-A FLOTILLA-CA-OUT -m mark --mark 0x1000000/0x1000000 -j CONNMARK --set-xmark 0x1000000/0x1000000",
            "-A FLOTILLA-CA-PRE -m conntrack --ctdir REPLY -m connmark ! --mark 0x0/0xff0000 -j CONNMARK --restore-mark --nfmask 0xff0000 --ctmask 0xff0000",
            "-A FLOTILLA-CA-OUT -m conntrack --ctdir REPLY -m connmark --mark 0x1000000/0x1000000 -j MARK --set-xmark 0x1000000/0x3000000",
            "-A FLOTILLA-CA-PRE -m conntrack --ctdir ORIGINAL -m connmark --mark 0x2000000/0x2000000 -j MARK --set-xmark 0x2000000/0x2000000",
            "-A FLOTILLA-CA-POST -o flotilla-ca -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu",
            "-A FLOTILLA-CA-IN -s 10.0.0.2/32 -p udp -m udp --dport 4790 -j RETURN\n-A FLOTILLA-CA-IN -p udp -m udp --dport 4790 -j DROP\nCOMMIT\n",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(removal().contains("-X FLOTILLA-CA-IN\nCOMMIT\n"));
    }

    #[test]
    fn leftover_rules_are_found_and_removed() {
        let shown = "0:\tfrom all lookup local\n17999:\tfrom all ipproto udp dport 4790 lookup main\n18101:\tfrom all fwmark 0x10000/0xff0000 lookup 18101\n32766:\tfrom all lookup main\n";
        let prefs = rule_prefs_in(shown);
        assert_eq!(prefs, BTreeSet::from([17999, 18101]));
        let text = teardown(&prefs);
        assert!(text.starts_with("link del flotilla-ca\nrule del pref 17999\nrule del pref 18000\nrule del pref 18001\nrule del pref 18101\n"), "{text}");
        assert!(text.ends_with("route flush table 18101\n"), "{text}");
    }

    #[test]
    fn the_underlay_and_the_container_bridges() {
        let text = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                    2: eth0@if12    inet 10.213.88.12/24 brd 10.213.88.255 scope global eth0\\  valid_lft forever\n\
                    3: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\n\
                    4: flotilla-ca    inet 10.213.88.12/32 scope global flotilla-ca\n\
                    5: br-0a1b    inet 172.18.5.1/24 scope global br-0a1b\n";
        let (underlay, bridges) = interfaces(text, ip("10.213.88.12"));
        assert_eq!(underlay.as_deref(), Some("eth0"));
        assert_eq!(
            bridges,
            vec![(ip("172.17.0.0"), 16), (ip("172.18.5.0"), 24)]
        );
    }
}
