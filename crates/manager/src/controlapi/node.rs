//! Updating and removing nodes.

use flotilla_store::ids;
use flotilla_store::models::{NodeSpec, NodeSpecRoleEnum};
use flotilla_store::state::version_of;
use flotilla_store::state::NodeExt;
use flotilla_store::{Kind, Op, Store};

use crate::error::{Error, Result};

fn lookup(store: &Store, key: &str) -> Result<bollard::models::Node> {
    store
        .read(|s| s.find_node(key).cloned())
        .ok_or_else(|| Error::not_found(Kind::Node, key))
}

fn is_manager(spec: &Option<NodeSpec>) -> bool {
    spec.as_ref().and_then(|s| s.role) == Some(NodeSpecRoleEnum::MANAGER)
}

/// `POST /nodes/{id}/update?version=N`.
pub async fn update(store: &Store, key: &str, version: u64, spec: NodeSpec) -> Result<()> {
    let node = lookup(store, key)?;
    let id = node.id.clone().unwrap_or_default();
    let current = version_of(&node.version);
    if current != version {
        return Err(Error::out_of_sequence(Kind::Node, id, version, current));
    }
    if is_manager(&node.spec) && !is_manager(&Some(spec.clone())) {
        check_demotion(store, &id)?;
    }
    store
        .propose_one(Op::UpdateNodeSpec {
            id,
            expected: version,
            spec,
            updated_at: ids::now(),
        })
        .await?;
    Ok(())
}

/// Docker's rules: never the last manager, never below a reachable
/// majority of the managers that remain.
fn check_demotion(store: &Store, id: &str) -> Result<()> {
    // Raft's members are the managers with a ManagerStatus; one without
    // (promoted but not joined yet, or left behind by --force-new-cluster)
    // takes no vote away, as in SwarmKit.
    let in_raft =
        |n: &&flotilla_store::models::Node| is_manager(&n.spec) && n.manager_status.is_some();
    let member = store.read(|s| s.nodes.get(id).is_some_and(|n| in_raft(&n)));
    if !member {
        return Ok(());
    }
    let (managers, reachable_others) = store.read(|s| {
        let managers: Vec<_> = s.nodes.values().filter(in_raft).collect();
        let reachable = managers
            .iter()
            .filter(|n| n.id.as_deref() != Some(id))
            .filter(|n| {
                n.manager_status.as_ref().and_then(|m| m.reachability)
                    == Some(flotilla_store::models::Reachability::REACHABLE)
            })
            .count();
        (managers.len(), reachable)
    });
    if managers <= 1 {
        return Err(Error::LastManager {
            node: id.to_string(),
        });
    }
    let remaining = managers - 1;
    if reachable_others < remaining / 2 + 1 {
        return Err(Error::QuorumLoss {
            node: id.to_string(),
            reachable: reachable_others,
            remaining,
        });
    }
    Ok(())
}

/// `DELETE /nodes/{id}?force=…`.
pub async fn remove(store: &Store, key: &str, force: bool) -> Result<()> {
    let node = lookup(store, key)?;
    let id = node.id.clone().unwrap_or_default();
    if is_manager(&node.spec) {
        return Err(Error::ManagerNotDemoted { node: id });
    }
    // SwarmKit refuses only a READY node: down, unknown or disconnected go.
    if node.is_ready() && !force {
        return Err(Error::NodeNotDown { node: id });
    }
    store.propose_one(Op::RemoveNode { id }).await?;
    Ok(())
}

#[cfg(test)]
mod tests {

    use flotilla_store::StoreError;

    use flotilla_store::models::{
        ManagerStatus, Node, NodeDescription, NodeSpecAvailabilityEnum, NodeState, NodeStatus,
        Reachability,
    };

    use super::*;
    use crate::testutil::store;

