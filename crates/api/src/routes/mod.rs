//! The Engine API routes Flotilla answers itself; everything else goes to
//! the Docker Engine beside it (see [`crate::passthrough`]).

pub mod logs;
pub mod nodes;
pub mod services;
pub mod swarm;
pub mod system;
pub mod tasks;

use axum::body::Bytes;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};

/// Parses a JSON body the way Docker reports problems with one: 400 and
/// what is wrong, never a 422.
pub fn json_body<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty: a JSON object is required",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON in request body: {e}")))
}

/// Go's JSON decoder matches keys case-insensitively, so clients send
/// some keys in a case the Engine API's swagger (and so bollard's models)
/// spells differently. The ones that occur are renamed before parsing.
pub fn service_spec_body(body: &Bytes) -> ApiResult<flotilla_store::models::ServiceSpec> {
    let mut v: serde_json::Value = json_body(body)?;
    if let Some(c) = v
        .pointer_mut("/TaskTemplate/ContainerSpec")
        .and_then(|c| c.as_object_mut())
    {
        if let Some(h) = c.remove("Healthcheck") {
            c.entry("HealthCheck").or_insert(h);
        }
    }
    serde_json::from_value(v)
        .map_err(|e| ApiError::bad_request(format!("invalid service spec: {e}")))
}

/// Docker's booleans in query strings: `1`, `true`, `True`…
pub fn truthy(v: &Option<String>) -> bool {
    v.as_deref()
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// The `version` query parameter of an update, required.
pub fn version_param(v: &Option<String>) -> ApiResult<u64> {
    let raw = v.as_deref().ok_or_else(|| {
        ApiError::bad_request("invalid swarm version: version parameter is required")
    })?;
    raw.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid version '{raw}': must be a non-negative integer"
        ))
    })
}
