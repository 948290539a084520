//! The rebalancer: when a node becomes ready and active (it joined, came
//! back from Down, or was activated after a drain or a pause), replicated
//! services move tasks onto it until every eligible node is within one
//! task of its fair share. Swarm leaves such a node empty (moby#24103).
//!
//! A move replaces a slot's task by a new one pinned to the emptier node,
//! paced by the service's own update config:
//! - stop-first stops the old task first; the new one starts once it has
//!   stopped (the worker takes the old one out of the mesh before that);
//! - start-first starts the new one beside it, and the replicated
//!   orchestrator stops the old one once the new one runs (of two tasks
//!   of one template in a slot it keeps the running newest);
//! - at most `parallelism` moves of a service at once, and [`MAX_MOVES`]
//!   across the swarm; `delay` between a service's moves;
//! - a moved task that fails within the monitor period stops the
//!   service's rebalancing for [`FAILURE_PAUSE`].
//!
//! Where: the same filters as the scheduler (constraints, platform,
//! resources, max replicas per node, host ports), and placement
//! preferences: a move between two spread groups needs the source's group
//! to hold two tasks more than the destination's.
//!
//! Hysteresis, so that a node that comes and goes does not pull tasks back
//! and forth: a node takes moves only once it has stayed ready and active
//! for [`SETTLE`], doubled for each other time it was lost in the last
//! [`FLAP_MEMORY`] (at most [`MAX_SETTLE`]); and a move needs an imbalance
//! of two tasks (one would only swap which node holds the extra task).
//!
//! Off for the swarm or for one service with the label [`LABEL`]` = false`
//! (on the swarm spec, or the service's).
//!
//! What it remembers (since when each node is eligible, which services are
//! still to look at) lives in the leader's memory; the moves themselves are
//! tasks in the store, marked ([`flotilla_store::state::is_move`]), so a
//! new leader's orchestrator finishes them. Nodes already settled when a
//! manager takes the lead do not start a rebalance.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use flotilla_store::ids::format_time;
use flotilla_store::models::{
    Node, Service, ServiceUpdateStatusStateEnum as Phase, Task, TaskState,
};
use flotilla_store::state::{is_move, is_terminal, NodeExt, State, TaskExt, MOVE_MARK};
use flotilla_store::Op;

use super::update::config::{self, Order};
use super::update::may_run;
use super::update::progress::{ended_badly, running_since};
use super::{parse_time, replacement, set_desired, Plan};
use crate::scheduler;

/// How long a node stays ready and active before tasks move to it.
pub const SETTLE: Duration = Duration::seconds(10);
/// The longest a node that keeps coming and going waits.
pub const MAX_SETTLE: Duration = Duration::minutes(5);
/// How long a loss of a node counts against it.
pub const FLAP_MEMORY: Duration = Duration::minutes(10);
/// Moves in flight across the swarm at once.
pub const MAX_MOVES: usize = 8;
/// How long a service whose moved task failed is left alone.
pub const FAILURE_PAUSE: Duration = Duration::minutes(5);
/// How long a move's task may wait for its node before the move is given
/// up (the node filled up meanwhile): its slot is then refilled anywhere.
pub const PLACE_TIMEOUT: Duration = Duration::seconds(30);
/// Services looked at for moves in one pass, at most (each costs a look
/// at its tasks).
const LOOK_PER_PASS: usize = 64;
/// The label that turns rebalancing off (`false`) for the swarm (on its
/// spec) or for one service.
pub const LABEL: &str = "com.flotilla.rebalance";

/// Whether a label value turns rebalancing off.
fn off(value: Option<&String>) -> bool {
    value.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "false" | "0" | "off" | "no"
        )
    })
}

/// Whether the swarm rebalances (on unless its spec's label says not).
pub fn swarm_enabled(state: &State) -> bool {
    !off(state
        .cluster
        .as_ref()
        .and_then(|c| c.spec.as_ref())
        .and_then(|s| s.labels.as_ref())
        .and_then(|l| l.get(LABEL)))
}

/// Whether this service's tasks may be moved.
pub fn service_enabled(svc: &Service) -> bool {
    !off(svc
        .spec
        .as_ref()
        .and_then(|s| s.labels.as_ref())
        .and_then(|l| l.get(LABEL)))
}

