//! `GET /events`: the local Docker Engine's events and, on a manager, the
//! swarm's (services, nodes, networks, secrets, configs: create, update,
//! remove) on one stream, as a Swarm manager's dockerd gives them, with
//! Docker's actions, attributes (`name`; `image`, `replicas` and
//! `updatestate` `.old`/`.new` on a service; `state`, `role` and
//! `availability` on a node) and filters. Swarm events are made from the
//! store as it changes after the request: unlike the engine's, they are
//! not replayed with `since`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use flotilla_store::state::State as StoreState;
use futures::stream::{self, BoxStream, StreamExt};
use serde::Serialize;

use crate::error::ApiResult;
use crate::filters::Filters;
use crate::node::Daemon;

const FILTERS: &[&str] = &[
    "config",
    "container",
    "daemon",
    "event",
    "image",
    "label",
    "network",
    "node",
    "plugin",
    "scope",
    "secret",
    "service",
    "type",
    "volume",
];

/// One event, in Docker's JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    #[serde(rename = "Type")]
    pub kind: &'static str,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: &'static str,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

/// What events say of one object as of one state.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    kind: &'static str,
    version: u64,
    name: String,
    /// The fields whose changes an update event names.
    tracked: BTreeMap<&'static str, String>,
    labels: HashMap<String, String>,
}

type Snapshot = HashMap<String, Seen>;

fn snapshot(s: &StoreState) -> Snapshot {
    use flotilla_store::state::{service_name, version_of};
    let mut out = Snapshot::new();
    for (id, svc) in &s.services {
        let spec = svc.spec.as_ref();
        let mut tracked = BTreeMap::new();
        let image = spec
            .and_then(|s| s.task_template.as_ref())
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.image.clone());
        tracked.insert("image", image.unwrap_or_default());
        let replicas = spec
            .and_then(|s| s.mode.as_ref())
            .and_then(|m| m.replicated.as_ref())
            .and_then(|r| r.replicas);
        if let Some(r) = replicas {
            tracked.insert("replicas", r.to_string());
        }
        if let Some(state) = svc.update_status.as_ref().and_then(|u| u.state) {
            tracked.insert("updatestate", state.to_string());
        }
        out.insert(
            format!("service/{id}"),
            Seen {
                kind: "service",
                version: version_of(&svc.version),
                name: service_name(svc).to_string(),
                tracked,
                labels: spec.and_then(|s| s.labels.clone()).unwrap_or_default(),
            },
        );
    }
    for (id, node) in &s.nodes {
        let spec = node.spec.as_ref();
        let name = spec
            .and_then(|s| s.name.clone())
            .filter(|n| !n.is_empty())
            .or_else(|| node.description.as_ref().and_then(|d| d.hostname.clone()))
            .unwrap_or_default();
        let mut tracked = BTreeMap::new();
        let lower = |v: Option<String>| v.unwrap_or_default().to_lowercase();
        tracked.insert(
            "state",
            lower(
                node.status
                    .as_ref()
                    .and_then(|s| s.state)
                    .map(|s| s.to_string()),
            ),
        );
        tracked.insert(
            "role",
            lower(spec.and_then(|s| s.role).map(|r| r.to_string())),
        );
        tracked.insert(
            "availability",
            lower(spec.and_then(|s| s.availability).map(|a| a.to_string())),
        );
        out.insert(
            format!("node/{id}"),
            Seen {
                kind: "node",
                version: version_of(&node.version),
                name,
                tracked,
                labels: spec.and_then(|s| s.labels.clone()).unwrap_or_default(),
            },
        );
    }
    for (id, net) in &s.networks {
        out.insert(
            format!("network/{id}"),
            Seen {
                kind: "network",
                version: net.version,
                name: net.name().to_string(),
                tracked: BTreeMap::new(),
                labels: net.spec.labels.clone().into_iter().collect(),
            },
        );
    }
    for (kind, objects) in [("secret", &s.secrets), ("config", &s.configs)] {
        for (id, o) in objects {
            out.insert(
                format!("{kind}/{id}"),
                Seen {
                    kind,
                    version: o.version,
                    name: o.name.clone(),
                    tracked: BTreeMap::new(),
                    labels: o.labels.clone().into_iter().collect(),
                },
            );
        }
    }
    out
}

