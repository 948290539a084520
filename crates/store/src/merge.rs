//! Concurrent writes merged into Raft entries. Each `client_write` is an
//! entry of its own: sealed, appended, applied and answered by itself, so
//! 64 clients creating services were 64 entries for every round of the
//! disk. Here a few entries are in flight at a time; writes that arrive
//! meanwhile wait in a queue and go in together as the next entry, each
//! with its own results (an entry's ops apply one by one, whoever sent
//! them). A lone writer waits for nothing.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::StoreError;
use crate::ops::Op;
use crate::raft::{NodeId, Raft, Request};

/// Entries in flight at once: while they are, writes gather for the next.
const IN_FLIGHT: usize = 4;
/// A merged entry stays under this (and under the caller's entry limit):
/// small writes merge, and one that
/// joins an orchestrator's batch of a hundred tasks does not wait for a
/// megabyte entry to be sealed, written and applied (at 5,000 nodes that
/// put creates' p99 over 500 ms).
const MERGE_LIMIT: usize = 256 << 10;

pub(crate) type Outcome = Result<(u64, Vec<Result<(), StoreError>>), Failed>;

/// Why a merged write did not commit.
#[derive(Debug, Clone)]
pub(crate) enum Failed {
    /// Raft answered that another manager leads (this one lost the lead
    /// since the caller checked).
    NotLeader,
    Raft(String),
}

struct Pending {
    ops: Vec<Op>,
    /// The ops' JSON size: merged entries are kept under a limit.
    size: usize,
    reply: oneshot::Sender<Outcome>,
}

#[derive(Clone)]
pub(crate) struct Merger {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Merger {
    /// Starts the merging task, whose entries stay under `entry_limit`
    /// bytes of JSON; it ends when every `Merger` is dropped.
    pub(crate) fn start(raft: Raft, entry_limit: usize) -> Merger {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(merge(raft, rx, MERGE_LIMIT.min(entry_limit)));
        Merger { tx }
    }

    /// Commits `ops` (of JSON size `size`) in an entry, maybe with others'.
    pub(crate) async fn write(&self, ops: Vec<Op>, size: usize) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let stopped = || Failed::Raft("the store is shut down".into());
        self.tx
            .send(Pending { ops, size, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn merge(raft: Raft, mut rx: mpsc::UnboundedReceiver<Pending>, limit: usize) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carried: Option<Pending> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut size = first.size;
        let mut group = vec![first];
        while let Ok(next) = rx.try_recv() {
            if size + next.size > limit {
                carried = Some(next);
                break;
            }
            size += next.size;
            group.push(next);
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, group).await;
            drop(slot);
        });
    }
}

async fn commit(raft: &Raft, group: Vec<Pending>) {
    let mut ops = Vec::with_capacity(group.iter().map(|p| p.ops.len()).sum());
    let mut waiting = Vec::with_capacity(group.len());
    for p in group {
        waiting.push((p.ops.len(), p.reply));
        ops.extend(p.ops);
    }
    let result: Result<_, RaftError<NodeId, ClientWriteError<NodeId, _>>> =
        raft.client_write(Request { ops }).await;
    match result {
        Ok(resp) => {
            let index = resp.log_id.index;
            let mut results = resp.data.results.into_iter();
            for (n, reply) in waiting {
                let _ = reply.send(Ok((index, results.by_ref().take(n).collect())));
            }
        }
        Err(e) => {
            let failed = match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Failed::NotLeader,
                e => Failed::Raft(e.to_string()),
            };
            for (_, reply) in waiting {
                let _ = reply.send(Err(failed.clone()));
            }
        }
    }
}