/// What the rebalancer remembers of one node.
#[derive(Debug, Default)]
struct Watch {
    /// Since when it is ready and active; None while it is not.
    since: Option<DateTime<Utc>>,
    /// It has stayed long enough to take moves.
    settled: bool,
    /// When it stopped being ready and active, within [`FLAP_MEMORY`].
    losses: Vec<DateTime<Utc>>,
}

/// How long a node lost `losses` times lately waits before it takes
/// moves: [`SETTLE`] after its first loss (or none), twice as long for
/// each loss before it.
pub fn settle_for(losses: usize) -> Duration {
    let factor = 1i32 << losses.saturating_sub(1).min(8);
    (SETTLE * factor).min(MAX_SETTLE)
}

/// The rebalancer's memory between the replicated orchestrator's passes.
#[derive(Debug, Default)]
pub struct Rebalancer {
    nodes: HashMap<String, Watch>,
    /// Services still to look at since a node settled.
    todo: BTreeSet<String>,
    /// Where the last pass stopped looking in `todo`.
    cursor: Option<String>,
    /// Moves in flight per service, as last seen.
    in_flight: HashMap<String, usize>,
    started: bool,
}

/// A pass's view for the services it looks at.
pub struct Moves<'r> {
    rebalancer: &'r mut Rebalancer,
    /// The nodes that may take moves now.
    destinations: BTreeSet<String>,
}

/// What became of a service a pass looked at.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to move (or moving is off for it): it leaves the list.
    Done,
    /// Moves in flight, or waiting for its delay or the swarm's bound.
    Waiting,
}

impl Rebalancer {
    /// The replicated orchestrator's pass, with moves for the services the
    /// rebalancer has to look at.
    pub fn reconcile(
        &mut self,
        state: &State,
        now: DateTime<Utc>,
        scope: Option<&BTreeSet<String>>,
    ) -> Plan {
        let mut wake = None;
        let (destinations, armed) = self.observe(state, now, &mut wake);
        if !swarm_enabled(state) {
            self.todo.clear();
        } else if armed {
            self.todo = state
                .services
                .values()
                .filter(|s| !super::is_global(s) && !super::jobs::is_job(s) && service_enabled(s))
                .filter_map(|s| s.id.clone())
                .collect();
            self.cursor = None;
        }
        self.todo.retain(|id| state.services.contains_key(id));
        self.in_flight
            .retain(|id, n| *n > 0 && state.services.contains_key(id));
        let mut moves = Moves {
            rebalancer: self,
            destinations,
        };
        let mut plan = super::replicated::reconcile_with(state, now, scope, Some(&mut moves));
        // Then services still to look at, with what the swarm's bound
        // leaves now that the pass has counted its moves again.
        if let Some(scope) = scope {
            let look: BTreeSet<String> = moves
                .rebalancer
                .next_to_look()
                .into_iter()
                .filter(|id| !scope.contains(id))
                .collect();
            if !look.is_empty() && !plan.at_budget() {
                let more =
                    super::replicated::reconcile_with(state, now, Some(&look), Some(&mut moves));
                plan.ops.extend(more.ops);
                plan.rest.extend(more.rest);
                if let Some(at) = more.wake_at {
                    plan.wake(at);
                }
            }
        }
        if let Some(at) = wake {
            plan.wake(at);
        }
        plan
    }

