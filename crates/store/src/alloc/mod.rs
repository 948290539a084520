//! What the service network hands out while ops apply — published ports,
//! networks' subnets and identifiers, service VIPs, task addresses — so that no two managers can give one port
//! or address twice: every manager applies the same ops in the same order.
//!
//! The allocators are pure and know nothing of the state: [`addrs`] is an
//! address pool over one subnet, [`ports`] the published-port rules,
//! [`subnets`] the subnets of new networks, and [`Allocations`] the
//! addresses and VXLAN identifiers in use. The glue `apply` calls — read the
//! objects, ask the allocators, write the answer into the service or task —
//! is `ops/allocate.rs`.

mod addrs;
mod ports;
pub(crate) mod subnets;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use bollard::models::ServiceEndpointVirtualIps;

use crate::error::StoreError;
use crate::models::{Service, Task};
use crate::networks::Network;
use crate::objects::{is_terminal, TaskExt};

pub(crate) use addrs::AddrPool;
pub(crate) use ports::IngressPorts;

/// The addresses and identifiers in use, beside the objects that hold
/// them: never stored, rebuilt from the objects on load. (Ports need no
/// record: the services' endpoints are the record.)
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Allocations {
    /// One pool per swarm network, ingress included: the gateway, every
    /// node's address, the services' VIPs and the live tasks' addresses.
    pools: BTreeMap<String, AddrPool>,
    vnis: BTreeSet<u32>,
}

impl Allocations {
    pub(crate) fn rebuild(
        networks: &BTreeMap<String, Network>,
        services: &BTreeMap<String, Service>,
        tasks: &BTreeMap<String, std::sync::Arc<Task>>,
    ) -> Self {
        let mut a = Allocations::default();
        for net in networks.values() {
            a.add_network(net);
        }
        for svc in services.values() {
            for (net, ip) in vips(svc) {
                a.reserve(&net, ip);
            }
        }
        for task in tasks.values().filter(|t| holds_addresses(t)) {
            for (net, ip) in task_addrs(task, networks) {
                a.reserve(&net, ip);
            }
        }
        a
    }

    /// A network's pool and identifier, taken.
    pub(crate) fn add_network(&mut self, net: &Network) {
        let mut pool = AddrPool::for_network(&net.ipam);
        for ip in net.node_addrs.values() {
            pool.reserve(*ip);
        }
        self.pools.insert(net.id.clone(), pool);
        if !net.is_ingress() {
            self.vnis.insert(net.vni);
        }
    }

    pub(crate) fn remove_network(&mut self, net: &Network) {
        self.pools.remove(&net.id);
        self.vnis.remove(&net.vni);
    }

    pub(crate) fn vni_taken(&self, vni: u32) -> bool {
        self.vnis.contains(&vni)
    }

    /// The lowest free VXLAN identifier from Docker's first.
    pub(crate) fn free_vni(&self) -> Result<u32, StoreError> {
        (crate::networks::FIRST_VNI..=crate::networks::MAX_VNI)
            .find(|v| !self.vnis.contains(v))
            .ok_or_else(|| StoreError::Invalid("no free VXLAN identifier left".into()))
    }

    /// The lowest free address of network `net`.
    pub(crate) fn take(&mut self, net: &str) -> Result<Ipv4Addr, StoreError> {
        self.pools
            .get_mut(net)
            .ok_or_else(|| StoreError::not_found(crate::error::Kind::Network, net))?
            .take()
    }

    pub(crate) fn reserve(&mut self, net: &str, ip: Ipv4Addr) {
        if let Some(pool) = self.pools.get_mut(net) {
            pool.reserve(ip);
        }
    }

    pub(crate) fn release(&mut self, net: &str, ip: Ipv4Addr) {
        if let Some(pool) = self.pools.get_mut(net) {
            pool.release(ip);
        }
    }

    /// A VIP as a service's endpoint shows it: with its network's prefix.
    pub(crate) fn vip(net: &Network, ip: Ipv4Addr) -> ServiceEndpointVirtualIps {
        ServiceEndpointVirtualIps {
            network_id: Some(net.id.clone()),
            addr: Some(net.cidr(ip)),
        }
    }
}

/// A service's VIPs: (network id, address).
pub(crate) fn vips(svc: &Service) -> Vec<(String, Ipv4Addr)> {
    svc.endpoint
        .as_ref()
        .and_then(|e| e.virtual_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let ip = v.addr.as_deref()?.split('/').next()?.parse().ok()?;
            Some((v.network_id.clone()?, ip))
        })
        .collect()
}

/// Whether a task's addresses are still its own: until it stops for good
/// (then they go back to the pools, as SwarmKit frees a dead task's, and
/// the task keeps showing what it had).
pub(crate) fn holds_addresses(task: &Task) -> bool {
    !is_terminal(task.state())
}

/// A task's addresses: (network id, address), its ingress one included.
pub(crate) fn task_addrs(
    task: &Task,
    networks: &BTreeMap<String, Network>,
) -> Vec<(String, Ipv4Addr)> {
    let ingress = task
        .runtime
        .addr
        .and_then(|ip| Some((ingress_of(networks)?.id.clone(), ip)));
    task.runtime
        .networks
        .iter()
        .map(|a| (a.network.clone(), a.addr))
        .chain(ingress)
        .collect()
}

/// The swarm's ingress network, if it has one.
pub(crate) fn ingress_of(networks: &BTreeMap<String, Network>) -> Option<&Network> {
    networks.values().find(|n| n.is_ingress())
}

#[cfg(test)]
pub(crate) mod tests;
