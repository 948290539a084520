//! Raft between managers over gRPC. openraft's messages are sent as JSON;
//! the server side answers with the local Raft's `Result`, serialized the
//! same way, so openraft sees exactly the errors the remote Raft returned.

use std::time::Duration;

use flotilla_store::raft::Peer;
use flotilla_store::raft::{NodeId, Raft, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::auth::raft_member;
use crate::pb;
use crate::pb::raft_client::RaftClient;
use crate::peers::Peers;
use crate::{from_json, to_json};

/// How long a connection attempt to a peer may take; a dead peer must not
/// hold up heartbeats to the others.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long an append that carries entries may take (see `append_entries`).
const APPEND_TIMEOUT: Duration = Duration::from_secs(2);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a follower may take to install a whole snapshot.
const SNAPSHOT_INSTALL_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest append sent as one message; well under [`crate::MAX_MESSAGE`].
const APPEND_LIMIT: usize = 16 << 20;

/// A snapshot chunk on the wire: its header as JSON and its bytes as they
/// are (JSON would write them as an array of numbers, four times larger).
/// The message is the header's length (4 bytes, big-endian), the header,
/// then the chunk.
pub mod snapshot_chunk {
    use flotilla_store::raft::{NodeId, TypeConfig};
    use openraft::raft::InstallSnapshotRequest;
    use openraft::{SnapshotMeta, Vote};
    use serde::{Deserialize, Serialize};
    use tonic::Status;

    use crate::pb;

    #[derive(Serialize, Deserialize)]
    struct Header {
        vote: Vote<NodeId>,
        meta: SnapshotMeta<NodeId, flotilla_store::raft::Peer>,
        offset: u64,
        done: bool,
    }

    pub fn encode(rpc: &InstallSnapshotRequest<TypeConfig>) -> Result<pb::Json, String> {
        let header = serde_json::to_vec(&Header {
            vote: rpc.vote,
            meta: rpc.meta.clone(),
            offset: rpc.offset,
            done: rpc.done,
        })
        .map_err(|e| format!("encoding a snapshot chunk: {e}"))?;
        let len =
            u32::try_from(header.len()).map_err(|_| "snapshot header too large".to_string())?;
        let mut data = Vec::with_capacity(4 + header.len() + rpc.data.len());
        data.extend_from_slice(&len.to_be_bytes());
        data.extend_from_slice(&header);
        data.extend_from_slice(&rpc.data);
        Ok(pb::Json { data })
    }

    pub fn decode(msg: &pb::Json) -> Result<InstallSnapshotRequest<TypeConfig>, Status> {
        let bad =
            |what: &str| Status::invalid_argument(format!("decoding a snapshot chunk: {what}"));
        let (len, rest) = msg
            .data
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("truncated"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(bad("truncated header"));
        }
        let (header, chunk) = rest.split_at(len);
        let h: Header = serde_json::from_slice(header).map_err(|e| bad(&e.to_string()))?;
        Ok(InstallSnapshotRequest {
            vote: h.vote,
            meta: h.meta,
            offset: h.offset,
            data: chunk.to_vec(),
            done: h.done,
        })
    }
}

/// Creates a client per peer; openraft keeps one per replication stream.
/// Without `peers` (tests of Raft alone) it speaks plain-text gRPC.
#[derive(Clone, Default)]
pub struct GrpcNetwork {
    pub peers: Option<Peers>,
}

pub struct GrpcPeer {
    target: NodeId,
    addr: String,
    peers: Option<Peers>,
    client: Result<RaftClient<Channel>, String>,
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcPeer;

    async fn new_client(&mut self, target: NodeId, node: &Peer) -> GrpcPeer {
        let client = match &self.peers {
            Some(peers) => peers
                .channel(&node.addr)
                .map(RaftClient::new)
                .map_err(|s| s.message().to_string()),
            None => Endpoint::from_shared(format!("http://{}", node.addr))
                .map(|e| e.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true))
                .map(|e| RaftClient::new(e.connect_lazy()))
                .map_err(|e| format!("bad address {} for raft peer {target}: {e}", node.addr)),
        };
        GrpcPeer {
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
            client,
        }
    }
}

