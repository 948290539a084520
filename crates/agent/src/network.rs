//! The node's share of the service network: the routing mesh (published
//! ports on every address, service VIPs and task addresses; in the
//! kernel's NAT where it can be set up, else the user-space proxy, see
//! [`MeshMode`]), the DNS server
//! and the local addresses they listen on, and the guard on its tasks'
//! ingress host ports (`crate::port_guard`), all following the routing
//! table the dispatcher sends.
//!
//! The translation from the cluster's table to the mesh's and the DNS
//! server's tables is pure ([`tables`]); [`NodeNetwork::run`] applies it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use flotilla_net::{
    ClientAddr, ClientPath, Dns, DnsService, DnsTable, Endpoint, EndpointMode, KernelMesh,
    LocalAddrs, Mesh, MeshError, MeshTable, Protocol, PublishedPort,
};
use flotilla_store::network::{RoutingTable, ServiceRoutes, Transport, DNS_ADDR, NETWORK};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::port_guard::{self, Lingering};
use crate::session::Routes;

/// After a failed apply (a port in use, addresses refused) the same table
/// is tried again this often.
const RETRY: Duration = Duration::from_secs(5);

/// Every node gets the same routing table from the dispatcher at about the
/// same time. A task this node stops leaves the table, and once this node
/// has applied the table without it, the other nodes get this long to do
/// the same and to finish the connections they were opening to it. (Docker
/// sleeps 2 s here for its gossip to converge; our tables come straight
/// from the leader.)
const DRAIN_SETTLE: Duration = Duration::from_millis(250);

/// The longest a stopping task waits for the table to drop it: a node cut
/// off from the managers gets no new table at all.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Where published ports listen: 0.0.0.0 on a node.
    pub bind_ip: IpAddr,
    /// Put VIPs, task addresses and the DNS server on this node's loopback
    /// (needs CAP_NET_ADMIN). Off, only published ports are served: for
    /// several daemons sharing one network namespace (tests).
    pub service_addrs: bool,
    /// Which routing mesh serves the routes (`--mesh`).
    pub mesh: MeshMode,
    /// Keep clients' addresses through the mesh (`--mesh-client-addr`):
    /// off, a connection sent to another node's task comes from this
    /// node's address, as before (for a network that cannot carry the
    /// tunnel, and to measure what it costs: bench/mesh-client-addr.sh).
    pub client_addr: bool,
}

/// Which routing mesh a node runs (`flotilla daemon --mesh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MeshMode {
    /// The kernel's NAT where it can be set up, else the user-space proxy.
    #[default]
    Auto,
    /// The kernel's NAT; where it cannot be set up, the node says so as an
    /// error and runs the proxy all the same (published ports keep working).
    Kernel,
    /// The user-space proxy.
    Userspace,
}

/// The routing mesh this node runs: the same table either way.
enum MeshPath {
    /// The user-space proxy (crates/net `Mesh`): works everywhere.
    Proxy(Mesh),
    /// The kernel's NAT (crates/net `KernelMesh`): no copy through the
    /// daemon, but no passive failover (docs/network.md). The published
    /// ports that speak the PROXY protocol are the proxy's beside it.
    Kernel(KernelMesh, Mesh),
}

