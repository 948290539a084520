//! The task as the store keeps it: Docker's Task fields (so the Engine API
//! serves them as they are), plus Flotilla's own per-task state in typed
//! fields ([`TaskRuntime`]) that the API never shows.
//!
//! Until this type, that state lived in `com.flotilla.*` labels, visible in
//! `docker service ps` and `inspect`. Data written then still loads: see
//! [`Task::take_legacy_labels`].

use std::collections::HashMap;
use std::net::Ipv4Addr;

use bollard::models::{
    EndpointPortConfig, GenericResources, ObjectVersion, TaskSpec, TaskState, TaskStatus,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Task {
    #[serde(rename = "ID", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "Version", skip_serializing_if = "Option::is_none")]
    pub version: Option<ObjectVersion>,
    #[serde(rename = "CreatedAt", skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(rename = "UpdatedAt", skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(rename = "Name", skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Boxed: nothing sets a task's own labels (SwarmKit leaves them
    /// empty too), and inline the map took 48 of every task's bytes.
    #[serde(rename = "Labels", skip_serializing_if = "Option::is_none")]
    pub labels: Option<Box<HashMap<String, String>>>,
    #[serde(rename = "Spec", skip_serializing_if = "Option::is_none")]
    pub spec: Option<std::sync::Arc<TaskSpec>>,
    #[serde(rename = "ServiceID", skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    #[serde(rename = "Slot", skip_serializing_if = "Option::is_none")]
    pub slot: Option<i64>,
    #[serde(rename = "NodeID", skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(
        rename = "AssignedGenericResources",
        skip_serializing_if = "Option::is_none"
    )]
    pub assigned_generic_resources: Option<GenericResources>,
    #[serde(rename = "Status", skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    #[serde(rename = "DesiredState", skip_serializing_if = "Option::is_none")]
    pub desired_state: Option<TaskState>,
    /// Docker's view of the task's networks; never stored (the API makes
    /// it from [`TaskRuntime::networks`] and the network objects).
    #[serde(
        rename = "NetworksAttachments",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub networks_attachments: Option<Vec<serde_json::Value>>,
    #[serde(rename = "JobIteration", skip_serializing_if = "Option::is_none")]
    pub job_iteration: Option<ObjectVersion>,
    /// Flotilla's own state: kept in the store and sent to the agent, never
    /// shown by the API (which clears it).
    #[serde(
        rename = "Flotilla",
        default,
        skip_serializing_if = "TaskRuntime::is_empty"
    )]
    pub runtime: TaskRuntime,
    /// The index of the last write to the task that its node acts on:
    /// any but a status report, which the node made itself (SwarmKit's
    /// dispatcher does not send those back either). This manager's own
    /// bookkeeping: never stored or sent, and the task's version after a
    /// load.
    #[serde(skip)]
    pub assignment_index: u64,
}

/// What Flotilla knows of a task beyond Docker's fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskRuntime {
    /// The service's ports when the task was made: the executor publishes
    /// their target ports (Docker's Task carries the service's Endpoint).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPortConfig>,
    /// The task's address on the ingress network (the routing mesh's):
    /// what `tasks.<name>` answers for a service with ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<Ipv4Addr>,
    /// Its address on each swarm network its service is attached to, in
    /// the order of the service's networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Attachment>,
    /// When it was first reported RUNNING (RFC 3339): the status timestamp
    /// moves on with every report, and the updater needs how long a task ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since: Option<String>,
    /// The rolling update that made it (the update's state and start), if
    /// the updater did: such a task wanted READY is prepared at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<String>,
    /// The service's name when the task was made: the executor names and
    /// labels containers after it (SwarmKit's task carries the service's
    /// annotations; Docker's Task shows none of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The service's labels when the task was made, for templates
    /// (`{{.Service.Labels}}` in a templated secret or config).
    /// Shared by the service's tasks in the state (as the template is):
    /// a stack's services all have labels, and a copy per task was most of
    /// a task's memory.
    #[serde(default, skip_serializing_if = "no_labels")]
    pub service_labels: std::sync::Arc<std::collections::BTreeMap<String, String>>,
    /// The registry credentials the node pulls the task's image with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<RegistryAuth>,
}

