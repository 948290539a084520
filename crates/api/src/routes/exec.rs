//! `POST /flotilla/v1/tasks/{id}/exec` and `/flotilla/v1/services/{id}/exec`:
//! Flotilla's own endpoint, beside Docker's, for running a command in a
//! task wherever it runs. The body is Docker's exec-create JSON; the answer
//! is `101 Switching Protocols` (`Upgrade: tcp`), after which both sides
//! send frames (`flotilla_store::exec::Frame`: a kind byte, a big-endian
//! u32 length, the payload): stdin, its end and resizes from the client;
//! stdout, stderr, and last the exit code or an error to it. Everything
//! that can be told before the command runs (no such task, not running,
//! node down) is an ordinary `{"message"}` error instead.
//!
//! A worker's API has no store: it relays the request to a manager over the
//! cluster's mutual TLS (`flotilla_manager::execrelay`), which serves it as
//! below when the swarm allows workers to exec, and answers its refusals.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use flotilla_manager::execbroker::Attached;
use flotilla_manager::execrelay::{
    ExecOpener, ExecRefusal, ExecTarget, OpenFuture, Opened, RelayRequest,
};
use flotilla_store::exec::{ExecSpec, Frame, FrameKind, FrameReader};
use flotilla_store::models::{Task, TaskState};
use flotilla_store::state::TaskExt;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::events::{exec_event, LocalEvents};
use super::{json_body, read_to_end, Params};
use crate::error::{ApiError, ApiResult};
use crate::node::Daemon;

#[derive(Deserialize)]
pub struct ServiceQuery {
    slot: Option<String>,
}

/// The task named by ID or unique ID prefix; it must be running.
pub async fn task(
    State(d): State<Arc<Daemon>>,
    Extension(events): Extension<LocalEvents>,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    serve(d, events, ExecTarget::Task(id), req).await
}

/// A running task of the service: the one of `slot` when given, else the
/// running task of the lowest slot (global services: of the lowest task ID).
pub async fn service(
    State(d): State<Arc<Daemon>>,
    Extension(events): Extension<LocalEvents>,
    Path(id): Path<String>,
    Params(q): Params<ServiceQuery>,
    req: Request,
) -> ApiResult<Response> {
    let slot = match q.slot.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(raw.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            ApiError::bad_request(format!("invalid slot {raw:?}: expected a positive number"))
        })?),
    };
    serve(d, events, ExecTarget::Service { id, slot }, req).await
}

/// The running task `target` names, as the manager's store has it.
fn find(store: &flotilla_store::Store, target: &ExecTarget) -> ApiResult<Task> {
    match target {
        ExecTarget::Task(id) => {
            let task = store
                .read(|s| s.find_task(id).cloned())
                .ok_or_else(|| ApiError::not_found(format!("task {id} not found")))?;
            if task.state() != TaskState::RUNNING {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "task {} is not running (its state is {})",
                        task.id_str(),
                        task.state()
                    ),
                ));
            }
            Ok(task)
        }
        ExecTarget::Service { id, slot } => {
            let found = store.read(|s| {
                let svc = s.find_service(id)?;
                let name = flotilla_store::state::service_name(svc).to_string();
                let sid = svc.id.clone().unwrap_or_default();
                Some((name, pick(s.tasks_of_service(&sid), *slot).cloned()))
            });
            let (name, task) =
                found.ok_or_else(|| ApiError::not_found(format!("service {id} not found")))?;
            task.ok_or_else(|| {
                let what = match slot {
                    Some(n) => format!("slot {n} of service {name}"),
                    None => format!("service {name}"),
                };
                ApiError::new(StatusCode::CONFLICT, format!("{what} has no running task"))
            })
        }
    }
}

/// The running task a service's exec goes to.
pub fn pick<'a>(tasks: impl Iterator<Item = &'a Task>, slot: Option<i64>) -> Option<&'a Task> {
    tasks
        .filter(|t| t.state() == TaskState::RUNNING && t.desired() == TaskState::RUNNING)
        .filter(|t| slot.is_none_or(|n| t.slot_no() == n))
        .min_by(|a, b| (a.slot_no(), a.id_str()).cmp(&(b.slot_no(), b.id_str())))
}

