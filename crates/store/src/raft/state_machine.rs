//! The state machine: applies committed entries to the in-memory [`State`]
//! and makes snapshots of it. The state itself lives in memory; on a
//! restart it comes back from the last snapshot (a file beside the log,
//! see [`snapshot_file`](super::snapshot_file)) plus the log entries after
//! it, which openraft re-applies.

use crate::metrics;
use std::io::{Cursor, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
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
use super::snapshot_file::{SnapshotReader, SnapshotWriter, SNAPSHOT_FILE};
use super::{io_err, Entry, LogId, NodeId, Peer, Response, StorageError, TypeConfig};
use crate::state::State;

const SNAPSHOT: &str = "snapshot";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    state: State,
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, Peer>,
}

/// A snapshot as versions before the snapshot file kept it in redb
/// (sealed), still read: [`FRAME`], the meta's JSON length (8 bytes,
/// big-endian), the meta as JSON, then the state's bytes as they are; or,
/// before that, this struct as JSON, the data as an array of numbers.
#[derive(Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Peer>,
    data: Vec<u8>,
}

const FRAME: &[u8] = b"FLSNAP2\n";

impl StoredSnapshot {
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
    /// The current snapshot's file.
    snapshot: PathBuf,
    /// Whether redb still holds a snapshot of an older version's (removed
    /// once a newer one is in the file).
    legacy: AtomicBool,
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
        let start = std::time::Instant::now();
        let guard = self.0.applied.read().unwrap_or_else(|p| p.into_inner());
        let r = f(&guard.state);
        drop(guard);
        metrics::observe_since(&metrics::METRICS.read_tx, start);
        r
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

/// What a new snapshot holds: the state, encoded as it is written, or
/// the state's JSON as a leader sent it.
enum Content {
    State(Box<Applied>),
    Json(Vec<u8>),
}

impl Shared {
    /// Writes `meta` and `content` as the current snapshot, on a blocking
    /// thread: encoding 100,000 tasks takes seconds of CPU, and a stalled
    /// runtime left the nodes' keepalive pings unanswered.
    async fn save(
        self: &Arc<Self>,
        meta: &SnapshotMeta<NodeId, Peer>,
        content: Content,
    ) -> Result<(), StorageError> {
        let signature = meta.signature();
        let failed =
            |e: std::io::Error| StorageIOError::write_snapshot(Some(signature.clone()), &e);
        let meta = serde_json::to_vec(meta).map_err(|e| failed(io_err(e)))?;
        let shared = self.clone();
        tokio::task::spawn_blocking(move || shared.write_snapshot(&meta, content))
            .await
            .map_err(|e| failed(io_err(e)))?
            .map_err(|e| failed(e).into())
    }

    fn write_snapshot(&self, meta: &[u8], content: Content) -> std::io::Result<()> {
        let what = format!("the snapshot {}", self.snapshot.display());
        self.disk.write_beside(&what, || {
            let mut file = SnapshotWriter::create(&self.snapshot, self.sealer.clone(), meta)?;
            match &content {
                Content::State(applied) => {
                    serde_json::to_writer(&mut file, applied).map_err(io_err)?
                }
                Content::Json(json) => file.write_all(json)?,
            }
            file.finish()
        })?;
        if self.legacy.swap(false, Ordering::Relaxed) {
            self.disk.write(Flush::Now, |txn| {
                txn.open_table(META)?.remove(SNAPSHOT)?;
                Ok(())
            })?;
        }
        Ok(())
    }

