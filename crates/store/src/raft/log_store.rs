//! The Raft log, the vote and the committed index, in redb.
//!
//! redb's API is synchronous, so every call runs on a blocking thread.
//!
//! Appends are group-committed: `append` writes its entries in a commit
//! that is not synced and hands openraft's flush callback to the
//! [`Flusher`], a thread that makes everything written so far durable with
//! one synced commit and then reports every entry it covered as flushed.
//! openraft only counts an entry (for the leader's quorum, or in a
//! follower's reply) once its callback fired, so nothing is acknowledged
//! before it is on disk; meanwhile Raft goes on accepting writes, and all
//! those that arrive during one fsync share the next.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Condvar, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable};

use super::disk::{Disk, DiskError, Flush, LOG, META};
use super::{io_err, Entry, LogId, NodeId, StorageError, TypeConfig};

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
/// Written by each synced commit of the flusher, so it is never empty.
const FLUSHED: &str = "flushed";

#[derive(Clone)]
pub struct LogStore {
    disk: Arc<Disk>,
    /// Seals every entry before it is written (see `seal`).
    sealer: Arc<super::seal::Sealer>,
    flusher: Arc<Flusher>,
    /// The entries appended last, as they were appended.
    recent: Arc<Mutex<Recent>>,
    /// Where the committed index is told for the metrics.
    counters: Arc<crate::metrics::RaftCounters>,
    _close: Arc<CloseOnDrop>,
}

/// How much of the log's tail [`Recent`] keeps, counted in stored bytes.
/// An entry takes about 2.5 times its stored size in memory; 8 MiB is
/// many proposals of a busy leader, more than it applies or sends to a
/// follower that keeps up at a time (32 MiB was ~80 MiB of a manager with
/// 100,000 tasks).
const RECENT_BYTES: usize = 8 << 20;

