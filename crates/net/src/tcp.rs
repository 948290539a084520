//! The TCP side of one published port: accept, choose an endpoint, connect
//! (moving on to the next endpoint when one refuses), then relay.
//!
//! The accept loop owns its connections (a JoinSet): closing the port ends
//! them with it. Connections hold their own copy of the chosen endpoint, so
//! draining or removing that endpoint only affects new connections.

use crate::metrics::Path;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::{debug, trace, warn};

use crate::balance::Backends;
use crate::config::MeshConfig;
use crate::error::ProxyError;
use crate::protocol::Protocol;
use crate::socket::Outbound;
use crate::table::Endpoint;

/// Pending connections the kernel queues per port before accept.
const BACKLOG: i32 = 1024;

/// How long to wait after a failed accept (out of file descriptors, say)
/// before the next one, so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Listens on a published port, sharing the port number with routes at
/// other local addresses (see `socket`).
pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    crate::socket::tcp_listener(addr, BACKLOG)
}

/// Accepts on one published port until the task is aborted.
pub(crate) async fn serve(
    listener: TcpListener,
    port: u16,
    backends: Arc<Backends>,
    config: Arc<MeshConfig>,
    outbound: Arc<Outbound>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    let (backends, config, outbound) = (backends.clone(), config.clone(), outbound.clone());
                    connections.spawn(proxy(client, peer, port, backends, config, outbound));
                }
                Err(e) => {
                    warn!(port, error = %e, "accept failed on published port");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connections so the set does not grow forever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One client connection, from accept to the end of both directions. Errors
/// are logged here, once.
async fn proxy(
    client: TcpStream,
    peer: SocketAddr,
    port: u16,
    backends: Arc<Backends>,
    config: Arc<MeshConfig>,
    outbound: Arc<Outbound>,
) {
    match proxy_inner(client, peer, port, &backends, &config, &outbound).await {
        Ok((sent, received)) => trace!(port, %peer, sent, received, "connection done"),
        // A relay ending in a reset is ordinary client behaviour, and a
        // service scaled to zero would log once per connection: both debug.
        Err(e @ (ProxyError::Relay { .. } | ProxyError::NoEndpoint { .. })) => debug!(%peer, "{e}"),
        Err(e) => warn!(%peer, "{e}"),
    }
}

async fn proxy_inner(
    client: TcpStream,
    peer: SocketAddr,
    port: u16,
    backends: &Backends,
    config: &MeshConfig,
    outbound: &Outbound,
) -> Result<(u64, u64), ProxyError> {
    let (mut upstream, endpoint, service_id) =
        connect_any(peer, port, backends, config.connect_timeout, outbound).await?;
    if let Some(version) = backends.load().proxy_protocol {
        // Where the client connected: the published port on this node.
        let local = client.local_addr().unwrap_or(peer);
        let header = crate::proxy_protocol::header(version, peer, local);
        use tokio::io::AsyncWriteExt;
        upstream
            .write_all(&header)
            .await
            .map_err(|source| ProxyError::Relay {
                port,
                task_id: endpoint.task_id.clone(),
                addr: endpoint.addr,
                source,
            })?;
    }
    crate::metrics::mesh_connections(&service_id, Path::Proxy, 1);
    // Request/response traffic must not wait for Nagle on either leg; set
    // both even if one fails, it only costs latency.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let moved = crate::splice::relay(client, upstream, config.zero_copy).await;
    if let Ok((sent, received)) = &moved {
        crate::metrics::mesh_bytes(&service_id, Path::Proxy, *sent, *received);
    }
    moved.map_err(|source| ProxyError::Relay {
        port,
        task_id: endpoint.task_id,
        addr: endpoint.addr,
        source,
    })
}

/// Connects to the next endpoint in round-robin order, trying each live
/// endpoint at most once.
async fn connect_any(
    peer: SocketAddr,
    port: u16,
    backends: &Backends,
    timeout: Duration,
    outbound: &Outbound,
) -> Result<(TcpStream, Endpoint, String), ProxyError> {
    let candidates = backends.candidates();
    let mut last = None;
    for endpoint in candidates.iter() {
        match connect(peer, endpoint.addr, timeout, outbound).await {
            Ok(stream) => {
                backends.report_success(endpoint.addr);
                let service_id = candidates.service_id().to_string();
                return Ok((stream, endpoint.clone(), service_id));
            }
            Err(e) => {
                backends.report_failure(endpoint.addr, std::time::Instant::now());
                debug!(port, task = %endpoint.task_id, addr = %endpoint.addr, error = %e, "endpoint refused, trying the next");
                last = Some((endpoint.addr, e));
            }
        }
    }
    let service_id = candidates.service_id().to_string();
    match last {
        None => Err(ProxyError::NoEndpoint {
            protocol: Protocol::Tcp,
            port,
            service_id,
        }),
        Some((last_addr, last)) => Err(ProxyError::AllFailed {
            port,
            service_id,
            tried: candidates.len(),
            last_addr,
            last,
        }),
    }
}

async fn connect(
    peer: SocketAddr,
    addr: SocketAddr,
    timeout: Duration,
    outbound: &Outbound,
) -> std::io::Result<TcpStream> {
    match tokio::time::timeout(timeout, outbound.connect_for(peer, addr)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connect timed out",
        )),
    }
}