    fn node(id: &str, role: NodeSpecRoleEnum, state: NodeState) -> Node {
        Node {
            id: Some(id.into()),
            spec: Some(NodeSpec {
                role: Some(role),
                availability: Some(NodeSpecAvailabilityEnum::ACTIVE),
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: Some(format!("host-{id}")),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: Some(state),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn worker(id: &str, state: NodeState) -> Node {
        node(id, NodeSpecRoleEnum::WORKER, state)
    }

    /// A manager whose Raft reachability, as the leader sees it, is `reach`.
    fn manager(id: &str, reach: Reachability) -> Node {
        Node {
            manager_status: Some(ManagerStatus {
                reachability: Some(reach),
                ..Default::default()
            }),
            ..node(id, NodeSpecRoleEnum::MANAGER, NodeState::READY)
        }
    }

    /// Makes `nodes` the store's only nodes.
    async fn set_nodes(store: &Store, nodes: Vec<Node>) {
        let mut ops: Vec<Op> = store.read(|s| {
            s.nodes
                .keys()
                .map(|id| Op::RemoveNode { id: id.clone() })
                .collect()
        });
        ops.extend(nodes.into_iter().map(|n| Op::PutNode(Box::new(n))));
        let (_, results) = store.propose(ops).await.unwrap();
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    }

    fn get(store: &Store, id: &str) -> Option<Node> {
        store.read(|s| s.nodes.get(id).cloned())
    }

    fn role_of(store: &Store, id: &str) -> Option<NodeSpecRoleEnum> {
        get(store, id).and_then(|n| n.spec).and_then(|s| s.role)
    }

    fn version(store: &Store, id: &str) -> u64 {
        version_of(&get(store, id).unwrap().version)
    }

    fn spec(role: NodeSpecRoleEnum) -> NodeSpec {
        NodeSpec {
            role: Some(role),
            availability: Some(NodeSpecAvailabilityEnum::ACTIVE),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn update_checks_the_version_and_writes_the_spec() {
        let (store, _dir) = store().await;
        set_nodes(
            &store,
            vec![
                manager("m1", Reachability::REACHABLE),
                worker("w1", NodeState::READY),
            ],
        )
        .await;
        let v = version(&store, "w1");
        let drain = NodeSpec {
            availability: Some(NodeSpecAvailabilityEnum::DRAIN),
            ..spec(NodeSpecRoleEnum::WORKER)
        };
        let stale = update(&store, "w1", v - 1, drain.clone()).await;
        assert!(
            matches!(
                &stale,
                Err(Error::Store(StoreError::OutOfSequence { kind: Kind::Node, id, expected, current }))
                    if id == "w1" && *expected == v - 1 && *current == v
            ),
            "{stale:?}"
        );
        assert_eq!(
            get(&store, "w1").unwrap().spec.unwrap().availability,
            Some(NodeSpecAvailabilityEnum::ACTIVE),
            "a refused update changes nothing"
        );
        update(&store, "w1", v, drain.clone()).await.unwrap();
        let after = get(&store, "w1").unwrap();
        assert_eq!(after.spec, Some(drain));
        assert!(version_of(&after.version) > v, "the version moves on");
        assert!(after.updated_at.is_some());
    }

    #[tokio::test]
    async fn update_finds_nodes_by_id_hostname_or_id_prefix() {
        let (store, _dir) = store().await;
        set_nodes(
            &store,
            vec![
                manager("m1", Reachability::REACHABLE),
                worker("wabc", NodeState::READY),
            ],
        )
        .await;
        let labelled = |k: &str| NodeSpec {
            labels: Some([(k.to_string(), "1".to_string())].into()),
            ..spec(NodeSpecRoleEnum::WORKER)
        };
        for (key, label) in [("wabc", "a"), ("host-wabc", "b"), ("wa", "c")] {
            let v = version(&store, "wabc");
            update(&store, key, v, labelled(label)).await.unwrap();
            assert_eq!(
                get(&store, "wabc").unwrap().spec.unwrap().labels,
                labelled(label).labels,
                "updating by {key:?}"
            );
        }
        assert_eq!(
            update(&store, "nope", 1, spec(NodeSpecRoleEnum::WORKER)).await,
            Err(Error::not_found(Kind::Node, "nope"))
        );
    }

    #[tokio::test]
    async fn the_last_manager_cannot_be_demoted() {
        let (store, _dir) = store().await;
        // A worker with a (stale) reachable manager status is no manager.
        let mut stale = worker("w1", NodeState::READY);
        stale.manager_status = manager("w1", Reachability::REACHABLE).manager_status;
        set_nodes(&store, vec![manager("m1", Reachability::REACHABLE), stale]).await;
        let v = version(&store, "m1");
        assert_eq!(
            update(&store, "m1", v, spec(NodeSpecRoleEnum::WORKER)).await,
            Err(Error::LastManager { node: "m1".into() })
        );
        assert_eq!(role_of(&store, "m1"), Some(NodeSpecRoleEnum::MANAGER));
        // Other changes to the last manager are fine.
        let drain = NodeSpec {
            availability: Some(NodeSpecAvailabilityEnum::DRAIN),
            ..spec(NodeSpecRoleEnum::MANAGER)
        };
        update(&store, "m1", v, drain).await.unwrap();
    }

    #[tokio::test]
    async fn promotion_needs_no_quorum_check() {
        let (store, _dir) = store().await;
        // Even with the only other manager unreachable.
        set_nodes(
            &store,
            vec![
                manager("m1", Reachability::UNREACHABLE),
                worker("w1", NodeState::READY),
            ],
        )
        .await;
        let v = version(&store, "w1");
        update(&store, "w1", v, spec(NodeSpecRoleEnum::MANAGER))
            .await
            .unwrap();
        assert_eq!(role_of(&store, "w1"), Some(NodeSpecRoleEnum::MANAGER));
    }

    /// Docker's rule: after the demotion, a majority of the managers that
    /// remain must be reachable (the demoted one does not count).
    #[tokio::test]
    async fn demotion_keeps_a_reachable_majority_of_the_remaining_managers() {
        use Reachability::{REACHABLE as R, UNREACHABLE as U};
        let quorum = |id: &str, reachable: usize, remaining: usize| {
            Err(Error::QuorumLoss {
                node: id.into(),
                reachable,
                remaining,
            })
        };
        let (store, _dir) = store().await;
        let cases: Vec<(&[Reachability], &str, Result<()>)> = vec![
            (&[R, R], "m2", Ok(())),
            (&[R, U], "m1", quorum("m1", 0, 1)),
            (&[R, U], "m2", Ok(())),
            (&[R, R, R], "m3", Ok(())),
            (&[R, U, R], "m3", quorum("m3", 1, 2)),
            (&[R, U, R], "m2", Ok(())),
            (&[R, R, R, U], "m1", Ok(())),
            (&[R, R, U, U], "m1", quorum("m1", 1, 3)),
            (&[R, R, R, R, U], "m1", Ok(())),
            (&[R, R, R, U, U], "m1", quorum("m1", 2, 4)),
        ];
        for (reach, demote, want) in cases {
            let mut nodes: Vec<Node> = reach
                .iter()
                .enumerate()
                .map(|(i, r)| manager(&format!("m{}", i + 1), *r))
                .collect();
            nodes.push(worker("w1", NodeState::READY));
            set_nodes(&store, nodes).await;
            let v = version(&store, demote);
            let got = update(&store, demote, v, spec(NodeSpecRoleEnum::WORKER)).await;
            assert_eq!(got, want, "managers {reach:?}, demoting {demote}");
            let role = if got.is_ok() {
                NodeSpecRoleEnum::WORKER
            } else {
                NodeSpecRoleEnum::MANAGER
            };
            assert_eq!(role_of(&store, demote), Some(role), "{reach:?} {demote}");
        }
    }

    #[tokio::test]
    async fn remove_refuses_managers_even_with_force() {
        let (store, _dir) = store().await;
        set_nodes(
            &store,
            vec![
                manager("m1", Reachability::REACHABLE),
                manager("m2", Reachability::UNREACHABLE),
            ],
        )
        .await;
        for force in [false, true] {
            assert_eq!(
                remove(&store, "m2", force).await,
                Err(Error::ManagerNotDemoted { node: "m2".into() })
            );
        }
        assert!(get(&store, "m2").is_some());
    }

    #[tokio::test]
    async fn remove_refuses_a_ready_node_without_force() {
        let (store, _dir) = store().await;
        set_nodes(
            &store,
            vec![
                manager("m1", Reachability::REACHABLE),
                worker("w1", NodeState::READY),
                worker("w2", NodeState::READY),
            ],
        )
        .await;
        assert_eq!(
            remove(&store, "host-w1", false).await,
            Err(Error::NodeNotDown { node: "w1".into() })
        );
        assert!(get(&store, "w1").is_some());
        remove(&store, "host-w1", true).await.unwrap();
        assert!(get(&store, "w1").is_none());
        assert!(get(&store, "w2").is_some(), "only the one named goes");
        assert_eq!(
            remove(&store, "w1", true).await,
            Err(Error::not_found(Kind::Node, "w1"))
        );
    }

    /// As SwarmKit: only a READY node needs --force; one that is down, or
    /// whose state is unknown or disconnected, goes without.
    #[tokio::test]
    async fn remove_takes_a_node_that_is_not_ready_without_force() {
        let (store, _dir) = store().await;
        let states = [
            ("down", NodeState::DOWN),
            ("unknown", NodeState::UNKNOWN),
            ("disconnected", NodeState::DISCONNECTED),
        ];
        let mut nodes = vec![manager("m1", Reachability::REACHABLE)];
        nodes.extend(states.iter().map(|(id, s)| worker(id, *s)));
        set_nodes(&store, nodes).await;
        for (id, _) in states {
            remove(&store, id, false).await.unwrap();
            assert!(get(&store, id).is_none(), "{id} removed");
        }
        assert_eq!(store.read(|s| s.nodes.len()), 1);
    }
}
