//! The store's and Raft's timings, under Docker's names
//! (`swarm_store_*`, `swarm_raft_*`): process-wide, as SwarmKit keeps
//! them, and registered by the node that serves `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::encoding::{EncodeGaugeValue, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Prometheus's default buckets, which Docker's timers use.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub fn seconds_histogram() -> Histogram {
    Histogram::new(DEFAULT_BUCKETS)
}

pub struct StoreMetrics {
    /// A proposal, from `propose` to its result (Raft commit and apply).
    pub transaction: Histogram,
    /// Writing a snapshot of the state.
    pub snapshot: Histogram,
    /// One committed entry applied to the state.
    pub write_tx: Histogram,
    /// One read of the state (`Store::read`), waiting for the lock included.
    pub read_tx: Histogram,
    /// One object looked up by ID, name or prefix for the API.
    pub lookup: Histogram,
    /// A proposal of several ops (SwarmKit's batch).
    pub batch: Histogram,
    /// How long applying held the state's write lock.
    pub lock: Histogram,
}

pub static METRICS: LazyLock<StoreMetrics> = LazyLock::new(|| StoreMetrics {
    transaction: seconds_histogram(),
    snapshot: seconds_histogram(),
    write_tx: seconds_histogram(),
    read_tx: seconds_histogram(),
    lookup: seconds_histogram(),
    batch: seconds_histogram(),
    lock: seconds_histogram(),
});

pub fn observe_since(h: &Histogram, start: Instant) {
    h.observe(start.elapsed().as_secs_f64());
}

/// Adds the families, with Docker's names and help texts (without their
/// final period: the registry adds one).
pub fn register(r: &mut Registry) {
    let m = &*METRICS;
    let families = [
        (
            "swarm_raft_transaction_latency_seconds",
            "Raft transaction latency",
            &m.transaction,
        ),
        (
            "swarm_raft_snapshot_latency_seconds",
            "Raft snapshot create latency",
            &m.snapshot,
        ),
        (
            "swarm_store_write_tx_latency_seconds",
            "Raft store write tx latency",
            &m.write_tx,
        ),
        (
            "swarm_store_read_tx_latency_seconds",
            "Raft store read tx latency",
            &m.read_tx,
        ),
        (
            "swarm_store_lookup_latency_seconds",
            "Raft store read latency",
            &m.lookup,
        ),
        (
            "swarm_store_batch_latency_seconds",
            "Raft store batch latency",
            &m.batch,
        ),
        (
            "swarm_store_memory_store_lock_duration_seconds",
            "Duration for which the raft memory store lock was held",
            &m.lock,
        ),
    ];
    for (name, help, histogram) in families {
        r.register(name, help, histogram.clone());
    }
}

/// One store's Raft figures that openraft's metrics lack.
#[derive(Debug, Default)]
pub struct RaftCounters {
    /// The last committed index openraft saved.
    pub committed: AtomicU64,
    /// How many times this manager saw the leader change to another.
    pub leader_changes: AtomicU64,
}

/// Where one manager's Raft stands (`Store::raft_figures`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RaftFigures {
    pub term: u64,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    pub leader_changes: u64,
    pub is_leader: bool,
}

impl RaftCounters {
    pub(crate) fn committed(&self, index: u64) {
        self.committed.fetch_max(index, Ordering::Relaxed);
    }
}

/// Writes families whose values are read at scrape time (a collector's
/// figures): one call per family.
pub struct Emit<'a>(pub prometheus_client::encoding::DescriptorEncoder<'a>);

type Fmt = Result<(), std::fmt::Error>;

impl Emit<'_> {
    pub fn gauge<V: EncodeGaugeValue>(&mut self, name: &str, help: &str, v: V) -> Fmt {
        self.0
            .encode_descriptor(name, help, None, MetricType::Gauge)?
            .encode_gauge(&v)
    }

    pub fn gauges<L, V, I>(&mut self, name: &str, help: &str, samples: I) -> Fmt
    where
        L: EncodeLabelSet,
        V: EncodeGaugeValue,
        I: IntoIterator<Item = (L, V)>,
    {
        let mut m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in samples {
            m.encode_family(&labels)?.encode_gauge(&v)?;
        }
        Ok(())
    }

    /// `name` without `_total`: the encoders add it.
    pub fn counter(&mut self, name: &str, help: &str, v: u64) -> Fmt {
        self.0
            .encode_descriptor(name, help, None, MetricType::Counter)?
            .encode_counter::<NoLabelSet, _, f64>(&v, None)
    }
}
