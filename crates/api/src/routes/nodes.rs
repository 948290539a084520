//! `/nodes`: list, inspect, update, remove.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use flotilla_store::models::{Node, NodeSpec, NodeSpecRoleEnum};
use flotilla_store::state::node_hostname;
use serde::Deserialize;

use super::{json_body, truthy, version_param, Id, Params};
use flotilla_store::Store;

use crate::error::{ApiError, ApiResult};
use crate::filters::Filters;
use crate::node::Daemon;

#[derive(Deserialize)]
pub struct ListQuery {
    filters: Option<String>,
}

/// The node as the API shows it: leadership is live state, not stored.
fn present(store: &Store, mut node: Node) -> Node {
    if let Some(ms) = node.manager_status.as_mut() {
        let leader = store.leader().map(|(_, p)| p.node_id);
        ms.leader = Some(leader.is_some() && leader.as_deref() == node.id.as_deref());
    }
    node
}

fn role(n: &Node) -> &'static str {
    match n.spec.as_ref().and_then(|s| s.role) {
        Some(NodeSpecRoleEnum::MANAGER) => "manager",
        _ => "worker",
    }
}

pub async fn list(
    State(d): State<Arc<Daemon>>,
    Params(q): Params<ListQuery>,
) -> ApiResult<Json<Vec<Node>>> {
    let f = Filters::parse(
        q.filters.as_deref(),
        &["id", "name", "role", "membership", "label", "node.label"],
    )?;
    let store = d.store().await?;
    let nodes = store.read(|s| {
        s.nodes
            .values()
            .filter(|n| f.any("id", |v| n.id.as_deref().unwrap_or_default().starts_with(v)))
            .filter(|n| f.any("name", |v| node_hostname(n).starts_with(v)))
            .filter(|n| f.any("role", |v| v == role(n)))
            .filter(|_| f.any("membership", |v| v == "accepted"))
            .filter(|n| {
                f.labels(
                    "label",
                    n.description
                        .as_ref()
                        .and_then(|d| d.engine.as_ref())
                        .and_then(|e| e.labels.as_ref()),
                )
            })
            .filter(|n| {
                f.labels(
                    "node.label",
                    n.spec.as_ref().and_then(|s| s.labels.as_ref()),
                )
            })
            .cloned()
            .collect::<Vec<_>>()
    });
    Ok(Json(
        nodes.into_iter().map(|n| present(&store, n)).collect(),
    ))
}

pub async fn inspect(State(d): State<Arc<Daemon>>, Id(id): Id) -> ApiResult<Json<Node>> {
    let store = d.store().await?;
    let key = if id == "self" {
        store.node_id().to_string()
    } else {
        id
    };
    let node = store
        .read(|s| s.find_node(&key).cloned())
        .ok_or_else(|| ApiError::not_found(format!("node {key} not found")))?;
    Ok(Json(present(&store, node)))
}

#[derive(Deserialize)]
pub struct UpdateQuery {
    version: Option<String>,
}

pub async fn update(
    State(d): State<Arc<Daemon>>,
    Id(id): Id,
    Params(q): Params<UpdateQuery>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let store = d.store().await?;
    let version = version_param(&q.version)?;
    let spec: NodeSpec = json_body(&body)?;
    flotilla_manager::controlapi::node::update(&store, &id, version, spec).await?;
    Ok(StatusCode::OK)
}

#[derive(Deserialize)]
pub struct RemoveQuery {
    force: Option<String>,
}

pub async fn remove(
    State(d): State<Arc<Daemon>>,
    Id(id): Id,
    Params(q): Params<RemoveQuery>,
) -> ApiResult<StatusCode> {
    let store = d.store().await?;
    flotilla_manager::controlapi::node::remove(&store, &id, truthy(&q.force)).await?;
    Ok(StatusCode::OK)
}

pub fn is_down(n: &Node) -> bool {
    flotilla_store::state::NodeExt::is_down(n)
}
