//! The state machine: applies committed entries to the in-memory [`State`]
//! and makes snapshots of it. The state itself lives in memory; on a
//! restart it comes back from the last snapshot (kept in redb) plus the log
//! entries after it, which openraft re-applies.

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError, StoredMembership,
};
use redb::ReadableDatabase;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::disk::{Disk, DiskError, Flush, META};
use super::seal::Sealer;
use super::{io_err, Entry, LogId, NodeId, Peer, Response, StorageError, TypeConfig};
use crate::state::State;

const SNAPSHOT: &str = "snapshot";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    state: State,
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, Peer>,
}

/// A snapshot as kept in redb (sealed): [`FRAME`], the meta's JSON length
/// (8 bytes, big-endian), the meta as JSON, then the state's bytes as they
/// are. Versions before it wrote this struct as JSON, the data as an array
/// of numbers (four bytes of text a byte): still read.
#[derive(Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Peer>,
    data: Vec<u8>,
}

const FRAME: &[u8] = b"FLSNAP2\n";

impl StoredSnapshot {
    fn seal(&self, sealer: &Sealer) -> std::io::Result<Vec<u8>> {
        let meta = serde_json::to_vec(&self.meta).map_err(io_err)?;
        let len = (meta.len() as u64).to_be_bytes();
        sealer.seal_parts(&[FRAME, &len, &meta, &self.data])
    }

    fn decode(mut plain: Vec<u8>) -> std::io::Result<StoredSnapshot> {
        let Some(rest) = plain.strip_prefix(FRAME) else {
            return serde_json::from_slice(&plain).map_err(io_err);
        };
        let short = || io_err("a stored snapshot is truncated");
        let (len, rest) = rest.split_first_chunk::<8>().ok_or_else(short)?;
        let len = usize::try_from(u64::from_be_bytes(*len)).map_err(|_| short())?;
        let meta = rest.get(..len).ok_or_else(short)?;
        let meta = serde_json::from_slice(meta).map_err(io_err)?;
        // The data is the rest of the buffer: moved to its front, not copied.
        plain.drain(..FRAME.len() + 8 + len);
        Ok(StoredSnapshot { meta, data: plain })
    }
}

struct Shared {
    // A std lock: it is held only for in-memory work, never across an await.
    applied: RwLock<Applied>,
    /// Closed by `Store::shutdown`; handles to the state live on.
    disk: Arc<Disk>,
    /// Seals snapshots before they are written (see `seal`).
    sealer: Arc<Sealer>,
    /// The last applied log index, for controllers and waiters to watch.
    index_tx: watch::Sender<u64>,
    /// Per node, the last index that changed its tasks: a node's
    /// assignment stream wakes for its own tasks, not for every commit
    /// (1,000 streams woken per commit were most of a busy leader's work).
    nodes: NodeWatch,
}

#[derive(Default)]
struct NodeWatch(std::sync::Mutex<std::collections::HashMap<String, watch::Sender<u64>>>);

impl NodeWatch {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, watch::Sender<u64>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subscribe(&self, node: &str, index: u64) -> watch::Receiver<u64> {
        let mut nodes = self.lock();
        nodes.retain(|_, tx| tx.receiver_count() > 0);
        nodes
            .entry(node.to_string())
            .or_insert_with(|| watch::Sender::new(index))
            .subscribe()
    }

    /// Wakes the streams of `touched` (every stream for `None`).
    fn tell(&self, touched: Option<Vec<String>>, index: u64) {
        let nodes = self.lock();
        match touched {
            None => nodes.values().for_each(|tx| {
                tx.send_replace(index);
            }),
            Some(touched) => {
                for node in touched {
                    if let Some(tx) = nodes.get(&node) {
                        tx.send_replace(index);
                    }
                }
            }
        }
    }
}

/// A cheap handle to read the state machine from outside Raft.
#[derive(Clone)]
pub struct StateMachineHandle(Arc<Shared>);

