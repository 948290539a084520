//! Ops on swarm networks: creation (subnet, gateway and VXLAN identifier
//! decided as it applies, so every manager decides alike) and removal
//! (refused while a service or a live task of one is attached).

use std::collections::BTreeMap;

use bollard::models::Swarm;

use crate::alloc::{self, subnets};
use crate::error::{Kind, StoreError};
use crate::models::Service;
use crate::networks::{
    Ipam, IpamRequest, Network, NetworkSpec, Subnet, INGRESS_NAME, MAX_VNI, VXLAN_OPTION,
};
use crate::objects::{service_name, TaskExt};
use crate::state::{State, LAYOUT};

use super::not_found;

impl State {
    pub(super) fn apply_create_network(
        &mut self,
        index: u64,
        id: String,
        created_at: String,
        spec: NetworkSpec,
    ) -> Result<(), StoreError> {
        if self.networks.contains_key(&id) {
            return Err(StoreError::IdTaken {
                kind: Kind::Network,
                id,
            });
        }
        if self.networks.values().any(|n| n.name() == spec.name) {
            return Err(StoreError::NameTaken {
                kind: Kind::Network,
                name: spec.name,
            });
        }
        if spec.ingress && self.ingress().is_some() {
            return Err(StoreError::Invalid(
                "ingress network already exists: remove it before creating another".into(),
            ));
        }
        let ipam = self.network_ipam(&spec)?;
        let vni = if spec.ingress {
            0
        } else {
            self.network_vni(&spec)?
        };
        let net = Network {
            id,
            version: index,
            updated_at: created_at.clone(),
            created_at,
            spec,
            ipam,
            vni,
            node_addrs: BTreeMap::new(),
        };
        self.allocations.add_network(&net);
        self.networks.insert(net.id.clone(), net);
        Ok(())
    }

    /// The subnet asked for, checked against every other network's, or
    /// the first free one of the swarm's default address pools.
    fn network_ipam(&self, spec: &NetworkSpec) -> Result<Ipam, StoreError> {
        let taken: Vec<Subnet> = self.networks.values().map(|n| n.ipam.subnet).collect();
        let Some(IpamRequest {
            subnet,
            gateway,
            range,
        }) = spec.ipam.clone()
        else {
            let (pools, size) = self.default_pools();
            let subnet = subnets::first_free(&pools, size, &taken)?;
            return Ok(Ipam {
                subnet,
                gateway: subnet.first_host(),
                range: None,
            });
        };
        if let Some(other) = self
            .networks
            .values()
            .find(|n| n.ipam.subnet.overlaps(&subnet))
        {
            return Err(StoreError::Invalid(format!(
                "invalid pool request: subnet {subnet} overlaps with the subnet {} of network {}",
                other.ipam.subnet,
                other.name()
            )));
        }
        let gateway = gateway.unwrap_or_else(|| subnet.first_host());
        if !subnet.contains(gateway) {
            return Err(StoreError::Invalid(format!(
                "ipam configuration: subnet {subnet} does not contain gateway {gateway}"
            )));
        }
        if let Some(range) = range {
            if !subnet.contains(range.addr) || range.prefix < subnet.prefix {
                return Err(StoreError::Invalid(format!(
                    "ipam configuration: subnet {subnet} does not contain range {range}"
                )));
            }
        }
        Ok(Ipam {
            subnet,
            gateway,
            range,
        })
    }

    /// `swarm init --default-addr-pool`, `--default-addr-pool-mask-length`,
    /// or Docker's defaults.
    fn default_pools(&self) -> (Vec<Subnet>, u8) {
        let cluster = self.cluster.as_ref();
        let mut pools: Vec<Subnet> = cluster
            .and_then(|c| c.default_addr_pool.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|p| Subnet::parse(p).ok())
            .collect();
        if pools.is_empty() {
            pools = Subnet::parse(subnets::DEFAULT_POOL).into_iter().collect();
        }
        let size = cluster
            .and_then(|c| c.subnet_size)
            .and_then(|s| u8::try_from(s).ok())
            .filter(|s| (1..=32).contains(s))
            .unwrap_or(subnets::DEFAULT_SIZE);
        (pools, size)
    }

