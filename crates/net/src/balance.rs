//! The endpoint set of one published port, and round robin over it.
//!
//! The accept path only reads: it loads the current set (one atomic load,
//! no lock) and bumps a cursor. `Mesh::apply` and `Mesh::remove_endpoint`
//! replace the whole set at once, so a connection sees either the old or the
//! new set of one service, never a mix.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::table::{Endpoint, Route};

/// One port's service and the endpoints new connections may use.
#[derive(Debug)]
pub(crate) struct EndpointSet {
    pub service_id: String,
    /// Every endpoint the table listed, kept so a drain can be recomputed
    /// without the table.
    pub listed: Vec<Endpoint>,
    /// Healthy and not drained: the only ones chosen for new connections.
    pub live: Vec<Endpoint>,
}

impl EndpointSet {
    pub fn new(route: &Route, drained: &HashSet<String>) -> EndpointSet {
        EndpointSet::from_listed(route.service_id.clone(), route.endpoints.clone(), drained)
    }

    fn from_listed(service_id: String, listed: Vec<Endpoint>, drained: &HashSet<String>) -> EndpointSet {
        let live = listed
            .iter()
            .filter(|e| e.healthy && !drained.contains(&e.task_id))
            .cloned()
            .collect();
        EndpointSet {
            service_id,
            listed,
            live,
        }
    }

    /// The same set with the drained tasks taken out.
    pub fn without(&self, drained: &HashSet<String>) -> EndpointSet {
        EndpointSet::from_listed(self.service_id.clone(), self.listed.clone(), drained)
    }

    pub fn lists_task(&self, task_id: &str) -> bool {
        self.live.iter().any(|e| e.task_id == task_id)
    }
}

/// The live endpoint set of one port plus its round-robin cursor.
#[derive(Debug)]
pub(crate) struct Backends {
    set: ArcSwap<EndpointSet>,
    /// Shared by every connection of the port; wrapping is harmless.
    cursor: AtomicUsize,
}

impl Backends {
    pub fn new(set: EndpointSet) -> Backends {
        Backends {
            set: ArcSwap::from_pointee(set),
            cursor: AtomicUsize::new(0),
        }
    }

    pub fn load(&self) -> Arc<EndpointSet> {
        self.set.load_full()
    }

    pub fn store(&self, set: EndpointSet) {
        self.set.store(Arc::new(set));
    }

    /// The endpoints to try for one new connection: every live endpoint once,
    /// starting at the next one in round-robin order. A caller that fails to
    /// connect moves on to the next, so a task that just died costs a retry,
    /// not a failed request.
    pub fn candidates(&self) -> Candidates {
        let set = self.load();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        Candidates { set, start }
    }
}

/// A snapshot of one port's endpoints in the order one connection tries them.
pub(crate) struct Candidates {
    set: Arc<EndpointSet>,
    start: usize,
}

impl Candidates {
    pub fn service_id(&self) -> &str {
        &self.set.service_id
    }

    pub fn len(&self) -> usize {
        self.set.live.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Endpoint> {
        let live = &self.set.live;
        (0..live.len()).map(move |i| &live[(self.start + i) % live.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn route(endpoints: &[(&str, bool)]) -> Route {
        let endpoints = endpoints
            .iter()
            .enumerate()
            .map(|(i, (task, healthy))| Endpoint {
                task_id: task.to_string(),
                addr: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                healthy: *healthy,
            })
            .collect();
        Route {
            service_id: "web".into(),
            target: 80,
            endpoints,
        }
    }

    fn first(backends: &Backends) -> String {
        backends.candidates().iter().next().unwrap().task_id.clone()
    }

    #[test]
    fn round_robin_visits_each_live_endpoint_in_turn() {
        let backends = Backends::new(EndpointSet::new(&route(&[("a", true), ("b", true), ("c", true)]), &HashSet::new()));
        let picks: Vec<String> = (0..6).map(|_| first(&backends)).collect();
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn candidates_cover_every_endpoint_once() {
        let backends = Backends::new(EndpointSet::new(&route(&[("a", true), ("b", true), ("c", true)]), &HashSet::new()));
        backends.candidates();
        let candidates = backends.candidates();
        let order: Vec<&str> = candidates.iter().map(|e| e.task_id.as_str()).collect();
        assert_eq!(order, ["b", "c", "a"]);
    }

    #[test]
    fn unhealthy_and_drained_endpoints_are_never_chosen() {
        let drained: HashSet<String> = ["c".to_string()].into();
        let set = EndpointSet::new(&route(&[("a", true), ("b", false), ("c", true)]), &drained);
        let backends = Backends::new(set);
        let picks: HashSet<String> = (0..6).map(|_| first(&backends)).collect();
        assert_eq!(picks, HashSet::from(["a".to_string()]));
        // A drain recomputed from the listed endpoints keeps the health filter.
        let all_drained: HashSet<String> = ["a".to_string()].into();
        assert_eq!(backends.load().without(&all_drained).live.len(), 1);
    }
}
