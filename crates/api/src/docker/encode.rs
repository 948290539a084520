//! Responses with the names the Docker daemon emits: its Go struct tags,
//! where they differ from the Engine API's swagger (which bollard's models
//! follow). Clients that decode as Go does accept either; docker-py hands
//! users the raw JSON, where the daemon's spelling is what scripts read.

use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;

/// Keys the swagger spells differently from dockerd's output, per object
/// that holds them: (object key, swagger's name, dockerd's name).
const GO_NAMES: &[(&str, &str, &str)] = &[("ContainerSpec", "HealthCheck", "Healthcheck")];

/// `value` as dockerd would write it.
pub fn to_value<T: Serialize>(value: &T) -> Result<Value, ApiError> {
    let mut v = serde_json::to_value(value)
        .map_err(|e| ApiError::internal(format!("encoding a response: {e}")))?;
    rename(&mut v);
    Ok(v)
}

fn rename(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (holder, swagger, go) in GO_NAMES {
                if let Some(Value::Object(inner)) = map.get_mut(*holder) {
                    if let Some(x) = inner.remove(*swagger) {
                        inner.insert(go.to_string(), x);
                    }
                }
            }
            map.values_mut().for_each(rename);
        }
        Value::Array(items) => items.iter_mut().for_each(rename),
        _ => {}
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
                health_check: Some(HealthConfig {
                    retries: Some(3),
                    ..Default::default()
                }),
                labels: Some([("HealthCheck".to_string(), "a label".to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = to_value(&vec![spec]).unwrap();
        let c = &v[0]["ContainerSpec"];
        assert_eq!(c["Healthcheck"]["Retries"], 3);
        assert!(c.get("HealthCheck").is_none());
        // Labels are data: never renamed.
        assert_eq!(c["Labels"]["HealthCheck"], "a label");
    }
}
