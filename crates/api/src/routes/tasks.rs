//! `/tasks`: list with Docker's filters (and the CLI's internal
//! `_up-to-date`), inspect.

use std::sync::Arc;

use axum::extract::State;
use flotilla_manager::orchestrator::is_up_to_date;
use flotilla_store::models::Task;
use flotilla_store::state::{node_hostname, service_name, State as StoreState, TaskExt};
use serde::Deserialize;

use super::{docker_json, Id, Params};
use crate::docker::shown;
use crate::error::{ApiError, ApiResult};
use crate::filters::Filters;
use crate::node::Daemon;

#[derive(Deserialize)]
pub struct ListQuery {
    filters: Option<String>,
}

/// A task's name as Docker derives it: `<service>.<slot>` or, for global
/// services, `<service>.<node id>`.
pub fn task_name(state: &StoreState, t: &Task) -> String {
    let svc = state
        .services
        .get(t.service())
        .map(service_name)
        .unwrap_or_default();
    if t.slot_no() > 0 {
        format!("{svc}.{}", t.slot_no())
    } else {
        format!("{svc}.{}", t.node().unwrap_or_default())
    }
}

fn matches(state: &StoreState, f: &Filters, t: &Task) -> bool {
    let svc = state.services.get(t.service());
    f.any("id", |v| t.id_str().starts_with(v))
        && f.any("name", |v| task_name(state, t).starts_with(v))
        && f.any("service", |v| {
            t.service() == v || svc.is_some_and(|s| service_name(s) == v)
        })
        && f.any("node", |v| {
            t.node().is_some_and(|n| {
                n == v
                    || state
                        .nodes
                        .get(n)
                        .is_some_and(|node| node_hostname(node) == v)
            })
        })
        && f.any("desired-state", |v| t.desired().to_string() == v)
        // SwarmKit matches a task's labels filter against its service's
        // labels (the task's ServiceAnnotations): how `docker stack ps`
        // finds a stack's tasks.
        && f.labels(
            "label",
            svc.and_then(|s| s.spec.as_ref())
                .and_then(|s| s.labels.as_ref())
                .or(t.labels.as_deref()),
        )
        && f.any("_up-to-date", |v| {
            let want = matches!(v, "true" | "1");
            svc.is_some_and(|s| is_up_to_date(s, t)) == want
        })
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    Params(q): Params<ListQuery>,
) -> ApiResult<axum::response::Response> {
    let f = Filters::parse(
        q.filters.as_deref(),
        &[
            "id",
            "name",
            "service",
            "node",
            "desired-state",
            "label",
            "_up-to-date",
        ],
    )?;
    if let Some(states) = f.get("desired-state") {
        if let Some(bad) = states
            .iter()
            .find(|s| !matches!(s.as_str(), "running" | "shutdown" | "accepted"))
        {
            return Err(ApiError::bad_request(format!(
                "Invalid task desired state: {bad}"
            )));
        }
    }
    let store = d.store().await?;
    let tasks = store.read(|s| {
        s.tasks
            .values()
            .filter(|t| matches(s, &f, t))
            .map(|t| shown::task(t, s))
            .collect::<Vec<_>>()
    });
    docker_json(&tasks)
}

pub async fn inspect(
    State(d): State<Arc<Daemon>>,
    Id(id): Id,
) -> ApiResult<axum::response::Response> {
    let store = d.store().await?;
    let task = store
        .read(|s| s.find_task(&id).map(|t| shown::task(t, s)))
        .ok_or_else(|| ApiError::not_found(format!("task {id} not found")))?;
    docker_json(&task)
}
