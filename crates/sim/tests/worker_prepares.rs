//! The worker's rule for tasks the manager wants READY: a rolling update's
//! new task is prepared at once (so it starts the moment the old task of its
//! slot has stopped), a task waiting out a restart delay is not (a rejection
//! would be replaced at once, ignoring the delay). A simulated executor
//! behind the real worker, a session that only records.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flotilla_agent::exec::NodeDescription;
use flotilla_agent::session::{Assignments, Session, SessionError};
use flotilla_agent::worker::Worker;
use flotilla_sim::{SimConfig, SimExecutor};
use flotilla_store::models::{Task, TaskRuntime, TaskState, TaskStatus};
use tokio::sync::watch;

struct Recorder {
    assignments: watch::Sender<Assignments>,
    reports: Mutex<Vec<(String, TaskState)>>,
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
        let mut reports = self.reports.lock().unwrap();
        reports.push((task_id.to_string(), state));
    }
}

fn ready_task(id: &str, from_update: bool) -> Task {
    Task {
        id: Some(id.into()),
        service_id: Some("svc".into()),
        node_id: Some("node".into()),
        desired_state: Some(TaskState::READY),
        status: Some(TaskStatus {
            state: Some(TaskState::ASSIGNED),
            ..Default::default()
        }),
        runtime: TaskRuntime {
            update: from_update.then(|| "updating t0".to_string()),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn an_update_task_is_prepared_while_a_delayed_restart_waits() {
    let session = Arc::new(Recorder {
        assignments: watch::Sender::new(Arc::new(vec![
            Arc::new(ready_task("update", true)),
            Arc::new(ready_task("restart", false)),
        ])),
        reports: Mutex::new(Vec::new()),
    });
    let exec = Arc::new(SimExecutor::new(SimConfig::named("node")));
    let (stop, stop_rx) = watch::channel(false);
    let worker = tokio::spawn(Worker::new(session.clone(), exec, "node".into()).run(stop_rx));

    let states = |id: &str| -> Vec<TaskState> {
        let reports = session.reports.lock().unwrap();
        reports
            .iter()
            .filter(|(t, _)| t == id)
            .map(|(_, s)| *s)
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !states("update").contains(&TaskState::READY) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the update's task was not prepared: {:?}",
            states("update")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !states("update").contains(&TaskState::STARTING),
        "prepared, not started"
    );
    // The restart's task had every chance to be prepared too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(states("restart"), Vec::<TaskState>::new());

    stop.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), worker).await;
}

fn assigned_task(id: &str) -> Task {
    Task {
        desired_state: Some(TaskState::RUNNING),
        labels: None,
        ..ready_task(id, false)
    }
}

async fn wait_for_report(session: &Recorder, id: &str, state: TaskState) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if session
            .reports
            .lock()
            .unwrap()
            .iter()
            .any(|(t, s)| t == id && *s == state)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never reported {state:?}: {:?}",
            session.reports.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An agent that stopped after starting a task but before its RUNNING
/// report reached the store finds the workload on its next start; the store
/// still says ASSIGNED, so the new agent reports RUNNING at once instead of
/// leaving the task ASSIGNED for good, and does not start it again.
#[tokio::test]
async fn an_adopted_workload_is_reported_running_when_the_store_missed_it() {
    let exec = Arc::new(SimExecutor::new(SimConfig::named("node")));
    let first = Arc::new(Recorder {
        assignments: watch::Sender::new(Arc::new(vec![Arc::new(assigned_task("t1"))])),
        reports: Mutex::new(Vec::new()),
    });
    let (stop, stop_rx) = watch::channel(false);
    let worker = tokio::spawn(Worker::new(first.clone(), exec.clone(), "node".into()).run(stop_rx));
    wait_for_report(&first, "t1", TaskState::RUNNING).await;
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .expect("the worker stops when told")
        .expect("the worker ends cleanly");
    assert_eq!(exec.workloads(), 1, "the workload outlives the agent");

    // The store never heard: the task is still ASSIGNED.
    let second = Arc::new(Recorder {
        assignments: watch::Sender::new(Arc::new(vec![Arc::new(assigned_task("t1"))])),
        reports: Mutex::new(Vec::new()),
    });
    let (stop, stop_rx) = watch::channel(false);
    let worker =
        tokio::spawn(Worker::new(second.clone(), exec.clone(), "node".into()).run(stop_rx));
    wait_for_report(&second, "t1", TaskState::RUNNING).await;
    assert_eq!(
        *second.reports.lock().unwrap(),
        vec![("t1".to_string(), TaskState::RUNNING)],
        "adopted as it runs: not prepared or started again"
    );
    assert_eq!(exec.workloads(), 1);
    stop.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), worker).await;
}
