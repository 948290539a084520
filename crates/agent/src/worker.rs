//! The worker makes the node's assignments real: one controller per task
//! drives it through the executor (prepare, start, wait for health, wait
//! for exit; shut down and remove when the manager no longer wants it) and
//! reports each state it reaches. States only move forward.
//!
//! Workloads left by an earlier run of the daemon (containers found by
//! their labels, process records) are adopted by their task's controller,
//! and removed if their task is gone, so a restart neither duplicates nor
//! orphans anything.

use crate::metrics::timed;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bollard::models::{ContainerStatus, PortStatus, TaskState, TaskStatus};
use flotilla_store::ids;
use flotilla_store::models::Task;
use flotilla_store::state::{is_terminal, update_of, TaskExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::exec::{ExecError, Executor, Existing, RuntimeInfo, TaskFiles};
use crate::session::{in_id_order, Assignments, Session};
use crate::taskfiles::{self, NodeInfo, TmpfsRoot};

struct Controller {
    /// The task as the manager last sent it; `None` once it left the node's
    /// assignments.
    tx: watch::Sender<Option<Arc<Task>>>,
    handle: JoinHandle<()>,
}

/// The task controllers, and the assignments they were last given.
#[derive(Default)]
struct Controllers {
    by_task: HashMap<String, Controller>,
    /// The set last reconciled, if it was in task ID order (as sessions
    /// give it): the next one is then compared with it in one walk.
    given: Option<Assignments>,
    /// Tasks gone from the assignments whose controllers are still
    /// stopping their workloads.
    leaving: Vec<String>,
}

impl Controllers {
    /// The task left the node's assignments: its controller removes the
    /// workload, and is forgotten once that is done.
    fn leave(&mut self, id: &str) {
        if let Some(c) = self.by_task.get(id) {
            if !self.leaving.iter().any(|l| l == id) {
                c.tx.send_replace(None);
                self.leaving.push(id.to_string());
            }
        }
    }
}

/// Called with a task's ID before its workload is stopped; the workload is
/// stopped once the future is done, when no mesh sends it new connections.
pub type Drain = Arc<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync,
>;

pub struct Worker {
    session: Arc<dyn Session>,
    exec: Arc<dyn Executor>,
    node_id: String,
    drain: Option<Drain>,
    files: Files,
}

/// What the task controllers need to give tasks their secret and config
/// files.
#[derive(Clone)]
struct Files {
    /// Where they are written; None where this node keeps none.
    root: Option<Arc<TmpfsRoot>>,
    /// The node as the managers know it, for templates; set at each
    /// registration.
    node: Arc<std::sync::RwLock<NodeInfo>>,
}

impl Worker {
    pub fn new(session: Arc<dyn Session>, exec: Arc<dyn Executor>, node_id: String) -> Self {
        let node = NodeInfo {
            id: node_id.clone(),
            ..Default::default()
        };
        Worker {
            session,
            exec,
            node_id,
            drain: None,
            files: Files {
                root: None,
                node: Arc::new(std::sync::RwLock::new(node)),
            },
        }
    }

    /// Where tasks' secrets and configs are written: without it, a task
    /// that has any is rejected.
    pub fn with_files(mut self, root: TmpfsRoot) -> Self {
        self.files.root = Some(Arc::new(root));
        self
    }

    pub fn with_drain(mut self, drain: Drain) -> Self {
        self.drain = Some(drain);
        self
    }

    /// Runs until `stop` turns true; tasks keep running after it returns,
    /// as containers do when dockerd's swarm agent stops. A session that
    /// breaks (the manager went away, or stopped leading) is opened again,
    /// with backoff, while the tasks' controllers carry on.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut controllers = Controllers::default();
        // Workloads from an earlier run; listed once, handed out as their
        // tasks show up, the rest removed after the first assignment set.
        let mut existing: Option<HashMap<String, Existing>> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self
                .session(&mut controllers, &mut existing, &mut stop)
                .await
            {
                SessionEnd::Stopped => break,
                SessionEnd::Broken { registered, reason } => {
                    if registered {
                        backoff = Duration::from_millis(100);
                    }
                    tracing::warn!("agent: session with the managers ended: {reason}; reconnecting in {backoff:?}");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {},
                _ = stop.changed() => break,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        for (_, c) in controllers.by_task {
            c.handle.abort();
        }
    }

    async fn session(
        &self,
        controllers: &mut Controllers,
        existing: &mut Option<HashMap<String, Existing>>,
        stop: &mut watch::Receiver<bool>,
    ) -> SessionEnd {
        let description = self.session.describe(self.exec.describe().await);
        *self
            .files
            .node
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = NodeInfo {
            id: self.node_id.clone(),
            hostname: description.hostname.clone(),
            os: description.os.clone(),
            architecture: description.architecture.clone(),
        };
        let period = match self.session.register(description).await {
            Ok(p) => p,
            Err(e) => {
                return SessionEnd::Broken {
                    registered: false,
                    reason: format!("cannot register: {e}"),
                }
            }
        };
        let mut assignments = match self.session.assignments().await {
            Ok(rx) => rx,
            Err(e) => {
                return SessionEnd::Broken {
                    registered: false,
                    reason: format!("no assignment stream: {e}"),
                }
            }
        };
        if existing.is_none() {
            let found = match self.exec.list(&self.node_id).await {
                Ok(list) => list.into_iter().map(|e| (e.task_id.clone(), e)).collect(),
                Err(e) => {
                    tracing::warn!("agent: cannot list existing workloads: {e}");
                    HashMap::new()
                }
            };
            *existing = Some(found);
        }
        let mut tick = tokio::time::interval(period / 2);
        tick.tick().await;
        loop {
            let tasks = assignments.borrow_and_update().clone();
            if let Some(found) = existing.as_mut() {
                self.reconcile(&tasks, controllers, found);
            }
            loop {
                tokio::select! {
                    r = assignments.changed() => {
                        if r.is_err() {
                            return SessionEnd::Broken { registered: true, reason: "the assignment stream closed".into() };
                        }
                        break;
                    }
                    _ = tick.tick() => {
                        if let Err(e) = self.session.heartbeat().await {
                            return SessionEnd::Broken { registered: true, reason: format!("heartbeat failed: {e}") };
                        }
                    }
                    _ = stop.changed() => return SessionEnd::Stopped,
                }
            }
        }
    }

    /// Gives each controller its task as `tasks` has it: a new task gets a
    /// controller, a changed one is handed to its own, and one gone is
    /// told so (its controller stops the workload).
    fn reconcile(
        &self,
        tasks: &Assignments,
        controllers: &mut Controllers,
        existing: &mut HashMap<String, Existing>,
    ) {
        let sorted = in_id_order(tasks);
        match controllers.given.take() {
            // A task that did not change is the same `Arc`: one walk over
            // both sets finds the few that did, without a lookup per task
            // (a node of hundreds of tasks is sent one at a time as they
            // change).
            Some(given) if sorted && existing.is_empty() => {
                for change in diff(&given, tasks) {
                    match change {
                        Change::Now(task) => self.give(task, controllers, existing),
                        Change::Gone(id) => controllers.leave(id),
                    }
                }
            }
            _ => {
                let now: HashSet<&str> = tasks.iter().map(|t| t.id_str()).collect();
                for task in tasks.iter() {
                    self.give(task, controllers, existing);
                }
                let gone: Vec<String> = controllers
                    .by_task
                    .keys()
                    .filter(|id| !now.contains(id.as_str()))
                    .cloned()
                    .collect();
                for id in &gone {
                    controllers.leave(id);
                }
            }
        }
        // Forgotten once their workload is gone.
        let Controllers {
            by_task, leaving, ..
        } = controllers;
        leaving.retain(|id| {
            let done = by_task.get(id).is_none_or(|c| c.handle.is_finished());
            if done {
                by_task.remove(id);
            }
            !done
        });
        controllers.given = sorted.then(|| tasks.clone());
        // Files of tasks that ended while the daemon was down.
        if let Some(root) = self.files.root.as_ref().filter(|_| !existing.is_empty()) {
            root.retain(|id| controllers.by_task.contains_key(id));
        }
        // Workloads whose task this node no longer has at all.
        for (id, _) in existing.drain() {
            let exec = self.exec.clone();
            let root = self.files.root.clone();
            tokio::spawn(async move {
                let task = Task {
                    id: Some(id.clone()),
                    ..Default::default()
                };
                persist("stopping leftover workload of task", &id, || {
                    timed(exec.kind(), "shutdown", exec.shutdown(&task))
                })
                .await;
                persist("removing leftover workload of task", &id, || {
                    timed(exec.kind(), "remove", exec.remove(&task))
                })
                .await;
                if let Some(root) = root {
                    root.remove(&id);
                }
            });
        }
    }

    /// Hands `task` to its controller, or starts one for it (adopting the
    /// workload an earlier run left, if any).
    fn give(
        &self,
        task: &Arc<Task>,
        controllers: &mut Controllers,
        existing: &mut HashMap<String, Existing>,
    ) {
        let id = task.id_str();
        if let Some(c) = controllers.by_task.get_mut(id) {
            // The same `Arc` is the same assignment; an equal one is
            // kept without waking the controller.
            c.tx.send_if_modified(|cur| {
                if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, task)) {
                    return false;
                }
                let changed = cur.as_deref() != Some(&**task);
                *cur = Some(task.clone());
                changed
            });
            // Back after it left (not something a manager does): it stays.
            controllers.leaving.retain(|l| l != id);
            return;
        }
        let (tx, rx) = watch::channel(Some(task.clone()));
        let found = existing.remove(id);
        let ctl = TaskController {
            id: id.to_string(),
            exec: self.exec.clone(),
            session: self.session.clone(),
            drain: self.drain.clone(),
            files: self.files.clone(),
            rx,
        };
        let handle = tokio::spawn(ctl.run(found));
        controllers
            .by_task
            .insert(id.to_string(), Controller { tx, handle });
    }
}