/// The events that take `old` to `new`, at `now` (Unix nanoseconds).
fn diff(old: &Snapshot, new: &Snapshot, now: i64) -> Vec<(Event, HashMap<String, String>)> {
    let event = |kind, action: &str, key: &str, attributes, labels: &HashMap<String, String>| {
        let id = key.split_once('/').map_or(key, |(_, id)| id).to_string();
        (
            Event {
                kind,
                action: action.to_string(),
                actor: Actor { id, attributes },
                scope: "swarm",
                time: now / 1_000_000_000,
                time_nano: now,
            },
            labels.clone(),
        )
    };
    let named = |s: &Seen| BTreeMap::from([("name".to_string(), s.name.clone())]);
    let mut out = Vec::new();
    for (key, now_seen) in new {
        match old.get(key) {
            None => out.push(event(
                now_seen.kind,
                "create",
                key,
                named(now_seen),
                &now_seen.labels,
            )),
            Some(before) if before.version != now_seen.version => {
                let mut attributes = named(now_seen);
                for (field, value) in &now_seen.tracked {
                    let was = before.tracked.get(field).cloned().unwrap_or_default();
                    if &was != value {
                        if !was.is_empty() {
                            attributes.insert(format!("{field}.old"), was);
                        }
                        attributes.insert(format!("{field}.new"), value.clone());
                    }
                }
                out.push(event(
                    now_seen.kind,
                    "update",
                    key,
                    attributes,
                    &now_seen.labels,
                ));
            }
            Some(_) => {}
        }
    }
    for (key, before) in old {
        if !new.contains_key(key) {
            out.push(event(
                before.kind,
                "remove",
                key,
                named(before),
                &before.labels,
            ));
        }
    }
    out.sort_by(|a, b| (a.0.kind, &a.0.actor.id).cmp(&(b.0.kind, &b.0.actor.id)));
    out
}

/// Whether `filters` let `event` through (Docker's rules: each filter
/// given must match; a name filter matches the actor's ID or name).
fn wanted(f: &Filters, event: &Event, labels: &HashMap<String, String>) -> bool {
    let name = event.actor.attributes.get("name").map(String::as_str);
    let by_object = |key: &str| {
        f.get(key).is_none()
            || (event.kind == key && f.any(key, |v| v == event.actor.id || Some(v) == name))
    };
    // `exec_create: sh -c …` is matched by `exec_create`, as dockerd does.
    let action = event
        .action
        .split_once(": ")
        .map_or(&*event.action, |(a, _)| a);
    f.any("type", |v| v == event.kind)
        && f.any("event", |v| v == event.action || v == action)
        && f.any("scope", |v| v == event.scope)
        && f.labels("label", Some(labels))
        && [
            "service",
            "node",
            "network",
            "secret",
            "config",
            "container",
        ]
        .iter()
        .all(|k| by_object(k))
        && ["image", "volume", "plugin", "daemon"]
            .iter()
            .all(|k| f.get(k).is_none())
}

/// The swarm's events from now on, as JSON lines.
fn swarm_events(store: flotilla_store::Store, f: Filters) -> BoxStream<'static, Bytes> {
    let changes = store.subscribe();
    let first = store.read(snapshot);
    let f = Arc::new(f);
    stream::unfold(
        (store, changes, first, VecDeque::<Bytes>::new()),
        move |(store, mut changes, mut seen, mut pending)| {
            let f = f.clone();
            async move {
                loop {
                    if let Some(line) = pending.pop_front() {
                        return Some((line, (store, changes, seen, pending)));
                    }
                    changes.changed().await.ok()?;
                    let next = store.read(snapshot);
                    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
                    for (event, labels) in diff(&seen, &next, now) {
                        if wanted(&f, &event, &labels) {
                            let mut line = serde_json::to_vec(&event).unwrap_or_default();
                            line.push(b'\n');
                            pending.push_back(Bytes::from(line));
                        }
                    }
                    seen = next;
                }
            }
        },
    )
    .boxed()
}

/// Events the API makes itself, outside the store (`exec` into tasks),
/// sent to every `/events` stream open on this node's API.
#[derive(Clone)]
pub struct LocalEvents(tokio::sync::broadcast::Sender<Event>);

