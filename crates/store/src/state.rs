//! The objects a manager holds, and the lookups the API and the
//! controllers make on them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::task::Task;
use bollard::models::{Node, Swarm, TaskSpec};

use crate::changes::{ChangeMark, Interest};
use crate::models::Service;
use crate::networks::Network;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// The swarm (cluster) object; `None` until `swarm init` is applied.
    pub cluster: Option<Swarm>,
    pub nodes: BTreeMap<String, Node>,
    /// Swarm networks (the ingress network among them), by ID.
    #[serde(default)]
    pub networks: BTreeMap<String, Network>,
    pub services: BTreeMap<String, Service>,
    /// Secrets and configs, by ID.
    #[serde(default)]
    pub secrets: BTreeMap<String, crate::secrets::DataObject>,
    #[serde(default)]
    pub configs: BTreeMap<String, crate::secrets::DataObject>,
    /// Shared: the dispatcher's per-node sets and a snapshot's copy hold the
    /// same tasks, and a change replaces one (`Arc::make_mut`).
    pub tasks: BTreeMap<String, Arc<Task>>,
    /// The root CA's private key (PEM). Every manager holds it so any of
    /// them can sign node certificates; the certificate itself is in the
    /// swarm object's TLSInfo.
    #[serde(default)]
    pub root_ca_key: Option<String>,
    /// The unlock key of a swarm with autolock (`SWMKEY-1-…`): every
    /// manager keeps its DEK and TLS key wrapped by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock_key: Option<String>,
    /// A root CA rotation under way (`swarm ca --rotate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_rotation: Option<RootRotation>,
    /// The `CAConfig.ForceRotate` the last forced rotation answered, so a
    /// spec sent back unchanged does not rotate again (SwarmKit's
    /// `LastForcedRotation`).
    #[serde(default)]
    pub last_forced_rotation: u64,
    /// Which of the layout changes below this state has seen, so a
    /// snapshot written before one gets it on load. 1: swarm networks
    /// exist (a swarm gets its ingress network).
    #[serde(default)]
    pub(crate) layout: u32,
    /// Secondary indexes, rebuilt on load rather than stored.
    #[serde(skip)]
    pub(crate) by_service: BTreeMap<String, TaskIndex>,
    #[serde(skip)]
    pub(crate) by_node: BTreeMap<String, TaskIndex>,
    #[serde(skip)]
    pub(crate) allocations: crate::alloc::Allocations,
    #[serde(skip)]
    pub(crate) changes: crate::changes::Changes,
    /// Each service's task template and labels as its last task stored
    /// them: the tasks that carry equal ones share them (100 replicas keep
    /// one copy).
    #[serde(skip)]
    pub(crate) specs: HashMap<String, SharedByTasks>,
    /// Each service's ID by its name: a create's name check is a lookup,
    /// not a pass over every service.
    #[serde(skip)]
    pub(crate) service_names: HashMap<String, String>,
    /// Each service's tasks counted by state (see `counts`).
    #[serde(skip)]
    pub(crate) task_counts: HashMap<String, crate::counts::TaskCounts>,
}

/// The tasks of one service or one node, by ID: the same copies as
/// [`State::tasks`], so reading them is no lookup.
pub(crate) type TaskIndex = BTreeSet<ById>;

/// A task in an index, ordered and found by its own ID: keyed by a copy
/// of the ID, the two indexes held two more strings per task.
#[derive(Debug, Clone)]
pub(crate) struct ById(pub(crate) Arc<Task>);

impl ById {
    fn id(&self) -> &str {
        self.0.id.as_deref().unwrap_or_default()
    }
}

