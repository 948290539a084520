//! Creating and removing swarm networks: Docker's network create request
//! checked (everything Flotilla cannot honour refused, never ignored) and
//! turned into the spec the store allocates for.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use flotilla_store::models::NetworkCreateRequest;
use flotilla_store::networks::{
    IpamRequest, NetworkSpec, Subnet, MTU_OPTION, OVERLAY, VXLAN_OPTION,
};
use flotilla_store::{ids, Kind, Op, Store, StoreError};

use crate::error::{Error, Result};

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

/// The names dockerd keeps for its own networks: never a swarm network's.
const PREDEFINED: [&str; 4] = ["bridge", "host", "none", "default"];

/// Whether a create request is for a swarm network: the overlay driver or
/// swarm scope. Anything else is a local network, the engine's.
pub fn is_swarm_request(req: &NetworkCreateRequest) -> bool {
    let is =
        |v: &Option<String>, want: &str| v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(want));
    is(&req.driver, OVERLAY) || is(&req.scope, "swarm") || req.ingress == Some(true)
}

/// Checks a create request for a swarm network.
pub fn validate(req: NetworkCreateRequest) -> Result<NetworkSpec> {
    let name = req.name.trim().to_string();
    if name.is_empty() {
        return Err(invalid("network name must not be empty"));
    }
    if !valid_name(&name) {
        return Err(invalid(format!(
            "invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    if PREDEFINED.contains(&name.as_str()) {
        return Err(Error::Forbidden(format!(
            "{name} is a pre-defined network and cannot be created"
        )));
    }
    let driver = req.driver.as_deref().unwrap_or(OVERLAY);
    if !driver.is_empty() && !driver.eq_ignore_ascii_case(OVERLAY) {
        return Err(invalid(format!(
            "swarm networks use the overlay driver: driver {driver:?} is not supported by Flotilla (local networks with other drivers are the Docker Engine's: create them without --scope swarm)"
        )));
    }
    if req.config_only == Some(true)
        || req
            .config_from
            .as_ref()
            .is_some_and(|c| c.network.as_deref().is_some_and(|n| !n.is_empty()))
    {
        return Err(invalid(
            "config-only networks (--config-only, --config-from) are not supported by Flotilla yet",
        ));
    }
    if req.enable_ipv6 == Some(true) {
        return Err(invalid(
            "IPv6 networks (--ipv6) are not supported by Flotilla yet",
        ));
    }
    if req.enable_ipv4 == Some(false) {
        return Err(invalid(
            "a swarm network needs IPv4 (--ipv4=false is not supported)",
        ));
    }
    let ingress = req.ingress == Some(true);
    let options = options(req.options.unwrap_or_default(), ingress)?;
    let mut ipam = ipam(req.ipam)?;
    if ingress {
        // An ingress network's subnet is the routing mesh's (what `swarm
        // init` makes it), whose addresses every node puts on its loopback.
        let mesh = flotilla_store::network::mesh_subnet();
        let asked = ipam.get_or_insert(IpamRequest {
            subnet: mesh,
            gateway: None,
            range: None,
        });
        if asked.subnet != mesh {
            return Err(invalid(format!(
                "the ingress network's subnet is the routing mesh's, {mesh}, whose addresses every node puts on its loopback: another subnet ({}) is not supported by Flotilla yet",
                asked.subnet
            )));
        }
        if req.internal == Some(true) {
            return Err(invalid("an ingress network cannot be internal"));
        }
    }
    Ok(NetworkSpec {
        name,
        labels: req.labels.unwrap_or_default().into_iter().collect(),
        options,
        internal: req.internal.unwrap_or(false),
        attachable: req.attachable.unwrap_or(false),
        ingress,
        ipam,
    })
}

/// dockerd's rule for network names.
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// The driver options Flotilla honours: the MTU and the VXLAN identifier.
/// Anything else (`encrypted` among them) is refused, never ignored.
fn options(
    given: std::collections::HashMap<String, String>,
    ingress: bool,
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in given {
        match k.as_str() {
            MTU_OPTION => {
                let mtu: u32 = v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|m| (576..=9000).contains(m))
                    .ok_or_else(|| invalid(format!("invalid {MTU_OPTION} {v:?}: an MTU from 576 to 9000")))?;
                out.insert(k, mtu.to_string());
            }
            VXLAN_OPTION if !ingress => {
                out.insert(k, v);
            }
            "encrypted" => {
                return Err(invalid(
                    "encrypted overlay networks (--opt encrypted) are not supported by Flotilla yet: its traffic between nodes would not be encrypted",
                ))
            }
            _ => {
                return Err(invalid(format!(
                    "network option {k:?} is not supported by Flotilla (supported: {MTU_OPTION}, {VXLAN_OPTION})"
                )))
            }
        }
    }
    Ok(out)
}

fn ipam(ipam: Option<flotilla_store::models::Ipam>) -> Result<Option<IpamRequest>> {
    let Some(ipam) = ipam else { return Ok(None) };
    if let Some(d) = ipam
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "default")
    {
        return Err(invalid(format!(
            "IPAM driver {d:?} is not supported by Flotilla: only the default one"
        )));
    }
    if ipam.options.as_ref().is_some_and(|o| !o.is_empty()) {
        return Err(invalid("IPAM driver options are not supported by Flotilla"));
    }
    let mut configs = ipam.config.unwrap_or_default();
    if configs.len() > 1 {
        return Err(invalid(
            "more than one subnet per network is not supported by Flotilla yet",
        ));
    }
    let Some(config) = configs.pop() else {
        return Ok(None);
    };
    if config
        .auxiliary_addresses
        .as_ref()
        .is_some_and(|a| !a.is_empty())
    {
        return Err(invalid(
            "auxiliary addresses (--aux-address) are not supported by Flotilla yet",
        ));
    }
    let Some(subnet) = config.subnet.as_deref().filter(|s| !s.is_empty()) else {
        if config.gateway.as_deref().is_some_and(|g| !g.is_empty())
            || config.ip_range.as_deref().is_some_and(|r| !r.is_empty())
        {
            return Err(invalid(
                "every ip-range or gateway must have a corresponding subnet",
            ));
        }
        return Ok(None);
    };
    let subnet = Subnet::parse(subnet).map_err(invalid)?;
    let gateway = match config.gateway.as_deref().filter(|g| !g.is_empty()) {
        None => None,
        Some(g) => {
            let ip: Ipv4Addr = g
                .parse()
                .map_err(|_| invalid(format!("ipam configuration: invalid gateway {g}")))?;
            if !subnet.contains(ip) {
                return Err(invalid(format!(
                    "ipam configuration: subnet {subnet} does not contain gateway {ip}"
                )));
            }
            if ip == subnet.addr
                || u64::from(u32::from(ip)) == u64::from(u32::from(subnet.addr)) + subnet.size() - 1
            {
                return Err(invalid(format!(
                    "ipam configuration: gateway {ip} is the subnet's network or broadcast address"
                )));
            }
            Some(ip)
        }
    };
    let range = match config.ip_range.as_deref().filter(|r| !r.is_empty()) {
        None => None,
        Some(r) => {
            let range = Subnet::parse(r)
                .map_err(|e| invalid(format!("ipam configuration: invalid range {r}: {e}")))?;
            if !subnet.contains(range.addr) || range.prefix < subnet.prefix {
                return Err(invalid(format!(
                    "ipam configuration: subnet {subnet} does not contain range {range}"
                )));
            }
            Some(range)
        }
    };
    if subnet.size() < 4 {
        return Err(invalid(format!(
            "subnet {subnet} is too small: a network needs at least a /30"
        )));
    }
    Ok(Some(IpamRequest {
        subnet,
        gateway,
        range,
    }))
}

/// `POST /networks/create` for a swarm network: its new ID.
pub async fn create(store: &Store, spec: NetworkSpec) -> Result<String> {
    let id = ids::new_id();
    store
        .propose_one(Op::CreateNetwork {
            id: id.clone(),
            created_at: ids::now(),
            spec: Box::new(spec),
        })
        .await?;
    Ok(id)
}

/// `DELETE /networks/{id}` of a swarm network (ID, name or ID prefix).
pub async fn remove(store: &Store, key: &str) -> Result<()> {
    let id = store
        .read(|s| s.find_network(key).map(|n| n.id.clone()))
        .ok_or_else(|| Error::not_found(Kind::Network, key))?;
    store.propose_one(Op::RemoveNetwork { id }).await?;
    Ok(())
}

/// `POST /networks/prune`: every swarm network no service uses, ingress
/// aside (as Docker's prune leaves the routing mesh's network alone).
/// The names of those removed.
pub async fn prune(
    store: &Store,
    keep: impl Fn(&flotilla_store::models::Network) -> bool,
) -> Result<Vec<String>> {
    let candidates: Vec<(String, String)> = store.read(|s| {
        s.networks
            .values()
            .filter(|n| !n.is_ingress() && !keep(n))
            .map(|n| (n.id.clone(), n.name().to_string()))
            .collect()
    });
    let mut removed = Vec::new();
    for (id, name) in candidates {
        match store.propose_one(Op::RemoveNetwork { id }).await {
            Ok(_) => removed.push(name),
            // In use: prune leaves it, as Docker's does.
            Err(StoreError::NetworkInUse { .. }) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: serde_json::Value) -> NetworkCreateRequest {
        serde_json::from_value(v).unwrap()
    }

    fn err(v: serde_json::Value) -> String {
        validate(req(v)).unwrap_err().to_string()
    }

    #[test]
    fn a_plain_overlay_network_is_accepted_with_its_fields() {
        let spec = validate(req(serde_json::json!({
            "Name": "front", "Driver": "overlay", "Attachable": true, "Internal": true,
            "Labels": {"a": "b"}, "Options": {MTU_OPTION: "1400"},
            "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.254", "IPRange": "10.9.0.128/25"}]}
        })))
        .unwrap();
        assert_eq!(spec.name, "front");
        assert!(spec.attachable && spec.internal && !spec.ingress);
        assert_eq!(spec.labels["a"], "b");
        let ipam = spec.ipam.unwrap();
        assert_eq!(ipam.subnet.to_string(), "10.9.0.0/24");
        assert_eq!(ipam.gateway, Some(Ipv4Addr::new(10, 9, 0, 254)));
        assert_eq!(ipam.range.unwrap().to_string(), "10.9.0.128/25");
    }

    #[test]
    fn what_flotilla_cannot_honour_is_refused() {
        let cases = [
            (
                serde_json::json!({"Name": "n", "Driver": "overlay", "Options": {"encrypted": ""}}),
                "encrypted",
            ),
            (
                serde_json::json!({"Name": "n", "Driver": "overlay", "Options": {"foo": "1"}}),
                "\"foo\" is not supported",
            ),
            (
                serde_json::json!({"Name": "n", "Driver": "macvlan", "Scope": "swarm"}),
                "driver \"macvlan\"",
            ),
            (
                serde_json::json!({"Name": "n", "Driver": "overlay", "EnableIPv6": true}),
                "IPv6",
            ),
            (
                serde_json::json!({"Name": "bridge", "Driver": "overlay"}),
                "pre-defined",
            ),
            (
                serde_json::json!({"Name": "", "Driver": "overlay"}),
                "must not be empty",
            ),
            (
                serde_json::json!({"Name": "a b", "Driver": "overlay"}),
                "invalid network name",
            ),
            (
                serde_json::json!({"Name": "n", "Driver": "overlay", "IPAM": {"Config": [{"Subnet": "10.0.0.0/33"}]}}),
                "invalid CIDR address: 10.0.0.0/33",
            ),
            (
                serde_json::json!({"Name": "n", "Driver": "overlay", "IPAM": {"Config": [{"Subnet": "10.0.0.0/24", "Gateway": "10.0.1.1"}]}}),
                "does not contain gateway 10.0.1.1",
            ),
            (
                serde_json::json!({"Name": "n", "Driver": "overlay", "IPAM": {"Config": [{"Gateway": "10.0.1.1"}]}}),
                "corresponding subnet",
            ),
            (
                serde_json::json!({"Name": "n", "Driver": "overlay", "IPAM": {"Config": [{"Subnet": "10.0.0.0/24"}, {"Subnet": "10.0.1.0/24"}]}}),
                "more than one subnet",
            ),
            (
                serde_json::json!({"Name": "n", "Driver": "overlay", "IPAM": {"Driver": "dhcp"}}),
                "IPAM driver \"dhcp\"",
            ),
            (
                serde_json::json!({"Name": "n", "Driver": "overlay", "Options": {MTU_OPTION: "9"}}),
                "an MTU from 576",
            ),
            (
                serde_json::json!({"Name": "ingress2", "Driver": "overlay", "Ingress": true, "IPAM": {"Config": [{"Subnet": "10.11.0.0/16"}]}}),
                "routing mesh",
            ),
        ];
        for (body, want) in cases {
            let e = err(body.clone());
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn a_new_ingress_network_takes_the_meshs_subnet() {
        let spec = validate(req(serde_json::json!({
            "Name": "my-ingress", "Driver": "overlay", "Ingress": true
        })))
        .unwrap();
        assert!(spec.ingress);
        assert_eq!(spec.ipam.unwrap().subnet.to_string(), "198.18.0.0/16");
    }

    #[test]
    fn swarm_requests_are_told_from_local_ones() {
        let swarm = |v| is_swarm_request(&req(v));
        assert!(swarm(serde_json::json!({"Name": "n", "Driver": "Overlay"})));
        assert!(swarm(serde_json::json!({"Name": "n", "Scope": "swarm"})));
        assert!(!swarm(serde_json::json!({"Name": "n", "Driver": "bridge"})));
        assert!(!swarm(serde_json::json!({"Name": "n"})));
    }
}