impl MeshPath {
    /// The kernel path where `cfg` allows it and it can be set up; else
    /// the proxy, with one line saying why.
    async fn choose(cfg: &NetworkConfig) -> MeshPath {
        let proxy = || MeshPath::Proxy(Mesh::new(cfg.bind_ip));
        match cfg.mesh {
            MeshMode::Userspace => {
                info!("routing mesh: user-space proxy (--mesh userspace)");
                return proxy();
            }
            _ if !cfg.service_addrs => {
                // Daemons sharing a namespace would overwrite each other's
                // NAT rules; each proxy binds only its own ports.
                let why = "daemons sharing a network namespace (--no-service-addrs) cannot share its NAT rules";
                if cfg.mesh == MeshMode::Kernel {
                    error!(
                        "routing mesh: --mesh kernel refused: {why}; using the user-space proxy"
                    );
                } else {
                    info!("routing mesh: user-space proxy: {why}");
                }
                return proxy();
            }
            _ => {}
        }
        let guard = flotilla_net::kernel::AddrGuard {
            network: NETWORK,
            interfaces: crate::overlay::host::SERVICE_NETWORK_FROM
                .iter()
                .map(|dev| dev.to_string())
                .collect(),
            // Overlay bridges: their VIPs are the overlay's NAT's.
            not_ours: vec!["flo-+".to_string()],
        };
        match KernelMesh::start(cfg.bind_ip, Some(guard)).await {
            Ok(kernel) => {
                info!("routing mesh: in the kernel (iptables NAT, per-connection balancing)");
                MeshPath::Kernel(kernel, Mesh::new(cfg.bind_ip))
            }
            Err(e) if cfg.mesh == MeshMode::Kernel => {
                error!(
                    "routing mesh: --mesh kernel cannot be set up: {e}; using the user-space proxy"
                );
                proxy()
            }
            Err(e) => {
                warn!("routing mesh: user-space proxy: the kernel path cannot be set up: {e}");
                proxy()
            }
        }
    }

    async fn apply(&self, table: MeshTable) -> Result<(), MeshError> {
        match self {
            MeshPath::Proxy(mesh) => mesh.apply(table).await,
            MeshPath::Kernel(kernel, proxy) => {
                let mut table = table;
                let proxied = table.split_off_proxied();
                let nat = kernel.apply(table).await;
                match (nat, proxy.apply(proxied).await) {
                    (Err(MeshError::Ports(mut a)), Err(MeshError::Ports(b))) => {
                        a.extend(b);
                        Err(MeshError::Ports(a))
                    }
                    (Err(e), _) | (Ok(()), Err(e)) => Err(e),
                    (Ok(()), Ok(())) => Ok(()),
                }
            }
        }
    }

    async fn remove_endpoint(&self, task_id: &str) {
        match self {
            MeshPath::Proxy(mesh) => mesh.remove_endpoint(task_id),
            MeshPath::Kernel(kernel, proxy) => {
                proxy.remove_endpoint(task_id);
                kernel.remove_endpoint(task_id).await
            }
        }
    }

    fn in_kernel(&self) -> bool {
        matches!(self, MeshPath::Kernel(..))
    }

    async fn shutdown(&self) {
        match self {
            MeshPath::Proxy(mesh) => mesh.shutdown().await,
            MeshPath::Kernel(kernel, proxy) => {
                proxy.shutdown().await;
                kernel.shutdown().await
            }
        }
    }
}

/// The mesh of this node, shared with the worker so a task is drained
/// before its workload stops.
pub struct NodeNetwork {
    mesh: MeshPath,
    /// Both set only when the node serves service addresses.
    dns: Option<Arc<Dns>>,
    addrs: Option<LocalAddrs>,
    dns_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The table this node applied last, and when each task recently left
    /// it: what [`NodeNetwork::drain`] waits on.
    applied: watch::Sender<Routes>,
    left: Mutex<HashMap<String, Instant>>,
    /// The guard on this node's tasks' ingress host ports: only where the
    /// node runs its service network (root, its own namespace).
    guard: Option<tokio::sync::Mutex<Guard>>,
    /// Keeping clients' addresses through the mesh: same condition.
    client: tokio::sync::Mutex<ClientSlot>,
    /// Why the tunnel last could not follow a table: said once.
    client_error: Mutex<Option<String>>,
}

/// `--mesh-client-addr=false` keeps the mesh as it was before clients kept
/// their addresses (see `NetworkConfig::client_addr`).
fn client_slot(keep: bool) -> ClientSlot {
    if keep {
        ClientSlot::Untried
    } else {
        info!("routing mesh: clients' addresses are not kept (--mesh-client-addr=false)");
        ClientSlot::Off
    }
}

