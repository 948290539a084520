//! Who is calling: every RPC but the CA's join ones needs a certificate of
//! this swarm, for a node that is still a member, with the right role.
//!
//! A certificate's role (its OU) says what the node was when it was last
//! issued one, and it stays valid for its whole life: a demoted or removed
//! manager keeps a manager certificate until it expires. So the role that
//! counts is the one the node has now: the store's for control RPCs, Raft's
//! own membership for Raft's messages, both by the node ID the certificate
//! is bound to.

use flotilla_ca::{Identity, Role};
use flotilla_store::models::NodeSpecRoleEnum;
use flotilla_store::raft::Raft;
use flotilla_store::Store;
use tonic::{Request, Status};

use crate::transport::PeerCerts;

/// The caller's certificate identity: this swarm's (`cluster_id` is this
/// node's own, from its certificate, so it is known before the store has
/// caught up) and one of `roles`.
pub fn certified<T>(
    req: &Request<T>,
    cluster_id: &str,
    roles: &[Role],
) -> Result<Identity, Status> {
    let certs = req
        .extensions()
        .get::<PeerCerts>()
        .map(|p| p.certs.clone())
        .unwrap_or_default();
    flotilla_ca::authorize(&certs, roles, cluster_id).map_err(|e| {
        tracing::info!("refused an RPC: {e}");
        Status::permission_denied(e.to_string())
    })
}

fn refuse(msg: String) -> Status {
    tracing::info!("refused an RPC: {msg}");
    Status::permission_denied(msg)
}

/// [`certified`], and still a member: a node removed with `node rm` is refused.
pub fn caller<T>(req: &Request<T>, store: &Store, roles: &[Role]) -> Result<Identity, Status> {
    let cluster = store.read(flotilla_manager::ca::cluster_id);
    let id = certified(req, &cluster, roles)?;
    if !store.read(|s| s.nodes.contains_key(&id.node_id)) {
        return Err(refuse(format!(
            "node {} was removed from the swarm: join it again with `swarm join`",
            id.node_id
        )));
    }
    Ok(id)
}

/// [`caller`] with a manager certificate, and a manager now: a node demoted
/// since its certificate was issued is refused at once.
pub fn manager<T>(req: &Request<T>, store: &Store) -> Result<Identity, Status> {
    let id = caller(req, store, &[Role::Manager])?;
    let role = store.read(|s| {
        s.nodes
            .get(&id.node_id)
            .and_then(|n| n.spec.as_ref())
            .and_then(|sp| sp.role)
    });
    if role != Some(NodeSpecRoleEnum::MANAGER) {
        return Err(refuse(format!(
            "node {} is not a manager of this swarm",
            id.node_id
        )));
    }
    Ok(id)
}

/// [`certified`] as a manager, and a member of this node's Raft. A node
/// whose Raft knows no members yet (a manager joining, before the leader's
/// first message) takes any manager of the swarm: it cannot know better,
/// and it has no vote to give away.
pub fn raft_member<T>(req: &Request<T>, raft: &Raft, cluster_id: &str) -> Result<Identity, Status> {
    let id = certified(req, cluster_id, &[Role::Manager])?;
    let metrics = raft.metrics();
    let members = &metrics.borrow().membership_config;
    let mut nodes = members.membership().nodes().peekable();
    if nodes.peek().is_some() && !nodes.any(|(_, peer)| peer.node_id == id.node_id) {
        return Err(refuse(format!(
            "node {} is not a member of this swarm's Raft (removed or demoted)",
            id.node_id
        )));
    }
    Ok(id)
}
