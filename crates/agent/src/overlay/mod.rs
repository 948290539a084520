//! This node's share of the swarm's overlay networks: for each network
//! with a task here, a bridge (the Docker Engine's, see [`engine`]) with a
//! VXLAN device carrying its traffic to the other nodes, forwarding
//! entries programmed from the routing table (never learned), the
//! service VIPs balanced by the kernel, isolation from the node's other
//! networks, and the node's DNS server at its address there.
//!
//! [`plan`] decides (pure), [`host`] and [`engine`] carry it out.
//! [`Overlay::attach`] is what the docker executor asks before it creates
//! a task's container: the network set up on this node, and where the
//! container goes on it.

pub mod engine;
pub mod host;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use flotilla_net::Dns;
use flotilla_store::models::Task;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::exec::{Attached, NetworkAttacher};
use crate::session::Routes;
use plan::LocalNetwork;

/// How long a task being prepared waits for the routing table to show its
/// network with this node's address on it (the same write that placed the
/// task here gave the address; the table follows within milliseconds).
const ATTACH_WAIT: Duration = Duration::from_secs(15);

/// After a failed apply the same table is tried again this often.
const RETRY: Duration = Duration::from_secs(3);

pub struct Overlay {
    node_id: String,
    docker: Docker,
    dns: Option<Dns>,
    routes: watch::Receiver<Routes>,
    /// Networks a task being prepared here needs, before it is an
    /// endpoint of the table.
    wanted: Mutex<BTreeSet<String>>,
    /// What is set up, by network ID; one apply at a time.
    state: tokio::sync::Mutex<BTreeMap<String, Applied>>,
    /// The firewall chains last written: written again only when they
    /// change.
    rules: Mutex<Option<String>>,
}

struct Applied {
    net: LocalNetwork,
    dns: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Applied {
    fn drop(&mut self) {
        if let Some(task) = self.dns.take() {
            task.abort();
        }
    }
}

impl Overlay {
    pub fn new(
        node_id: String,
        docker: Docker,
        dns: Option<Dns>,
        routes: watch::Receiver<Routes>,
    ) -> Arc<Overlay> {
        Arc::new(Overlay {
            node_id,
            docker,
            dns,
            routes,
            wanted: Mutex::new(BTreeSet::new()),
            state: tokio::sync::Mutex::new(BTreeMap::new()),
            rules: Mutex::new(None),
        })
    }