/// Keeping clients' addresses (`flotilla_net::ClientAddr`): set up with the
/// first table that says which node this is (its address is the tunnel's
/// end), again when that address changes.
enum ClientSlot {
    Untried,
    On(ClientAddr),
    /// It cannot be set up here (said once): connections to other nodes'
    /// tasks come from this node's address.
    Off,
}

/// What the task-port guard wrote and still holds.
#[derive(Default)]
struct Guard {
    lingering: Lingering,
    /// The rules last written: written again only when they change.
    written: Option<String>,
    /// Why the guard last could not follow a table: said once.
    said: Option<String>,
    /// No iptables on this node: the guard is off for good.
    off: bool,
}

impl Guard {
    fn say(&mut self, why: String) {
        if self.said.as_ref() != Some(&why) {
            warn!("task ports: {why}");
            self.said = Some(why);
        }
    }
}

/// What one routing table means for this node.
#[derive(Debug, Default)]
pub struct Tables {
    pub mesh: MeshTable,
    pub dns: DnsTable,
    /// Addresses to make local: every VIP and task address.
    pub addrs: BTreeSet<Ipv4Addr>,
}

fn protocol(t: Transport) -> Protocol {
    match t {
        Transport::Tcp => Protocol::Tcp,
        Transport::Udp => Protocol::Udp,
    }
}

/// Endpoints of a service's tasks for one target port.
fn endpoints(service: &ServiceRoutes, transport: Transport, target: u16) -> Vec<Endpoint> {
    service
        .tasks
        .iter()
        .filter_map(|task| {
            let port = task
                .ports
                .iter()
                .find(|p| p.transport == transport && p.target == target)?;
            Some(Endpoint {
                task_id: task.id.clone(),
                addr: SocketAddr::new(task.node_addr, port.host_port),
                healthy: true,
            })
        })
        .collect()
}

/// The mesh routes, DNS names and local addresses a routing table asks
/// for; `service_addrs` off leaves out everything but published ports.
pub fn tables(table: &RoutingTable, service_addrs: bool) -> Tables {
    let mut out = Tables::default();
    out.mesh.set_source(table.own_addr);
    for service in &table.services {
        let port = |transport, published, target| PublishedPort {
            service_id: service.id.clone(),
            protocol: protocol(transport),
            published,
            target,
        };
        for p in service.ports.iter().filter(|p| p.ingress) {
            let found = endpoints(service, p.transport, p.target);
            if let Err(e) = out
                .mesh
                .insert(port(p.transport, p.published, p.target), found)
            {
                warn!("routing mesh: {e}");
            }
        }
        for (published, version) in &service.proxy_protocol {
            let version = match version {
                1 => flotilla_net::ProxyVersion::V1,
                _ => flotilla_net::ProxyVersion::V2,
            };
            out.mesh.set_proxy_protocol(*published, version);
        }
        if service_addrs {
            // Each target port once: two published ports may share it.
            let targets: BTreeSet<(Transport, u16)> = service
                .ports
                .iter()
                .map(|p| (p.transport, p.target))
                .collect();
            if let Some(vip) = service.vip {
                out.addrs.insert(vip);
                for &(transport, target) in &targets {
                    let found = endpoints(service, transport, target);
                    let route = port(transport, target, target);
                    if let Err(e) = out.mesh.insert_at(IpAddr::V4(vip), route, found) {
                        warn!("routing mesh: {e}");
                    }
                }
            }
            for task in &service.tasks {
                let Some(addr) = task.addr else { continue };
                out.addrs.insert(addr);
                for &(transport, target) in &targets {
                    let found: Vec<Endpoint> = endpoints(service, transport, target)
                        .into_iter()
                        .filter(|e| e.task_id == task.id)
                        .collect();
                    let route = port(transport, target, target);
                    if let Err(e) = out.mesh.insert_at(IpAddr::V4(addr), route, found) {
                        warn!("routing mesh: {e}");
                    }
                }
            }
            out.dns.insert(DnsService {
                name: service.name.clone(),
                endpoint_mode: match service.vip {
                    Some(vip) if !service.dnsrr => EndpointMode::Vip(IpAddr::V4(vip)),
                    _ => EndpointMode::Dnsrr,
                },
                tasks: service
                    .tasks
                    .iter()
                    .filter_map(|t| t.addr.map(IpAddr::V4))
                    .collect(),
            });
        }
    }
    if service_addrs {
        overlay_views(table, &mut out.dns);
    }
    out
}

