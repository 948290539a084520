//! The agent's figures: how long each executor operation takes
//! (`flotilla_executor_operation_seconds{executor,op}`).

use std::future::Future;
use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type OpLabels = [(&'static str, &'static str); 2];

static OPERATIONS: LazyLock<Family<OpLabels, Histogram>> = LazyLock::new(|| {
    Family::new_with_constructor(|| Histogram::new(flotilla_store::metrics::DEFAULT_BUCKETS))
});

pub fn register(r: &mut Registry) {
    r.register(
        "flotilla_executor_operation_seconds",
        "How long an executor operation (prepare, start, shutdown, remove) takes on this node",
        OPERATIONS.clone(),
    );
}

/// Runs `op`, an operation of `executor` named `name`, and records how
/// long it took, whether it succeeded or not.
pub async fn timed<T>(
    executor: &'static str,
    name: &'static str,
    op: impl Future<Output = T>,
) -> T {
    let start = Instant::now();
    let out = op.await;
    OPERATIONS
        .get_or_create(&[("executor", executor), ("op", name)])
        .observe(start.elapsed().as_secs_f64());
    out
}
