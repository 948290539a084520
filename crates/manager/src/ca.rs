//! The CA's work on a manager: joining nodes (token check, node ID,
//! certificate from the node's CSR, the Node object) and renewals. The
//! root CA's key is in the store, so any manager can sign.

use std::time::Duration;

use flotilla_ca::{JoinToken, Role, RootCa};
use flotilla_store::models::{
    JoinTokens, ManagerStatus, Node, NodeDescription, NodeSpec, NodeSpecAvailabilityEnum,
    NodeSpecRoleEnum, NodeState, NodeStatus, Reachability, SwarmSpec, SwarmSpecCaConfig, TlsInfo,
};
use flotilla_store::network::host_of;
use flotilla_store::state::{CaTarget, RootRotation};
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

/// The swarm's root certificate: what every node trusts, and what a
/// joining node checks against its token's digest.
pub fn trust_root(state: &State) -> Result<String> {
    state
        .cluster
        .as_ref()
        .and_then(|c| c.tls_info.as_ref())
        .and_then(|t| t.trust_root.clone())
        .ok_or(Error::NotInSwarm)
}

/// The swarm's root CA, able to sign.
pub fn root_ca(state: &State) -> Result<RootCa> {
    let material = flotilla_ca::CaMaterial {
        cert_pem: trust_root(state)?,
        key_pem: state.root_ca_key.clone(),
    };
    RootCa::from_material(&material)
        .map_err(|e| Error::Internal(format!("loading the root CA: {e}")))
}

/// What signs node certificates now: the root, or while a rotation is
/// under way the new root, each certificate followed by the new root's
/// cross-signed copy (see flotilla-ca's `rotation`).
pub fn signer(state: &State) -> Result<RootCa> {
    let Some(r) = &state.root_rotation else {
        return root_ca(state);
    };
    let material = flotilla_ca::CaMaterial {
        cert_pem: r.cert_pem.clone(),
        key_pem: Some(r.key_pem.clone()),
    };
    RootCa::rotating(&material, &r.cross_signed_pem)
        .map_err(|e| Error::Internal(format!("loading the rotation's root CA: {e}")))
}

/// The `TLSInfo` a swarm with this root shows.
pub fn tls_info_of(root: &RootCa) -> TlsInfo {
    let (subject, key) = root.issuer_info().encoded();
    TlsInfo {
        trust_root: Some(root.cert_pem().to_string()),
        cert_issuer_subject: Some(subject),
        cert_issuer_public_key: Some(key),
    }
}

/// A TLSInfo with its issuer filled in from its root (a swarm made before
/// Flotilla recorded it has the root only).
pub fn with_issuer(info: TlsInfo) -> TlsInfo {
    if info.cert_issuer_public_key.is_some() {
        return info;
    }
    let root = info.trust_root.clone().and_then(|cert_pem| {
        RootCa::from_material(&flotilla_ca::CaMaterial {
            cert_pem,
            key_pem: None,
        })
        .ok()
    });
    match root {
        Some(root) => tls_info_of(&root),
        None => info,
    }
}

/// What each node must come to: the root to trust, the key to hold a
/// certificate from (the new root's during a rotation).
pub fn ca_target(state: &State) -> Option<CaTarget> {
    let root = root_ca(state).ok()?;
    let issuer = match &state.root_rotation {
        Some(r) => r.tls_info.cert_issuer_public_key.clone()?,
        None => root.issuer_info().encoded().1,
    };
    Some(CaTarget {
        root_digest: root.digest(),
        issuer_public_key: issuer,
    })
}

