//! Helpers shared by the manager's unit tests.

use std::time::Duration;

use flotilla_store::{Store, StoreConfig};

/// A single-manager store (Raft ID 1, swarm node "m1") that leads, in a
/// tempdir kept alive with it.
pub(crate) async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig {
        data_dir: dir.path().into(),
        node_id: "m1".into(),
        raft_id: 1,
        addr: "127.0.0.1:0".into(),
        unlock_key: None,
    })
    .await
    .unwrap();
    store.bootstrap().await.unwrap();
    assert!(store.wait_for_leader(Duration::from_secs(10)).await);
    (store, dir)
}