impl StateMachineHandle {
    /// Runs `f` on the applied state under its read lock. `f` must not
    /// read the store again: a second read on the same thread waits behind
    /// any writer queued meanwhile, which waits for the first: a deadlock
    /// (it stalled the manager at 1,000 nodes). Debug builds panic instead.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let _reading = ReadGuard::enter();
        let guard = self.0.applied.read().unwrap_or_else(|p| p.into_inner());
        f(&guard.state)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.index_tx.subscribe()
    }

    /// Changes whenever a commit touches a task on `node` (or reloads the
    /// state). Subscribe before reading what it guards.
    pub fn subscribe_node(&self, node: &str) -> watch::Receiver<u64> {
        self.0.nodes.subscribe(node, *self.0.index_tx.borrow())
    }
}

impl Shared {
    /// Seals and stores `snap` as the current snapshot; gives it back.
    async fn save(&self, snap: StoredSnapshot) -> Result<StoredSnapshot, StorageError> {
        let signature = snap.meta.signature();
        save_snapshot(self.disk.clone(), self.sealer.clone(), snap)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e).into())
    }
}

#[cfg(debug_assertions)]
thread_local! {
    static READING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as inside [`StateMachineHandle::read`] (debug builds).
struct ReadGuard;

impl ReadGuard {
    fn enter() -> Self {
        #[cfg(debug_assertions)]
        READING.with(|r| {
            assert!(
                !r.replace(true),
                "the store was read from inside a read of the store (this can deadlock)"
            )
        });
        ReadGuard
    }
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        #[cfg(debug_assertions)]
        READING.with(|r| r.set(false));
    }
}

pub struct StateMachine(Arc<Shared>);

impl StateMachine {
    /// Opens the state machine, loading the last snapshot if there is one.
    pub(crate) fn open(disk: Arc<Disk>, sealer: Arc<Sealer>) -> Result<Self, std::io::Error> {
        let mut applied = Applied::default();
        if let Some(snap) = load_snapshot(&disk, &sealer)? {
            applied = serde_json::from_slice(&snap.data).map_err(io_err)?;
            applied.state.rebuild_indexes();
        }
        let index = applied.last_applied.map(|l| l.index).unwrap_or(0);
        let (index_tx, _) = watch::channel(index);
        Ok(Self(Arc::new(Shared {
            applied: RwLock::new(applied),
            disk,
            sealer,
            index_tx,
            nodes: NodeWatch::default(),
        })))
    }

    /// Replaces the membership the state machine reports (force-new-cluster
    /// only: Raft is stopped).
    pub(crate) fn set_membership(&self, membership: StoredMembership<NodeId, Peer>) {
        self.write().membership = membership;
    }

