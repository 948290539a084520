//! `swarm init` and `swarm update`: the swarm object, its join tokens, and
//! the first node.

use std::collections::HashMap;

use flotilla_ca::{JoinToken, NodeCert, Role, RootCa};
use flotilla_store::ids;
use flotilla_store::models::{
    JoinTokens, ManagerStatus, Node, NodeDescription, NodeSpec, NodeSpecAvailabilityEnum,
    NodeSpecRoleEnum, NodeState, NodeStatus, ObjectVersion, Reachability, Swarm, SwarmSpec,
    SwarmSpecDispatcher, SwarmSpecOrchestration,
};
use flotilla_store::network::host_of;
use flotilla_store::networks::Subnet;
use flotilla_store::raft::seal::UnlockKey;
use flotilla_store::state::version_of;
use flotilla_store::{Op, Store};

use crate::error::{Error, Result};
use crate::orchestrator::taskreaper::DEFAULT_HISTORY;

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
    spec.labels.get_or_insert_with(HashMap::new);
    // What Flotilla's Raft runs with, in SwarmKit's terms (and its values:
    // a snapshot every 10,000 entries, 500 entries kept for slow followers).
    let raft = spec.raft.get_or_insert_with(Default::default);
    for (field, default) in [
        (&mut raft.snapshot_interval, RAFT_SNAPSHOT_INTERVAL),
        (&mut raft.log_entries_for_slow_followers, 500),
        (&mut raft.keep_old_snapshots, 0),
    ] {
        if field.is_none_or(|v| v == 0) {
            *field = Some(default);
        }
    }
    for (field, default) in [(&mut raft.election_tick, 10), (&mut raft.heartbeat_tick, 1)] {
        if field.is_none_or(|v| v == 0) {
            *field = Some(default);
        }
    }
    let ca = spec.ca_config.get_or_insert_with(Default::default);
    if ca.node_cert_expiry.is_none_or(|ns| ns <= 0) {
        ca.node_cert_expiry = Some(crate::ca::DEFAULT_EXPIRY.as_nanos() as i64);
    }
    spec
}

/// Raft entries between snapshots (the store's policy).
const RAFT_SNAPSHOT_INTERVAL: u64 = 10_000;

/// Raft settings are the store's, fixed: a change Flotilla would not
/// apply is refused rather than shown as if it were.
fn check_raft(spec: &SwarmSpec) -> Result<()> {
    let Some(raft) = spec.raft.as_ref() else {
        return Ok(());
    };
    let fixed = [
        (
            "--snapshot-interval",
            raft.snapshot_interval,
            RAFT_SNAPSHOT_INTERVAL,
        ),
        ("--max-snapshots", raft.keep_old_snapshots, 0),
        (
            "log entries for slow followers",
            raft.log_entries_for_slow_followers,
            500,
        ),
        ("election tick", raft.election_tick.map(|v| v as u64), 10),
        ("heartbeat tick", raft.heartbeat_tick.map(|v| v as u64), 1),
    ];
    for (what, value, runs) in fixed {
        if value.is_some_and(|v| v != 0 && v != runs) {
            return Err(Error::InvalidArgument(format!(
                "{what} cannot be changed: Flotilla's Raft runs with {runs} (it elects a new leader within 1.5 s and snapshots every {RAFT_SNAPSHOT_INTERVAL} entries)"
            )));
        }
    }
    Ok(())
}

/// SwarmKit's floor for `--cert-expiry`: a shorter life leaves too little
/// time to renew.
const MIN_CERT_EXPIRY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The CA part of a swarm spec: SwarmKit's expiry floor, and no external
/// CA (Flotilla signs every certificate with the swarm's own root CA).
fn check_ca(spec: &SwarmSpec) -> Result<()> {
    let Some(ca) = spec.ca_config.as_ref() else {
        return Ok(());
    };
    if ca
        .node_cert_expiry
        .is_some_and(|ns| ns != 0 && (ns < 0 || (ns as u128) < MIN_CERT_EXPIRY.as_nanos()))
    {
        return Err(Error::Rejected(
            "minimum certificate expiry time is: 1h0m0s".into(),
        ));
    }
    if ca.external_cas.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err(Error::Rejected(
            "external CAs are not supported by Flotilla: every certificate is signed by the swarm's own root CA".into(),
        ));
    }
    Ok(())
}

pub struct InitParams {
    pub node_id: String,
    pub addr: String,
    pub description: NodeDescription,
    pub spec: SwarmSpec,
    pub network: NetworkDefaults,
}

/// `swarm init --default-addr-pool`, `--default-addr-pool-mask-length`,
/// `--data-path-port`: empty and zero mean Docker's defaults.
#[derive(Debug, Clone, Default)]
pub struct NetworkDefaults {
    pub default_addr_pool: Vec<String>,
    pub subnet_size: u32,
    pub data_path_port: u32,
}

