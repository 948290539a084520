//! The store keeps every acknowledged write across a restart, through the
//! real Raft path (log in redb, apply, snapshot).

use std::time::Duration;

use flotilla_store::models::{Service, ServiceSpec};
use flotilla_store::{Op, Store, StoreConfig, StoreError};

async fn open(dir: &std::path::Path) -> Store {
    let store = Store::open(StoreConfig {
        data_dir: dir.to_path_buf(),
        node_id: "node1".into(),
        raft_id: 1,
        addr: "127.0.0.1:0".into(),
        unlock_key: None,
    })
    .await
    .expect("open store");
    store.bootstrap().await.expect("bootstrap");
    assert!(
        store.wait_for_leader(Duration::from_secs(10)).await,
        "no leader"
    );
    store
}

/// Waits up to 10 s for `count` services: a reopened store re-applies its
/// committed entries once it leads again.
async fn wait_for_services(store: &Store, count: usize) {
    let mut rx = store.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.read(|s| s.services.len()) < count && tokio::time::Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
    }
}

fn service(i: usize) -> Service {
    Service::from(bollard::models::Service {
        id: Some(format!("svc{i}")),
        spec: Some(ServiceSpec {
            name: Some(format!("web{i}")),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[tokio::test]
async fn writes_survive_restart_and_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path()).await;
        for i in 0..50 {
            store
                .propose_one(Op::CreateService(Box::new(service(i))))
                .await
                .expect("create");
        }
        let dup = store
            .propose_one(Op::CreateService(Box::new(service(3))))
            .await;
        assert!(matches!(dup, Err(StoreError::NameTaken { .. })), "{dup:?}");
        store.raft().trigger().snapshot().await.expect("snapshot");
        for i in 50..60 {
            store
                .propose_one(Op::CreateService(Box::new(service(i))))
                .await
                .expect("create");
        }
        store.shutdown().await;
    }
    let store = open(dir.path()).await;
    // Entries after the snapshot are re-applied once the leader commits.
    wait_for_services(&store, 60).await;
    assert_eq!(store.read(|s| s.services.len()), 60);
    assert!(store.read(|s| s.find_service("web59").is_some()));
    store.shutdown().await;
}

/// Writes proposed together share the log's synced commits (group commit);
/// each is acknowledged only once synced, so all of them are back after a
/// restart.
#[tokio::test]
async fn concurrent_writes_are_all_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = std::sync::Arc::new(open(dir.path()).await);
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..64 {
            let store = store.clone();
            writes.spawn(async move {
                store
                    .propose_one(Op::CreateService(Box::new(service(i))))
                    .await
            });
        }
        while let Some(done) = writes.join_next().await {
            done.expect("join").expect("create");
        }
        // Writes made at once may share an entry (crate::merge); each
        // writer still gets its own ops' results: here every other one
        // names a service that exists.
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..64 {
            let store = store.clone();
            writes.spawn(async move {
                let taken = i % 2 == 0;
                let svc = if taken { service(i) } else { service(100 + i) };
                let ops = vec![
                    Op::CreateService(Box::new(svc)),
                    Op::CreateService(Box::new(service(200 + i))),
                ];
                (taken, store.propose(ops).await)
            });
        }
        while let Some(done) = writes.join_next().await {
            let (taken, (_, results)) = match done.expect("join") {
                (taken, Ok(done)) => (taken, done),
                (_, Err(e)) => panic!("write failed: {e}"),
            };
            assert_eq!(results.len(), 2);
            assert_eq!(results[0].is_err(), taken, "{results:?}");
            assert!(results[1].is_ok(), "{results:?}");
        }
        assert_eq!(store.read(|s| s.services.len()), 64 + 32 + 64);
        store.shutdown().await;
    }
    let store = open(dir.path()).await;
    wait_for_services(&store, 160).await;
    assert_eq!(store.read(|s| s.services.len()), 160);
    store.shutdown().await;
}

/// What the store writes is sealed: the root CA's key and the join tokens,
/// in the log and in a snapshot, are nowhere in the data directory in
/// plain text, the directory is 0700 and its files 0600, and all of it
/// comes back after a restart.
#[tokio::test]
async fn nothing_secret_is_written_in_plain_text() {
    use std::os::unix::fs::PermissionsExt;
    const CA_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIsealedcakey";
    const TOKEN: &str = "SWMTKN-1-0123456789sealedworkertoken";
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path()).await;
        let swarm = flotilla_store::models::Swarm {
            id: Some("c1".into()),
            join_tokens: Some(flotilla_store::models::JoinTokens {
                worker: Some(TOKEN.into()),
                manager: Some(TOKEN.into()),
            }),
            ..Default::default()
        };
        store
            .propose_one(Op::InitCluster {
                swarm: Box::new(swarm),
                ca_key_pem: CA_KEY.into(),
                unlock_key: None,
            })
            .await
            .expect("init");
        store.raft().trigger().snapshot().await.expect("snapshot");
        store
            .propose_one(Op::CreateService(Box::new(service(1))))
            .await
            .expect("create");
        store.shutdown().await;
    }
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.path()), 0o700);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        let bytes = std::fs::read(&path).unwrap();
        for secret in [CA_KEY, TOKEN, "sealedcakey", "sealedworkertoken"] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret:?} in plain text in {}",
                path.display()
            );
        }
    }
    let store = open(dir.path()).await;
    wait_for_services(&store, 1).await;
    assert_eq!(
        store.read(|s| s.root_ca_key.clone()).as_deref(),
        Some(CA_KEY)
    );
    store.shutdown().await;
}
