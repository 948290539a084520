//! Agents' sessions over the network. The dispatcher runs on the leader
//! (heartbeats are kept where Down is decided); another manager answers
//! with a typed `NotLeader` error carrying the leader's address, and the
//! agent moves there.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flotilla_agent::exec::NodeDescription;
use flotilla_agent::session::{Assignments, Routes, Session, SessionError};
use flotilla_ca::Role;
use flotilla_manager::dispatcher::Assignments as NodeTasks;
use flotilla_manager::dispatcher::Dispatcher;
use flotilla_store::models::{Task, TaskStatus};
use flotilla_store::state::TaskExt;
use flotilla_store::{Store, StoreError};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::caller;
use crate::error::{manager_status, store_status, typed};
use crate::messages::{
    AgentUpdate, AgentUpdateRef, HeartbeatReply, RegisterReply, RegisterRequest, StatusBatch,
};
use crate::pb;
use crate::pb::dispatcher_client::DispatcherClient;
use crate::peers::Peers;
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

/// The version of each task the agent has, so only changes are sent.
#[derive(Default)]
struct SentTasks(HashMap<String, u64>);

impl SentTasks {
    fn all(&mut self, tasks: &NodeTasks) -> Result<pb::Json, Status> {
        self.0 = tasks
            .iter()
            .map(|t| (t.id_str().to_string(), t.version_index()))
            .collect();
        to_json(&AgentUpdateRef::Tasks(tasks.iter().map(|t| &**t).collect()))
    }

    fn changes(&mut self, tasks: &NodeTasks) -> Option<Result<pb::Json, Status>> {
        let updated: Vec<&Task> = tasks
            .iter()
            .filter(|t| self.0.get(t.id_str()) != Some(&t.version_index()))
            .map(|t| &**t)
            .collect();
        let now: HashSet<&str> = tasks.iter().map(|t| t.id_str()).collect();
        let removed: Vec<String> = self
            .0
            .keys()
            .filter(|id| !now.contains(id.as_str()))
            .cloned()
            .collect();
        if updated.is_empty() && removed.is_empty() {
            return None;
        }
        for id in &removed {
            self.0.remove(id);
        }
        for t in &updated {
            self.0.insert(t.id_str().to_string(), t.version_index());
        }
        Some(to_json(&AgentUpdateRef::Changes {
            updated,
            removed: removed.iter().map(String::as_str).collect(),
        }))
    }
}

