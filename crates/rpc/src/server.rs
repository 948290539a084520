//! The cluster port of a manager: every service on one TLS listener.

use std::sync::Arc;

use flotilla_manager::dispatcher::Dispatcher;
use flotilla_store::Store;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ca::CaService;
use crate::control::ControlService;
use crate::dispatcher::DispatcherService;
use crate::peers::Peers;
use crate::raft::RaftService;
use crate::transport;

/// Serves until `stop` turns true.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: TcpListener,
    cluster_id: String,
    tls: watch::Receiver<Arc<ServerConfig>>,
    store: Store,
    dispatcher: Arc<Dispatcher>,
    peers: Peers,
    mut stop: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(RaftService::authorized(store.raft().clone(), cluster_id))
        .add_service(ControlService::new(store.clone(), peers))
        .add_service(DispatcherService::new(store.clone(), dispatcher))
        .add_service(CaService::new(store))
        .serve_with_incoming_shutdown(transport::incoming(listener, tls), async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}
