//! The session every node's agent runs: calls go over a [`Transport`] to
//! the manager [`Managers`] puts first, and move on after a failure (to the
//! leader the answer names, else to the next manager). The session keeps
//! what outlives one connection: the managers it knows, the role the leader
//! gives this node, the last routing table, the reports not yet sent.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{TaskStatus, TlsInfo};
use tokio::sync::{mpsc, watch};

use super::failover::Managers;
use super::{assignments, reports};
use super::{
    Assignments, Data, FrameStream, Registration, Routes, Session, SessionError, Transport,
};
use crate::exec::NodeDescription;
use flotilla_store::exec::ExecRequest;
use flotilla_store::logs::{LogChunk, LogRequest};
use flotilla_store::state::CaTarget;

/// The shortest heartbeat period the session keeps, whatever a manager
/// says: the worker ticks every half period, and a zero interval panics.
const MIN_PERIOD: Duration = Duration::from_millis(100);

/// What the daemon's flags say of the node, over what its executor finds.
#[derive(Debug, Clone, Default)]
pub struct NodeOverrides {
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `--node-generic-resource`.
    pub generic_resources: Vec<bollard::models::GenericResourcesInner>,
}

pub struct ManagerSession {
    transport: Arc<dyn Transport>,
    /// Managers to try, the last known leader first. A std Mutex: held to
    /// read or reorder the list, never across a call.
    managers: Mutex<Managers>,
    /// The address this node registers, for other nodes to reach it at.
    addr: String,
    /// What the node says of itself beyond what the executor describes.
    overrides: NodeOverrides,
    reports: mpsc::UnboundedSender<reports::Report>,
    /// The role the leader says this node has.
    role: watch::Sender<Option<bool>>,
    /// The last routing table received, kept across reconnections.
    routes: watch::Sender<Routes>,
    /// The secrets and configs last received: kept across reconnections
    /// (the tasks using them keep running), replaced by the next stream's.
    data: watch::Sender<Data>,
    /// Log requests from every stream, for the node's log server.
    logs: mpsc::UnboundedSender<LogRequest>,
    log_requests: Mutex<Option<mpsc::UnboundedReceiver<LogRequest>>>,
    /// Exec requests from every stream, for the node's exec server.
    execs: mpsc::UnboundedSender<ExecRequest>,
    exec_requests: Mutex<Option<mpsc::UnboundedReceiver<ExecRequest>>>,
    /// This node's TLSInfo and how many times it changed; the count the
    /// current manager last heard (sent again only after a change).
    tls: Mutex<(u64, Option<TlsInfo>)>,
    tls_heard: AtomicU64,
    /// The root and issuer the managers want this node to have.
    ca: watch::Sender<Option<CaTarget>>,
    /// The last state reported of each task, sent again to every manager
    /// this node registers with: a report the last leader took but could
    /// not write before it stopped leading would be lost otherwise, and its
    /// task left ASSIGNED in the store while it runs (as SwarmKit's agent
    /// does on a new session).
    reported: Mutex<HashMap<String, TaskStatus>>,
}

/// Past this many remembered reports, those of finished tasks are dropped.
const REPORTED_MAX: usize = 10_000;

