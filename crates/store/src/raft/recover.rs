//! `swarm init --force-new-cluster`: a manager whose swarm lost its quorum
//! for good becomes the only member of its Raft group, keeping everything
//! it knows, as etcd's and SwarmKit's force-new-cluster do.
//!
//! Done on the files while Raft is stopped, with no entry proposed (there
//! is no quorum to commit one): every entry in the local log is applied
//! after the last snapshot (what this manager had appended is what it knew
//! of the swarm, committed or not), a snapshot of the result is written
//! whose membership is this manager alone, and the log is purged up to it.
//! The next Raft to open the directory elects itself at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{Membership, RaftLogReader, StoredMembership, Vote};

use super::disk::Disk;
use super::seal::{Sealer, UnlockKey};
use super::{LogStore, NodeId, Peer, StateMachine};

/// Rewrites the Raft state in `dir` so that `me` (Raft ID `raft_id`) is
/// its only voter. Returns how many tasks the recovered state holds.
pub async fn force_new_cluster(
    dir: &Path,
    unlock_key: Option<&UnlockKey>,
    raft_id: NodeId,
    me: Peer,
) -> anyhow::Result<usize> {
    let sealer = Arc::new(Sealer::load_or_create(dir, unlock_key)?);
    let path = dir.join("raft.redb");
    let disk = Arc::new(tokio::task::spawn_blocking(move || Disk::open(&path)).await??);
    let mut log = LogStore::new(disk.clone(), sealer.clone(), Default::default())?;
    let mut sm = StateMachine::open(disk.clone(), sealer)?;

    let (applied, _) = sm.applied_state().await?;
    let state = log.get_log_state().await?;
    let from = applied.map_or(0, |l| l.index + 1);
    if let Some(last) = state.last_log_id.filter(|l| l.index >= from) {
        let entries = log.try_get_log_entries(from..=last.index).await?;
        sm.apply(entries).await?;
    }
    let (last, _) = sm.applied_state().await?;
    let Some(last) = last else {
        anyhow::bail!("this manager's Raft log is empty: there is no swarm state to recover");
    };

    let alone = Membership::new(
        vec![BTreeSet::from([raft_id])],
        BTreeMap::from([(raft_id, me)]),
    );
    sm.set_membership(StoredMembership::new(Some(last), alone));
    sm.get_snapshot_builder().await.build_snapshot().await?;
    log.purge(last).await?;
    // A vote for itself in the last entry's term: the election that
    // follows is in a later term than anything in the log.
    log.save_vote(&Vote::new(last.leader_id.term, raft_id))
        .await?;
    log.save_committed_now(Some(last)).await?;
    Ok(sm.handle().read(|s| s.tasks.len()))
}
