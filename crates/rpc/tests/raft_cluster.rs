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
            unlock_key: None,
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

/// A task of a realistic size (about 1 KiB of JSON).
fn task(i: usize) -> Op {
    use flotilla_store::models::{Task, TaskSpec, TaskSpecContainerSpec};
    Op::CreateTask(Box::new(Task {
        id: Some(format!("task{i:07}xxxxxxxxxxxxxxxx")),
        service_id: Some("svc000000000000000000000000".into()),
        slot: Some(i as i64),
        spec: Some(std::sync::Arc::new(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some("registry.example/team/app:1.2.3@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into()),
                env: Some((0..12).map(|e| format!("SETTING_{e}=some-value-{e}-{i}")).collect()),
                args: Some(vec!["--listen".into(), ":8080".into(), "--verbose".into()]),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    }))
}

fn tasks(m: &Manager) -> usize {
    m.store.read(|s| s.tasks.len())
}

async fn wait_tasks(m: &Manager, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if tasks(m) == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// What used to wedge a swarm: a plan of 10,000 tasks proposed as one
/// message over the 4 MiB gRPC limit, and a snapshot too large to send to
/// a manager that must catch up from it (swarmkit#2374). Both replicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_plans_and_snapshots_replicate() {
    let mut incoming = Vec::new();
    for id in 1..=3u64 {
        let inc = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
            .expect("bind");
        let addr = inc.local_addr().expect("addr").to_string();
        incoming.push((id, inc, addr));
    }
    let peer = |i: usize| Peer {
        addr: incoming[i].2.clone(),
        node_id: format!("node{}", i + 1),
    };
    let members: BTreeMap<u64, Peer> = [(1, peer(0)), (2, peer(1))].into();
    let third = peer(2);
    let mut ms = Vec::new();
    for (id, inc, addr) in incoming {
        ms.push(start(id, inc, addr).await);
    }
    ms[0].store.bootstrap_members(members).await.expect("init");
    let mut l = leader(&ms, Duration::from_secs(10))
        .await
        .expect("a leader");

    // One plan of 10,000 tasks: about 10 MiB, cut into entries.
    let before = ms[l]
        .store
        .raft()
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0);
    // A debug build on a loaded machine can take longer than the store's
    // 10 s wait for the commit; the plan still lands, and is counted then.
    let index = match ms[l].store.propose((0..10_000).map(task).collect()).await {
        Ok((index, results)) => {
            assert_eq!(results.len(), 10_000);
            assert!(results.iter().all(|r| r.is_ok()));
            index
        }
        Err(flotilla_store::StoreError::NotConfirmed { .. }) => {
            assert!(
                wait_tasks(&ms[l], 10_000, Duration::from_secs(60)).await,
                "the plan lands: {}",
                tasks(&ms[l])
            );
            ms[l]
                .store
                .raft()
                .metrics()
                .borrow()
                .last_applied
                .map_or(0, |id| id.index)
        }
        Err(e) => panic!("the plan commits: {e}"),
    };
    println!("10,000 tasks went in {} entries", index - before);
    assert!(index - before > 1, "cut into several entries");
    let follower = if l == 0 { 1 } else { 0 };
    assert!(
        wait_tasks(&ms[follower], 10_000, Duration::from_secs(30)).await,
        "the follower has the plan: {}",
        tasks(&ms[follower])
    );

    // 100,000 tasks, a snapshot of them, and the log before it purged: a
    // new manager can only catch up from the snapshot.
    let t0 = Instant::now();
    for chunk in 1..10 {
        let ops: Vec<Op> = (chunk * 10_000..(chunk + 1) * 10_000).map(task).collect();
        // On a loaded machine a commit can outlast the store's 10 s wait;
        // the write may still land, so it is sent again (a task already
        // there is refused, not doubled).
        for attempt in 1.. {
            match ms[l].store.propose(ops.clone()).await {
                Ok(_) => break,
                // A starved leader may also have lost its lease: ask again
                // wherever the leader is now.
                Err(e) if attempt < 5 => {
                    println!("more tasks, attempt {attempt}: {e}");
                    l = leader(&ms, Duration::from_secs(30))
                        .await
                        .expect("a leader");
                }
                Err(e) => panic!("more tasks: {e}"),
            }
        }
    }
    assert!(
        wait_tasks(&ms[l], 100_000, Duration::from_secs(60)).await,
        "the leader has every task: {}",
        tasks(&ms[l])
    );
    println!("90,000 more tasks written in {:?}", t0.elapsed());
    let t0 = Instant::now();
    ms[l]
        .store
        .raft()
        .trigger()
        .snapshot()
        .await
        .expect("snapshot");
    let deadline = Instant::now() + Duration::from_secs(60);
    let snap = loop {
        let m = ms[l].store.raft().metrics().borrow().clone();
        if let Some(s) = m.snapshot {
            break s.index;
        }
        assert!(Instant::now() < deadline, "no snapshot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("snapshot built in {:?}", t0.elapsed());
    ms[l]
        .store
        .raft()
        .trigger()
        .purge_log(snap)
        .await
        .expect("purge");
    let started = Instant::now();
    ms[l]
        .store
        .raft()
        .add_learner(3, third, true)
        .await
        .expect("the new manager catches up");
    println!("add_learner returned after {:?}", started.elapsed());
    assert!(
        wait_tasks(&ms[2], 100_000, Duration::from_secs(60)).await,
        "the new manager has every task: {}",
        tasks(&ms[2])
    );
    println!(
        "a manager caught up from a snapshot of 100,000 tasks in {:?}",
        started.elapsed()
    );
    for m in ms.iter_mut() {
        m.stop.take().map(|s| s.send(()));
        m.store.shutdown().await;
    }
}
