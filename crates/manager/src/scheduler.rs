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
//! Tasks created NEW are moved to PENDING here too (what SwarmKit's
//! allocator does once networks are allocated; Flotilla has nothing to
//! allocate before scheduling yet).

use std::collections::{HashMap, HashSet};

use flotilla_store::models::{Node, Service, Task, TaskState, TaskStatus};
use flotilla_store::network::{self, task_ports};
use flotilla_store::state::NodeExt;
use flotilla_store::state::{is_terminal, State, TaskExt};
use flotilla_store::Op;

use crate::constraint::{self, Constraint};

/// What a node has committed already, kept current while placing a batch.
/// Borrows its keys from the state: a pass over 100,000 tasks allocates
/// nothing per task.
#[derive(Debug, Default, Clone)]
struct NodeLoad<'a> {
    per_service: HashMap<&'a str, usize>,
    total: usize,
    cpus: i64,
    memory: i64,
    /// Host-mode published ports taken by the node's tasks.
    host_ports: HashSet<(String, u16)>,
    /// Generic resources its tasks were given.
    generic: crate::generic::Pool,
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

/// Every node with its load, in the state's node order, and where each node
/// sits in that list.
fn load_of(state: &State) -> (Vec<(&Node, NodeLoad<'_>)>, HashMap<&str, usize>) {
    let mut loads: Vec<(&Node, NodeLoad)> = state
        .nodes
        .values()
        .map(|n| (n, NodeLoad::default()))
        .collect();
    let index: HashMap<&str, usize> = state
        .nodes
        .keys()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    for t in state.tasks.values() {
        let Some(node) = t.node() else { continue };
        if is_terminal(t.state()) || !t.is_wanted() {
            continue;
        }
        if let Some(&i) = index.get(node) {
            add(&mut loads[i].1, t);
        }
    }
    (loads, index)
}

fn add<'a>(l: &mut NodeLoad<'a>, t: &'a Task) {
    *l.per_service.entry(t.service()).or_default() += 1;
    l.total += 1;
    let (cpus, mem) = reservation(t);
    l.cpus += cpus;
    l.memory += mem;
    l.host_ports.extend(host_ports(t));
    if let Some(given) = t.assigned_generic_resources.as_deref() {
        l.generic.add(given);
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
    if max_replicas > 0
        && load.per_service.get(task.service()).copied().unwrap_or(0) as u64 >= max_replicas
    {
        return Err(Reject::MaxReplicas);
    }
    if host_ports(task).any(|p| load.host_ports.contains(&p)) {
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
    fn new<'a>(state: &'a State, service: &'a str, loads: &[(&Node, NodeLoad<'a>)]) -> Self {
        let (constraints, max_replicas, spread) = placement(state.services.get(service));
        let counts = spread
            .iter()
            .map(|key| {
                let mut by_value: HashMap<Option<String>, usize> = HashMap::new();
                for (node, load) in loads {
                    let n = load.per_service.get(service).copied().unwrap_or(0);
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

fn status(state: TaskState, message: &str, err: Option<String>, now: &str) -> TaskStatus {
    TaskStatus {
        timestamp: Some(now.to_string()),
        state: Some(state),
        message: Some(message.to_string()),
        err,
        ..Default::default()
    }
}

/// One scheduling pass over every unassigned task.
pub fn schedule(state: &State, now: &str) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut pending: Vec<&Task> = state
        .tasks
        .values()
        .filter(|t| t.state() < TaskState::ASSIGNED && t.is_wanted())
        .collect();
    if pending.is_empty() {
        return ops;
    }
    let (mut loads, index) = load_of(state);
    // Batch by service (and oldest first) so a service's tasks spread as a group.
    pending.sort_by(|a, b| {
        (a.service(), &a.created_at, a.slot_no()).cmp(&(b.service(), &b.created_at, b.slot_no()))
    });

    let mut cache: HashMap<&str, Placement> = HashMap::new();
    for task in pending {
        let service = task.service();
        let place = cache
            .entry(service)
            .or_insert_with(|| Placement::new(state, service, &loads));
        // A task already tied to a node (global services) may go there only.
        let candidates = match task.node() {
            Some(n) => index.get(n).map_or(0..0, |&i| i..i + 1),
            None => 0..loads.len(),
        };
        let mut rejects: HashMap<Reject, usize> = HashMap::new();
        let mut best: Option<(usize, Rank)> = None;
        for i in candidates {
            let (node, load) = &loads[i];
            match check(node, load, task, &place.constraints, place.max_replicas) {
                Ok(()) => {
                    let rank = (
                        place.spread_rank(node),
                        load.per_service.get(task.service()).copied().unwrap_or(0),
                        load.total,
                    );
                    if best.as_ref().is_none_or(|(_, r)| rank < *r) {
                        best = Some((i, rank));
                    }
                }
                Err(r) => *rejects.entry(r).or_default() += 1,
            }
        }
        let id = task.id_str().to_string();
        if task.state() == TaskState::NEW {
            ops.push(Op::SetTaskStatus {
                id: id.clone(),
                status: status(TaskState::PENDING, "pending task scheduling", None, now),
            });
        }
        match best {
            Some((i, _)) => {
                let (node, load) = &mut loads[i];
                let node_id = node.id.clone().unwrap_or_default();
                let generic = generic_claim(node, load, task).filter(|g| !g.is_empty());
                add(load, task);
                if let Some(given) = generic.as_deref() {
                    load.generic.add(given);
                }
                place.placed_on(node);
                ops.push(Op::AssignTask {
                    id,
                    node_id,
                    generic,
                    status: status(
                        TaskState::ASSIGNED,
                        "scheduler assigned task to node",
                        None,
                        now,
                    ),
                });
            }
            None => {
                let mut reasons: Vec<(Reject, usize)> = rejects.into_iter().collect();
                reasons.sort();
                let explained: Vec<String> = reasons.iter().map(|(r, n)| r.explain(*n)).collect();
                let err = if explained.is_empty() {
                    "no suitable node".to_string()
                } else {
                    format!("no suitable node ({})", explained.join("; "))
                };
                let current = task.status.as_ref().and_then(|s| s.err.as_deref());
                if task.state() == TaskState::NEW || current != Some(err.as_str()) {
                    ops.push(Op::SetTaskStatus {
                        id,
                        status: status(
                            TaskState::PENDING,
                            "pending task scheduling",
                            Some(err),
                            now,
                        ),
                    });
                }
            }
        }
    }
    ops
}
