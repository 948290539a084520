//! `flotilla dashboard`: a live web page of the swarm, served by the client
//! on 127.0.0.1 and speaking only the Engine API to the daemon, through the
//! same connection every other command uses (`-H`, `DOCKER_HOST`, TLS), so
//! it works against a Docker Swarm manager too (docs/dashboard.md).
//!
//! - `auth`: the token and the origin rules.
//! - `watch`: reads and follows the daemon, keeps the aggregate current.
//! - `model`: the aggregate the page draws, built from the API's objects.
//! - `actions`: scale, image, rollback, restart, remove; node availability.
//! - `history`, `logs`: a service's tasks, and logs followed.
//! - `routes`: the HTTP routes; `assets/`: the page, inside the binary.

mod actions;
mod auth;
mod history;
mod logs;
mod model;
mod routes;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;

use crate::client::{CliError, Client, Result};
use crate::out;

#[derive(Args, Debug)]
pub struct DashboardArgs {
    /// Address to serve the dashboard on (port 0: a free one)
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0")]
    listen: String,
}

/// Serves the dashboard until Ctrl-C or SIGTERM.
pub async fn run(client: &Client, args: DashboardArgs) -> Result<()> {
    let listener = bind(&args.listen).await?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::Other(format!("cannot listen on {}: {e}", args.listen)))?;
    let token = auth::new_token()?;
    let hub = watch::Hub::new();
    let state = Arc::new(routes::AppState {
        client: client.clone(),
        guard: auth::Guard::new(token.clone(), local),
        hub: hub.clone(),
    });
    let watcher = tokio::spawn(watch::run(client.clone(), hub));
    out(&format!(
        "Dashboard: http://{}/?token={token}\n",
        shown(local)
    ));
    let served = tokio::select! {
        served = axum::serve(listener, routes::router(state)) => served,
        _ = stopped() => Ok(()),
    };
    watcher.abort();
    served.map_err(|e| CliError::Other(format!("dashboard server failed: {e}")))
}

/// `--listen HOST:PORT`, with a name looked up (`localhost:8080`).
async fn bind(listen: &str) -> Result<tokio::net::TcpListener> {
    let bad = |reason: String| CliError::Other(format!("cannot listen on {listen}: {reason}"));
    let mut addrs = tokio::net::lookup_host(listen)
        .await
        .map_err(|_| bad("expected HOST:PORT, e.g. 127.0.0.1:8080".to_string()))?;
    let addr = addrs
        .next()
        .ok_or_else(|| bad("the name has no address".to_string()))?;
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| bad(e.to_string()))
}

/// The address to print: a wildcard listener is reached on loopback.
fn shown(local: SocketAddr) -> SocketAddr {
    match local {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

async fn stopped() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
