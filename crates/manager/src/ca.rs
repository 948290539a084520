//! The CA's work on a manager: joining nodes (token check, node ID,
//! certificate from the node's CSR, the Node object) and renewals. The
//! root CA's key is in the store, so any manager can sign.

use std::time::Duration;

use flotilla_ca::{JoinToken, Role, RootCa};
use flotilla_store::models::{
    ManagerStatus, Node, NodeDescription, NodeSpec, NodeSpecAvailabilityEnum, NodeSpecRoleEnum,
    NodeState, NodeStatus, Reachability, SwarmSpec,
};
use flotilla_store::network::host_of;
use flotilla_store::{ids, Op, State, Store};

use crate::error::{Error, Result};

/// Docker's default `--cert-expiry`.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(90 * 24 * 3600);

pub fn expiry_of(spec: &SwarmSpec) -> Duration {
    spec.ca_config
        .as_ref()
        .and_then(|c| c.node_cert_expiry)
        .filter(|ns| *ns > 0)
        .map_or(DEFAULT_EXPIRY, |ns| Duration::from_nanos(ns as u64))
}

/// The swarm's root CA, able to sign.
pub fn root_ca(state: &State) -> Result<RootCa> {
    let cert_pem = state
        .cluster
        .as_ref()
        .and_then(|c| c.tls_info.as_ref())
        .and_then(|t| t.trust_root.clone())
        .ok_or(Error::NotInSwarm)?;
    let material = flotilla_ca::CaMaterial {
        cert_pem,
        key_pem: state.root_ca_key.clone(),
    };
    RootCa::from_material(&material)
        .map_err(|e| Error::Internal(format!("loading the root CA: {e}")))
}

pub fn cluster_id(state: &State) -> String {
    state
        .cluster
        .as_ref()
        .and_then(|c| c.id.clone())
        .unwrap_or_default()
}

/// Managers' cluster addresses, for agents to reach any of them.
pub fn manager_addrs(state: &State) -> Vec<String> {
    state
        .nodes
        .values()
        .filter_map(|n| n.manager_status.as_ref().and_then(|m| m.addr.clone()))
        .collect()
}

pub struct Joined {
    pub node_id: String,
    pub role: Role,
    pub cluster_id: String,
    pub cert_pem: String,
    pub managers: Vec<String>,
}

/// Which role `token` grants, if it is one of the swarm's current tokens.
fn role_for(state: &State, token: &str) -> Result<Role> {
    let presented = JoinToken::parse(token).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let tokens = state
        .cluster
        .as_ref()
        .and_then(|c| c.join_tokens.clone())
        .unwrap_or_default();
    let matches = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| JoinToken::parse(t).ok())
            .is_some_and(|expected| presented.matches(&expected))
    };
    if matches(&tokens.manager) {
        Ok(Role::Manager)
    } else if matches(&tokens.worker) {
        Ok(Role::Worker)
    } else {
        Err(Error::InvalidJoinToken)
    }
}

/// A node joins: its token decides its role, the CA signs its CSR, and the
/// Node object is written. Run on any manager (the write goes to the leader).
pub async fn join(
    store: &Store,
    token: &str,
    csr_pem: &str,
    description: NodeDescription,
    addr: &str,
) -> Result<Joined> {
    let (role, ca, cluster_id, expiry) = store.read(|s| -> Result<_> {
        let role = role_for(s, token)?;
        let spec = s
            .cluster
            .as_ref()
            .and_then(|c| c.spec.clone())
            .unwrap_or_default();
        Ok((role, root_ca(s)?, cluster_id(s), expiry_of(&spec)))
    })?;
    let node_id = ids::new_id();
    let cert_pem = ca
        .sign_csr(csr_pem, &node_id, role, &cluster_id, expiry)
        .map_err(|e| {
            Error::InvalidArgument(format!(
                "cannot sign the joining node's certificate request: {e}"
            ))
        })?;
    let now = ids::now();
    let manager = role == Role::Manager;
    let node = Node {
        id: Some(node_id.clone()),
        created_at: Some(now.clone()),
        updated_at: Some(now),
        spec: Some(NodeSpec {
            labels: Some(Default::default()),
            role: Some(if manager {
                NodeSpecRoleEnum::MANAGER
            } else {
                NodeSpecRoleEnum::WORKER
            }),
            availability: Some(NodeSpecAvailabilityEnum::ACTIVE),
            ..Default::default()
        }),
        description: Some(description),
        status: Some(NodeStatus {
            state: Some(NodeState::UNKNOWN),
            message: None,
            addr: Some(host_of(addr).to_string()),
        }),
        manager_status: manager.then(|| ManagerStatus {
            leader: None,
            reachability: Some(Reachability::UNKNOWN),
            addr: Some(addr.to_string()),
        }),
        ..Default::default()
    };
    store.propose_one(Op::PutNode(Box::new(node))).await?;
    let managers = store.read(manager_addrs);
    Ok(Joined {
        node_id,
        role,
        cluster_id,
        cert_pem,
        managers,
    })
}

/// A member renews its certificate with a new CSR; its role is what the
/// store says now (a promotion takes effect at the next renewal).
pub async fn renew(store: &Store, node_id: &str, csr_pem: &str) -> Result<String> {
    let (ca, cluster_id, expiry, role) = store.read(|s| -> Result<_> {
        let node = s.nodes.get(node_id).ok_or_else(|| Error::Removed {
            node: node_id.to_string(),
        })?;
        let manager = node.spec.as_ref().and_then(|sp| sp.role) == Some(NodeSpecRoleEnum::MANAGER);
        let spec = s
            .cluster
            .as_ref()
            .and_then(|c| c.spec.clone())
            .unwrap_or_default();
        Ok((
            root_ca(s)?,
            cluster_id(s),
            expiry_of(&spec),
            if manager { Role::Manager } else { Role::Worker },
        ))
    })?;
    ca.sign_csr(csr_pem, node_id, role, &cluster_id, expiry)
        .map_err(|e| {
            Error::InvalidArgument(format!(
                "cannot sign the certificate request of node {node_id}: {e}"
            ))
        })
}
