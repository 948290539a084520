//! The scheduler places pending tasks on nodes.
//!
//! Filters first (node ready and active, constraints, reserved resources,
//! max replicas per node, host-mode ports free), then spread: by each
//! placement preference in turn (`spread=node.labels.zone`: the nodes whose
//! value of the label holds the fewest tasks of the service, nodes without
//! the label counting as one more value, as SwarmKit's tree spreads them),
//! then the node with the fewest tasks of the service, then the fewest
//! tasks overall. A task no node fits stays
//! PENDING with Docker's explanation ("no suitable node (…)").
//!
//! Indexed, as SwarmKit's is: node loads are kept between passes and
//! counted again only for the services that changed; a service's tasks are
//! placed off a list of its candidate nodes ordered by rank, so a task
//! costs a few ordered-set operations rather than a look at every node.
//! Spread preferences, tasks tied to a node and the explanation of why
//! none fits still look at every node.
//!
//! Tasks created NEW are moved to PENDING here too (what SwarmKit's
//! allocator does once networks are allocated; Flotilla has nothing to
//! allocate before scheduling yet).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// What the scheduler is told of: a task that starts running changes no
/// node's load (it counted since its assignment).
pub const INTEREST: Interest = Interest::NotStarts;

use flotilla_store::models::{
    GenericResourcesInner, Node, Service, Task, TaskSpec, TaskState, TaskStatus,
};
use flotilla_store::network::{self, task_ports};
use flotilla_store::state::NodeExt;
use flotilla_store::state::{is_terminal, State, TaskExt};
use flotilla_store::{Interest, Op};

use crate::constraint::{self, Constraint};

/// What a node has committed already: the sum of its tasks' [`Share`]s.
#[derive(Debug, Default, Clone, PartialEq)]
struct NodeLoad {
    per_service: HashMap<Arc<str>, usize>,
    total: usize,
    cpus: i64,
    memory: i64,
    /// Host-mode published ports taken by the node's tasks (with how many
    /// tasks hold each, so that one going does not free it for the other).
    host_ports: HashMap<(String, u16), usize>,
    /// Generic resources its tasks were given.
    generic: crate::generic::Pool,
}

/// What one task adds to its node's load, kept so that it can be taken
/// back when the task changes or goes.
#[derive(Debug, Clone, PartialEq)]
struct Share {
    node: Arc<str>,
    service: Arc<str>,
    cpus: i64,
    memory: i64,
    host_ports: Vec<(String, u16)>,
    generic: Vec<GenericResourcesInner>,
}

impl Share {
    /// What `t` holds on its node, if it holds anything: a task counts from
    /// the moment it is assigned until it ends or is no longer wanted.
    fn of(t: &Task, names: &mut Names) -> Option<Share> {
        let node = t.node()?;
        if is_terminal(t.state()) || !t.is_wanted() || t.state() < TaskState::ASSIGNED {
            return None;
        }
        Some(Share::placed(t, names.get(node), names.get(t.service())))
    }

    /// What `t` of `service` will hold on `node` once assigned there.
    fn placed(t: &Task, node: Arc<str>, service: Arc<str>) -> Share {
        let (cpus, memory) = reservation(t);
        Share {
            node,
            service,
            cpus,
            memory,
            host_ports: host_ports(t).collect(),
            generic: t.assigned_generic_resources.clone().unwrap_or_default(),
        }
    }
}

impl NodeLoad {
    fn add(&mut self, s: &Share) {
        *self.per_service.entry(s.service.clone()).or_default() += 1;
        self.total += 1;
        self.cpus += s.cpus;
        self.memory += s.memory;
        for p in &s.host_ports {
            *self.host_ports.entry(p.clone()).or_default() += 1;
        }
        self.generic.add(&s.generic);
    }

    fn remove(&mut self, s: &Share) {
        if let Some(n) = self.per_service.get_mut(&s.service) {
            *n -= 1;
            if *n == 0 {
                self.per_service.remove(&s.service);
            }
        }
        self.total -= 1;
        self.cpus -= s.cpus;
        self.memory -= s.memory;
        for p in &s.host_ports {
            if let Some(n) = self.host_ports.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    self.host_ports.remove(p);
                }
            }
        }
        self.generic.remove(&s.generic);
    }

    fn of_service(&self, service: &str) -> usize {
        self.per_service.get(service).copied().unwrap_or(0)
    }
}

