//! Runs the leader-only controllers (orchestrators, scheduler, task reaper,
//! heartbeat expiry) while this manager is the Raft leader, and stops them
//! when it is not.
//!
//! Each controller is a plain function from the state to store ops; a
//! controller loop runs it after every commit (and at the time it asks to
//! be woken), and proposes what it returns as one write. A pass decides
//! a bounded amount (`Plan::rest` names the services it left for the
//! next), so no write holds up the others for long.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flotilla_store::ids::format_time;
use flotilla_store::{ChangeMark, Interest, Op, State, Store};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::dispatcher::Dispatcher;
use crate::orchestrator::{global, jobs, rebalance, taskreaper, update, Plan};
use crate::scheduler;

/// Lets several commits that arrive together be handled in one pass.
const SETTLE: Duration = Duration::from_millis(5);
/// How often the leader looks for nodes to mark Down.
const EXPIRE_TICK: Duration = Duration::from_millis(250);
/// A look that comes this much later than due means this manager itself
/// stalled: it heard nothing meanwhile, whatever the nodes did.
const STALL: Duration = Duration::from_millis(500);
/// After a pass whose every op failed, wait this long unless the state changes.
const BACKOFF: Duration = Duration::from_millis(500);

/// A controller's decision over the services in the set, or over
/// everything when it is `None`.
type Decide = Box<dyn FnMut(&State, DateTime<Utc>, Option<&BTreeSet<String>>) -> Plan + Send>;

pub async fn run(store: Store, dispatcher: Arc<Dispatcher>, mut stop: watch::Receiver<bool>) {
    let mut metrics = store.raft().metrics();
    loop {
        while !store.is_leader() {
            tokio::select! {
                r = metrics.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
            }
        }
        tracing::info!("leading: starting orchestrators, scheduler and dispatcher checks");
        let mut set = JoinSet::new();
        let mut scheduler = scheduler::Scheduler::default();
        let mut rebalancer = rebalance::Rebalancer::default();
        // A task that starts running is news to an orchestrator only while
        // its service is updated (the next batch waits for it).
        let controllers: [(&str, Interest, Decide); 5] = [
            (
                "replicated orchestrator",
                update::INTEREST,
                Box::new(move |s, now, scope| rebalancer.reconcile(s, now, scope)),
            ),
            (
                "global orchestrator",
                update::INTEREST,
                Box::new(global::reconcile_only),
            ),
            (
                "jobs orchestrator",
                jobs::INTEREST,
                Box::new(jobs::reconcile_only),
            ),
            (
                "scheduler",
                scheduler::INTEREST,
                Box::new(move |s, now, scope| Plan {
                    ops: scheduler.pass(s, &format_time(now), scope),
                    ..Plan::default()
                }),
            ),
            (
                "task reaper",
                taskreaper::INTEREST,
                Box::new(taskreaper::reconcile_only),
            ),
        ];
        for (name, interest, decide) in controllers {
            set.spawn(controller(store.clone(), name, interest, decide));
        }
        set.spawn(expire_nodes(store.clone(), dispatcher.clone()));
        set.spawn(crate::raftmembers::run(store.clone()));
        set.spawn(crate::ca::complete_rotations(store.clone()));
        set.spawn(crate::metrics::watch_convergence(
            store.clone(),
            stop.clone(),
        ));
        let mut raft_stopped = false;
        while store.is_leader() && !*stop.borrow() {
            tokio::select! {
                r = metrics.changed() => if r.is_err() { raft_stopped = true; break },
                _ = stop.changed() => {},
            }
        }
        set.shutdown().await;
        // Raft's last metrics still name this manager leader once Raft has
        // stopped: going round again would start and stop the controllers
        // in a busy loop.
        if raft_stopped {
            tracing::error!("Raft has stopped on this manager: controllers stopped");
            return;
        }
        tracing::info!("no longer leading: controllers stopped");
        if *stop.borrow() {
            return;
        }
    }
}

