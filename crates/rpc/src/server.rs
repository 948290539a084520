//! The cluster port of a manager: every service on one TLS listener.

use std::sync::Arc;

use flotilla_manager::dispatcher::Dispatcher;
use flotilla_manager::execrelay::ExecRelays;
use flotilla_store::Store;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ca::CaService;
use crate::control::ControlService;
use crate::dispatcher::DispatcherService;
use crate::exec::ExecService;
use crate::peers::Peers;
use crate::raft::RaftService;
use crate::transport;

/// How often a manager pings each connection that is otherwise quiet.
pub const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(1);
/// How long an unanswered ping may wait before the connection is closed.
pub const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves until `stop` turns true.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: TcpListener,
    cluster_id: String,
    tls: watch::Receiver<Arc<ServerConfig>>,
    store: Store,
    dispatcher: Arc<Dispatcher>,
    peers: Peers,
    relays: ExecRelays,
    mut stop: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        // A peer that went silent without closing its connection (a host
        // cut off, powered off) is found by these pings: its connection
        // closes within KEEPALIVE + KEEPALIVE_TIMEOUT, which ends its
        // agent's assignment stream and marks it Down after the
        // dispatcher's 1 s grace (3.98 s in all, where three missed
        // heartbeats of 5 s took 15). A 1 s timeout with a 2 s grace
        // detected as fast but closed healthy nodes' connections under
        // load: 6-26 of 1,000 simulated nodes marked down in a run; 2 s
        // with 1 s, none (bench/scale.sh counts them).
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(RaftService::authorized(store.raft().clone(), cluster_id))
        .add_service(ControlService::new(store.clone(), peers))
        .add_service(ExecService::new(store.clone(), dispatcher.clone(), relays))
        .add_service(DispatcherService::new(store.clone(), dispatcher))
        .add_service(CaService::new(store))
        .serve_with_incoming_shutdown(transport::incoming(listener, tls), async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}
