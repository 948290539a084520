//! Control between managers: followers' writes carried to the leader, and
//! a joined manager added to Raft.

use std::collections::BTreeSet;

use flotilla_store::raft::{Peer, Request as Proposal};
use flotilla_store::store::ForwardError;
use flotilla_store::{Op, Store, StoreError};
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use tonic::{Request, Response, Status};

use crate::auth::manager;
use crate::error::{store_status, typed};
use crate::messages::{AddManager, ProposeReply};
use crate::pb;
use crate::pb::control_client::ControlClient;
use crate::peers::Peers;
use crate::{from_json, to_json};

pub struct ControlService {
    store: Store,
    peers: Peers,
}

impl ControlService {
    pub fn new(store: Store, peers: Peers) -> pb::control_server::ControlServer<ControlService> {
        pb::control_server::ControlServer::new(ControlService { store, peers })
            .max_decoding_message_size(crate::MAX_MESSAGE)
            .max_encoding_message_size(crate::MAX_MESSAGE)
    }
}

#[tonic::async_trait]
impl pb::control_server::Control for ControlService {
    async fn propose(&self, req: Request<pb::Json>) -> Result<Response<pb::Json>, Status> {
        manager(&req, &self.store)?;
        let p: Proposal = from_json(req.get_ref())?;
        // Only the leader answers; a stale forward learns who leads now.
        let reply = match self.store.is_leader() {
            true => self.store.propose(p.ops).await,
            false => Err(StoreError::NotLeader {
                leader: self.store.leader().map(|(_, peer)| peer.addr),
            }),
        };
        let reply = reply.map(|(index, results)| ProposeReply { index, results });
        to_json(&reply).map(Response::new)
    }

    async fn add_manager(&self, req: Request<pb::Json>) -> Result<Response<pb::Json>, Status> {
        let caller = manager(&req, &self.store)?;
        let mut add: AddManager = from_json(req.get_ref())?;
        if !self.store.is_leader() {
            let (_, leader) = self
                .store
                .leader()
                .ok_or_else(|| store_status(&StoreError::NoLeader))?;
            add.node_id.get_or_insert(caller.node_id);
            let mut c = ControlClient::new(self.peers.channel(&leader.addr)?);
            return c.add_manager(to_json(&add)?).await;
        }
        // Forwarded by another manager: the joining node must be a manager
        // of the store too.
        let node_id = match add.node_id.take() {
            Some(id) if id != caller.node_id => {
                let is_manager = self.store.read(|s| {
                    s.nodes
                        .get(&id)
                        .and_then(|n| n.spec.as_ref())
                        .and_then(|sp| sp.role)
                        == Some(flotilla_store::models::NodeSpecRoleEnum::MANAGER)
                });
                if !is_manager {
                    return Err(Status::permission_denied(format!(
                        "node {id} is not a manager of this swarm"
                    )));
                }
                id
            }
            _ => caller.node_id,
        };
        let raft = self.store.raft();
        let peer = Peer {
            addr: add.addr.clone(),
            node_id: node_id.clone(),
        };
        // Raft makes one membership change at a time: managers joining
        // together (`node promote a b`) wait for each other. The voter is
        // added to the voters of the moment, not to a set read earlier.
        let deadline = tokio::time::Instant::now() + MEMBERSHIP_WAIT;
        retry_in_progress(deadline, || {
            raft.add_learner(add.raft_id, peer.clone(), true)
        })
        .await
        .map_err(|e| Status::unavailable(format!("adding manager {} to raft: {e}", node_id)))?;
        let voter = BTreeSet::from([add.raft_id]);
        retry_in_progress(deadline, || {
            raft.change_membership(ChangeMembers::AddVoterIds(voter.clone()), false)
        })
        .await
        .map_err(|e| {
            Status::unavailable(format!("making manager {} a raft voter: {e}", node_id))
        })?;
        let status = flotilla_store::models::ManagerStatus {
            leader: None,
            reachability: Some(flotilla_store::models::Reachability::REACHABLE),
            addr: Some(add.addr.clone()),
        };
        self.store
            .propose_one(Op::SetManagerStatus {
                id: node_id.clone(),
                status: Some(status),
            })
            .await
            .map_err(|e| store_status(&e))?;
        tracing::info!(
            "manager {} ({}) joined raft as {}",
            node_id,
            add.addr,
            add.raft_id
        );
        to_json(&()).map(Response::new)
    }
}