/// Events kept for a reader that lags, before it misses some.
const LOCAL_BACKLOG: usize = 256;

impl Default for LocalEvents {
    fn default() -> Self {
        LocalEvents(tokio::sync::broadcast::channel(LOCAL_BACKLOG).0)
    }
}

impl LocalEvents {
    pub fn publish(&self, event: Event) {
        let _ = self.0.send(event);
    }

    /// From now on, those `f` wants, as JSON lines.
    fn lines(&self, f: Filters) -> BoxStream<'static, Bytes> {
        let rx = self.0.subscribe();
        stream::unfold((rx, f), |(mut rx, f)| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => {
                        if wanted(&f, &event, &HashMap::new()) {
                            let mut line = serde_json::to_vec(&event).unwrap_or_default();
                            line.push(b'\n');
                            return Some((Bytes::from(line), (rx, f)));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return None,
                }
            }
        })
        .boxed()
    }
}

/// An exec event of `task`'s container, as dockerd makes them (`exec_create:
/// CMD`, `exec_start: CMD`, `exec_die` with `exitCode`), with the swarm's
/// attributes of a task's container.
pub fn exec_event(
    task: &flotilla_store::models::Task,
    action: &str,
    exec_id: &str,
    exit_code: Option<i64>,
) -> Event {
    use flotilla_store::state::TaskExt;
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let container = task
        .status
        .as_ref()
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.container_id.clone())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| task.id_str().to_string());
    let name = flotilla_agent::exec::docker::container_name(task);
    let service_name = name.split('.').next().unwrap_or_default().to_string();
    let task_name = name.rsplit_once('.').map_or(&*name, |(n, _)| n).to_string();
    let mut attributes = BTreeMap::from([
        ("execID".to_string(), exec_id.to_string()),
        ("name".to_string(), name.clone()),
        (
            "com.docker.swarm.node.id".to_string(),
            task.node().unwrap_or_default().to_string(),
        ),
        (
            "com.docker.swarm.service.id".to_string(),
            task.service().to_string(),
        ),
        ("com.docker.swarm.service.name".to_string(), service_name),
        ("com.docker.swarm.task".to_string(), String::new()),
        (
            "com.docker.swarm.task.id".to_string(),
            task.id_str().to_string(),
        ),
        ("com.docker.swarm.task.name".to_string(), task_name),
    ]);
    let image = task
        .spec
        .as_ref()
        .and_then(|s| s.container_spec.as_ref())
        .and_then(|c| c.image.clone());
    if let Some(image) = image {
        attributes.insert("image".to_string(), image);
    }
    if let Some(code) = exit_code {
        attributes.insert("exitCode".to_string(), code.to_string());
    }
    Event {
        kind: "container",
        action: action.to_string(),
        actor: Actor {
            id: container,
            attributes,
        },
        scope: "local",
        time: now / 1_000_000_000,
        time_nano: now,
    }
}

#[derive(serde::Deserialize)]
pub struct EventsQuery {
    filters: Option<String>,
    /// Unix seconds (with a fraction) at which the stream ends.
    until: Option<String>,
}

/// How long until `until` (None: no end; zero: already past).
pub fn time_left(
    until: Option<&str>,
) -> Result<Option<std::time::Duration>, crate::error::ApiError> {
    let Some(raw) = until.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let at: f64 = raw.parse().map_err(|_| {
        crate::error::ApiError::bad_request(format!(
            "invalid until value {raw:?}: expected a Unix timestamp"
        ))
    })?;
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as f64 / 1e9;
    // A time too far ahead for a Duration (`until=1e30`, `inf`) is no end.
    Ok(std::time::Duration::try_from_secs_f64((at - now).max(0.0)).ok())
}

