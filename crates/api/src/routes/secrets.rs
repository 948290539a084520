//! `/secrets` and `/configs`: swarm objects that Flotilla does not store
//! yet. A manager answers for them itself, never the engine beside it
//! (whose "This node is not a swarm manager" would be wrong here): there
//! are none to list, none to find, and creating one says it is not
//! supported yet. `docker stack rm`, which lists both, works meanwhile.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::Id;
use crate::error::{ApiError, ApiResult};
use crate::node::Daemon;

/// Which of the two a route is about, for its words.
#[derive(Clone, Copy)]
pub enum Kind {
    Secret,
    Config,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }
}

pub async fn list(State(d): State<Arc<Daemon>>) -> ApiResult<Json<Vec<serde_json::Value>>> {
    d.store().await?;
    Ok(Json(Vec::new()))
}

pub async fn create(kind: Kind, d: Arc<Daemon>) -> ApiError {
    if let Err(e) = d.store().await {
        return e.into();
    }
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!("{}s are not supported by Flotilla yet", kind.name()),
    )
}

pub async fn find(kind: Kind, d: Arc<Daemon>, id: String) -> ApiError {
    if let Err(e) = d.store().await {
        return e.into();
    }
    ApiError::not_found(format!("{} {id} not found", kind.name()))
}

pub async fn secret_create(State(d): State<Arc<Daemon>>) -> ApiError {
    create(Kind::Secret, d).await
}

pub async fn config_create(State(d): State<Arc<Daemon>>) -> ApiError {
    create(Kind::Config, d).await
}

pub async fn secret(State(d): State<Arc<Daemon>>, Id(id): Id) -> ApiError {
    find(Kind::Secret, d, id).await
}

pub async fn config(State(d): State<Arc<Daemon>>, Id(id): Id) -> ApiError {
    find(Kind::Config, d, id).await
}
