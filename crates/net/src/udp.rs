//! The UDP side of one published port.
//!
//! UDP has no connections, so the mesh makes flows: the first datagram from
//! a client address picks an endpoint (round robin) and gets an upstream
//! socket of its own, connected to that endpoint; later datagrams of that
//! client follow it, and the flow's task relays replies back through the
//! published socket, so the client sees them come from the port it spoke to.
//! A flow ends after an idle time, or when the endpoint refuses (ICMP port
//! unreachable); the client's next datagram then makes a new flow.

use crate::metrics::Path;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::balance::Backends;
use crate::config::MeshConfig;
use crate::error::ProxyError;
use crate::protocol::Protocol;
use crate::socket::Outbound;

/// Largest UDP payload: a datagram must never be cut.
const MAX_DATAGRAM: usize = 65_535;

/// Binds a published port, sharing the port number with routes at other
/// local addresses (see `socket`). A socket bound to a specific address
/// replies from that address, as a client of a VIP expects.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    crate::socket::udp_socket(addr)
}

/// One client's flow, as the port loop sees it.
struct Flow {
    /// Distinguishes this flow from a later one of the same client address
    /// when its task reports that it ended.
    id: u64,
    service_id: String,
    /// The port loop sends through a plain non-blocking handle of the flow's
    /// socket: tokio's `try_send` reports WouldBlock until the reactor has
    /// seen a fresh socket once, which would drop every first datagram.
    sender: std::net::UdpSocket,
    activity: Arc<Activity>,
    task: AbortHandle,
    /// Bytes from the client, told to the metrics when the flow ends.
    bytes_in: u64,
}

impl Flow {
    /// Tells the metrics what the flow carried.
    fn count(&self) {
        let out = self.activity.bytes_out.load(Ordering::Relaxed);
        crate::metrics::mesh_bytes(&self.service_id, Path::Proxy, self.bytes_in, out);
    }
}

/// Last time a datagram went either way, in milliseconds since the port
/// opened. Written by the port loop and by the flow task.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    /// Bytes of the endpoint's replies.
    bytes_out: AtomicU64,
}

impl Activity {
    fn new(epoch: Instant) -> Activity {
        let activity = Activity {
            epoch,
            last_ms: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        };
        activity.touch();
        activity
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_deadline(&self, idle: std::time::Duration) -> Instant {
        self.epoch + std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }
}

/// What a flow task reports when it ends on its own.
struct FlowEnd {
    client: SocketAddr,
    id: u64,
    /// The endpoint, if it refused (ICMP port unreachable): new flows try
    /// it last for a while.
    refused: Option<SocketAddr>,
}

/// The port loop's state: its socket, its flows and their tasks.
struct Port {
    port: u16,
    socket: Arc<UdpSocket>,
    backends: Arc<Backends>,
    config: Arc<MeshConfig>,
    outbound: Arc<Outbound>,
    flows: HashMap<SocketAddr, Flow>,
    /// Flow tasks, each saying how it ended.
    tasks: JoinSet<FlowEnd>,
    next_id: u64,
    epoch: Instant,
}

/// Serves one published UDP port until the task is aborted (which aborts
/// every flow with it: the JoinSet is dropped).
pub(crate) async fn serve(
    socket: UdpSocket,
    port: u16,
    backends: Arc<Backends>,
    config: Arc<MeshConfig>,
    outbound: Arc<Outbound>,
) {
    let mut state = Port {
        port,
        socket: Arc::new(socket),
        backends,
        config,
        outbound,
        flows: HashMap::new(),
        tasks: JoinSet::new(),
        next_id: 0,
        epoch: Instant::now(),
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            received = state.socket.recv_from(&mut buf) => match received {
                Ok((n, client)) => state.forward(&buf[..n], client),
                Err(e) => debug!(port, error = %e, "receive failed on published port"),
            },
            Some(ended) = state.tasks.join_next(), if !state.tasks.is_empty() => {
                if let Ok(end) = ended {
                    state.forget(end);
                }
            }
        }
    }
}