/// A swarm update's CA config, against the swarm: the rotation it starts
/// and the `ForceRotate` it answers, as SwarmKit's `validateCAConfig`
/// decides (without external CAs, which are refused before).
pub fn plan_rotation(
    state: &State,
    ca: &SwarmSpecCaConfig,
) -> Result<(Option<RootRotation>, Option<u64>)> {
    let force = ca.force_rotate.unwrap_or(0);
    let cert = ca.signing_ca_cert.as_deref().unwrap_or_default().trim();
    let key = ca.signing_ca_key.as_deref().unwrap_or_default().trim();
    // SwarmKit's words, as its gRPC errors reach the docker CLI.
    let invalid = Error::Rejected;
    if !key.is_empty() && cert.is_empty() {
        return Err(invalid(
            "if a signing CA key is provided, the signing CA cert must also be provided".into(),
        ));
    }
    let current = root_ca(state)?;
    let new = if cert.is_empty() {
        if force == state.last_forced_rotation {
            return Ok((None, None));
        }
        RootCa::generate().map_err(|e| Error::Internal(format!("creating the new root CA: {e}")))?
    } else {
        // The current root or the one being rotated to, sent back as `swarm
        // update` sends the whole spec: nothing to do.
        let same = |pem: &str| pem.trim() == cert;
        if same(current.cert_pem())
            || state
                .root_rotation
                .as_ref()
                .is_some_and(|r| same(&r.cert_pem))
        {
            // A key given with it must still be its key.
            if !key.is_empty() {
                RootCa::from_user(cert, key).map_err(|e| invalid(e.to_string()))?;
            }
            return Ok((None, (force != state.last_forced_rotation).then_some(force)));
        }
        if key.is_empty() {
            return Err(Error::Rejected(
                "rotating to a root CA without its key needs an external CA, which Flotilla does not support: give the key with --ca-key".into(),
            ));
        }
        let new = RootCa::from_user(cert, key).map_err(|e| invalid(e.to_string()))?;
        if current.issuer_info().public_key == new.issuer_info().public_key {
            return Err(invalid(
                "Cannot update to a cert with an identical key".into(),
            ));
        }
        new
    };
    let cross_signed_pem = current
        .cross_sign(&new)
        .map_err(|e| Error::Internal(format!("cross-signing the new root CA: {e}")))?;
    let key_pem = new
        .material()
        .key_pem
        .ok_or_else(|| Error::Internal("the new root CA has no key".into()))?;
    Ok((
        Some(RootRotation {
            cert_pem: new.cert_pem().to_string(),
            key_pem,
            cross_signed_pem,
            tls_info: tls_info_of(&new),
        }),
        Some(force),
    ))
}

/// The nodes whose certificate is not yet from the rotation's new key.
pub fn unrotated(state: &State) -> Vec<&Node> {
    let Some(r) = &state.root_rotation else {
        return Vec::new();
    };
    state
        .nodes
        .values()
        .filter(|n| {
            n.description
                .as_ref()
                .and_then(|d| d.tls_info.as_ref())
                .and_then(|t| t.cert_issuer_public_key.as_ref())
                != r.tls_info.cert_issuer_public_key.as_ref()
        })
        .collect()
}

