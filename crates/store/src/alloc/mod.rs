//! What the service network hands out while ops apply — published ports,
//! service VIPs, task addresses — so that no two managers can give one port
//! or address twice: every manager applies the same ops in the same order.
//!
//! The allocators are pure and know nothing of the state: [`addrs`] is an
//! address pool over one subnet, [`ports`] the published-port rules, and
//! [`Allocations`] the addresses in use. The glue `apply` calls — read the
//! objects, ask the allocators, write the answer into the service or task —
//! is `ops/allocate.rs`.

mod addrs;
mod ports;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use bollard::models::ServiceEndpointVirtualIps;

use crate::models::{Service, Task};
use crate::network::{service_vip, task_addr, INGRESS, NETWORK};

pub(crate) use addrs::AddrPool;
pub(crate) use ports::IngressPorts;

/// The addresses in use, beside the objects that hold them: never stored,
/// rebuilt from the objects on load. (Ports need no record: the services'
/// endpoints are the record.)
#[derive(Debug, Clone)]
pub(crate) struct Allocations {
    /// The service network's pool: VIPs and task addresses.
    pub(crate) addrs: AddrPool,
}

impl Default for Allocations {
    fn default() -> Self {
        Allocations {
            addrs: AddrPool::new(NETWORK.0, NETWORK.1),
        }
    }
}

impl Allocations {
    pub(crate) fn rebuild(
        services: &BTreeMap<String, Service>,
        tasks: &BTreeMap<String, Task>,
    ) -> Self {
        let vips = services.values().filter_map(service_vip);
        let task_addrs = tasks.values().filter_map(task_addr);
        Allocations {
            addrs: AddrPool::rebuild(NETWORK.0, NETWORK.1, vips.chain(task_addrs)),
        }
    }

    pub(crate) fn release(&mut self, ip: Option<Ipv4Addr>) {
        if let Some(ip) = ip {
            self.addrs.release(ip);
        }
    }

    /// The VIP as a service's endpoint shows it: with its network's prefix.
    pub(crate) fn vip(&self, ip: Ipv4Addr) -> ServiceEndpointVirtualIps {
        ServiceEndpointVirtualIps {
            network_id: Some(INGRESS.to_string()),
            addr: Some(self.addrs.cidr(ip)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
