//! Docker's Service object as dockerd writes it: bollard's generated model
//! lacks `PreviousSpec`, so the fields are written out here, in dockerd's
//! order (its Go struct's), which is the order they are encoded in.

use bollard::models::{
    ObjectVersion, ServiceEndpoint, ServiceJobStatus, ServiceServiceStatus, ServiceSpec,
    ServiceUpdateStatus,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    #[serde(rename = "ID", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "Version", default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ObjectVersion>,
    #[serde(rename = "CreatedAt", default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(rename = "UpdatedAt", default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(rename = "Spec", default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ServiceSpec>,
    #[serde(
        rename = "PreviousSpec",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub previous_spec: Option<ServiceSpec>,
    #[serde(rename = "Endpoint", default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<ServiceEndpoint>,
    #[serde(
        rename = "UpdateStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub update_status: Option<ServiceUpdateStatus>,
    #[serde(
        rename = "ServiceStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub service_status: Option<ServiceServiceStatus>,
    #[serde(rename = "JobStatus", default, skip_serializing_if = "Option::is_none")]
    pub job_status: Option<ServiceJobStatus>,
    /// Flotilla's own: kept in the store, never shown by the API.
    #[serde(
        rename = "Flotilla",
        default,
        skip_serializing_if = "ServiceRuntime::is_empty"
    )]
    pub runtime: ServiceRuntime,
}

/// What Flotilla keeps of a service beyond Docker's fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceRuntime {
    /// `--with-registry-auth`: the client's registry credentials, which
    /// the nodes pulling the image get with its tasks (dockerd keeps them
    /// in SwarmKit's PullOptions, which its API never shows either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<crate::task::RegistryAuth>,
}

impl ServiceRuntime {
    pub fn is_empty(&self) -> bool {
        self == &ServiceRuntime::default()
    }
}

impl From<bollard::models::Service> for Service {
    fn from(s: bollard::models::Service) -> Self {
        Service {
            id: s.id,
            version: s.version,
            created_at: s.created_at,
            updated_at: s.updated_at,
            spec: s.spec,
            previous_spec: None,
            endpoint: s.endpoint,
            update_status: s.update_status,
            service_status: s.service_status,
            job_status: s.job_status,
            runtime: ServiceRuntime::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_in_dockerds_order() {
        let s = Service {
            id: Some("s".into()),
            spec: Some(ServiceSpec::default()),
            previous_spec: Some(ServiceSpec::default()),
            endpoint: Some(ServiceEndpoint::default()),
            update_status: Some(ServiceUpdateStatus::default()),
            ..Default::default()
        };
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(
            text,
            r#"{"ID":"s","Spec":{},"PreviousSpec":{},"Endpoint":{},"UpdateStatus":{}}"#
        );
        assert_eq!(serde_json::from_str::<Service>(&text).unwrap(), s);
    }
}