impl std::borrow::Borrow<str> for ById {
    fn borrow(&self) -> &str {
        self.id()
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for ById {}

impl PartialOrd for ById {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ById {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.id().cmp(other.id())
    }
}

/// The root a rotation moves to: while it is under way the CA signs with
/// `key_pem` and sends `cross_signed_pem` (the new root signed by the
/// current one) after each certificate; when every node holds such a
/// certificate the swarm's root becomes `cert_pem` (see flotilla-ca's
/// `rotation`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct RootRotation {
    pub cert_pem: String,
    pub key_pem: String,
    pub cross_signed_pem: String,
    /// The swarm's TLSInfo once the rotation is done.
    pub tls_info: bollard::models::TlsInfo,
}

impl std::fmt::Debug for RootRotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootRotation")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// What the managers want every node to have, told in heartbeat replies:
/// the root to trust (by digest; a node fetches it from a manager) and the
/// key its certificate must be signed by (base64 SubjectPublicKeyInfo).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaTarget {
    pub root_digest: String,
    pub issuer_public_key: String,
}

pub use crate::objects::{
    is_move, is_terminal, node_hostname, service_name, update_of, version_of, NodeExt, TaskExt,
    MOVE_MARK,
};

/// The layout a state written today has (see [`State::layout`]).
pub(crate) const LAYOUT: u32 = 1;

