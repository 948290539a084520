//! The dispatcher's side of agents' sessions. The dispatcher runs on the
//! leader (heartbeats are kept where Down is decided); another manager
//! answers with a typed `NotLeader` error carrying the leader's address,
//! and the agent moves there (the agent's side: [`crate::agent`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use flotilla_agent::session::Routes;
use flotilla_ca::Role;
use flotilla_manager::dispatcher::Dispatcher;
use flotilla_manager::dispatcher::Tasks as NodeTasks;
use flotilla_store::logs::{LogChunk, LogRequest};
use flotilla_store::models::Task;
use flotilla_store::state::TaskExt;
use flotilla_store::{Store, StoreError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::{caller, manager};
use crate::error::{manager_status, store_status};
use crate::messages::{
    AgentUpdateRef, HeartbeatReply, HeartbeatRequest, RegisterReply, RegisterRequest, StatusBatch,
    TASKS_PER_MESSAGE,
};
use crate::pb;
use crate::{from_json, to_json};

pub struct DispatcherService {
    store: Store,
    dispatcher: Arc<Dispatcher>,
    routes: Arc<EncodedRoutes>,
}

/// The routing table goes to every node: encode each version once.
#[derive(Default)]
struct EncodedRoutes(Mutex<Option<(Routes, pb::Json)>>);

impl EncodedRoutes {
    fn get(&self, table: &Routes) -> Result<pb::Json, Status> {
        let mut cached = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((version, msg)) = cached.as_ref() {
            if Arc::ptr_eq(version, table) {
                return Ok(msg.clone());
            }
        }
        let msg = to_json(&AgentUpdateRef::Routes(table))?;
        *cached = Some((table.clone(), msg.clone()));
        Ok(msg)
    }
}

/// What the agent has: each task's ID and the write of it that was sent
/// (its `assignment_index`), in task ID order as the node's set comes. Only
/// changes are sent, and not a task's status moving on as the agent itself
/// reported. Finding them costs a comparison of numbers per task: a task
/// changed since the last message has a higher index than any sent.
#[derive(Default)]
struct SentTasks {
    tasks: Vec<(Box<str>, u64)>,
    /// The highest index sent.
    mark: u64,
}

impl SentTasks {
    /// The whole set, in messages of at most [`TASKS_PER_MESSAGE`] tasks.
    fn all(&mut self, tasks: &NodeTasks) -> Vec<Result<pb::Json, Status>> {
        self.tasks = tasks
            .iter()
            .map(|t| (Box::from(t.id_str()), t.assignment_index))
            .collect();
        self.tasks.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.mark = self.tasks.iter().map(|t| t.1).max().unwrap_or(0);
        let all: Vec<&Task> = tasks.iter().map(|t| &**t).collect();
        let mut chunks: Vec<&[&Task]> = all.chunks(TASKS_PER_MESSAGE).collect();
        let last = chunks.pop().unwrap_or_default();
        let mut out: Vec<_> = chunks
            .into_iter()
            .map(|c| to_json(&AgentUpdateRef::TasksPart(c.to_vec())))
            .collect();
        out.push(to_json(&AgentUpdateRef::Tasks(last.to_vec())));
        out
    }

    fn position(&self, id: &str) -> Result<usize, usize> {
        self.tasks.binary_search_by(|t| (*t.0).cmp(id))
    }

    /// What changed, in messages of at most [`TASKS_PER_MESSAGE`] tasks
    /// (each a valid step on its own).
    fn changes(&mut self, tasks: &NodeTasks) -> Vec<Result<pb::Json, Status>> {
        let updated: Vec<&Task> = tasks
            .iter()
            .filter(|t| t.assignment_index > self.mark)
            .map(|t| &**t)
            .collect();
        let new = updated
            .iter()
            .filter(|t| self.position(t.id_str()).is_err())
            .count();
        // Fewer tasks than those sent and the new ones: some are gone,
        // found by one walk over both sets.
        let removed: Vec<String> = if tasks.len() < self.tasks.len() + new {
            let now: HashSet<&str> = tasks.iter().map(|t| t.id_str()).collect();
            self.tasks
                .iter()
                .filter(|(id, _)| !now.contains(&**id))
                .map(|(id, _)| id.to_string())
                .collect()
        } else {
            Vec::new()
        };
        if updated.is_empty() && removed.is_empty() {
            return Vec::new();
        }
        for id in &removed {
            if let Ok(at) = self.position(id) {
                self.tasks.remove(at);
            }
        }
        for t in &updated {
            match self.position(t.id_str()) {
                Ok(at) => self.tasks[at].1 = t.assignment_index,
                Err(at) => self
                    .tasks
                    .insert(at, (Box::from(t.id_str()), t.assignment_index)),
            }
            self.mark = self.mark.max(t.assignment_index);
        }
        let mut chunks: Vec<&[&Task]> = updated.chunks(TASKS_PER_MESSAGE).collect();
        let last = chunks.pop().unwrap_or_default();
        let mut out: Vec<_> = chunks
            .into_iter()
            .map(|c| {
                to_json(&AgentUpdateRef::Changes {
                    updated: c.to_vec(),
                    removed: Vec::new(),
                })
            })
            .collect();
        out.push(to_json(&AgentUpdateRef::Changes {
            updated: last.to_vec(),
            removed: removed.iter().map(String::as_str).collect(),
        }));
        out
    }
}

impl DispatcherService {
    pub fn new(
        store: Store,
        dispatcher: Arc<Dispatcher>,
    ) -> pb::dispatcher_server::DispatcherServer<DispatcherService> {
        pb::dispatcher_server::DispatcherServer::new(DispatcherService {
            store,
            dispatcher,
            routes: Default::default(),
        })
        .max_decoding_message_size(crate::MAX_MESSAGE)
        .max_encoding_message_size(crate::MAX_MESSAGE)
    }

    /// The role the node is told to take. A demoted manager stays one
    /// until the leader has taken it out of Raft (its ManagerStatus goes
    /// then), like SwarmKit's observed role: a node that stopped its Raft
    /// first could leave two voters with one, and no quorum for good.
    fn is_manager(&self, node: &str) -> bool {
        self.store.read(|s| {
            s.nodes.get(node).is_some_and(|n| {
                n.spec.as_ref().and_then(|sp| sp.role)
                    == Some(flotilla_store::models::NodeSpecRoleEnum::MANAGER)
                    || n.manager_status.is_some()
            })
        })
    }

    fn on_leader<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let who = caller(req, &self.store, &[Role::Manager, Role::Worker])?;
        if !self.store.is_leader() {
            let leader = self.store.leader().map(|(_, peer)| peer.addr);
            return Err(store_status(&StoreError::NotLeader { leader }));
        }
        Ok(who.node_id)
    }
}

