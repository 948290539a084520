//! The handle the manager uses: read the state, propose ops through Raft,
//! watch for applied changes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::{Config, SnapshotPolicy};
use tokio::sync::watch;

use crate::error::StoreError;
use crate::merge::{Failed, Merger};
use crate::ops::Op;
use crate::raft::{LogStore, NoNetwork, Peer, Raft, StateMachine, StateMachineHandle};
use crate::state::State;

pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// The swarm node this manager is.
    pub node_id: String,
    /// This manager's Raft ID, stable across restarts.
    pub raft_id: u64,
    /// Address peers reach this manager's Raft at.
    pub addr: String,
    /// The swarm's unlock key, when autolock keeps the DEK wrapped.
    pub unlock_key: Option<crate::raft::seal::UnlockKey>,
}

#[derive(Clone)]
pub struct Store {
    raft: Raft,
    sm: StateMachineHandle,
    id: u64,
    addr: String,
    node_id: String,
    forward: Arc<std::sync::RwLock<Option<Arc<dyn Forward>>>>,
    /// The election watchdog; it ends with Raft and `shutdown` joins it.
    watchdog: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// The DEK, and where its file is, to wrap it again (autolock).
    sealer: Arc<crate::raft::seal::Sealer>,
    dir: std::path::PathBuf,
    /// The database file, closed by `shutdown` however many handles live.
    disk: Arc<crate::raft::disk::Disk>,
    /// Where this manager's writes go into Raft when it leads.
    merger: Merger,
    counters: Arc<crate::metrics::RaftCounters>,
}

/// A leaderless spell this long means elections are stuck (openraft 0.9
/// can livelock two voters that keep splitting the vote).
const LEADERLESS_LIMIT: Duration = Duration::from_secs(5);

/// Breaks a stuck election by starting one after a random pause, so two
/// voters stop colliding. Ends when Raft shuts down.
async fn election_watchdog(raft: Raft, counters: Arc<crate::metrics::RaftCounters>) {
    let mut metrics = raft.metrics();
    let mut leaderless_since: Option<tokio::time::Instant> = None;
    let mut last_leader = None;
    loop {
        let (leader, voter, running) = {
            let m = metrics.borrow_and_update();
            let voter = m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == m.id);
            (m.current_leader, voter, m.running_state.is_ok())
        };
        if !running {
            return;
        }
        if leader.is_some() && leader != last_leader {
            if last_leader.is_some() {
                counters
                    .leader_changes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            last_leader = leader;
        }
        match (leader, voter) {
            (None, true) => {
                let since = *leaderless_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= LEADERLESS_LIMIT {
                    let jitter = Duration::from_millis(rand::random::<u64>() % 1000);
                    tokio::time::sleep(jitter).await;
                    if raft.metrics().borrow().current_leader.is_none() {
                        tracing::warn!(
                            "no Raft leader for {:?}: starting an election",
                            since.elapsed()
                        );
                        let _ = raft.trigger().elect().await;
                    }
                    leaderless_since = Some(tokio::time::Instant::now());
                }
            }
            _ => leaderless_since = None,
        }
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {},
        }
    }
}

/// Carries a proposal to the leader when this manager is a follower.
#[async_trait::async_trait]
pub trait Forward: Send + Sync + 'static {
    async fn propose(
        &self,
        leader: &Peer,
        ops: &[Op],
    ) -> Result<(u64, Vec<Result<(), StoreError>>), ForwardError>;
}

/// Why a forwarded proposal has no result.
#[derive(Debug)]
pub enum ForwardError {
    /// No connection to the leader could be made, so nothing was sent:
    /// the proposal may go to whoever leads next.
    NotSent(StoreError),
    /// The leader refused it, or it may have reached the leader and the
    /// answer was lost: sending it again could apply it twice.
    Failed(StoreError),
}

/// How long a follower whose leader cannot be reached waits for another
/// leader before answering that there is none: an election takes 1.3-1.6 s
/// after the last heartbeat (see the Raft config in [`Store::open`]).
const NEW_LEADER_WAIT: Duration = Duration::from_secs(3);

/// A leader that has heard from no quorum for this long is not leading.
const QUORUM_SILENCE_MS: u64 = 3000;
/// How long a write may wait for a majority before the API gives up.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The size a Raft entry is kept under (its ops as JSON); an op larger
/// than this on its own is an entry of its own.
pub const ENTRY_LIMIT: usize = 1 << 20;

