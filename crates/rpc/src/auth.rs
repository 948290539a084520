//! Who is calling: every RPC but the CA's join ones needs a certificate of
//! this swarm, for a node that is still a member, with the right role.

use flotilla_ca::{Identity, Role};
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

/// [`certified`], and still a member: a node removed with `node rm` is refused.
pub fn caller<T>(req: &Request<T>, store: &Store, roles: &[Role]) -> Result<Identity, Status> {
    let cluster = store.read(flotilla_manager::ca::cluster_id);
    let id = certified(req, &cluster, roles)?;
    if !store.read(|s| s.nodes.contains_key(&id.node_id)) {
        let msg = format!(
            "node {} was removed from the swarm: join it again with `swarm join`",
            id.node_id
        );
        tracing::info!("refused an RPC: {msg}");
        return Err(Status::permission_denied(msg));
    }
    Ok(id)
}
