//! `exec` over the cluster port (see `flotilla_manager::execbroker`): a
//! follower's request carried to the leader (`Forward`), and the node's
//! call back to the manager that holds the client (`Attach`), whose frames
//! are `flotilla_store::exec::Frame`s one for one; and a node's API
//! relaying its client's exec to a manager (`Relay`, see
//! `flotilla_manager::execrelay`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flotilla_agent::session::FrameStream;
use flotilla_ca::Role;
use flotilla_manager::dispatcher::Dispatcher;
use flotilla_manager::execbroker::{Attached, CALLBACK_WAIT};
use flotilla_manager::execrelay::{may_relay, ExecRefusal, ExecRelays, Opened, RelayRequest};
use flotilla_store::exec::{ExecRequest, ExecSpec, Frame, FrameKind};
use flotilla_store::models::Task;
use flotilla_store::{Store, StoreError};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{caller, manager};
use crate::error::store_status;
use crate::pb;
use crate::pb::exec_client::ExecClient;
use crate::peers::Peers;
use crate::{from_json, to_json};

/// How long a node's stream may go without its `Hello`.
const HELLO_WAIT: Duration = Duration::from_secs(10);
/// Frames in flight each way.
const BUFFER: usize = 16;

pub struct ExecService {
    store: Store,
    dispatcher: Arc<Dispatcher>,
    relays: ExecRelays,
}

impl ExecService {
    pub fn new(
        store: Store,
        dispatcher: Arc<Dispatcher>,
        relays: ExecRelays,
    ) -> pb::exec_server::ExecServer<ExecService> {
        pb::exec_server::ExecServer::new(ExecService {
            store,
            dispatcher,
            relays,
        })
    }
}

/// The API's refusal as a status, and back on the relaying node: the same
/// HTTP status and message reach its client.
fn refusal_status(r: &ExecRefusal) -> Status {
    let code = match r.status {
        400 => tonic::Code::InvalidArgument,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::NotFound,
        409 => tonic::Code::FailedPrecondition,
        503 => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    };
    Status::new(code, r.message.clone())
}

fn status_refusal(s: &Status) -> ExecRefusal {
    let status = match s.code() {
        tonic::Code::InvalidArgument => 400,
        tonic::Code::PermissionDenied => 403,
        tonic::Code::NotFound => 404,
        tonic::Code::FailedPrecondition => 409,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => 503,
        _ => 500,
    };
    ExecRefusal::new(status, s.message())
}

/// What a client sends on to the task: input, its end, resizes.
fn to_task(kind: FrameKind) -> bool {
    matches!(
        kind,
        FrameKind::Stdin | FrameKind::CloseStdin | FrameKind::Resize
    )
}

fn to_pb(frame: Frame) -> pb::ExecFrame {
    pb::ExecFrame {
        kind: frame.kind as u32,
        data: frame.data,
    }
}

fn from_pb(frame: pb::ExecFrame) -> Result<Frame, Status> {
    let kind = u8::try_from(frame.kind)
        .ok()
        .and_then(FrameKind::from_u8)
        .ok_or_else(|| {
            Status::invalid_argument(format!("unknown exec frame kind {}", frame.kind))
        })?;
    Ok(Frame::new(kind, frame.data))
}

type FrameResults = Pin<Box<dyn Stream<Item = Result<pb::ExecFrame, Status>> + Send>>;

#[tonic::async_trait]
impl pb::exec_server::Exec for ExecService {
    async fn forward(&self, req: Request<pb::Json>) -> Result<Response<pb::Json>, Status> {
        manager(&req, &self.store)?;
        if !self.store.is_leader() {
            let leader = self.store.leader().map(|(_, peer)| peer.addr);
            return Err(store_status(&StoreError::NotLeader { leader }));
        }
        let request: ExecRequest = from_json(req.get_ref())?;
        self.dispatcher
            .execs()
            .send(request)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        to_json(&()).map(Response::new)
    }

    type AttachStream = FrameResults;

