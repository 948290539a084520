//! The routing mesh in the kernel: the same table as [`crate::Mesh`],
//! served by the kernel's NAT instead of a proxy (no IPVS: this is what
//! kube-proxy's iptables mode does). Each new connection or UDP flow to a
//! route is DNATed to one of its live endpoints, chosen at random with
//! equal odds; conntrack then carries every packet of it, in both
//! directions, without leaving the kernel. What is written is planned in
//! [`rules`] (pure) and applied here with one `iptables-restore` per
//! change, only when the plan changed.
//!
//! What differs from the user-space proxy:
//! - No passive failover: the proxy tries the next endpoint when one
//!   refuses a connection; NAT decides on the first packet and cannot take
//!   it back, so a connection to an endpoint that died before the table
//!   dropped it fails (the client sees a reset or a timeout). Draining
//!   (`remove_endpoint` before a task stops) keeps this to tasks that die
//!   on their own. For the other end of a task's life, a TCP endpoint the
//!   table lists for the first time takes connections only once it has
//!   accepted one (unless its route has no other): the mesh connects to
//!   it (and closes at once) when it appears, then every 10 ms for a
//!   second, every 100 ms until 5 s, then every second, until it does. A
//!   task is RUNNING as soon as its process is, before it listens; the
//!   proxy's failover hid that, NAT would not.
//! - Round robin becomes random with equal odds per connection.
//! - A connection to an endpoint on this node keeps its client's address;
//!   one sent to another node does too where the node keeps clients'
//!   addresses (`crate::client_addr`: through the tunnel), else it leaves
//!   from this node's address.
//! - A UDP flow stays with its endpoint as long as conntrack keeps it (30 s
//!   after its last datagram, 120 s once it was answered both ways), even
//!   after the endpoint left the table.
//!
//! Each published port on the mesh's own address is still reserved with a
//! bound socket that never listens: nothing else can bind it, a port that
//! is taken is reported as the proxy reports it (and not served), and the
//! kernel answers a connection the rules let through with a reset.

mod reserve;
pub(crate) mod rules;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::error::{KernelError, MeshError, PortFailure};
use crate::host::CommandError;
use crate::table::{MeshTable, Protocol, RouteKey};
use reserve::Reservation;
pub use rules::AddrGuard;
use rules::Plan;

/// Settings the kernel path needs, set at start and put back at shutdown:
/// forwarding, for connections sent on to another node, and
/// `route_localnet`, so a loopback client's connection may be sent there
/// too (with its source rewritten on the way out).
const SYSCTLS: [&str; 2] = [
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv4/conf/all/route_localnet",
];

/// How long a new endpoint gets to accept the probe made while `apply`
/// runs: one that does is in the rules `apply` writes.
const FIRST_PROBE: Duration = Duration::from_millis(300);
/// Then it is probed on this schedule (after how long, how often): a
/// task that just started listens within milliseconds, and a rolling
/// update may leave it its route's only endpoint; one that takes long
/// costs less and less. Each probe is bounded by its pause.
const PROBES: [(Duration, Duration); 3] = [
    (Duration::ZERO, Duration::from_millis(10)),
    (Duration::from_secs(1), Duration::from_millis(100)),
    (Duration::from_secs(5), Duration::from_secs(1)),
];

/// How often the hooks into the kernel's chains are checked (five
/// `iptables -C`, some 20 ms) when rules are written: at start, then at
/// most this often, so a drain or a task that starts listening is not
/// held up by them. Hooks someone removed come back within it.
const HOOK_CHECK: Duration = Duration::from_secs(10);

/// The routing mesh in the kernel's NAT. `shutdown` removes every rule.
pub struct KernelMesh {
    inner: Arc<Inner>,
}