/// One shared copy of each node and service ID the scheduler keeps: it
/// keeps a [`Share`] per task and a count per service on each node, and
/// copies of the IDs were most of their memory.
#[derive(Debug, Default)]
struct Names(HashSet<Arc<str>>);

impl Names {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.0.get(name) {
            return known.clone();
        }
        let new: Arc<str> = Arc::from(name);
        self.0.insert(new.clone());
        new
    }

    /// Lets go of the names nothing holds any more (removed services and
    /// nodes), once they could be a good part of the set.
    fn prune(&mut self, live: usize) {
        if self.0.len() > 2 * live + 64 {
            self.0.retain(|n| Arc::strong_count(n) > 1);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Reject {
    NotAvailable,
    Constraints,
    Resources,
    MaxReplicas,
    HostPorts,
    MissingPlugin,
    Platform,
}

impl Reject {
    fn explain(self, nodes: usize) -> String {
        let s = if nodes == 1 { "" } else { "s" };
        match self {
            Reject::NotAvailable => format!("{nodes} node{s} not available for new tasks"),
            Reject::Constraints => {
                format!("scheduling constraints not satisfied on {nodes} node{s}")
            }
            Reject::Resources => format!("insufficient resources on {nodes} node{s}"),
            Reject::MaxReplicas => "max replicas per node limit exceed".to_string(),
            Reject::HostPorts => format!("host-mode port already in use on {nodes} node{s}"),
            // SwarmKit's plugin filter's words.
            Reject::MissingPlugin => format!("missing plugin on {nodes} node{s}"),
            Reject::Platform => format!("unsupported platform on {nodes} node{s}"),
        }
    }
}

/// The host-mode ports a task binds on its node (a published port of 0
/// lets the engine pick one, which never conflicts).
fn host_ports(t: &Task) -> impl Iterator<Item = (String, u16)> + '_ {
    use flotilla_store::models::EndpointPortConfigPublishModeEnum as Mode;
    task_ports(t).iter().filter_map(|p| {
        let published = u16::try_from(p.published_port?).ok().filter(|p| *p != 0)?;
        (network::mode(p) == Mode::HOST).then(|| (network::protocol(p).to_string(), published))
    })
}

fn reservation(t: &Task) -> (i64, i64) {
    let r = t
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.reservations.as_ref());
    (
        r.and_then(|r| r.nano_cpus).unwrap_or(0),
        r.and_then(|r| r.memory_bytes).unwrap_or(0),
    )
}

fn check(
    node: &Node,
    load: &NodeLoad,
    task: &Task,
    constraints: &[Constraint],
    max_replicas: u64,
) -> Result<(), Reject> {
    suits(node, task, constraints)?;
    has_room(node, load, task, max_replicas)
}

/// What does not change while a pass places tasks: whether the node takes
/// tasks at all, and tasks of this kind.
fn suits(node: &Node, task: &Task, constraints: &[Constraint]) -> Result<(), Reject> {
    if !node.takes_new_tasks() {
        return Err(Reject::NotAvailable);
    }
    if !constraints.iter().all(|c| c.matches(node)) {
        return Err(Reject::Constraints);
    }
    if on_networks(task) && !has_network_plugin(node, "overlay") {
        return Err(Reject::MissingPlugin);
    }
    if !platform_fits(node, task) {
        return Err(Reject::Platform);
    }
    Ok(())
}