/// The node's tasks after a `Changes` update, in task ID order as the
/// manager sends the whole set.
fn with_changes(tasks: &[Task], updated: Vec<Task>, removed: &[String]) -> Vec<Task> {
    let changed: HashSet<&str> = updated
        .iter()
        .map(|t| t.id_str())
        .chain(removed.iter().map(String::as_str))
        .collect();
    let mut next: Vec<Task> = tasks
        .iter()
        .filter(|t| !changed.contains(t.id_str()))
        .cloned()
        .collect();
    next.extend(updated);
    next.sort_by(|a, b| a.id_str().cmp(b.id_str()));
    next
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
        to_json(&HeartbeatReply {
            manager: self.is_manager(&node),
        })
        .map(Response::new)
    }

    type AssignmentsStream = ReceiverStream<Result<pb::Json, Status>>;

    async fn assignments(
        &self,
        req: Request<pb::Json>,
    ) -> Result<Response<Self::AssignmentsStream>, Status> {
        let node = self.on_leader(&req)?;
        let mut rx = self.dispatcher.assignments(&node);
        let mut routes = self.dispatcher.routes();
        let guard = self.dispatcher.stream_opened(&node);
        let store = self.store.clone();
        let encoded = self.routes.clone();
        let (tx, out) = mpsc::channel(4);
        tokio::spawn(async move {
            let tasks = rx.borrow_and_update().clone();
            let mut sent = SentTasks::default();
            if tx.send(sent.all(&tasks)).await.is_err() {
                return;
            }
            let table = routes.borrow_and_update().clone();
            if tx.send(encoded.get(&table)).await.is_err() {
                return;
            }
            // The stream ends when this manager stops leading, so the
            // agent finds the new leader.
            let mut metrics = store.raft().metrics();
            loop {
                let update = tokio::select! {
                    r = rx.changed() => {
                        if r.is_err() { return }
                        let tasks = rx.borrow_and_update().clone();
                        match sent.changes(&tasks) {
                            Some(update) => update,
                            None => continue,
                        }
                    }
                    r = routes.changed() => {
                        if r.is_err() { return }
                        let table = routes.borrow_and_update().clone();
                        encoded.get(&table)
                    }
                    r = metrics.changed() => {
                        if r.is_err() || !store.is_leader() { return }
                        continue;
                    }
                    _ = tx.closed() => {
                        guard.agent_gone();
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

/// An agent's session with the leader's dispatcher over the network.
pub struct RemoteSession {
    peers: Peers,
    /// Managers to try, the last known leader first.
    managers: Mutex<Vec<String>>,
    addr: String,
    hostname: Option<String>,
    status_tx: mpsc::UnboundedSender<(String, TaskStatus)>,
    /// The role the leader says this node has.
    role: watch::Sender<Option<bool>>,
    /// The last routing table received, kept across reconnections.
    routes: watch::Sender<Routes>,
}

impl RemoteSession {
    pub fn new(
        peers: Peers,
        managers: Vec<String>,
        addr: String,
        hostname: Option<String>,
    ) -> Arc<RemoteSession> {
        let (status_tx, status_rx) = mpsc::unbounded_channel();
        let session = Arc::new(RemoteSession {
            peers,
            managers: Mutex::new(managers),
            addr,
            hostname,
            status_tx,
            role: watch::channel(None).0,
            routes: watch::channel(Routes::default()).0,
        });
        tokio::spawn(report_statuses(Arc::downgrade(&session), status_rx));
        session
    }

    fn current(&self) -> Option<String> {
        self.managers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first()
            .cloned()
    }

    /// After a failure: the leader if the manager named it, else the next manager.
    fn move_on(&self, failed: &str, status: &Status) {
        let mut list = self.managers.lock().unwrap_or_else(|p| p.into_inner());
        reorder(&mut list, failed, status);
        self.peers.forget(failed);
    }

    /// Whether the swarm wants this node to be a manager, once the leader said.
    pub fn role(&self) -> watch::Receiver<Option<bool>> {
        self.role.subscribe()
    }

    fn learn_role(&self, manager: bool) {
        self.role.send_if_modified(|r| {
            let changed = *r != Some(manager);
            *r = Some(manager);
            changed
        });
    }

    /// Adds managers the dispatcher told about (joined since this node did).
    fn learn_managers(&self, managers: &[String]) {
        let mut list = self.managers.lock().unwrap_or_else(|p| p.into_inner());
        for m in managers {
            if !list.contains(m) {
                list.push(m.clone());
            }
        }
    }

    fn client(
        &self,
    ) -> Result<(String, DispatcherClient<tonic::transport::Channel>), SessionError> {
        let addr = self.current().ok_or(SessionError::NoManager)?;
        let channel = self.peers.channel(&addr).map_err(|s| answered(&addr, &s))?;
        Ok((addr, DispatcherClient::new(channel)))
    }
}

/// The error `addr` answered with: typed when the status carries a store
/// error, else its message.
fn answered(addr: &str, status: &Status) -> SessionError {
    match typed::<StoreError>(status) {
        Some(error) => SessionError::Refused {
            addr: addr.to_string(),
            error,
        },
        None => SessionError::Failed {
            addr: addr.to_string(),
            message: status.message().to_string(),
        },
    }
}

/// A message from (or for) `addr` that did not encode or decode.
fn protocol(addr: &str, status: &Status) -> SessionError {
    SessionError::Protocol {
        addr: addr.to_string(),
        message: status.message().to_string(),
    }
}

/// The managers to try after `failed` answered `status`: the leader first
/// when the answer names it (a typed `NotLeader`), else `failed` last.
fn reorder(managers: &mut Vec<String>, failed: &str, status: &Status) {
    match typed::<StoreError>(status) {
        Some(StoreError::NotLeader {
            leader: Some(leader),
        }) => {
            managers.retain(|a| *a != leader);
            managers.insert(0, leader);
        }
        _ => {
            if let Some(pos) = managers.iter().position(|a| a == failed) {
                let a = managers.remove(pos);
                managers.push(a);
            }
        }
    }
}

/// Sends status reports in batches, to whichever manager is current.
async fn report_statuses(
    session: std::sync::Weak<RemoteSession>,
    mut rx: mpsc::UnboundedReceiver<(String, TaskStatus)>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch: StatusBatch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let Some(me) = session.upgrade() else { return };
        for attempt in 0..5 {
            let Ok((addr, mut c)) = me.client() else {
                break;
            };
            let Ok(msg) = to_json(&batch) else { break };
            match c.update_task_status(msg).await {
                Ok(_) => break,
                Err(s) => {
                    me.move_on(&addr, &s);
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
            }
        }
    }
}

#[async_trait]
impl Session for RemoteSession {
    /// Tries the managers in turn (following a named leader at once),
    /// so one dead manager does not cost a backoff round.
    async fn register(&self, mut description: NodeDescription) -> Result<Duration, SessionError> {
        if let Some(h) = &self.hostname {
            description.hostname = h.clone();
        }
        let req = RegisterRequest {
            description: description.to_model(),
            addr: self.addr.clone(),
        };
        let msg = to_json(&req).map_err(|s| protocol(&self.addr, &s))?;
        let attempts = self
            .managers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
            + 1;
        let mut last = SessionError::NoManager;
        for _ in 0..attempts {
            let (addr, mut c) = self.client()?;
            match c.register(msg.clone()).await {
                Ok(r) => {
                    let reply: RegisterReply =
                        from_json(r.get_ref()).map_err(|s| protocol(&addr, &s))?;
                    self.learn_managers(&reply.managers);
                    self.learn_role(reply.manager);
                    return Ok(Duration::from_millis(reply.heartbeat_ms.max(100)));
                }
                Err(s) => {
                    self.move_on(&addr, &s);
                    last = answered(&addr, &s);
                }
            }
        }
        Err(last)
    }

    async fn heartbeat(&self) -> Result<(), SessionError> {
        let (addr, mut c) = self.client()?;
        let msg = to_json(&()).map_err(|s| protocol(&addr, &s))?;
        match c.heartbeat(msg).await {
            Ok(r) => {
                if let Ok(reply) = from_json::<HeartbeatReply>(r.get_ref()) {
                    self.learn_role(reply.manager);
                }
                Ok(())
            }
            Err(s) => {
                self.move_on(&addr, &s);
                Err(answered(&addr, &s))
            }
        }
    }

    async fn assignments(&self) -> Result<watch::Receiver<Assignments>, SessionError> {
        let (addr, mut c) = self.client()?;
        let msg = to_json(&()).map_err(|s| protocol(&addr, &s))?;
        let mut stream = match c.assignments(msg).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                self.move_on(&addr, &s);
                return Err(answered(&addr, &s));
            }
        };
        let broken = |message: &str| SessionError::Protocol {
            addr: addr.clone(),
            message: message.to_string(),
        };
        let first = match stream.message().await {
            Ok(Some(m)) => match from_json::<AgentUpdate>(&m).map_err(|s| protocol(&addr, &s))? {
                AgentUpdate::Tasks(tasks) => tasks,
                AgentUpdate::Changes { .. } | AgentUpdate::Routes(_) => {
                    return Err(broken("did not send the tasks first"))
                }
            },
            Ok(None) => return Err(broken("closed the assignment stream")),
            Err(s) => {
                self.move_on(&addr, &s);
                return Err(answered(&addr, &s));
            }
        };
        let (tx, rx) = watch::channel(Arc::new(first));
        let routes = self.routes.clone();
        tokio::spawn(async move {
            // Dropping `tx` when the stream ends tells the worker the session broke.
            while let Ok(Some(m)) = stream.message().await {
                match from_json::<AgentUpdate>(&m) {
                    Ok(AgentUpdate::Tasks(tasks)) => {
                        if tx.send(Arc::new(tasks)).is_err() {
                            return;
                        }
                    }
                    Ok(AgentUpdate::Changes { updated, removed }) => {
                        let tasks = with_changes(&tx.borrow(), updated, &removed);
                        if tx.send(Arc::new(tasks)).is_err() {
                            return;
                        }
                    }
                    Ok(AgentUpdate::Routes(table)) => {
                        routes.send_replace(Arc::new(table));
                    }
                    Err(e) => {
                        tracing::warn!("agent: bad assignment message: {}", e.message());
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    fn routes(&self) -> watch::Receiver<Routes> {
        self.routes.subscribe()
    }

    fn report(&self, task_id: &str, status: TaskStatus) {
        let _ = self.status_tx.send((task_id.to_string(), status));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_session_follows_the_leader_a_follower_names() {
        let mut managers = list(&["a:2377", "b:2377", "c:2377"]);
        let not_leader = store_status(&StoreError::NotLeader {
            leader: Some("c:2377".into()),
        });
        reorder(&mut managers, "a:2377", &not_leader);
        assert_eq!(managers, list(&["c:2377", "a:2377", "b:2377"]));
        // A leader the list did not know yet is tried first too.
        let new = store_status(&StoreError::NotLeader {
            leader: Some("d:2377".into()),
        });
        reorder(&mut managers, "c:2377", &new);
        assert_eq!(managers, list(&["d:2377", "c:2377", "a:2377", "b:2377"]));
    }

    #[test]
    fn without_a_named_leader_the_failed_manager_goes_last() {
        let mut managers = list(&["a:2377", "b:2377"]);
        let unknown = store_status(&StoreError::NotLeader { leader: None });
        reorder(&mut managers, "a:2377", &unknown);
        assert_eq!(managers, list(&["b:2377", "a:2377"]));
        // A message that merely reads like one names no leader.
        let text = Status::unavailable("not the leader; the leader is at a:2377");
        reorder(&mut managers, "b:2377", &text);
        assert_eq!(managers, list(&["a:2377", "b:2377"]));
    }
}
