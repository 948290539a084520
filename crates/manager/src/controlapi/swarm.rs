//! `swarm init` and `swarm update`: the swarm object, its join tokens, and
//! the first node.

use std::collections::HashMap;

use flotilla_store::ids;
use flotilla_store::models::{
    JoinTokens, ManagerStatus, Node, NodeDescription, NodeSpec, NodeSpecAvailabilityEnum,
    NodeSpecRoleEnum, NodeState, NodeStatus, ObjectVersion, Reachability, Swarm, SwarmSpec,
    SwarmSpecDispatcher, SwarmSpecOrchestration,
};
use flotilla_store::state::version_of;
use flotilla_store::{Op, Store};
use rand::Rng;

use crate::error::{Error, Result};
use crate::orchestrator::taskreaper::DEFAULT_HISTORY;

/// A join token in Docker's format: `SWMTKN-1-<CA digest>-<secret>`, both
/// in base 36 (50 and 25 characters).
pub fn new_token(ca_digest: &str) -> String {
    format!("SWMTKN-1-{ca_digest}-{}", random_base36(25))
}

pub fn random_base36(len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Fills what Docker fills when a spec leaves it out.
pub fn with_defaults(mut spec: SwarmSpec) -> SwarmSpec {
    if spec.name.as_deref().unwrap_or_default().is_empty() {
        spec.name = Some("default".into());
    }
    let orch = spec
        .orchestration
        .get_or_insert_with(SwarmSpecOrchestration::default);
    orch.task_history_retention_limit
        .get_or_insert(DEFAULT_HISTORY);
    let disp = spec
        .dispatcher
        .get_or_insert_with(SwarmSpecDispatcher::default);
    disp.heartbeat_period.get_or_insert(5_000_000_000);
    spec
}

pub struct InitParams {
    pub node_id: String,
    pub addr: String,
    pub description: NodeDescription,
    pub spec: SwarmSpec,
    pub ca_digest: String,
}

/// The ops that create a swarm with this node as its only manager.
pub fn init_ops(p: InitParams) -> Vec<Op> {
    let now = ids::now();
    let swarm = Swarm {
        id: Some(ids::new_id()),
        created_at: Some(now.clone()),
        updated_at: Some(now.clone()),
        spec: Some(with_defaults(p.spec)),
        join_tokens: Some(JoinTokens {
            worker: Some(new_token(&p.ca_digest)),
            manager: Some(new_token(&p.ca_digest)),
        }),
        default_addr_pool: Some(vec!["10.0.0.0/8".into()]),
        subnet_size: Some(24),
        data_path_port: Some(4789),
        ..Default::default()
    };
    let node = Node {
        id: Some(p.node_id),
        created_at: Some(now.clone()),
        updated_at: Some(now),
        spec: Some(NodeSpec {
            labels: Some(HashMap::new()),
            role: Some(NodeSpecRoleEnum::MANAGER),
            availability: Some(NodeSpecAvailabilityEnum::ACTIVE),
            ..Default::default()
        }),
        description: Some(p.description),
        status: Some(NodeStatus {
            state: Some(NodeState::UNKNOWN),
            message: None,
            addr: Some(host_of(&p.addr).to_string()),
        }),
        manager_status: Some(ManagerStatus {
            leader: None,
            reachability: Some(Reachability::REACHABLE),
            addr: Some(p.addr),
        }),
        ..Default::default()
    };
    vec![
        Op::InitCluster(Box::new(swarm)),
        Op::PutNode(Box::new(node)),
    ]
}

pub fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

/// `POST /swarm/update?version=N&rotateWorkerToken=…&rotateManagerToken=…`.
pub async fn update(
    store: &Store,
    version: u64,
    spec: SwarmSpec,
    rotate_worker: bool,
    rotate_manager: bool,
) -> Result<()> {
    let mut swarm = store
        .read(|s| s.cluster.clone())
        .ok_or_else(|| Error::Unavailable(crate::error::NOT_IN_SWARM.into()))?;
    if version_of(&swarm.version) != version {
        return Err(Error::InvalidArgument(
            "rpc error: code = Unknown desc = update out of sequence".into(),
        ));
    }
    let limit = spec
        .orchestration
        .as_ref()
        .and_then(|o| o.task_history_retention_limit);
    if limit.is_some_and(|l| l < 0) {
        return Err(Error::InvalidArgument(
            "task history retention limit must be 0 or more".into(),
        ));
    }
    swarm.spec = Some(with_defaults(spec));
    let tokens = swarm.join_tokens.get_or_insert_with(JoinTokens::default);
    let digest = tokens
        .worker
        .as_deref()
        .and_then(|t| t.split('-').nth(2))
        .unwrap_or_default()
        .to_string();
    if rotate_worker {
        tokens.worker = Some(new_token(&digest));
    }
    if rotate_manager {
        tokens.manager = Some(new_token(&digest));
    }
    swarm.updated_at = Some(ids::now());
    swarm.version = Some(ObjectVersion {
        index: Some(version),
    });
    store
        .propose_one(Op::UpdateCluster {
            expected: version,
            swarm: Box::new(swarm),
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_format() {
        let t = new_token(&random_base36(50));
        let parts: Vec<&str> = t.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], "SWMTKN");
        assert_eq!(parts[2].len(), 50);
        assert_eq!(parts[3].len(), 25);
    }
}