#[tonic::async_trait]
impl pb::dispatcher_server::Dispatcher for DispatcherService {
    async fn register(&self, req: Request<pb::Json>) -> Result<Response<pb::Json>, Status> {
        let node = self.on_leader(&req)?;
        let r: RegisterRequest = from_json(req.get_ref())?;
        self.dispatcher
            .register(&node, r.description, &r.addr)
            .await
            .map_err(|e| manager_status(&e))?;
        let heartbeat_ms = self.dispatcher.period().as_millis() as u64;
        let managers = self.store.read(flotilla_manager::ca::manager_addrs);
        let manager = self.is_manager(&node);
        to_json(&RegisterReply {
            heartbeat_ms,
            manager,
            managers,
        })
        .map(Response::new)
    }

    async fn heartbeat(&self, req: Request<pb::Json>) -> Result<Response<pb::Json>, Status> {
        let node = self.on_leader(&req)?;
        self.dispatcher.heartbeat(&node);
        let r: Option<HeartbeatRequest> = from_json(req.get_ref())?;
        if let Some(tls) = r.and_then(|r| r.tls) {
            self.dispatcher
                .record_tls(&node, tls)
                .await
                .map_err(|e| manager_status(&e))?;
        }
        to_json(&HeartbeatReply {
            manager: self.is_manager(&node),
            ca: self.dispatcher.ca_target(),
        })
        .map(Response::new)
    }

    type AssignmentsStream = ReceiverStream<Result<pb::Json, Status>>;