/// `ops` in order, cut into batches whose JSON stays under `limit`, each
/// with its size.
fn split_by_size(ops: Vec<Op>, limit: usize) -> Vec<(Vec<Op>, usize)> {
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut size = 0;
    for op in ops {
        // Sizing costs an encoding (counted, not kept); the log encodes
        // the entry again, but next to its fsync that is small.
        let n = encoded_len(&op);
        if !batch.is_empty() && size + n > limit {
            batches.push((std::mem::take(&mut batch), size));
            size = 0;
        }
        size += n;
        batch.push(op);
    }
    batches.push((batch, size));
    batches
}

/// The length of `op`'s JSON, without keeping it.
fn encoded_len(op: &Op) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, op);
    count.0
}

/// How long a forwarded write waits to be applied here too, so a client
/// that reads back through this manager sees its own write.
const READ_YOUR_WRITE: Duration = Duration::from_secs(5);

impl Store {
    /// Opens a store whose Raft has no peers (a single manager).
    pub async fn open(cfg: StoreConfig) -> anyhow::Result<Store> {
        Self::open_with(cfg, NoNetwork).await
    }

    /// Opens a store whose Raft reaches its peers through `network`.
    pub async fn open_with<N>(cfg: StoreConfig, network: N) -> anyhow::Result<Store>
    where
        N: openraft::network::RaftNetworkFactory<crate::raft::TypeConfig>,
    {
        // Private: the directory 0700, its files 0600, every entry and
        // snapshot sealed with the manager's data encryption key.
        let sealer = Arc::new(crate::raft::seal::Sealer::load_or_create(
            &cfg.data_dir,
            cfg.unlock_key.as_ref(),
        )?);
        let path = cfg.data_dir.join("raft.redb");
        let disk = Arc::new(
            tokio::task::spawn_blocking(move || {
                let disk = crate::raft::disk::Disk::create(&path)?;
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )?;
                Ok::<_, anyhow::Error>(disk)
            })
            .await??,
        );
        let counters = Arc::new(crate::metrics::RaftCounters::default());
        let log = LogStore::new(disk.clone(), sealer.clone(), counters.clone())?;
        let sm = StateMachine::open(disk.clone(), sealer.clone())?;
        let handle = sm.handle();
        let config = Config {
            cluster_name: "flotilla".into(),
            // Short timeouts: a dead leader is replaced in under two
            // seconds, where Swarm takes fifteen. openraft 0.9 waits a
            // leader lease (election_timeout_max) plus an election timeout
            // after the last heartbeat before electing: 1.3-1.6 s here,
            // which is also how long a leader may stall unnoticed.
            heartbeat_interval: 100,
            election_timeout_min: 500,
            election_timeout_max: 800,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(10_000),
            // Snapshot chunks and appends stay well under the cluster
            // port's message limit (flotilla-rpc's MAX_MESSAGE).
            snapshot_max_chunk_size: 1 << 20,
            max_in_snapshot_log_to_keep: 1_000,
            ..Default::default()
        };
        let config = Arc::new(config.validate()?);
        let raft = Raft::new(cfg.raft_id, config, network, log, sm).await?;
        let watchdog = tokio::spawn(election_watchdog(raft.clone(), counters.clone()));
        let merger = Merger::start(raft.clone(), ENTRY_LIMIT);
        Ok(Store {
            merger,
            watchdog: Arc::new(std::sync::Mutex::new(Some(watchdog))),
            raft,
            sm: handle,
            id: cfg.raft_id,
            addr: cfg.addr,
            node_id: cfg.node_id,
            forward: Default::default(),
            sealer,
            dir: cfg.data_dir,
            disk,
            counters,
        })
    }

    /// Stores this manager's DEK wrapped by `key`, or plain without one:
    /// autolock turned on, its key rotated, or autolock turned off.
    pub fn lock_with(&self, key: Option<&crate::raft::seal::UnlockKey>) -> std::io::Result<()> {
        self.sealer.store_key(&self.dir, key)
    }

    /// Makes this manager the single voter of a new cluster. Harmless when
    /// the log already holds a membership (a restart).
    pub async fn bootstrap(&self) -> anyhow::Result<()> {
        if self.raft.is_initialized().await? {
            return Ok(());
        }
        let mut members = BTreeMap::new();
        members.insert(
            self.id,
            Peer {
                addr: self.addr.clone(),
                node_id: self.node_id.clone(),
            },
        );
        self.raft.initialize(members).await?;
        Ok(())
    }

    /// Makes `members` the voters of a new cluster (a test harness, or the
    /// first manager of several).
    pub async fn bootstrap_members(&self, members: BTreeMap<u64, Peer>) -> anyhow::Result<()> {
        if self.raft.is_initialized().await? {
            return Ok(());
        }
        self.raft.initialize(members).await?;
        Ok(())
    }

    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.sm.read(f)
    }

    /// The last applied log index; it changes on every commit.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sm.subscribe()
    }

    /// Changes whenever a commit touches a task on `node`, or the state is
    /// reloaded. Subscribe before reading what it guards.
    pub fn subscribe_node(&self, node: &str) -> watch::Receiver<u64> {
        self.sm.subscribe_node(node)
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn raft_id(&self) -> u64 {
        self.id
    }

    /// Where this manager's Raft stands, for the metrics.
    pub fn raft_figures(&self) -> crate::metrics::RaftFigures {
        use std::sync::atomic::Ordering::Relaxed;
        let m = self.raft.metrics().borrow().clone();
        crate::metrics::RaftFigures {
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: self.counters.committed.load(Relaxed),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            leader_changes: self.counters.leader_changes.load(Relaxed),
            is_leader: m.current_leader == Some(self.id),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// Waits until some manager leads, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> bool {
        self.leader_where(timeout, |_| true).await.is_some()
    }

    /// Waits up to `timeout` for a leader that `wanted` accepts.
    async fn leader_where(
        &self,
        timeout: Duration,
        wanted: impl Fn(u64) -> bool,
    ) -> Option<(u64, Peer)> {
        let mut m = self.raft.metrics();
        let wait = async {
            loop {
                m.borrow_and_update();
                if let Some(found) = self.leader().filter(|(l, _)| wanted(*l)) {
                    return Some(found);
                }
                m.changed().await.ok()?;
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// Commits `ops` and returns each op's result with the log index of
    /// the last entry, once it is applied here. Ops go in as few Raft
    /// entries as keep each under [`ENTRY_LIMIT`] (SwarmKit bounds a
    /// proposal at 1.5 MB): a plan of 10,000 tasks is about twenty
    /// entries, each applied whole, in order. If one fails, the ones
    /// before it stay committed and the error is returned (the
    /// orchestrators' next pass makes up the rest).
    pub async fn propose(
        &self,
        ops: Vec<Op>,
    ) -> Result<(u64, Vec<Result<(), StoreError>>), StoreError> {
        let start = std::time::Instant::now();
        let batch = ops.len() > 1;
        let batches = split_by_size(ops, ENTRY_LIMIT);
        let mut index = 0;
        let mut results = Vec::new();
        for (batch, size) in batches {
            let (i, r) = self.propose_entry(batch, size).await?;
            index = i;
            results.extend(r);
        }
        let m = &crate::metrics::METRICS;
        crate::metrics::observe_since(&m.transaction, start);
        if batch {
            crate::metrics::observe_since(&m.batch, start);
        }
        Ok((index, results))
    }

    /// Commits `ops` (of JSON size `size`) in one Raft entry, maybe with
    /// other callers' ops (see [`crate::merge`]), or through the leader.
    async fn propose_entry(
        &self,
        ops: Vec<Op>,
        size: usize,
    ) -> Result<(u64, Vec<Result<(), StoreError>>), StoreError> {
        if ops.is_empty() {
            return Ok((0, Vec::new()));
        }
        // A leader cut off from the other managers keeps believing it
        // leads (openraft 0.9 has no step-down on lost quorum): refuse
        // at once, as Docker does, rather than wait for a commit that
        // cannot come.
        let quorum_silent = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            m.current_leader == Some(self.id)
                && m.millis_since_quorum_ack
                    .is_some_and(|ms| ms > QUORUM_SILENCE_MS)
        };
        let Some((mut leader, mut peer)) = self.leader().filter(|_| !quorum_silent) else {
            return Err(StoreError::NoLeader);
        };
        // A leader that cannot be reached is usually a dead one being
        // replaced: the write goes to the next leader rather than failing
        // (once: a second leader out of reach is not an election).
        let mut redirected = false;
        while leader != self.id {
            let forward = self
                .forward
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let Some(forward) = forward else {
                return Err(StoreError::NoLeader);
            };
            match forward.propose(&peer, &ops).await {
                Ok((index, results)) => {
                    self.wait_applied(index, READ_YOUR_WRITE).await;
                    return Ok((index, results));
                }
                Err(ForwardError::NotSent(e)) if !redirected => {
                    redirected = true;
                    let old = leader;
                    match self.leader_where(NEW_LEADER_WAIT, |l| l != old).await {
                        Some(next) => (leader, peer) = next,
                        None => return Err(e),
                    }
                }
                Err(ForwardError::NotSent(e) | ForwardError::Failed(e)) => return Err(e),
            }
        }
        // Raft waits here for the disk to take writes again (see
        // raft::disk): refuse rather than hang until the commit timeout.
        if let Some(why) = self.disk.unwritable() {
            return Err(StoreError::DiskUnwritable(why));
        }
        let write = tokio::time::timeout(COMMIT_TIMEOUT, self.merger.write(ops, size));
        match write.await {
            Err(_) => Err(StoreError::NotConfirmed {
                timeout: COMMIT_TIMEOUT,
            }),
            Ok(Ok(done)) => Ok(done),
            // The lead moved between the check and the write: the ops
            // went to Raft, which refused them; the caller may try again.
            Ok(Err(Failed::NotLeader)) => Err(StoreError::NoLeader),
            Ok(Err(Failed::Raft(e))) => Err(StoreError::WriteFailed(e)),
        }
    }

    /// Lets followers send writes to the leader.
    pub fn set_forwarder(&self, f: Arc<dyn Forward>) {
        *self.forward.write().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    /// Waits until this manager has applied `index`, up to `timeout`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut rx = self.subscribe();
        let wait = async {
            while *rx.borrow_and_update() < index {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The current leader's Raft ID and member record, if one is known.
    pub fn leader(&self) -> Option<(u64, Peer)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let id = m.current_leader?;
        let peer = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, peer))
    }

    /// Commits one op; its error, if any, is the result.
    pub async fn propose_one(&self, op: Op) -> Result<u64, StoreError> {
        let (index, mut results) = self.propose(vec![op]).await?;
        results.pop().unwrap_or(Ok(())).map(|()| index)
    }

    /// Stops Raft and closes the database file: handles that live on read
    /// the last state; nothing is written any more.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        self.disk.close();
        let watchdog = self
            .watchdog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(watchdog) = watchdog {
            // Raft's metrics channel closed with Raft: the watchdog's
            // next wait returns and it ends.
            if tokio::time::timeout(Duration::from_secs(2), watchdog)
                .await
                .is_err()
            {
                tracing::warn!("the election watchdog did not end with Raft");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_proposals_are_cut_in_order_under_the_limit() {
        let op = |i: usize| {
            Op::CreateTask(Box::new(crate::models::Task {
                id: Some(format!("task{i:05}")),
                ..Default::default()
            }))
        };
        let ops: Vec<Op> = (0..10_000).map(op).collect();
        let one = serde_json::to_vec(&ops[0]).unwrap().len();
        let batches = split_by_size(ops, 64 * one);
        assert!(batches.len() > 1);
        let mut n = 0;
        for (b, counted) in &batches {
            let size: usize = b.iter().map(|o| serde_json::to_vec(o).unwrap().len()).sum();
            assert!(size <= 64 * one, "{size}");
            assert_eq!(size, *counted);
            for o in b {
                let Op::CreateTask(t) = o else { panic!() };
                assert_eq!(t.id.as_deref(), Some(format!("task{n:05}").as_str()));
                n += 1;
            }
        }
        assert_eq!(n, 10_000);
        // One op larger than the limit is an entry of its own.
        assert_eq!(split_by_size(vec![op(1), op(2)], 1).len(), 2);
        assert_eq!(split_by_size(Vec::new(), 1).len(), 1);
    }
}

/// Not a test: what cutting a proposal into entries costs, printed
/// (BENCHMARKS.md).
/// `cargo test --release -p flotilla-store split_cost -- --ignored --nocapture`
#[cfg(test)]
mod cost {
    use super::*;

    #[test]
    #[ignore]
    fn split_cost() {
        use crate::models::{Task, TaskSpec, TaskSpecContainerSpec};
        let task = |i: usize| {
            Op::CreateTask(Box::new(Task {
                id: Some(format!("task{i:07}xxxxxxxxxxxxxxxx")),
                service_id: Some("svc000000000000000000000000".into()),
                slot: Some(i as i64),
                spec: Some(std::sync::Arc::new(TaskSpec {
                    container_spec: Some(TaskSpecContainerSpec {
                        image: Some("registry.example/team/app:1.2.3".into()),
                        env: Some(
                            (0..12)
                                .map(|e| format!("SETTING_{e}=value-{e}-{i}"))
                                .collect(),
                        ),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }))
        };
        let ops: Vec<Op> = (0..10_000).map(task).collect();
        let bytes = serde_json::to_vec(&ops).unwrap().len();
        let rounds = 20;
        let mut entries = 0;
        let mut split = std::time::Duration::ZERO;
        for _ in 0..rounds {
            let copy = ops.clone();
            let start = std::time::Instant::now();
            entries = split_by_size(copy, ENTRY_LIMIT).len();
            split += start.elapsed();
        }
        let split = split / rounds;
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            let _ = serde_json::to_vec(&ops).unwrap();
        }
        let encode = start.elapsed() / rounds;
        println!(
            "a plan of 10,000 tasks ({} KiB): cut into {entries} entries in {split:?}; encoding it once takes {encode:?}",
            bytes >> 10
        );
    }
}
