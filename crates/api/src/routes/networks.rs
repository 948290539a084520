//! `/networks`: swarm networks are Flotilla's (its store), local ones
//! (bridge, host, none, the user's bridges) the Docker Engine's beside it,
//! and the two are shown together as on a Swarm manager. A request about
//! a swarm network is never passed to the engine, whose "This node is not
//! a swarm manager" would be wrong about this node.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use flotilla_manager::controlapi::network as control;
use flotilla_store::models::{Network, NetworkCreateRequest};
use flotilla_store::networks::LOCAL_LABEL;
use flotilla_store::ops::service_networks;
use flotilla_store::Store;
use serde::Deserialize;

use super::{docker_json, Id, Params};
use crate::docker::network::resource;
use crate::error::{ApiError, ApiResult};
use crate::filters::Filters;
use crate::node::Daemon;
use crate::passthrough;

/// Filters `GET /networks` and `POST /networks/prune` take, as dockerd's.
const LIST_FILTERS: [&str; 7] = ["dangling", "driver", "id", "label", "name", "scope", "type"];

/// The store when this node is a manager of a swarm; `None` sends the
/// request to the engine as before there was a swarm.
async fn store_of(d: &Daemon) -> Option<Store> {
    d.store().await.ok()
}

fn forward_with(
    d: Arc<Daemon>,
    parts: axum::http::request::Parts,
    body: Bytes,
) -> impl std::future::Future<Output = Response> {
    passthrough::forward(State(d), Request::from_parts(parts, Body::from(body)))
}

