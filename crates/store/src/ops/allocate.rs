//! Allocation while ops apply: a service's endpoint (ingress ports, VIP)
//! and a task's address and ports, from the pools in `crate::alloc`.

use bollard::models::{EndpointPortConfigPublishModeEnum, EndpointSpecModeEnum};

use crate::alloc::IngressPorts;
use crate::error::StoreError;
use crate::models::{Service, Task};
use crate::network::{mode, service_vip, task_addr};
use crate::objects::TaskExt;
use crate::state::State;

impl State {
    /// Fills a service's `Endpoint` from its spec before it is stored:
    /// ingress ports checked against every other service and numbered from
    /// 30000 when the spec leaves them open (keeping the number an earlier
    /// version got), and a VIP while it has ports in vip mode. Fails before
    /// changing anything.
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
        let old_vip = previous.and_then(service_vip);

        let others = self
            .services
            .values()
            .filter(|s| s.id.as_deref() != Some(&id));
        let wanted = spec.ports.as_deref().unwrap_or_default();
        let ports = IngressPorts::published_by(others).assign(wanted, &old_ports)?;

        // As SwarmKit's allocator: a VIP on the ingress network only for a
        // service that publishes a port through it (host-mode ports alone
        // need none), and never in dnsrr mode.
        let dnsrr = spec.mode == Some(EndpointSpecModeEnum::DNSRR);
        let ingress = ports
            .iter()
            .any(|p| mode(p) == EndpointPortConfigPublishModeEnum::INGRESS);
        let vip = if !ingress || dnsrr {
            self.allocations.release(old_vip);
            None
        } else {
            match old_vip {
                Some(ip) => Some(ip),
                None => Some(self.allocations.addrs.take()?),
            }
        };
        let endpoint = service.endpoint.get_or_insert_with(Default::default);
        // dockerd shows the endpoint spec only once something was allocated
        // for it (`{}` otherwise); the service's own spec is what is read.
        endpoint.spec = Some(if ports.is_empty() {
            Default::default()
        } else {
            spec
        });
        endpoint.ports = (!ports.is_empty()).then_some(ports);
        endpoint.virtual_ips = vip.map(|ip| vec![self.allocations.vip(ip)]);
        Ok(())
    }

    pub(crate) fn release_service(&mut self, service: &Service) {
        self.allocations.release(service_vip(service));
    }

    /// Gives a new task of a service with ports its address and the ports
    /// its executor must publish.
    pub(crate) fn allocate_task(&mut self, task: &mut Task) -> Result<(), StoreError> {
        let Some(service) = self.services.get(task.service()) else {
            return Ok(());
        };
        let ports = service
            .endpoint
            .as_ref()
            .and_then(|e| e.ports.clone())
            .unwrap_or_default();
        if ports.is_empty() {
            return Ok(());
        }
        task.runtime.addr = Some(self.allocations.addrs.take()?);
        task.runtime.ports = ports;
        Ok(())
    }

    pub(crate) fn release_task(&mut self, task: &Task) {
        self.allocations.release(task_addr(task));
    }
}
