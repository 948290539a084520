//! The cluster port over real mutual TLS on loopback: a manager's
//! certificate may call manager RPCs, a worker's may not, a joiner with a
//! wrong token is refused, a plain-text client never gets through, and a
//! node removed from the store is refused although its certificate is valid;
//! an exec is started by managers only and joined only by its own node,
//! and relayed by a worker only when the swarm allows it.

use std::time::Duration;

use flotilla_ca::{Role, RootCa};
use flotilla_manager::controlapi::swarm::{init, InitParams};
use flotilla_manager::dispatcher::Dispatcher;
use flotilla_rpc::pb::control_client::ControlClient;
use flotilla_rpc::pb::dispatcher_client::DispatcherClient;
use flotilla_rpc::pb::Json;
use flotilla_rpc::peers::Peers;
use flotilla_rpc::raft::GrpcNetwork;
use flotilla_store::models::{NodeDescription, SwarmSpec};
use flotilla_store::{Op, Store, StoreConfig};
use tokio::sync::watch;

struct Manager {
    store: Store,
    addr: String,
    ca: RootCa,
    cluster_id: String,
    dispatcher: std::sync::Arc<Dispatcher>,
    relays: flotilla_manager::execrelay::ExecRelays,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn manager() -> Manager {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let new = init(InitParams {
        node_id: "m1".into(),
        addr: addr.clone(),
        description: NodeDescription::default(),
        spec: SwarmSpec::default(),
        network: Default::default(),
    })
    .expect("init");
    let client =
        flotilla_ca::client_config(&new.root_ca_pem, Some(&new.node_cert)).expect("client tls");
    let server = flotilla_ca::server_config_allowing_join(&new.root_ca_pem, &new.node_cert)
        .expect("server tls");
    let peers = Peers::new(watch::channel(client).1);
    let store = Store::open_with(
        StoreConfig {
            data_dir: dir.path().into(),
            node_id: "m1".into(),
            raft_id: 1,
            addr: addr.clone(),
            unlock_key: None,
        },
        GrpcNetwork {
            peers: Some(peers.clone()),
        },
    )
    .await
    .expect("store");
    store.bootstrap().await.expect("bootstrap");
    assert!(store.wait_for_leader(Duration::from_secs(10)).await);
    store.propose(new.ops).await.expect("init ops");
    let (stop, stop_rx) = watch::channel(false);
    let (dispatcher, background) = Dispatcher::start(store.clone(), stop_rx.clone());
    tokio::spawn(background);
    let relays = flotilla_manager::execrelay::ExecRelays::default();
    tokio::spawn(flotilla_rpc::server::serve(
        listener,
        new.cluster_id.clone(),
        watch::channel(server).1,
        store.clone(),
        dispatcher.clone(),
        peers,
        relays.clone(),
        stop_rx,
    ));
    let ca = store.read(flotilla_manager::ca::root_ca).expect("ca");
    Manager {
        store,
        addr,
        ca,
        cluster_id: new.cluster_id,
        dispatcher,
        relays,
        stop,
        _dir: dir,
    }
}

fn channel(m: &Manager, node: &str, role: Role) -> tonic::transport::Channel {
    let cert =
        m.ca.issue(node, role, &m.cluster_id, Duration::from_secs(3600))
            .expect("cert");
    let tls = flotilla_ca::client_config(m.ca.cert_pem(), Some(&cert)).expect("tls");
    flotilla_rpc::transport::channel(&m.addr, watch::channel(tls).1).expect("channel")
}

fn empty() -> Json {
    Json {
        data: b"null".to_vec(),
    }
}

fn propose_msg() -> Json {
    Json {
        data: serde_json::to_vec(&flotilla_store::raft::Request { ops: vec![] }).unwrap(),
    }
}

async fn add_node(m: &Manager, id: &str, manager: bool) {
    let node = flotilla_store::models::Node {
        id: Some(id.into()),
        spec: Some(flotilla_store::models::NodeSpec {
            role: Some(if manager {
                flotilla_store::models::NodeSpecRoleEnum::MANAGER
            } else {
                flotilla_store::models::NodeSpecRoleEnum::WORKER
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    m.store
        .propose_one(Op::PutNode(Box::new(node)))
        .await
        .expect("node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced_per_rpc() {
    let m = manager().await;
    add_node(&m, "w1", false).await;
    add_node(&m, "m2", true).await;

    // A worker may use the dispatcher but not the manager-only control RPCs.
    let worker = channel(&m, "w1", Role::Worker);
    let denied = ControlClient::new(worker.clone())
        .propose(propose_msg())
        .await
        .expect_err("worker refused");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(
        denied
            .message()
            .contains("is a worker; this call needs a manager"),
        "{}",
        denied.message()
    );
    DispatcherClient::new(worker)
        .heartbeat(empty())
        .await
        .expect("worker heartbeats");

    // A manager may propose.
    let manager = channel(&m, "m2", Role::Manager);
    ControlClient::new(manager)
        .propose(propose_msg())
        .await
        .expect("manager proposes");
    let _ = m.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_nodes_and_strangers_are_refused() {
    let m = manager().await;
    add_node(&m, "w1", false).await;
    let worker = channel(&m, "w1", Role::Worker);
    DispatcherClient::new(worker.clone())
        .heartbeat(empty())
        .await
        .expect("member heartbeats");
    m.store
        .propose_one(Op::RemoveNode { id: "w1".into() })
        .await
        .expect("rm");
    let refused = DispatcherClient::new(worker)
        .heartbeat(empty())
        .await
        .expect_err("removed node refused");
    assert!(
        refused.message().contains("was removed from the swarm"),
        "{}",
        refused.message()
    );

    // A certificate from another swarm's CA never completes the handshake.
    let other = RootCa::generate().expect("ca");
    let cert = other
        .issue("x", Role::Manager, &m.cluster_id, Duration::from_secs(3600))
        .expect("cert");
    let tls = flotilla_ca::client_config(m.ca.cert_pem(), Some(&cert)).expect("tls");
    let ch = flotilla_rpc::transport::channel(&m.addr, watch::channel(tls).1).expect("channel");
    assert!(DispatcherClient::new(ch).heartbeat(empty()).await.is_err());

    // Plain text is refused at the TLS layer.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", m.addr))
        .unwrap()
        .connect_lazy();
    assert!(DispatcherClient::new(plain)
        .heartbeat(empty())
        .await
        .is_err());
    let _ = m.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_needs_a_current_token() {
    let m = manager().await;
    let desc = NodeDescription {
        hostname: Some("new".into()),
        ..Default::default()
    };
    let tokens = m
        .store
        .read(|s| s.cluster.as_ref().and_then(|c| c.join_tokens.clone()))
        .expect("tokens");
    let worker_token = tokens.worker.clone().expect("worker token");

    // A well-formed token with the right CA digest but a wrong secret.
    let digest = flotilla_ca::JoinToken::parse(&worker_token)
        .unwrap()
        .ca_digest()
        .to_string();
    let forged = flotilla_ca::JoinToken::generate(&digest);
    let err = flotilla_rpc::ca::join(&m.addr, &forged, "127.0.0.1:1", desc.clone())
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            flotilla_rpc::ca::CaError::Refused(flotilla_manager::Error::InvalidJoinToken)
        ),
        "{err}"
    );

    // A token for another swarm's CA fails the digest check before it is sent.
    let foreign = flotilla_ca::JoinToken::generate(&RootCa::generate().unwrap().digest());
    let err = flotilla_rpc::ca::join(&m.addr, &foreign, "127.0.0.1:1", desc.clone())
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("remote CA does not match fingerprint"),
        "{err}"
    );

    // The real worker token joins as a worker with a certificate saying so.
    let joined = flotilla_rpc::ca::join(&m.addr, &worker_token, "127.0.0.1:1", desc)
        .await
        .expect("joins");
    assert!(!joined.reply.manager);
    let id = joined.cert.identity().expect("identity");
    assert_eq!(id.role, Role::Worker);
    assert_eq!(id.node_id, joined.reply.node_id);
    assert!(m
        .store
        .read(|s| s.nodes.contains_key(&joined.reply.node_id)));
    let _ = m.stop.send(true);
}

/// A vote request from `candidate` with a term far above the leader's.
fn vote_msg(candidate: u64, term: u64) -> Json {
    let vote = openraft::raft::VoteRequest::<u64> {
        vote: openraft::Vote::new(term, candidate),
        last_log_id: None,
    };
    Json {
        data: serde_json::to_vec(&vote).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_certificate_is_not_enough() {
    let m = manager().await;
    // m2 was a manager (its certificate says so) but was demoted; m3 is
    // a manager of the store that Raft does not count (removed, or never
    // added); m4 is gone altogether.
    add_node(&m, "m2", false).await;
    add_node(&m, "m3", true).await;
    let term = m.store.raft().metrics().borrow().current_term;

    let demoted = channel(&m, "m2", Role::Manager);
    let refused = ControlClient::new(demoted.clone())
        .propose(propose_msg())
        .await
        .expect_err("a demoted manager cannot propose");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("is not a manager"),
        "{}",
        refused.message()
    );

    for node in ["m2", "m3", "m4"] {
        let ch = channel(&m, node, Role::Manager);
        let refused = flotilla_rpc::pb::raft_client::RaftClient::new(ch)
            .vote(vote_msg(9, term + 100))
            .await
            .expect_err("a vote from outside Raft is refused");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{node}");
        assert!(
            refused
                .message()
                .contains("not a member of this swarm's Raft")
                || refused.message().contains("was removed"),
            "{node}: {}",
            refused.message()
        );
    }
    // The leader still leads, in the same term.
    let metrics = m.store.raft().metrics().borrow().clone();
    assert_eq!(metrics.current_term, term);
    assert!(m.store.is_leader());
    m.store
        .propose(vec![])
        .await
        .expect("the leader still takes writes");
    let _ = m.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_nodes_stream_is_closed() {
    use tokio_stream::StreamExt;
    let m = manager().await;
    add_node(&m, "w1", false).await;
    let worker = channel(&m, "w1", Role::Worker);
    let mut stream = DispatcherClient::new(worker)
        .assignments(empty())
        .await
        .expect("stream opens")
        .into_inner();
    // The first messages: its tasks and the routing table.
    stream.next().await.expect("first").expect("tasks");
    m.store
        .propose_one(Op::RemoveNode { id: "w1".into() })
        .await
        .expect("rm");
    let removed = std::time::Instant::now();
    // Within a heartbeat period (5 s by default) the stream ends with the reason.
    let end = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(s)) => return Some(s),
                None => return None,
            }
        }
    })
    .await
    .expect("the stream is closed within a heartbeat");
    let status = end.expect("closed with a status");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(
        status.message().contains("was removed"),
        "{}",
        status.message()
    );
    assert!(removed.elapsed() < Duration::from_secs(7));
    let _ = m.stop.send(true);
}

/// The node's exec stream to `m` opening with `session`: the frames `m`
/// sends back, or the refusal.
async fn attach(
    m: &Manager,
    node: &str,
    role: Role,
    session: u64,
) -> Result<tonic::Streaming<flotilla_rpc::pb::ExecFrame>, tonic::Status> {
    let hello = flotilla_rpc::pb::ExecFrame {
        kind: flotilla_store::exec::FrameKind::Hello as u32,
        data: session.to_string().into_bytes(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(hello).await.expect("hello");
    // The sender lives on with the stream, as a node's does.
    tokio::spawn(async move {
        tx.closed().await;
    });
    flotilla_rpc::pb::exec_client::ExecClient::new(channel(m, node, role))
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sessions_are_started_by_managers_and_joined_only_by_their_node() {
    let m = manager().await;
    add_node(&m, "w1", false).await;
    add_node(&m, "w2", false).await;
    // A worker cannot have an exec request sent anywhere.
    let request = flotilla_store::exec::ExecRequest {
        session: 1,
        task: Default::default(),
        spec: Default::default(),
        manager: m.addr.clone(),
    };
    let msg = Json {
        data: serde_json::to_vec(&request).unwrap(),
    };
    let denied = flotilla_rpc::pb::exec_client::ExecClient::new(channel(&m, "w1", Role::Worker))
        .forward(msg)
        .await
        .expect_err("worker refused");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    // A session opened for w2: w1 cannot take it, w2 can.
    let pending = m.dispatcher.execs().open("w2");
    let session = pending.session;
    let refused = attach(&m, "w1", Role::Worker, session)
        .await
        .expect_err("w1 refused");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    let mut from_manager = attach(&m, "w2", Role::Worker, session)
        .await
        .expect("w2 joins its session");
    let attached = pending
        .attached(Duration::from_secs(5))
        .await
        .expect("the client side");
    attached
        .to_node
        .send(flotilla_store::exec::Frame::resize(2, 3))
        .await
        .expect("to the node");
    let frame = from_manager.message().await.expect("frame").expect("some");
    assert_eq!(frame.kind, flotilla_store::exec::FrameKind::Resize as u32);
    // Closing the client's side ends the node's stream.
    drop(attached);
    assert!(from_manager.message().await.expect("end").is_none());
    let _ = m.stop.send(true);
}

/// What the manager's API would do with a relayed exec, here: a task
/// "gone" is not found; any other echoes its command's first word and
/// exits 7 once its input ends.
struct EchoApi;

impl flotilla_manager::execrelay::ExecOpener for EchoApi {
    fn open(
        &self,
        request: flotilla_manager::execrelay::RelayRequest,
    ) -> flotilla_manager::execrelay::OpenFuture {
        use flotilla_manager::execrelay::{ExecRefusal, ExecTarget, Opened};
        use flotilla_store::exec::{Frame, FrameKind};
        Box::pin(async move {
            if request.target == ExecTarget::Task("gone".into()) {
                return Err(ExecRefusal::new(404, "task gone not found"));
            }
            let (up, from_node) = tokio::sync::mpsc::channel(4);
            let (to_node, mut down) = tokio::sync::mpsc::channel::<Frame>(4);
            tokio::spawn(async move {
                let word = request.spec.cmd.first().cloned().unwrap_or_default();
                let _ = up.send(Frame::new(FrameKind::Stdout, word)).await;
                while let Some(f) = down.recv().await {
                    if f.kind == FrameKind::CloseStdin {
                        let _ = up.send(Frame::exit(7)).await;
                    }
                }
            });
            Ok(Opened {
                attached: flotilla_manager::execbroker::Attached { from_node, to_node },
                exec_id: "e1".into(),
                done: Box::new(|_| {}),
            })
        })
    }
}

fn relay_request(task: &str) -> flotilla_manager::execrelay::RelayRequest {
    flotilla_manager::execrelay::RelayRequest {
        target: flotilla_manager::execrelay::ExecTarget::Task(task.into()),
        spec: flotilla_store::exec::ExecSpec {
            cmd: vec!["hello".into()],
            ..Default::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_relays_an_exec_only_when_the_swarm_allows_it() {
    use flotilla_manager::execrelay::{ExecRefusal, ALLOW_WORKER_EXEC, WORKER_EXEC_REFUSED};
    use flotilla_rpc::exec::relay;
    use flotilla_store::exec::{Frame, FrameKind};
    let m = manager().await;
    add_node(&m, "w1", false).await;
    add_node(&m, "m2", true).await;
    // No API serving relays yet.
    let early = relay(channel(&m, "m2", Role::Manager), relay_request("t"))
        .await
        .err()
        .expect("no API yet");
    assert_eq!(early.status, 503, "{early:?}");
    m.relays.serve_with(std::sync::Arc::new(EchoApi));

    let refused = relay(channel(&m, "w1", Role::Worker), relay_request("t"))
        .await
        .err()
        .expect("worker refused");
    assert_eq!(refused, ExecRefusal::new(403, WORKER_EXEC_REFUSED));
    // A manager's relay reaches the API, whose refusal comes back whole.
    let gone = relay(channel(&m, "m2", Role::Manager), relay_request("gone"))
        .await
        .err()
        .expect("not found");
    assert_eq!(gone, ExecRefusal::new(404, "task gone not found"));

    let mut swarm = m.store.read(|s| s.cluster.clone()).expect("swarm");
    let expected = swarm.version.as_ref().and_then(|v| v.index).unwrap_or(0);
    swarm
        .spec
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default)
        .insert(ALLOW_WORKER_EXEC.into(), "true".into());
    m.store
        .propose_one(Op::UpdateCluster {
            expected,
            swarm: Box::new(swarm),
            unlock_key: None,
            root_rotation: None,
            last_forced_rotation: None,
        })
        .await
        .expect("allow worker exec");
    let mut exec = relay(channel(&m, "w1", Role::Worker), relay_request("t"))
        .await
        .expect("allowed now");
    let started = exec.from_node.recv().await.expect("started");
    assert_eq!(
        (started.kind, started.text()),
        (FrameKind::Started, "e1".into())
    );
    let out = exec.from_node.recv().await.expect("stdout");
    assert_eq!((out.kind, out.text()), (FrameKind::Stdout, "hello".into()));
    exec.to_node
        .send(Frame::new(FrameKind::CloseStdin, Vec::new()))
        .await
        .expect("input");
    assert_eq!(
        exec.from_node.recv().await.and_then(|f| f.number()),
        Some(7)
    );
    let _ = m.stop.send(true);
}