/// Whether the node has room left for the task. A pass only ever adds to a
/// node's load, so a node without room keeps none for the rest of it.
fn has_room(node: &Node, load: &NodeLoad, task: &Task, max_replicas: u64) -> Result<(), Reject> {
    let (cpus, mem) = reservation(task);
    let res = node.description.as_ref().and_then(|d| d.resources.as_ref());
    let (have_cpus, have_mem) = (
        res.and_then(|r| r.nano_cpus).unwrap_or(0),
        res.and_then(|r| r.memory_bytes).unwrap_or(0),
    );
    if (cpus > 0 && load.cpus + cpus > have_cpus) || (mem > 0 && load.memory + mem > have_mem) {
        return Err(Reject::Resources);
    }
    if generic_claim(node, load, task).is_none() {
        return Err(Reject::Resources);
    }
    if max_replicas > 0 && load.of_service(task.service()) as u64 >= max_replicas {
        return Err(Reject::MaxReplicas);
    }
    if host_ports(task).any(|p| load.host_ports.contains_key(&p)) {
        return Err(Reject::HostPorts);
    }
    Ok(())
}

/// Whether the node's platform is one of the task's `Placement.Platforms`
/// (any, when it names none), with SwarmKit's equivalences (x86_64 is
/// amd64, aarch64 is arm64; an empty field matches anything).
fn platform_fits(node: &Node, task: &Task) -> bool {
    let wanted = task
        .spec
        .as_ref()
        .and_then(|s| s.placement.as_ref())
        .and_then(|p| p.platforms.as_deref())
        .unwrap_or_default();
    if wanted.is_empty() {
        return true;
    }
    let arch = |a: &str| match a {
        "x86_64" => "amd64".to_string(),
        "aarch64" => "arm64".to_string(),
        other => other.to_string(),
    };
    let Some(have) = node.description.as_ref().and_then(|d| d.platform.as_ref()) else {
        return false;
    };
    let (have_os, have_arch) = (
        have.os.clone().unwrap_or_default(),
        arch(have.architecture.as_deref().unwrap_or_default()),
    );
    wanted.iter().any(|p| {
        let os = p.os.as_deref().unwrap_or_default();
        let a = arch(p.architecture.as_deref().unwrap_or_default());
        (a.is_empty() || a == have_arch) && (os.is_empty() || os == have_os)
    })
}

/// The generic resources the task would get on the node: Some(empty)
/// when it asks for none, None when the node has not enough left.
fn generic_claim(
    node: &Node,
    load: &NodeLoad,
    task: &Task,
) -> Option<flotilla_store::models::GenericResources> {
    let wanted = crate::generic::requested(task);
    if wanted.is_empty() {
        return Some(Vec::new());
    }
    crate::generic::claim(&crate::generic::offered(node), &load.generic, &wanted)
}

fn on_networks(task: &Task) -> bool {
    task.spec
        .as_ref()
        .and_then(|s| s.networks.as_ref())
        .is_some_and(|n| !n.is_empty())
}

/// Whether the node's engine lists network driver `name` (a node that can
/// carry overlay networks lists `overlay`, as Docker's engines do).
fn has_network_plugin(node: &Node, name: &str) -> bool {
    node.description
        .as_ref()
        .and_then(|d| d.engine.as_ref())
        .and_then(|e| e.plugins.as_ref())
        .is_some_and(|plugins| {
            plugins
                .iter()
                .any(|p| p.typ.as_deref() == Some("Network") && p.name.as_deref() == Some(name))
        })
}

/// How good a node is for a task, lowest best: the service's tasks in the
/// node's group at each preference level, on the node, on the node overall.
type Rank = (Vec<usize>, usize, usize);

/// What a service's tasks are placed by.
struct Placement {
    constraints: Vec<Constraint>,
    max_replicas: u64,
    /// The attribute of each `spread` preference, in order.
    spread: Vec<String>,
    /// Per preference, the service's tasks on the nodes of each value.
    counts: Vec<HashMap<Option<String>, usize>>,
}

fn placement(svc: Option<&Service>) -> (Vec<Constraint>, u64, Vec<String>) {
    let p = svc
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.placement.as_ref());
    let exprs = p.and_then(|p| p.constraints.clone()).unwrap_or_default();
    let max = p.and_then(|p| p.max_replicas).unwrap_or(0).max(0) as u64;
    // Constraints were validated when the service was written; one that no
    // longer parses matches no node rather than every node.
    let constraints = constraint::parse_all(&exprs).unwrap_or_else(|e| {
        vec![Constraint {
            key: "node.id".into(),
            equal: true,
            value: format!("<invalid: {e}>"),
        }]
    });
    let spread = p
        .and_then(|p| p.preferences.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|pref| pref.spread.as_ref()?.spread_descriptor.clone())
        .collect();
    (constraints, max, spread)
}

