//! The node's task set from the assignment stream: the whole set first,
//! then changes applied to it (as SwarmKit's incremental assignments: a node
//! of 100 tasks gets one task when one changes). Routing tables go to the
//! session's routes watch, which outlives the stream, so the mesh keeps its
//! table across reconnections; secrets and configs to its data watch,
//! before the tasks that need them are published.

use std::net::IpAddr;
use std::sync::Arc;

use flotilla_store::models::Task;
use flotilla_store::state::TaskExt;
use futures::StreamExt;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;

use super::{in_id_order, Assignments, Data, Routes, SessionError, Update, UpdateStream};

/// The first messages of a stream from `addr`: the secrets and configs
/// the node's tasks need, if any (published to `data`), then the node's
/// whole task set.
pub async fn first(
    addr: &str,
    stream: &mut UpdateStream,
    data: &watch::Sender<Data>,
) -> Result<Vec<Arc<Task>>, SessionError> {
    let broken = |message: &str| SessionError::Protocol {
        addr: addr.to_string(),
        message: message.to_string(),
    };
    loop {
        match stream.next().await {
            Some(Ok(Update::Data(d))) => {
                data.send_replace(Arc::new(d));
            }
            Some(Ok(Update::Tasks(tasks))) => return Ok(in_order(tasks)),
            Some(Ok(
                Update::Changes { .. } | Update::Routes(_) | Update::Logs(_) | Update::Exec(_),
            )) => return Err(broken("did not send the tasks first")),
            Some(Err(e)) => return Err(e),
            None => return Err(broken("closed the assignment stream")),
        }
    }
}

/// Where the managers' requests to the node go: its log and exec servers.
#[derive(Clone)]
pub struct Requests {
    pub logs: UnboundedSender<flotilla_store::logs::LogRequest>,
    pub execs: UnboundedSender<flotilla_store::exec::ExecRequest>,
}

/// Follows the rest of the stream, keeping `tasks`, `routes` and `data`
/// current; each routing table is marked as this node's (`own_addr`, the
/// address it registered). Returns when the stream ends or nobody watches
/// `tasks`; dropping `tasks` then tells the worker the session broke.
pub async fn follow(
    mut stream: UpdateStream,
    tasks: watch::Sender<Assignments>,
    routes: watch::Sender<Routes>,
    own_addr: Option<IpAddr>,
    data: watch::Sender<Data>,
    requests: Requests,
) {
    while let Some(message) = stream.next().await {
        let next = match message {
            Ok(Update::Tasks(all)) => in_order(all),
            Ok(Update::Changes { updated, removed }) => {
                with_changes(&tasks.borrow(), updated, &removed)
            }
            Ok(Update::Routes(mut table)) => {
                table.own_addr = own_addr;
                routes.send_replace(Arc::new(table));
                continue;
            }
            Ok(Update::Data(d)) => {
                data.send_replace(Arc::new(d));
                continue;
            }
            Ok(Update::Logs(request)) => {
                let _ = requests.logs.send(*request);
                continue;
            }
            Ok(Update::Exec(request)) => {
                let _ = requests.execs.send(*request);
                continue;
            }
            Err(e @ SessionError::Protocol { .. }) => {
                tracing::warn!("agent: bad assignment message: {e}");
                return;
            }
            Err(_) => return,
        };
        if tasks.send(Arc::new(next)).is_err() {
            return;
        }
    }
}

/// The node's tasks after a `Changes` update, in task ID order: the tasks
/// that did not change are the same `Arc`s, copied over in runs between the
/// changed ones (found by binary search), so a change of one task among
/// hundreds costs no lookup per task.
pub fn with_changes(tasks: &[Arc<Task>], updated: Vec<Task>, removed: &[String]) -> Vec<Arc<Task>> {
    let mut sorted: Vec<Task> = updated;
    sorted.sort_by(|a, b| a.id_str().cmp(b.id_str()));
    // A task sent twice in one message: the later copy is the newer.
    let mut updated: Vec<Arc<Task>> = Vec::with_capacity(sorted.len());
    for t in sorted {
        match updated.last_mut() {
            Some(last) if last.id_str() == t.id_str() => *last = Arc::new(t),
            _ => updated.push(Arc::new(t)),
        }
    }
    let mut removed: Vec<&str> = removed.iter().map(String::as_str).collect();
    removed.sort_unstable();
    let mut next = Vec::with_capacity(tasks.len() + updated.len());
    let (mut rest, mut u, mut r) = (tasks, 0, 0);
    loop {
        // The next task ID that changes.
        let cut = match (updated.get(u), removed.get(r)) {
            (Some(t), Some(id)) => t.id_str().min(id),
            (Some(t), None) => t.id_str(),
            (None, Some(id)) => id,
            (None, None) => break,
        };
        let at = rest.partition_point(|t| t.id_str() < cut);
        next.extend_from_slice(&rest[..at]);
        rest = &rest[at..];
        if rest.first().is_some_and(|t| t.id_str() == cut) {
            rest = &rest[1..];
        }
        if removed.get(r).is_some_and(|id| *id == cut) {
            r += 1;
        }
        if let Some(t) = updated.get(u).filter(|t| t.id_str() == cut) {
            next.push(t.clone());
            u += 1;
        }
    }
    next.extend_from_slice(rest);
    next
}