    pub fn handle(&self) -> StateMachineHandle {
        StateMachineHandle(self.0.clone())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        #[cfg(debug_assertions)]
        READING.with(|r| assert!(!r.get(), "the store was written from inside a read of it"));
        self.0.applied.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn load_snapshot(disk: &Disk, sealer: &Sealer) -> Result<Option<StoredSnapshot>, std::io::Error> {
    disk.read(|db| {
        let txn = db.begin_read()?;
        let table = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match table.get(SNAPSHOT)? {
            Some(v) => {
                let plain = sealer.open(v.value()).map_err(DiskError::Other)?;
                Ok(Some(
                    StoredSnapshot::decode(plain).map_err(DiskError::Other)?,
                ))
            }
            None => Ok(None),
        }
    })
}

/// Encoding and sealing a snapshot of 100,000 tasks takes seconds of CPU:
/// all of it happens on a blocking thread, never on the runtime's (whose
/// stall let the nodes' keepalive pings go unanswered).
async fn save_snapshot(
    disk: Arc<Disk>,
    sealer: Arc<Sealer>,
    snap: StoredSnapshot,
) -> Result<StoredSnapshot, std::io::Error> {
    tokio::task::spawn_blocking(move || {
        let bytes = snap.seal(&sealer)?;
        disk.write(Flush::Now, |txn| {
            txn.open_table(META)?.insert(SNAPSHOT, bytes.as_slice())?;
            Ok(())
        })?;
        Ok(snap)
    })
    .await
    .map_err(io_err)?
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // A copy taken under the lock, encoded outside it: encoding held
        // the lock for seconds at 100,000 tasks, and every write waited,
        // and every read queued behind the waiting write.
        let applied = {
            let a = self.0.applied.read().unwrap_or_else(|p| p.into_inner());
            Applied {
                state: a.state.stored_copy(),
                last_applied: a.last_applied,
                membership: a.membership.clone(),
            }
        };
        let (last, membership) = (applied.last_applied, applied.membership.clone());
        let data = tokio::task::spawn_blocking(move || serde_json::to_vec(&applied))
            .await
            .map_err(|e| StorageIOError::read_state_machine(&io_err(e)))?
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        let snapshot_id = match last {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, rand::random::<u32>()),
            None => format!("empty-{}", rand::random::<u32>()),
        };
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let stored = self.0.save(stored).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, Peer>), StorageError> {
        let a = self.0.applied.read().unwrap_or_else(|p| p.into_inner());
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        let (last_index, touched) = {
            let mut a = self.write();
            for entry in entries {
                a.last_applied = Some(entry.log_id);
                let index = entry.log_id.index;
                match entry.payload {
                    EntryPayload::Blank => responses.push(Response::default()),
                    EntryPayload::Normal(req) => {
                        let results = req
                            .ops
                            .into_iter()
                            .map(|op| a.state.apply(index, op))
                            .collect();
                        responses.push(Response { results });
                    }
                    EntryPayload::Membership(m) => {
                        a.membership = StoredMembership::new(Some(entry.log_id), m);
                        responses.push(Response::default());
                    }
                }
            }
            let touched = a.state.take_touched_nodes();
            (a.last_applied.map(|l| l.index).unwrap_or(0), touched)
        };
        self.0.index_tx.send_replace(last_index);
        self.0.nodes.tell(touched, last_index);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachine(self.0.clone())
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Peer>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let signature = meta.signature();
        let (mut applied, data) = tokio::task::spawn_blocking(move || {
            let mut applied: Applied = serde_json::from_slice(&data)?;
            applied.state.rebuild_indexes();
            Ok::<_, serde_json::Error>((applied, data))
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(Some(signature.clone()), &io_err(e)))?
        .map_err(|e| StorageIOError::read_snapshot(Some(signature), &e))?;
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.0.save(stored).await?;
        let index = applied.last_applied.map(|l| l.index).unwrap_or(0);
        *self.write() = applied;
        self.0.index_tx.send_replace(index);
        self.0.nodes.tell(None, index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let disk = self.0.disk.clone();
        let sealer = self.0.sealer.clone();
        let snap = tokio::task::spawn_blocking(move || load_snapshot(&disk, &sealer))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &io_err(e)))?
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(snap.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta<NodeId, Peer> {
        SnapshotMeta {
            last_log_id: None,
            last_membership: StoredMembership::default(),
            snapshot_id: "s-1".into(),
        }
    }

    #[test]
    fn snapshots_round_trip_and_the_old_json_form_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::load_or_create(dir.path(), None).unwrap();
        let snap = StoredSnapshot {
            meta: meta(),
            data: b"{\"state\":1}".to_vec(),
        };
        let sealed = snap.seal(&sealer).unwrap();
        let back = StoredSnapshot::decode(sealer.open(&sealed).unwrap()).unwrap();
        assert_eq!(back.meta, snap.meta);
        assert_eq!(back.data, snap.data);

        // What earlier versions stored: the struct as JSON, bytes as numbers.
        let old = serde_json::json!({ "meta": meta(), "data": [1, 2, 255] });
        let back = StoredSnapshot::decode(serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(back.data, vec![1, 2, 255]);
        assert_eq!(back.meta.snapshot_id, "s-1");

        // A frame cut short is an error, not a panic.
        let mut plain = sealer.open(&sealed).unwrap();
        plain.truncate(FRAME.len() + 4);
        assert!(StoredSnapshot::decode(plain).is_err());
    }
}