/// A difference between two sets of tasks in task ID order.
enum Change<'a> {
    /// New, or not the same `Arc` as before.
    Now(&'a Arc<Task>),
    Gone(&'a str),
}

/// What changed from `before` to `after`, both in task ID order.
fn diff<'a>(before: &'a [Arc<Task>], after: &'a [Arc<Task>]) -> Vec<Change<'a>> {
    use std::cmp::Ordering;
    let (mut i, mut j) = (0, 0);
    let mut changes = Vec::new();
    loop {
        match (before.get(i), after.get(j)) {
            (Some(b), Some(a)) if Arc::ptr_eq(b, a) => (i, j) = (i + 1, j + 1),
            (Some(b), Some(a)) => match b.id_str().cmp(a.id_str()) {
                Ordering::Equal => {
                    changes.push(Change::Now(a));
                    (i, j) = (i + 1, j + 1);
                }
                Ordering::Less => {
                    changes.push(Change::Gone(b.id_str()));
                    i += 1;
                }
                Ordering::Greater => {
                    changes.push(Change::Now(a));
                    j += 1;
                }
            },
            (Some(b), None) => {
                changes.push(Change::Gone(b.id_str()));
                i += 1;
            }
            (None, Some(a)) => {
                changes.push(Change::Now(a));
                j += 1;
            }
            (None, None) => return changes,
        }
    }
}

enum SessionEnd {
    Stopped,
    /// The session broke; `registered` says whether it had got going, so
    /// the next attempt need not back off as long.
    Broken {
        registered: bool,
        reason: String,
    },
}

/// Drives one task; owns no state but the last state it reported.
struct TaskController {
    id: String,
    exec: Arc<dyn Executor>,
    session: Arc<dyn Session>,
    drain: Option<Drain>,
    files: Files,
    rx: watch::Receiver<Option<Arc<Task>>>,
}

enum Next {
    Continue(TaskState),
    Stop,
}

impl TaskController {
    fn report(
        &self,
        state: TaskState,
        message: &str,
        err: Option<String>,
        runtime: Option<&RuntimeInfo>,
        exit: Option<i64>,
    ) {
        let container_status = runtime.map(|r| ContainerStatus {
            container_id: r.container_id.clone(),
            pid: r.pid,
            exit_code: exit,
        });
        // Where the task's target ports are reachable on this node: the
        // mesh's endpoints (the API shows only host-mode ones, as Docker).
        let port_status = runtime
            .filter(|r| !r.ports.is_empty() && !is_terminal(state))
            .map(|r| PortStatus {
                ports: Some(r.ports.clone()),
            });
        let status = TaskStatus {
            timestamp: Some(ids::now()),
            state: Some(state),
            message: Some(message.to_string()),
            err,
            container_status,
            port_status,
        };
        self.session.report(&self.id, status);
    }

    fn current(&self) -> Option<Arc<Task>> {
        self.rx.borrow().clone()
    }

    fn wanted(&self) -> bool {
        self.current().is_some_and(|t| t.is_wanted())
    }

    async fn run(mut self, found: Option<Existing>) {
        let Some(task) = self.current() else { return };
        // Where to resume: what the store last heard, corrected by what
        // actually exists on this node.
        let mut state = task.state();
        let mut runtime = found.as_ref().map(|e| e.runtime.clone());
        match (&found, state) {
            (Some(e), s) if e.running && s <= TaskState::RUNNING => {
                // Started by the last run, which stopped before its report
                // reached the store (which would otherwise say ASSIGNED
                // forever): say it now, ports included.
                if s < TaskState::RUNNING {
                    self.report(TaskState::RUNNING, "started", None, runtime.as_ref(), None);
                }
                state = TaskState::RUNNING
            }
            // Not running: it may never have been started (the last run
            // died between create and start), so a STARTING task starts it
            // (a start is a no-op for a workload that ran already, and the
            // wait then says how it ended); a RUNNING one is waited for.
            (Some(_), s) if s >= TaskState::STARTING && s <= TaskState::RUNNING => state = s,
            (None, s) if s >= TaskState::STARTING && s <= TaskState::RUNNING && self.wanted() => {
                self.report(
                    TaskState::FAILED,
                    "started",
                    Some("task: workload missing after agent restart".into()),
                    None,
                    None,
                );
                state = TaskState::FAILED;
            }
            (None, s) if s < TaskState::STARTING => state = TaskState::ASSIGNED,
            _ => {}
        }
        loop {
            if !self.wanted() {
                self.stop(state, &task).await;
                return;
            }
            // A task waiting out a restart delay (desired READY) is not
            // prepared yet: preparing is where a missing image or a bad
            // spec is rejected, and a rejection at once would make the
            // manager replace it at once, ignoring the delay. A rolling
            // update's new task is prepared while the old one stops, so it
            // starts the moment it may (a rejection pauses the update, as
            // it should).
            let waiting = state < TaskState::READY
                && self
                    .current()
                    .is_some_and(|t| t.desired() < TaskState::RUNNING && update_of(&t).is_none());
            if waiting {
                if self.rx.changed().await.is_err() {
                    return;
                }
                continue;
            }
            match self.step(state, &mut runtime).await {
                Next::Continue(s) => state = s,
                Next::Stop => {}
            }
            if is_terminal(state) {
                // A task never runs again: its secrets go now (SwarmKit
                // releases a task's dependencies past RUNNING too).
                self.drop_files();
            }
            if is_terminal(state) || matches!(state, TaskState::READY) {
                // Nothing to do until the manager changes its mind.
                if self.rx.changed().await.is_err() {
                    return;
                }
            }
        }
    }

    async fn step(&mut self, state: TaskState, runtime: &mut Option<RuntimeInfo>) -> Next {
        let Some(task) = self.current() else {
            return Next::Stop;
        };
        // What the executor makes: the spec with its templates expanded
        // (`--hostname '{{.Node.Hostname}}'`, `--env 'SLOT={{.Task.Slot}}'`).
        let task = match crate::templates::expand_container_spec(&task, &self.node()) {
            Ok(task) => task,
            Err(e) => {
                let e = ExecError::Rejected(e);
                return Next::Continue(self.failed(e, TaskState::REJECTED, "preparing"));
            }
        };
        match state {
            s if s < TaskState::READY => {
                self.report(TaskState::ACCEPTED, "accepted", None, None, None);
                self.report(TaskState::PREPARING, "preparing", None, None, None);
                let files = match self.task_files(&task) {
                    Ok(files) => files,
                    Err(e) => {
                        let e = ExecError::Rejected(e);
                        return Next::Continue(self.failed(e, TaskState::REJECTED, "preparing"));
                    }
                };
                let prepare = self.exec.prepare(&task, &files);
                match timed(self.exec.kind(), "prepare", prepare).await {
                    Ok(()) => {
                        self.report(TaskState::READY, "prepared", None, None, None);
                        if task.should_run() {
                            Next::Continue(TaskState::STARTING)
                        } else {
                            Next::Continue(TaskState::READY)
                        }
                    }
                    Err(e) => Next::Continue(self.failed(e, TaskState::REJECTED, "preparing")),
                }
            }
            TaskState::READY | TaskState::STARTING => {
                if !task.should_run() {
                    return Next::Continue(TaskState::READY);
                }
                self.report(TaskState::STARTING, "starting", None, None, None);
                let info = match timed(self.exec.kind(), "start", self.exec.start(&task)).await {
                    Ok(info) => info,
                    Err(e) => return Next::Continue(self.failed(e, TaskState::FAILED, "starting")),
                };
                *runtime = Some(info);
                match self.exec.wait_healthy(&task).await {
                    Ok(()) => {
                        self.report(TaskState::RUNNING, "started", None, runtime.as_ref(), None);
                        Next::Continue(TaskState::RUNNING)
                    }
                    Err(e) => Next::Continue(self.failed(e, TaskState::FAILED, "starting")),
                }
            }
            TaskState::RUNNING => {
                let exited = tokio::select! {
                    r = self.exec.wait(&task) => r,
                    _ = self.rx.changed() => return Next::Continue(TaskState::RUNNING),
                };
                match exited {
                    Ok(exit) if exit.code == 0 => {
                        self.report(
                            TaskState::COMPLETE,
                            "finished",
                            None,
                            runtime.as_ref(),
                            Some(0),
                        );
                        Next::Continue(TaskState::COMPLETE)
                    }
                    Ok(exit) => {
                        let err = match exit.message {
                            Some(m) => format!("task: non-zero exit ({}): {m}", exit.code),
                            None => format!("task: non-zero exit ({})", exit.code),
                        };
                        self.report(
                            TaskState::FAILED,
                            "started",
                            Some(err),
                            runtime.as_ref(),
                            Some(exit.code),
                        );
                        Next::Continue(TaskState::FAILED)
                    }
                    Err(e) => Next::Continue(self.failed(e, TaskState::FAILED, "started")),
                }
            }
            s => Next::Continue(s),
        }
    }

    /// The task's secrets and configs, written on the node's tmpfs.
    fn task_files(&self, task: &Task) -> Result<TaskFiles, String> {
        let data = self.session.data().borrow().clone();
        let files = taskfiles::files_for(task, &self.node(), &data)?;
        if files.is_empty() {
            return Ok(TaskFiles::default());
        }
        let Some(root) = &self.files.root else {
            return Err("this node keeps no secret or config files for its tasks".into());
        };
        root.place(&self.id, &files)
    }

    fn node(&self) -> NodeInfo {
        self.files
            .node
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn drop_files(&self) {
        if let Some(root) = &self.files.root {
            root.remove(&self.id);
        }
    }

    fn failed(&self, e: ExecError, default: TaskState, message: &str) -> TaskState {
        let state = match e {
            ExecError::Rejected(_) => TaskState::REJECTED,
            _ => default,
        };
        self.report(state, message, Some(e.to_string()), None, None);
        state
    }

    /// The manager wants the task stopped (desired SHUTDOWN or REMOVE) or
    /// has dropped it: stop the workload, say so, and remove it once the
    /// task is gone or marked for removal.
    async fn stop(&mut self, state: TaskState, task: &Task) {
        if state >= TaskState::ACCEPTED {
            if !is_terminal(state) {
                if let Some(drain) = &self.drain {
                    drain(self.id.clone()).await;
                }
            }
            // A task failed for an executor error may have left its
            // workload running: stop it whatever was reported (a stop of a
            // workload that ended is a no-op).
            persist("stopping task", &self.id, || {
                timed(self.exec.kind(), "shutdown", self.exec.shutdown(task))
            })
            .await;
        }
        if !is_terminal(state) && self.current().is_some() {
            self.report(TaskState::SHUTDOWN, "shutdown", None, None, None);
        }
        self.drop_files();
        loop {
            let remove = self
                .current()
                .is_none_or(|t| t.desired() >= TaskState::REMOVE);
            if remove {
                persist("removing task", &self.id, || {
                    timed(self.exec.kind(), "remove", self.exec.remove(task))
                })
                .await;
                return;
            }
            if self.rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Runs a stop or a removal until it succeeds. One failure (the engine
/// restarting, a request timing out) must not leave a workload running
/// that no task owns: nothing else would ever stop it. A rejection or a
/// workload already gone ends it.
async fn persist<F, Fut>(what: &str, id: &str, mut op: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), ExecError>>,
{
    let mut backoff = Duration::from_millis(500);
    loop {
        match op().await {
            Ok(()) | Err(ExecError::NotFound(_)) => return,
            Err(e @ ExecError::Rejected(_)) => {
                tracing::warn!("agent: {what} {id}: {e}");
                return;
            }
            Err(e) => {
                tracing::warn!("agent: {what} {id}: {e}; trying again in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests;