/// The address a node registered (`10.0.0.1`, `[fd00::1]`) as an IP
/// address; `None` for a name, which no mesh can bind to either.
fn own_addr(addr: &str) -> Option<IpAddr> {
    addr.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

impl ManagerSession {
    /// A session over `transport` to `managers` (tried in this order). Its
    /// report sender runs until the session is dropped.
    pub fn new(
        transport: Arc<dyn Transport>,
        managers: Vec<String>,
        addr: String,
        overrides: NodeOverrides,
    ) -> Arc<ManagerSession> {
        let (reports, rx) = mpsc::unbounded_channel();
        let (logs, log_requests) = mpsc::unbounded_channel();
        let (execs, exec_requests) = mpsc::unbounded_channel();
        let session = Arc::new(ManagerSession {
            transport,
            managers: Mutex::new(Managers::new(managers)),
            addr,
            overrides,
            reports,
            role: watch::channel(None).0,
            routes: watch::channel(Routes::default()).0,
            data: watch::channel(Data::default()).0,
            logs,
            log_requests: Mutex::new(Some(log_requests)),
            execs,
            exec_requests: Mutex::new(Some(exec_requests)),
            tls: Mutex::new((0, None)),
            tls_heard: AtomicU64::new(u64::MAX),
            ca: watch::channel(None).0,
            reported: Mutex::new(HashMap::new()),
        });
        tokio::spawn(reports::run(Arc::downgrade(&session), rx));
        session
    }

    /// Whether the swarm wants this node to be a manager, once the leader said.
    pub fn role(&self) -> watch::Receiver<Option<bool>> {
        self.role.subscribe()
    }

    /// What the node's certificate and trust root are now: the managers
    /// hear it with the next heartbeat (`docker node inspect` shows it).
    pub fn set_tls(&self, info: TlsInfo) {
        let mut tls = self.tls.lock().unwrap_or_else(|p| p.into_inner());
        if tls.1.as_ref() != Some(&info) {
            *tls = (tls.0 + 1, Some(info));
        }
    }

    fn tls(&self) -> (u64, Option<TlsInfo>) {
        self.tls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The root and certificate issuer the managers want this node to
    /// have, from their heartbeat replies.
    pub fn ca_target(&self) -> watch::Receiver<Option<CaTarget>> {
        self.ca.subscribe()
    }

    /// The managers in the order they will be tried.
    pub fn managers(&self) -> Vec<String> {
        self.lock().as_slice().to_vec()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Managers> {
        self.managers.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn transport(&self) -> &dyn Transport {
        self.transport.as_ref()
    }

    pub(super) fn current(&self) -> Result<String, SessionError> {
        self.lock().current()
    }

    /// After `addr` failed with `error`: the leader if it named one, else
    /// the next manager.
    pub(super) fn failed(&self, addr: &str, error: &SessionError) {
        self.lock().failed(addr, error);
    }

    /// Every task's last reported state, to the manager just registered
    /// with; finished tasks' are then forgotten.
    fn report_again(&self) {
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        for (task, status) in reported.iter() {
            let _ = self.reports.send((task.clone(), status.clone()));
        }
        reported.retain(|_, s| !s.state.is_some_and(flotilla_store::state::is_terminal));
    }

    fn learn_role(&self, manager: bool) {
        self.role.send_if_modified(|r| {
            let changed = *r != Some(manager);
            *r = Some(manager);
            changed
        });
    }
}

#[async_trait]
impl Session for ManagerSession {
    /// Tries the managers in turn (following a named leader at once),
    /// so one dead manager does not cost a backoff round.
    async fn register(&self, description: NodeDescription) -> Result<Duration, SessionError> {
        let description = self.describe(description);
        let (tls_version, tls) = self.tls();
        let mut model = description.to_model();
        model.tls_info = tls;
        let registration = Registration {
            description: model,
            addr: self.addr.clone(),
        };
        let attempts = self.lock().len() + 1;
        let mut last = SessionError::NoManager;
        for _ in 0..attempts {
            let addr = self.current()?;
            match self.transport.register(&addr, &registration).await {
                Ok(reply) => {
                    self.tls_heard.store(tls_version, Ordering::Relaxed);
                    self.report_again();
                    self.lock().learn(&reply.managers);
                    self.learn_role(reply.manager);
                    return Ok(reply.period.max(MIN_PERIOD));
                }
                Err(e @ SessionError::Protocol { .. }) => return Err(e),
                Err(e) => {
                    self.failed(&addr, &e);
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn heartbeat(&self) -> Result<(), SessionError> {
        let addr = self.current()?;
        let (tls_version, tls) = self.tls();
        let changed = tls_version != self.tls_heard.load(Ordering::Relaxed);
        let tls = tls.as_ref().filter(|_| changed);
        match self.transport.heartbeat(&addr, tls).await {
            Ok(reply) => {
                self.tls_heard.store(tls_version, Ordering::Relaxed);
                if let Some(manager) = reply.manager {
                    self.learn_role(manager);
                }
                if reply.ca.is_some() {
                    self.ca.send_if_modified(|ca| {
                        let changed = *ca != reply.ca;
                        *ca = reply.ca;
                        changed
                    });
                }
                Ok(())
            }
            Err(e) => {
                self.failed(&addr, &e);
                Err(e)
            }
        }
    }

    async fn assignments(&self) -> Result<watch::Receiver<Assignments>, SessionError> {
        let addr = self.current()?;
        let opened = match self.transport.assignments(&addr).await {
            Ok(mut stream) => assignments::first(&addr, &mut stream, &self.data)
                .await
                .map(|tasks| (tasks, stream)),
            Err(e) => Err(e),
        };
        let (tasks, stream) = opened.inspect_err(|e| self.failed(&addr, e))?;
        let (tx, rx) = watch::channel(Arc::new(tasks));
        tokio::spawn(assignments::follow(
            stream,
            tx,
            self.routes.clone(),
            own_addr(&self.addr),
            self.data.clone(),
            assignments::Requests {
                logs: self.logs.clone(),
                execs: self.execs.clone(),
            },
        ));
        Ok(rx)
    }

    fn routes(&self) -> watch::Receiver<Routes> {
        self.routes.subscribe()
    }

    fn data(&self) -> watch::Receiver<Data> {
        self.data.subscribe()
    }

    fn log_requests(&self) -> Option<mpsc::UnboundedReceiver<LogRequest>> {
        self.log_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// To the manager the session calls now: the leader, which holds the
    /// request's subscription.
    async fn publish_logs(&self, chunk: &LogChunk) -> Result<bool, SessionError> {
        let addr = self.current()?;
        self.transport.publish_logs(&addr, chunk).await
    }

    fn exec_requests(&self) -> Option<mpsc::UnboundedReceiver<ExecRequest>> {
        self.exec_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// To the manager the request named (any manager, not only the leader).
    async fn exec_attach(
        &self,
        manager: &str,
        outgoing: FrameStream,
    ) -> Result<FrameStream, SessionError> {
        self.transport.exec_attach(manager, outgoing).await
    }

    fn describe(&self, mut description: NodeDescription) -> NodeDescription {
        if let Some(h) = &self.overrides.hostname {
            description.hostname = h.clone();
        }
        description
            .generic_resources
            .extend(self.overrides.generic_resources.iter().cloned());
        description
    }

    fn report(&self, task_id: &str, status: TaskStatus) {
        {
            let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
            if reported.len() >= REPORTED_MAX {
                reported.retain(|_, s| !s.state.is_some_and(flotilla_store::state::is_terminal));
            }
            reported.insert(task_id.to_string(), status.clone());
        }
        let _ = self.reports.send((task_id.to_string(), status));
    }
}

#[cfg(test)]
mod tests {
    use super::own_addr;

    #[test]
    fn the_registered_address_is_read_as_an_ip_address() {
        assert_eq!(own_addr("10.0.0.1"), "10.0.0.1".parse().ok());
        assert_eq!(own_addr("[fd00::1]"), "fd00::1".parse().ok());
        assert_eq!(own_addr("node1.example"), None);
    }
}