/// A whole task set as received, in task ID order (as the manager sends it,
/// which [`with_changes`] and the worker rely on).
fn in_order(tasks: Vec<Task>) -> Vec<Arc<Task>> {
    let mut tasks: Vec<Arc<Task>> = tasks.into_iter().map(Arc::new).collect();
    if !in_id_order(&tasks) {
        tasks.sort_by(|a, b| a.id_str().cmp(b.id_str()));
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_store::network::RoutingTable;
    use flotilla_store::secrets::DataKind;

    fn task(id: &str, version: u64) -> Task {
        let mut t = Task {
            id: Some(id.into()),
            ..Default::default()
        };
        t.version = Some(flotilla_store::models::ObjectVersion {
            index: Some(version),
        });
        t
    }

    /// (id, version) of each task, in order.
    fn ids(tasks: &[Arc<Task>]) -> Vec<(String, u64)> {
        tasks
            .iter()
            .map(|t| (t.id_str().to_string(), t.version_index()))
            .collect()
    }

    fn stream(messages: Vec<Result<Update, SessionError>>) -> UpdateStream {
        futures::stream::iter(messages).boxed()
    }

    fn changes(updated: Vec<Task>, removed: &[&str]) -> Result<Update, SessionError> {
        Ok(Update::Changes {
            updated,
            removed: removed.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn data() -> watch::Sender<Data> {
        watch::channel(Data::default()).0
    }

    fn logs() -> Requests {
        Requests {
            logs: tokio::sync::mpsc::unbounded_channel().0,
            execs: tokio::sync::mpsc::unbounded_channel().0,
        }
    }

    fn secret(id: &str) -> flotilla_store::secrets::DataObject {
        flotilla_store::secrets::DataObject {
            id: id.into(),
            version: 1,
            created_at: String::new(),
            updated_at: String::new(),
            name: id.into(),
            labels: Default::default(),
            data: String::new(),
            templating: None,
        }
    }

    #[tokio::test]
    async fn secrets_are_published_before_the_tasks_that_need_them() {
        use flotilla_store::secrets::NodeData;
        let with = |ids: &[&str]| NodeData {
            secrets: ids.iter().map(|id| secret(id)).collect(),
            configs: Vec::new(),
        };
        let mut s = stream(vec![
            Ok(Update::Data(with(&["s1"]))),
            Ok(Update::Tasks(vec![task("a", 1)])),
            Ok(Update::Data(with(&["s1", "s2"]))),
            changes(vec![task("b", 1)], &[]),
        ]);
        let (data_tx, data_rx) = watch::channel(Data::default());
        let all = first("m:2377", &mut s, &data_tx).await.unwrap();
        assert_eq!(ids(&all), vec![("a".into(), 1)]);
        assert!(data_rx.borrow().get(DataKind::Secret, "s1").is_some());
        let (tasks, mut rx) = watch::channel(Arc::new(all));
        // Whenever the worker sees task b, s2 is already there.
        let seen = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let has_b = rx.borrow().iter().any(|t| t.id_str() == "b");
                if has_b {
                    return data_rx.borrow().get(DataKind::Secret, "s2").is_some();
                }
            }
            false
        });
        follow(
            s,
            tasks,
            watch::channel(Routes::default()).0,
            None,
            data_tx,
            logs(),
        )
        .await;
        assert!(seen.await.unwrap());
    }

    #[test]
    fn changes_replace_add_and_remove_in_id_order() {
        let tasks: Vec<Arc<Task>> = ["a", "b", "c"].map(|id| Arc::new(task(id, 1))).into();
        let next = with_changes(&tasks, vec![task("d", 1), task("b", 2)], &["a".into()]);
        assert_eq!(
            ids(&next),
            vec![("b".into(), 2), ("c".into(), 1), ("d".into(), 1)]
        );
        // What did not change is the same copy.
        assert!(Arc::ptr_eq(&next[1], &tasks[2]));
    }

    /// Against a map of ID to version, over many sets and changes
    /// (updates of present and absent tasks, removals, both at once).
    #[test]
    fn changes_agree_with_a_map_of_the_tasks() {
        use std::collections::BTreeMap;
        let mut seed = 7u64;
        let mut next_random = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let mut model: BTreeMap<String, u64> = BTreeMap::new();
        let mut tasks: Vec<Arc<Task>> = Vec::new();
        for round in 1..=500 {
            let updated: Vec<Task> = (0..next_random(4))
                .map(|_| task(&format!("t{:02}", next_random(40)), round))
                .collect();
            let removed: Vec<String> = (0..next_random(3))
                .map(|_| format!("t{:02}", next_random(40)))
                .collect();
            for id in &removed {
                model.remove(id);
            }
            for t in &updated {
                model.insert(t.id_str().to_string(), round);
            }
            tasks = with_changes(&tasks, updated, &removed);
            let want: Vec<(String, u64)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
            assert_eq!(ids(&tasks), want, "round {round}");
        }
    }

    #[tokio::test]
    async fn a_stream_of_full_and_incremental_messages_gives_the_exact_set() {
        let table = RoutingTable::default();
        let mut s = stream(vec![
            Ok(Update::Tasks(vec![task("b", 1), task("a", 1)])),
            changes(vec![task("c", 1)], &[]),
            Ok(Update::Routes(table.clone())),
            changes(vec![task("a", 2)], &["b"]),
            // Removing a task the node does not have changes nothing else.
            changes(vec![], &["zz"]),
            changes(vec![task("d", 1), task("c", 2)], &["a"]),
        ]);
        let all = first("m:2377", &mut s, &data()).await.unwrap();
        let (tasks, rx) = watch::channel(Arc::new(all));
        let (routes, routes_rx) = watch::channel(Routes::default());
        let own: IpAddr = "10.0.0.7".parse().unwrap();
        follow(s, tasks, routes, Some(own), data(), logs()).await;
        assert_eq!(ids(&rx.borrow()), vec![("c".into(), 2), ("d".into(), 1)]);
        // The table as sent, marked as this node's.
        let mine = RoutingTable {
            own_addr: Some(own),
            ..table
        };
        assert_eq!(**routes_rx.borrow(), mine);
        // The stream ended: the sender is gone, which the worker sees.
        assert!(rx.has_changed().is_err());
    }

    #[tokio::test]
    async fn a_whole_set_after_changes_replaces_everything() {
        let s = stream(vec![
            changes(vec![task("x", 1)], &[]),
            Ok(Update::Tasks(vec![task("y", 3)])),
        ]);
        let (tasks, rx) = watch::channel(Arc::new(vec![Arc::new(task("a", 1))]));
        follow(
            s,
            tasks,
            watch::channel(Routes::default()).0,
            None,
            data(),
            logs(),
        )
        .await;
        assert_eq!(ids(&rx.borrow()), vec![("y".into(), 3)]);
    }

    #[tokio::test]
    async fn the_stream_must_open_with_the_whole_set() {
        let mut s = stream(vec![changes(vec![task("a", 1)], &[])]);
        let e = first("m:2377", &mut s, &data()).await.unwrap_err();
        assert!(matches!(e, SessionError::Protocol { addr, .. } if addr == "m:2377"));
        let mut closed = stream(vec![]);
        assert!(matches!(
            first("m:2377", &mut closed, &data()).await,
            Err(SessionError::Protocol { .. })
        ));
    }

    #[tokio::test]
    async fn a_bad_message_ends_the_stream_with_the_last_good_set() {
        let s = stream(vec![
            changes(vec![task("b", 1)], &[]),
            Err(SessionError::Protocol {
                addr: "m:2377".into(),
                message: "decoding".into(),
            }),
            changes(vec![task("c", 1)], &[]),
        ]);
        let (tasks, rx) = watch::channel(Arc::new(vec![Arc::new(task("a", 1))]));
        follow(
            s,
            tasks,
            watch::channel(Routes::default()).0,
            None,
            data(),
            logs(),
        )
        .await;
        assert_eq!(ids(&rx.borrow()), vec![("a".into(), 1), ("b".into(), 1)]);
    }
}