/// What a task on overlay networks resolves: the services of its networks
/// (each by its name and aliases, to its VIP there or its tasks' addresses
/// there) and `tasks.<name>`; names of other networks do not resolve. Each
/// of the task's addresses is a client of the view, since it may ask from
/// any of them.
fn overlay_views(table: &RoutingTable, dns: &mut DnsTable) {
    let mut networks_of: BTreeMap<&str, (BTreeSet<usize>, Vec<IpAddr>)> = BTreeMap::new();
    for (i, net) in table.networks.iter().enumerate() {
        for e in &net.endpoints {
            let entry = networks_of.entry(e.task_id.as_str()).or_default();
            entry.0.insert(i);
            entry.1.push(IpAddr::V4(e.addr));
        }
    }
    let mut views: BTreeMap<BTreeSet<usize>, Vec<IpAddr>> = BTreeMap::new();
    for (nets, addrs) in networks_of.into_values() {
        views.entry(nets).or_default().extend(addrs);
    }
    for (nets, clients) in views {
        let mut services = Vec::new();
        for net in nets.iter().map(|i| &table.networks[*i]) {
            for svc in &net.services {
                let tasks: Vec<IpAddr> = svc.tasks.iter().map(|t| IpAddr::V4(*t)).collect();
                let endpoint_mode = match svc.vip {
                    Some(vip) => EndpointMode::Vip(IpAddr::V4(vip)),
                    None => EndpointMode::Dnsrr,
                };
                for name in &svc.names {
                    services.push(DnsService {
                        name: name.clone(),
                        endpoint_mode,
                        tasks: tasks.clone(),
                    });
                }
            }
        }
        dns.insert_view(clients, services);
    }
}

impl NodeNetwork {
    /// Sets the node up: with service addresses on, clears what a killed
    /// daemon left, puts the DNS address on loopback and starts the DNS
    /// server. When that fails (no CAP_NET_ADMIN, no `ip`), says why and
    /// goes on with published ports only.
    pub async fn start(cfg: NetworkConfig) -> Arc<NodeNetwork> {
        let mut dns = None;
        let mut addrs = None;
        let mut dns_task = None;
        let mut guard = None;
        if !cfg.service_addrs {
            info!("task ports: not guarded without the service network (--no-service-addrs): whoever reaches this node reaches its tasks' ingress host ports");
        } else {
            let local = LocalAddrs::new("lo", NETWORK);
            let ready = match local.clear().await {
                Ok(()) => local.apply(&BTreeSet::from([DNS_ADDR])).await,
                Err(e) => Err(e),
            };
            match ready {
                Ok(()) => {
                    let network = format!("{}/{}", NETWORK.0, NETWORK.1);
                    if let Err(e) = crate::overlay::host::guard_service_network(&network).await {
                        warn!("service network: {e}; its addresses answer on every interface");
                    }
                    let server = Arc::new(Dns::new(SocketAddr::new(IpAddr::V4(DNS_ADDR), 53)));
                    let serving = server.clone();
                    dns_task = Some(tokio::spawn(async move {
                        if let Err(e) = serving.run().await {
                            warn!("service DNS: {e}");
                        }
                    }));
                    dns = Some(server);
                    addrs = Some(local);
                    guard = Some(tokio::sync::Mutex::new(Guard::default()));
                }
                Err(e) => warn!(
                    "service network: {e}; only published ports work on this node (no VIPs, task addresses or DNS), and its tasks' ingress host ports are not guarded"
                ),
            }
        }
        let mesh = MeshPath::choose(&cfg).await;
        Arc::new(NodeNetwork {
            mesh,
            dns,
            addrs,
            dns_task: Mutex::new(dns_task),
            applied: watch::Sender::new(Routes::default()),
            left: Mutex::new(HashMap::new()),
            guard,
            client: tokio::sync::Mutex::new(client_slot(cfg.client_addr)),
            client_error: Mutex::new(None),
        })
    }

