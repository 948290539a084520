//! `/secrets` and `/configs`: create, list (filters id, label, name,
//! names), inspect, update (labels only), remove. A secret's data is never
//! shown; a config's is, as Docker shows them. Services cannot use either
//! yet (issue 12's delivery): a spec that refers to one is refused.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flotilla_manager::controlapi::secret::{self as control, DataSpec};
use flotilla_store::models::ObjectVersion;
use flotilla_store::secrets::{DataKind, DataObject};
use serde::{Deserialize, Serialize};

use super::{docker_json, json_body, version_param, Id, Params};
use crate::error::{ApiError, ApiResult};
use crate::filters::Filters;
use crate::node::Daemon;

/// Docker's SecretSpec / ConfigSpec as clients send them.
#[derive(Deserialize, Default)]
pub struct SpecBody {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Labels", default)]
    labels: Option<HashMap<String, String>>,
    #[serde(rename = "Data", default)]
    data: Option<String>,
    #[serde(rename = "Driver", default)]
    driver: Option<DriverBody>,
    #[serde(rename = "Templating", default)]
    templating: Option<DriverBody>,
}

#[derive(Deserialize, Default)]
struct DriverBody {
    #[serde(rename = "Name", default)]
    name: String,
}

impl SpecBody {
    pub fn into_spec(self) -> DataSpec {
        DataSpec {
            name: self.name,
            labels: self.labels.unwrap_or_default().into_iter().collect(),
            data: self.data,
            driver: self.driver.map(|d| d.name).filter(|n| !n.is_empty()),
            templating: self.templating.map(|d| d.name).filter(|n| !n.is_empty()),
        }
    }
}

/// Docker's Secret / Config, in its Go structs' order.
#[derive(Serialize)]
struct Shown {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Version")]
    version: ObjectVersion,
    #[serde(rename = "CreatedAt")]
    created_at: String,
    #[serde(rename = "UpdatedAt")]
    updated_at: String,
    #[serde(rename = "Spec")]
    spec: ShownSpec,
}

#[derive(Serialize)]
struct ShownSpec {
    #[serde(rename = "Name")]
    name: String,
    /// Always an object (`{}` when empty), as dockerd shows these.
    #[serde(rename = "Labels")]
    labels: BTreeMap<String, String>,
    /// Configs only.
    #[serde(rename = "Data", skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(rename = "Templating", skip_serializing_if = "Option::is_none")]
    templating: Option<ShownDriver>,
}

#[derive(Serialize)]
struct ShownDriver {
    #[serde(rename = "Name")]
    name: String,
}

fn shown(kind: DataKind, o: &DataObject) -> Shown {
    Shown {
        id: o.id.clone(),
        version: ObjectVersion {
            index: Some(o.version),
        },
        created_at: o.created_at.clone(),
        updated_at: o.updated_at.clone(),
        spec: ShownSpec {
            name: o.name.clone(),
            labels: o.labels.clone(),
            data: (kind == DataKind::Config).then(|| o.data.clone()),
            templating: o.templating.clone().map(|name| ShownDriver { name }),
        },
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    filters: Option<String>,
}

async fn list(d: &Daemon, kind: DataKind, q: ListQuery) -> ApiResult<Response> {
    let f = Filters::parse(q.filters.as_deref(), &["id", "label", "name", "names"])?;
    let store = d.store().await?;
    let out: Vec<Shown> = store.read(|s| {
        s.data_objects(kind)
            .values()
            .filter(|o| f.any("id", |v| o.id.starts_with(v)))
            .filter(|o| f.any("name", |v| o.name.starts_with(v)))
            .filter(|o| f.any("names", |v| o.name == v))
            .filter(|o| {
                let labels: HashMap<String, String> = o.labels.clone().into_iter().collect();
                f.labels("label", Some(&labels))
            })
            .map(|o| shown(kind, o))
            .collect()
    });
    docker_json(&out)
}

async fn create(
    d: &Daemon,
    kind: DataKind,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let store = d.store().await?;
    let spec: SpecBody = json_body(&body)?;
    let id = control::create(&store, kind, spec.into_spec()).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "ID": id }))))
}

async fn inspect(d: &Daemon, kind: DataKind, key: String) -> ApiResult<Response> {
    let store = d.store().await?;
    let found = store
        .read(|s| s.find_data(kind, &key).map(|o| shown(kind, o)))
        .ok_or_else(|| ApiError::not_found(format!("{} {key} not found", kind.name())))?;
    docker_json(&found)
}

#[derive(Deserialize)]
pub struct UpdateQuery {
    version: Option<String>,
}

async fn update(
    d: &Daemon,
    kind: DataKind,
    key: String,
    q: UpdateQuery,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let store = d.store().await?;
    let version = version_param(&q.version)?;
    let spec: SpecBody = json_body(&body)?;
    control::update(&store, kind, &key, version, spec.into_spec()).await?;
    Ok(StatusCode::OK)
}

async fn remove(d: &Daemon, kind: DataKind, key: String) -> ApiResult<StatusCode> {
    let store = d.store().await?;
    control::remove(&store, kind, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn respond<T: IntoResponse>(r: ApiResult<T>) -> Response {
    match r {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn secret_list(State(d): State<Arc<Daemon>>, Params(q): Params<ListQuery>) -> Response {
    respond(list(d.as_ref(), DataKind::Secret, q).await)
}

pub async fn config_list(State(d): State<Arc<Daemon>>, Params(q): Params<ListQuery>) -> Response {
    respond(list(d.as_ref(), DataKind::Config, q).await)
}

pub async fn secret_create(State(d): State<Arc<Daemon>>, body: Bytes) -> Response {
    respond(create(d.as_ref(), DataKind::Secret, body).await)
}

pub async fn config_create(State(d): State<Arc<Daemon>>, body: Bytes) -> Response {
    respond(create(d.as_ref(), DataKind::Config, body).await)
}

pub async fn secret_inspect(State(d): State<Arc<Daemon>>, Id(id): Id) -> Response {
    respond(inspect(d.as_ref(), DataKind::Secret, id).await)
}

pub async fn config_inspect(State(d): State<Arc<Daemon>>, Id(id): Id) -> Response {
    respond(inspect(d.as_ref(), DataKind::Config, id).await)
}

pub async fn secret_update(
    State(d): State<Arc<Daemon>>,
    Id(id): Id,
    Params(q): Params<UpdateQuery>,
    body: Bytes,
) -> Response {
    respond(update(d.as_ref(), DataKind::Secret, id, q, body).await)
}

pub async fn config_update(
    State(d): State<Arc<Daemon>>,
    Id(id): Id,
    Params(q): Params<UpdateQuery>,
    body: Bytes,
) -> Response {
    respond(update(d.as_ref(), DataKind::Config, id, q, body).await)
}

pub async fn secret_remove(State(d): State<Arc<Daemon>>, Id(id): Id) -> Response {
    respond(remove(d.as_ref(), DataKind::Secret, id).await)
}

pub async fn config_remove(State(d): State<Arc<Daemon>>, Id(id): Id) -> Response {
    respond(remove(d.as_ref(), DataKind::Config, id).await)
}
