//! `/networks/create`: local networks (bridge, macvlan…) are the Docker
//! Engine's, as on a Swarm manager; a swarm-scoped (overlay) network is
//! Flotilla's to make, and until Flotilla has networks it says so rather
//! than pass the request on to the engine, whose "This node is not a swarm
//! manager" would be wrong about this node.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::node::Daemon;
use crate::passthrough;

pub async fn create(State(d): State<Arc<Daemon>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // The route's middleware has read the body already.
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    if !wants_swarm_scope(&bytes) {
        let req = Request::from_parts(parts, Body::from(bytes));
        return passthrough::forward(State(d), req).await;
    }
    if let Err(e) = d.store().await {
        return ApiError::from(e).into_response();
    }
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "overlay networks are not supported by Flotilla yet: services reach each other through published ports and their service names",
    )
    .into_response()
}

/// The fields of a network create request that decide whose it is.
#[derive(serde::Deserialize)]
struct Scope {
    #[serde(rename = "Driver", default)]
    driver: Option<String>,
    #[serde(rename = "Scope", default)]
    scope: Option<String>,
}

/// Whether the request asks for a swarm-scoped network: the overlay driver
/// or `Scope: swarm`. Keys are read as dockerd reads them
/// ([`crate::docker::decode`]); a body that does not decode goes to the
/// engine, which says what is wrong.
fn wants_swarm_scope(body: &Bytes) -> bool {
    let decoded = serde_json::from_slice(body)
        .ok()
        .and_then(|v| crate::docker::decode::from_value::<Scope>(v).ok());
    let Some(Scope { driver, scope }) = decoded else {
        return false;
    };
    let is = |v: Option<String>, want: &str| v.is_some_and(|v| v.eq_ignore_ascii_case(want));
    is(driver, "overlay") || is(scope, "swarm")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_or_swarm_scope_in_any_case_is_the_swarms() {
        let swarm = |s: &'static str| wants_swarm_scope(&Bytes::from_static(s.as_bytes()));
        assert!(swarm(include_str!(
            "../docker/testdata/stack_network_create.json"
        )));
        assert!(swarm(r#"{"name":"n","driver":"Overlay"}"#));
        assert!(swarm(r#"{"Name":"n","Driver":"macvlan","Scope":"swarm"}"#));
        assert!(!swarm(r#"{"Name":"n","Driver":"bridge"}"#));
        assert!(!swarm(r#"{"Name":"n"}"#));
        assert!(!swarm("not json"));
    }
}
