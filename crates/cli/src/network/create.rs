//! `network create`: docker's flags, its IPAM consolidation (subnets with
//! their ranges, gateways and auxiliary addresses, with Go's `net` rules for
//! addresses), and the request body the docker CLI sends.

use std::collections::BTreeMap;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::client::{decode, CliError, Client, Result};
use crate::out;

#[derive(Args, Debug, Default)]
pub struct CreateArgs {
    /// Driver to manage the Network
    #[arg(short, long, value_name = "string", default_value = "bridge")]
    pub driver: String,
    /// Set driver specific options
    #[arg(short = 'o', long = "opt", value_name = "map")]
    pub opt: Vec<String>,
    /// Set metadata on a network
    #[arg(long, value_name = "list", value_parser = validate_label)]
    pub label: Vec<String>,
    /// Restrict external access to the network
    #[arg(long)]
    pub internal: bool,
    /// Enable IPv6 networking
    #[arg(long)]
    pub ipv6: bool,
    /// Enable manual container attachment
    #[arg(long)]
    pub attachable: bool,
    /// Create swarm routing-mesh network
    #[arg(long)]
    pub ingress: bool,
    /// Control the network's scope
    #[arg(long, value_name = "string", default_value = "")]
    pub scope: String,
    /// Create a configuration only network
    #[arg(long = "config-only")]
    pub config_only: bool,
    /// The network from which to copy the configuration
    #[arg(long = "config-from", value_name = "string", default_value = "")]
    pub config_from: String,
    /// IP Address Management Driver
    #[arg(long = "ipam-driver", value_name = "string", default_value = "default")]
    pub ipam_driver: String,
    /// Subnet in CIDR format that represents a network segment
    #[arg(long, value_name = "strings", value_delimiter = ',')]
    pub subnet: Vec<String>,
    /// Allocate container ip from a sub-range
    #[arg(long = "ip-range", value_name = "strings", value_delimiter = ',')]
    pub ip_range: Vec<String>,
    /// IPv4 or IPv6 Gateway for the master subnet
    #[arg(long, value_name = "strings", value_delimiter = ',')]
    pub gateway: Vec<String>,
    /// Auxiliary IPv4 or IPv6 addresses used by Network driver
    #[arg(long = "aux-address", value_name = "map")]
    pub aux_address: Vec<String>,
    /// Set IPAM driver specific options
    #[arg(long = "ipam-opt", value_name = "map")]
    pub ipam_opt: Vec<String>,
    #[arg(value_name = "NETWORK")]
    pub name: String,
}

/// docker's `opts.ValidateLabel`.
pub(crate) fn validate_label(value: &str) -> std::result::Result<String, String> {
    let key = value.split_once('=').map_or(value, |(k, _)| k);
    let key = key.trim_start_matches([' ', '\t']);
    if key.is_empty() {
        return Err(format!("invalid label '{value}': empty name"));
    }
    if key.contains([' ', '\t']) {
        return Err(format!("label '{key}' contains whitespaces"));
    }
    Ok(value.to_string())
}

/// docker's `MapOpts` (and `ConvertKVStringsToMap`): "k=v" or a bare "k"
/// (empty value); a later key replaces an earlier one.
pub fn map_opts(values: &[String]) -> BTreeMap<String, String> {
    values
        .iter()
        .map(|v| match v.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (v.clone(), String::new()),
        })
        .collect()
}

/// types.NetworkCreateRequest as Go encodes it: the embedded NetworkCreate's
/// fields in order, then Name; maps are never nil, so `{}` rather than null.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CreateRequest {
    pub check_duplicate: bool,
    pub driver: String,
    pub scope: String,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    pub config_only: bool,
    pub config_from: Option<ConfigReference>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub name: String,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    pub driver: String,
    pub options: BTreeMap<String, String>,
    pub config: Vec<IpamConfig>,
}

