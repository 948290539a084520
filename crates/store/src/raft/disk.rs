//! The database file under the Raft log and snapshots, kept usable through
//! I/O errors such as a full disk.
//!
//! After one failed write, redb refuses every later operation until the
//! database is closed and opened again. Returned to openraft, such an error
//! is fatal: Raft stops for good on that manager. So an operation that
//! fails with an I/O error does not return: it waits (the manager's Raft
//! waits with it, as it would for a slow disk) while the file is reopened
//! every second, and runs again once it opens. Meanwhile
//! [`Disk::unwritable`] says why, so that writes proposed on this manager
//! are refused at once instead of hanging.
//!
//! Log appends are committed without a sync (the flusher syncs them in
//! groups). A file reopened after an error has only what was synced, so the
//! rows appended since the last synced commit are kept here and written
//! again, in order, before anything else: openraft was told they were
//! written, and later reads and syncs count on them.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, Durability, TableDefinition, WriteTransaction};

/// The Raft log's entries, by index.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// The vote, the committed index, the last purged id, the snapshot.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

/// Written by each reopening, which must commit something to count.
const REOPENED: &str = "reopened";

/// How often a failed database is opened again.
const RETRY: Duration = Duration::from_secs(1);
/// How often a wait that goes on is logged again.
const REMIND: Duration = Duration::from_secs(30);

type Opener = Box<dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync>;

/// How one try of a write that waits for the disk went.
enum Attempt {
    Done,
    Again(String),
    /// The store was closed meanwhile: the wait ends.
    Closed,
}

pub(crate) struct Disk {
    path: PathBuf,
    open: Opener,
    /// `None` once closed. Every operation holds the read lock while it
    /// uses the database; reopening takes the write lock.
    db: RwLock<Option<Database>>,
    /// Log rows committed since the last synced commit, in commit order.
    /// Every write holds this lock across its transaction, so writes are
    /// ordered here as in the file (always taken before `db`).
    unsynced: Mutex<Vec<(u64, Vec<u8>)>>,
    /// Why the database cannot be written, while it cannot.
    failure: Mutex<Option<String>>,
}

/// What an operation on the database failed with.
#[derive(Debug)]
pub(crate) enum DiskError {
    /// From redb: an I/O error (or one before) means the file must be
    /// reopened; other kinds are returned as they are.
    Db(redb::Error),
    /// Not from the database (decoding, sealing): returned as it is.
    Other(std::io::Error),
}

impl<E: Into<redb::Error>> From<E> for DiskError {
    fn from(e: E) -> Self {
        DiskError::Db(e.into())
    }
}

impl DiskError {
    pub(crate) fn other(e: impl std::fmt::Display) -> Self {
        DiskError::Other(super::io_err(e))
    }

    fn needs_reopen(&self) -> bool {
        matches!(
            self,
            DiskError::Db(redb::Error::Io(_) | redb::Error::PreviousIo)
        )
    }

    fn into_io(self) -> std::io::Error {
        match self {
            DiskError::Db(e) => super::io_err(e),
            DiskError::Other(e) => e,
        }
    }
}

impl std::fmt::Display for DiskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiskError::Db(e) => e.fmt(f),
            DiskError::Other(e) => e.fmt(f),
        }
    }
}

/// redb's page cache. Its default (1 GiB) fills with every entry read
/// back to be applied and kept the whole log resident: 100,000 tasks made
/// the manager's RSS grow by hundreds of MiB. What is read again is the
/// tail (replication to a follower that lags) and the tree's inner pages;
/// the OS page cache keeps the rest a read away.
const CACHE_BYTES: usize = 16 << 20;

fn builder() -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(CACHE_BYTES);
    b
}

/// Whether a write is synced before it returns.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    Now,
    /// With the next synced commit (log appends, the committed index).
    Later,
}

impl Disk {
    /// Opens (or creates) the database at `path`.
    pub(crate) fn create(path: &Path) -> std::io::Result<Disk> {
        let at = path.to_path_buf();
        Self::with_opener(path, Box::new(move || builder().create(&at)))
    }

