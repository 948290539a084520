//! Allocation while ops apply: a service's endpoint (ingress ports, a VIP
//! per network), a task's addresses and ports, a node's address on a
//! network, from the pools in `crate::alloc`.

use std::net::Ipv4Addr;

use bollard::models::{EndpointPortConfigPublishModeEnum, EndpointSpecModeEnum};

use super::networks::service_networks;
use crate::alloc::{task_addrs, vips, Allocations, IngressPorts};
use crate::error::{Kind, StoreError};
use crate::models::{Attachment, Service, Task};
use crate::network::mode;
use crate::objects::TaskExt;
use crate::state::State;

impl State {
    /// Fills a service's `Endpoint` from its spec before it is stored:
    /// ingress ports checked against every other service and numbered from
    /// 30000 when the spec leaves them open (keeping the number an earlier
    /// version got); in vip mode, a VIP on the ingress network while it
    /// publishes a port through it and one on each network it is attached
    /// to. Fails before changing anything.
    pub(crate) fn allocate_endpoint(&mut self, service: &mut Service) -> Result<(), StoreError> {
        let id = service.id.clone().unwrap_or_default();
        let previous = self.services.get(&id);
        let spec = service
            .spec
            .as_ref()
            .and_then(|s| s.endpoint_spec.clone())
            .unwrap_or_default();
        let old_ports = previous
            .and_then(|s| s.endpoint.as_ref())
            .and_then(|e| e.ports.clone())
            .unwrap_or_default();

        let others = self
            .services
            .values()
            .filter(|s| s.id.as_deref() != Some(&id));
        let wanted = spec.ports.as_deref().unwrap_or_default();
        // Only a service that publishes ports needs to know the others'.
        let ports = if wanted.is_empty() {
            Vec::new()
        } else {
            IngressPorts::published_by(others).assign(wanted, &old_ports)?
        };

        // As SwarmKit's allocator: a VIP on the ingress network only for a
        // service that publishes a port through it (host-mode ports alone
        // need none), one on each network it is attached to, none in dnsrr
        // mode. A VIP it had on a network it keeps.
        let dnsrr = spec.mode == Some(EndpointSpecModeEnum::DNSRR);
        let ingress = ports
            .iter()
            .any(|p| mode(p) == EndpointPortConfigPublishModeEnum::INGRESS);
        let mut wanted_nets: Vec<String> = Vec::new();
        if ingress {
            let net = self.ingress().ok_or_else(|| {
                StoreError::Invalid(
                    "service needs ingress network, but no ingress network is present".into(),
                )
            })?;
            wanted_nets.push(net.id.clone());
        }
        for net in service_networks(service) {
            if !self.networks.contains_key(&net) {
                return Err(StoreError::not_found(Kind::Network, net));
            }
            if !wanted_nets.contains(&net) {
                wanted_nets.push(net);
            }
        }
        let old_vips = previous.map(vips).unwrap_or_default();
        let mut new_vips = Vec::new();
        if !dnsrr {
            for net in &wanted_nets {
                let kept = old_vips.iter().find(|(n, _)| n == net).map(|(_, ip)| *ip);
                let ip = match kept {
                    Some(ip) => ip,
                    None => match self.allocations.take(net) {
                        Ok(ip) => ip,
                        Err(e) => {
                            self.release_taken(&new_vips, &old_vips);
                            return Err(e);
                        }
                    },
                };
                new_vips.push((net.clone(), ip));
            }
        }
        for (net, ip) in &old_vips {
            if !new_vips.contains(&(net.clone(), *ip)) {
                self.allocations.release(net, *ip);
            }
        }
        let virtual_ips: Vec<_> = new_vips
            .iter()
            .filter_map(|(net, ip)| Some(Allocations::vip(self.networks.get(net)?, *ip)))
            .collect();
        let endpoint = service.endpoint.get_or_insert_with(Default::default);
        // dockerd shows the endpoint spec only once something was allocated
        // for it (`{}` otherwise); the service's own spec is what is read.
        endpoint.spec = Some(if ports.is_empty() {
            Default::default()
        } else {
            spec
        });
        endpoint.ports = (!ports.is_empty()).then_some(ports);
        endpoint.virtual_ips = (!virtual_ips.is_empty()).then_some(virtual_ips);
        Ok(())
    }