    /// The DNS server, when this node serves one: the overlay networks
    /// serve it at the node's address on each of them too.
    pub fn dns(&self) -> Option<Dns> {
        self.dns.as_ref().map(|d| (**d).clone())
    }

    /// Where containers should send DNS queries, when this node serves them.
    pub fn resolver(&self) -> Option<IpAddr> {
        self.dns.as_ref().map(|_| IpAddr::V4(DNS_ADDR))
    }

    /// Takes a task out of every route before its workload stops, then
    /// waits until the other nodes' meshes have had the table without it
    /// for [`DRAIN_SETTLE`]. A task that never took traffic returns at
    /// once.
    ///
    /// The proxy takes it out of this node's mesh at once (a swap of its
    /// endpoint set). The kernel path waits for the table that drops it
    /// (at most [`DRAIN_WAIT`], then takes it out itself): that table
    /// usually brings the task's replacement too, and one write of it
    /// takes the one out and puts the other in, where a write of the drain
    /// first would leave a route with no endpoint until the table's own
    /// write (tens of milliseconds), refusing connections. Either way the
    /// task is out of this node's mesh before its workload stops.
    pub async fn drain(&self, task_id: &str) {
        if !self.mesh.in_kernel() {
            self.mesh.remove_endpoint(task_id).await;
        }
        let mut applied = self.applied.subscribe();
        let routed = applied.wait_for(|t| !lists(t, task_id));
        if lists(&self.applied.borrow(), task_id)
            && tokio::time::timeout(DRAIN_WAIT, routed).await.is_err()
        {
            self.mesh.remove_endpoint(task_id).await;
            warn!(
                task = task_id,
                "the routing table still lists a stopping task; stopping it anyway"
            );
            return;
        }
        // A no-op when the table took it out (the kernel path's usual case).
        self.mesh.remove_endpoint(task_id).await;
        let left = self.lock_left().get(task_id).copied();
        if let Some(at) = left {
            tokio::time::sleep_until(at + DRAIN_SETTLE).await;
        }
    }