    async fn assignments(
        &self,
        req: Request<pb::Json>,
    ) -> Result<Response<Self::AssignmentsStream>, Status> {
        let node = self.on_leader(&req)?;
        let mut feed = self.dispatcher.assignments(&node);
        let mut routes = self.dispatcher.routes();
        let guard = self.dispatcher.stream_opened(&node);
        let mut log_requests = self.dispatcher.logs().agent_connected(&node);
        let mut exec_requests = self.dispatcher.execs().agent_connected(&node);
        let store = self.store.clone();
        let encoded = self.routes.clone();
        let period = self.dispatcher.period();
        let (tx, out) = mpsc::channel(4);
        tokio::spawn(async move {
            let first = feed.current();
            let mut sent = SentTasks::default();
            // The secrets and configs go before the tasks that need them.
            let mut sent_data = first.data.clone();
            if !sent_data.is_empty()
                && tx
                    .send(to_json(&AgentUpdateRef::Data(&sent_data)))
                    .await
                    .is_err()
            {
                return;
            }
            for msg in sent.all(&first.tasks) {
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
            let table = routes.borrow_and_update().clone();
            if tx.send(encoded.get(&table)).await.is_err() {
                return;
            }
            // The stream ends when this manager stops leading, so the
            // agent finds the new leader; and within a heartbeat of the
            // node's removal (`node rm`), whose certificate still holds.
            let mut metrics = store.raft().metrics();
            let mut member_check = tokio::time::interval(period);
            loop {
                let update = tokio::select! {
                    now = feed.changed() => {
                        let Some(now) = now else { return };
                        if *now.data != *sent_data {
                            sent_data = now.data.clone();
                            if tx.send(to_json(&AgentUpdateRef::Data(&sent_data))).await.is_err() {
                                guard.agent_gone();
                                return;
                            }
                        }
                        let mut msgs = sent.changes(&now.tasks);
                        let Some(last) = msgs.pop() else { continue };
                        for msg in msgs {
                            if tx.send(msg).await.is_err() {
                                guard.agent_gone();
                                return;
                            }
                        }
                        last
                    }
                    r = routes.changed() => {
                        if r.is_err() { return }
                        let table = routes.borrow_and_update().clone();
                        encoded.get(&table)
                    }
                    Some(request) = log_requests.rx.recv() => {
                        to_json(&AgentUpdateRef::Logs(&request))
                    }
                    Some(request) = exec_requests.rx.recv() => {
                        to_json(&AgentUpdateRef::Exec(&request))
                    }
                    r = metrics.changed() => {
                        if r.is_err() || !store.is_leader() { return }
                        continue;
                    }
                    _ = tx.closed() => {
                        guard.agent_gone();
                        return;
                    }
                    _ = member_check.tick() => {
                        if store.read(|s| s.nodes.contains_key(&node)) {
                            continue;
                        }
                        tracing::info!("closing the session of node {node}: removed from the swarm");
                        let _ = tx
                            .send(Err(Status::permission_denied(format!(
                                "node {node} was removed from the swarm: join it again with `swarm join`"
                            ))))
                            .await;
                        return;
                    }
                };
                if tx.send(update).await.is_err() {
                    guard.agent_gone();
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }

    type TaskLogsStream = ReceiverStream<Result<pb::Json, Status>>;

    async fn publish_logs(&self, req: Request<pb::Json>) -> Result<Response<pb::Json>, Status> {
        let node = self.on_leader(&req)?;
        let chunk: LogChunk = from_json(req.get_ref())?;
        let more = self.dispatcher.logs().publish(&node, chunk).await;
        to_json(&more).map(Response::new)
    }

    async fn task_logs(
        &self,
        req: Request<pb::Json>,
    ) -> Result<Response<Self::TaskLogsStream>, Status> {
        manager(&req, &self.store)?;
        if !self.store.is_leader() {
            let leader = self.store.leader().map(|(_, peer)| peer.addr);
            return Err(store_status(&StoreError::NotLeader { leader }));
        }
        let request: LogRequest = from_json(req.get_ref())?;
        let node = request.task.node_id.clone().unwrap_or_default();
        let mut sub = self
            .dispatcher
            .logs()
            .subscribe(&node, request)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (tx, out) = mpsc::channel(4);
        tokio::spawn(async move {
            // Ends with the subscription's last chunk, or when the asking
            // manager goes away (the subscription is dropped with this task).
            while let Some(chunk) = sub.rx.recv().await {
                let last = chunk.end.is_some();
                if tx.send(to_json(&chunk)).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }

    async fn update_task_status(
        &self,
        req: Request<pb::Json>,
    ) -> Result<Response<pb::Json>, Status> {
        let node = self.on_leader(&req)?;
        let batch: StatusBatch = from_json(req.get_ref())?;
        for (task, status) in batch {
            self.dispatcher.report(&node, &task, status);
        }
        to_json(&()).map(Response::new)
    }
}

/// A task's logs on another node, for a manager's API: through this
/// manager's own broker when it leads, else from the leader's (TaskLogs).
/// The chunks end with the one whose `end` is set.
pub async fn task_logs(
    store: &Store,
    dispatcher: &Dispatcher,
    peers: &crate::peers::Peers,
    request: LogRequest,
) -> Result<futures::stream::BoxStream<'static, LogChunk>, String> {
    use futures::StreamExt;
    let node = request.task.node_id.clone().unwrap_or_default();
    if store.is_leader() {
        let sub = dispatcher
            .logs()
            .subscribe(&node, request)
            .map_err(|e| e.to_string())?;
        // The stream owns the subscription: dropping it ends the request.
        return Ok(futures::stream::unfold(sub, |mut sub| async move {
            sub.rx.recv().await.map(|chunk| (chunk, sub))
        })
        .boxed());
    }
    let (_, leader) = store
        .leader()
        .ok_or_else(|| "no leader to ask for the logs".to_string())?;
    let channel = peers
        .channel(&leader.addr)
        .map_err(|s| s.message().to_string())?;
    let msg = to_json(&request).map_err(|s| s.message().to_string())?;
    let stream = pb::dispatcher_client::DispatcherClient::new(channel)
        .task_logs(msg)
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    Ok(stream
        .map(|m| match m.map(|m| from_json::<LogChunk>(&m)) {
            Ok(Ok(chunk)) => chunk,
            Ok(Err(s)) | Err(s) => LogChunk {
                sub: 0,
                entries: Vec::new(),
                end: Some(s.message().to_string()),
            },
        })
        .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::AgentUpdate;
    use flotilla_store::models::ObjectVersion;

    fn task(id: &str, version: u64, assignment_index: u64) -> Arc<Task> {
        Arc::new(Task {
            id: Some(id.into()),
            version: Some(ObjectVersion {
                index: Some(version),
            }),
            assignment_index,
            ..Default::default()
        })
    }

    /// The IDs of the tasks in a Changes message, and the removed ones.
    fn changed(msgs: Vec<Result<pb::Json, Status>>) -> Vec<(Vec<String>, Vec<String>)> {
        msgs.into_iter()
            .map(
                |m| match from_json(&m.expect("encoded")).expect("decoded") {
                    AgentUpdate::Changes { updated, removed } => (
                        updated.iter().map(|t| t.id_str().to_string()).collect(),
                        removed,
                    ),
                    _ => panic!("not a Changes message"),
                },
            )
            .collect()
    }

    #[test]
    fn a_status_the_node_reported_is_not_sent_back_to_it() {
        let mut sent = SentTasks::default();
        let first: NodeTasks = Arc::new(vec![task("a", 2, 2), task("b", 3, 3)]);
        assert_eq!(sent.all(&first).len(), 1);
        // Both reported RUNNING (new versions), then `a` told to stop.
        let reported: NodeTasks = Arc::new(vec![task("a", 5, 2), task("b", 6, 3)]);
        assert!(sent.changes(&reported).is_empty());
        let stop_a: NodeTasks = Arc::new(vec![task("a", 7, 7), task("b", 6, 3)]);
        assert_eq!(
            changed(sent.changes(&stop_a)),
            vec![(vec!["a".to_string()], vec![])]
        );
        let b_gone: NodeTasks = Arc::new(vec![task("a", 8, 7)]);
        assert_eq!(
            changed(sent.changes(&b_gone)),
            vec![(vec![], vec!["b".to_string()])]
        );
        // A new task and one gone in the same change.
        let c_for_a: NodeTasks = Arc::new(vec![task("c", 9, 9)]);
        assert_eq!(
            changed(sent.changes(&c_for_a)),
            vec![(vec!["c".to_string()], vec!["a".to_string()])]
        );
        assert!(sent.changes(&c_for_a).is_empty());
    }
}