fn spec_of(body: &[u8]) -> ApiResult<ExecSpec> {
    let body = axum::body::Bytes::copy_from_slice(body);
    let spec: ExecSpec = json_body(&body)?;
    spec_check(&spec)?;
    Ok(spec)
}

/// A command, and well-formed environment variables.
fn spec_check(spec: &ExecSpec) -> ApiResult<()> {
    if spec.cmd.is_empty() || spec.cmd[0].is_empty() {
        return Err(ApiError::bad_request("No exec command specified"));
    }
    if let Some(bad) = spec
        .env
        .iter()
        .find(|e| e.split_once('=').is_none_or(|(k, _)| k.is_empty()))
    {
        return Err(ApiError::bad_request(format!(
            "invalid environment variable {bad:?}: expected KEY=VALUE"
        )));
    }
    Ok(())
}

fn wants_upgrade(req: &Request) -> bool {
    let has = |name: header::HeaderName, want: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(want))
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "tcp")
}

/// A manager finds the task and runs the command itself; a worker, which
/// has no store, relays the request to a manager (which emits the events).
async fn serve(
    d: Arc<Daemon>,
    events: LocalEvents,
    target: ExecTarget,
    mut req: Request,
) -> ApiResult<Response> {
    let store = match d.store().await {
        Ok(store) => Some(store),
        Err(_) if d.place().await.is_some_and(|p| p.store.is_none()) => None,
        Err(e) => return Err(e.into()),
    };
    let task = store.as_ref().map(|s| find(s, &target)).transpose()?;
    if !wants_upgrade(&req) {
        return Err(ApiError::bad_request(
            "exec needs an upgraded connection: send Connection: Upgrade and Upgrade: tcp",
        ));
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let body = read_to_end(req.into_body())
        .await
        .ok_or_else(|| ApiError::bad_request("request body is too large"))?;
    let spec = spec_of(&body)?;
    let Opened {
        attached,
        exec_id: _,
        done,
    } = match task {
        Some(task) => start(&d, &events, task, spec).await?,
        None => relayed(&d, RelayRequest { target, spec }).await?,
    };
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::debug!("exec: the client did not upgrade: {e}");
                done(None);
                return;
            }
        };
        done(pipe(io, attached).await);
    });
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [(header::CONNECTION, "Upgrade"), (header::UPGRADE, "tcp")],
        Body::empty(),
    )
        .into_response())
}

/// Runs `spec` in `task` (on this node or through the broker) until its
/// `Started`; the exec events go to this API's `/events`.
async fn start(
    d: &Arc<Daemon>,
    events: &LocalEvents,
    task: Task,
    spec: ExecSpec,
) -> ApiResult<Opened> {
    let here = d.place().await.map(|p| p.node_id);
    let mut attached = if task.node().is_some() && task.node() == here.as_deref() {
        local(d, &task, &spec).await?
    } else {
        d.remote_exec(task.clone(), spec.clone())
            .await
            .map_err(ApiError::unavailable)?
    };
    // The node's first frame says whether the command runs.
    let first = tokio::time::timeout(
        flotilla_manager::execbroker::CALLBACK_WAIT,
        attached.from_node.recv(),
    )
    .await;
    let exec_id = match first {
        Ok(Some(f)) if f.kind == FrameKind::Started => f.text(),
        Ok(Some(f)) if f.kind == FrameKind::Error => {
            return Err(ApiError::new(StatusCode::CONFLICT, f.text()))
        }
        _ => {
            return Err(ApiError::unavailable(format!(
                "node {} did not start the command",
                task.node().unwrap_or_default()
            )))
        }
    };
    let command = spec.cmd.join(" ");
    events.publish(exec_event(
        &task,
        &format!("exec_create: {command}"),
        &exec_id,
        None,
    ));
    events.publish(exec_event(
        &task,
        &format!("exec_start: {command}"),
        &exec_id,
        None,
    ));
    let events = events.clone();
    let id = exec_id.clone();
    Ok(Opened {
        attached,
        exec_id,
        done: Box::new(move |code| events.publish(exec_event(&task, "exec_die", &id, code))),
    })
}

