//! Keeps Raft's voters equal to the store's managers, on the leader: a
//! manager demoted to worker (or removed) leaves the voters, and loses its
//! ManagerStatus once it has. Managers are added by the joining node
//! itself (it must be serving Raft first), through `AddManager`.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_store::models::NodeSpecRoleEnum;
use flotilla_store::{Op, Store, StoreError};

const PERIOD: Duration = Duration::from_secs(1);

/// Why a pass did not bring the voters in line; the next pass tries again.
#[derive(Debug, thiserror::Error)]
enum MembershipError {
    #[error("refusing to remove every voter")]
    NoVoterLeft,
    #[error("changing the Raft voters: {0}")]
    Raft(String),
    #[error("clearing manager status: {0}")]
    Store(#[from] StoreError),
}

pub async fn run(store: Store) {
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tick.tick().await;
        if !store.is_leader() {
            continue;
        }
        if let Err(e) = reconcile(&store).await {
            tracing::warn!("raft membership: {e}");
        }
    }
}

async fn reconcile(store: &Store) -> Result<(), MembershipError> {
    let raft = store.raft();
    let membership = raft.metrics().borrow().membership_config.clone();
    let voters: BTreeSet<u64> = membership.membership().voter_ids().collect();
    let leaving: Vec<(u64, String)> = store.read(|s| {
        voters
            .iter()
            .filter_map(|v| {
                let peer = membership.membership().get_node(v)?;
                let manager = s.nodes.get(&peer.node_id).is_some_and(|n| {
                    n.spec.as_ref().and_then(|sp| sp.role) == Some(NodeSpecRoleEnum::MANAGER)
                });
                (!manager).then(|| (*v, peer.node_id.clone()))
            })
            .collect()
    });
    if !leaving.is_empty() {
        let keep: BTreeSet<u64> = voters
            .iter()
            .copied()
            .filter(|v| !leaving.iter().any(|(l, _)| l == v))
            .collect();
        if keep.is_empty() {
            return Err(MembershipError::NoVoterLeft);
        }
        raft.change_membership(keep, false)
            .await
            .map_err(|e| MembershipError::Raft(e.to_string()))?;
        for (_, node) in &leaving {
            tracing::info!("node {node} left the Raft voters (demoted)");
        }
    }
    // ManagerStatus goes once the node is out of Raft.
    let still: BTreeSet<String> = {
        let m = raft.metrics().borrow().membership_config.clone();
        m.membership()
            .nodes()
            .map(|(_, p)| p.node_id.clone())
            .collect()
    };
    let ops: Vec<Op> = store.read(|s| {
        s.nodes
            .values()
            .filter(|n| n.spec.as_ref().and_then(|sp| sp.role) != Some(NodeSpecRoleEnum::MANAGER))
            .filter(|n| n.manager_status.is_some())
            .filter_map(|n| n.id.clone())
            .filter(|id| !still.contains(id))
            .map(|id| Op::SetManagerStatus { id, status: None })
            .collect()
    });
    if !ops.is_empty() {
        store.propose(ops).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use flotilla_store::models::{ManagerStatus, Node, NodeSpec, Reachability};
    use flotilla_store::raft::Peer;

    use super::*;
    use crate::testutil::store;

    /// A node with `role` that carries a ManagerStatus or not.
    fn node(id: &str, role: NodeSpecRoleEnum, status: bool) -> Node {
        Node {
            id: Some(id.into()),
            spec: Some(NodeSpec {
                role: Some(role),
                ..Default::default()
            }),
            manager_status: status.then(|| ManagerStatus {
                reachability: Some(Reachability::REACHABLE),
                addr: Some(format!("{id}:2377")),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn put(store: &Store, nodes: Vec<Node>) {
        let ops = nodes
            .into_iter()
            .map(|n| Op::PutNode(Box::new(n)))
            .collect();
        let (_, results) = store.propose(ops).await.unwrap();
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    }

    fn voters(store: &Store) -> BTreeSet<u64> {
        let m = store.raft().metrics().borrow().membership_config.clone();
        m.membership().voter_ids().collect()
    }

    fn has_status(store: &Store, id: &str) -> bool {
        store.read(|s| s.nodes[id].manager_status.is_some())
    }

    fn applied(store: &Store) -> u64 {
        *store.subscribe().borrow()
    }

    #[tokio::test]
    async fn nothing_to_do_when_the_voters_are_the_managers() {
        let (store, _dir) = store().await;
        put(
            &store,
            vec![
                node("m1", NodeSpecRoleEnum::MANAGER, true),
                node("w1", NodeSpecRoleEnum::WORKER, false),
            ],
        )
        .await;
        let before = applied(&store);
        reconcile(&store).await.unwrap();
        assert_eq!(voters(&store), BTreeSet::from([1]));
        assert!(has_status(&store, "m1"));
        assert_eq!(applied(&store), before, "nothing was proposed");
    }

    /// A demoted node already out of Raft loses its ManagerStatus; a
    /// manager by spec keeps its own even when it is not (yet) a voter.
    #[tokio::test]
    async fn a_worker_outside_raft_loses_its_manager_status() {
        let (store, _dir) = store().await;
        put(
            &store,
            vec![
                node("m1", NodeSpecRoleEnum::MANAGER, true),
                node("w1", NodeSpecRoleEnum::WORKER, true),
                node("m2", NodeSpecRoleEnum::MANAGER, true),
                node("w2", NodeSpecRoleEnum::WORKER, false),
            ],
        )
        .await;
        reconcile(&store).await.unwrap();
        assert!(
            !has_status(&store, "w1"),
            "the demoted worker's status goes"
        );
        assert!(has_status(&store, "m1"));
        assert!(has_status(&store, "m2"), "a manager keeps its status");
        assert!(!has_status(&store, "w2"));
        assert_eq!(voters(&store), BTreeSet::from([1]));
        // Done once: the next pass has nothing left to do.
        let before = applied(&store);
        reconcile(&store).await.unwrap();
        assert_eq!(applied(&store), before);
    }

    /// The only voter demoted (or gone from the store): removing it would
    /// leave Raft without voters, so it stays, with its ManagerStatus.
    #[tokio::test]
    async fn the_last_voter_is_never_removed() {
        let (store, _dir) = store().await;
        put(&store, vec![node("m1", NodeSpecRoleEnum::WORKER, true)]).await;
        assert!(matches!(
            reconcile(&store).await,
            Err(MembershipError::NoVoterLeft)
        ));
        assert_eq!(voters(&store), BTreeSet::from([1]));
        assert!(has_status(&store, "m1"), "still in Raft: the status stays");

        store
            .propose_one(Op::RemoveNode { id: "m1".into() })
            .await
            .unwrap();
        assert!(matches!(
            reconcile(&store).await,
            Err(MembershipError::NoVoterLeft)
        ));
        assert_eq!(voters(&store), BTreeSet::from([1]));
    }

    /// A node still in Raft's membership (a learner: joining, or not yet
    /// out) keeps its ManagerStatus; learners are never voters to remove.
    #[tokio::test]
    async fn a_worker_still_in_raft_keeps_its_status() {
        let (store, _dir) = store().await;
        put(
            &store,
            vec![
                node("m1", NodeSpecRoleEnum::MANAGER, true),
                node("w1", NodeSpecRoleEnum::WORKER, true),
            ],
        )
        .await;
        let peer = Peer {
            addr: "127.0.0.1:1".into(),
            node_id: "w1".into(),
        };
        store.raft().add_learner(2, peer, false).await.unwrap();
        reconcile(&store).await.unwrap();
        assert!(has_status(&store, "w1"), "still a Raft member");
        assert_eq!(voters(&store), BTreeSet::from([1]));
    }

    #[tokio::test]
    async fn run_reconciles_while_leading() {
        let (store, _dir) = store().await;
        put(
            &store,
            vec![
                node("m1", NodeSpecRoleEnum::MANAGER, true),
                node("w1", NodeSpecRoleEnum::WORKER, true),
            ],
        )
        .await;
        let task = tokio::spawn(run(store.clone()));
        let mut changes = store.subscribe();
        let cleared = tokio::time::timeout(Duration::from_secs(10), async {
            while has_status(&store, "w1") {
                changes.changed().await.unwrap();
            }
        })
        .await;
        task.abort();
        assert!(cleared.is_ok(), "w1's ManagerStatus still there after 10 s");
        assert!(has_status(&store, "m1"));
    }
}
