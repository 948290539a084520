//! Updating and removing nodes.

use flotilla_store::ids;
use flotilla_store::models::{NodeSpec, NodeSpecRoleEnum, NodeState};
use flotilla_store::state::version_of;
use flotilla_store::{Op, Store};

use flotilla_store::Kind;

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
    let (managers, reachable_others) = store.read(|s| {
        let managers: Vec<_> = s.nodes.values().filter(|n| is_manager(&n.spec)).collect();
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
    let down = node.status.as_ref().and_then(|s| s.state) == Some(NodeState::DOWN);
    if !down && !force {
        return Err(Error::NodeNotDown { node: id });
    }
    store.propose_one(Op::RemoveNode { id }).await?;
    Ok(())
}
