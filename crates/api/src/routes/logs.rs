//! `/services/{id}/logs` and `/tasks/{id}/logs`: Docker's multiplexed log
//! stream. Each frame is an 8-byte header (stream 1 = stdout, 2 = stderr,
//! three zero bytes, big-endian u32 length) followed by the line, itself
//! prefixed with its timestamp and the task's details when asked for.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use flotilla_agent::exec::{LogLine, LogOptions, LogStream};
use flotilla_store::models::Task;
use flotilla_store::state::TaskExt;
use futures::stream::{self, StreamExt};
use serde::Deserialize;

use super::{truthy, Id, Params};
use crate::error::{ApiError, ApiResult};
use crate::node::Daemon;

#[derive(Deserialize)]
pub struct LogQuery {
    follow: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    timestamps: Option<String>,
    details: Option<String>,
    tail: Option<String>,
    since: Option<String>,
}

fn options(q: &LogQuery) -> ApiResult<LogOptions> {
    let (stdout, stderr) = (truthy(&q.stdout), truthy(&q.stderr));
    if !stdout && !stderr {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let tail = match q.tail.as_deref() {
        None | Some("") | Some("all") => None,
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid tail value '{n}': expected a number or \"all\""
            ))
        })?),
    };
    let since = match q.since.as_deref() {
        None | Some("") | Some("0") => None,
        Some(s) => Some(s.parse::<f64>().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid since value '{s}': expected a Unix timestamp"
            ))
        })? as i64),
    };
    Ok(LogOptions {
        follow: truthy(&q.follow),
        tail,
        since,
        stdout,
        stderr,
    })
}

pub fn frame(line: &LogLine, prefix: &str) -> Bytes {
    let stream = match line.stream {
        LogStream::Stdout => 1u8,
        LogStream::Stderr => 2u8,
    };
    let len = prefix.len() + line.line.len();
    let mut b = BytesMut::with_capacity(8 + len);
    b.put_u8(stream);
    b.put_bytes(0, 3);
    b.put_u32(len as u32);
    b.put_slice(prefix.as_bytes());
    b.put_slice(&line.line);
    b.freeze()
}

/// A task's lines from another node (through the leader's log broker), up
/// to the chunk that ends them; a node that cannot answer gives one line
/// on stderr saying so, never a hang.
async fn remote_lines(
    d: &Daemon,
    task: &Task,
    opts: &LogOptions,
) -> futures::stream::BoxStream<'static, LogLine> {
    use flotilla_store::logs::LogRequest;
    let request = LogRequest {
        sub: 0,
        task: task.clone(),
        follow: opts.follow,
        tail: opts.tail,
        since: opts.since,
        stdout: opts.stdout,
        stderr: opts.stderr,
    };
    let node_id = task.node().unwrap_or_default().to_string();
    let node = match d.store().await {
        Ok(store) => store
            .read(|s| {
                s.nodes
                    .get(&node_id)
                    .and_then(|n| n.description.as_ref())
                    .and_then(|d| d.hostname.clone())
            })
            .unwrap_or(node_id),
        Err(_) => node_id,
    };
    let task_id = task.id_str().to_string();
    let warning = move |why: String| LogLine {
        stream: LogStream::Stderr,
        timestamp: flotilla_store::ids::now(),
        line: Bytes::from(format!(
            "flotilla: no logs from task {task_id} on node {node}: {why}\n"
        )),
    };
    let chunks = match d.remote_logs(request).await {
        Ok(chunks) => chunks,
        Err(why) => return stream::iter([warning(why)]).boxed(),
    };
    // Chunks until the one that ends them (the stream itself may not end).
    let until_end = stream::unfold(Some(chunks), |chunks| async move {
        let mut chunks = chunks?;
        let chunk = chunks.next().await?;
        let next = chunk.end.is_none().then_some(chunks);
        Some((chunk, next))
    });
    until_end
        .flat_map(move |chunk| {
            let mut lines: Vec<LogLine> = chunk
                .entries
                .iter()
                .map(|e| LogLine {
                    stream: if e.stderr {
                        LogStream::Stderr
                    } else {
                        LogStream::Stdout
                    },
                    timestamp: e.timestamp.clone(),
                    line: Bytes::from(e.bytes()),
                })
                .collect();
            if let Some(why) = chunk.end.filter(|e| !e.is_empty()) {
                lines.push(warning(why));
            }
            stream::iter(lines)
        })
        .boxed()
}

async fn stream_tasks(d: Arc<Daemon>, tasks: Vec<Task>, q: LogQuery) -> ApiResult<Response> {
    let opts = options(&q)?;
    let (timestamps, details) = (truthy(&q.timestamps), truthy(&q.details));
    let here = d.place().await.map(|p| p.node_id);
    let mut streams = Vec::new();
    for task in tasks {
        let Some(node) = task.node() else {
            // Never placed: nothing ran, nothing to read.
            continue;
        };
        let lines = if Some(node) == here.as_deref() {
            let Ok(lines) = d.local().exec.logs(&task, opts.clone()).await else {
                // A task whose workload is gone has no logs left; Docker skips it too.
                continue;
            };
            lines
        } else {
            remote_lines(&*d, &task, &opts).await
        };
        let detail = format!(
            "com.docker.swarm.node.id={},com.docker.swarm.service.id={},com.docker.swarm.task.id={}",
            task.node().unwrap_or_default(),
            task.service(),
            task.id_str()
        );
        streams.push(lines.map(move |line| {
            let mut prefix = String::new();
            if timestamps {
                prefix.push_str(&line.timestamp);
                prefix.push(' ');
            }
            if details {
                prefix.push_str(&detail);
                prefix.push(' ');
            }
            Ok::<Bytes, std::io::Error>(frame(&line, &prefix))
        }));
    }
    let body = Body::from_stream(stream::select_all(streams));
    Ok((
        [(header::CONTENT_TYPE, "application/vnd.docker.raw-stream")],
        body,
    )
        .into_response())
}

pub async fn service(
    State(d): State<Arc<Daemon>>,
    Id(id): Id,
    Params(q): Params<LogQuery>,
) -> ApiResult<Response> {
    let store = d.store().await?;
    let tasks = store.read(|s| {
        let svc = s.find_service(&id)?;
        let sid = svc.id.clone().unwrap_or_default();
        let mut tasks: Vec<Task> = s.tasks_of_service(&sid).cloned().collect();
        tasks.sort_by_key(|t| (t.slot_no(), t.created_at.clone()));
        Some(tasks)
    });
    let tasks = tasks.ok_or_else(|| ApiError::not_found(format!("service {id} not found")))?;
    stream_tasks(d, tasks, q).await
}

pub async fn task(
    State(d): State<Arc<Daemon>>,
    Id(id): Id,
    Params(q): Params<LogQuery>,
) -> ApiResult<Response> {
    let store = d.store().await?;
    let task = store
        .read(|s| s.find_task(&id).cloned())
        .ok_or_else(|| ApiError::not_found(format!("task {id} not found")))?;
    stream_tasks(d, vec![task], q).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_docker_headers() {
        let line = LogLine {
            stream: LogStream::Stderr,
            timestamp: "t".into(),
            line: Bytes::from_static(b"hi\n"),
        };
        let f = frame(&line, "x ");
        assert_eq!(&f[..8], &[2, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(&f[8..], b"x hi\n");
    }
}
