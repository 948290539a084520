//! The routing mesh of one node: a listener per route (published port, at
//! the mesh's own address or at a specific local one), each balancing over
//! the endpoints of its service wherever they run.
//!
//! `apply` takes the whole table each time and works out the difference:
//! routes no longer listed are closed first (and awaited, so their address
//! is free again), then new routes are opened, and routes that stay get
//! their endpoint set swapped in one atomic store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::balance::{Backends, EndpointSet};
use crate::error::{MeshError, PortFailure};
use crate::socket::Outbound;
use crate::table::{MeshTable, Protocol, Route, RouteKey};

pub use crate::config::MeshConfig;

/// The routing mesh. Dropping it closes every port and ends every
/// connection and flow.
pub struct Mesh {
    bind_ip: IpAddr,
    config: Arc<MeshConfig>,
    /// Where connections to endpoints come from: the table's source.
    outbound: Arc<Outbound>,
    /// Short critical sections only (no await inside): `remove_endpoint` is
    /// synchronous and must never wait for an `apply` in progress.
    state: Mutex<State>,
    /// Serialises whole `apply` calls, awaits included, so one apply cannot
    /// try to reopen a port another apply is still closing.
    applying: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    ports: HashMap<RouteKey, OpenPort>,
    /// Tasks taken out by `remove_endpoint`: kept out even if the next
    /// tables still list them (the store lags behind a stop), forgotten once
    /// a table no longer mentions them.
    drained: HashSet<String>,
}

/// A listening published port: its endpoint set and the task serving it.
struct OpenPort {
    backends: Arc<Backends>,
    task: JoinHandle<()>,
}