/// How long a joining manager waits for another membership change.
const MEMBERSHIP_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

type MembershipError = RaftError<u64, ClientWriteError<u64, Peer>>;

/// Runs a membership change again while another one is in progress, up
/// to `deadline`.
async fn retry_in_progress<T, F, Fut>(
    deadline: tokio::time::Instant,
    mut change: F,
) -> Result<T, MembershipError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, MembershipError>>,
{
    loop {
        match change().await {
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(_),
            ))) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// Carries a follower's proposal to the leader.
pub struct GrpcForward {
    pub peers: Peers,
}

/// A [`Proposal`] of borrowed ops: the same JSON.
#[derive(serde::Serialize)]
struct ProposalOf<'a> {
    ops: &'a [Op],
}

#[async_trait::async_trait]
impl flotilla_store::store::Forward for GrpcForward {
    async fn propose(
        &self,
        leader: &Peer,
        ops: &[Op],
    ) -> Result<(u64, Vec<Result<(), StoreError>>), ForwardError> {
        let msg = to_json(&ProposalOf { ops }).map_err(|s| {
            ForwardError::NotSent(StoreError::LeaderUnreachable {
                leader: leader.addr.clone(),
                reason: s.message().to_string(),
            })
        })?;
        match self.send(&leader.addr, msg.clone()).await {
            // The manager taken for the leader no longer leads and named the
            // one that does; it applied nothing, so the write can go there.
            Err(ForwardError::Failed(StoreError::NotLeader { leader: Some(next) }))
                if next != leader.addr =>
            {
                self.send(&next, msg).await
            }
            reply => reply,
        }
    }
}

impl GrpcForward {
    async fn send(
        &self,
        addr: &str,
        msg: pb::Json,
    ) -> Result<(u64, Vec<Result<(), StoreError>>), ForwardError> {
        let unavailable = |reason: String| StoreError::LeaderUnreachable {
            leader: addr.to_string(),
            reason,
        };
        let channel = self
            .peers
            .connected(addr)
            .await
            .map_err(|s| ForwardError::NotSent(unavailable(s.message().to_string())))?;
        let resp = ControlClient::new(channel)
            .propose(msg)
            .await
            .map_err(|s| {
                self.peers.forget(addr);
                ForwardError::Failed(
                    typed(&s).unwrap_or_else(|| unavailable(s.message().to_string())),
                )
            })?;
        self.peers.answered(addr);
        let reply: Result<ProposeReply, StoreError> = from_json(resp.get_ref())
            .map_err(|s| ForwardError::Failed(unavailable(s.message().to_string())))?;
        reply
            .map(|r| (r.index, r.results))
            .map_err(ForwardError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_store::Kind;

    /// What a follower gets back from the leader: the reply, or the
    /// refusal, as the JSON the Propose RPC carries.
    fn over_the_wire(reply: Result<ProposeReply, StoreError>) -> Result<ProposeReply, StoreError> {
        from_json(&to_json(&reply).expect("encodes")).expect("decodes")
    }

    #[test]
    fn a_forwarded_writes_errors_keep_their_type() {
        let reply = Ok(ProposeReply {
            index: 7,
            results: vec![
                Ok(()),
                Err(StoreError::PortInUse {
                    port: 8080,
                    protocol: "tcp".into(),
                    service_name: "web".into(),
                    service_id: "s1".into(),
                }),
                Err(StoreError::OutOfSequence {
                    kind: Kind::Service,
                    id: "s1".into(),
                    expected: 4,
                    current: 5,
                }),
            ],
        });
        assert_eq!(over_the_wire(reply.clone()), reply);
        let refused = Err(StoreError::NotLeader {
            leader: Some("10.0.0.2:2377".into()),
        });
        assert_eq!(over_the_wire(refused.clone()), refused);
    }
}