/// A worker's exec, through a manager: its refusal is this API's answer.
async fn relayed(d: &Arc<Daemon>, request: RelayRequest) -> ApiResult<Opened> {
    let refused = |r: ExecRefusal| {
        ApiError::new(
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            r.message,
        )
    };
    let mut attached = d.relay_exec(request).await.map_err(refused)?;
    // The relay answers `Started` first.
    let exec_id = match attached.from_node.recv().await {
        Some(f) if f.kind == FrameKind::Started => f.text(),
        _ => {
            return Err(ApiError::unavailable(
                "the manager did not start the command",
            ))
        }
    };
    Ok(Opened {
        attached,
        exec_id,
        done: Box::new(|_| {}),
    })
}

/// Serves the execs workers relay to this manager (see
/// `flotilla_manager::execrelay`) as this API serves its own clients'.
pub struct RelayServer {
    /// Weak: the node keeps the server, and the server must not keep the
    /// node.
    pub daemon: std::sync::Weak<Daemon>,
    pub events: LocalEvents,
}

impl ExecOpener for RelayServer {
    fn open(&self, request: RelayRequest) -> OpenFuture {
        let daemon = self.daemon.upgrade();
        let events = self.events.clone();
        Box::pin(async move {
            let refusal = |e: ApiError| ExecRefusal::new(e.status.as_u16(), e.message);
            let d = daemon.ok_or_else(|| ExecRefusal::new(503, "this node is stopping"))?;
            let store = d.store().await.map_err(|e| refusal(e.into()))?;
            let task = find(&store, &request.target).map_err(refusal)?;
            spec_check(&request.spec).map_err(refusal)?;
            start(&d, &events, task, request.spec)
                .await
                .map_err(refusal)
        })
    }
}

/// A task of this node: run through the local executor, piped as the
/// node's exec server pipes it for a manager elsewhere.
async fn local(d: &Arc<Daemon>, task: &Task, spec: &ExecSpec) -> ApiResult<Attached> {
    let process = d.local().exec.exec(task, spec).await.map_err(|e| match e {
        flotilla_agent::exec::ExecError::NotFound(m) => ApiError::not_found(m),
        e => ApiError::new(StatusCode::CONFLICT, e.to_string()),
    })?;
    let (up, from_node) = mpsc::channel(16);
    let (to_node, down) = mpsc::channel(16);
    let incoming = futures::StreamExt::boxed(futures::stream::unfold(down, |mut rx| async move {
        rx.recv().await.map(|f| (f, rx))
    }));
    tokio::spawn(flotilla_agent::execserver::pipe(process, incoming, up));
    Ok(Attached { from_node, to_node })
}