impl OpenPort {
    /// Stops the port's task and waits until its socket is closed.
    async fn close(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for OpenPort {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mesh {
    /// A mesh whose published ports listen on `bind_ip` (0.0.0.0 in
    /// production). Opens nothing until the first `apply`.
    pub fn new(bind_ip: IpAddr) -> Mesh {
        Mesh::with_config(bind_ip, MeshConfig::default())
    }

    pub fn with_config(bind_ip: IpAddr, config: MeshConfig) -> Mesh {
        Mesh {
            bind_ip,
            config: Arc::new(config),
            outbound: Arc::new(Outbound::default()),
            state: Mutex::new(State::default()),
            applying: tokio::sync::Mutex::new(()),
        }
    }

    /// Makes the mesh match `table`. Routes that cannot be opened are
    /// reported together; every other route is applied regardless.
    pub async fn apply(&self, table: MeshTable) -> Result<(), MeshError> {
        let _applying = self.applying.lock().await;
        self.outbound
            .set(table.source(), table.client_path().cloned());
        let (routes, mut failures) = self.resolve(&table);
        let closing = {
            let mut state = self.lock();
            state.drained.retain(|task| table.mentions_task(task));
            state.take_unlisted(&routes)
        };
        // Closed before anything opens: SO_REUSEPORT would let a new socket
        // bind an address a closing one still holds, and share its traffic.
        for ((protocol, ip, port), open) in closing {
            open.close().await;
            let addr = SocketAddr::new(ip.unwrap_or(self.bind_ip), port);
            info!(%addr, %protocol, "published port closed");
        }
        failures.extend(self.open_or_update(&routes));
        if failures.is_empty() {
            Ok(())
        } else {
            Err(MeshError::Ports(failures))
        }
    }

    /// Takes a task out of every port before it is stopped, so new
    /// connections avoid it. Connections already open to it go on: the
    /// task's stop grace period lets them finish.
    pub fn remove_endpoint(&self, task_id: &str) {
        let mut state = self.lock();
        state.drained.insert(task_id.to_string());
        let State { ports, drained } = &*state;
        for open in ports.values() {
            let current = open.backends.load();
            if current.lists_task(task_id) {
                open.backends.store(current.without(drained));
                debug!(task = task_id, service = %current.service_id, "endpoint drained");
            }
        }
    }

    /// The routes listening now, in order: (protocol, specific local
    /// address or `None` for the mesh's own, port).
    pub fn listening(&self) -> Vec<(Protocol, Option<IpAddr>, u16)> {
        let mut ports: Vec<_> = self.lock().ports.keys().copied().collect();
        ports.sort();
        ports
    }

    /// Closes every port and waits until they are closed.
    pub async fn shutdown(&self) {
        let _applying = self.applying.lock().await;
        let ports: Vec<OpenPort> = self.lock().ports.drain().map(|(_, open)| open).collect();
        for open in ports {
            open.close().await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock; if one ever did, the
        // state is still a consistent map, so keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The table's routes with the address each listens on. Two routes
    /// that would listen on one address (a route at the mesh's own address
    /// listed both ways) are refused, the later one in table order: two
    /// sockets on one address would share its traffic.
    fn resolve<'t>(&self, table: &'t MeshTable) -> (Routes<'t>, Vec<PortFailure>) {
        let mut routes = BTreeMap::new();
        let mut failures = Vec::new();
        let mut owners: HashMap<(Protocol, SocketAddr), &str> = HashMap::new();
        for (protocol, ip, port, route) in table.iter() {
            let addr = SocketAddr::new(ip.unwrap_or(self.bind_ip), port);
            match owners.get(&(protocol, addr)) {
                Some(owner) => {
                    let source = std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        format!("another route of service {owner} is at this address"),
                    );
                    failures.push(failure(protocol, addr, route, source));
                }
                None => {
                    owners.insert((protocol, addr), &route.service_id);
                    routes.insert((protocol, ip, port), (addr, route));
                }
            }
        }
        (routes, failures)
    }

    fn open_or_update(&self, routes: &Routes<'_>) -> Vec<PortFailure> {
        let mut state = self.lock();
        let mut failures = Vec::new();
        for (&key, &(addr, route)) in routes {
            let protocol = key.0;
            let set = EndpointSet::new(route, &state.drained);
            if let Some(open) = state.ports.get(&key) {
                open.backends.store(set);
                continue;
            }
            match self.open(protocol, addr, set) {
                Ok(open) => {
                    info!(%addr, %protocol, service = %route.service_id, "published port open");
                    state.ports.insert(key, open);
                }
                Err(source) => failures.push(failure(protocol, addr, route, source)),
            }
        }
        failures
    }

    fn open(
        &self,
        protocol: Protocol,
        addr: SocketAddr,
        set: EndpointSet,
    ) -> std::io::Result<OpenPort> {
        let port = addr.port();
        let backends = Arc::new(Backends::new(set));
        let (config, outbound) = (self.config.clone(), self.outbound.clone());
        let task = match protocol {
            Protocol::Tcp => {
                let listener = crate::tcp::listen(addr)?;
                let serve = crate::tcp::serve(listener, port, backends.clone(), config, outbound);
                tokio::spawn(serve)
            }
            Protocol::Udp => {
                let socket = crate::udp::bind(addr)?;
                let serve = crate::udp::serve(socket, port, backends.clone(), config, outbound);
                tokio::spawn(serve)
            }
        };
        Ok(OpenPort { backends, task })
    }
}

/// The routes `apply` opens or keeps, with the address each listens on.
type Routes<'t> = BTreeMap<RouteKey, (SocketAddr, &'t Route)>;

impl State {
    fn take_unlisted(&mut self, routes: &Routes<'_>) -> Vec<(RouteKey, OpenPort)> {
        let unlisted: Vec<RouteKey> = self
            .ports
            .keys()
            .filter(|key| !routes.contains_key(key))
            .copied()
            .collect();
        unlisted
            .into_iter()
            .filter_map(|key| self.ports.remove(&key).map(|open| (key, open)))
            .collect()
    }
}
fn failure(
    protocol: Protocol,
    addr: SocketAddr,
    route: &Route,
    source: std::io::Error,
) -> PortFailure {
    PortFailure {
        protocol,
        addr,
        service_id: route.service_id.clone(),
        source,
    }
}
