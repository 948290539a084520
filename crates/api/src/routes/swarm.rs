//! `/swarm`: init, inspect, update (token rotation), leave, join.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use flotilla_store::models::{SwarmInitRequest, SwarmJoinRequest, SwarmSpec};
use serde::Deserialize;

use super::{json_body, truthy, version_param};
use crate::daemon::Daemon;
use crate::error::{ApiError, ApiResult};

pub async fn init(State(d): State<Arc<Daemon>>, body: Bytes) -> ApiResult<Json<String>> {
    let req: SwarmInitRequest = json_body(&body)?;
    Ok(Json(d.init(req).await?))
}

pub async fn inspect(State(d): State<Arc<Daemon>>) -> ApiResult<impl IntoResponse> {
    let store = d.store().await?;
    let swarm = store
        .read(|s| s.cluster.clone())
        .ok_or_else(|| ApiError::unavailable(flotilla_manager::error::NOT_IN_SWARM))?;
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
    Query(q): Query<UpdateQuery>,
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
    Query(q): Query<LeaveQuery>,
) -> ApiResult<StatusCode> {
    d.leave(truthy(&q.force)).await?;
    Ok(StatusCode::OK)
}

pub async fn join(State(d): State<Arc<Daemon>>, body: Bytes) -> ApiResult<StatusCode> {
    let req: SwarmJoinRequest = json_body(&body)?;
    d.join(req).await?;
    Ok(StatusCode::OK)
}

pub async fn unlock_key() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "autolock is not supported by Flotilla yet: there is no unlock key",
    )
}
