//! The messages between nodes: every payload the cluster RPCs decode with
//! crates/rpc's `from_json` (a `Json` message's bytes), on the serving
//! side (Raft's AppendEntries, Vote and InstallSnapshot of the store's
//! `TypeConfig`, a follower's proposal of store `Op`s, adding a manager,
//! an agent's register, status batch and logs, a join or renewal) and on
//! the calling side (Raft's replies, the proposal's reply, register and
//! heartbeat replies, the agent's assignment stream, the CA's replies),
//! and the typed errors a `Status` carries in its details
//! (crates/rpc/src/error.rs).
//!
//! Each input is tried as every one of them. Decoding must never panic.
//! A payload that decodes is encoded again with `to_json`, and that must
//! decode too; where the type has `PartialEq`, to the same value.

#![no_main]

use std::fmt::Debug;

use flotilla_rpc::error::{status, typed};
use flotilla_rpc::messages::{
    AddManager, AgentUpdate, HeartbeatReply, HeartbeatRequest, JoinReply, JoinRequest,
    ProposeReply, RegisterReply, RegisterRequest, RenewReply, RenewRequest, RootCaReply,
    StatusBatch,
};
use flotilla_rpc::{from_json, pb, to_json};
use flotilla_store::logs::{LogChunk, LogRequest};
use flotilla_store::raft::{NodeId, Request as Proposal, TypeConfig};
use flotilla_store::StoreError;
use libfuzzer_sys::fuzz_target;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Decodes `msg` as `T`; a value that decodes, encoded again, decodes.
fn decode<T: Serialize + DeserializeOwned>(msg: &pb::Json) -> Option<(T, T)> {
    let value: T = from_json(msg).ok()?;
    let again = to_json(&value).expect("a decoded message encodes");
    let back: T = from_json(&again).unwrap_or_else(|e| {
        panic!(
            "{} re-encoded as {:?} does not decode: {e}",
            std::any::type_name::<T>(),
            String::from_utf8_lossy(&again.data)
        )
    });
    Some((value, back))
}

/// [`decode`], and the value decoded again is the same value.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(msg: &pb::Json) {
    if let Some((value, back)) = decode::<T>(msg) {
        assert_eq!(
            value,
            back,
            "{} changes across a round trip",
            std::any::type_name::<T>()
        );
    }
}

/// A typed error in a status's details, as the calling side reads it;
/// one that decodes is carried again the same way, to the same value.
fn status_round_trip<E>(details: &[u8])
where
    E: Serialize + DeserializeOwned + PartialEq + Debug + std::fmt::Display,
{
    let carried = tonic::Status::with_details(
        tonic::Code::Unavailable,
        "refused",
        bytes::Bytes::copy_from_slice(details),
    );
    if let Some(error) = typed::<E>(&carried) {
        let again = status(tonic::Code::Unavailable, &error);
        assert_eq!(typed::<E>(&again).as_ref(), Some(&error));
    }
}

fuzz_target!(|data: &[u8]| {
    let msg = pb::Json {
        data: data.to_vec(),
    };

    // Raft, serving side (crates/rpc/src/raft.rs).
    let _ = decode::<AppendEntriesRequest<TypeConfig>>(&msg);
    round_trip::<VoteRequest<NodeId>>(&msg);
    // A snapshot chunk is not JSON: a JSON header, then the raw bytes.
    if let Ok(chunk) = flotilla_rpc::raft::snapshot_chunk::decode(&msg) {
        let again = flotilla_rpc::raft::snapshot_chunk::encode(&chunk).expect("re-encodes");
        let back = flotilla_rpc::raft::snapshot_chunk::decode(&again).expect("decodes again");
        assert_eq!(back, chunk);
    }
    // Raft, calling side: the peer's answers.
    round_trip::<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>>(&msg);
    round_trip::<Result<VoteResponse<NodeId>, RaftError<NodeId>>>(&msg);
    round_trip::<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>>(
        &msg,
    );

    // Control between managers (crates/rpc/src/control.rs).
    let _ = decode::<Proposal>(&msg);
    round_trip::<Result<ProposeReply, StoreError>>(&msg);
    let _ = decode::<AddManager>(&msg);

    // The dispatcher and its agents (dispatcher.rs, agent.rs).
    let _ = decode::<RegisterRequest>(&msg);
    let _ = decode::<RegisterReply>(&msg);
    let _ = decode::<Option<HeartbeatRequest>>(&msg);
    let _ = decode::<HeartbeatReply>(&msg);
    round_trip::<StatusBatch>(&msg);
    round_trip::<LogChunk>(&msg);
    round_trip::<LogRequest>(&msg);
    round_trip::<bool>(&msg);
    if let Some((value, back)) = decode::<AgentUpdate>(&msg) {
        // AgentUpdate has no PartialEq; what it carries has.
        match (value, back) {
            (AgentUpdate::Tasks(a), AgentUpdate::Tasks(b)) => assert_eq!(a, b),
            (
                AgentUpdate::Changes {
                    updated: a,
                    removed: ra,
                },
                AgentUpdate::Changes {
                    updated: b,
                    removed: rb,
                },
            ) => assert_eq!((a, ra), (b, rb)),
            (AgentUpdate::Routes(a), AgentUpdate::Routes(b)) => assert_eq!(a, b),
            (AgentUpdate::Data(a), AgentUpdate::Data(b)) => assert_eq!(a, b),
            (AgentUpdate::Logs(a), AgentUpdate::Logs(b)) => assert_eq!(a, b),
            (a, b) => panic!("{a:?} decodes again as another kind of update: {b:?}"),
        }
    }

    // Joining and renewing (crates/rpc/src/ca.rs).
    let _ = decode::<JoinRequest>(&msg);
    let _ = decode::<JoinReply>(&msg);
    let _ = decode::<RenewRequest>(&msg);
    let _ = decode::<RenewReply>(&msg);
    let _ = decode::<RootCaReply>(&msg);

    // Typed errors in a status's details (error.rs): the store's, and the
    // manager's that a refused join carries.
    status_round_trip::<StoreError>(data);
    status_round_trip::<flotilla_manager::Error>(data);
});
