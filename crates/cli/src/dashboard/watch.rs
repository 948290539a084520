//! Keeps the aggregate current: one task reads the daemon's nodes,
//! services, tasks and networks whenever its event stream says something
//! changed (at most 4 times a second) and every few seconds regardless
//! (Docker sends no events for tasks); another follows `GET /events` and
//! keeps the last events for the timeline. Both retry a daemon that went
//! away, and the hub says so to every page.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::{Network, Node, Service, Task};
use http_body_util::BodyExt;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, watch, Notify};

use super::model::{self, Info};
use crate::client::{query, Client};

/// Events arriving closer together than this share one read of the daemon.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// The safety net: a read this often even without events.
const PERIOD: Duration = Duration::from_secs(2);
/// How soon a daemon that did not answer is asked again.
const RETRY: Duration = Duration::from_secs(1);
/// A read that takes longer is a daemon that does not answer (a paused or
/// partitioned manager keeps its socket open and says nothing).
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Events a page that opens later still sees on its timeline.
const KEPT_EVENTS: usize = 200;

/// What every page sees now.
#[derive(Debug, Default, Clone)]
pub(crate) struct Snapshot {
    /// The aggregate as JSON, or `None` before the first read.
    pub model: Option<Arc<str>>,
    /// Whether the last read of the daemon succeeded.
    pub connected: bool,
    /// Why it did not.
    pub error: Option<String>,
}

/// The latest snapshot for every page, and the events as they come.
pub(crate) struct Hub {
    pub snapshot: watch::Sender<Snapshot>,
    pub events: broadcast::Sender<Arc<str>>,
    /// The last events (JSON), oldest first; guarded by a std mutex: held
    /// for a push or a copy, never across an await.
    recent: Mutex<VecDeque<Arc<str>>>,
}

impl Hub {
    pub(crate) fn new() -> Arc<Hub> {
        Arc::new(Hub {
            snapshot: watch::Sender::new(Snapshot::default()),
            events: broadcast::Sender::new(256),
            recent: Mutex::new(VecDeque::new()),
        })
    }

    pub(crate) fn recent_events(&self) -> Vec<Arc<str>> {
        self.recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn push_event(&self, event: Arc<str>) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == KEPT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        let _ = self.events.send(event);
    }

    /// Publishes a read's outcome; pages hear of it only if it changed.
    fn publish(&self, read: Result<String, String>) {
        self.snapshot.send_if_modified(|snapshot| {
            let next = match read {
                Ok(json) => Snapshot {
                    connected: true,
                    error: None,
                    model: match &snapshot.model {
                        Some(old) if **old == *json => Some(old.clone()),
                        _ => Some(json.into()),
                    },
                },
                Err(error) => Snapshot {
                    connected: false,
                    error: Some(error),
                    model: snapshot.model.clone(),
                },
            };
            let changed = next.connected != snapshot.connected
                || next.error != snapshot.error
                || !same_model(&next.model, &snapshot.model);
            *snapshot = next;
            changed
        });
    }
}

fn same_model(a: &Option<Arc<str>>, b: &Option<Arc<str>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Runs until the process ends: the events follower and the reader.
pub(crate) async fn run(client: Client, hub: Arc<Hub>) {
    let changed = Arc::new(Notify::new());
    let follower = tokio::spawn(follow_events(client.clone(), hub.clone(), changed.clone()));
    loop {
        let read = match tokio::time::timeout(READ_TIMEOUT, read_model(&client)).await {
            Ok(read) => read,
            Err(_) => Err(format!(
                "the daemon did not answer within {} s",
                READ_TIMEOUT.as_secs()
            )),
        };
        let wait = if read.is_ok() { PERIOD } else { RETRY };
        hub.publish(read);
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        tokio::time::sleep(DEBOUNCE).await;
        if follower.is_finished() {
            return;
        }
    }
}

/// One read of the daemon, aggregated and encoded.
async fn read_model(client: &Client) -> Result<String, String> {
    let (info, nodes, services, tasks, networks) = tokio::join!(
        client.get::<Value>("/info"),
        client.get::<Vec<Node>>("/nodes"),
        client.get::<Vec<Service>>("/services"),
        client.get::<Vec<Task>>("/tasks"),
        client.get::<Vec<Network>>("/networks"),
    );
    let info = info.map_err(|e| e.to_string())?;
    let nodes = nodes.map_err(|e| e.to_string())?;
    let services = services.map_err(|e| e.to_string())?;
    let tasks = tasks.map_err(|e| e.to_string())?;
    let info = Info {
        name: text(&info["Name"]),
        version: text(&info["ServerVersion"]),
        cluster: text(&info["Swarm"]["Cluster"]["ID"]),
    };
    // Names for the networks' IDs; without them the page shows the IDs.
    let networks = networks.unwrap_or_default();
    let built = model::build(info, &nodes, &services, &tasks, &networks);
    serde_json::to_string(&built).map_err(|e| e.to_string())
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

/// An event as the timeline shows it.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct TimelineEvent {
    pub time: i64,
    pub kind: String,
    pub action: String,
    pub id: String,
    pub name: String,
    /// The `.new` attributes Docker attaches (state, availability,
    /// replicas, image, updatestate), as `key=value`.
    pub detail: String,
}

pub(crate) fn timeline_event(event: &Value) -> TimelineEvent {
    let attributes = &event["Actor"]["Attributes"];
    let mut detail: Vec<String> = attributes
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some(format!("{}={}", k.strip_suffix(".new")?, v.as_str()?)))
        .collect();
    detail.sort();
    TimelineEvent {
        time: event["time"].as_i64().unwrap_or(0),
        kind: text(&event["Type"]),
        action: text(&event["Action"]),
        id: text(&event["Actor"]["ID"]),
        name: text(&attributes["name"]),
        detail: detail.join(" "),
    }
}

/// Follows the swarm's events; each one goes to the timeline and asks for
/// a new read. A stream that ends or fails is opened again.
async fn follow_events(client: Client, hub: Arc<Hub>, changed: Arc<Notify>) {
    let filters = r#"{"type":{"service":true,"node":true,"network":true}}"#;
    let path = format!("/events{}", query(&[("filters", filters.to_string())]));
    loop {
        if let Ok(mut body) = client.stream(&path).await {
            // Whatever happened while the stream was down.
            changed.notify_one();
            let mut buffer = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buffer.extend_from_slice(&data);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    if let Ok(event) = serde_json::from_slice::<Value>(&line) {
                        if let Ok(json) = serde_json::to_string(&timeline_event(&event)) {
                            hub.push_event(json.into());
                        }
                        changed.notify_one();
                    }
                }
            }
        }
        changed.notify_one();
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_keep_their_new_attributes() {
        let event = serde_json::json!({
            "Type": "node", "Action": "update", "time": 1700000000,
            "Actor": {"ID": "abc", "Attributes": {"name": "worker01", "state.new": "down", "state.old": "ready"}}
        });
        let t = timeline_event(&event);
        assert_eq!(
            (t.kind.as_str(), t.name.as_str(), t.detail.as_str()),
            ("node", "worker01", "state=down")
        );
    }

    #[test]
    fn pages_hear_only_of_changes() {
        let hub = Hub::new();
        let mut rx = hub.snapshot.subscribe();
        hub.publish(Ok("{}".into()));
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        hub.publish(Ok("{}".into()));
        assert!(!rx.has_changed().unwrap());
        hub.publish(Err("Cannot connect".into()));
        assert!(rx.has_changed().unwrap());
        let s = rx.borrow_and_update().clone();
        assert!(!s.connected && s.model.is_some());
    }
}
