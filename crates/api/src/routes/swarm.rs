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
    if truthy(&q.rotate_unlock) {
        return Err(ApiError::bad_request(
            "autolock is not supported by Flotilla yet: there is no unlock key to rotate",
        ));
    }
    flotilla_manager::controlapi::swarm::update(
        &store,
        version,
        spec,
        truthy(&q.rotate_worker),
        truthy(&q.rotate_manager),
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

/// `GET /swarm/unlockkey`: Flotilla's swarms are never autolocked, so
/// there is no key; dockerd answers that with an empty one (and the CLI
/// says "no unlock key is set").
pub async fn unlock_key(State(d): State<Arc<Daemon>>) -> ApiResult<Json<serde_json::Value>> {
    d.store().await?;
    Ok(Json(serde_json::json!({ "UnlockKey": "" })))
}

/// `POST /swarm/unlock`: a manager that runs is not locked (Flotilla never
/// locks one), which dockerd answers with 409 once the body (which may be
/// empty) has parsed.
pub async fn unlock(State(d): State<Arc<Daemon>>, body: Bytes) -> ApiResult<StatusCode> {
    if !body.is_empty() {
        let _: SwarmUnlockRequest = json_body(&body)?;
    }
    d.store().await?;
    Err(ApiError::new(StatusCode::CONFLICT, "swarm is not locked"))
}