    /// Opens the database at `path`, which must exist.
    pub(crate) fn open(path: &Path) -> std::io::Result<Disk> {
        let at = path.to_path_buf();
        Self::with_opener(path, Box::new(move || builder().open(&at)))
    }

    pub(crate) fn with_opener(path: &Path, open: Opener) -> std::io::Result<Disk> {
        let db = open().map_err(super::io_err)?;
        Ok(Disk {
            path: path.to_path_buf(),
            open,
            db: RwLock::new(Some(db)),
            unsynced: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the file: every later operation fails.
    pub(crate) fn close(&self) {
        let _unsynced = self.unsynced();
        self.db.write().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Why this manager cannot write its Raft store, while it cannot.
    pub(crate) fn unwritable(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_failure(&self, why: Option<String>) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// Runs a read, reopening the file and running it again after an I/O
    /// error.
    pub(crate) fn read<T>(
        &self,
        mut f: impl FnMut(&Database) -> Result<T, DiskError>,
    ) -> std::io::Result<T> {
        loop {
            match self.attempt(&mut f) {
                Err(e) if e.needs_reopen() => self.reopen(&mut self.unsynced(), &e)?,
                r => return r.map_err(DiskError::into_io),
            }
        }
    }

    /// Runs `f` in a write transaction and commits it, reopening the file
    /// and running it again after an I/O error.
    pub(crate) fn write<T>(
        &self,
        flush: Flush,
        f: impl FnMut(&WriteTransaction) -> Result<T, DiskError>,
    ) -> std::io::Result<T> {
        self.write_locked(&mut self.unsynced(), flush, f)
    }

    fn write_locked<T>(
        &self,
        unsynced: &mut Vec<(u64, Vec<u8>)>,
        flush: Flush,
        mut f: impl FnMut(&WriteTransaction) -> Result<T, DiskError>,
    ) -> std::io::Result<T> {
        loop {
            let result = self.attempt(|db| {
                let mut txn = db.begin_write()?;
                if flush == Flush::Later {
                    txn.set_durability(Durability::None)?;
                }
                let value = f(&txn)?;
                txn.commit()?;
                Ok(value)
            });
            match result {
                Ok(value) => {
                    if flush == Flush::Now {
                        unsynced.clear();
                    }
                    return Ok(value);
                }
                Err(e) if e.needs_reopen() => self.reopen(unsynced, &e)?,
                Err(e) => return Err(e.into_io()),
            }
        }
    }

    /// Writes log rows without a sync, keeping them until the next synced
    /// commit in case the file has to be reopened before it.
    pub(crate) fn append(&self, rows: Vec<(u64, Vec<u8>)>) -> std::io::Result<()> {
        let mut unsynced = self.unsynced();
        self.write_locked(&mut unsynced, Flush::Later, |txn| {
            let mut table = txn.open_table(LOG)?;
            for (index, bytes) in &rows {
                table.insert(*index, bytes.as_slice())?;
            }
            Ok(())
        })?;
        unsynced.extend(rows);
        Ok(())
    }

    fn unsynced(&self) -> MutexGuard<'_, Vec<(u64, Vec<u8>)>> {
        self.unsynced.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn attempt<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, DiskError>,
    ) -> Result<T, DiskError> {
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(db) => f(db),
            None => Err(DiskError::other("the Raft store is closed")),
        }
    }

    /// Runs `write`, a write of a file beside the database (the snapshot),
    /// until it succeeds: a full disk makes it wait as the log's writes do,
    /// said in the log and by [`Disk::unwritable`], rather than fail (a
    /// failed snapshot would stop openraft for good). Fails only if the
    /// store is closed meanwhile.
    pub(crate) fn write_beside(
        &self,
        what: &str,
        mut write: impl FnMut() -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let Err(first) = write() else {
            return Ok(());
        };
        self.wait_out(what, first.to_string(), || {
            if self.db.read().unwrap_or_else(|p| p.into_inner()).is_none() {
                return Attempt::Closed;
            }
            match write() {
                Ok(()) => Attempt::Done,
                Err(e) => Attempt::Again(e.to_string()),
            }
        })
    }

    /// Closes the failed file and opens it again until it opens and takes
    /// the unsynced rows back. Blocks the caller (and every other user of
    /// the file) meanwhile. Fails only if the store was closed.
    fn reopen(&self, unsynced: &mut Vec<(u64, Vec<u8>)>, cause: &DiskError) -> std::io::Result<()> {
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        if db.is_none() {
            return Err(super::io_err("the Raft store is closed"));
        }
        let why = match cause {
            DiskError::Db(redb::Error::PreviousIo) => "an earlier I/O error".to_string(),
            e => e.to_string(),
        };
        // Dropping a failed database closes the file (and releases its
        // lock) without writing anything.
        db.take();
        self.wait_out("the Raft store", why, || {
            match self.open_and_restore(unsynced) {
                Ok(reopened) => {
                    *db = Some(reopened);
                    Attempt::Done
                }
                Err(e) => Attempt::Again(e.to_string()),
            }
        })
    }

    /// Tries `attempt` every second until it is done, the wait said in the
    /// log (again every [`REMIND`]) and by [`Disk::unwritable`] while it
    /// lasts. `why` is what the first try failed with.
    fn wait_out(
        &self,
        what: &str,
        mut why: String,
        mut attempt: impl FnMut() -> Attempt,
    ) -> std::io::Result<()> {
        self.set_failure(Some(why.clone()));
        tracing::warn!(
            path = %self.path.display(),
            "cannot write {what}: {why}; waiting, trying again every second"
        );
        let started = Instant::now();
        let mut reminded = started;
        loop {
            std::thread::sleep(RETRY);
            match attempt() {
                Attempt::Done => break,
                Attempt::Closed => return Err(super::io_err("the Raft store is closed")),
                Attempt::Again(e) => why = e,
            }
            if reminded.elapsed() >= REMIND {
                reminded = Instant::now();
                tracing::warn!(
                    path = %self.path.display(),
                    "still cannot write {what} after {:.0?}: {why}",
                    started.elapsed()
                );
            }
            self.set_failure(Some(why.clone()));
        }
        self.set_failure(None);
        tracing::info!(
            path = %self.path.display(),
            "{what} is writable again after {:.1?}",
            started.elapsed()
        );
        Ok(())
    }

    /// Opens the file and writes the unsynced rows back in a synced
    /// commit that always writes something: a file that opens but cannot
    /// take a commit is still full.
    fn open_and_restore(&self, unsynced: &mut Vec<(u64, Vec<u8>)>) -> Result<Database, DiskError> {
        let db = (self.open)()?;
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(LOG)?;
            for (index, bytes) in unsynced.iter() {
                table.insert(*index, bytes.as_slice())?;
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64;
            txn.open_table(META)?
                .insert(REOPENED, now.to_le_bytes().as_slice())?;
        }
        txn.commit()?;
        unsynced.clear();
        Ok(db)
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use redb::backends::FileBackend;
    use redb::{BackendError, ReadableDatabase, StorageBackend};

    use super::*;

    /// A file whose writes fail as a full disk's do while `full` is set.
    #[derive(Debug)]
    struct Filling {
        file: FileBackend,
        full: Arc<AtomicBool>,
    }

    impl Filling {
        fn check(&self) -> std::io::Result<()> {
            if self.full.load(Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(ENOSPC));
            }
            Ok(())
        }
    }

    /// Linux's "No space left on device".
    const ENOSPC: i32 = 28;

    type Locked = Result<bool, BackendError>;

    impl StorageBackend for Filling {
        fn len(&self) -> std::io::Result<u64> {
            self.file.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.file.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.check()?;
            self.file.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.file.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.check()?;
            self.file.write(offset, data)
        }
        fn close(&self) -> std::io::Result<()> {
            self.file.close()
        }
        fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Locked {
            self.file.try_lock_range(start, end)
        }
        fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Locked {
            self.file.try_lock_shared_range(start, end)
        }
        fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
            self.file.lock_range(start, end)
        }
        fn lock_shared_range(
            &self,
            start: Bound<u64>,
            end: Bound<u64>,
        ) -> Result<(), BackendError> {
            self.file.lock_shared_range(start, end)
        }
        fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
            self.file.unlock_range(start, end)
        }
        fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Locked {
            self.file.query_lock_range(start, end)
        }
    }

    fn filling(path: &Path, full: &Arc<AtomicBool>) -> Disk {
        let (at, full) = (path.to_path_buf(), full.clone());
        Disk::with_opener(
            path,
            Box::new(move || {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&at)?;
                let backend = Filling {
                    file: FileBackend::new(file)?,
                    full: full.clone(),
                };
                redb::Builder::new().create_with_backend(backend)
            }),
        )
        .expect("open")
    }