/// The op that completes a rotation once every node holds a certificate
/// from the new key (SwarmKit waits for every node too: one left on the
/// old root alone could not talk to the others afterwards). New join
/// tokens, since a token pins the root's digest.
pub fn finish_rotation(state: &State) -> Option<Op> {
    let r = state.root_rotation.as_ref()?;
    if !unrotated(state).is_empty() {
        return None;
    }
    let digest = RootCa::from_material(&flotilla_ca::CaMaterial {
        cert_pem: r.cert_pem.clone(),
        key_pem: None,
    })
    .ok()?
    .digest();
    Some(Op::FinishRootRotation {
        cert_pem: r.cert_pem.clone(),
        join_tokens: JoinTokens {
            worker: Some(JoinToken::generate(&digest)),
            manager: Some(JoinToken::generate(&digest)),
        },
    })
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
        Ok((role, signer(s)?, cluster_id(s), expiry_of(&spec)))
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
            signer(s)?,
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

/// The leader completes a root rotation as soon as every node has moved
/// (re-checked after every commit: a node's TLSInfo arrives with its
/// heartbeat), and says which nodes it waits for now and then.
pub async fn complete_rotations(store: Store) {
    let mut changes = store.subscribe();
    let mut said = std::time::Instant::now();
    loop {
        if let Some(op) = store.read(finish_rotation) {
            match store.propose_one(op).await {
                Ok(_) => tracing::info!("root CA rotation completed: every node holds a certificate from the new root, which is now the swarm's"),
                Err(e) => tracing::warn!("completing the root CA rotation: {e}"),
            }
        } else if said.elapsed() >= std::time::Duration::from_secs(30) {
            let waiting: Vec<String> = store.read(|s| {
                unrotated(s)
                    .iter()
                    .map(|n| {
                        let state = n.status.as_ref().and_then(|st| st.state);
                        format!("{} ({:?})", n.id.as_deref().unwrap_or_default(), state)
                    })
                    .collect()
            });
            if !waiting.is_empty() {
                said = std::time::Instant::now();
                tracing::info!(
                    "root CA rotation waits for these nodes to renew their certificate (a node that is gone for good must be removed with `node rm`): {}",
                    waiting.join(", ")
                );
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A swarm of one manager ("n1"), applied to a fresh state.
    fn swarm() -> State {
        let new = crate::testutil::new_swarm();
        let mut state = State::default();
        for (i, op) in new.ops.into_iter().enumerate() {
            state.apply(i as u64 + 1, op).unwrap();
        }
        state
    }

    fn forced(n: u64) -> SwarmSpecCaConfig {
        SwarmSpecCaConfig {
            force_rotate: Some(n),
            ..Default::default()
        }
    }

    /// What a node reports once its certificate comes from `key`.
    fn report(state: &mut State, node: &str, key: &str, index: u64) {
        let tls_info = TlsInfo {
            cert_issuer_public_key: Some(key.to_string()),
            ..Default::default()
        };
        state
            .apply(
                index,
                Op::SetNodeTls {
                    id: node.into(),
                    tls_info,
                },
            )
            .unwrap();
    }

    #[test]
    fn a_spec_sent_back_unchanged_rotates_nothing() {
        let state = swarm();
        assert!(matches!(
            plan_rotation(&state, &SwarmSpecCaConfig::default()),
            Ok((None, None))
        ));
        let root = trust_root(&state).unwrap();
        let same = SwarmSpecCaConfig {
            signing_ca_cert: Some(root),
            ..Default::default()
        };
        assert!(matches!(plan_rotation(&state, &same), Ok((None, None))));
    }

    #[test]
    fn a_forced_rotation_runs_until_every_node_has_a_certificate_of_the_new_root() {
        let mut state = swarm();
        let old = root_ca(&state).unwrap();
        let (rotation, forced_at) = plan_rotation(&state, &forced(1)).unwrap();
        let rotation = rotation.expect("a rotation");
        assert_eq!(forced_at, Some(1));
        let new_key = rotation.tls_info.cert_issuer_public_key.clone().unwrap();
        assert_ne!(
            Some(&new_key),
            tls_info_of(&old).cert_issuer_public_key.as_ref()
        );
        let mut swarm_obj = state.cluster.clone().unwrap();
        swarm_obj.version = None;
        state
            .apply(
                10,
                Op::UpdateCluster {
                    expected: flotilla_store::state::version_of(
                        &state.cluster.as_ref().unwrap().version,
                    ),
                    swarm: Box::new(swarm_obj),
                    unlock_key: None,
                    root_rotation: Some(Box::new(rotation.clone())),
                    last_forced_rotation: forced_at,
                },
            )
            .unwrap();
        assert_eq!(
            state.cluster.as_ref().unwrap().root_rotation_in_progress,
            Some(true)
        );
        // The same ForceRotate sent back does not start another one.
        assert!(matches!(
            plan_rotation(&state, &forced(1)),
            Ok((None, None))
        ));
        // Certificates are signed with the new key, and carry the
        // cross-signed root; the trust root stays the old one meanwhile.
        let cert = signer(&state)
            .unwrap()
            .issue("w", flotilla_ca::Role::Worker, "c", DEFAULT_EXPIRY)
            .unwrap();
        let issuer = flotilla_ca::issuer_of(&cert.cert_pem, old.cert_pem()).unwrap();
        assert_eq!(issuer.encoded().1, new_key);
        assert_eq!(trust_root(&state).unwrap(), old.cert_pem());
        assert_eq!(
            ca_target(&state),
            Some(CaTarget {
                root_digest: old.digest(),
                issuer_public_key: new_key.clone(),
            })
        );

        assert!(finish_rotation(&state).is_none(), "n1 has not reported");
        report(&mut state, "n1", &new_key, 11);
        let op = finish_rotation(&state).expect("every node moved");
        state.apply(12, op).unwrap();
        let cluster = state.cluster.as_ref().unwrap();
        assert_eq!(cluster.root_rotation_in_progress, Some(false));
        assert_eq!(cluster.tls_info.as_ref(), Some(&rotation.tls_info));
        assert_eq!(
            state.root_ca_key.as_deref(),
            Some(rotation.key_pem.as_str())
        );
        assert!(state.root_rotation.is_none());
        let new_root = root_ca(&state).unwrap();
        let token = cluster
            .join_tokens
            .as_ref()
            .unwrap()
            .worker
            .clone()
            .unwrap();
        assert_eq!(
            JoinToken::parse(&token).unwrap().ca_digest(),
            new_root.digest(),
            "the join tokens pin the new root"
        );
        assert_eq!(ca_target(&state).unwrap().root_digest, new_root.digest());
    }

    #[test]
    fn a_rotation_replaced_before_it_finished_is_not_completed() {
        let mut state = swarm();
        let (first, _) = plan_rotation(&state, &forced(1)).unwrap();
        let key = first
            .as_ref()
            .unwrap()
            .tls_info
            .cert_issuer_public_key
            .clone();
        state.root_rotation = first;
        report(&mut state, "n1", &key.unwrap(), 4);
        let stale = finish_rotation(&state);
        assert!(stale.is_some());
        let (second, _) = plan_rotation(&state, &forced(2)).unwrap();
        state.root_rotation = second;
        let e = state.apply(5, stale.unwrap()).unwrap_err();
        assert!(e.to_string().contains("rotation changed"), "{e}");
    }

    #[test]
    fn bad_roots_are_refused_with_swarmkits_words() {
        let state = swarm();
        let other = RootCa::generate().unwrap().material();
        let key_alone = SwarmSpecCaConfig {
            signing_ca_key: other.key_pem.clone(),
            ..Default::default()
        };
        assert_eq!(
            plan_rotation(&state, &key_alone).unwrap_err().to_string(),
            "if a signing CA key is provided, the signing CA cert must also be provided"
        );
        let cert_alone = SwarmSpecCaConfig {
            signing_ca_cert: Some(other.cert_pem.clone()),
            ..Default::default()
        };
        assert!(plan_rotation(&state, &cert_alone)
            .unwrap_err()
            .to_string()
            .contains("external CA"));
        let mismatched = SwarmSpecCaConfig {
            signing_ca_cert: Some(other.cert_pem.clone()),
            signing_ca_key: RootCa::generate().unwrap().material().key_pem,
            ..Default::default()
        };
        assert_eq!(
            plan_rotation(&state, &mismatched).unwrap_err().to_string(),
            "the root CA key does not belong to the root CA certificate"
        );
        let given = SwarmSpecCaConfig {
            signing_ca_cert: Some(other.cert_pem.clone()),
            signing_ca_key: other.key_pem.clone(),
            ..Default::default()
        };
        let (rotation, _) = plan_rotation(&state, &given).unwrap();
        assert_eq!(rotation.unwrap().cert_pem, other.cert_pem);
    }
}