    /// The current snapshot, read whole: from its file, or from redb where
    /// an older version left it (then `legacy`).
    fn load(&self) -> std::io::Result<Option<StoredSnapshot>> {
        if let Some((meta, state)) = SnapshotReader::open(&self.snapshot, self.sealer.clone())? {
            let meta = serde_json::from_slice(&meta).map_err(io_err)?;
            return Ok(Some(StoredSnapshot {
                meta,
                data: state.read_all()?,
            }));
        }
        let legacy = load_legacy_snapshot(&self.disk, &self.sealer)?;
        self.legacy.store(legacy.is_some(), Ordering::Relaxed);
        Ok(legacy)
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
        let (index_tx, _) = watch::channel(0);
        let shared = Shared {
            applied: RwLock::new(Applied::default()),
            snapshot: disk.path().with_file_name(SNAPSHOT_FILE),
            disk,
            sealer,
            legacy: AtomicBool::new(false),
            index_tx,
            nodes: NodeWatch::default(),
        };
        if let Some(snap) = shared.load()? {
            let mut applied: Applied = serde_json::from_slice(&snap.data).map_err(io_err)?;
            applied.state.rebuild_indexes();
            shared
                .index_tx
                .send_replace(applied.last_applied.map(|l| l.index).unwrap_or(0));
            *shared.applied.write().unwrap_or_else(|p| p.into_inner()) = applied;
        }
        Ok(Self(Arc::new(shared)))
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

fn load_legacy_snapshot(
    disk: &Disk,
    sealer: &Sealer,
) -> Result<Option<StoredSnapshot>, std::io::Error> {
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

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let start = std::time::Instant::now();
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
        let snapshot_id = match last {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, rand::random::<u32>()),
            None => format!("empty-{}", rand::random::<u32>()),
        };
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id,
        };
        self.0
            .save(&meta, Content::State(Box::new(applied)))
            .await?;
        metrics::observe_since(&metrics::METRICS.snapshot, start);
        // The state was encoded straight into the file, and openraft
        // (pinned to 0.9.25) keeps only the meta of a snapshot it had built
        // (core/sm/worker.rs); a follower that needs the data is sent it
        // through `get_current_snapshot`, which reads the file.
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
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
            let locked = std::time::Instant::now();
            for entry in entries {
                a.last_applied = Some(entry.log_id);
                let index = entry.log_id.index;
                match entry.payload {
                    EntryPayload::Blank => responses.push(Response::default()),
                    EntryPayload::Normal(req) => {
                        let start = std::time::Instant::now();
                        let results = req
                            .ops
                            .into_iter()
                            .map(|op| a.state.apply(index, op))
                            .collect();
                        metrics::observe_since(&metrics::METRICS.write_tx, start);
                        responses.push(Response { results });
                    }
                    EntryPayload::Membership(m) => {
                        a.membership = StoredMembership::new(Some(entry.log_id), m);
                        responses.push(Response::default());
                    }
                }
            }
            let touched = a.state.take_touched_nodes();
            let last = a.last_applied.map(|l| l.index).unwrap_or(0);
            drop(a);
            metrics::observe_since(&metrics::METRICS.lock, locked);
            (last, touched)
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
        self.0.save(meta, Content::Json(data)).await?;
        let index = applied.last_applied.map(|l| l.index).unwrap_or(0);
        *self.write() = applied;
        self.0.index_tx.send_replace(index);
        self.0.nodes.tell(None, index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let shared = self.0.clone();
        let snap = tokio::task::spawn_blocking(move || shared.load())
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
    fn snapshots_older_versions_kept_in_redb_still_decode() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::load_or_create(dir.path(), None).unwrap();
        let meta_json = serde_json::to_vec(&meta()).unwrap();
        let mut framed = FRAME.to_vec();
        framed.extend_from_slice(&(meta_json.len() as u64).to_be_bytes());
        framed.extend_from_slice(&meta_json);
        framed.extend_from_slice(b"{\"state\":1}");
        let sealed = sealer.seal(&framed).unwrap();
        let back = StoredSnapshot::decode(sealer.open(&sealed).unwrap()).unwrap();
        assert_eq!(back.meta, meta());
        assert_eq!(back.data, b"{\"state\":1}");

        // Before the frame: the struct as JSON, bytes as numbers.
        let old = serde_json::json!({ "meta": meta(), "data": [1, 2, 255] });
        let back = StoredSnapshot::decode(serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(back.data, vec![1, 2, 255]);
        assert_eq!(back.meta.snapshot_id, "s-1");

        // A frame cut short is an error, not a panic.
        framed.truncate(FRAME.len() + 4);
        assert!(StoredSnapshot::decode(framed).is_err());
    }

    fn open(dir: &std::path::Path) -> StateMachine {
        let disk = Arc::new(Disk::create(&dir.join("raft.redb")).unwrap());
        let sealer = Arc::new(Sealer::load_or_create(dir, None).unwrap());
        StateMachine::open(disk, sealer).unwrap()
    }

    fn applied_index(sm: &StateMachine) -> Option<u64> {
        sm.0.applied.read().unwrap().last_applied.map(|l| l.index)
    }

    #[tokio::test]
    async fn a_snapshot_in_redb_loads_and_moves_to_the_file_on_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let log_id = openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), 42);
        {
            // As an older version left it: sealed, framed, in redb's meta table.
            let sm = open(dir.path());
            let applied = Applied {
                last_applied: Some(log_id),
                ..Applied::default()
            };
            let meta_json = serde_json::to_vec(&SnapshotMeta::<NodeId, Peer> {
                last_log_id: Some(log_id),
                ..meta()
            })
            .unwrap();
            let mut framed = FRAME.to_vec();
            framed.extend_from_slice(&(meta_json.len() as u64).to_be_bytes());
            framed.extend_from_slice(&meta_json);
            framed.extend_from_slice(&serde_json::to_vec(&applied).unwrap());
            let sealed = sm.0.sealer.seal(&framed).unwrap();
            sm.0.disk
                .write(Flush::Now, |txn| {
                    txn.open_table(META)?.insert(SNAPSHOT, sealed.as_slice())?;
                    Ok(())
                })
                .unwrap();
            sm.0.disk.close();
        }
        let mut sm = open(dir.path());
        assert_eq!(applied_index(&sm), Some(42));
        assert!(sm.0.legacy.load(Ordering::Relaxed));
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.last_log_id, Some(log_id));

        let built = sm.build_snapshot().await.unwrap();
        assert_eq!(built.meta.last_log_id, Some(log_id));
        assert!(dir.path().join(SNAPSHOT_FILE).exists());
        assert!(!sm.0.legacy.load(Ordering::Relaxed));
        assert!(load_legacy_snapshot(&sm.0.disk, &sm.0.sealer)
            .unwrap()
            .is_none());
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, built.meta);
        sm.0.disk.close();
        drop(sm);

        let sm = open(dir.path());
        assert_eq!(applied_index(&sm), Some(42));
    }
}
