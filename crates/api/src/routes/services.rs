//! `/services`: list (with `status=true` counts), create, inspect (with
//! `insertDefaults`), update (optimistic `version`, `rollback=previous`),
//! remove.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use flotilla_manager::orchestrator::{is_global, replicas};
use flotilla_store::models::*;
use flotilla_store::state::{service_name, State as StoreState, TaskExt};
use serde::Deserialize;

use super::{docker_json, service_spec_body, truthy, version_param, Id, Params};
use crate::docker::shown;
use crate::error::{ApiError, ApiResult};
use crate::filters::Filters;
use crate::node::Daemon;
use flotilla_manager::orchestrator::mode_name;

#[derive(Deserialize)]
pub struct ListQuery {
    filters: Option<String>,
    status: Option<String>,
}

/// RunningTasks and DesiredTasks as Docker counts them. A task being shut
/// down (drain, scale down, update) no longer counts as running, so the
/// figure never exceeds what is wanted.
pub fn status_of(state: &StoreState, svc: &Service) -> ServiceServiceStatus {
    use flotilla_manager::orchestrator::jobs::{iteration, job_of, Job};
    let id = svc.id.as_deref().unwrap_or_default();
    if let Some(job) = job_of(svc) {
        // SwarmKit's counts for a job: its current iteration's tasks only;
        // desired is MaxConcurrent, or a global job's tasks still to finish.
        let current = iteration(svc);
        let tasks: Vec<&Task> = state
            .tasks_of_service(id)
            .filter(|t| t.job_iteration.as_ref().map(|v| v.index.unwrap_or(0)) == Some(current))
            .collect();
        let count = |f: &dyn Fn(&Task) -> bool| tasks.iter().filter(|t| f(t)).count() as u64;
        let desired = match job {
            Job::Replicated { max_concurrent, .. } => max_concurrent,
            Job::Global => {
                count(&|t| t.state() != TaskState::COMPLETE && t.desired() == TaskState::COMPLETE)
            }
        };
        return ServiceServiceStatus {
            running_tasks: Some(count(&|t| t.state() == TaskState::RUNNING)),
            desired_tasks: Some(desired),
            completed_tasks: Some(count(&|t| t.state() == TaskState::COMPLETE)),
        };
    }
    let node_up = |t: &Task| {
        t.node()
            .and_then(|n| state.nodes.get(n))
            .is_some_and(|n| !super::nodes::is_down(n))
    };
    let running = state
        .tasks_of_service(id)
        .filter(|t| {
            t.state() == TaskState::RUNNING && t.desired() == TaskState::RUNNING && node_up(t)
        })
        .count() as u64;
    let desired = if is_global(svc) {
        state
            .tasks_of_service(id)
            .filter(|t| t.desired() == TaskState::RUNNING)
            .count() as u64
    } else {
        replicas(svc)
    };
    ServiceServiceStatus {
        running_tasks: Some(running),
        desired_tasks: Some(desired),
        completed_tasks: None,
    }
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    Params(q): Params<ListQuery>,
) -> ApiResult<axum::response::Response> {
    let f = Filters::parse(q.filters.as_deref(), &["id", "name", "label", "mode"])?;
    let store = d.store().await?;
    let with_status = truthy(&q.status);
    let out = store.read(|s| {
        s.services
            .values()
            .filter(|svc| {
                f.any("id", |v| {
                    svc.id.as_deref().unwrap_or_default().starts_with(v)
                })
            })
            .filter(|svc| f.any("name", |v| service_name(svc).starts_with(v)))
            .filter(|svc| f.any("mode", |v| v == mode_name(svc)))
            .filter(|svc| f.labels("label", svc.spec.as_ref().and_then(|s| s.labels.as_ref())))
            .map(|svc| {
                let mut svc = shown::service(svc);
                if with_status {
                    svc.service_status = Some(status_of(s, &svc));
                }
                svc
            })
            .collect::<Vec<_>>()
    });
    docker_json(&out)
}

/// `X-Registry-Auth` (`--with-registry-auth`), when the client sent it.
fn registry_auth(headers: &axum::http::HeaderMap) -> Option<flotilla_store::models::RegistryAuth> {
    headers
        .get("X-Registry-Auth")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(|v| flotilla_store::models::RegistryAuth(v.to_string()))
}

