//! The page's actions, each carried out through the Engine API as the
//! docker CLI's command for it does: read the service (or node) and its
//! version, change the spec, post it back. A refusal comes back with
//! Docker's message as it was written.

use bollard::models::Node;
use serde::Deserialize;

use crate::client::{encode, query, CliError, Client, Result};
use crate::service::{force_update, get_service, post_update, UpdateAuth};

/// One action on a service, as the page posts it.
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub(crate) enum ServiceAction {
    /// `service scale NAME=N`.
    Scale { replicas: u64 },
    /// `service update --image IMAGE`.
    Image { image: String },
    /// `service rollback`.
    Rollback,
    /// `service update --force`.
    Restart,
    /// `service rm`.
    Remove,
}

/// Carries out `action` on service `id`; returns what the page says.
pub(crate) async fn on_service(client: &Client, id: &str, action: ServiceAction) -> Result<String> {
    if let ServiceAction::Remove = action {
        client.delete(&format!("/services/{}", encode(id))).await?;
        return Ok("removed".to_string());
    }
    let (service, _) = get_service(client, id, false).await?;
    let mut spec = service.spec.clone().unwrap_or_default();
    let (rollback, auth, done) = match action {
        ServiceAction::Scale { replicas } => {
            let mode = spec.mode.get_or_insert_with(Default::default);
            if let Some(replicated) = mode.replicated.as_mut() {
                replicated.replicas = Some(replicas as i64);
            } else if let Some(job) = mode.replicated_job.as_mut() {
                job.total_completions = Some(replicas as i64);
            } else {
                return Err("scale can only be used with replicated or replicated-job mode".into());
            }
            (false, UpdateAuth::None, format!("scaled to {replicas}"))
        }
        ServiceAction::Image { image } => {
            if image.trim().is_empty() {
                return Err("an image is needed".into());
            }
            let task = spec.task_template.get_or_insert_with(Default::default);
            let container = task.container_spec.get_or_insert_with(Default::default);
            container.image = Some(image.trim().to_string());
            (
                false,
                UpdateAuth::FromSpec,
                format!("image set to {}", image.trim()),
            )
        }
        ServiceAction::Rollback => (true, UpdateAuth::None, "rolling back".to_string()),
        ServiceAction::Restart => {
            force_update(&mut spec);
            (false, UpdateAuth::FromSpec, "restarting".to_string())
        }
        ServiceAction::Remove => unreachable!("handled above"),
    };
    post_update(client, &service, &spec, rollback, auth, false).await?;
    Ok(done)
}

#[derive(Debug, Deserialize)]
pub(crate) struct Availability {
    pub availability: String,
}

/// `node update --availability active|pause|drain`.
pub(crate) async fn on_node(client: &Client, id: &str, change: Availability) -> Result<String> {
    let wanted = change.availability.to_lowercase();
    if !matches!(wanted.as_str(), "active" | "pause" | "drain") {
        return Err(CliError::Other(format!(
            "invalid availability \"{wanted}\""
        )));
    }
    let path = format!("/nodes/{}", encode(id));
    let node: Node = client.get(&path).await?;
    let mut spec = serde_json::to_value(node.spec.clone().unwrap_or_default())
        .map_err(|e| CliError::Other(e.to_string()))?;
    spec["Availability"] = serde_json::Value::String(wanted.clone());
    let version = node.version.as_ref().and_then(|v| v.index).unwrap_or(0);
    let update = format!(
        "{path}/update{}",
        query(&[("version", version.to_string())])
    );
    client.post(&update, Some(&spec)).await?;
    Ok(format!("availability set to {wanted}"))
}
