//! The worker against a stub executor and a session that records: each test
//! asserts the exact states a task is reported in and the executor calls it
//! caused, as SwarmKit's controller tests do with their stub controller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{TaskState, TaskStatus};
use flotilla_store::models::Task;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::watch;

use super::Worker;
use crate::exec::{
    ExecError, Executor, Existing, ExitStatus, LogLine, LogOptions, NodeDescription, RuntimeInfo,
    TaskFiles,
};
use crate::session::{Assignments, Session, SessionError};

/// What the stub does when asked to prepare; `wait` ends with the code the
/// test sends on the task's channel (or never).
#[derive(Default)]
struct Stub {
    reject: Option<String>,
    existing: Vec<Existing>,
    /// How many stops and removals fail (as an engine that is restarting).
    failures: std::sync::atomic::AtomicUsize,
    calls: Mutex<Vec<(&'static str, String)>>,
    exits: Mutex<HashMap<String, watch::Sender<Option<i64>>>>,
}

impl Stub {
    fn call(&self, what: &'static str, task: &Task) {
        let id = task.id.clone().unwrap_or_default();
        self.calls.lock().unwrap().push((what, id));
    }

    fn calls(&self) -> Vec<(&'static str, String)> {
        self.calls.lock().unwrap().clone()
    }

    fn exit_channel(&self, id: &str) -> watch::Receiver<Option<i64>> {
        self.exits
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    fn fail_maybe(&self) -> Result<(), ExecError> {
        use std::sync::atomic::Ordering;
        let failed = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match failed {
            Ok(_) => Err(ExecError::Failed("the engine is restarting".into())),
            Err(_) => Ok(()),
        }
    }

    /// Ends the task's workload with `code`.
    fn exit(&self, id: &str, code: i64) {
        drop(self.exit_channel(id));
        self.exits.lock().unwrap()[id].send_replace(Some(code));
    }
}

#[async_trait]
impl Executor for Stub {
    fn kind(&self) -> &'static str {
        "stub"
    }
    async fn describe(&self) -> NodeDescription {
        NodeDescription::default()
    }
    async fn list(&self, _node_id: &str) -> Result<Vec<Existing>, ExecError> {
        Ok(self.existing.clone())
    }
    async fn prepare(&self, task: &Task, _files: &TaskFiles) -> Result<(), ExecError> {
        self.call("prepare", task);
        match &self.reject {
            Some(why) => Err(ExecError::Rejected(why.clone())),
            None => Ok(()),
        }
    }
    async fn start(&self, task: &Task) -> Result<RuntimeInfo, ExecError> {
        self.call("start", task);
        Ok(RuntimeInfo::default())
    }
    async fn wait_healthy(&self, _task: &Task) -> Result<(), ExecError> {
        Ok(())
    }
    async fn wait(&self, task: &Task) -> Result<ExitStatus, ExecError> {
        let mut exit = self.exit_channel(task.id.as_deref().unwrap_or_default());
        let code = loop {
            if let Some(code) = *exit.borrow_and_update() {
                break code;
            }
            if exit.changed().await.is_err() {
                futures::future::pending::<()>().await;
            }
        };
        Ok(ExitStatus {
            code,
            message: None,
        })
    }
    async fn shutdown(&self, task: &Task) -> Result<(), ExecError> {
        self.call("shutdown", task);
        self.fail_maybe()
    }
    async fn remove(&self, task: &Task) -> Result<(), ExecError> {
        self.call("remove", task);
        self.fail_maybe()
    }
    async fn logs(
        &self,
        _task: &Task,
        _opts: LogOptions,
    ) -> Result<BoxStream<'static, LogLine>, ExecError> {
        Ok(futures::stream::empty().boxed())
    }
}

/// A session whose assignments the test sets and whose reports it reads.
struct Recorder {
    assignments: watch::Sender<Assignments>,
    reports: Mutex<Vec<(String, TaskState, Option<String>)>>,
}

