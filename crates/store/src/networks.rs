//! Swarm networks: the overlay networks services attach to, and the
//! ingress network the routing mesh serves published ports on.
//!
//! A network is created with what its creator asked for ([`NetworkSpec`]);
//! what the cluster decides for it — its subnet when none was given, its
//! gateway, its VXLAN network identifier, the address each node uses on it —
//! is filled in while the create op applies (`ops/networks.rs`), so every
//! manager holds the same answer and a new leader hands out nothing twice.
//!
//! The API shows a network in two of Docker's shapes: the Engine's
//! `NetworkResource` (`/networks`) and SwarmKit's `Network` (in a task's
//! `NetworksAttachments`); both are rendered by the API crate from this.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The ingress network's name, as Docker's.
pub const INGRESS_NAME: &str = "ingress";
/// The driver of every swarm network.
pub const OVERLAY: &str = "overlay";
/// The driver option that carries the VXLAN identifier, as Docker's.
pub const VXLAN_OPTION: &str = "com.docker.network.driver.overlay.vxlanid_list";
/// The driver option for the MTU of the network's interfaces.
pub const MTU_OPTION: &str = "com.docker.network.driver.mtu";
/// The label on the local (engine) networks a node makes for swarm
/// networks, whose value is the swarm network's ID: the API leaves them
/// out of `network ls` and `network prune`.
pub const LOCAL_LABEL: &str = "com.flotilla.network";
/// The first VXLAN identifier handed out (Docker's overlay driver starts
/// there too).
pub const FIRST_VNI: u32 = 4097;
/// The largest VXLAN identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// An IPv4 subnet, `addr/prefix`, with host bits clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// `addr/prefix` with host bits cleared; `None` for a prefix over 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Subnet> {
        (prefix <= 32).then(|| Subnet {
            addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        })
    }

    /// Parses `10.0.1.0/24`. Host bits set (`10.0.1.7/24`) are refused, as
    /// Docker refuses them for a network's subnet.
    pub fn parse(s: &str) -> Result<Subnet, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid CIDR address: {s}"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| {
            if ip.contains(':') {
                format!("IPv6 subnets are not supported by Flotilla yet: {s}")
            } else {
                format!("invalid CIDR address: {s}")
            }
        })?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("invalid CIDR address: {s}"))?;
        let subnet = Subnet::new(ip, prefix).ok_or_else(|| format!("invalid CIDR address: {s}"))?;
        if subnet.addr != ip {
            return Err(format!(
                "invalid subnet {s}: it has host bits set (the subnet is {subnet})"
            ));
        }
        Ok(subnet)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let p = self.prefix.min(other.prefix);
        u32::from(self.addr) & mask(p) == u32::from(other.addr) & mask(p)
    }

    /// The number of addresses, as u64 (a /0 has 2^32).
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The first address after the subnet's own: Docker's default gateway.
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(1))
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// The addresses of a network, after allocation: exactly one IPv4 subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    /// Where task addresses and VIPs come from, when narrower than the
    /// subnet (`--ip-range`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<Subnet>,
}

/// What the creator of a network asked for, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The driver options as given (only those Flotilla honours pass the
    /// API's checks).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub attachable: bool,
    #[serde(default)]
    pub ingress: bool,
    /// The subnet, gateway and range asked for; `None` takes a subnet from
    /// the swarm's default address pool.
    #[serde(default)]
    pub ipam: Option<IpamRequest>,
}

/// A subnet as asked for: the gateway and range are optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamRequest {
    pub subnet: Subnet,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub range: Option<Subnet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    /// The Raft index of its last change.
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
    pub spec: NetworkSpec,
    /// Filled when the create op applies.
    pub ipam: Ipam,
    /// The VXLAN network identifier its traffic between nodes carries.
    pub vni: u32,
    /// The address each node uses on the network (its VIPs are reached
    /// through it, and connections it forwards come from it), given when
    /// a task of the network is first assigned to the node.
    #[serde(default)]
    pub node_addrs: BTreeMap<String, Ipv4Addr>,
}

impl Network {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn is_ingress(&self) -> bool {
        self.spec.ingress
    }

    /// The MTU its interfaces get: the option when set, else the node
    /// decides (its uplink's less the VXLAN header).
    pub fn mtu(&self) -> Option<u32> {
        self.spec
            .options
            .get(MTU_OPTION)
            .and_then(|m| m.parse().ok())
    }

    /// The driver options Docker shows: the user's and the VXLAN identifier
    /// (none on ingress, whose traffic the routing mesh carries).
    pub fn driver_options(&self) -> BTreeMap<String, String> {
        let mut options = self.spec.options.clone();
        if !self.is_ingress() {
            options.insert(VXLAN_OPTION.to_string(), self.vni.to_string());
        }
        options
    }

    /// `ip` with the network's prefix, as Docker shows an address on a
    /// network (`10.0.1.5/24`).
    pub fn cidr(&self, ip: Ipv4Addr) -> String {
        format!("{ip}/{}", self.ipam.subnet.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(s: &str) -> Subnet {
        Subnet::parse(s).unwrap()
    }

    #[test]
    fn subnets_parse_as_docker_wants_them() {
        assert_eq!(subnet("10.0.1.0/24").to_string(), "10.0.1.0/24");
        assert_eq!(subnet("0.0.0.0/0").size(), 1 << 32);
        for bad in [
            "10.0.1.0",
            "10.0.1/24",
            "10.0.1.0/33",
            "x/24",
            "10.0.1.0/-1",
        ] {
            let e = Subnet::parse(bad).unwrap_err();
            assert_eq!(e, format!("invalid CIDR address: {bad}"));
        }
        assert!(Subnet::parse("10.0.1.7/24")
            .unwrap_err()
            .contains("host bits set (the subnet is 10.0.1.0/24)"));
        assert!(Subnet::parse("fd00::/64").unwrap_err().contains("IPv6"));
    }

    #[test]
    fn overlap_and_containment() {
        let a = subnet("10.0.0.0/16");
        assert!(a.overlaps(&subnet("10.0.7.0/24")));
        assert!(subnet("10.0.7.0/24").overlaps(&a));
        assert!(!a.overlaps(&subnet("10.1.0.0/24")));
        assert!(a.contains("10.0.255.255".parse().unwrap()));
        assert!(!a.contains("10.1.0.0".parse().unwrap()));
        assert_eq!(a.first_host(), "10.0.0.1".parse::<Ipv4Addr>().unwrap());
    }
}