impl Placement {
    fn new(state: &State, service: &str, nodes: &[&Node], loads: &[NodeLoad]) -> Self {
        let (constraints, max_replicas, spread) = placement(state.services.get(service));
        let counts = spread
            .iter()
            .map(|key| {
                let mut by_value: HashMap<Option<String>, usize> = HashMap::new();
                for (node, load) in nodes.iter().zip(loads) {
                    let n = load.of_service(service);
                    *by_value
                        .entry(constraint::attribute(node, key))
                        .or_default() += n;
                }
                by_value
            })
            .collect();
        Placement {
            constraints,
            max_replicas,
            spread,
            counts,
        }
    }

    /// The service's tasks in the node's group at each preference level.
    fn spread_rank(&self, node: &Node) -> Vec<usize> {
        self.spread
            .iter()
            .zip(&self.counts)
            .map(|(key, counts)| {
                counts
                    .get(&constraint::attribute(node, key))
                    .copied()
                    .unwrap_or(0)
            })
            .collect()
    }

    fn placed_on(&mut self, node: &Node) {
        for (key, counts) in self.spread.iter().zip(self.counts.iter_mut()) {
            *counts.entry(constraint::attribute(node, key)).or_default() += 1;
        }
    }
}

/// Whether `node` would take one more task like `task` now, by the
/// scheduler's own filters over the node's load counted afresh from the
/// store: the rebalancer's question about one node.
pub(crate) fn fits(state: &State, node: &Node, task: &Task) -> bool {
    let mut names = Names::default();
    let mut load = NodeLoad::default();
    for t in state.tasks_on_node(node.id.as_deref().unwrap_or_default()) {
        if let Some(share) = Share::of(t, &mut names) {
            load.add(&share);
        }
    }
    let (constraints, max_replicas, _) = placement(state.services.get(task.service()));
    check(node, &load, task, &constraints, max_replicas).is_ok()
}

/// Which nodes suit the service's tasks at all (ready and active,
/// constraints, platform, plugins), whatever their load.
pub(crate) fn suiting<'a>(state: &'a State, svc: &Service, task: &Task) -> Vec<&'a Node> {
    let (constraints, _, _) = placement(Some(svc));
    state
        .nodes
        .values()
        .filter(|n| suits(n, task, &constraints).is_ok())
        .collect()
}

/// The attributes of the service's `spread` placement preferences, in order.
pub(crate) fn spread_of(svc: &Service) -> Vec<String> {
    placement(Some(svc)).2
}

fn status(state: TaskState, message: &str, err: Option<String>, now: &str) -> TaskStatus {
    TaskStatus {
        timestamp: Some(now.to_string()),
        state: Some(state),
        message: Some(message.to_string()),
        err,
        ..Default::default()
    }
}

/// A full scheduling pass over every unassigned task, with loads counted
/// afresh (what [`Scheduler::pass`] does with no scope).
pub fn schedule(state: &State, now: &str) -> Vec<Op> {
    Scheduler::default().pass(state, now, None)
}

/// The scheduler between passes: every node's load, kept up to date from
/// the services that changed rather than counted again from all tasks on
/// each pass (100,000 tasks made that most of a pass).
#[derive(Debug, Default)]
pub struct Scheduler {
    loads: HashMap<String, NodeLoad>,
    /// What each task holds, by service then task.
    shares: HashMap<Arc<str>, HashMap<String, Share>>,
    names: Names,
    /// Pending tasks no node could take last time: tried again once a
    /// task elsewhere has made room.
    unplaced: BTreeSet<String>,
    /// Pending tasks a pass left for the next (see [`MAX_ASSIGNED`]).
    deferred: BTreeSet<String>,
}

