//! `/swarm`: init, inspect, update (token rotation), leave, join.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use flotilla_store::models::{SwarmInitRequest, SwarmJoinRequest, SwarmSpec, SwarmUnlockRequest};
use serde::Deserialize;

use super::{json_body, truthy, version_param, Params};
use crate::error::{ApiError, ApiResult};
use crate::node::Daemon;

pub async fn init(State(d): State<Arc<Daemon>>, body: Bytes) -> ApiResult<Json<String>> {
    let req: SwarmInitRequest = json_body(&body)?;
    Ok(Json(d.init(req).await?))
}

pub async fn inspect(State(d): State<Arc<Daemon>>) -> ApiResult<impl IntoResponse> {
    let store = d.store().await?;
    let mut swarm = store
        .read(|s| s.cluster.clone())
        .ok_or(flotilla_manager::Error::NotInSwarm)?;
    // A swarm made by an older version shows the values it runs with too.
    swarm.spec = swarm
        .spec
        .map(flotilla_manager::controlapi::swarm::with_defaults);
    swarm.tls_info = swarm.tls_info.map(flotilla_manager::ca::with_issuer);
    swarm.root_rotation_in_progress.get_or_insert(false);
    Ok(Json(swarm))
}

#[derive(Deserialize)]
pub struct UpdateQuery {
    version: Option<String>,
    #[serde(rename = "rotateWorkerToken")]
    rotate_worker: Option<String>,
    #[serde(rename = "rotateManagerToken")]
    rotate_manager: Option<String>,
    #[serde(rename = "rotateManagerUnlockKey")]
    rotate_unlock: Option<String>,
}

pub async fn update(
    State(d): State<Arc<Daemon>>,
    Params(q): Params<UpdateQuery>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let store = d.store().await?;
    let version = version_param(&q.version)?;
    let spec: SwarmSpec = json_body(&body)?;
    flotilla_manager::controlapi::swarm::update(
        &store,
        version,
        spec,
        truthy(&q.rotate_worker),
        truthy(&q.rotate_manager),
        truthy(&q.rotate_unlock),
    )
    .await?;
    Ok(StatusCode::OK)
}

#[derive(Deserialize)]
pub struct LeaveQuery {
    force: Option<String>,
}

pub async fn leave(
    State(d): State<Arc<Daemon>>,
    Params(q): Params<LeaveQuery>,
) -> ApiResult<StatusCode> {
    d.leave(truthy(&q.force)).await?;
    Ok(StatusCode::OK)
}

pub async fn join(State(d): State<Arc<Daemon>>, body: Bytes) -> ApiResult<StatusCode> {
    let req: SwarmJoinRequest = json_body(&body)?;
    d.join(req).await?;
    Ok(StatusCode::OK)
}

/// `GET /swarm/unlockkey`: the key of a swarm with autolock; an empty one
/// without (the CLI then says "no unlock key is set"), as dockerd answers.
pub async fn unlock_key(State(d): State<Arc<Daemon>>) -> ApiResult<Json<serde_json::Value>> {
    let store = d.store().await?;
    let key = store.read(|s| s.unlock_key.clone()).unwrap_or_default();
    Ok(Json(serde_json::json!({ "UnlockKey": key })))
}

/// `POST /swarm/unlock`: a locked manager takes its key (401 for one that
/// does not open its keys); any other node answers 409 "swarm is not locked".
pub async fn unlock(State(d): State<Arc<Daemon>>, body: Bytes) -> ApiResult<StatusCode> {
    let req: SwarmUnlockRequest = if body.is_empty() {
        SwarmUnlockRequest::default()
    } else {
        json_body(&body)?
    };
    if d.locked().await.is_none() {
        // dockerd's order: a node outside any swarm says so first.
        d.store().await?;
        return Err(ApiError::new(StatusCode::CONFLICT, "swarm is not locked"));
    }
    d.unlock(req.unlock_key.as_deref().unwrap_or_default())
        .await?;
    Ok(StatusCode::OK)
}