impl GrpcPeer {
    /// Sends one request and decodes the remote Raft's `Result`.
    async fn call<Req, Resp, E>(
        &mut self,
        req: &Req,
        ttl: Duration,
        send: impl AsyncFnOnce(RaftClient<Channel>, pb::Json) -> Result<Response<pb::Json>, Status>,
    ) -> Result<Resp, RPCError<NodeId, Peer, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let msg = to_json(req).map_err(|s| RPCError::Network(NetworkError::new(&s)))?;
        self.send(msg, ttl, None, send).await
    }

    /// Sends an encoded request and decodes the remote Raft's `Result`.
    /// `smaller` is what to ask of openraft when the peer says the message
    /// was too large for it (fewer entries), if anything can be smaller.
    async fn send<Resp, E>(
        &mut self,
        msg: pb::Json,
        ttl: Duration,
        smaller: Option<PayloadTooLarge>,
        send: impl AsyncFnOnce(RaftClient<Channel>, pb::Json) -> Result<Response<pb::Json>, Status>,
    ) -> Result<Resp, RPCError<NodeId, Peer, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(
                    &std::io::Error::other(e.clone()),
                )))
            }
        };
        let resp = tokio::time::timeout(ttl, send(client, msg))
            .await
            .map_err(|_| {
                RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!(
                    "raft peer {} did not answer within {:?}",
                    self.target, ttl
                ))))
            })?
            .map_err(|s| {
                let e =
                    std::io::Error::other(format!("raft peer {}: {}", self.target, s.message()));
                match (s.code(), smaller) {
                    // Too large for the peer: not a reason to back off,
                    // and no retry of the same message can succeed.
                    (tonic::Code::ResourceExhausted | tonic::Code::OutOfRange, Some(smaller)) => {
                        RPCError::PayloadTooLarge(smaller)
                    }
                    (tonic::Code::ResourceExhausted | tonic::Code::OutOfRange, None) => {
                        RPCError::Network(NetworkError::new(&e))
                    }
                    // The peer refused this node (not a member): retrying
                    // soon will not change that.
                    (tonic::Code::PermissionDenied, _) => RPCError::Network(NetworkError::new(&e)),
                    // The peer is down or unreachable: tell openraft to back off.
                    _ => RPCError::Unreachable(Unreachable::new(&e)),
                }
            })?;
        if let Some(p) = &self.peers {
            p.answered(&self.addr);
        }
        let result: Result<Resp, RaftError<NodeId, E>> =
            from_json(resp.get_ref()).map_err(|s| RPCError::Network(NetworkError::new(&s)))?;
        result.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for GrpcPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Peer, RaftError<NodeId>>> {
        // openraft gives every append the heartbeat interval (100 ms). An
        // append that carries entries (a burst of writes, a follower
        // catching up) can take longer on a busy manager; cut short, it
        // counts as an unreachable peer, replication backs off, and the
        // leader refuses writes for want of a quorum.
        // A heartbeat gets a little more than its interval too: a follower
        // busy applying answers late, which is not being gone.
        let ttl = if rpc.entries.is_empty() {
            option.hard_ttl().max(HEARTBEAT_TIMEOUT)
        } else {
            option.hard_ttl().max(APPEND_TIMEOUT)
        };
        // Entries are at most about 1 MiB each (the store splits larger
        // proposals), but many of them make a message too large: ask
        // openraft to send fewer, in proportion.
        let entries = rpc.entries.len() as u64;
        let msg = to_json(&rpc).map_err(|s| RPCError::Network(NetworkError::new(&s)))?;
        let size = msg.data.len();
        if size > APPEND_LIMIT && entries > 1 {
            let hint = (entries * APPEND_LIMIT as u64 / size as u64).clamp(1, entries - 1);
            return Err(PayloadTooLarge::new_entries_hint(hint).into());
        }
        let smaller = (entries > 1).then(|| PayloadTooLarge::new_entries_hint(entries / 2));
        self.send(msg, ttl, smaller, async |mut c, m| {
            c.append_entries(m).await
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Peer, RaftError<NodeId, InstallSnapshotError>>,
    > {
        // The last chunk is answered once the follower has installed the
        // whole snapshot (decoded, indexed, stored): that takes seconds
        // for a large swarm, and cut short it would be sent again, and
        // again, from the start.
        let ttl = if rpc.done {
            SNAPSHOT_INSTALL_TIMEOUT
        } else {
            option.hard_ttl().max(APPEND_TIMEOUT)
        };
        let msg = snapshot_chunk::encode(&rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        self.send(msg, ttl, None, async |mut c, m| c.install_snapshot(m).await)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Peer, RaftError<NodeId>>> {
        self.call(&rpc, option.hard_ttl(), async |mut c, m| c.vote(m).await)
            .await
    }
}

/// The server side: hands each message to the local Raft. With a cluster
/// ID, only managers of that swarm may call (a worker certificate cannot
/// join Raft); without one (tests of Raft alone) anyone may.
pub struct RaftService {
    raft: Raft,
    cluster_id: Option<String>,
}

impl RaftService {
    pub fn new(raft: Raft) -> pb::raft_server::RaftServer<RaftService> {
        pb::raft_server::RaftServer::new(RaftService {
            raft,
            cluster_id: None,
        })
        .max_decoding_message_size(crate::MAX_MESSAGE)
        .max_encoding_message_size(crate::MAX_MESSAGE)
    }

    /// Raft's own membership decides who is a peer (a joining manager's
    /// store is empty until Raft fills it): see [`raft_member`].
    pub fn authorized(raft: Raft, cluster_id: String) -> pb::raft_server::RaftServer<RaftService> {
        pb::raft_server::RaftServer::new(RaftService {
            raft,
            cluster_id: Some(cluster_id),
        })
        .max_decoding_message_size(crate::MAX_MESSAGE)
        .max_encoding_message_size(crate::MAX_MESSAGE)
    }

    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match &self.cluster_id {
            Some(cluster) => raft_member(req, &self.raft, cluster).map(|_| ()),
            None => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(&self, req: Request<pb::Json>) -> Result<Response<pb::Json>, Status> {
        self.check(&req)?;
        let rpc: AppendEntriesRequest<TypeConfig> = from_json(req.get_ref())?;
        let result = self.raft.append_entries(rpc).await;
        to_json(&result).map(Response::new)
    }

    async fn vote(&self, req: Request<pb::Json>) -> Result<Response<pb::Json>, Status> {
        self.check(&req)?;
        let rpc: VoteRequest<NodeId> = from_json(req.get_ref())?;
        let result = self.raft.vote(rpc).await;
        to_json(&result).map(Response::new)
    }

    async fn install_snapshot(&self, req: Request<pb::Json>) -> Result<Response<pb::Json>, Status> {
        self.check(&req)?;
        let rpc = snapshot_chunk::decode(req.get_ref())?;
        let result = self.raft.install_snapshot(rpc).await;
        to_json(&result).map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_chunks_carry_their_bytes_as_they_are() {
        let membership = openraft::Membership::new(
            vec![std::collections::BTreeSet::from([1])],
            std::collections::BTreeMap::from([(
                1,
                Peer {
                    addr: "10.0.0.1:2377".into(),
                    node_id: "n1".into(),
                },
            )]),
        );
        let rpc = InstallSnapshotRequest::<TypeConfig> {
            vote: openraft::Vote::new_committed(3, 1),
            meta: openraft::SnapshotMeta {
                last_log_id: Some(openraft::LogId::new(
                    openraft::CommittedLeaderId::new(3, 1),
                    42,
                )),
                last_membership: openraft::StoredMembership::new(None, membership),
                snapshot_id: "s1".into(),
            },
            offset: 1 << 20,
            data: (0..=255u8).cycle().take(100_000).collect(),
            done: true,
        };
        let msg = snapshot_chunk::encode(&rpc).unwrap();
        // The bytes themselves, plus a small header: not four times larger.
        assert!(msg.data.len() < rpc.data.len() + 1024, "{}", msg.data.len());
        assert_eq!(snapshot_chunk::decode(&msg).unwrap(), rpc);
        for cut in [0, 3, 10] {
            let short = pb::Json {
                data: msg.data[..cut].to_vec(),
            };
            assert!(snapshot_chunk::decode(&short).is_err());
        }
    }
}
