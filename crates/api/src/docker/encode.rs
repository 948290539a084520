//! Responses with the names the Docker daemon emits: its Go struct tags,
//! where they differ from the Engine API's swagger (which bollard's models
//! follow). Clients that decode as Go does accept either; docker-py hands
//! users the raw JSON, where the daemon's spelling is what scripts read.
//!
//! The JSON is written straight from the models, keys in struct order as
//! dockerd writes them (a `serde_json::Value` would sort them and cost a
//! tree per response), then the few differing keys are renamed in place.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::ApiError;

/// Keys the swagger spells differently from dockerd, each with what follows
/// it in the JSON: `{` marks an object-valued field. In the swarm objects
/// only ContainerSpec's health check is so spelled with an object value;
/// maps of user data (labels, options, sysctls) hold strings, so a label
/// named `HealthCheck` is never matched.
const GO_NAMES: &[(&[u8], &[u8])] = &[(b"\"HealthCheck\":{", b"\"Healthcheck\":{")];

/// `value` as dockerd would write it.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    let mut json = serde_json::to_vec(value)
        .map_err(|e| ApiError::internal(format!("encoding a response: {e}")))?;
    for (swagger, go) in GO_NAMES {
        rename(&mut json, swagger, go);
    }
    Ok(json)
}

/// A 200 response with `value` as dockerd would write it.
pub fn response<T: Serialize>(value: &T) -> Result<Response, ApiError> {
    let body = to_vec(value)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Replaces each `from` with `to` (the same length) in place. A key is
/// matched only where it opens: JSON strings escape their quotes, so
/// `"HealthCheck":{` cannot occur inside a string value.
fn rename(json: &mut [u8], from: &[u8], to: &[u8]) {
    debug_assert_eq!(from.len(), to.len());
    // memmem, not a byte-by-byte loop: task lists run to hundreds of KiB.
    let at: Vec<usize> = memchr::memmem::find_iter(json, from).collect();
    for i in at {
        json[i..i + to.len()].copy_from_slice(to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{HealthConfig, TaskSpec, TaskSpecContainerSpec};

    #[test]
    fn container_specs_say_healthcheck_as_dockerd_does() {
        let spec = TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some("busybox".into()),
                health_check: Some(HealthConfig {
                    retries: Some(3),
                    ..Default::default()
                }),
                labels: Some([("HealthCheck".to_string(), "{a label".to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let json = to_vec(&vec![spec]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let c = &v[0]["ContainerSpec"];
        assert_eq!(c["Healthcheck"]["Retries"], 3);
        assert!(c.get("HealthCheck").is_none());
        // Labels are data: never renamed.
        assert_eq!(c["Labels"]["HealthCheck"], "{a label");
        // Keys keep the models' order, as dockerd's structs give them.
        let text = String::from_utf8(json).unwrap();
        assert!(text.find("\"Image\"") < text.find("\"Labels\""), "{text}");
    }
}