    fn lock_rules(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_wanted(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.wanted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the routing table until `stop`. What is set up stays when
    /// the daemon stops: running containers keep their network, and the
    /// next start takes it over.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut routes = self.routes.clone();
        loop {
            let table = routes.borrow_and_update().clone();
            let ok = match self.apply(&table).await {
                Ok(()) => true,
                Err(e) => {
                    warn!("overlay networks: {e}");
                    false
                }
            };
            tokio::select! {
                r = routes.changed() => if r.is_err() { break },
                _ = tokio::time::sleep(RETRY), if !ok => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    }

    /// Brings this node's networks to what `table` asks: new ones set up,
    /// forwarding entries and VIPs moved, firewall chains replaced, those
    /// without a task here any more taken down.
    async fn apply(&self, table: &Routes) -> Result<(), String> {
        let wanted = self.lock_wanted().clone();
        let desired = plan::local_networks(table, &self.node_id, &wanted);
        let mut state = self.state.lock().await;
        let mut errors = Vec::new();
        for net in &desired {
            if let Err(e) = self.sync(&mut state, net, table.vxlan_port).await {
                errors.push(e);
            }
        }
        let gone: Vec<String> = state
            .keys()
            .filter(|id| !desired.iter().any(|n| &n.id == *id))
            .cloned()
            .collect();
        for id in gone {
            match self.take_down(&id).await {
                Ok(()) => {
                    info!(network = %state[&id].net.name, "overlay network taken down on this node");
                    state.remove(&id);
                }
                Err(e) => errors.push(e),
            }
        }
        let ready: Vec<LocalNetwork> = state.values().map(|a| a.net.clone()).collect();
        let rules = plan::iptables_rules(&ready);
        // (The state lock held here keeps two applies from interleaving.)
        let unchanged = self.lock_rules().as_deref() == Some(rules.as_str());
        if !unchanged {
            match host::apply_iptables(&rules).await {
                Ok(()) => *self.lock_rules() = Some(rules),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// One network: set up when new, then its entries and addresses moved
    /// from what was applied to what `net` says.
    async fn sync(
        &self,
        state: &mut BTreeMap<String, Applied>,
        net: &LocalNetwork,
        vxlan_port: u16,
    ) -> Result<(), String> {
        let fresh = !state.contains_key(&net.id);
        if fresh {
            engine::ensure_network(&self.docker, net).await?;
            host::set_up(net, vxlan_port).await?;
            let mut fresh = net.clone();
            fresh.remotes.clear();
            fresh.vips.clear();
            let dns = self.serve_dns(net.node_addr);
            info!(network = %net.name, vni = net.vni, addr = %net.node_addr, "overlay network set up on this node");
            state.insert(net.id.clone(), Applied { net: fresh, dns });
        }
        let Some(applied) = state.get_mut(&net.id) else {
            return Ok(());
        };
        host::sync_remotes(&net.vxlan(), &applied.net.remotes, &net.remotes).await?;
        applied.net.remotes = net.remotes.clone();
        // The addresses are read back and changed only when the VIPs did:
        // most tables change only which tasks run.
        if fresh || !applied.net.vips.keys().eq(net.vips.keys()) {
            let mut addrs: BTreeSet<Ipv4Addr> = net.vips.keys().copied().collect();
            addrs.insert(net.node_addr);
            let subnet = (net.subnet.addr, net.subnet.prefix);
            flotilla_net::LocalAddrs::new(&net.bridge(), subnet)
                .apply(&addrs)
                .await
                .map_err(|e| e.to_string())?;
        }
        applied.net = net.clone();
        Ok(())
    }

    /// The engine's network first: it refuses while a container is still
    /// on it, and then everything stays for the next try.
    async fn take_down(&self, id: &str) -> Result<(), String> {
        engine::remove_network(&self.docker, id).await?;
        host::tear_down(id).await
    }

    /// The node's DNS server at its address on a network, for the tasks
    /// there (answering each by the networks it is on).
    fn serve_dns(&self, addr: Ipv4Addr) -> Option<tokio::task::JoinHandle<()>> {
        let dns = self.dns.clone()?;
        Some(tokio::spawn(async move {
            let at = SocketAddr::new(IpAddr::V4(addr), 53);
            if let Err(e) = dns.run_at(at).await {
                warn!("service DNS at {at}: {e}");
            }
        }))
    }

    /// Waits until the routing table shows every network of `task` with
    /// this node's address on it.
    async fn wait_for_networks(&self, nets: &[String]) -> Result<Routes, String> {
        let mut routes = self.routes.clone();
        let has_all = |t: &Routes| {
            nets.iter().all(|id| {
                t.networks
                    .iter()
                    .any(|n| &n.id == id && n.nodes.iter().any(|x| x.node_id == self.node_id))
            })
        };
        let found = match tokio::time::timeout(ATTACH_WAIT, routes.wait_for(has_all)).await {
            Ok(Ok(t)) => Ok(t.clone()),
            Ok(Err(_)) => Err("the node is stopping".to_string()),
            Err(_) => Err(format!(
                "the routing table did not show this node on network(s) {} within {ATTACH_WAIT:?}",
                nets.join(", ")
            )),
        };
        found
    }
}

/// Everything of the overlay networks on this node goes: what `swarm
/// leave` does once the node's containers are gone (a stop of the daemon
/// keeps it all for the next start).
pub async fn clear_all(docker: &Docker) -> Result<(), String> {
    use bollard::query_parameters::ListNetworksOptions;
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![flotilla_store::networks::LOCAL_LABEL.to_string()],
    )]);
    let ours = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(|e| format!("listing the engine's networks: {e}"))?;
    let mut errors = Vec::new();
    for net in ours {
        let Some(id) = net
            .labels
            .as_ref()
            .and_then(|l| l.get(flotilla_store::networks::LOCAL_LABEL))
        else {
            continue;
        };
        if let Err(e) = engine::remove_network(docker, id).await {
            errors.push(e);
        }
        if let Err(e) = host::tear_down(id).await {
            errors.push(e);
        }
    }
    if let Err(e) = host::remove_iptables().await {
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

#[async_trait]
impl NetworkAttacher for Overlay {
    async fn attach(&self, task: &Task) -> Result<Vec<Attached>, String> {
        let nets: Vec<String> = task
            .runtime
            .networks
            .iter()
            .map(|a| a.network.clone())
            .collect();
        if nets.is_empty() {
            return Ok(Vec::new());
        }
        self.lock_wanted().extend(nets.iter().cloned());
        let result = async {
            let table = self.wait_for_networks(&nets).await?;
            self.apply(&table).await?;
            let state = self.state.lock().await;
            task.runtime
                .networks
                .iter()
                .map(|a| {
                    let net = &state
                        .get(&a.network)
                        .ok_or_else(|| format!("network {} is not set up on this node", a.network))?
                        .net;
                    Ok(Attached {
                        network: net.name.clone(),
                        engine_network: net.engine_network(),
                        addr: a.addr,
                        internal: net.internal,
                        node_addr: net.node_addr,
                    })
                })
                .collect()
        }
        .await;
        let mut wanted = self.lock_wanted();
        for n in &nets {
            wanted.remove(n);
        }
        result
    }
}