/// The most tasks one pass assigns. Each pass is one Raft entry, applied
/// while the state is locked, and its assignments go out to the nodes at
/// once: 20,000 in one entry held everything else up for seconds, and the
/// nodes' heartbeats with it. Passes follow each other at once, so this
/// costs nothing in speed.
const MAX_ASSIGNED: usize = 1000;

impl Scheduler {
    /// Places what is pending. `scope` is the services changed since the
    /// last pass (`None`: anything may have, count everything again).
    pub fn pass(&mut self, state: &State, now: &str, scope: Option<&BTreeSet<String>>) -> Vec<Op> {
        let mut pending: Vec<&Task> = match scope {
            None => {
                self.recount_all(state);
                state
                    .tasks
                    .values()
                    .map(|t| &**t)
                    .filter(|t| is_pending(t))
                    .collect()
            }
            Some(services) => {
                let mut freed = false;
                for service in services {
                    freed |= self.recount(state, service);
                }
                self.unplaced
                    .retain(|id| state.tasks.get(id).is_some_and(|t| is_pending(t)));
                let mut pending: Vec<&Task> = services
                    .iter()
                    .flat_map(|s| state.tasks_of_service(s))
                    .filter(|t| is_pending(t))
                    .collect();
                let others = |ids: &BTreeSet<String>| {
                    ids.iter()
                        .filter_map(|id| state.tasks.get(id).map(|t| &**t))
                        .filter(|t| is_pending(t) && !services.contains(t.service()))
                        .collect::<Vec<_>>()
                };
                if freed {
                    pending.extend(others(&self.unplaced));
                }
                pending.extend(others(&self.deferred));
                self.deferred.clear();
                pending
            }
        };
        if pending.is_empty() {
            return Vec::new();
        }
        // Whatever is tried now is unplaced again only if it fails again.
        for t in &pending {
            self.unplaced.remove(t.id_str());
        }
        // Batch by service (and oldest first) so a service's tasks spread as a group.
        pending.sort_by(|a, b| {
            (a.service(), &a.created_at, a.slot_no()).cmp(&(
                b.service(),
                &b.created_at,
                b.slot_no(),
            ))
        });
        let nodes: Vec<&Node> = state.nodes.values().collect();
        let node_ids: Vec<Arc<str>> = state.nodes.keys().map(|k| self.names.get(k)).collect();
        let mut loads: Vec<NodeLoad> = state
            .nodes
            .keys()
            .map(|id| self.loads.remove(id).unwrap_or_default())
            .collect();
        let index: HashMap<&str, usize> = state
            .nodes
            .keys()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i))
            .collect();
        let mut pass = Pass {
            nodes: &nodes,
            node_ids: &node_ids,
            loads: &mut loads,
            index: &index,
            now,
            ops: Vec::new(),
        };
        let mut batch: Option<Batch> = None;
        let mut assigned = 0;
        for (n, &task) in pending.iter().enumerate() {
            if assigned == MAX_ASSIGNED {
                self.deferred
                    .extend(pending[n..].iter().map(|t| t.id_str().to_string()));
                break;
            }
            let service = task.service();
            if batch.as_ref().is_none_or(|b| &*b.service != service) {
                batch = Some(Batch::new(state, self.names.get(service), &pass));
            }
            let Some(b) = batch.as_mut() else { continue };
            match pass.place(b, task) {
                Some(share) => {
                    assigned += 1;
                    self.shares
                        .entry(share.service.clone())
                        .or_default()
                        .insert(task.id_str().to_string(), share);
                }
                None => {
                    self.unplaced.insert(task.id_str().to_string());
                }
            }
        }
        let ops = pass.ops;
        for (id, load) in state.nodes.keys().zip(loads) {
            self.loads.insert(id.clone(), load);
        }
        self.names.prune(state.nodes.len() + state.services.len());
        ops
    }

    fn recount_all(&mut self, state: &State) {
        self.loads.clear();
        self.shares.clear();
        self.unplaced.clear();
        self.deferred.clear();
        for t in state.tasks.values() {
            self.count(state, t);
        }
    }

    fn count(&mut self, state: &State, t: &Task) {
        let Some(share) =
            Share::of(t, &mut self.names).filter(|s| state.nodes.contains_key(&*s.node))
        else {
            return;
        };
        self.loads
            .entry(share.node.to_string())
            .or_default()
            .add(&share);
        self.shares
            .entry(share.service.clone())
            .or_default()
            .insert(t.id_str().to_string(), share);
    }

    /// Counts the service's tasks again; true when one of them let go of
    /// what it held on a node (ended, left, or was removed).
    fn recount(&mut self, state: &State, service: &str) -> bool {
        let old = self.shares.remove(service).unwrap_or_default();
        for share in old.values() {
            if let Some(load) = self.loads.get_mut(&*share.node) {
                load.remove(share);
            }
        }
        for t in state.tasks_of_service(service) {
            self.count(state, t);
        }
        let new = self.shares.get(service);
        old.iter()
            .any(|(id, share)| new.and_then(|n| n.get(id)) != Some(share))
    }
}