    /// Any node of the swarm may call, but only for a session opened for
    /// it: the certificate's node ID must be the one the request went to.
    async fn attach(
        &self,
        req: Request<Streaming<pb::ExecFrame>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let node = caller(&req, &self.store, &[Role::Manager, Role::Worker])?.node_id;
        let mut incoming = req.into_inner();
        let hello = match tokio::time::timeout(HELLO_WAIT, incoming.message()).await {
            Ok(Ok(Some(m))) => from_pb(m)?,
            Ok(Err(s)) => return Err(s),
            _ => {
                return Err(Status::invalid_argument(
                    "an exec stream opens with its session",
                ))
            }
        };
        let session = match (hello.kind, hello.number()) {
            (FrameKind::Hello, Some(n)) if n > 0 => n as u64,
            _ => {
                return Err(Status::invalid_argument(
                    "an exec stream opens with its session",
                ))
            }
        };
        let (up, from_node) = mpsc::channel(BUFFER);
        let (to_node, down) = mpsc::channel(BUFFER);
        self.dispatcher
            .execs()
            .attach(session, &node, Attached { from_node, to_node })
            .map_err(|e| Status::not_found(e.to_string()))?;
        tokio::spawn(async move {
            // Ends when the node's side ends or breaks, or nobody reads.
            while let Ok(Some(m)) = incoming.message().await {
                let Ok(frame) = from_pb(m) else { return };
                if up.send(frame).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(
            ReceiverStream::new(down).map(|f| Ok(to_pb(f))).boxed(),
        ))
    }

    type RelayStream = FrameResults;

    /// Served like an exec the API got itself; the caller's role now (the
    /// store's) and the swarm's setting decide whether it may.
    async fn relay(
        &self,
        req: Request<Streaming<pb::ExecFrame>>,
    ) -> Result<Response<Self::RelayStream>, Status> {
        let node = caller(&req, &self.store, &[Role::Manager, Role::Worker])?.node_id;
        let allowed = self.store.read(|s| {
            let role = s
                .nodes
                .get(&node)
                .and_then(|n| n.spec.as_ref())
                .and_then(|sp| sp.role);
            may_relay(role, s.cluster.as_ref())
        });
        if let Err(refusal) = allowed {
            tracing::info!("refused an exec relayed by node {node}: {refusal}");
            return Err(refusal_status(&refusal));
        }
        let opener = self
            .relays
            .opener()
            .ok_or_else(|| Status::unavailable("this manager's API is not serving yet"))?;
        let mut incoming = req.into_inner();
        let request = match tokio::time::timeout(HELLO_WAIT, incoming.message()).await {
            Ok(Ok(Some(m))) => from_pb(m)?,
            Ok(Err(s)) => return Err(s),
            _ => {
                return Err(Status::invalid_argument(
                    "an exec relay opens with its request",
                ))
            }
        };
        let request = RelayRequest::from_frame(&request).map_err(Status::invalid_argument)?;
        let Opened {
            attached:
                Attached {
                    mut from_node,
                    to_node,
                },
            exec_id,
            done,
        } = opener.open(request).await.map_err(|r| refusal_status(&r))?;
        // The client's input until it goes away, which ends the command.
        let input = tokio::spawn(async move {
            while let Ok(Some(m)) = incoming.message().await {
                let Ok(frame) = from_pb(m) else { return };
                if to_task(frame.kind) && to_node.send(frame).await.is_err() {
                    return;
                }
            }
        });
        let (tx, rx) = mpsc::channel(BUFFER);
        tokio::spawn(async move {
            let mut code = None;
            let mut out = Some(Frame::new(FrameKind::Started, exec_id));
            while let Some(frame) = out.take() {
                let end = matches!(frame.kind, FrameKind::Exit | FrameKind::Error);
                if frame.kind == FrameKind::Exit {
                    code = frame.number();
                }
                if tx.send(Ok(to_pb(frame))).await.is_err() || end {
                    break;
                }
                out = Some(from_node.recv().await.unwrap_or_else(|| {
                    Frame::error("the node's exec stream closed before the command ended")
                }));
            }
            input.abort();
            done(code);
        });
        Ok(Response::new(ReceiverStream::new(rx).boxed()))
    }
}

/// A node's API relays `request` to the manager on `channel`: the task's
/// side, its first frame `Started`, or the manager's refusal.
pub async fn relay(channel: Channel, request: RelayRequest) -> Result<Attached, ExecRefusal> {
    let (tx, rx) = mpsc::channel(BUFFER);
    let _ = tx.send(to_pb(request.to_frame())).await;
    let (to_node, mut down) = mpsc::channel::<Frame>(BUFFER);
    tokio::spawn(async move {
        while let Some(frame) = down.recv().await {
            if tx.send(to_pb(frame)).await.is_err() {
                return;
            }
        }
    });
    let mut stream = ExecClient::new(channel)
        .relay(ReceiverStream::new(rx))
        .await
        .map_err(|s| status_refusal(&s))?
        .into_inner();
    let started = match tokio::time::timeout(2 * CALLBACK_WAIT, stream.message()).await {
        Ok(Ok(Some(m))) => from_pb(m).map_err(|s| status_refusal(&s))?,
        Ok(Err(s)) => return Err(status_refusal(&s)),
        _ => {
            return Err(ExecRefusal::new(
                503,
                "the manager did not start the command",
            ))
        }
    };
    if started.kind != FrameKind::Started {
        return Err(ExecRefusal::new(409, started.text()));
    }
    let (up, from_node) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        let mut frame = Some(started);
        while let Some(f) = frame.take() {
            if up.send(f).await.is_err() {
                return;
            }
            frame = match stream.message().await {
                Ok(Some(m)) => from_pb(m).ok(),
                _ => None,
            };
        }
    });
    Ok(Attached { from_node, to_node })
}