    fn rows(disk: &Disk) -> Vec<u64> {
        disk.read(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(LOG)?;
            let mut out = Vec::new();
            for row in table.range(0..)? {
                out.push(row?.0.value());
            }
            Ok(out)
        })
        .expect("read")
    }

    fn row(index: u64) -> (u64, Vec<u8>) {
        (index, format!("entry {index}").into_bytes())
    }

    #[test]
    fn a_full_disk_makes_writes_wait_and_loses_nothing_when_space_returns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft.redb");
        let full = Arc::new(AtomicBool::new(false));
        let disk = Arc::new(filling(&path, &full));
        disk.append((1..=3).map(row).collect()).expect("append");
        disk.write(Flush::Now, |txn| {
            txn.open_table(META)?.insert("synced", [1u8].as_slice())?;
            Ok(())
        })
        .expect("sync");
        // Acknowledged to Raft, not yet synced.
        disk.append((4..=5).map(row).collect()).expect("append");
        assert_eq!(disk.unwritable(), None);

        full.store(true, Ordering::SeqCst);
        let writer = {
            let disk = disk.clone();
            // redb buffers unsynced commits: the sync is what meets the
            // full disk, and what fails loses the buffer with the file.
            std::thread::spawn(move || {
                disk.append(vec![row(6)])?;
                disk.write(Flush::Now, |txn| {
                    txn.open_table(META)?.insert("synced", [2u8].as_slice())?;
                    Ok(())
                })
            })
        };
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!writer.is_finished(), "a write on a full disk waits");
        let why = disk.unwritable().expect("the disk is known to be full");
        assert!(why.contains("No space left on device"), "{why}");

        full.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !writer.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(writer.is_finished(), "the write goes on once space returns");
        writer.join().expect("thread").expect("the write succeeds");
        assert_eq!(disk.unwritable(), None);
        assert_eq!(rows(&disk), [1, 2, 3, 4, 5, 6]);

        // And it is all on disk: opened again from the file alone.
        disk.close();
        let again = Disk::create(&path).expect("reopen");
        assert_eq!(rows(&again), [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn a_file_beside_the_log_waits_for_space_and_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = Arc::new(Disk::create(&dir.path().join("raft.redb")).expect("open"));
        let full = Arc::new(AtomicBool::new(true));
        // A write of the snapshot that fails while `full` says so.
        let spawn_writer = || {
            let (disk, full) = (disk.clone(), full.clone());
            std::thread::spawn(move || {
                disk.write_beside("the snapshot", || match full.load(Ordering::SeqCst) {
                    true => Err(std::io::Error::from_raw_os_error(28)),
                    false => Ok(()),
                })
            })
        };
        let writer = spawn_writer();
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!writer.is_finished(), "a write on a full disk waits");
        let why = disk.unwritable().expect("the disk is known to be full");
        assert!(why.contains("No space left on device"), "{why}");
        full.store(false, Ordering::SeqCst);
        writer
            .join()
            .expect("thread")
            .expect("written once space returns");
        assert_eq!(disk.unwritable(), None);

        // Closed meanwhile, the store does not wait forever.
        full.store(true, Ordering::SeqCst);
        let writer = spawn_writer();
        disk.close();
        let err = writer.join().expect("thread").expect_err("closed");
        assert!(err.to_string().contains("closed"), "{err}");
    }

    #[test]
    fn errors_that_are_not_the_disks_are_returned_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = Disk::create(&dir.path().join("raft.redb")).expect("open");
        let err = disk
            .read(|_| -> Result<(), DiskError> { Err(DiskError::other("not json")) })
            .expect_err("fails");
        assert_eq!(err.to_string(), "not json");
        disk.close();
        let err = disk.read(|_| Ok(())).expect_err("closed");
        assert!(err.to_string().contains("closed"), "{err}");
    }
}