fn is_pending(t: &Task) -> bool {
    t.state() < TaskState::ASSIGNED && t.is_wanted()
}

/// One pass's view: the state's nodes in order, their loads (updated as
/// tasks are placed) and the ops so far.
struct Pass<'a> {
    nodes: &'a [&'a Node],
    /// The nodes' IDs, in the same order.
    node_ids: &'a [Arc<str>],
    loads: &'a mut Vec<NodeLoad>,
    index: &'a HashMap<&'a str, usize>,
    now: &'a str,
    ops: Vec<Op>,
}

/// A node on the ranked list: the service's tasks on it, all tasks on it,
/// its place in the state's node order (lowest first on a tie).
type Ranked = (usize, usize, usize);

/// The tasks of one service placed in a row.
struct Batch<'a> {
    service: Arc<str>,
    place: Placement,
    /// Without spread preferences, the nodes that may still take the
    /// service's tasks, best first. Built for one task spec (a rolling
    /// update has two).
    ranked: Option<(&'a TaskSpec, BTreeSet<Ranked>)>,
    /// Why nothing fits, once nothing does (for `ranked`'s spec).
    no_fit: Option<String>,
}

impl<'a> Batch<'a> {
    fn new(state: &'a State, service: Arc<str>, pass: &Pass) -> Batch<'a> {
        Batch {
            place: Placement::new(state, &service, pass.nodes, pass.loads),
            service,
            ranked: None,
            no_fit: None,
        }
    }
}

impl Pass<'_> {
    /// Finds the task a node, or says why there is none; returns what it
    /// then holds there.
    fn place<'a>(&mut self, batch: &mut Batch<'a>, task: &'a Task) -> Option<Share> {
        let ranked = task.node().is_none() && batch.place.spread.is_empty();
        let chosen = if ranked {
            self.best_ranked(batch, task)
        } else {
            None
        };
        let chosen = match chosen {
            Some(i) => Ok(i),
            None if batch.no_fit.is_some()
                && task.node().is_none()
                && batch.place.spread.is_empty() =>
            {
                Err(batch.no_fit.clone().unwrap_or_default())
            }
            None => self.best_scanned(&batch.place, task),
        };
        let id = task.id_str().to_string();
        if task.state() == TaskState::NEW {
            self.ops.push(Op::SetTaskStatus {
                id: id.clone(),
                status: status(
                    TaskState::PENDING,
                    "pending task scheduling",
                    None,
                    self.now,
                ),
            });
        }
        match chosen {
            Ok(i) => {
                let node = self.nodes[i];
                let load = &mut self.loads[i];
                let node_id = node.id.clone().unwrap_or_default();
                let generic = generic_claim(node, load, task).filter(|g| !g.is_empty());
                let mut share =
                    Share::placed(task, self.node_ids[i].clone(), batch.service.clone());
                share.generic = generic.clone().unwrap_or_default();
                let before = (load.of_service(&batch.service), load.total);
                load.add(&share);
                if let Some((_, ranked)) = batch.ranked.as_mut() {
                    if ranked.remove(&(before.0, before.1, i)) {
                        ranked.insert((before.0 + 1, before.1 + 1, i));
                    }
                }
                batch.place.placed_on(node);
                self.ops.push(Op::AssignTask {
                    id,
                    node_id,
                    generic,
                    status: status(
                        TaskState::ASSIGNED,
                        "scheduler assigned task to node",
                        None,
                        self.now,
                    ),
                });
                Some(share)
            }
            Err(err) => {
                if ranked {
                    batch.no_fit = Some(err.clone());
                }
                let current = task.status.as_ref().and_then(|s| s.err.as_deref());
                if task.state() == TaskState::NEW || current != Some(err.as_str()) {
                    self.ops.push(Op::SetTaskStatus {
                        id,
                        status: status(
                            TaskState::PENDING,
                            "pending task scheduling",
                            Some(err),
                            self.now,
                        ),
                    });
                }
                None
            }
        }
    }

    /// The best node off the ranked list (built at the batch's first task,
    /// and again when the spec changes): the first that has room. Nodes
    /// without room leave the list, as a pass only adds load.
    fn best_ranked<'a>(&self, batch: &mut Batch<'a>, task: &'a Task) -> Option<usize> {
        let spec = task.spec.as_deref()?;
        if batch.ranked.as_ref().is_none_or(|(s, _)| *s != spec) {
            let ranked = self
                .nodes
                .iter()
                .zip(self.loads.iter())
                .enumerate()
                .filter(|(_, (node, _))| suits(node, task, &batch.place.constraints).is_ok())
                .map(|(i, (_, load))| (load.of_service(&batch.service), load.total, i))
                .collect();
            batch.ranked = Some((spec, ranked));
            batch.no_fit = None;
        }
        let (_, ranked) = batch.ranked.as_mut()?;
        while let Some(&(a, b, i)) = ranked.first() {
            if has_room(
                self.nodes[i],
                &self.loads[i],
                task,
                batch.place.max_replicas,
            )
            .is_ok()
            {
                return Some(i);
            }
            ranked.remove(&(a, b, i));
        }
        None
    }

    /// The best node by looking at every candidate (spread preferences, a
    /// task tied to one node, or an explanation of why none fits).
    fn best_scanned(&self, place: &Placement, task: &Task) -> Result<usize, String> {
        // A task already tied to a node (global services) may go there only.
        let candidates = match task.node() {
            Some(n) => self.index.get(n).map_or(0..0, |&i| i..i + 1),
            None => 0..self.nodes.len(),
        };
        let mut rejects: HashMap<Reject, usize> = HashMap::new();
        let mut best: Option<(usize, Rank)> = None;
        for i in candidates {
            let (node, load) = (self.nodes[i], &self.loads[i]);
            match check(node, load, task, &place.constraints, place.max_replicas) {
                Ok(()) => {
                    let rank = (
                        place.spread_rank(node),
                        load.of_service(task.service()),
                        load.total,
                    );
                    if best.as_ref().is_none_or(|(_, r)| rank < *r) {
                        best = Some((i, rank));
                    }
                }
                Err(r) => *rejects.entry(r).or_default() += 1,
            }
        }
        if let Some((i, _)) = best {
            return Ok(i);
        }
        let mut reasons: Vec<(Reject, usize)> = rejects.into_iter().collect();
        reasons.sort();
        let explained: Vec<String> = reasons.iter().map(|(r, n)| r.explain(*n)).collect();
        Err(if explained.is_empty() {
            "no suitable node".to_string()
        } else {
            format!("no suitable node ({})", explained.join("; "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_copy_each_and_the_unheld_ones_go_once_they_pile_up() {
        let mut names = Names::default();
        let a = names.get("service-a");
        assert!(Arc::ptr_eq(&a, &names.get("service-a")));
        for i in 0..100 {
            names.get(&format!("gone-{i}"));
        }
        names.prune(1000);
        assert_eq!(names.0.len(), 101, "few enough: kept");
        names.prune(1);
        assert_eq!(names.0.len(), 1);
        assert!(Arc::ptr_eq(&a, &names.get("service-a")));
    }
}