struct Inner {
    bind: Ipv4Addr,
    guard: Option<AddrGuard>,
    /// Held across each write (a few ms): `apply`, `remove_endpoint` and
    /// the probes all rewrite the rules from the whole state, one at a
    /// time.
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    table: MeshTable,
    /// Tasks taken out by `remove_endpoint`: kept out while tables still
    /// list them, forgotten once one does not (as the proxy's).
    drained: HashSet<String>,
    /// The published ports on the mesh's address, held by a socket each.
    reserved: BTreeMap<RouteKey, Reservation>,
    /// Routes whose port could not be reserved: not served.
    unserved: BTreeSet<RouteKey>,
    /// TCP endpoints that accepted a probe: in the rules.
    ready: HashSet<SocketAddr>,
    /// TCP endpoints not accepting yet, each with its probe.
    probing: HashMap<SocketAddr, JoinHandle<()>>,
    /// What the kernel has: the plan last written and its route chains.
    written: Option<Plan>,
    chains: BTreeSet<String>,
    /// When the hooks were last checked.
    hooked: Option<Instant>,
    /// Each written route chain's service, and what of its traffic was
    /// counted already (see `count_traffic`).
    counted: HashMap<String, Counted>,
    /// The settings as they were before `start`, to put back.
    sysctls: Vec<(&'static str, String)>,
}

impl KernelMesh {
    /// Sets the kernel path up: removes what a killed daemon left, writes
    /// empty chains and hooks them in, turns on forwarding and
    /// `route_localnet`. Fails, saying why, where it cannot (no iptables,
    /// no CAP_NET_ADMIN, an IPv6 bind address): the caller then uses the
    /// user-space proxy. With `guard`, traffic arriving for its network
    /// reaches the routes only from its interfaces.
    pub async fn start(bind: IpAddr, guard: Option<AddrGuard>) -> Result<KernelMesh, KernelError> {
        let IpAddr::V4(bind) = bind else {
            return Err(KernelError::Ipv6);
        };
        remove_all().await?;
        let mut state = State::default();
        write(&mut state, bind, guard.as_ref()).await?;
        if let Err(e) = turn_on(&mut state.sysctls) {
            // Nothing of a half set up kernel path stays behind.
            put_back(&mut state.sysctls);
            let _ = remove_all().await;
            return Err(e);
        }
        let inner = Inner {
            bind,
            guard,
            state: tokio::sync::Mutex::new(state),
        };
        let inner = Arc::new(inner);
        tokio::spawn(count_periodically(Arc::downgrade(&inner)));
        Ok(KernelMesh { inner })
    }

    /// Makes the kernel's rules match `table`, at once: tasks that left it
    /// leave the rules in the same write as those that came (so a rolling
    /// update never leaves a route empty between the two). Ports that
    /// cannot be reserved are reported together and left out; the rest is
    /// applied. TCP endpoints new to the mesh take connections once they
    /// accept one (or when their route has no other): those that do within
    /// [`FIRST_PROBE`] are in when this returns, the others once they do.
    pub async fn apply(&self, table: MeshTable) -> Result<(), MeshError> {
        let inner = &self.inner;
        let source = snat_source(&table);
        let tcp = tcp_endpoints(&table);
        let mut st = inner.state.lock().await;
        st.drained.retain(|task| table.mentions_task(task));
        st.ready.retain(|a| tcp.contains(a));
        st.probing.retain(|a, probe| {
            let keep = tcp.contains(a);
            if !keep {
                probe.abort();
            }
            keep
        });
        let new: Vec<SocketAddr> = tcp
            .iter()
            .filter(|a| !st.ready.contains(a) && !st.probing.contains_key(a))
            .copied()
            .collect();
        let failures = inner.reserve(&mut st, &table);
        st.table = table;
        inner.write(&mut st).await.map_err(MeshError::Kernel)?;
        drop(st);

        let mut probes = JoinSet::new();
        for addr in new {
            probes.spawn(async move { (addr, probe(addr, source, FIRST_PROBE).await) });
        }
        let answered = probes.join_all().await;
        let mut st = inner.state.lock().await;
        for (addr, ok) in answered {
            // The table may have changed while the probes ran.
            if !tcp_endpoints(&st.table).contains(&addr) || st.probing.contains_key(&addr) {
                continue;
            }
            if ok {
                st.ready.insert(addr);
            } else {
                let weak = Arc::downgrade(inner);
                let probing = tokio::spawn(probe_until_ready(weak, addr, source));
                st.probing.insert(addr, probing);
            }
        }
        inner.write(&mut st).await.map_err(MeshError::Kernel)?;
        if failures.is_empty() {
            Ok(())
        } else {
            Err(MeshError::Ports(failures))
        }
    }

