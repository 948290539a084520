//! The node's side of `service logs` across the cluster: log requests
//! arrive on the assignment stream (see `flotilla_manager::logbroker`),
//! each is read from the executor and sent back to the leader in chunks,
//! until the logs end or nobody reads them any more.

use std::sync::Arc;
use std::time::Duration;

use flotilla_store::logs::{LogChunk, LogEntry, LogRequest};
use futures::StreamExt;
use tokio::sync::watch;

use crate::exec::{Executor, LogOptions, LogStream};
use crate::session::Session;

/// Lines gathered into one chunk, at most.
const CHUNK_LINES: usize = 256;
/// How long the first line of a chunk waits for more.
const CHUNK_WAIT: Duration = Duration::from_millis(20);
/// A followed task that prints nothing still sends an empty chunk this
/// often, so it learns when its reader has gone.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// Serves the session's log requests until `stop`.
pub async fn serve(
    session: Arc<dyn Session>,
    exec: Arc<dyn Executor>,
    stop: watch::Receiver<bool>,
) {
    let Some(requests) = session.log_requests() else {
        return;
    };
    each_request(requests, stop, |request| {
        answer(session.clone(), exec.clone(), request)
    })
    .await;
}

/// Answers each request that arrives (logs, exec) in a task of its own,
/// until the requests end or `stop`; then the answers still running end.
pub(crate) async fn each_request<R, F>(
    mut requests: tokio::sync::mpsc::UnboundedReceiver<R>,
    mut stop: watch::Receiver<bool>,
    answer: impl Fn(R) -> F,
) where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            request = requests.recv() => {
                let Some(request) = request else { break };
                running.spawn(answer(request));
            }
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    running.shutdown().await;
}

async fn answer(session: Arc<dyn Session>, exec: Arc<dyn Executor>, request: LogRequest) {
    let sub = request.sub;
    let opts = LogOptions {
        follow: request.follow,
        tail: request.tail,
        since: request.since,
        stdout: request.stdout,
        stderr: request.stderr,
    };
    let send = |entries: Vec<LogEntry>, end: Option<String>| {
        let session = session.clone();
        async move {
            let chunk = LogChunk { sub, entries, end };
            matches!(session.publish_logs(&chunk).await, Ok(true))
        }
    };
    let mut lines = match exec.logs(&request.task, opts).await {
        Ok(lines) => lines,
        // A task whose workload is gone has no logs left: it ends quietly,
        // as a local one is skipped.
        Err(crate::exec::ExecError::NotFound(_)) => {
            send(Vec::new(), Some(String::new())).await;
            return;
        }
        Err(e) => {
            send(Vec::new(), Some(e.to_string())).await;
            return;
        }
    };
    loop {
        let first = match tokio::time::timeout(KEEPALIVE, lines.next()).await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(_) => {
                if !send(Vec::new(), None).await {
                    return;
                }
                continue;
            }
        };
        let mut entries = vec![entry(&first)];
        let deadline = tokio::time::Instant::now() + CHUNK_WAIT;
        while entries.len() < CHUNK_LINES {
            match tokio::time::timeout_at(deadline, lines.next()).await {
                Ok(Some(line)) => entries.push(entry(&line)),
                _ => break,
            }
        }
        if !send(entries, None).await {
            return;
        }
    }
    send(Vec::new(), Some(String::new())).await;
}

fn entry(line: &crate::exec::LogLine) -> LogEntry {
    LogEntry::new(
        line.stream == LogStream::Stderr,
        line.timestamp.clone(),
        &line.line,
    )
}