    fn lock_client_error(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.client_error.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_left(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.left.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the table just applied and which tasks it dropped.
    fn applied(&self, table: Routes) {
        let now = Instant::now();
        let kept: HashSet<&str> = table
            .services
            .iter()
            .flat_map(|s| &s.tasks)
            .map(|t| t.id.as_str())
            .collect();
        let before = self.applied.borrow().clone();
        let mut left = self.lock_left();
        left.retain(|_, at| now.duration_since(*at) < DRAIN_SETTLE * 4);
        for task in before.services.iter().flat_map(|s| &s.tasks) {
            if !kept.contains(task.id.as_str()) {
                left.insert(task.id.clone(), now);
            }
        }
        drop(left);
        self.applied.send_replace(table);
    }

    /// Follows the routing table until `stop`; then closes every port and
    /// removes the addresses it added.
    pub async fn run(
        self: Arc<Self>,
        mut routes: watch::Receiver<Routes>,
        mut stop: watch::Receiver<bool>,
    ) {
        let service_addrs = self.addrs.is_some();
        let mut current: BTreeSet<Ipv4Addr> = BTreeSet::from([DNS_ADDR]);
        loop {
            let table = routes.borrow_and_update().clone();
            let ok = self.apply(&table, service_addrs, &mut current).await;
            self.applied(table.clone());
            // Until the next table: the guard lets go of a stopped task's
            // ports when their linger is over.
            let more = loop {
                let expiry = self.guard_expiry().await;
                tokio::select! {
                    r = routes.changed() => break r.is_ok(),
                    _ = tokio::time::sleep(RETRY), if !ok => break true,
                    _ = sleep_until(expiry), if expiry.is_some() => {}
                    _ = stop.wait_for(|s| *s) => break false,
                }
                self.guard_ports(&table).await;
            };
            if !more {
                break;
            }
        }
        self.mesh.shutdown().await;
        if let ClientSlot::On(client) = &*self.client.lock().await {
            client.shutdown().await;
        }
        if let Some(dns) = &self.dns {
            dns.shutdown();
        }
        let dns_task = self
            .dns_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = dns_task {
            let _ = t.await;
        }
        if let Some(addrs) = &self.addrs {
            if let Err(e) = addrs.clear().await {
                warn!("service network: {e}");
            }
        }
        info!("service network stopped");
    }

    /// New addresses first (listeners need them), then the mesh, then the
    /// addresses nothing listens on any more. True when all of it worked.
    async fn apply(
        &self,
        table: &RoutingTable,
        service_addrs: bool,
        current: &mut BTreeSet<Ipv4Addr>,
    ) -> bool {
        let Tables {
            mut mesh,
            dns,
            mut addrs,
        } = tables(table, service_addrs);
        mesh.set_client_path(self.client_path(table).await);
        let local = self.addrs.as_ref().filter(|_| service_addrs);
        let mut ok = true;
        if let Some(local) = local {
            addrs.insert(DNS_ADDR);
            let both: BTreeSet<Ipv4Addr> = current.union(&addrs).copied().collect();
            if let Err(e) = local.apply(&both).await {
                warn!("service network: {e}");
                ok = false;
            }
        }
        if let Err(e) = self.mesh.apply(mesh).await {
            warn!("routing mesh: {e}");
            ok = false;
        }
        if let Some(server) = &self.dns {
            server.apply(dns);
        }
        if let Some(local) = local {
            if let Err(e) = local.apply(&addrs).await {
                warn!("service network: {e}");
                ok = false;
            }
            *current = addrs;
        }
        ok &= self.guard_ports(table).await;
        ok
    }

    /// Sets the tunnel to the table's other nodes up (or follows their
    /// list): what the meshes need to keep clients' addresses, `None` where
    /// they cannot.
    async fn client_path(&self, table: &RoutingTable) -> Option<ClientPath> {
        // Only a node with the service network has its namespace to itself.
        self.addrs.as_ref()?;
        // A node on loopback alone has no other node to tunnel to.
        let own = match table.own_addr {
            Some(IpAddr::V4(own)) if !own.is_loopback() => own,
            _ => return None,
        };
        let mut slot = self.client.lock().await;
        if let ClientSlot::On(client) = &*slot {
            if client.own() != own {
                client.shutdown().await;
                *slot = ClientSlot::Untried;
            }
        }
        if matches!(*slot, ClientSlot::Untried) {
            *slot = match ClientAddr::start(own).await {
                Ok(client) => {
                    info!(
                        "routing mesh: clients keep their addresses (tunnel {} to the other nodes)",
                        flotilla_net::client_addr::plan::DEVICE
                    );
                    ClientSlot::On(client)
                }
                Err(e) => {
                    warn!("routing mesh: clients' addresses are not kept (tasks on other nodes see this node's address): {e}");
                    ClientSlot::Off
                }
            };
        }
        let ClientSlot::On(client) = &*slot else {
            return None;
        };
        let peers: BTreeSet<Ipv4Addr> = table
            .node_addrs
            .iter()
            .filter_map(|a| match a {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .collect();
        match client.apply(&peers).await {
            Ok(()) => *self.lock_client_error() = None,
            Err(e) => {
                let e = e.to_string();
                let mut said = self.lock_client_error();
                if said.as_ref() != Some(&e) {
                    warn!("routing mesh: the tunnel to the other nodes: {e}");
                    *said = Some(e);
                }
            }
        }
        Some(client.path().await)
    }

    /// Keeps the guard's chains to what `table` says of this node's
    /// tasks (see `crate::port_guard`). False when writing them failed
    /// (tried again with the table); a node that cannot guard says why
    /// once and goes on.
    async fn guard_ports(&self, table: &RoutingTable) -> bool {
        let Some(guard) = &self.guard else {
            return true;
        };
        let mut g = guard.lock().await;
        // No table yet (the session's first value): nothing to go by, and
        // what the last run wrote keeps the tasks it adopts guarded.
        if g.off || *table == RoutingTable::default() {
            return true;
        }
        let plan = match port_guard::plan(table) {
            Ok(plan) => plan,
            Err(why) => {
                g.lingering = Lingering::default();
                g.say(format!("not guarded: {why}"));
                return true;
            }
        };
        let ports = g.lingering.guard(&plan, Instant::now());
        let rules = port_guard::rules(&ports, &plan.peers);
        if g.written.as_deref() == Some(rules.as_str()) {
            return true;
        }
        match crate::overlay::host::apply_port_guard(&rules).await {
            Ok(()) => {
                debug!(
                    ports = ports.len(),
                    peers = plan.peers.len(),
                    "task ports guarded"
                );
                g.written = Some(rules);
                g.said = None;
                true
            }
            Err(e) if e.contains("is not installed") => {
                g.say(format!("not guarded: {e}"));
                g.off = true;
                true
            }
            Err(e) => {
                g.say(format!("cannot guard them: {e}"));
                false
            }
        }
    }

    /// When the guard next lets go of a lingering port.
    async fn guard_expiry(&self) -> Option<Instant> {
        match &self.guard {
            Some(g) => g.lock().await.lingering.next_expiry(),
            None => None,
        }
    }
}

/// Sleeps until `at`; forever for `None` (a `select!` branch guarded off).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn lists(table: &RoutingTable, task_id: &str) -> bool {
    table
        .services
        .iter()
        .any(|s| s.tasks.iter().any(|t| t.id == task_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_store::network::{PortRoute, TaskPort, TaskRoute};

    fn task(id: &str, node: [u8; 4], addr: u8, host_port: u16) -> TaskRoute {
        TaskRoute {
            id: id.into(),
            addr: Some(Ipv4Addr::new(198, 18, 0, addr)),
            node_addr: IpAddr::from(node),
            ports: vec![TaskPort {
                transport: Transport::Tcp,
                target: 80,
                host_port,
                ingress: true,
            }],
        }
    }

    fn web() -> RoutingTable {
        RoutingTable {
            services: vec![ServiceRoutes {
                id: "s1".into(),
                name: "web".into(),
                vip: Some(Ipv4Addr::new(198, 18, 0, 2)),
                dnsrr: false,
                ports: vec![PortRoute {
                    transport: Transport::Tcp,
                    target: 80,
                    published: 8080,
                    ingress: true,
                }],
                proxy_protocol: Vec::new(),
                tasks: vec![
                    task("t1", [10, 0, 0, 1], 3, 32768),
                    task("t2", [10, 0, 0, 2], 4, 32769),
                ],
            }],
            ..Default::default()
        }
    }

    fn routes(t: &Tables) -> Vec<(Option<IpAddr>, u16, Vec<SocketAddr>)> {
        t.mesh
            .iter()
            .map(|(_, ip, port, route)| {
                (ip, port, route.endpoints.iter().map(|e| e.addr).collect())
            })
            .collect()
    }

    #[test]
    fn published_port_vip_and_task_addresses() {
        let t = tables(&web(), true);
        let both: Vec<SocketAddr> = vec![
            "10.0.0.1:32768".parse().unwrap(),
            "10.0.0.2:32769".parse().unwrap(),
        ];
        let vip = IpAddr::from([198, 18, 0, 2]);
        let routes = routes(&t);
        assert!(routes.contains(&(None, 8080, both.clone())), "{routes:?}");
        assert!(routes.contains(&(Some(vip), 80, both)), "{routes:?}");
        assert!(routes.contains(&(
            Some(IpAddr::from([198, 18, 0, 3])),
            80,
            vec!["10.0.0.1:32768".parse().unwrap()]
        )));
        assert_eq!(t.addrs.len(), 3);
    }

    #[test]
    fn the_mesh_connects_from_this_nodes_address() {
        let mut table = web();
        assert_eq!(tables(&table, true).mesh.source(), None);
        table.own_addr = Some(IpAddr::from([10, 0, 0, 1]));
        assert_eq!(tables(&table, false).mesh.source(), table.own_addr);
    }

    #[test]
    fn without_service_addresses_only_published_ports() {
        let t = tables(&web(), false);
        let routes = routes(&t);
        assert_eq!(routes.len(), 1, "{routes:?}");
        assert_eq!(routes[0].0, None);
        assert!(t.addrs.is_empty() && t.dns.is_empty());
    }

    #[test]
    fn a_task_without_the_port_is_no_endpoint() {
        let mut table = web();
        table.services[0].tasks[1].ports.clear();
        let t = tables(&table, false);
        assert_eq!(routes(&t)[0].2.len(), 1);
    }

    /// A host-mode service: the table lists its task, the mesh opens no port.
    fn host_mode(task_id: &str) -> Routes {
        let mut table = web();
        table.services[0].ports[0].ingress = false;
        table.services[0].tasks.retain(|t| t.id == task_id);
        Arc::new(table)
    }

    async fn node(routes: watch::Receiver<Routes>) -> (Arc<NodeNetwork>, watch::Sender<bool>) {
        let net = NodeNetwork::start(NetworkConfig {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            service_addrs: false,
            client_addr: true,
            mesh: MeshMode::Auto,
        })
        .await;
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(net.clone().run(routes, stop_rx));
        (net, stop)
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_the_table_without_the_task_then_settles() {
        let (tx, rx) = watch::channel(host_mode("t1"));
        let (net, _stop) = node(rx).await;
        let mut applied = net.applied.subscribe();
        applied.wait_for(|t| lists(t, "t1")).await.unwrap();

        let draining = tokio::spawn({
            let net = net.clone();
            async move {
                net.drain("t1").await;
                Instant::now()
            }
        });
        tokio::time::sleep(DRAIN_SETTLE * 2).await;
        assert!(!draining.is_finished(), "drained while still routed");
        let dropped = Instant::now();
        tx.send_replace(Routes::default());
        let done = draining.await.unwrap();
        // The clock is paused: these are the drain's own waits, not the
        // machine's load.
        let settled = done.duration_since(dropped);
        assert!(settled >= DRAIN_SETTLE, "{settled:?}");
        assert!(settled < DRAIN_WAIT, "{settled:?}");

        // Once settled, stopping it again does not wait.
        tokio::time::sleep(DRAIN_SETTLE).await;
        let again = Instant::now();
        net.drain("t1").await;
        assert_eq!(again.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_never_took_traffic_is_stopped_at_once() {
        let (_tx, rx) = watch::channel(host_mode("t1"));
        let (net, _stop) = node(rx).await;
        let started = Instant::now();
        net.drain("t9").await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_table_that_never_drops_the_task_is_waited_for_only_so_long() {
        let (_tx, rx) = watch::channel(host_mode("t1"));
        let (net, _stop) = node(rx).await;
        net.applied
            .subscribe()
            .wait_for(|t| lists(t, "t1"))
            .await
            .unwrap();
        let started = Instant::now();
        net.drain("t1").await;
        assert!(started.elapsed() >= DRAIN_WAIT, "{:?}", started.elapsed());
        assert!(
            started.elapsed() < DRAIN_WAIT + DRAIN_SETTLE,
            "{:?}",
            started.elapsed()
        );
    }
}