/// Registry credentials as the client sent them (`X-Registry-Auth`:
/// base64url JSON). Never printed: its Debug is redacted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RegistryAuth(pub String);

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryAuth(<redacted>)")
    }
}

/// A task's place on a swarm network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The network's ID.
    pub network: String,
    pub addr: Ipv4Addr,
}

fn no_labels(labels: &std::sync::Arc<std::collections::BTreeMap<String, String>>) -> bool {
    labels.is_empty()
}

impl TaskRuntime {
    pub fn is_empty(&self) -> bool {
        self == &TaskRuntime::default()
    }
}

/// The labels that held [`TaskRuntime`] before it had fields of its own.
mod legacy {
    pub const PORTS: &str = "com.flotilla.ports";
    pub const ADDR: &str = "com.flotilla.addr";
    pub const RUNNING_SINCE: &str = "com.flotilla.running-since";
    pub const UPDATE: &str = "com.flotilla.update";
    pub const SERVICE_NAME: &str = "com.docker.swarm.service.name";
}

impl Task {
    /// Moves Flotilla's state out of the labels that carried it in data
    /// written before [`TaskRuntime`] existed (Raft logs and snapshots of an
    /// older version), so such a data directory loads as if written today.
    pub fn take_legacy_labels(&mut self) {
        let Some(labels) = self.labels.as_mut() else {
            return;
        };
        if let Some(json) = labels.remove(legacy::PORTS) {
            self.runtime.ports = serde_json::from_str(&json).unwrap_or_default();
        }
        if let Some(cidr) = labels.remove(legacy::ADDR) {
            self.runtime.addr = cidr.split('/').next().and_then(|ip| ip.parse().ok());
        }
        if let Some(at) = labels.remove(legacy::RUNNING_SINCE) {
            self.runtime.running_since = Some(at);
        }
        if let Some(update) = labels.remove(legacy::UPDATE) {
            self.runtime.update = Some(update);
        }
        if let Some(name) = labels.remove(legacy::SERVICE_NAME) {
            self.runtime.service_name = Some(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_written_in_labels_by_older_versions_moves_to_typed_fields() {
        let old = serde_json::json!({
            "ID": "t1",
            "Labels": {
                "com.flotilla.ports": "[{\"Protocol\":\"tcp\",\"TargetPort\":80,\"PublishedPort\":8080}]",
                "com.flotilla.addr": "198.18.0.7/16",
                "com.flotilla.running-since": "2026-12-04T10:00:00Z",
                "com.flotilla.update": "updating 2026-12-04T09:59:00Z",
                "com.docker.swarm.service.name": "web",
                "user": "kept"
            }
        });
        let mut t: Task = serde_json::from_value(old).unwrap();
        t.take_legacy_labels();
        assert_eq!(t.runtime.ports[0].target_port, Some(80));
        assert_eq!(t.runtime.addr, Some(Ipv4Addr::new(198, 18, 0, 7)));
        assert_eq!(
            t.runtime.running_since.as_deref(),
            Some("2026-12-04T10:00:00Z")
        );
        assert_eq!(
            t.runtime.update.as_deref(),
            Some("updating 2026-12-04T09:59:00Z")
        );
        assert_eq!(t.runtime.service_name.as_deref(), Some("web"));
        let labels = t.labels.unwrap();
        assert_eq!(labels.len(), 1, "{labels:?}");
        assert_eq!(labels["user"], "kept");
    }

    #[test]
    fn docker_fields_round_trip_and_an_empty_runtime_is_not_written() {
        let t = Task {
            id: Some("t".into()),
            slot: Some(1),
            ..Default::default()
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v, serde_json::json!({"ID": "t", "Slot": 1}));
        let back: Task = serde_json::from_value(v).unwrap();
        assert_eq!(back, t);
    }
}