/// network.IPAMConfig: every field `omitempty`.
#[derive(Serialize, Debug, Default, Clone, PartialEq)]
pub struct IpamConfig {
    #[serde(rename = "Subnet", skip_serializing_if = "String::is_empty")]
    pub subnet: String,
    #[serde(rename = "IPRange", skip_serializing_if = "String::is_empty")]
    pub ip_range: String,
    #[serde(rename = "Gateway", skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(
        rename = "AuxiliaryAddresses",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub aux_address: BTreeMap<String, String>,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct ConfigReference {
    #[serde(rename = "Network")]
    pub network: String,
}

#[derive(Deserialize, Debug, Default)]
struct CreateResponse {
    #[serde(rename = "Id", default)]
    id: String,
}

pub async fn run(client: &Client, args: CreateArgs) -> Result<()> {
    let request = build_request(&args)?;
    let answer = client.post("/networks/create", Some(&request)).await?;
    let response: CreateResponse = decode(&answer)?;
    // docker 20.10 prints the ID only, not the daemon's Warning.
    out(&format!("{}\n", response.id));
    Ok(())
}

/// The body docker's runCreate sends for these flags.
pub fn build_request(args: &CreateArgs) -> Result<CreateRequest> {
    let config = consolidate_ipam(
        &args.subnet,
        &args.ip_range,
        &args.gateway,
        &map_opts(&args.aux_address),
    )
    .map_err(CliError::Other)?;
    Ok(CreateRequest {
        check_duplicate: true,
        driver: args.driver.clone(),
        scope: args.scope.clone(),
        enable_ipv6: args.ipv6,
        ipam: Ipam {
            driver: args.ipam_driver.clone(),
            options: map_opts(&args.ipam_opt),
            config,
        },
        internal: args.internal,
        attachable: args.attachable,
        ingress: args.ingress,
        config_only: args.config_only,
        config_from: (!args.config_from.is_empty()).then(|| ConfigReference {
            network: args.config_from.clone(),
        }),
        options: map_opts(&args.opt),
        labels: map_opts(&args.label),
        name: args.name.clone(),
    })
}

/// docker's consolidateIpam: groups ranges, gateways and auxiliary addresses
/// under the subnet that contains them, with its checks and messages. Go
/// returns the groups in map order (random); here they keep the subnets'
/// order.
pub fn consolidate_ipam(
    subnets: &[String],
    ranges: &[String],
    gateways: &[String],
    aux_addresses: &BTreeMap<String, String>,
) -> std::result::Result<Vec<IpamConfig>, String> {
    if subnets.len() < ranges.len() || subnets.len() < gateways.len() {
        return Err("every ip-range or gateway must have a corresponding subnet".to_string());
    }
    let mut configs: Vec<IpamConfig> = Vec::new();
    for subnet in subnets {
        for existing in &configs {
            if subnet_matches(subnet, &existing.subnet)?
                || subnet_matches(&existing.subnet, subnet)?
            {
                return Err(
                    "multiple overlapping subnet configuration is not supported".to_string()
                );
            }
        }
        configs.push(IpamConfig {
            subnet: subnet.clone(),
            ..Default::default()
        });
    }
    for range in ranges {
        let mut matched = false;
        for config in configs.iter_mut() {
            if !subnet_matches(&config.subnet, range)? {
                continue;
            }
            if !config.ip_range.is_empty() {
                return Err(format!(
                    "cannot configure multiple ranges ({range}, {}) on the same subnet ({})",
                    config.ip_range, config.subnet
                ));
            }
            config.ip_range = range.clone();
            matched = true;
        }
        if !matched {
            return Err(format!("no matching subnet for range {range}"));
        }
    }
    for gateway in gateways {
        let mut matched = false;
        for config in configs.iter_mut() {
            if !subnet_matches(&config.subnet, gateway)? {
                continue;
            }
            if !config.gateway.is_empty() {
                return Err(format!(
                    "cannot configure multiple gateways ({gateway}, {}) for the same subnet ({})",
                    config.gateway, config.subnet
                ));
            }
            config.gateway = gateway.clone();
            matched = true;
        }
        if !matched {
            return Err(format!("no matching subnet for gateway {gateway}"));
        }
    }
    for (key, address) in aux_addresses {
        let mut matched = false;
        for config in configs.iter_mut() {
            if !subnet_matches(&config.subnet, address)? {
                continue;
            }
            config.aux_address.insert(key.clone(), address.clone());
            matched = true;
        }
        if !matched {
            return Err(format!("no matching subnet for aux-address {address}"));
        }
    }
    Ok(configs)
}

/// docker's subnetMatches: whether `data` (an address, or an address/prefix
/// whose address counts) lies in `subnet`; an address that does not parse
/// matches nothing, as Go's nil IP.
fn subnet_matches(subnet: &str, data: &str) -> std::result::Result<bool, String> {
    let (_, network) = parse_cidr(subnet).map_err(|e| format!("invalid subnet: {e}"))?;
    let ip = if data.contains('/') {
        Some(parse_cidr(data)?.0)
    } else {
        parse_ip(data)
    };
    Ok(network.contains(ip.as_deref()))
}

/// Go's net.IPNet: the network number (4 or 16 bytes) and its mask (4 or 16).
#[derive(Debug, Clone, PartialEq)]
struct IpNet {
    ip: Vec<u8>,
    mask: Vec<u8>,
}

const V4_IN_V6_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// Go's IP.To4: the 4-byte form of an IPv4 (or IPv4-mapped) address.
fn to4(ip: &[u8]) -> Option<&[u8]> {
    match ip.len() {
        4 => Some(ip),
        16 if ip[..12] == V4_IN_V6_PREFIX => Some(&ip[12..]),
        _ => None,
    }
}

impl IpNet {
    /// Go's IPNet.Contains (with networkNumberAndMask).
    fn contains(&self, ip: Option<&[u8]>) -> bool {
        let Some(ip) = ip else {
            return false;
        };
        let network = match to4(&self.ip) {
            Some(v4) => v4,
            None if self.ip.len() == 16 => &self.ip[..],
            None => return false,
        };
        let mask = match self.mask.len() {
            4 if network.len() == 4 => &self.mask[..],
            16 if network.len() == 4 => &self.mask[12..],
            16 => &self.mask[..],
            _ => return false,
        };
        let ip = to4(ip).unwrap_or(ip);
        ip.len() == network.len()
            && network
                .iter()
                .zip(mask)
                .zip(ip)
                .all(|((n, m), i)| n & m == i & m)
    }
}

/// Go's net.ParseIP: 16 bytes (IPv4 mapped), or None.
fn parse_ip(text: &str) -> Option<Vec<u8>> {
    parse_ipv4(text)
        .map(|v4| {
            let mut ip = V4_IN_V6_PREFIX.to_vec();
            ip.extend_from_slice(&v4);
            ip
        })
        .or_else(|| parse_ipv6(text))
}

/// Go's parseIPv4: four decimal fields of at most 255, no leading zeros.
fn parse_ipv4(text: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut fields = text.split('.');
    for byte in out.iter_mut() {
        let field = fields.next()?;
        if field.is_empty()
            || field.len() > 3
            || !field.bytes().all(|b| b.is_ascii_digit())
            || (field.len() > 1 && field.starts_with('0'))
        {
            return None;
        }
        *byte = field.parse().ok()?;
    }
    fields.next().is_none().then_some(out)
}

fn parse_ipv6(text: &str) -> Option<Vec<u8>> {
    if !text.contains(':') {
        return None;
    }
    text.parse::<std::net::Ipv6Addr>()
        .ok()
        .map(|ip| ip.octets().to_vec())
}

/// Go's net.ParseCIDR: the address as written and the network it names,
/// or Go's error text ("invalid CIDR address: ...").
fn parse_cidr(text: &str) -> std::result::Result<(Vec<u8>, IpNet), String> {
    let invalid = || format!("invalid CIDR address: {text}");
    let (address, prefix) = text.split_once('/').ok_or_else(invalid)?;
    let (ip, bits) = match parse_ipv4(address) {
        Some(v4) => (v4.to_vec(), 32),
        None => (parse_ipv6(address).ok_or_else(invalid)?, 128),
    };
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let ones: usize = prefix.parse().map_err(|_| invalid())?;
    if ones > bits {
        return Err(invalid());
    }
    let mask: Vec<u8> = (0..bits / 8)
        .map(|i| {
            let set = ones.saturating_sub(i * 8).min(8);
            (0xffu16 << (8 - set)) as u8
        })
        .collect();
    let network: Vec<u8> = ip.iter().zip(&mask).map(|(a, m)| a & m).collect();
    // Go keeps the parsed address in its 16-byte form.
    let full = if ip.len() == 4 {
        let mut mapped = V4_IN_V6_PREFIX.to_vec();
        mapped.extend_from_slice(&ip);
        mapped
    } else {
        ip
    };
    Ok((full, IpNet { ip: network, mask }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn consolidate(
        subnets: &[&str],
        ranges: &[&str],
        gateways: &[&str],
        aux: &[(&str, &str)],
    ) -> std::result::Result<Vec<IpamConfig>, String> {
        let aux = aux
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        consolidate_ipam(
            &strings(subnets),
            &strings(ranges),
            &strings(gateways),
            &aux,
        )
    }

    #[test]
    fn ipam_groups_under_subnets() {
        let configs = consolidate(
            &["192.168.0.0/16", "10.0.0.0/24"],
            &["192.168.1.0/24"],
            &["10.0.0.1", "192.168.0.1"],
            &[("router", "192.168.0.2"), ("dns", "10.0.0.53")],
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&configs).unwrap(),
            json!([
                {"Subnet": "192.168.0.0/16", "IPRange": "192.168.1.0/24", "Gateway": "192.168.0.1",
                 "AuxiliaryAddresses": {"router": "192.168.0.2"}},
                {"Subnet": "10.0.0.0/24", "Gateway": "10.0.0.1", "AuxiliaryAddresses": {"dns": "10.0.0.53"}}
            ])
        );
        assert_eq!(
            serde_json::to_value(consolidate(&[], &[], &[], &[]).unwrap()).unwrap(),
            json!([])
        );
        let v6 = consolidate(&["2001:db8::/64"], &[], &["2001:db8::1"], &[]).unwrap();
        assert_eq!(v6[0].gateway, "2001:db8::1");
    }

    #[test]
    fn ipam_errors_are_dockers() {
        let err = |s: &[&str], r: &[&str], g: &[&str], a: &[(&str, &str)]| {
            consolidate(s, r, g, a).unwrap_err()
        };
        assert_eq!(
            err(&[], &[], &["10.0.0.1"], &[]),
            "every ip-range or gateway must have a corresponding subnet"
        );
        assert_eq!(
            err(&["10.0.0.0/24"], &["10.0.0.0/25", "10.0.1.0/25"], &[], &[]),
            "every ip-range or gateway must have a corresponding subnet"
        );
        assert_eq!(
            err(&["10.0.0.0/8", "10.1.0.0/16"], &[], &[], &[]),
            "multiple overlapping subnet configuration is not supported"
        );
        assert_eq!(
            err(&["10.0.0.0/24", "10.0.0.0/24"], &[], &[], &[]),
            "multiple overlapping subnet configuration is not supported"
        );
        assert_eq!(
            err(&["10.0.0.0/24"], &["10.1.0.0/25"], &[], &[]),
            "no matching subnet for range 10.1.0.0/25"
        );
        assert_eq!(
            err(&["10.0.0.0/24"], &[], &["10.0.1.1"], &[]),
            "no matching subnet for gateway 10.0.1.1"
        );
        assert_eq!(
            err(&["10.0.0.0/24"], &[], &[], &[("a", "10.0.1.1")]),
            "no matching subnet for aux-address 10.0.1.1"
        );
        assert_eq!(
            err(&["10.0.0.0/24", "10.0.1.0/24"], &["10.0.0.0/25", "10.0.0.128/25"], &[], &[]),
            "cannot configure multiple ranges (10.0.0.128/25, 10.0.0.0/25) on the same subnet (10.0.0.0/24)"
        );
        assert_eq!(
            err(&["10.0.0.0/24", "10.0.1.0/24"], &[], &["10.0.0.1", "10.0.0.2"], &[]),
            "cannot configure multiple gateways (10.0.0.2, 10.0.0.1) for the same subnet (10.0.0.0/24)"
        );
        assert_eq!(
            err(&["10.0.0.0"], &["10.0.0.0/25"], &[], &[]),
            "invalid subnet: invalid CIDR address: 10.0.0.0"
        );
        assert_eq!(
            err(&["10.0.0.0/24"], &["10.0.0.0/33"], &[], &[]),
            "invalid CIDR address: 10.0.0.0/33"
        );
        // An address that does not parse is Go's nil IP: it matches nothing.
        assert_eq!(
            err(&["10.0.0.0/24"], &[], &["10.0.0.x"], &[]),
            "no matching subnet for gateway 10.0.0.x"
        );
        // A lone subnet is not parsed at all, as in docker: the daemon judges it.
        assert_eq!(
            consolidate(&["bogus"], &[], &[], &[]).unwrap()[0].subnet,
            "bogus"
        );
    }

    #[test]
    fn go_address_rules() {
        let net = |cidr: &str| parse_cidr(cidr).unwrap().1;
        let ip = |text: &str| parse_ip(text);
        assert!(net("10.0.0.0/8").contains(ip("10.255.0.1").as_deref()));
        assert!(net("10.0.0.0/8").contains(ip("::ffff:10.1.2.3").as_deref()));
        assert!(!net("10.0.0.0/8").contains(ip("fe80::1").as_deref()));
        // An IPv6 network never holds an IPv4 address, even ::/0.
        assert!(!net("::/0").contains(ip("10.0.0.1").as_deref()));
        assert!(net("::/0").contains(ip("fe80::1").as_deref()));
        // An IPv4-mapped network is an IPv4 one.
        assert!(net("::ffff:10.0.0.0/104").contains(ip("10.9.9.9").as_deref()));
        assert!(net("10.0.0.0/0").contains(ip("192.168.1.1").as_deref()));
        assert!(net("10.1.2.3/32").contains(ip("10.1.2.3").as_deref()));
        assert!(!net("10.1.2.3/32").contains(ip("10.1.2.4").as_deref()));
        assert!(parse_ip("010.0.0.1").is_none());
        assert!(parse_ip("10.0.0.256").is_none());
        assert!(parse_cidr("10.0.0.0/").is_err());
        assert!(parse_cidr("10.0.0.0/+8").is_err());
        assert!(parse_cidr("fe80::/129").is_err());
        assert_eq!(parse_cidr("10.0.0.0/00024").unwrap().1, net("10.0.0.0/24"));
        assert!(parse_cidr("10.0.0.0/99999999999999999999999").is_err());
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CreateArgs,
    }

    fn parse(argv: &[&str]) -> std::result::Result<CreateArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("create").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn request_body_like_dockers() {
        let body =
            serde_json::to_string(&build_request(&parse(&["web"]).unwrap()).unwrap()).unwrap();
        assert_eq!(
            body,
            r#"{"CheckDuplicate":true,"Driver":"bridge","Scope":"","EnableIPv6":false,"IPAM":{"Driver":"default","Options":{},"Config":[]},"Internal":false,"Attachable":false,"Ingress":false,"ConfigOnly":false,"ConfigFrom":null,"Options":{},"Labels":{},"Name":"web"}"#
        );
        let args = parse(&[
            "-d",
            "overlay",
            "--attachable",
            "--internal",
            "--ipv6",
            "--scope",
            "swarm",
            "--label",
            "a=1",
            "--label",
            "b",
            "-o",
            "com.docker.network.driver.mtu=1400",
            "--subnet",
            "10.0.9.0/24,10.0.10.0/24",
            "--gateway",
            "10.0.9.1",
            "--ip-range",
            "10.0.9.128/25",
            "--aux-address",
            "host=10.0.9.2",
            "--ipam-driver",
            "custom",
            "--ipam-opt",
            "x=y",
            "--config-from",
            "base",
            "net",
        ])
        .unwrap();
        let body = serde_json::to_value(build_request(&args).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({
                "CheckDuplicate": true, "Driver": "overlay", "Scope": "swarm", "EnableIPv6": true,
                "IPAM": {"Driver": "custom", "Options": {"x": "y"}, "Config": [
                    {"Subnet": "10.0.9.0/24", "IPRange": "10.0.9.128/25", "Gateway": "10.0.9.1",
                     "AuxiliaryAddresses": {"host": "10.0.9.2"}},
                    {"Subnet": "10.0.10.0/24"}
                ]},
                "Internal": true, "Attachable": true, "Ingress": false, "ConfigOnly": false,
                "ConfigFrom": {"Network": "base"},
                "Options": {"com.docker.network.driver.mtu": "1400"},
                "Labels": {"a": "1", "b": ""}, "Name": "net"
            })
        );
    }

    #[test]
    fn labels_are_validated() {
        assert!(parse(&["--label", "=x", "n"]).is_err());
        assert!(parse(&["--label", "a b=c", "n"]).is_err());
        assert!(parse(&["--label", " a=c", "n"]).is_ok());
        assert!(parse(&[]).is_err());
        assert!(parse(&["a", "b"]).is_err());
    }
}