    /// Notes which nodes are ready and active, since when. Returns the
    /// nodes that may take moves now, and whether one has just settled.
    fn observe(
        &mut self,
        state: &State,
        now: DateTime<Utc>,
        wake: &mut Option<DateTime<Utc>>,
    ) -> (BTreeSet<String>, bool) {
        let first = !self.started;
        self.started = true;
        let mut destinations = BTreeSet::new();
        let mut armed = false;
        for (id, node) in &state.nodes {
            let eligible = node.takes_new_tasks();
            let w = self.nodes.entry(id.clone()).or_insert_with(|| {
                if first && eligible {
                    // Eligible before this manager led: settled already if
                    // its last status change is old enough.
                    let since =
                        parse_time(&node.updated_at).map_or(now - MAX_SETTLE, |at| at.min(now));
                    Watch {
                        since: Some(since),
                        settled: since + SETTLE <= now,
                        losses: Vec::new(),
                    }
                } else {
                    Watch::default()
                }
            });
            w.losses.retain(|at| now - *at < FLAP_MEMORY);
            if !eligible {
                if w.since.take().is_some() {
                    w.losses.push(now);
                }
                w.settled = false;
                continue;
            }
            let since = *w.since.get_or_insert(now);
            let at = since + settle_for(w.losses.len());
            if now >= at {
                if !w.settled {
                    w.settled = true;
                    armed = true;
                    tracing::info!(node = %id, "node settled: rebalancing services onto it");
                }
                destinations.insert(id.clone());
            } else {
                *wake = Some(wake.map_or(at, |w: DateTime<Utc>| w.min(at)));
            }
        }
        self.nodes.retain(|id, _| state.nodes.contains_key(id));
        (destinations, armed)
    }

    /// The next services of `todo` to look at, round the list.
    fn next_to_look(&mut self) -> Vec<String> {
        if self.todo.is_empty() || self.in_flight.values().sum::<usize>() >= MAX_MOVES {
            return Vec::new();
        }
        let after: Vec<String> = match &self.cursor {
            Some(c) => self
                .todo
                .range::<String, _>((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                .chain(self.todo.iter())
                .take(LOOK_PER_PASS.min(self.todo.len()))
                .cloned()
                .collect(),
            None => self.todo.iter().take(LOOK_PER_PASS).cloned().collect(),
        };
        self.cursor = after.last().cloned();
        after
    }
}

impl super::replicated::Moves for Moves<'_> {
    fn wants(&self, id: &str) -> bool {
        self.rebalancer.todo.contains(id) || self.rebalancer.in_flight.contains_key(id)
    }

    /// Looks at one service whose slots this pass left as they were.
    fn service(
        &mut self,
        state: &State,
        svc: &Service,
        by_slot: &BTreeMap<i64, Vec<&Task>>,
        now: DateTime<Utc>,
        plan: &mut Plan,
    ) {
        let id = svc.id.clone().unwrap_or_default();
        let others: usize = self
            .rebalancer
            .in_flight
            .iter()
            .filter(|(s, _)| **s != id)
            .map(|(_, n)| n)
            .sum();
        let mut budget = MAX_MOVES.saturating_sub(others);
        let (outcome, in_flight) = plan_moves(
            state,
            svc,
            by_slot,
            &self.destinations,
            now,
            &mut budget,
            plan,
        );
        if in_flight > 0 {
            self.rebalancer.in_flight.insert(id.clone(), in_flight);
        } else {
            self.rebalancer.in_flight.remove(&id);
        }
        if outcome == Outcome::Done {
            self.rebalancer.todo.remove(&id);
        }
    }
}

/// A slot's task that may be moved: the only wanted task of its slot,
/// running.
struct Movable<'a> {
    slot: i64,
    task: &'a Task,
}