/// `POST /networks/create`.
pub async fn create(State(d): State<Arc<Daemon>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // The route's middleware has read the body already.
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let decoded = serde_json::from_slice(&bytes)
        .ok()
        .and_then(|v| crate::docker::decode::from_value::<NetworkCreateRequest>(v).ok());
    // A body that does not decode goes to the engine, which says what is
    // wrong with it, as for any local network.
    let Some(request) = decoded.filter(control::is_swarm_request) else {
        return forward_with(d, parts, bytes).await;
    };
    match create_swarm(d.as_ref(), request).await {
        Ok(id) => (
            StatusCode::CREATED,
            axum::Json(serde_json::json!({ "Id": id, "Warning": "" })),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn create_swarm(d: &Daemon, request: NetworkCreateRequest) -> ApiResult<String> {
    let store = d.store().await?;
    let spec = control::validate(request)?;
    Ok(control::create(&store, spec).await?)
}

#[derive(Deserialize)]
pub struct ListQuery {
    filters: Option<String>,
}

/// `GET /networks`: the engine's local networks and the swarm's.
pub async fn list(
    State(d): State<Arc<Daemon>>,
    Params(q): Params<ListQuery>,
    req: Request,
) -> Response {
    let query = req.uri().query().unwrap_or_default().to_string();
    match list_all(d.as_ref(), q, &query).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn list_all(d: &Daemon, q: ListQuery, query: &str) -> ApiResult<Response> {
    let filters = Filters::parse(q.filters.as_deref(), &LIST_FILTERS)?;
    let mut out: Vec<serde_json::Value> = Vec::new();
    if d.local().engine.is_some() {
        let path = if query.is_empty() {
            "/networks".to_string()
        } else {
            format!("/networks?{query}")
        };
        let (status, body) = passthrough::ask(d, Method::GET, &path, Bytes::new()).await?;
        if !status.is_success() {
            return Ok((status, body).into_response());
        }
        let local: Vec<serde_json::Value> = serde_json::from_slice(&body)
            .map_err(|e| ApiError::internal(format!("the Docker Engine's network list: {e}")))?;
        // The bridges Flotilla makes on a node for swarm networks are the
        // swarm networks' own business.
        out.extend(
            local
                .into_iter()
                .filter(|n| n["Labels"].get(LOCAL_LABEL).is_none()),
        );
    }
    if let Some(store) = store_of(d).await {
        let local_node = d.place().await.map(|p| p.node_id);
        let swarm: Vec<serde_json::Value> = store.read(|s| {
            s.networks
                .values()
                .filter(|n| matches(&filters, n, s))
                .filter_map(|n| serde_json::to_value(resource(n, s, local_node.as_deref())).ok())
                .collect()
        });
        out.extend(swarm);
    }
    docker_json(&out)
}

/// Docker's network filters on a swarm network.
fn matches(f: &Filters, n: &Network, state: &flotilla_store::State) -> bool {
    let labels: HashMap<String, String> = n.spec.labels.clone().into_iter().collect();
    f.any("driver", |v| v == "overlay")
        && f.any("id", |v| n.id.contains(v))
        && f.any("name", |v| n.name().contains(v))
        && f.any("scope", |v| v == "swarm")
        && f.any("type", |v| v == "custom")
        && f.labels("label", Some(&labels))
        && f.any("dangling", |v| {
            let dangling = !in_use(state, n);
            match v {
                "1" | "true" => dangling,
                "0" | "false" => !dangling,
                _ => false,
            }
        })
}

fn in_use(state: &flotilla_store::State, n: &Network) -> bool {
    state.services.values().any(|s| {
        if n.is_ingress() {
            flotilla_store::ops::uses_ingress(s)
        } else {
            service_networks(s).iter().any(|id| id == &n.id)
        }
    })
}

#[derive(Deserialize)]
pub struct InspectQuery {
    scope: Option<String>,
}

/// `GET /networks/{id}`: a swarm network by ID, name or ID prefix, else
/// the engine's (`scope=local` asks the engine only, `scope=swarm` the
/// swarm only).
pub async fn inspect(
    State(d): State<Arc<Daemon>>,
    Id(key): Id,
    Params(q): Params<InspectQuery>,
    req: Request,
) -> Response {
    let scope = q.scope.unwrap_or_default();
    if scope != "local" {
        if let Some(store) = store_of(d.as_ref()).await {
            let local_node = d.place().await.map(|p| p.node_id);
            let found = store.read(|s| {
                s.find_network(&key)
                    .map(|n| resource(n, s, local_node.as_deref()))
            });
            match found {
                Some(n) => return docker_json(&n).into_response(),
                None if scope == "swarm" => {
                    return ApiError::not_found(format!("network {key} not found")).into_response()
                }
                None => {}
            }
        }
    }
    passthrough::forward(State(d), req).await
}

/// `DELETE /networks/{id}`.
pub async fn remove(State(d): State<Arc<Daemon>>, Id(key): Id, req: Request) -> Response {
    if let Some(store) = store_of(d.as_ref()).await {
        if store.read(|s| s.find_network(&key).is_some()) {
            return match control::remove(&store, &key).await {
                Ok(()) => StatusCode::NO_CONTENT.into_response(),
                Err(e) => ApiError::from(e).into_response(),
            };
        }
    }
    passthrough::forward(State(d), req).await
}

#[derive(Deserialize)]
pub struct PruneQuery {
    filters: Option<String>,
}

/// `POST /networks/prune`: the engine's unused local networks (never the
/// bridges Flotilla keeps for swarm networks) and the swarm's unused ones.
pub async fn prune(State(d): State<Arc<Daemon>>, Params(q): Params<PruneQuery>) -> Response {
    match prune_all(d.as_ref(), q).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn prune_all(d: &Daemon, q: PruneQuery) -> ApiResult<Response> {
    let filters = Filters::parse(q.filters.as_deref(), &["label", "label!", "until"])?;
    let mut deleted: Vec<String> = Vec::new();
    if d.local().engine.is_some() {
        let mut raw: serde_json::Map<String, serde_json::Value> = q
            .filters
            .as_deref()
            .filter(|f| !f.is_empty())
            .and_then(|f| serde_json::from_str(f).ok())
            .unwrap_or_default();
        let not_ours = raw.entry("label!").or_insert_with(|| serde_json::json!({}));
        if let Some(m) = not_ours.as_object_mut() {
            m.insert(LOCAL_LABEL.to_string(), serde_json::Value::Bool(true));
        }
        let encoded = super::percent_encode(&serde_json::Value::Object(raw).to_string());
        let path = format!("/networks/prune?filters={encoded}");
        let (status, body) = passthrough::ask(d, Method::POST, &path, Bytes::new()).await?;
        if !status.is_success() {
            return Ok((status, body).into_response());
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        deleted.extend(
            v["NetworksDeleted"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str().map(str::to_string)),
        );
    }
    if let Some(store) = store_of(d).await {
        let until = filters
            .get("until")
            .and_then(|v| v.first())
            .map(|v| until_cutoff(v))
            .transpose()?;
        let keep = |n: &Network| {
            let labels: HashMap<String, String> = n.spec.labels.clone().into_iter().collect();
            let label_ok = filters.labels("label", Some(&labels))
                && filters.get("label!").is_none_or(|vals| {
                    !vals.iter().any(|want| match want.split_once('=') {
                        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
                        None => labels.contains_key(want.as_str()),
                    })
                });
            let old_enough = until.as_ref().is_none_or(|cut| {
                flotilla_store::ids::parse_time(&n.created_at).is_some_and(|t| t < *cut)
            });
            !(label_ok && old_enough)
        };
        deleted.extend(control::prune(&store, keep).await?);
    }
    let deleted = (!deleted.is_empty()).then_some(deleted);
    docker_json(&serde_json::json!({ "NetworksDeleted": deleted }))
}

/// `until` as Docker takes it: a Unix timestamp or an RFC 3339 time, or
/// a duration before now (`24h`).
pub fn until_cutoff(v: &str) -> ApiResult<chrono::DateTime<chrono::Utc>> {
    if let Ok(secs) = v.parse::<f64>() {
        return chrono::DateTime::from_timestamp(secs as i64, 0)
            .ok_or_else(|| ApiError::bad_request(format!("invalid until filter {v:?}")));
    }
    if let Some(t) = flotilla_store::ids::parse_time(v) {
        return Ok(t);
    }
    humantime_like(v)
        .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
        .ok_or_else(|| ApiError::bad_request(format!("invalid until filter {v:?}")))
}

/// Go's duration syntax for whole units: `90m`, `24h`, `1h30m`, `45s`.
fn humantime_like(v: &str) -> Option<chrono::Duration> {
    let mut total = 0i64;
    let mut num = String::new();
    for c in v.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    num.is_empty()
        .then(|| chrono::Duration::try_seconds(total))
        .flatten()
}

/// `POST /networks/{id}/connect` and `/disconnect`: standalone containers
/// on swarm networks are not something Flotilla does yet; local networks
/// are the engine's.
pub async fn connect(State(d): State<Arc<Daemon>>, Id(key): Id, req: Request) -> Response {
    if let Some(store) = store_of(d.as_ref()).await {
        if let Some(name) = store.read(|s| s.find_network(&key).map(|n| n.name().to_string())) {
            return ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                format!("connecting containers to the swarm network {name} is not supported by Flotilla yet: run them as services on it"),
            )
            .into_response();
        }
    }
    passthrough::forward(State(d), req).await
}

/// `POST /containers/create`: a container that names a swarm network (its
/// network mode or an endpoint) is refused here, with the reason, rather
/// than passed to the engine, which does not know the network ("network
/// front not found" would be wrong); any other goes on to the engine.
pub async fn container_create(State(d): State<Arc<Daemon>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    if let Some(store) = store_of(d.as_ref()).await {
        let named = container_networks(&bytes);
        let swarm = store.read(|s| {
            named
                .iter()
                .find_map(|n| s.find_network(n).map(|net| net.name().to_string()))
        });
        if let Some(name) = swarm {
            return ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                format!("running a standalone container on the swarm network {name} is not supported by Flotilla yet: run it as a service on that network"),
            )
            .into_response();
        }
    }
    forward_with(d, parts, bytes).await
}

/// The networks a container create request names.
pub fn container_networks(body: &Bytes) -> Vec<String> {
    #[derive(Deserialize, Default)]
    struct Host {
        #[serde(rename = "NetworkMode", default)]
        network_mode: Option<String>,
    }
    #[derive(Deserialize, Default)]
    struct Networking {
        #[serde(rename = "EndpointsConfig", default)]
        endpoints: Option<HashMap<String, serde_json::Value>>,
    }
    #[derive(Deserialize)]
    struct Create {
        #[serde(rename = "HostConfig", default)]
        host: Option<Host>,
        #[serde(rename = "NetworkingConfig", default)]
        networking: Option<Networking>,
    }
    let Some(create) = serde_json::from_slice(body)
        .ok()
        .and_then(|v| crate::docker::decode::from_value::<Create>(v).ok())
    else {
        return Vec::new();
    };
    let mode = create.host.and_then(|h| h.network_mode);
    let endpoints = create
        .networking
        .and_then(|n| n.endpoints)
        .unwrap_or_default();
    mode.into_iter()
        .chain(endpoints.into_keys())
        .filter(|n| !["", "default", "bridge", "host", "none"].contains(&n.as_str()))
        .filter(|n| !n.starts_with("container:"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_create_names_its_networks() {
        let body = |s: &'static str| container_networks(&Bytes::from_static(s.as_bytes()));
        assert_eq!(
            body(
                r#"{"HostConfig":{"NetworkMode":"front"},"NetworkingConfig":{"EndpointsConfig":{"back":{}}}}"#
            ),
            ["front", "back"]
        );
        assert!(body(r#"{"HostConfig":{"NetworkMode":"bridge"}}"#).is_empty());
        assert!(body(r#"{"hostconfig":{"networkmode":"container:abc"}}"#).is_empty());
        assert_eq!(body(r#"{"hostconfig":{"networkmode":"front"}}"#), ["front"]);
        assert!(body("not json").is_empty());
    }
}