pub async fn create(
    State(d): State<Arc<Daemon>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<ServiceCreateResponse>)> {
    let store = d.store().await?;
    let spec = service_spec_body(&body)?;
    let auth = registry_auth(&headers);
    let id = flotilla_manager::controlapi::service::create(&store, spec, auth).await?;
    Ok((
        StatusCode::CREATED,
        Json(ServiceCreateResponse {
            id: Some(id),
            warnings: None,
        }),
    ))
}

#[derive(Deserialize)]
pub struct InspectQuery {
    #[serde(rename = "insertDefaults")]
    insert_defaults: Option<String>,
}

pub async fn inspect(
    State(d): State<Arc<Daemon>>,
    Id(id): Id,
    Params(q): Params<InspectQuery>,
) -> ApiResult<axum::response::Response> {
    let store = d.store().await?;
    let mut svc = store
        .read(|s| s.find_service(&id).map(shown::service))
        .ok_or_else(|| ApiError::not_found(format!("service {id} not found")))?;
    if truthy(&q.insert_defaults) {
        if let Some(spec) = svc.spec.as_mut() {
            insert_defaults(spec);
        }
        if let Some(spec) = svc.previous_spec.as_mut() {
            insert_defaults(spec);
        }
    }
    docker_json(&svc)
}

/// What Docker fills into a spec for `insertDefaults=true`.
fn insert_defaults(spec: &mut ServiceSpec) {
    let t = spec.task_template.get_or_insert_with(TaskSpec::default);
    let c = t
        .container_spec
        .get_or_insert_with(TaskSpecContainerSpec::default);
    c.stop_grace_period.get_or_insert(10_000_000_000);
    c.isolation
        .get_or_insert(TaskSpecContainerSpecIsolationEnum::DEFAULT);
    t.resources.get_or_insert_with(|| TaskSpecResources {
        limits: Some(Limit::default()),
        reservations: Some(ResourceObject::default()),
        ..Default::default()
    });
    let r = t
        .restart_policy
        .get_or_insert_with(TaskSpecRestartPolicy::default);
    r.condition
        .get_or_insert(TaskSpecRestartPolicyConditionEnum::ANY);
    r.delay.get_or_insert(5_000_000_000);
    r.max_attempts.get_or_insert(0);
    t.placement.get_or_insert_with(TaskSpecPlacement::default);
    t.force_update.get_or_insert(0);
    let u = spec
        .update_config
        .get_or_insert_with(ServiceSpecUpdateConfig::default);
    u.parallelism.get_or_insert(1);
    u.failure_action
        .get_or_insert(ServiceSpecUpdateConfigFailureActionEnum::PAUSE);
    u.monitor.get_or_insert(5_000_000_000);
    u.max_failure_ratio.get_or_insert(0.0);
    u.order
        .get_or_insert(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST);
    let rb = spec
        .rollback_config
        .get_or_insert_with(ServiceSpecRollbackConfig::default);
    rb.parallelism.get_or_insert(1);
    rb.failure_action
        .get_or_insert(ServiceSpecRollbackConfigFailureActionEnum::PAUSE);
    rb.monitor.get_or_insert(5_000_000_000);
    rb.max_failure_ratio.get_or_insert(0.0);
    rb.order
        .get_or_insert(ServiceSpecRollbackConfigOrderEnum::STOP_FIRST);
    let e = spec.endpoint_spec.get_or_insert_with(EndpointSpec::default);
    e.mode.get_or_insert(EndpointSpecModeEnum::VIP);
}

#[derive(Deserialize)]
pub struct UpdateQuery {
    version: Option<String>,
    rollback: Option<String>,
    #[serde(rename = "registryAuthFrom")]
    _registry_auth_from: Option<String>,
}

pub async fn update(
    State(d): State<Arc<Daemon>>,
    Id(id): Id,
    Params(q): Params<UpdateQuery>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> ApiResult<Json<ServiceUpdateResponse>> {
    let store = d.store().await?;
    let version = version_param(&q.version)?;
    let spec = service_spec_body(&body)?;
    let rollback = match q.rollback.as_deref() {
        None | Some("") => false,
        Some("previous") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unrecognized rollback option {other}"
            )))
        }
    };
    let auth = registry_auth(&headers);
    flotilla_manager::controlapi::service::update(&store, &id, version, spec, rollback, auth)
        .await?;
    Ok(Json(ServiceUpdateResponse { warnings: None }))
}

pub async fn remove(State(d): State<Arc<Daemon>>, Id(id): Id) -> ApiResult<StatusCode> {
    let store = d.store().await?;
    flotilla_manager::controlapi::service::remove(&store, &id).await?;
    Ok(StatusCode::OK)
}