/// The node's call back on `channel`: `outgoing` goes to the manager (its
/// first frame `Hello`), the manager's frames come back until either side ends.
pub async fn attach(channel: Channel, mut outgoing: FrameStream) -> Result<FrameStream, Status> {
    // Through a channel: tonic's client wants a stream it can prove Send
    // for any lifetime, which a mapped boxed stream is not.
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        while let Some(frame) = outgoing.next().await {
            if tx.send(to_pb(frame)).await.is_err() {
                return;
            }
        }
    });
    let stream = ExecClient::new(channel)
        .attach(ReceiverStream::new(rx))
        .await?
        .into_inner();
    // Until the first error or frame that does not decode.
    Ok(futures::stream::unfold(stream, |mut s| async move {
        let frame = from_pb(s.message().await.ok()??).ok()?;
        Some((frame, s))
    })
    .boxed())
}

/// Runs `spec` in `task` on another node for a manager's API: the request
/// goes through the leader (this manager's own dispatcher when it leads)
/// to the node, which calls this manager (`own_addr`) back.
pub async fn remote_exec(
    store: &Store,
    dispatcher: &Dispatcher,
    peers: &Peers,
    own_addr: &str,
    task: Task,
    spec: ExecSpec,
) -> Result<Attached, String> {
    let node = task.node_id.clone().unwrap_or_default();
    let pending = dispatcher.execs().open(&node);
    let request = ExecRequest {
        session: pending.session,
        task,
        spec,
        manager: own_addr.to_string(),
    };
    if store.is_leader() {
        dispatcher
            .execs()
            .send(request)
            .map_err(|e| e.to_string())?;
    } else {
        let (_, leader) = store
            .leader()
            .ok_or_else(|| "no leader to send the exec request to".to_string())?;
        let channel = peers
            .channel(&leader.addr)
            .map_err(|s| s.message().to_string())?;
        let msg = to_json(&request).map_err(|s| s.message().to_string())?;
        ExecClient::new(channel)
            .forward(msg)
            .await
            .map_err(|s| s.message().to_string())?;
    }
    pending
        .attached(CALLBACK_WAIT)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_the_wire_unchanged_and_unknown_kinds_are_refused() {
        let f = Frame::resize(40, 120);
        assert_eq!(from_pb(to_pb(f.clone())).unwrap(), f);
        let bad = pb::ExecFrame {
            kind: 300,
            data: Vec::new(),
        };
        assert!(from_pb(bad).is_err());
    }

    #[test]
    fn a_refusal_reaches_the_relaying_api_with_its_status_and_message() {
        for status in [400, 403, 404, 409, 503, 500] {
            let r = ExecRefusal::new(status, format!("no {status}"));
            assert_eq!(status_refusal(&refusal_status(&r)), r);
        }
        assert_eq!(status_refusal(&Status::unknown("x")).status, 500);
    }
}
