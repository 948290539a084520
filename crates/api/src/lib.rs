//! The daemon's front door: the Docker Engine API (swarm part) over a unix
//! socket or TCP.
//!
//! - [`node`]: what the API needs of the node behind it (built elsewhere).
//! - [`docker`]: Docker's JSON in and out, decoded as dockerd decodes it.
//! - [`routes`]: one module per API object.
//! - [`passthrough`]: the rest of the Engine API, sent to Docker.
//! - [`error`], [`filters`]: Docker's error bodies and `filters` parameter.
//! - [`listen`]: the listeners, and who may reach them (TLS, socket modes).

pub mod docker;
pub mod error;
pub mod filters;
pub mod listen;
pub mod node;
pub mod passthrough;
pub mod routes;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Router, ServiceExt};

use error::ApiError;
use listen::{Bound, Listen};
use node::Daemon;
use routes::{events, exec, logs, networks, nodes, secrets, services, swarm, system, tasks};

pub const API_VERSION: &str = "1.41";
pub const MIN_API_VERSION: &str = "1.24";
const NEWEST_ACCEPTED_MINOR: u32 = 47;
const OLDEST_ACCEPTED_MINOR: u32 = 24;

/// The request path before the version prefix was stripped, for the
/// pass-through (the engine wants the prefix the client sent).
#[derive(Clone)]
pub struct OriginalPath(pub String);

pub fn router(daemon: Arc<Daemon>) -> Router {
    let local_events = events::LocalEvents::default();
    daemon.serve_exec_relays(Arc::new(exec::RelayServer {
        daemon: Arc::downgrade(&daemon),
        events: local_events.clone(),
    }));
    Router::new()
        .route("/_ping", get(system::ping).head(system::ping))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/events", get(events::events))
        .route("/swarm", get(swarm::inspect))
        .route("/swarm/init", post(swarm::init))
        .route("/swarm/join", post(swarm::join))
        .route("/swarm/leave", post(swarm::leave))
        .route("/swarm/update", post(swarm::update))
        .route("/swarm/unlock", post(swarm::unlock))
        .route("/swarm/unlockkey", get(swarm::unlock_key))
        .route("/nodes", get(nodes::list))
        .route("/nodes/{id}", get(nodes::inspect).delete(nodes::remove))
        .route("/nodes/{id}/update", post(nodes::update))
        .route("/services", get(services::list))
        // dockerd's router takes GET and DELETE of /services/create to
        // /services/{id}: a service named "create".
        .route(
            "/services/create",
            post(services::create)
                .get(services::inspect)
                .delete(services::remove),
        )
        .route(
            "/services/{id}",
            get(services::inspect).delete(services::remove),
        )
        .route("/services/{id}/update", post(services::update))
        .route("/services/{id}/logs", get(logs::service))
        .route("/tasks", get(tasks::list))
        .route("/tasks/{id}", get(tasks::inspect))
        .route("/tasks/{id}/logs", get(logs::task))
        // Flotilla's own: `exec` into a task wherever it runs (routes/exec.rs).
        .route("/flotilla/v1/tasks/{id}/exec", post(exec::task))
        .route("/flotilla/v1/services/{id}/exec", post(exec::service))
        .route("/secrets", get(secrets::secret_list))
        .route(
            "/secrets/create",
            post(secrets::secret_create)
                .get(secrets::secret_inspect)
                .delete(secrets::secret_remove),
        )
        .route(
            "/secrets/{id}",
            get(secrets::secret_inspect).delete(secrets::secret_remove),
        )
        .route("/secrets/{id}/update", post(secrets::secret_update))
        .route("/configs", get(secrets::config_list))
        .route(
            "/configs/create",
            post(secrets::config_create)
                .get(secrets::config_inspect)
                .delete(secrets::config_remove),
        )
        .route(
            "/configs/{id}",
            get(secrets::config_inspect).delete(secrets::config_remove),
        )
        .route("/configs/{id}/update", post(secrets::config_update))
        .route("/networks", get(networks::list))
        .route("/containers/create", post(networks::container_create))
        // dockerd's router takes GET and DELETE of /networks/create to
        // /networks/{id}: a network named "create".
        .route(
            "/networks/create",
            post(networks::create)
                .get(networks::inspect)
                .delete(networks::remove),
        )
        .route("/networks/prune", post(networks::prune))
        .route(
            "/networks/{id}",
            get(networks::inspect).delete(networks::remove),
        )
        .route("/networks/{id}/connect", post(networks::connect))
        .route("/networks/{id}/disconnect", post(networks::connect))
        .route_layer(middleware::from_fn(routes::read_body))
        .method_not_allowed_fallback(routes::page_not_found)
        .fallback(fallback)
        .layer(axum::Extension(local_events))
        .with_state(daemon)
}