/// The log's last entries in memory. openraft reads every entry back
/// right after appending it (to apply it, to send it to the followers);
/// served from here, that is a copy instead of a read, an unsealing and a
/// decoding of every entry, which at 100,000 tasks was a quarter of the
/// Raft loop's time. Always a contiguous run of indexes ending at the last
/// appended one.
#[derive(Default)]
struct Recent {
    entries: std::collections::VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Recent {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn push(&mut self, entry: Entry, size: usize) {
        let next = self.entries.back().map(|(e, _)| e.log_id.index + 1);
        if next.is_some_and(|n| n != entry.log_id.index) {
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += size;
        self.entries.push_back((entry, size));
        while self.bytes > RECENT_BYTES && self.entries.len() > 1 {
            if let Some((_, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    /// Forgets the entries from `index` on (a truncation).
    fn truncate(&mut self, index: u64) {
        while self
            .entries
            .back()
            .is_some_and(|(e, _)| e.log_id.index >= index)
        {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Forgets the entries up to `index` (a purge).
    fn purge(&mut self, index: u64) {
        while self.first().is_some_and(|first| first <= index) {
            if let Some((_, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    /// The entries `start..=end` (to the last for `None`), if all are here.
    fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry>> {
        let first = self.first()?;
        let last = first + self.entries.len() as u64 - 1;
        let end = end.unwrap_or(last);
        if end < start {
            return Some(Vec::new());
        }
        if start < first || end > last {
            return None;
        }
        let from = (start - first) as usize;
        let to = (end - first) as usize;
        Some(
            self.entries
                .range(from..=to)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

/// Callbacks of appends written but not yet synced, in append order.
#[derive(Default)]
struct Flusher {
    pending: Mutex<FlushQueue>,
    wake: Condvar,
}

#[derive(Default)]
struct FlushQueue {
    callbacks: Vec<LogFlushed<TypeConfig>>,
    /// The committed log id (encoded) openraft saved last, written with
    /// the next synced commit rather than in a commit of its own.
    committed: Option<Vec<u8>>,
    /// Set when the last `LogStore` handle is gone: the thread ends.
    closed: bool,
}

impl Flusher {
    fn lock(&self) -> std::sync::MutexGuard<'_, FlushQueue> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, callback: LogFlushed<TypeConfig>) {
        self.lock().callbacks.push(callback);
        self.wake.notify_one();
    }

    fn set_committed(&self, committed: Vec<u8>) {
        self.lock().committed = Some(committed);
    }

    /// The committed log id saved but not written yet.
    fn committed(&self) -> Option<Vec<u8>> {
        self.lock().committed.clone()
    }

    /// Syncs whatever was appended, then reports it, until closed. Holds
    /// the database only while syncing, so closing the store closes it.
    fn run(&self, disk: &std::sync::Weak<Disk>) {
        let mut seq: u64 = 0;
        loop {
            let (callbacks, committed) = {
                let mut q = self.lock();
                while q.callbacks.is_empty() && !q.closed {
                    q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                // Closed: a committed id still pending is let go (it is a
                // hint), so the thread never holds the file after its
                // store is gone (a reopen right after would find it open).
                if q.callbacks.is_empty() {
                    return;
                }
                (std::mem::take(&mut q.callbacks), q.committed.take())
            };
            seq += 1;
            let synced = match disk.upgrade() {
                Some(disk) => sync(&disk, seq, committed.as_deref()),
                None => Err(io_err("the Raft log is closed")),
            };
            for callback in callbacks {
                let result = match &synced {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io_err(e.to_string())),
                };
                callback.log_io_completed(result);
            }
        }
    }
}

/// One synced commit: makes every earlier unsynced commit durable too.
fn sync(disk: &Disk, seq: u64, committed: Option<&[u8]>) -> Result<(), std::io::Error> {
    disk.write(Flush::Now, |txn| {
        let mut meta = txn.open_table(META)?;
        meta.insert(FLUSHED, seq.to_le_bytes().as_slice())?;
        if let Some(committed) = committed {
            meta.insert(COMMITTED, committed)?;
        }
        Ok(())
    })
}

/// Ends the flusher thread once every handle of the log store is gone.
struct CloseOnDrop(Arc<Flusher>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.wake.notify_one();
    }
}

impl LogStore {
    pub(crate) fn new(
        disk: Arc<Disk>,
        sealer: Arc<super::seal::Sealer>,
        counters: Arc<crate::metrics::RaftCounters>,
    ) -> Result<Self, std::io::Error> {
        disk.write(Flush::Now, |txn| {
            txn.open_table(LOG)?;
            txn.open_table(META)?;
            Ok(())
        })?;
        let flusher = Arc::new(Flusher::default());
        let (thread_disk, thread_flusher) = (Arc::downgrade(&disk), flusher.clone());
        std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || thread_flusher.run(&thread_disk))?;
        Ok(Self {
            disk,
            sealer,
            _close: Arc::new(CloseOnDrop(flusher.clone())),
            flusher,
            recent: Arc::default(),
            counters,
        })
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, std::io::Error>
    where
        T: Send + 'static,
        F: FnOnce(&Disk) -> Result<T, std::io::Error> + Send + 'static,
    {
        let disk = self.disk.clone();
        tokio::task::spawn_blocking(move || f(&disk))
            .await
            .map_err(io_err)?
    }

    async fn get_meta<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>, std::io::Error> {
        self.blocking(move |disk| {
            disk.read(|db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(META)?;
                match table.get(key)? {
                    Some(v) => Ok(Some(
                        serde_json::from_slice(v.value()).map_err(DiskError::other)?,
                    )),
                    None => Ok(None),
                }
            })
        })
        .await
    }

    async fn put_meta<T: serde::Serialize>(
        &self,
        key: &'static str,
        value: &T,
    ) -> Result<(), std::io::Error> {
        let bytes = serde_json::to_vec(value).map_err(io_err)?;
        self.blocking(move |disk| {
            disk.write(Flush::Now, |txn| {
                txn.open_table(META)?.insert(key, bytes.as_slice())?;
                Ok(())
            })
        })
        .await
    }

    /// Writes the committed log id at once, synced: for a rewrite of the
    /// files while Raft is stopped (`recover`), which has no later append.
    pub(crate) async fn save_committed_now(
        &mut self,
        committed: Option<LogId>,
    ) -> Result<(), std::io::Error> {
        self.put_meta(COMMITTED, &committed).await
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn last_entry(db: &Database, sealer: &super::seal::Sealer) -> Result<Option<LogId>, DiskError> {
        let txn = db.begin_read()?;
        let table = txn.open_table(LOG)?;
        let last = match table.last()? {
            Some((_, v)) => {
                let plain = sealer.open(v.value()).map_err(DiskError::Other)?;
                let entry: Entry = serde_json::from_slice(&plain).map_err(DiskError::other)?;
                Some(entry.log_id)
            }
            None => None,
        };
        Ok(last)
    }
}

fn bounds(range: impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => Some(*e),
        Bound::Excluded(0) => return (1, Some(0)),
        Bound::Excluded(e) => Some(e - 1),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = bounds(range);
        if let Some(entries) = self.recent().get(start, end) {
            return Ok(entries);
        }
        let sealer = self.sealer.clone();
        self.blocking(move |disk| {
            disk.read(|db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(LOG)?;
                let mut out = Vec::new();
                if end.is_some_and(|e| e < start) {
                    return Ok(out);
                }
                let iter = match end {
                    Some(e) => table.range(start..=e),
                    None => table.range(start..),
                }?;
                for item in iter {
                    let (_, v) = item?;
                    let plain = sealer.open(v.value()).map_err(DiskError::Other)?;
                    out.push(serde_json::from_slice(&plain).map_err(DiskError::other)?);
                }
                Ok(out)
            })
        })
        .await
        .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self
            .get_meta(LAST_PURGED)
            .await
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let sealer = self.sealer.clone();
        let last = self
            .blocking(move |disk| disk.read(|db| Self::last_entry(db, &sealer)))
            .await
            .map_err(|e| StorageIOError::read_logs(&e))?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta(VOTE, vote)
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(VOTE)
            .await
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    /// Written with the next synced commit of the log (the flusher's),
    /// not in a commit of its own: one write fewer in Raft's loop per
    /// commit. A crash may lose the latest value, which only means fewer
    /// entries are re-applied at start until the leader commits again
    /// (openraft treats the saved committed id as a hint); every
    /// acknowledged write is in the synced log.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(&committed).map_err(|e| StorageIOError::write(&e))?;
        self.flusher.set_committed(bytes);
        if let Some(c) = committed {
            self.counters.committed(c.index);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let c: Option<Option<LogId>> = match self.flusher.committed() {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| StorageIOError::read(&e))?,
            None => self
                .get_meta(COMMITTED)
                .await
                .map_err(|e| StorageIOError::read(&e))?,
        };
        Ok(c.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut rows = Vec::new();
        let mut kept = Vec::new();
        for e in entries {
            let bytes = serde_json::to_vec(&e).map_err(|e| StorageIOError::write_logs(&e))?;
            let sealed = self
                .sealer
                .seal(&bytes)
                .map_err(|e| StorageIOError::write_logs(&e))?;
            rows.push((e.log_id.index, sealed));
            kept.push((e, bytes.len()));
        }
        // Waits out a full disk (see `disk`): an error here would stop Raft.
        let res = self.blocking(move |disk| disk.append(rows)).await;
        match res {
            Ok(()) => {
                let mut recent = self.recent();
                for (entry, size) in kept {
                    recent.push(entry, size);
                }
                drop(recent);
                self.flusher.push(callback);
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                callback.log_io_completed(Err(e));
                Err(StorageIOError::write_logs(&io_err(msg)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.recent().truncate(log_id.index);
        self.blocking(move |disk| {
            disk.write(Flush::Now, |txn| {
                txn.open_table(LOG)?.retain(|k, _| k < log_id.index)?;
                Ok(())
            })
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(&log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        self.recent().purge(log_id.index);
        self.blocking(move |disk| {
            disk.write(Flush::Now, |txn| {
                txn.open_table(META)?
                    .insert(LAST_PURGED, bytes.as_slice())?;
                txn.open_table(LOG)?.retain(|k, _| k > log_id.index)?;
                Ok(())
            })
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Blank,
        }
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|es| es.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn the_recent_tail_serves_whole_ranges_only() {
        let mut r = Recent::default();
        for i in 5..=9 {
            r.push(entry(i), 10);
        }
        assert_eq!(indexes(r.get(6, Some(8))), Some(vec![6, 7, 8]));
        assert_eq!(indexes(r.get(7, None)), Some(vec![7, 8, 9]));
        assert_eq!(indexes(r.get(4, Some(6))), None, "5.. only: the disk has 4");
        assert_eq!(indexes(r.get(8, Some(10))), None);
        // A truncation and a new append at the cut.
        r.truncate(8);
        assert_eq!(indexes(r.get(5, None)), Some(vec![5, 6, 7]));
        r.push(entry(8), 10);
        assert_eq!(indexes(r.get(8, Some(8))), Some(vec![8]));
        // A gap (the log was reset under it) starts the tail again.
        r.push(entry(20), 10);
        assert_eq!(indexes(r.get(8, Some(8))), None);
        assert_eq!(indexes(r.get(20, None)), Some(vec![20]));
        r.purge(20);
        assert_eq!(indexes(r.get(20, None)), None);
        assert_eq!(r.bytes, 0);
        // The budget keeps the newest.
        for i in 30..40 {
            r.push(entry(i), RECENT_BYTES / 4);
        }
        assert_eq!(r.first(), Some(36));
    }

    #[test]
    fn range_bounds() {
        assert_eq!(bounds(3..7), (3, Some(6)));
        assert_eq!(bounds(3..=7), (3, Some(7)));
        assert_eq!(bounds(3..), (3, None));
        assert_eq!(bounds(..0), (1, Some(0)));
    }
}
