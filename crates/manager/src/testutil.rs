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

/// `swarm init` of a one-manager swarm (node "n1"): its ops and files.
pub(crate) fn new_swarm() -> crate::controlapi::swarm::NewSwarm {
    use crate::controlapi::swarm::{init, InitParams, NetworkDefaults};
    init(InitParams {
        node_id: "n1".into(),
        addr: "127.0.0.1:2377".into(),
        description: Default::default(),
        spec: Default::default(),
        network: NetworkDefaults::default(),
    })
    .unwrap()
}
