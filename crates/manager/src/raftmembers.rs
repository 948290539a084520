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