#[async_trait]
impl Session for Recorder {
    async fn register(&self, _: NodeDescription) -> Result<Duration, SessionError> {
        Ok(Duration::from_secs(3600))
    }
    async fn heartbeat(&self) -> Result<(), SessionError> {
        Ok(())
    }
    async fn assignments(&self) -> Result<watch::Receiver<Assignments>, SessionError> {
        Ok(self.assignments.subscribe())
    }
    fn report(&self, task_id: &str, status: TaskStatus) {
        let state = status.state.unwrap_or(TaskState::NEW);
        self.reports
            .lock()
            .unwrap()
            .push((task_id.to_string(), state, status.err));
    }
}

fn task(id: &str, state: TaskState, desired: TaskState) -> Task {
    Task {
        id: Some(id.into()),
        service_id: Some("svc".into()),
        node_id: Some("node".into()),
        desired_state: Some(desired),
        status: Some(TaskStatus {
            state: Some(state),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A running worker over `stub`, with `tasks` assigned.
struct Harness {
    stub: Arc<Stub>,
    session: Arc<Recorder>,
    stop: watch::Sender<bool>,
    worker: tokio::task::JoinHandle<()>,
}

impl Harness {
    fn start(stub: Stub, tasks: Vec<Task>) -> Harness {
        let stub = Arc::new(stub);
        let session = Arc::new(Recorder {
            assignments: watch::Sender::new(Arc::new(tasks.into_iter().map(Arc::new).collect())),
            reports: Mutex::new(Vec::new()),
        });
        let (stop, stop_rx) = watch::channel(false);
        let worker =
            tokio::spawn(Worker::new(session.clone(), stub.clone(), "node".into()).run(stop_rx));
        Harness {
            stub,
            session,
            stop,
            worker,
        }
    }

    fn assign(&self, tasks: Vec<Task>) {
        self.session
            .assignments
            .send_replace(Arc::new(tasks.into_iter().map(Arc::new).collect()));
    }

    fn states(&self, id: &str) -> Vec<TaskState> {
        let reports = self.session.reports.lock().unwrap();
        reports
            .iter()
            .filter(|(t, ..)| t == id)
            .map(|(_, s, _)| *s)
            .collect()
    }

    fn error(&self, id: &str) -> Option<String> {
        let reports = self.session.reports.lock().unwrap();
        reports
            .iter()
            .rev()
            .find(|(t, ..)| t == id)
            .and_then(|(.., e)| e.clone())
    }

    /// Waits until `done` holds of the reports and calls so far.
    async fn until(&self, what: &str, done: impl Fn(&Harness) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: reports {:?}, calls {:?}",
                self.session.reports.lock().unwrap(),
                self.stub.calls()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(self) {
        self.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), self.worker)
            .await
            .expect("the worker stops when told")
            .expect("the worker ends cleanly");
    }
}

fn call(what: &'static str, id: &str) -> (&'static str, String) {
    (what, id.to_string())
}

use TaskState as S;

#[tokio::test]
async fn a_task_walks_every_state_to_running_then_completes() {
    let h = Harness::start(Stub::default(), vec![task("t", S::ASSIGNED, S::RUNNING)]);
    h.until("running", |h| h.states("t").contains(&S::RUNNING))
        .await;
    assert_eq!(
        h.states("t"),
        [S::ACCEPTED, S::PREPARING, S::READY, S::STARTING, S::RUNNING]
    );
    assert_eq!(h.stub.calls(), [call("prepare", "t"), call("start", "t")]);

    h.stub.exit("t", 0);
    h.until("complete", |h| h.states("t").contains(&S::COMPLETE))
        .await;
    assert_eq!(h.states("t").last(), Some(&S::COMPLETE));
    h.stop().await;
}

#[tokio::test]
async fn a_non_zero_exit_is_a_failure_with_its_code() {
    let h = Harness::start(Stub::default(), vec![task("t", S::ASSIGNED, S::RUNNING)]);
    h.until("running", |h| h.states("t").contains(&S::RUNNING))
        .await;
    h.stub.exit("t", 3);
    h.until("failed", |h| h.states("t").contains(&S::FAILED))
        .await;
    assert_eq!(h.error("t").as_deref(), Some("task: non-zero exit (3)"));
    h.stop().await;
}

#[tokio::test]
async fn a_rejected_prepare_never_starts() {
    let stub = Stub {
        reject: Some("No such image: nope".into()),
        ..Default::default()
    };
    let h = Harness::start(stub, vec![task("t", S::ASSIGNED, S::RUNNING)]);
    h.until("rejected", |h| h.states("t").contains(&S::REJECTED))
        .await;
    assert_eq!(h.states("t"), [S::ACCEPTED, S::PREPARING, S::REJECTED]);
    assert_eq!(h.error("t").as_deref(), Some("No such image: nope"));
    assert_eq!(h.stub.calls(), [call("prepare", "t")]);
    h.stop().await;
}

/// Chaos seed 77 (docker executor): a task failed for an engine error
/// while its container ran on; the manager replaced it and the old
/// container ran beside the new one, as a failed task was never stopped.
#[tokio::test]
async fn a_failed_task_is_stopped_all_the_same_when_the_manager_says_so() {
    let h = Harness::start(Stub::default(), vec![task("t", S::ASSIGNED, S::RUNNING)]);
    h.until("running", |h| h.states("t").contains(&S::RUNNING))
        .await;
    h.stub.exit("t", 1);
    h.until("failed", |h| h.states("t").contains(&S::FAILED))
        .await;
    h.assign(vec![task("t", S::FAILED, S::SHUTDOWN)]);
    h.until("stopped", |h| {
        h.stub.calls().contains(&call("shutdown", "t"))
    })
    .await;
    assert_eq!(
        h.states("t").last(),
        Some(&S::FAILED),
        "still reported failed"
    );
    h.stop().await;
}

#[tokio::test]
async fn desired_shutdown_stops_and_remove_removes() {
    let h = Harness::start(Stub::default(), vec![task("t", S::ASSIGNED, S::RUNNING)]);
    h.until("running", |h| h.states("t").contains(&S::RUNNING))
        .await;
    h.assign(vec![task("t", S::RUNNING, S::SHUTDOWN)]);
    h.until("shut down", |h| h.states("t").contains(&S::SHUTDOWN))
        .await;
    assert_eq!(
        h.stub.calls(),
        [
            call("prepare", "t"),
            call("start", "t"),
            call("shutdown", "t")
        ]
    );
    h.assign(vec![task("t", S::SHUTDOWN, S::REMOVE)]);
    h.until("removed", |h| h.stub.calls().contains(&call("remove", "t")))
        .await;
    assert_eq!(h.states("t").last(), Some(&S::SHUTDOWN), "reported once");
    h.stop().await;
}

#[tokio::test]
async fn a_task_gone_from_the_assignments_is_stopped_and_removed() {
    let h = Harness::start(Stub::default(), vec![task("t", S::ASSIGNED, S::RUNNING)]);
    h.until("running", |h| h.states("t").contains(&S::RUNNING))
        .await;
    h.assign(vec![]);
    h.until("removed", |h| h.stub.calls().contains(&call("remove", "t")))
        .await;
    assert_eq!(
        h.stub.calls(),
        [
            call("prepare", "t"),
            call("start", "t"),
            call("shutdown", "t"),
            call("remove", "t")
        ]
    );
    h.stop().await;
}

/// Chaos seed 72 (docker executor): containers of tasks the swarm had
/// dropped kept running after a stop or removal failed once.
#[tokio::test]
async fn a_failed_stop_or_removal_is_tried_again() {
    let stub = Stub {
        existing: vec![existing("old", true)],
        failures: 3.into(),
        ..Default::default()
    };
    let h = Harness::start(stub, vec![task("t", S::ASSIGNED, S::RUNNING)]);
    h.until("running", |h| h.states("t").contains(&S::RUNNING))
        .await;
    h.assign(vec![]);
    // Prepare and start "t"; then a stop and a removal of each task, and
    // the three that failed once more.
    h.until("both removed", |h| h.stub.calls().len() >= 2 + 4 + 3)
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let calls = h.stub.calls();
    assert_eq!(calls.len(), 2 + 4 + 3, "no try after a success: {calls:?}");
    for id in ["old", "t"] {
        let last = calls.iter().rev().find(|c| c.1 == id).map(|c| c.0);
        assert_eq!(last, Some("remove"), "{calls:?}");
    }
    h.stop().await;
}

fn existing(id: &str, running: bool) -> Existing {
    Existing {
        task_id: id.into(),
        running,
        runtime: RuntimeInfo::default(),
    }
}

#[tokio::test]
async fn a_running_workload_is_adopted_without_a_start_or_a_report() {
    let stub = Stub {
        existing: vec![existing("t", true)],
        ..Default::default()
    };
    let h = Harness::start(stub, vec![task("t", S::RUNNING, S::RUNNING)]);
    // Let the worker reconcile; then it ends when its workload does.
    h.stub.exit("t", 0);
    h.until("complete", |h| h.states("t").contains(&S::COMPLETE))
        .await;
    assert_eq!(h.states("t"), [S::COMPLETE], "adopted as it ran");
    assert_eq!(h.stub.calls(), [], "neither prepared nor started again");
    h.stop().await;
}

/// Chaos seed 72 (docker executor): a manager killed between a container's
/// create and its start came back, took the created container for a
/// running one, and waited on it forever: the task stayed STARTING.
#[tokio::test]
async fn a_workload_created_but_not_started_before_a_restart_is_started() {
    let stub = Stub {
        existing: vec![existing("t", false)],
        ..Default::default()
    };
    let h = Harness::start(stub, vec![task("t", S::STARTING, S::RUNNING)]);
    h.until("running", |h| h.states("t").contains(&S::RUNNING))
        .await;
    assert_eq!(
        h.stub.calls(),
        [call("start", "t")],
        "started, not created again"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_workload_whose_task_is_gone_is_removed_at_start() {
    let stub = Stub {
        existing: vec![existing("old", true)],
        ..Default::default()
    };
    let h = Harness::start(stub, vec![task("t", S::ASSIGNED, S::RUNNING)]);
    h.until("removed", |h| {
        h.stub.calls().contains(&call("remove", "old"))
    })
    .await;
    assert!(h.stub.calls().contains(&call("shutdown", "old")));
    assert!(h.states("old").is_empty(), "not reported: no task of ours");
    h.stop().await;
}

#[tokio::test]
async fn a_workload_missing_after_a_restart_is_a_failure() {
    let h = Harness::start(Stub::default(), vec![task("t", S::RUNNING, S::RUNNING)]);
    h.until("failed", |h| h.states("t").contains(&S::FAILED))
        .await;
    assert_eq!(h.states("t"), [S::FAILED]);
    assert_eq!(
        h.error("t").as_deref(),
        Some("task: workload missing after agent restart")
    );
    assert_eq!(
        h.stub.calls(),
        [],
        "not started again behind the manager's back"
    );
    h.stop().await;
}

/// The walk over two sets in task ID order finds exactly what is new or a
/// different `Arc`, and what is gone.
#[test]
fn the_diff_of_two_sets_names_only_what_changed() {
    use super::{diff, Change};
    let t = |id: &str| {
        Arc::new(Task {
            id: Some(id.into()),
            ..Default::default()
        })
    };
    let (a, b, c, d) = (t("a"), t("b"), t("c"), t("d"));
    let before = vec![a.clone(), b.clone(), c.clone()];
    // b replaced by an equal copy (a new Arc), c gone, d new; a kept.
    let after = vec![a, t("b"), d];
    let got: Vec<String> = diff(&before, &after)
        .into_iter()
        .map(|c| match c {
            Change::Now(t) => format!("now {}", t.id.as_deref().unwrap_or("")),
            Change::Gone(id) => format!("gone {id}"),
        })
        .collect();
    assert_eq!(got, ["now b", "gone c", "now d"]);
    assert!(diff(&after, &after).is_empty());
    assert_eq!(diff(&[], &before).len(), 3);
    drop(b);
}
