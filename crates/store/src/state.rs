//! The objects a manager holds, and the lookups the API and the
//! controllers make on them.

use std::collections::{BTreeMap, BTreeSet};

use crate::task::Task;
use bollard::models::{Node, NodeSpecAvailabilityEnum, NodeState, Swarm, TaskState};

use crate::models::Service;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// The swarm (cluster) object; `None` until `swarm init` is applied.
    pub cluster: Option<Swarm>,
    pub nodes: BTreeMap<String, Node>,
    pub services: BTreeMap<String, Service>,
    pub tasks: BTreeMap<String, Task>,
    /// The root CA's private key (PEM). Every manager holds it so any of
    /// them can sign node certificates; the certificate itself is in the
    /// swarm object's TLSInfo.
    #[serde(default)]
    pub root_ca_key: Option<String>,
    /// Secondary indexes, rebuilt on load rather than stored.
    #[serde(skip)]
    pub(crate) by_service: BTreeMap<String, BTreeSet<String>>,
    #[serde(skip)]
    pub(crate) by_node: BTreeMap<String, BTreeSet<String>>,
    #[serde(skip)]
    pub(crate) allocations: crate::alloc::Allocations,
    #[serde(skip)]
    pub(crate) changes: crate::changes::Changes,
}

/// Which update created a task, if the updater did.
pub fn update_of(t: &Task) -> Option<&str> {
    t.runtime.update.as_deref()
}

/// The node predicates, in one place: what the scheduler, the orchestrators,
/// the dispatcher and the API ask of a node.
pub trait NodeExt {
    /// The state its agent last reported (UNKNOWN when none).
    fn state(&self) -> NodeState;
    fn is_ready(&self) -> bool {
        self.state() == NodeState::READY
    }
    fn is_down(&self) -> bool {
        self.state() == NodeState::DOWN
    }
    /// ACTIVE unless set otherwise.
    fn availability(&self) -> NodeSpecAvailabilityEnum;
    /// Ready and active: new tasks may go there.
    fn takes_new_tasks(&self) -> bool {
        self.is_ready() && self.availability() == NodeSpecAvailabilityEnum::ACTIVE
    }
}

impl NodeExt for Node {
    fn state(&self) -> NodeState {
        self.status
            .as_ref()
            .and_then(|s| s.state)
            .unwrap_or(NodeState::UNKNOWN)
    }
    fn availability(&self) -> NodeSpecAvailabilityEnum {
        self.spec
            .as_ref()
            .and_then(|s| s.availability)
            .unwrap_or(NodeSpecAvailabilityEnum::ACTIVE)
    }
}

/// Shorthands over bollard's all-optional models, so callers read as the
/// domain rather than as `Option` plumbing.
pub trait TaskExt {
    fn id_str(&self) -> &str;
    fn service(&self) -> &str;
    fn node(&self) -> Option<&str>;
    fn state(&self) -> TaskState;
    fn desired(&self) -> TaskState;
    fn slot_no(&self) -> i64;
    fn version_index(&self) -> u64;
}

impl TaskExt for Task {
    fn id_str(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }
    fn service(&self) -> &str {
        self.service_id.as_deref().unwrap_or_default()
    }
    fn node(&self) -> Option<&str> {
        self.node_id.as_deref().filter(|n| !n.is_empty())
    }
    fn state(&self) -> TaskState {
        self.status
            .as_ref()
            .and_then(|s| s.state)
            .unwrap_or(TaskState::NEW)
    }
    fn desired(&self) -> TaskState {
        self.desired_state.unwrap_or(TaskState::NEW)
    }
    fn slot_no(&self) -> i64 {
        self.slot.unwrap_or(0)
    }
    fn version_index(&self) -> u64 {
        version_of(&self.version)
    }
}

pub fn version_of(v: &Option<bollard::models::ObjectVersion>) -> u64 {
    v.as_ref().and_then(|v| v.index).unwrap_or(0)
}

/// A task is "terminal" once it can never run again.
pub fn is_terminal(state: TaskState) -> bool {
    state > TaskState::RUNNING
}

pub fn service_name(s: &Service) -> &str {
    s.spec
        .as_ref()
        .and_then(|sp| sp.name.as_deref())
        .unwrap_or_default()
}

pub fn node_hostname(n: &Node) -> &str {
    n.description
        .as_ref()
        .and_then(|d| d.hostname.as_deref())
        .unwrap_or_default()
}

impl State {
    pub fn is_initialized(&self) -> bool {
        self.cluster.is_some()
    }

    /// After a load: indexes and allocations rebuilt from the objects, and
    /// tasks written by older versions moved to their typed fields.
    pub(crate) fn rebuild_indexes(&mut self) {
        for task in self.tasks.values_mut() {
            task.take_legacy_labels();
        }
        self.changes.reset();
        self.by_service.clear();
        self.by_node.clear();
        self.allocations = crate::alloc::Allocations::rebuild(&self.services, &self.tasks);
        let ids: Vec<String> = self.tasks.keys().cloned().collect();
        for id in ids {
            self.index_task(&id);
        }
    }

    pub(crate) fn index_task(&mut self, id: &str) {
        let Some(t) = self.tasks.get(id) else { return };
        let (svc, node) = (t.service().to_string(), t.node().map(str::to_string));
        self.by_service
            .entry(svc)
            .or_default()
            .insert(id.to_string());
        if let Some(node) = node {
            self.by_node.entry(node).or_default().insert(id.to_string());
        }
    }

    pub(crate) fn unindex_task(&mut self, id: &str) {
        let Some(t) = self.tasks.get(id) else { return };
        let (svc, node) = (t.service().to_string(), t.node().map(str::to_string));
        if let Some(set) = self.by_service.get_mut(&svc) {
            set.remove(id);
            if set.is_empty() {
                self.by_service.remove(&svc);
            }
        }
        if let Some(node) = node {
            if let Some(set) = self.by_node.get_mut(&node) {
                set.remove(id);
                if set.is_empty() {
                    self.by_node.remove(&node);
                }
            }
        }
    }

    pub fn tasks_of_service<'a>(&'a self, service_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.by_service
            .get(service_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    pub fn tasks_on_node<'a>(&'a self, node_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.by_node
            .get(node_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    /// Docker's lookup order: full ID, then exact name, then a unique ID
    /// prefix.
    pub fn find_service(&self, key: &str) -> Option<&Service> {
        if let Some(s) = self.services.get(key) {
            return Some(s);
        }
        if let Some(s) = self.services.values().find(|s| service_name(s) == key) {
            return Some(s);
        }
        unique_prefix(&self.services, key)
    }

    /// Full ID, then hostname, then a unique ID prefix.
    pub fn find_node(&self, key: &str) -> Option<&Node> {
        if let Some(n) = self.nodes.get(key) {
            return Some(n);
        }
        let mut by_name = self.nodes.values().filter(|n| node_hostname(n) == key);
        if let (Some(n), None) = (by_name.next(), by_name.next()) {
            return Some(n);
        }
        unique_prefix(&self.nodes, key)
    }

    pub fn find_task(&self, key: &str) -> Option<&Task> {
        if let Some(t) = self.tasks.get(key) {
            return Some(t);
        }
        unique_prefix(&self.tasks, key)
    }
}

fn unique_prefix<'a, T>(map: &'a BTreeMap<String, T>, key: &str) -> Option<&'a T> {
    if key.is_empty() {
        return None;
    }
    let mut it = map
        .range(key.to_string()..)
        .take_while(|(k, _)| k.starts_with(key));
    match (it.next(), it.next()) {
        (Some((_, v)), None) => Some(v),
        _ => None,
    }
}