    /// The VXLAN identifier asked for (Docker's `vxlanid_list` option), if
    /// free, or the lowest free one.
    fn network_vni(&self, spec: &NetworkSpec) -> Result<u32, StoreError> {
        let Some(asked) = spec.options.get(VXLAN_OPTION) else {
            return self.allocations.free_vni();
        };
        let vni = asked
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|v| (1..=MAX_VNI).contains(v))
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "invalid {VXLAN_OPTION} {asked:?}: one VXLAN identifier from 1 to {MAX_VNI}"
                ))
            })?;
        if self.allocations.vni_taken(vni) {
            return Err(StoreError::Invalid(format!(
                "VXLAN identifier {vni} is in use by another network"
            )));
        }
        Ok(vni)
    }

    /// A network goes once no service is attached to it (ingress: once no
    /// service publishes a port through it) and no live task of a service
    /// is on it.
    pub(super) fn apply_remove_network(&mut self, id: &str) -> Result<(), StoreError> {
        let net = self
            .networks
            .get(id)
            .ok_or_else(|| not_found(Kind::Network, id))?;
        let in_use = |svc: &Service| {
            if net.is_ingress() {
                uses_ingress(svc)
            } else {
                service_networks(svc).iter().any(|n| n == id)
            }
        };
        let live_task = || {
            self.tasks.values().find(|t| {
                alloc::holds_addresses(t)
                    && t.desired() <= bollard::models::TaskState::RUNNING
                    && self.services.contains_key(t.service())
                    && t.runtime.networks.iter().any(|a| a.network == id)
            })
        };
        let user = self
            .services
            .values()
            .find(|s| in_use(s))
            .or_else(|| live_task().and_then(|t| self.services.get(t.service())));
        if let Some(svc) = user {
            return Err(StoreError::NetworkInUse {
                network: net.name().to_string(),
                service_name: service_name(svc).to_string(),
                service_id: svc.id.clone().unwrap_or_default(),
            });
        }
        if let Some(net) = self.networks.remove(id) {
            self.allocations.remove_network(&net);
        }
        Ok(())
    }

    /// The ingress network a new swarm gets, as Docker's `swarm init`
    /// makes one. Its ID derives from the swarm's, so every manager
    /// (and a replay of the log) makes the same; its subnet is the routing
    /// mesh's, whose addresses every node puts on its loopback.
    pub(super) fn create_ingress(&mut self, index: u64, swarm: &Swarm) {
        let seed = format!("{}/ingress", swarm.id.as_deref().unwrap_or_default());
        let created = swarm.created_at.clone().unwrap_or_default();
        let subnet = crate::network::mesh_subnet();
        let net = Network {
            id: crate::ids::derived_id(&seed),
            version: index,
            created_at: created.clone(),
            updated_at: created,
            spec: NetworkSpec {
                name: INGRESS_NAME.to_string(),
                ingress: true,
                ipam: Some(IpamRequest {
                    subnet,
                    gateway: None,
                    range: None,
                }),
                ..Default::default()
            },
            ipam: Ipam {
                subnet,
                gateway: subnet.first_host(),
                range: None,
            },
            vni: 0,
            node_addrs: BTreeMap::new(),
        };
        self.allocations.add_network(&net);
        self.networks.insert(net.id.clone(), net);
        self.layout = LAYOUT;
    }

    /// A state written before swarm networks existed: its swarm gets the
    /// ingress network it would have had, and the VIPs its services got
    /// on the unnamed service network are the ingress network's.
    pub(crate) fn upgrade_layout(&mut self) {
        if let Some(swarm) = self.cluster.clone() {
            if self.ingress().is_none() {
                self.create_ingress(crate::objects::version_of(&swarm.version), &swarm);
            }
        }
        if let Some(ingress) = self.ingress().map(|n| n.id.clone()) {
            for svc in self.services.values_mut() {
                let vips = svc.endpoint.as_mut().and_then(|e| e.virtual_ips.as_mut());
                for vip in vips.into_iter().flatten() {
                    if vip.network_id.as_deref() == Some(INGRESS_NAME) {
                        vip.network_id = Some(ingress.clone());
                    }
                }
            }
        }
        self.layout = LAYOUT;
    }
}

/// The networks a service's tasks are attached to, by ID, in order.
pub fn service_networks(svc: &Service) -> Vec<String> {
    svc.spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.networks.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|n| n.target.clone())
        .collect()
}

/// Whether a service publishes a port through the routing mesh.
pub fn uses_ingress(svc: &Service) -> bool {
    svc.endpoint
        .as_ref()
        .and_then(|e| e.ports.as_ref())
        .into_iter()
        .flatten()
        .any(|p| {
            crate::network::mode(p) == bollard::models::EndpointPortConfigPublishModeEnum::INGRESS
        })
}