    /// Takes a task out of every route before it is stopped: once this
    /// returns, new connections avoid it; those open go on (conntrack
    /// keeps them) for its stop grace period.
    pub async fn remove_endpoint(&self, task_id: &str) {
        let mut st = self.inner.state.lock().await;
        if !st.drained.insert(task_id.to_string()) || !st.table.mentions_task(task_id) {
            return;
        }
        match self.inner.write(&mut st).await {
            Ok(()) => debug!(task = task_id, "endpoint drained (kernel)"),
            Err(e) => warn!(task = task_id, "routing mesh: cannot drain the task: {e}"),
        }
    }

    /// The routes served now, in order: (protocol, specific local address
    /// or `None` for the mesh's own, port).
    pub async fn listening(&self) -> Vec<(Protocol, Option<IpAddr>, u16)> {
        let st = self.inner.state.lock().await;
        st.table
            .iter()
            .map(|(protocol, ip, port, _)| (protocol, ip, port))
            .filter(|key| !st.unserved.contains(key))
            .collect()
    }

    /// Removes every rule, gives the ports up and puts the settings back.
    pub async fn shutdown(&self) {
        let mut st = self.inner.state.lock().await;
        for (_, probing) in st.probing.drain() {
            probing.abort();
        }
        if let Err(e) = remove_all().await {
            warn!("routing mesh: removing its kernel rules: {e}");
        }
        st.reserved.clear();
        st.written = None;
        st.hooked = None;
        st.chains.clear();
        put_back(&mut st.sysctls);
    }
}

/// Turns the kernel path's settings on, recording in `changed` those that
/// were off.
fn turn_on(changed: &mut Vec<(&'static str, String)>) -> Result<(), KernelError> {
    for path in SYSCTLS {
        let before =
            std::fs::read_to_string(path).map_err(|e| KernelError::Sysctl { path, source: e })?;
        if before.trim() != "1" {
            std::fs::write(path, "1").map_err(|e| KernelError::Sysctl { path, source: e })?;
            changed.push((path, before.trim().to_string()));
        }
    }
    Ok(())
}

/// Puts back the settings `turn_on` changed.
fn put_back(changed: &mut Vec<(&'static str, String)>) {
    for (path, before) in changed.drain(..) {
        if let Err(e) = std::fs::write(path, &before) {
            warn!("routing mesh: cannot put {path} back to {before}: {e}");
        }
    }
}

impl Inner {
    async fn write(&self, st: &mut State) -> Result<(), KernelError> {
        write(st, self.bind, self.guard.as_ref()).await
    }

    /// Holds the ports of `table`'s routes on the mesh's address, gives up
    /// those it no longer lists; the ports that cannot be held are left
    /// unserved and reported.
    fn reserve(&self, st: &mut State, table: &MeshTable) -> Vec<PortFailure> {
        let wanted: BTreeSet<RouteKey> = table
            .iter()
            .filter(|(_, ip, _, _)| ip.is_none())
            .map(|(protocol, ip, port, _)| (protocol, ip, port))
            .collect();
        st.reserved.retain(|key, _| wanted.contains(key));
        st.unserved.clear();
        let mut failures = Vec::new();
        for (protocol, ip, port, route) in table.iter().filter(|(_, ip, _, _)| ip.is_none()) {
            let key = (protocol, ip, port);
            if st.reserved.contains_key(&key) {
                continue;
            }
            let addr = SocketAddr::new(IpAddr::V4(self.bind), port);
            match reserve::reserve(protocol, addr) {
                Ok(socket) => {
                    info!(%addr, %protocol, service = %route.service_id, "published port open (kernel)");
                    st.reserved.insert(key, socket);
                }
                Err(source) => {
                    st.unserved.insert(key);
                    failures.push(PortFailure {
                        protocol,
                        addr,
                        service_id: route.service_id.clone(),
                        source,
                    });
                }
            }
        }
        failures
    }
}

/// The node's own address when this host has it: where connections to
/// other nodes come from (the proxy's rule too).
fn snat_source(table: &MeshTable) -> Option<Ipv4Addr> {
    match table.source() {
        Some(IpAddr::V4(ip)) if is_local(ip) => Some(ip),
        _ => None,
    }
}

/// Every healthy endpoint of the table's TCP routes.
fn tcp_endpoints(table: &MeshTable) -> HashSet<SocketAddr> {
    table
        .iter()
        .filter(|(protocol, ..)| *protocol == Protocol::Tcp)
        .flat_map(|(.., route)| route.endpoints.iter())
        .filter(|e| e.healthy)
        .map(|e| e.addr)
        .collect()
}

/// Whether `addr` accepts a TCP connection within `timeout` (from
/// `source` when set: the address other nodes' task-port guards know).
/// The connection is closed at once.
async fn probe(addr: SocketAddr, source: Option<Ipv4Addr>, timeout: Duration) -> bool {
    let connect = async {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        if let (Some(ip), SocketAddr::V4(_)) = (source, addr) {
            socket.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
        }
        socket.connect(addr).await
    };
    matches!(tokio::time::timeout(timeout, connect).await, Ok(Ok(_)))
}

/// Probes `addr` until it accepts, then puts it in the rules. Ends with
/// the mesh, or when `apply` aborts it (the endpoint left the table).
async fn probe_until_ready(inner: Weak<Inner>, addr: SocketAddr, source: Option<Ipv4Addr>) {
    let since = Instant::now();
    loop {
        let waited = since.elapsed();
        let pause = PROBES
            .iter()
            .rev()
            .find(|(after, _)| waited >= *after)
            .map_or(PROBES[0].1, |(_, pause)| *pause);
        tokio::time::sleep(pause).await;
        if probe(addr, source, pause).await {
            break;
        }
    }
    let Some(inner) = inner.upgrade() else {
        return;
    };
    let mut st = inner.state.lock().await;
    st.probing.remove(&addr);
    st.ready.insert(addr);
    match inner.write(&mut st).await {
        Ok(()) => {
            debug!(%addr, waited = ?since.elapsed(), "endpoint accepts connections: in the kernel rules")
        }
        Err(e) => warn!(%addr, "routing mesh: cannot add an endpoint that is ready: {e}"),
    }
}

/// Writes the plan of the state's table when it differs from what the
/// kernel has, then makes sure the hooks are in.
async fn write(
    st: &mut State,
    bind: Ipv4Addr,
    guard: Option<&AddrGuard>,
) -> Result<(), KernelError> {
    let snat = snat_source(&st.table);
    let unready: HashSet<SocketAddr> = tcp_endpoints(&st.table)
        .into_iter()
        .filter(|a| !st.ready.contains(a))
        .collect();
    // Where clients keep their addresses, this node's containers are
    // reached at their own address, as the engine's DNAT has it (read
    // only when the table has an endpoint on this node: a listing per
    // table change otherwise buys nothing).
    let local_endpoint = |node: Ipv4Addr| {
        st.table
            .iter()
            .flat_map(|(.., route)| route.endpoints.iter())
            .any(|e| e.addr.ip() == IpAddr::V4(node))
    };
    let containers = match (st.table.client_path(), snat) {
        (Some(_), Some(node)) if local_endpoint(node) => run("iptables-save", &["-t", "nat"], None)
            .await
            .map(|save| rules::docker_dnats(&save))
            .unwrap_or_default(),
        _ => HashMap::new(),
    };
    let plan = rules::plan(
        &st.table,
        bind,
        &st.drained,
        &unready,
        &st.unserved,
        snat,
        guard,
        &containers,
    );
    if st.written.as_ref() == Some(&plan) {
        return Ok(());
    }
    // Writing a chain zeroes its counters: what they hold is counted first.
    count_traffic(st).await;
    let text = rules::rules(&plan, &st.chains);
    run("iptables-restore", &["-w", "--noflush"], Some(&text)).await?;
    st.counted = plan
        .routes
        .iter()
        .filter_map(|r| {
            let ip = r.at.map(IpAddr::V4);
            let service = st.table.get(r.protocol, ip, r.port)?.service_id.clone();
            Some((r.chain(), Counted::new(service)))
        })
        .collect();
    if st.hooked.is_none_or(|at| at.elapsed() >= HOOK_CHECK) {
        for (table, chain, rule) in rules::hooks() {
            hook_first(table, chain, &rule).await?;
        }
        st.hooked = Some(Instant::now());
    }
    st.chains = plan.chains();
    debug!(routes = ?plan.routes, "mesh rules written (kernel)");
    st.written = Some(plan);
    Ok(())
}

/// A route chain's service and its counters as last read.
struct Counted {
    service: String,
    connections: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl Counted {
    fn new(service: String) -> Counted {
        Counted {
            service,
            connections: 0,
            bytes_in: 0,
            bytes_out: 0,
        }
    }
}

/// What a counter gained since `counted`, which becomes `now` (fewer than
/// counted: someone zeroed it, and all it holds is new).
fn gained(counted: &mut u64, now: u64) -> u64 {
    let new = now.checked_sub(*counted).unwrap_or(now);
    *counted = now;
    new
}

/// Tells the metrics the connections and bytes of the route chains since
/// the last count (a failed read only delays them to the next).
async fn count_traffic(st: &mut State) {
    use crate::metrics::{mesh_bytes, mesh_connections, Path};
    if st.counted.is_empty() {
        return;
    }
    let Ok(save) = run("iptables-save", &["-c"], None).await else {
        return;
    };
    for (chain, packets) in rules::route_connections(&save) {
        if let Some(c) = st.counted.get_mut(&chain) {
            let new = gained(&mut c.connections, packets);
            if new > 0 {
                mesh_connections(&c.service, Path::Kernel, new);
            }
        }
    }
    for (chain, bytes_in, bytes_out) in rules::route_bytes(&save) {
        if let Some(c) = st.counted.get_mut(&chain) {
            let (i, o) = (
                gained(&mut c.bytes_in, bytes_in),
                gained(&mut c.bytes_out, bytes_out),
            );
            mesh_bytes(&c.service, Path::Kernel, i, o);
        }
    }
}

/// How often the route chains' traffic is counted for the metrics when no
/// write does it first.
const COUNT_EVERY: Duration = Duration::from_secs(5);

/// Counts the traffic every [`COUNT_EVERY`] until the mesh is gone.
async fn count_periodically(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(COUNT_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        let mut st = inner.state.lock().await;
        count_traffic(&mut st).await;
    }
}

/// Whether this host has `ip` (the node's own address may not be its, behind NAT).
fn is_local(ip: Ipv4Addr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// Unhooks and deletes every chain of the kernel path, those a killed
/// daemon left included (fine when there are none).
async fn remove_all() -> Result<(), KernelError> {
    for (table, chain, rule) in rules::hooks() {
        let mut delete = vec!["-w", "-t", table, "-D", chain];
        delete.extend(rule.split_whitespace());
        while run("iptables", &delete, None).await.is_ok() {}
    }
    let save = run("iptables-save", &["-t", "nat"], None).await?;
    let text = rules::removal(&rules::route_chains_in(&save));
    run("iptables-restore", &["-w", "--noflush"], Some(&text)).await?;
    Ok(())
}

/// Puts `rule` first in `table`'s `chain` unless it is there already.
async fn hook_first(table: &str, chain: &str, rule: &str) -> Result<(), KernelError> {
    crate::host::hook_first(table, chain, rule)
        .await
        .map_err(kernel_error)
}

/// Runs `program args…` with `input` on its stdin; its stdout.
async fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, KernelError> {
    crate::host::run(program, args, input)
        .await
        .map_err(kernel_error)
}

pub(crate) fn kernel_error(e: CommandError) -> KernelError {
    match e {
        CommandError::NotInstalled { program } => KernelError::NotInstalled { program },
        CommandError::Failed { message, .. }
            if message.contains("Permission denied") || message.contains("must be root") =>
        {
            KernelError::PermissionDenied
        }
        CommandError::Failed { command, message } => KernelError::Command { command, message },
    }
}