/// Runs `decide` after every commit, over the services that changed since
/// its last pass; over everything at start, when a node or the cluster
/// changed, at the wake-up a pass asked for, and after a write failed.
async fn controller(store: Store, name: &'static str, interest: Interest, mut decide: Decide) {
    let mut changes = store.subscribe();
    let mut mark: Option<ChangeMark> = None;
    let mut wake_at: Option<DateTime<Utc>> = None;
    // What the last pass left for this one (see `Plan::rest`).
    let mut rest = BTreeSet::new();
    loop {
        changes.borrow_and_update();
        let now = Utc::now();
        let woken = wake_at.is_some_and(|at| at <= now);
        let (mut plan, full, seen) = off_the_runtime(|| {
            store.read(|s| {
                let scope = match mark {
                    Some(m) if !woken => s.changed_services_for(&m, interest).map(|mut changed| {
                        changed.append(&mut rest);
                        changed
                    }),
                    _ => None,
                };
                let mut plan = decide(s, now, scope.as_ref());
                crate::orchestrator::with_task_defaults(s, &mut plan.ops);
                (plan, scope.is_none(), s.change_mark())
            })
        });
        mark = Some(seen);
        rest = std::mem::take(&mut plan.rest);
        // A partial pass only knows the wake-ups of the services it saw.
        wake_at = if full {
            plan.wake_at
        } else {
            wake_at.into_iter().chain(plan.wake_at).min()
        };
        let mut backoff = None;
        if !plan.ops.is_empty() {
            let count = plan.ops.len();
            match store.propose(plan.ops).await {
                Ok((_, results)) => {
                    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
                    if let Some(e) = failed.first() {
                        tracing::debug!(
                            "{name}: {} of {count} ops not applied, first: {e}",
                            failed.len()
                        );
                        // A failed op changed nothing, so its service would
                        // not come up again by itself.
                        mark = None;
                    }
                    if failed.len() == count {
                        backoff = Some(BACKOFF);
                    } else {
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!("{name}: {e}");
                    mark = None;
                    backoff = Some(BACKOFF);
                }
            }
        }
        // Sleep until the state changes, the wake-up, or the backoff.
        let until_wake = wake_at.map(|at| (at - Utc::now()).to_std().unwrap_or_default());
        let wake = [until_wake, backoff]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(wake) => {},
        }
        tokio::time::sleep(SETTLE).await;
    }
}

/// Runs a pass that may take a while (a full one over 100,000 tasks takes
/// tens of milliseconds) so that the runtime's other tasks carry on
/// meanwhile: with two cores, two passes at once left no thread to answer
/// the nodes' keepalive pings, and their connections were closed.
fn off_the_runtime<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

async fn expire_nodes(store: Store, dispatcher: Arc<Dispatcher>) {
    // What this manager heard in an earlier term is stale: counted from
    // then, every node would be silent for long and be marked Down at
    // once, its tasks started again elsewhere while they still run.
    dispatcher.new_term();
    // Often enough for any period; the check itself is a map lookup per node.
    let mut tick = tokio::time::interval(EXPIRE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        let late = now.saturating_duration_since(last + EXPIRE_TICK);
        last = now;
        if late > STALL {
            tracing::warn!(
                "this manager stalled for {late:?}: every node's heartbeat grace starts again"
            );
            dispatcher.stalled(now.into_std());
        }
        let ops = store.read(|s| dispatcher.expire(s));
        if ops.is_empty() {
            continue;
        }
        let down: Vec<(String, String)> = ops
            .iter()
            .filter_map(|op| match op {
                Op::SetNodeStatus { id, status, .. } => {
                    Some((id.clone(), status.message.clone().unwrap_or_default()))
                }
                _ => None,
            })
            .collect();
        match store.propose(ops).await {
            // Counted by bench/scale.sh: a simulated node is never down.
            Ok(_) => {
                for (node, why) in down {
                    tracing::warn!(node = %node, "node marked down: {why}");
                }
            }
            Err(e) => tracing::warn!("marking nodes down: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raft stopped under a leader (a fatal storage error, or shutdown):
    /// its last metrics still say leader, and the loop used to start and
    /// stop the controllers again and again, at full CPU.
    #[tokio::test]
    async fn the_leader_loop_ends_when_raft_stops() {
        let (store, _dir) = crate::testutil::store().await;
        let (_stop_tx, stop) = watch::channel(false);
        let (dispatcher, _background) = Dispatcher::start(store.clone(), stop.clone());
        let leading = tokio::spawn(run(store.clone(), dispatcher, stop));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!leading.is_finished());
        store.raft().shutdown().await.expect("raft shutdown");
        let ended = tokio::time::timeout(Duration::from_secs(5), leading).await;
        assert!(
            ended.is_ok(),
            "the leader loop still runs after Raft stopped"
        );
    }
}