pub async fn events(
    State(d): State<Arc<Daemon>>,
    axum::Extension(local): axum::Extension<LocalEvents>,
    super::Params(q): super::Params<EventsQuery>,
    req: Request,
) -> ApiResult<Response> {
    let f = Filters::parse(q.filters.as_deref(), FILTERS)?;
    let scopes_swarm = f.any("scope", |v| v == "swarm");
    let scopes_local = f.any("scope", |v| v == "local");
    let left = time_left(q.until.as_deref())?;
    let mut streams: Vec<BoxStream<'static, Bytes>> = Vec::new();
    if scopes_local && left.is_none_or(|l| !l.is_zero()) {
        let events = local.lines(f.clone());
        streams.push(match left {
            Some(left) => events.take_until(tokio::time::sleep(left)).boxed(),
            None => events,
        });
    }
    if scopes_swarm && left.is_none_or(|l| !l.is_zero()) {
        if let Ok(store) = d.store().await {
            let events = swarm_events(store, f);
            streams.push(match left {
                // Ends with `until`, as the engine's stream does.
                Some(left) => events.take_until(tokio::time::sleep(left)).boxed(),
                None => events,
            });
        }
    }
    if scopes_local && d.local().engine.is_some() {
        let engine = crate::passthrough::open(&*d, req).await?;
        let body = engine
            .into_body()
            .into_data_stream()
            .filter_map(|chunk| async move { chunk.ok() })
            .boxed();
        streams.push(body);
    }
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream::select_all(streams).map(Ok::<Bytes, std::io::Error>)),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(kind: &'static str, version: u64, tracked: &[(&'static str, &str)]) -> Seen {
        Seen {
            kind,
            version,
            name: "web".into(),
            tracked: tracked.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            labels: HashMap::from([("tier".to_string(), "front".to_string())]),
        }
    }

    #[test]
    fn creates_updates_with_old_and_new_values_and_removes() {
        let old = Snapshot::from([
            (
                "service/s1".to_string(),
                seen("service", 1, &[("image", "a:1"), ("replicas", "2")]),
            ),
            ("secret/x1".to_string(), seen("secret", 3, &[])),
        ]);
        let new = Snapshot::from([
            (
                "service/s1".to_string(),
                seen(
                    "service",
                    5,
                    &[
                        ("image", "a:2"),
                        ("replicas", "2"),
                        ("updatestate", "updating"),
                    ],
                ),
            ),
            (
                "node/n1".to_string(),
                seen("node", 1, &[("state", "ready")]),
            ),
        ]);
        let events: Vec<Event> = diff(&old, &new, 1_700_000_000_123_456_789)
            .into_iter()
            .map(|(e, _)| e)
            .collect();
        let summary: Vec<(&str, &str, &str)> = events
            .iter()
            .map(|e| (e.kind, e.action.as_str(), e.actor.id.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("node", "create", "n1"),
                ("secret", "remove", "x1"),
                ("service", "update", "s1")
            ]
        );
        let update = &events[2].actor.attributes;
        assert_eq!(update["image.old"], "a:1");
        assert_eq!(update["image.new"], "a:2");
        assert_eq!(update["updatestate.new"], "updating");
        assert!(!update.contains_key("updatestate.old"));
        assert!(!update.contains_key("replicas.new"));
        assert_eq!(events[0].time, 1_700_000_000);
        let json = serde_json::to_value(&events[1]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"Type": "secret", "Action": "remove",
                "Actor": {"ID": "x1", "Attributes": {"name": "web"}},
                "scope": "swarm", "time": 1_700_000_000i64, "timeNano": 1_700_000_000_123_456_789i64})
        );
    }

    #[test]
    fn filters_select_by_type_event_name_and_label() {
        let (e, labels) = diff(
            &Snapshot::new(),
            &Snapshot::from([("service/s1".to_string(), seen("service", 1, &[]))]),
            0,
        )
        .remove(0);
        let f = |raw: &str| Filters::parse(Some(raw), FILTERS).unwrap();
        assert!(wanted(&f(r#"{"type":["service"]}"#), &e, &labels));
        assert!(!wanted(&f(r#"{"type":["node"]}"#), &e, &labels));
        assert!(wanted(
            &f(r#"{"event":["create"],"service":["web"]}"#),
            &e,
            &labels
        ));
        assert!(!wanted(&f(r#"{"service":["other"]}"#), &e, &labels));
        assert!(!wanted(&f(r#"{"node":["web"]}"#), &e, &labels));
        assert!(wanted(&f(r#"{"label":["tier=front"]}"#), &e, &labels));
        assert!(!wanted(&f(r#"{"container":["c1"]}"#), &e, &labels));
        assert!(!wanted(&f(r#"{"scope":["local"]}"#), &e, &labels));
    }
}