impl Port {
    /// Sends one client datagram up its flow, making the flow if needed.
    fn forward(&mut self, datagram: &[u8], client: SocketAddr) {
        let service_id = self.backends.load().service_id.clone();
        // A flow made for the service that had this port before is not
        // reused: the mesh never mixes two services' traffic.
        if self
            .flows
            .get(&client)
            .is_some_and(|f| f.service_id != service_id)
        {
            self.end(client);
        }
        if !self.flows.contains_key(&client) {
            if self.flows.len() >= self.config.udp_max_flows {
                debug!(port = self.port, %client, "too many UDP flows, datagram dropped");
                return;
            }
            if let Err(e) = self.open_flow(client) {
                warn!(port = self.port, %client, "{e}");
                return;
            }
        }
        let Some(flow) = self.flows.get_mut(&client) else {
            return;
        };
        flow.activity.touch();
        flow.bytes_in += datagram.len() as u64;
        // A full socket buffer drops the datagram, as the network would;
        // waiting here would stall every other client of the port.
        if let Err(e) = flow.sender.send(datagram) {
            if e.kind() != io::ErrorKind::WouldBlock {
                debug!(port = self.port, %client, error = %e, "upstream send failed, flow ended");
                self.end(client);
            }
        }
    }

    fn open_flow(&mut self, client: SocketAddr) -> Result<(), ProxyError> {
        let candidates = self.backends.candidates();
        let service_id = candidates.service_id().to_string();
        let Some(endpoint) = candidates.iter().next().cloned() else {
            return Err(ProxyError::NoEndpoint {
                protocol: Protocol::Udp,
                port: self.port,
                service_id,
            });
        };
        let (sender, upstream) =
            connect(&self.outbound, client, endpoint.addr).map_err(|source| {
                ProxyError::Upstream {
                    port: self.port,
                    task_id: endpoint.task_id.clone(),
                    addr: endpoint.addr,
                    source,
                }
            })?;
        let activity = Arc::new(Activity::new(self.epoch));
        let id = self.next_id;
        self.next_id += 1;
        let task = self.tasks.spawn(relay_replies(
            client,
            id,
            endpoint.addr,
            upstream,
            self.socket.clone(),
            activity.clone(),
            self.config.udp_idle_timeout,
        ));
        crate::metrics::mesh_connections(&service_id, Path::Proxy, 1);
        let flow = Flow {
            id,
            service_id,
            sender,
            activity,
            task,
            bytes_in: 0,
        };
        self.flows.insert(client, flow);
        Ok(())
    }

    fn end(&mut self, client: SocketAddr) {
        if let Some(flow) = self.flows.remove(&client) {
            flow.task.abort();
            flow.count();
        }
    }

    /// A flow task ended on its own (idle or refused): drop it unless the
    /// client already has a newer flow.
    fn forget(&mut self, end: FlowEnd) {
        if let Some(endpoint) = end.refused {
            self.backends
                .report_failure(endpoint, std::time::Instant::now());
        }
        if self.flows.get(&end.client).is_some_and(|f| f.id == end.id) {
            if let Some(flow) = self.flows.remove(&end.client) {
                flow.count();
            }
        }
    }
}

/// A socket of its own per flow (from the node's address, see
/// `Outbound`), connected so the kernel filters replies from anyone but
/// the endpoint: a plain handle to send on, and the tokio handle the flow
/// task receives on.
fn connect(
    outbound: &Outbound,
    client: SocketAddr,
    endpoint: SocketAddr,
) -> io::Result<(std::net::UdpSocket, UdpSocket)> {
    let socket = outbound.udp_for(client, endpoint)?;
    socket.connect(endpoint)?;
    socket.set_nonblocking(true)?;
    let sender = socket.try_clone()?;
    Ok((sender, UdpSocket::from_std(socket)?))
}

/// Relays the endpoint's replies to the client until the flow is idle or
/// the endpoint refuses.
async fn relay_replies(
    client: SocketAddr,
    id: u64,
    endpoint: SocketAddr,
    upstream: UdpSocket,
    published: Arc<UdpSocket>,
    activity: Arc<Activity>,
    idle: std::time::Duration,
) -> FlowEnd {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let deadline = activity.idle_deadline(idle);
        tokio::select! {
            received = upstream.recv(&mut buf) => match received {
                Ok(n) => {
                    activity.touch();
                    activity.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                    if let Err(e) = published.send_to(&buf[..n], client).await {
                        debug!(%client, error = %e, "reply to client failed");
                    }
                }
                Err(e) => {
                    debug!(%client, %endpoint, error = %e, "endpoint refused, flow ended");
                    let refused = (e.kind() == io::ErrorKind::ConnectionRefused).then_some(endpoint);
                    return FlowEnd { client, id, refused };
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                // Traffic may have come up the flow while we slept.
                if Instant::now() >= activity.idle_deadline(idle) {
                    return FlowEnd { client, id, refused: None };
                }
            }
        }
    }
}