/// The moves service `svc` makes now toward `destinations`, at most
/// `budget` of them (decremented), into `plan`. Returns what became of
/// the service and its moves in flight.
pub fn plan_moves(
    state: &State,
    svc: &Service,
    by_slot: &BTreeMap<i64, Vec<&Task>>,
    destinations: &BTreeSet<String>,
    now: DateTime<Utc>,
    budget: &mut usize,
    plan: &mut Plan,
) -> (Outcome, usize) {
    let Some(spec) = svc.spec.as_ref() else {
        return (Outcome::Done, 0);
    };
    let phase = svc.update_status.as_ref().and_then(|s| s.state);
    let updating = matches!(
        phase,
        Some(Phase::UPDATING | Phase::ROLLBACK_STARTED | Phase::PAUSED | Phase::ROLLBACK_PAUSED)
    );
    let cfg = config::config(spec, false);

    let mut in_flight = 0;
    let mut unplaced = false;
    let mut last_settled: Option<DateTime<Utc>> = None;
    let mut failed_at: Option<DateTime<Utc>> = None;
    let mut movable: BTreeMap<String, Vec<Movable>> = BTreeMap::new();
    let mut count: HashMap<String, usize> = HashMap::new();
    let mut sample: Option<&Task> = None;
    for (&slot, tasks) in by_slot {
        for t in tasks.iter().filter(|t| is_move(t) && ended_badly(t)) {
            let ended = parse_time(&t.status.as_ref().and_then(|s| s.timestamp.clone()));
            let early = running_since(t)
                .zip(ended)
                .is_none_or(|(r, e)| e <= r + cfg.monitor);
            if early {
                failed_at = failed_at.max(ended.or(Some(now)));
            }
        }
        let live: Vec<&Task> = tasks
            .iter()
            .copied()
            .filter(|t| t.desired() <= TaskState::RUNNING && !is_terminal(t.state()))
            .collect();
        let newest_move = live
            .iter()
            .filter(|t| is_move(t))
            .max_by_key(|t| t.created_at.clone());
        let mut settled = true;
        if let Some(m) = newest_move {
            let others_run = tasks
                .iter()
                .any(|o| o.id_str() != m.id_str() && may_run(state, o));
            if m.state() < TaskState::ASSIGNED {
                let created = parse_time(&m.created_at).unwrap_or(now);
                if now >= created + PLACE_TIMEOUT {
                    // Removed before it ran anywhere: the reaper takes it
                    // and the replicated orchestrator refills the slot.
                    plan.ops
                        .push(set_desired(m, TaskState::REMOVE, &format_time(now)));
                    failed_at = Some(now);
                } else {
                    plan.wake(created + PLACE_TIMEOUT);
                }
            }
            if m.state() < TaskState::RUNNING || others_run {
                in_flight += 1;
                settled = false;
                unplaced |= m.state() < TaskState::ASSIGNED;
            } else {
                last_settled = last_settled.max(running_since(m));
            }
        }
        for t in &live {
            if let Some(n) = t.node() {
                *count.entry(n.to_string()).or_default() += 1;
            }
            sample.get_or_insert(t);
        }
        if let [t] = live.as_slice() {
            if settled && t.state() == TaskState::RUNNING {
                if let Some(n) = t.node() {
                    movable
                        .entry(n.to_string())
                        .or_default()
                        .push(Movable { slot, task: t });
                }
            }
        }
    }
    if updating || !service_enabled(svc) || !swarm_enabled(state) {
        return (Outcome::Done, in_flight);
    }
    if failed_at.is_some_and(|at| now < at + FAILURE_PAUSE) {
        return (Outcome::Done, in_flight);
    }
    let mut places = match cfg.parallelism {
        0 => usize::MAX,
        n => n.saturating_sub(in_flight),
    };
    if unplaced || places == 0 || *budget == 0 {
        return (Outcome::Waiting, in_flight);
    }
    if let Some(at) = last_settled.map(|s| s + cfg.delay) {
        if now < at {
            plan.wake(at);
            return (Outcome::Waiting, in_flight);
        }
    }
    let Some(sample) = sample else {
        return (Outcome::Done, in_flight);
    };
    let spread = scheduler::spread_of(svc);
    // Most looks end here: no destination holds two tasks fewer than the
    // busiest node (with spread preferences the groups decide, below).
    let busiest = count.values().copied().max().unwrap_or(0);
    let emptiest = destinations
        .iter()
        .map(|d| count.get(d).copied().unwrap_or(0))
        .min();
    if spread.is_empty() && emptiest.is_none_or(|e| e + 2 > busiest) {
        return if in_flight == 0 {
            (Outcome::Done, 0)
        } else {
            (Outcome::Waiting, in_flight)
        };
    }

    // The nodes the service's tasks may run on, and its spread groups.
    let eligible: Vec<&Node> = scheduler::suiting(state, svc, sample);
    let group = |node: &Node, level: usize| crate::constraint::attribute(node, &spread[level]);
    let mut groups: Vec<HashMap<Option<String>, usize>> = vec![HashMap::new(); spread.len()];
    for node in &eligible {
        let c = count.get(node_id(node)).copied().unwrap_or(0);
        for (level, counts) in groups.iter_mut().enumerate() {
            *counts.entry(group(node, level)).or_default() += c;
        }
    }
    let max_replicas = spec
        .task_template
        .as_ref()
        .and_then(|t| t.placement.as_ref())
        .and_then(|p| p.max_replicas)
        .unwrap_or(0)
        .max(0) as usize;
    let mut full: BTreeSet<String> = BTreeSet::new();
    let now_s = format_time(now);
    let mut planned = 0;
    let order = cfg.order;

    while places > 0 && *budget > 0 {
        let rank = |node: &Node, count: &HashMap<String, usize>| {
            let mut r: Vec<usize> = (0..spread.len())
                .map(|l| groups[l].get(&group(node, l)).copied().unwrap_or(0))
                .collect();
            r.push(count.get(node_id(node)).copied().unwrap_or(0));
            r
        };
        let mut dsts: Vec<&&Node> = eligible
            .iter()
            .filter(|n| destinations.contains(node_id(n)) && !full.contains(node_id(n)))
            .collect();
        dsts.sort_by_key(|n| rank(n, &count));
        let mut srcs: Vec<&&Node> = eligible
            .iter()
            .filter(|n| movable.get(node_id(n)).is_some_and(|m| !m.is_empty()))
            .collect();
        srcs.sort_by_key(|n| std::cmp::Reverse(rank(n, &count)));
        let mut found = None;
        // The cheap question (would a move even out?) before the one that
        // counts the node's load from the store (would it fit?).
        for dst in dsts {
            let d = node_id(dst);
            let c = count.get(d).copied().unwrap_or(0);
            if max_replicas > 0 && c + 1 > max_replicas {
                full.insert(d.to_string());
                continue;
            }
            let Some(src) = srcs
                .iter()
                .find(|src| improves(src, dst, &spread, &groups, &count))
            else {
                continue;
            };
            if !scheduler::fits(state, dst, sample) {
                full.insert(d.to_string());
                continue;
            }
            found = Some((**src, *dst));
            break;
        }
        let Some((src, dst)) = found else { break };
        let (s, d) = (node_id(src).to_string(), node_id(dst).to_string());
        let Some(m) = movable.get_mut(&s).and_then(|m| m.pop()) else {
            break;
        };
        let desired = match order {
            Order::StopFirst => {
                plan.ops
                    .push(set_desired(m.task, TaskState::SHUTDOWN, &now_s));
                TaskState::READY
            }
            Order::StartFirst => TaskState::RUNNING,
        };
        let mut task = replacement(state, svc, m.task, Some(m.slot), Some(&d), desired, &now_s);
        task.runtime.update = Some(format!("{MOVE_MARK} {now_s}"));
        plan.ops.push(Op::CreateTask(Box::new(task)));
        tracing::debug!(service = %svc.id.as_deref().unwrap_or_default(), slot = m.slot, from = %s, to = %d, "moving a task");
        *count.entry(s.clone()).or_default() -= 1;
        *count.entry(d.clone()).or_default() += 1;
        for (level, counts) in groups.iter_mut().enumerate() {
            *counts.entry(group(src, level)).or_default() -= 1;
            *counts.entry(group(dst, level)).or_default() += 1;
        }
        places -= 1;
        *budget -= 1;
        in_flight += 1;
        planned += 1;
    }
    if planned == 0 && in_flight == 0 {
        (Outcome::Done, 0)
    } else {
        (Outcome::Waiting, in_flight)
    }
}

fn node_id(node: &Node) -> &str {
    node.id.as_deref().unwrap_or_default()
}

/// Whether moving one task from `src` to `dst` evens the service out: at
/// the first spread level where they are in different groups, the
/// source's group holds two tasks more; in the same groups throughout,
/// the source node does.
fn improves(
    src: &Node,
    dst: &Node,
    spread: &[String],
    groups: &[HashMap<Option<String>, usize>],
    count: &HashMap<String, usize>,
) -> bool {
    for (level, key) in spread.iter().enumerate() {
        let (gs, gd) = (
            crate::constraint::attribute(src, key),
            crate::constraint::attribute(dst, key),
        );
        if gs != gd {
            let at = |g| groups[level].get(&g).copied().unwrap_or(0);
            return at(gd) + 2 <= at(gs);
        }
    }
    let at = |n: &Node| count.get(node_id(n)).copied().unwrap_or(0);
    node_id(src) != node_id(dst) && at(dst) + 2 <= at(src)
}