impl NetworkDefaults {
    /// Checked, with Docker's defaults filled in: (pools, subnet size,
    /// VXLAN port).
    fn checked(&self) -> Result<(Vec<String>, u32, u32)> {
        let invalid = |m: String| Error::InvalidArgument(m);
        let mut pools = Vec::new();
        let mut widest = 0u8;
        for p in &self.default_addr_pool {
            let subnet = Subnet::parse(p)
                .map_err(|e| invalid(format!("invalid default address pool {p:?}: {e}")))?;
            widest = widest.max(subnet.prefix);
            pools.push(subnet.to_string());
        }
        if pools.is_empty() {
            pools.push("10.0.0.0/8".into());
            widest = 8;
        }
        let size = match self.subnet_size {
            0 => 24,
            n => n,
        };
        if !(u32::from(widest)..=29).contains(&size) {
            return Err(invalid(format!(
                "invalid default address pool mask length {size}: it must be between {widest} (the longest pool prefix) and 29"
            )));
        }
        let port = match self.data_path_port {
            0 => 4789,
            p => p,
        };
        if !(1024..=49151).contains(&port) {
            return Err(invalid(format!(
                "data path port {port} is out of range: it must be between 1024 and 49151"
            )));
        }
        Ok((pools, size, port))
    }
}

/// A new swarm: the ops that create it with this node as its only
/// manager, and this node's certificate from the new root CA.
pub struct NewSwarm {
    pub ops: Vec<Op>,
    pub cluster_id: String,
    pub root_ca_pem: String,
    pub node_cert: NodeCert,
    /// With `--autolock`: the key the first manager locks its keys with.
    pub unlock_key: Option<UnlockKey>,
}

