//! A service's task history: every task it has, shut down ones included,
//! newest first within each slot, with the error or message that ended it
//! (what `docker service ps` lists).

use std::collections::HashMap;

use bollard::models::{Node, Task};
use serde::Serialize;

use crate::client::{add_filter, date_text, filters_pair, query, Client, Filters, Result};
use crate::format::enum_text;

#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct HistoryRow {
    pub id: String,
    pub slot: i64,
    pub node: String,
    pub image: String,
    pub desired: String,
    pub state: String,
    pub since: String,
    pub error: String,
    pub message: String,
}

pub(crate) async fn read(client: &Client, service: &str) -> Result<Vec<HistoryRow>> {
    let (tasks, hosts) = tasks_with_hosts(client, "service", service).await?;
    Ok(rows(tasks, &hosts))
}

/// The tasks the filter `key=value` selects, and each node's hostname by
/// node ID (empty when the nodes cannot be read).
pub(crate) async fn tasks_with_hosts(
    client: &Client,
    key: &str,
    value: &str,
) -> Result<(Vec<Task>, HashMap<String, String>)> {
    let mut filters = Filters::new();
    add_filter(&mut filters, key, value);
    let tasks: Vec<Task> = client
        .get(&format!(
            "/tasks{}",
            query(&Vec::from_iter(filters_pair(&filters)))
        ))
        .await?;
    let nodes: Vec<Node> = client.get("/nodes").await.unwrap_or_default();
    let hosts = nodes
        .into_iter()
        .filter_map(|n| Some((n.id?, n.description?.hostname?)))
        .collect();
    Ok((tasks, hosts))
}

fn rows(tasks: Vec<Task>, hosts: &HashMap<String, String>) -> Vec<HistoryRow> {
    let mut rows: Vec<HistoryRow> = tasks
        .into_iter()
        .map(|t| {
            let status = t.status.unwrap_or_default();
            let node = t.node_id.unwrap_or_default();
            HistoryRow {
                id: t.id.unwrap_or_default(),
                slot: t.slot.unwrap_or(0),
                node: hosts.get(&node).cloned().unwrap_or(node),
                image: t
                    .spec
                    .and_then(|s| s.container_spec)
                    .and_then(|c| c.image)
                    .map(|i| i.split('@').next().unwrap_or_default().to_string())
                    .unwrap_or_default(),
                desired: enum_text(&t.desired_state),
                state: enum_text(&status.state),
                since: date_text(&status.timestamp).unwrap_or_default(),
                error: status.err.unwrap_or_default(),
                message: status.message.unwrap_or_default(),
            }
        })
        .collect();
    // RFC 3339 texts from one daemon: newer is later once parsed.
    let time = |r: &HistoryRow| chrono::DateTime::parse_from_rfc3339(&r.since).ok();
    rows.sort_by(|a, b| a.slot.cmp(&b.slot).then_with(|| time(b).cmp(&time(a))));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_within_a_slot() {
        let task = |id: &str, slot: i64, at: &str, state: &str| -> Task {
            serde_json::from_value(serde_json::json!({
                "ID": id, "Slot": slot, "NodeID": "n1", "DesiredState": "running",
                "Status": {"State": state, "Timestamp": at, "Err": if state == "failed" { "exit 1" } else { "" }},
                "Spec": {"ContainerSpec": {"Image": "busybox@sha256:1"}},
            }))
            .unwrap()
        };
        let hosts = HashMap::from([("n1".to_string(), "worker01".to_string())]);
        let r = rows(
            vec![
                task("a", 2, "2024-01-01T00:00:00Z", "running"),
                task("b", 1, "2024-01-01T00:00:01Z", "failed"),
                task("c", 1, "2024-01-01T00:00:09.5Z", "running"),
            ],
            &hosts,
        );
        let ids: Vec<&str> = r.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a"]);
        assert_eq!(
            (r[1].error.as_str(), r[1].node.as_str(), r[1].image.as_str()),
            ("exit 1", "worker01", "busybox")
        );
    }
}
