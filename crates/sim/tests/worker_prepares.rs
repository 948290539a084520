//! The worker's rule for tasks the manager wants READY: a rolling update's
//! new task is prepared at once (so it starts the moment the old task of its
//! slot has stopped), a task waiting out a restart delay is not (a rejection
//! would be replaced at once, ignoring the delay). A simulated executor
//! behind the real worker, a session that only records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flotilla_agent::exec::NodeDescription;
use flotilla_agent::session::{Assignments, Session};
use flotilla_agent::worker::Worker;
use flotilla_sim::{SimConfig, SimExecutor};
use flotilla_store::models::{Task, TaskState, TaskStatus};
use flotilla_store::state::UPDATE_LABEL;
use tokio::sync::watch;

struct Recorder {
    assignments: watch::Sender<Assignments>,
    reports: Mutex<Vec<(String, TaskState)>>,
}

#[async_trait]
impl Session for Recorder {
    async fn register(&self, _: NodeDescription) -> Result<Duration, String> {
        Ok(Duration::from_secs(3600))
    }
    async fn heartbeat(&self) -> Result<(), String> {
        Ok(())
    }
    async fn assignments(&self) -> Result<watch::Receiver<Assignments>, String> {
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
        labels: from_update
            .then(|| HashMap::from([(UPDATE_LABEL.to_string(), "updating t0".to_string())])),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_update_task_is_prepared_while_a_delayed_restart_waits() {
    let session = Arc::new(Recorder {
        assignments: watch::Sender::new(Arc::new(vec![
            ready_task("update", true),
            ready_task("restart", false),
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