pub fn init(p: InitParams) -> Result<NewSwarm> {
    let (pools, subnet_size, data_path_port) = p.network.checked()?;
    let now = ids::now();
    check_raft(&p.spec)?;
    check_ca(&p.spec)?;
    let spec = with_defaults(p.spec);
    let ca =
        RootCa::generate().map_err(|e| Error::Internal(format!("creating the root CA: {e}")))?;
    let cluster_id = ids::new_id();
    let expiry = crate::ca::expiry_of(&spec);
    let node_cert = ca
        .issue(&p.node_id, Role::Manager, &cluster_id, expiry)
        .map_err(|e| Error::Internal(format!("issuing the first manager's certificate: {e}")))?;
    let material = ca.material();
    let digest = ca.digest();
    let swarm = Swarm {
        id: Some(cluster_id.clone()),
        created_at: Some(now.clone()),
        updated_at: Some(now.clone()),
        spec: Some(spec),
        tls_info: Some(crate::ca::tls_info_of(&ca)),
        root_rotation_in_progress: Some(false),
        join_tokens: Some(JoinTokens {
            worker: Some(JoinToken::generate(&digest)),
            manager: Some(JoinToken::generate(&digest)),
        }),
        default_addr_pool: Some(pools),
        subnet_size: Some(subnet_size),
        data_path_port: Some(data_path_port),
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
    let ca_key_pem = material
        .key_pem
        .ok_or_else(|| Error::Internal("the new root CA has no key".into()))?;
    let unlock_key = autolock(swarm.spec.as_ref())
        .then(UnlockKey::generate)
        .transpose()
        .map_err(|e| Error::Internal(format!("making the unlock key: {e}")))?;
    Ok(NewSwarm {
        ops: vec![
            Op::InitCluster {
                swarm: Box::new(swarm),
                ca_key_pem,
                unlock_key: unlock_key.as_ref().map(UnlockKey::human),
            },
            Op::PutNode(Box::new(node)),
        ],
        cluster_id,
        root_ca_pem: material.cert_pem,
        node_cert,
        unlock_key,
    })
}

/// Whether the spec asks for autolock (`--autolock`).
fn autolock(spec: Option<&SwarmSpec>) -> bool {
    spec.and_then(|s| s.encryption_config.as_ref())
        .and_then(|e| e.auto_lock_managers)
        .unwrap_or(false)
}

/// `POST /swarm/update?version=N&rotateWorkerToken=…&rotateManagerToken=…`.
pub async fn update(
    store: &Store,
    version: u64,
    spec: SwarmSpec,
    rotate_worker: bool,
    rotate_manager: bool,
    rotate_unlock_key: bool,
) -> Result<()> {
    let (swarm, unlock_key) = store.read(|s| (s.cluster.clone(), s.unlock_key.clone()));
    let mut swarm = swarm.ok_or(Error::NotInSwarm)?;
    let mut spec = spec;
    let current = version_of(&swarm.version);
    if current != version {
        let id = swarm.id.clone().unwrap_or_default();
        return Err(Error::out_of_sequence(
            flotilla_store::Kind::Swarm,
            id,
            version,
            current,
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
    check_raft(&spec)?;
    check_ca(&spec)?;
    let ca_config = spec.ca_config.clone().unwrap_or_default();
    let (root_rotation, last_forced_rotation) =
        store.read(|s| crate::ca::plan_rotation(s, &ca_config))?;
    // The key of a root given with --ca-key goes into the rotation, which
    // the API never shows; the spec keeps the certificate, as SwarmKit's.
    if let Some(ca) = spec.ca_config.as_mut() {
        ca.signing_ca_key = None;
    }
    swarm.spec = Some(with_defaults(spec));
    let tokens = swarm.join_tokens.get_or_insert_with(JoinTokens::default);
    let digest = tokens
        .worker
        .as_deref()
        .and_then(|t| JoinToken::parse(t).ok())
        .map(|t| t.ca_digest().to_string())
        .unwrap_or_default();
    if rotate_worker {
        tokens.worker = Some(JoinToken::generate(&digest));
    }
    if rotate_manager {
        tokens.manager = Some(JoinToken::generate(&digest));
    }
    // SwarmKit's rules: no key without autolock; a key made when autolock
    // is turned on, and again when asked to rotate it.
    let new_key = || {
        UnlockKey::generate()
            .map(|k| Some(k.human()))
            .map_err(|e| Error::Internal(format!("making the unlock key: {e}")))
    };
    let unlock_key = match (autolock(swarm.spec.as_ref()), unlock_key) {
        (false, _) => None,
        (true, None) => new_key()?,
        (true, Some(_)) if rotate_unlock_key => new_key()?,
        (true, current) => current,
    };
    swarm.updated_at = Some(ids::now());
    swarm.version = Some(ObjectVersion {
        index: Some(version),
    });
    store
        .propose_one(Op::UpdateCluster {
            expected: version,
            swarm: Box::new(swarm),
            unlock_key,
            root_rotation: root_rotation.map(Box::new),
            last_forced_rotation,
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_makes_tokens_with_the_ca_digest_and_a_manager_cert() {
        let new = crate::testutil::new_swarm();
        let ca = RootCa::from_material(&flotilla_ca::CaMaterial {
            cert_pem: new.root_ca_pem.clone(),
            key_pem: None,
        })
        .unwrap();
        let Op::InitCluster { swarm, .. } = &new.ops[0] else {
            panic!("first op inits")
        };
        let token = JoinToken::parse(
            swarm
                .join_tokens
                .as_ref()
                .unwrap()
                .worker
                .as_deref()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(token.ca_digest(), ca.digest());
        let der = rustls_pem(&new.node_cert.cert_pem);
        let id = flotilla_ca::parse_identity(&der).unwrap();
        assert_eq!(
            (id.node_id.as_str(), id.role, id.cluster_id.as_str()),
            ("n1", Role::Manager, new.cluster_id.as_str())
        );
    }

    #[test]
    fn ca_settings_swarmkit_refuses_are_refused() {
        let spec = |expiry: Option<i64>, external: bool| SwarmSpec {
            ca_config: Some(flotilla_store::models::SwarmSpecCaConfig {
                node_cert_expiry: expiry,
                external_cas: external.then(|| {
                    vec![flotilla_store::models::SwarmSpecCaConfigExternalCas {
                        url: Some("https://ca.example:8888".into()),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let hour = 3_600_000_000_000;
        for bad in [hour - 1, 60_000_000_000, -1] {
            let err = check_ca(&spec(Some(bad), false)).unwrap_err();
            assert_eq!(
                err.to_string(),
                "minimum certificate expiry time is: 1h0m0s"
            );
        }
        for good in [None, Some(0), Some(hour), Some(90 * 24 * hour)] {
            assert!(check_ca(&spec(good, false)).is_ok(), "{good:?}");
        }
        let err = check_ca(&spec(None, true)).unwrap_err().to_string();
        assert!(err.contains("external CAs are not supported"), "{err}");
    }

    #[test]
    fn address_pools_are_checked_and_defaulted() {
        let d = NetworkDefaults::default().checked().unwrap();
        assert_eq!(d, (vec!["10.0.0.0/8".to_string()], 24, 4789));
        let d = NetworkDefaults {
            default_addr_pool: vec!["10.20.0.0/16".into(), "172.28.0.0/14".into()],
            subnet_size: 26,
            data_path_port: 7789,
        };
        assert_eq!(
            d.checked().unwrap(),
            (
                vec!["10.20.0.0/16".into(), "172.28.0.0/14".into()],
                26,
                7789
            )
        );
        let bad = |pools: &[&str], size: u32, port: u32| {
            NetworkDefaults {
                default_addr_pool: pools.iter().map(|p| p.to_string()).collect(),
                subnet_size: size,
                data_path_port: port,
            }
            .checked()
            .unwrap_err()
            .to_string()
        };
        assert!(bad(&["10.20.0.0"], 0, 0).contains("invalid default address pool \"10.20.0.0\""));
        assert!(bad(&["10.20.0.0/16"], 8, 0).contains("between 16"));
        assert!(bad(&[], 30, 0).contains("mask length 30"));
        assert!(bad(&[], 0, 80).contains("data path port 80"));
    }

    fn rustls_pem(pem: &str) -> Vec<u8> {
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64_decode(&b64)
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let (mut buf, mut bits) = (0u32, 0);
        for c in s.bytes().filter(|c| *c != b'=') {
            let v = T.iter().position(|t| *t == c).unwrap() as u32;
            buf = (buf << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((buf >> bits) as u8);
            }
        }
        out
    }
}