/// Client frames to the node, the node's to the client, until its exit
/// code (returned) or error; the client going away ends the command.
async fn pipe<IO>(io: IO, attached: Attached) -> Option<i64>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let Attached {
        mut from_node,
        to_node,
    } = attached;
    let (mut read, mut write) = tokio::io::split(io);
    let reader = tokio::spawn(async move {
        let mut frames = FrameReader::default();
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            frames.push(&buf[..n]);
            loop {
                match frames.next_frame() {
                    Ok(Some(f)) => {
                        let to_task = matches!(
                            f.kind,
                            FrameKind::Stdin | FrameKind::CloseStdin | FrameKind::Resize
                        );
                        if to_task && to_node.send(f).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!("exec: bad frame from the client: {e}");
                        return;
                    }
                }
            }
        }
    });
    let mut code = None;
    let last = loop {
        let Some(frame) = from_node.recv().await else {
            break Some(Frame::error(
                "the node's exec stream closed before the command ended",
            ));
        };
        let end = matches!(frame.kind, FrameKind::Exit | FrameKind::Error);
        if frame.kind == FrameKind::Exit {
            code = frame.number();
        }
        if write.write_all(&frame.to_bytes()).await.is_err() {
            break None;
        }
        if end {
            break None;
        }
    };
    if let Some(frame) = last {
        let _ = write.write_all(&frame.to_bytes()).await;
    }
    let _ = write.flush().await;
    let _ = write.shutdown().await;
    reader.abort();
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_store::models::TaskStatus;

    fn task(id: &str, slot: i64, state: TaskState) -> Task {
        Task {
            id: Some(id.into()),
            slot: Some(slot),
            status: Some(TaskStatus {
                state: Some(state),
                ..Default::default()
            }),
            desired_state: Some(TaskState::RUNNING),
            ..Default::default()
        }
    }

    #[test]
    fn a_service_s_exec_goes_to_the_lowest_running_slot_or_the_one_asked() {
        let tasks = [
            task("a", 1, TaskState::FAILED),
            task("b", 3, TaskState::RUNNING),
            task("c", 2, TaskState::RUNNING),
        ];
        assert_eq!(pick(tasks.iter(), None).map(|t| t.id_str()), Some("c"));
        assert_eq!(pick(tasks.iter(), Some(3)).map(|t| t.id_str()), Some("b"));
        assert_eq!(pick(tasks.iter(), Some(1)), None);
    }

    #[test]
    fn the_body_needs_a_command_and_well_formed_env() {
        assert!(spec_of(br#"{"Cmd":["sh"],"Env":["A=1"]}"#).is_ok());
        let e = spec_of(br#"{"Cmd":[]}"#).unwrap_err();
        assert_eq!(e.message, "No exec command specified");
        assert!(spec_of(br#"{"Cmd":["sh"],"Env":["=1"]}"#).is_err());
        assert!(spec_of(b"").is_err());
    }

    #[tokio::test]
    async fn the_client_gets_the_node_s_frames_and_the_node_gets_the_client_s() {
        let (up, from_node) = mpsc::channel(4);
        let (to_node, mut down) = mpsc::channel(4);
        let (client, server) = tokio::io::duplex(1 << 16);
        let piped = tokio::spawn(pipe(server, Attached { from_node, to_node }));
        let (mut read, mut write) = tokio::io::split(client);
        write
            .write_all(&Frame::new(FrameKind::Stdin, b"in".to_vec()).to_bytes())
            .await
            .unwrap();
        // Only input, its end and resizes go to the task.
        write.write_all(&Frame::exit(9).to_bytes()).await.unwrap();
        write
            .write_all(&Frame::resize(5, 6).to_bytes())
            .await
            .unwrap();
        assert_eq!(down.recv().await.unwrap().data, b"in");
        assert_eq!(down.recv().await.unwrap().size(), Some((5, 6)));
        up.send(Frame::new(FrameKind::Stdout, b"hi\n".to_vec()))
            .await
            .unwrap();
        up.send(Frame::exit(3)).await.unwrap();
        assert_eq!(piped.await.unwrap(), Some(3));
        let mut bytes = Vec::new();
        read.read_to_end(&mut bytes).await.unwrap();
        let mut frames = FrameReader::default();
        frames.push(&bytes);
        assert_eq!(frames.next_frame().unwrap().unwrap().data, b"hi\n");
        assert_eq!(frames.next_frame().unwrap().unwrap().number(), Some(3));
    }

    #[tokio::test]
    async fn a_node_stream_that_breaks_is_an_error_to_the_client() {
        let (up, from_node) = mpsc::channel(4);
        let (to_node, _down) = mpsc::channel(4);
        let (client, server) = tokio::io::duplex(1 << 16);
        let piped = tokio::spawn(pipe(server, Attached { from_node, to_node }));
        drop(up);
        assert_eq!(piped.await.unwrap(), None);
        let (mut read, _write) = tokio::io::split(client);
        let mut bytes = Vec::new();
        read.read_to_end(&mut bytes).await.unwrap();
        let (f, _) = Frame::decode(&bytes).unwrap().unwrap();
        assert_eq!(f.kind, FrameKind::Error);
    }
}