/// A request no route matched: under a swarm path it is dockerd's 404
/// `page not found`; anything else is the Docker Engine's to answer.
async fn fallback(State(d): State<Arc<Daemon>>, req: Request) -> Response {
    if routes::is_swarm_path(req.uri().path()) {
        routes::page_not_found(req).await.into_response()
    } else {
        passthrough::forward(State(d), req).await
    }
}

/// Splits `/v1.41/services` into (Some(41), "/services").
fn split_version(path: &str) -> (Option<Result<u32, String>>, &str) {
    let Some(rest) = path.strip_prefix("/v") else {
        return (None, path);
    };
    let (ver, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if !ver.starts_with(|c: char| c.is_ascii_digit()) {
        return (None, path);
    }
    let minor = ver
        .strip_prefix("1.")
        .and_then(|m| m.parse::<u32>().ok())
        .ok_or_else(|| ver.to_string());
    (Some(minor), tail)
}

/// Strips the `/vX.Y` prefix so routes are written once, and refuses
/// versions outside what Flotilla speaks, with Docker's wording.
fn strip_version(req: &mut Request) -> Result<(), ApiError> {
    let original = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let (version, tail) = split_version(req.uri().path());
    let Some(version) = version else {
        req.extensions_mut().insert(OriginalPath(original));
        return Ok(());
    };
    match version {
        Ok(minor) if minor > NEWEST_ACCEPTED_MINOR => {
            return Err(ApiError::bad_request(format!(
                "client version 1.{minor} is too new. Maximum supported API version is 1.{NEWEST_ACCEPTED_MINOR}"
            )))
        }
        Ok(minor) if minor < OLDEST_ACCEPTED_MINOR => {
            return Err(ApiError::bad_request(format!(
                "client version 1.{minor} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
            )))
        }
        Ok(_) => {}
        Err(v) => return Err(ApiError::bad_request(format!("invalid API version: {v}"))),
    }
    let new = match req.uri().query() {
        Some(q) => format!("{tail}?{q}"),
        None => tail.to_string(),
    };
    let uri: Uri = new
        .parse()
        .map_err(|_| ApiError::bad_request("invalid request path"))?;
    *req.uri_mut() = uri;
    req.extensions_mut().insert(OriginalPath(original));
    Ok(())
}

/// How long requests in flight get to finish once the API is told to stop;
/// streams (`logs --follow`, events) would never end on their own.
const DRAIN_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves the API on every `-H` address (see [`listen`]) until `stop` turns true: then no
/// new connection is taken, and those open get [`DRAIN_BOUND`] to finish.
pub async fn serve(
    daemon: Arc<Daemon>,
    listen: Listen,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let stopped = move || {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    let app = router(daemon);
    let service = tower::service_fn(move |mut req: Request| {
        let mut inner = app.clone();
        async move {
            match strip_version(&mut req) {
                Ok(()) => tower::Service::call(&mut inner, req).await,
                Err(e) => {
                    // Like every answer, after the body: the connection
                    // stays usable.
                    routes::read_to_end(req.into_body()).await;
                    Ok(e.into_response())
                }
            }
        }
    });
    let mut servers = tokio::task::JoinSet::new();
    for (host, listener) in listen.bind().await? {
        tracing::info!("API listening on {host}");
        let svc = ServiceExt::<Request>::into_make_service(service.clone());
        let stopped = stopped();
        match listener {
            Bound::Unix(l) => servers
                .spawn(async move { axum::serve(l, svc).with_graceful_shutdown(stopped).await }),
            Bound::Tcp(l) => servers
                .spawn(async move { axum::serve(l, svc).with_graceful_shutdown(stopped).await }),
            Bound::Tls(l) => servers
                .spawn(async move { axum::serve(l, svc).with_graceful_shutdown(stopped).await }),
        };
    }
    let mut stop_requested = Box::pin(stopped());
    tokio::select! {
        r = servers.join_next() => {
            if let Some(r) = r {
                r??;
            }
            return Ok(());
        }
        _ = &mut stop_requested => {}
    }
    let drained = tokio::time::timeout(DRAIN_BOUND, async {
        while let Some(r) = servers.join_next().await {
            r??;
        }
        anyhow::Ok(())
    })
    .await;
    match drained {
        Ok(r) => r,
        Err(_) => {
            tracing::info!("API: requests still open after {DRAIN_BOUND:?} closed");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefixes() {
        assert_eq!(
            split_version("/v1.41/services"),
            (Some(Ok(41)), "/services")
        );
        assert_eq!(split_version("/services"), (None, "/services"));
        assert_eq!(split_version("/volumes"), (None, "/volumes"));
        assert!(matches!(split_version("/v2.0/x").0, Some(Err(_))));
    }
}
