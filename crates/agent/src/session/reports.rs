//! Task status reports, sent in batches: what the worker reported while the
//! last batch was on its way goes in the next one, to whichever manager is
//! current. A batch that fails is retried with backoff, following the
//! session's failover, and given up after a few attempts (the worker
//! reports each new state again; the manager sees the latest).

use std::sync::Weak;
use std::time::Duration;

use bollard::models::TaskStatus;
use tokio::sync::mpsc;

use super::{ManagerSession, SessionError};

pub type Report = (String, TaskStatus);

/// Attempts at one batch before it is given up.
pub const ATTEMPTS: u32 = 5;

/// The wait after failed attempt `attempt` (from 0): 100 ms, doubling.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100 << attempt)
}

/// `first` and every report already waiting behind it, in order.
pub fn batch(first: Report, rx: &mut mpsc::UnboundedReceiver<Report>) -> Vec<Report> {
    let mut batch = vec![first];
    while let Ok(more) = rx.try_recv() {
        batch.push(more);
    }
    batch
}

/// Sends the reports `rx` receives until the session is dropped.
pub(super) async fn run(session: Weak<ManagerSession>, mut rx: mpsc::UnboundedReceiver<Report>) {
    while let Some(first) = rx.recv().await {
        let batch = batch(first, &mut rx);
        let Some(session) = session.upgrade() else {
            return;
        };
        if let Err(e) = send(&session, &batch).await {
            tracing::warn!(
                "agent: {} task status reports not delivered: {e}",
                batch.len()
            );
        }
    }
}

async fn send(session: &ManagerSession, batch: &[Report]) -> Result<(), SessionError> {
    let mut last = SessionError::NoManager;
    for attempt in 0..ATTEMPTS {
        let addr = session.current()?;
        match session.transport().report(&addr, batch).await {
            Ok(()) => return Ok(()),
            // This agent's own message: no manager would take it.
            Err(e @ SessionError::Protocol { .. }) => return Err(e),
            Err(e) => {
                session.failed(&addr, &e);
                last = e;
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
    Err(last)
}
