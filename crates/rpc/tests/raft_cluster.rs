//! Three managers' stores replicating over real gRPC on loopback: writes
//! reach every replica, and when the leader dies another takes writes
//! within a few seconds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_rpc::raft::{GrpcNetwork, RaftService};
use flotilla_store::models::{Service, ServiceSpec};
use flotilla_store::raft::Peer;
use flotilla_store::{Op, Store, StoreConfig};
use tokio::sync::oneshot;

struct Manager {
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

async fn start(id: u64, incoming: tonic::transport::server::TcpIncoming, addr: String) -> Manager {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(
        StoreConfig {
            data_dir: dir.path().into(),
            node_id: format!("node{id}"),
            raft_id: id,
            addr,
        },
        GrpcNetwork::default(),
    )
    .await
    .expect("open");
    let (tx, rx) = oneshot::channel::<()>();
    let svc = RaftService::new(store.raft().clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            })
            .await;
    });
    Manager {
        store,
        stop: Some(tx),
        _dir: dir,
    }
}

fn service(name: &str) -> Op {
    Op::CreateService(Box::new(Service::from(bollard::models::Service {
        id: Some(name.into()),
        spec: Some(ServiceSpec {
            name: Some(name.into()),
            ..Default::default()
        }),
        ..Default::default()
    })))
}

async fn leader(ms: &[Manager], timeout: Duration) -> Option<usize> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(i) = ms
            .iter()
            .position(|m| m.stop.is_some() && m.store.is_leader())
        {
            return Some(i);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn wait_replicated(m: &Manager, name: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if m.store.read(|s| s.find_service(name).is_some()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_and_survives_losing_the_leader() {
    let mut incoming = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let inc = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
            .expect("bind");
        let addr = inc.local_addr().expect("addr").to_string();
        members.insert(
            id,
            Peer {
                addr: addr.clone(),
                node_id: format!("node{id}"),
            },
        );
        incoming.push((id, inc, addr));
    }
    let mut ms = Vec::new();
    for (id, inc, addr) in incoming {
        ms.push(start(id, inc, addr).await);
    }
    ms[0].store.bootstrap_members(members).await.expect("init");

    let l = leader(&ms, Duration::from_secs(10))
        .await
        .expect("a leader");
    ms[l]
        .store
        .propose_one(service("first"))
        .await
        .expect("write");
    for m in &ms {
        assert!(wait_replicated(m, "first").await, "replicated everywhere");
    }

    // The leader dies: its server stops answering and its Raft stops.
    let killed = Instant::now();
    ms[l].stop.take().map(|s| s.send(()));
    ms[l].store.shutdown().await;
    let deadline = killed + Duration::from_secs(10);
    let mut written = None;
    while Instant::now() < deadline && written.is_none() {
        if let Some(n) = leader(&ms, Duration::from_millis(200)).await {
            if ms[n].store.propose_one(service("second")).await.is_ok() {
                written = Some((n, killed.elapsed()));
            }
        }
    }
    let (n, took) = written.expect("a new leader accepted a write");
    println!("new leader took a write {took:?} after the old one died");
    let other = (0..3).find(|i| *i != n && *i != l).expect("third manager");
    assert!(wait_replicated(&ms[other], "second").await);
    for m in ms.iter_mut().filter(|m| m.stop.is_some()) {
        m.stop.take().map(|s| s.send(()));
        m.store.shutdown().await;
    }
}