    /// Undoes a failed allocation: what was taken for it goes back.
    fn release_taken(&mut self, taken: &[(String, Ipv4Addr)], kept: &[(String, Ipv4Addr)]) {
        for (net, ip) in taken {
            if !kept.contains(&(net.clone(), *ip)) {
                self.allocations.release(net, *ip);
            }
        }
    }

    pub(crate) fn release_service(&mut self, service: &Service) {
        for (net, ip) in vips(service) {
            self.allocations.release(&net, ip);
        }
    }

    /// Gives a new task its address on each network of its service, and
    /// when the service has ports, its ingress address and the ports its
    /// executor must publish. Fails having taken nothing.
    pub(crate) fn allocate_task(&mut self, task: &mut Task) -> Result<(), StoreError> {
        let Some(service) = self.services.get(task.service()) else {
            return Ok(());
        };
        let ports = service
            .endpoint
            .as_ref()
            .and_then(|e| e.ports.clone())
            .unwrap_or_default();
        let nets = task_networks(task);
        let ingress = (!ports.is_empty())
            .then(|| self.ingress().map(|n| n.id.clone()))
            .flatten();
        let mut taken: Vec<(String, Ipv4Addr)> = Vec::new();
        for net in nets.iter().chain(ingress.iter()) {
            match self.allocations.take(net) {
                Ok(ip) => taken.push((net.clone(), ip)),
                Err(e) => {
                    self.release_taken(&taken, &[]);
                    return Err(e);
                }
            }
        }
        if let Some(net) = &ingress {
            task.runtime.addr = taken.pop().filter(|(n, _)| n == net).map(|(_, ip)| ip);
        }
        task.runtime.networks = taken
            .into_iter()
            .map(|(network, addr)| Attachment { network, addr })
            .collect();
        task.runtime.ports = ports;
        Ok(())
    }

    /// A task that stopped for good gives its addresses back (it keeps
    /// showing them, as Docker's do).
    pub(crate) fn release_task(&mut self, task: &Task) {
        for (net, ip) in task_addrs(task, &self.networks) {
            self.allocations.release(&net, ip);
        }
    }

    /// The node's address on each network of a task placed on it, given
    /// the first time one is. Fails having taken nothing.
    pub(crate) fn allocate_node_addrs(
        &mut self,
        node: &str,
        task: &Task,
    ) -> Result<(), StoreError> {
        let needed: Vec<String> = task
            .runtime
            .networks
            .iter()
            .filter(|a| {
                self.networks
                    .get(&a.network)
                    .is_some_and(|n| !n.node_addrs.contains_key(node))
            })
            .map(|a| a.network.clone())
            .collect();
        let mut taken = Vec::new();
        for net in needed {
            match self.allocations.take(&net) {
                Ok(ip) => taken.push((net, ip)),
                Err(e) => {
                    self.release_taken(&taken, &[]);
                    return Err(e);
                }
            }
        }
        for (net, ip) in taken {
            if let Some(n) = self.networks.get_mut(&net) {
                n.node_addrs.insert(node.to_string(), ip);
            }
        }
        Ok(())
    }

    /// A node that leaves the swarm gives its addresses back.
    pub(crate) fn release_node_addrs(&mut self, node: &str) {
        for net in self.networks.values_mut() {
            if let Some(ip) = net.node_addrs.remove(node) {
                self.allocations.release(&net.id, ip);
            }
        }
    }
}

/// The networks a task is to be attached to, by ID, from its spec.
fn task_networks(task: &Task) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let nets = task.spec.as_ref().and_then(|s| s.networks.as_ref());
    for id in nets.into_iter().flatten().filter_map(|n| n.target.clone()) {
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}