fn labels_of(spec: Option<&bollard::models::ServiceSpec>) -> BTreeMap<String, String> {
    spec.and_then(|s| s.labels.as_ref())
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn same_labels(
    labels: &BTreeMap<String, String>,
    spec: Option<&bollard::models::ServiceSpec>,
) -> bool {
    let theirs = spec.and_then(|s| s.labels.as_ref());
    labels.len() == theirs.map_or(0, |l| l.len())
        && theirs.is_none_or(|l| l.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Times an API lookup (`swarm_store_lookup_latency_seconds`).
fn lookup<T>(f: impl FnOnce() -> T) -> T {
    let start = std::time::Instant::now();
    let found = f();
    crate::metrics::observe_since(&crate::metrics::METRICS.lookup, start);
    found
}

/// What a service's tasks share in the state (see `State::specs`).
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedByTasks {
    template: Option<Arc<TaskSpec>>,
    labels: Option<Arc<BTreeMap<String, String>>>,
}

impl State {
    /// Where the controllers are now (see `changes`).
    pub fn change_mark(&self) -> ChangeMark {
        self.changes.mark()
    }

    /// Whether a task on `node` was created, changed or removed after
    /// `mark` (always, after a reload).
    pub fn node_tasks_changed(&self, node: &str, mark: &ChangeMark) -> bool {
        self.changes.node_tasks_changed(node, mark)
    }

    /// The nodes whose tasks changed since the last call (`None`: every
    /// node's may have): whom the state machine wakes.
    pub(crate) fn take_touched_nodes(&mut self) -> Option<Vec<String>> {
        self.changes.take_touched()
    }

    /// The services whose spec, status or tasks changed after `mark`, or
    /// `None` when every service must be looked at.
    pub fn changed_services(&self, mark: &ChangeMark) -> Option<BTreeSet<String>> {
        self.changed_services_for(mark, Interest::All)
    }

    /// Like [`State::changed_services`], for a controller that is told
    /// only of the changes in `interest`.
    pub fn changed_services_for(
        &self,
        mark: &ChangeMark,
        interest: Interest,
    ) -> Option<BTreeSet<String>> {
        let mut changed = self.changes.changed_services(mark)?;
        let starts = self.changes.started_since(mark);
        match interest {
            Interest::All => changed.extend(starts.cloned()),
            Interest::StartsWhen(wanted) => {
                changed.extend(starts.filter(|id| wanted(self, id)).cloned())
            }
            Interest::NotStarts => {}
        }
        Some(changed)
    }

    pub fn is_initialized(&self) -> bool {
        self.cluster.is_some()
    }

    /// Points `task` at the copy of its template the state already holds,
    /// when it is equal; otherwise its own becomes the one to share.
    pub(crate) fn share_spec(&mut self, task: &mut Task) {
        fn share<T: PartialEq>(known: &mut Option<Arc<T>>, mine: &mut Arc<T>) {
            match known {
                Some(k) if Arc::ptr_eq(k, mine) => {}
                Some(k) if **k == **mine => *mine = k.clone(),
                _ => *known = Some(mine.clone()),
            }
        }
        let Some(service) = task.service_id.as_ref() else {
            return;
        };
        let known = self.specs.entry(service.clone()).or_default();
        if let Some(spec) = task.spec.as_mut() {
            share(&mut known.template, spec);
        }
        share(&mut known.labels, &mut task.runtime.service_labels);
    }

    /// Makes `svc`'s current template and labels the copies its tasks
    /// share from now on, before it has any: the orchestrators give the
    /// tasks they create these ([`State::shared_for_new_task`]), so a pass
    /// that creates 100 of them makes no copy at all.
    pub(crate) fn share_service_spec(&mut self, svc: &crate::models::Service) {
        let Some(id) = svc.id.as_ref() else {
            return;
        };
        let spec = svc.spec.as_ref();
        let template = spec.and_then(|s| s.task_template.as_ref());
        let known = self.specs.entry(id.clone()).or_default();
        if known.template.as_deref() != template {
            known.template = template.cloned().map(Arc::new);
        }
        if !known
            .labels
            .as_deref()
            .is_some_and(|l| same_labels(l, spec))
        {
            known.labels = Some(Arc::new(labels_of(spec)));
        }
    }

    /// The template and labels a new task of `svc` carries: the copies its
    /// tasks share while they are still the service's, new ones otherwise.
    pub fn shared_for_new_task(
        &self,
        svc: &crate::models::Service,
    ) -> (Option<Arc<TaskSpec>>, Arc<BTreeMap<String, String>>) {
        let spec = svc.spec.as_ref();
        let template = spec.and_then(|s| s.task_template.as_ref());
        let known = svc.id.as_ref().and_then(|id| self.specs.get(id));
        let shared_template = known
            .and_then(|k| k.template.as_ref())
            .filter(|k| Some(&***k) == template)
            .cloned();
        let template = shared_template.or_else(|| template.cloned().map(Arc::new));
        let labels = known
            .and_then(|k| k.labels.as_ref())
            .filter(|k| same_labels(k, spec))
            .cloned()
            .unwrap_or_else(|| Arc::new(labels_of(spec)));
        (template, labels)
    }

    /// What a snapshot keeps: the objects, not the indexes rebuilt on
    /// load. Tasks are shared, so this is cheap enough to take under the
    /// lock and encode outside it.
    pub(crate) fn stored_copy(&self) -> State {
        State {
            cluster: self.cluster.clone(),
            nodes: self.nodes.clone(),
            networks: self.networks.clone(),
            services: self.services.clone(),
            secrets: self.secrets.clone(),
            configs: self.configs.clone(),
            tasks: self.tasks.clone(),
            root_ca_key: self.root_ca_key.clone(),
            unlock_key: self.unlock_key.clone(),
            root_rotation: self.root_rotation.clone(),
            last_forced_rotation: self.last_forced_rotation,
            layout: self.layout,
            by_service: BTreeMap::new(),
            by_node: BTreeMap::new(),
            allocations: Default::default(),
            changes: Default::default(),
            specs: HashMap::new(),
            service_names: HashMap::new(),
            task_counts: HashMap::new(),
        }
    }

    /// After a load: indexes and allocations rebuilt from the objects, and
    /// tasks written by older versions moved to their typed fields.
    pub(crate) fn rebuild_indexes(&mut self) {
        self.specs.clear();
        let services = std::mem::take(&mut self.services);
        for svc in services.values() {
            self.share_service_spec(svc);
        }
        self.services = services;
        let mut tasks = std::mem::take(&mut self.tasks);
        for task in tasks.values_mut() {
            let task = Arc::make_mut(task);
            task.take_legacy_labels();
            self.share_spec(task);
            task.assignment_index = task.version_index();
        }
        self.tasks = tasks;
        self.changes.reset();
        self.service_names = self
            .services
            .iter()
            .map(|(id, svc)| (service_name(svc).to_string(), id.clone()))
            .collect();
        self.by_service.clear();
        self.by_node.clear();
        self.task_counts.clear();
        if self.layout < LAYOUT {
            self.upgrade_layout();
        }
        self.allocations =
            crate::alloc::Allocations::rebuild(&self.networks, &self.services, &self.tasks);
        let ids: Vec<String> = self.tasks.keys().cloned().collect();
        for id in ids {
            self.index_task(&id);
        }
    }

    /// Puts the task's current copy in the indexes. A change takes it out
    /// first ([`State::unindex_task`]), so the state holds a task once
    /// while it is changed and `Arc::make_mut` need not copy it.
    pub(crate) fn index_task(&mut self, id: &str) {
        let Some(t) = self.tasks.get(id) else { return };
        let (svc, node) = (t.service().to_string(), t.node().map(str::to_string));
        match self.task_counts.get_mut(&svc) {
            Some(c) => c.add(t),
            None => {
                let mut c = crate::counts::TaskCounts::default();
                c.add(t);
                self.task_counts.insert(svc.clone(), c);
            }
        }
        self.by_service
            .entry(svc)
            .or_default()
            .insert(ById(t.clone()));
        if let Some(node) = node {
            self.by_node
                .entry(node)
                .or_default()
                .insert(ById(t.clone()));
        }
    }

    pub(crate) fn unindex_task(&mut self, id: &str) {
        let Some(t) = self.tasks.get(id) else { return };
        let (svc, node) = (t.service().to_string(), t.node().map(str::to_string));
        if let Some(c) = self.task_counts.get_mut(&svc) {
            c.remove(t);
            if c.is_empty() {
                self.task_counts.remove(&svc);
            }
        }
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

    /// Every service's tasks counted by state, by service ID (services
    /// without tasks are absent).
    pub fn task_counts(&self) -> &HashMap<String, crate::counts::TaskCounts> {
        &self.task_counts
    }

    pub fn tasks_of_service<'a>(&'a self, service_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.by_service
            .get(service_id)
            .into_iter()
            .flat_map(|tasks| tasks.iter())
            .map(|t| &*t.0)
    }

    pub fn tasks_on_node<'a>(&'a self, node_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.task_arcs_on_node(node_id).map(|t| &**t)
    }

    /// The tasks on `node_id` as the shared copies the state holds.
    pub fn task_arcs_on_node<'a>(
        &'a self,
        node_id: &str,
    ) -> impl Iterator<Item = &'a Arc<Task>> + 'a {
        self.by_node
            .get(node_id)
            .into_iter()
            .flat_map(|tasks| tasks.iter())
            .map(|t| &t.0)
    }

    /// Docker's lookup order: full ID, then exact name, then a unique ID
    /// prefix.
    pub fn find_service(&self, key: &str) -> Option<&Service> {
        lookup(|| {
            if let Some(s) = self.services.get(key) {
                return Some(s);
            }
            if let Some(s) = self
                .service_names
                .get(key)
                .and_then(|id| self.services.get(id))
            {
                return Some(s);
            }
            unique_prefix(&self.services, key)
        })
    }

    /// Full ID, then hostname, then a unique ID prefix.
    pub fn find_node(&self, key: &str) -> Option<&Node> {
        lookup(|| {
            if let Some(n) = self.nodes.get(key) {
                return Some(n);
            }
            let mut by_name = self.nodes.values().filter(|n| node_hostname(n) == key);
            if let (Some(n), None) = (by_name.next(), by_name.next()) {
                return Some(n);
            }
            unique_prefix(&self.nodes, key)
        })
    }

    /// Docker's lookup order for networks: full ID, then exact name, then
    /// a unique ID prefix.
    pub fn find_network(&self, key: &str) -> Option<&Network> {
        lookup(|| {
            if let Some(n) = self.networks.get(key) {
                return Some(n);
            }
            if let Some(n) = self.networks.values().find(|n| n.name() == key) {
                return Some(n);
            }
            unique_prefix(&self.networks, key)
        })
    }

    /// The ingress network, if the swarm has one.
    pub fn ingress(&self) -> Option<&Network> {
        crate::alloc::ingress_of(&self.networks)
    }

    pub fn find_task(&self, key: &str) -> Option<&Task> {
        lookup(|| {
            if let Some(t) = self.tasks.get(key) {
                return Some(&**t);
            }
            unique_prefix(&self.tasks, key).map(|t| &**t)
        })
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
