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
        store.shutdown().await;
    }
    let store = open(dir.path()).await;
    wait_for_services(&store, 64).await;
    assert_eq!(store.read(|s| s.services.len()), 64);
    store.shutdown().await;
}
