//! The agents' task status reports on their way to the store: the newest
//! report per task waits, and a writer commits them in batches.
//!
//! A status only moves forward, so an older report still waiting says
//! nothing the newest does not. Keeping one per task bounds the queue by
//! the number of tasks however far the writer lags, and a batch carries
//! each task's latest state: with a queue of every report, 100,000 tasks
//! starting at once held ~400,000 reports (tens of MB), and each task's
//! RUNNING waited behind its own stale PREPARING and STARTING.

use std::sync::Mutex;
use std::time::Duration;

use flotilla_store::models::{TaskState, TaskStatus};
use flotilla_store::{Op, Store};
use indexmap::map::Entry;
use indexmap::IndexMap;
use tokio::sync::{watch, Notify};

/// Reports arriving within this window after the first share one write.
const BATCH_WINDOW: Duration = Duration::from_millis(10);
const BATCH_MAX: usize = 1000;
/// Attempts at writing a batch of reports again (every 200 ms) while this
/// manager leads.
const STATUS_RETRIES: u32 = 50;

#[derive(Default)]
pub(crate) struct StatusReports {
    waiting: Mutex<Waiting>,
    arrived: Notify,
}

#[derive(Default)]
struct Waiting {
    /// By task, in the order each task's first waiting report came.
    reports: IndexMap<String, TaskStatus>,
    /// The writer has stopped: reports are no longer taken.
    closed: bool,
}

fn state(status: &TaskStatus) -> TaskState {
    status.state.unwrap_or(TaskState::NEW)
}

impl StatusReports {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `status` for `task`, unless a later state of it is waiting
    /// already (reports of one task can cross on their way here).
    pub(crate) fn push(&self, task: String, status: TaskStatus) {
        let mut waiting = self.lock();
        if waiting.closed {
            return;
        }
        match waiting.reports.entry(task) {
            Entry::Occupied(mut e) => {
                if state(&status) >= state(e.get()) {
                    e.insert(status);
                }
            }
            Entry::Vacant(e) => {
                e.insert(status);
            }
        }
        drop(waiting);
        self.arrived.notify_one();
    }

    /// Up to `max` waiting reports, the longest waiting first.
    fn take(&self, max: usize) -> Vec<(String, TaskStatus)> {
        let mut waiting = self.lock();
        if waiting.reports.len() <= max {
            // All of it: no entry left to shift to the front, as a drain
            // of the first `max` does with every one behind them.
            return std::mem::take(&mut waiting.reports).into_iter().collect();
        }
        waiting.reports.drain(..max).collect()
    }

    fn len(&self) -> usize {
        self.lock().reports.len()
    }

    fn close(&self) {
        self.lock().closed = true;
    }
}

/// Writes the waiting reports until `stop` turns true; what was reported
/// before the stop is written, then no more.
pub(crate) async fn write(store: Store, reports: &StatusReports, mut stop: watch::Receiver<bool>) {
    loop {
        let mut stopping = *stop.borrow();
        if !stopping && reports.len() == 0 {
            stopping = tokio::select! {
                _ = reports.arrived.notified() => false,
                _ = stop.wait_for(|s| *s) => true,
            };
        }
        if stopping {
            reports.close();
            while reports.len() > 0 {
                write_batch(&store, reports.take(BATCH_MAX)).await;
            }
            return;
        }
        if reports.len() < BATCH_MAX {
            tokio::time::sleep(BATCH_WINDOW).await;
        }
        let batch = reports.take(BATCH_MAX);
        if !batch.is_empty() {
            write_batch(&store, batch).await;
        }
    }
}

async fn write_batch(store: &Store, batch: Vec<(String, TaskStatus)>) {
    let ops: Vec<Op> = batch
        .into_iter()
        .map(|(id, status)| Op::SetTaskStatus { id, status })
        .collect();
    // The agent was told its reports arrived: a batch that could not be
    // written is tried again while this manager leads (a status only moves
    // forward, so writing it twice is harmless). Once it no longer leads,
    // the agents send their tasks' states again to the new leader when
    // they register with it.
    for attempt in 0u32.. {
        match store.propose(ops.clone()).await {
            Ok((_, results)) => {
                for e in results.into_iter().filter_map(|r| r.err()) {
                    tracing::debug!("task status not recorded: {e}");
                }
                return;
            }
            Err(e) if attempt < STATUS_RETRIES && store.is_leader() => {
                tracing::debug!("task status batch not written yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                tracing::warn!("task status batch not written: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: TaskState, message: &str) -> TaskStatus {
        TaskStatus {
            state: Some(state),
            message: Some(message.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_task_waits_once_with_its_latest_state_in_its_first_report_s_place() {
        let q = StatusReports::default();
        q.push("a".into(), report(TaskState::PREPARING, "preparing"));
        q.push("b".into(), report(TaskState::RUNNING, "started"));
        q.push("a".into(), report(TaskState::RUNNING, "started"));
        // Crossed on the way: an older state never replaces a newer one.
        q.push("b".into(), report(TaskState::STARTING, "starting"));
        // The same state again refreshes the message.
        q.push("a".into(), report(TaskState::RUNNING, "still running"));
        let taken = q.take(10);
        let seen: Vec<(&str, TaskState, &str)> = taken
            .iter()
            .map(|(id, s)| (id.as_str(), state(s), s.message.as_deref().unwrap()))
            .collect();
        assert_eq!(
            seen,
            [
                ("a", TaskState::RUNNING, "still running"),
                ("b", TaskState::RUNNING, "started")
            ]
        );
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_batch_takes_the_longest_waiting_first_and_a_closed_queue_takes_nothing() {
        let q = StatusReports::default();
        for i in 0..5 {
            q.push(format!("t{i}"), report(TaskState::RUNNING, ""));
        }
        let first: Vec<String> = q.take(3).into_iter().map(|(id, _)| id).collect();
        assert_eq!(first, ["t0", "t1", "t2"]);
        q.close();
        q.push("t9".into(), report(TaskState::RUNNING, ""));
        let rest: Vec<String> = q.take(10).into_iter().map(|(id, _)| id).collect();
        assert_eq!(rest, ["t3", "t4"]);
    }
}
