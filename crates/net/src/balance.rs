//! The endpoint set of one published port, and round robin over it.
//!
//! The accept path only reads: it loads the current set (one atomic load,
//! no lock) and bumps a cursor. `Mesh::apply` and `Mesh::remove_endpoint`
//! replace the whole set at once, so a connection sees either the old or the
//! new set of one service, never a mix.
//!
//! An endpoint that just refused a connection (or timed out) goes to the
//! back of the order for a few seconds: a task on a node that died costs
//! one connect timeout, not one per new connection until the node is marked
//! down. It is still tried last, so a lone endpoint that recovers is used.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::proxy_protocol::ProxyVersion;
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
    /// The PROXY protocol header each new TCP connection starts with.
    pub proxy_protocol: Option<ProxyVersion>,
}

impl EndpointSet {
    pub fn new(route: &Route, drained: &HashSet<String>) -> EndpointSet {
        let mut set =
            EndpointSet::from_listed(route.service_id.clone(), route.endpoints.clone(), drained);
        set.proxy_protocol = route.proxy_protocol;
        set
    }

    fn from_listed(
        service_id: String,
        listed: Vec<Endpoint>,
        drained: &HashSet<String>,
    ) -> EndpointSet {
        let live = listed
            .iter()
            .filter(|e| e.healthy && !drained.contains(&e.task_id))
            .cloned()
            .collect();
        EndpointSet {
            service_id,
            listed,
            live,
            proxy_protocol: None,
        }
    }

    /// The same set with the drained tasks taken out.
    pub fn without(&self, drained: &HashSet<String>) -> EndpointSet {
        let mut set =
            EndpointSet::from_listed(self.service_id.clone(), self.listed.clone(), drained);
        set.proxy_protocol = self.proxy_protocol;
        set
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
    /// Endpoints that failed lately, and until when they are tried last.
    /// Kept apart from the set so a swap by `apply` does not forget them.
    failed: Mutex<HashMap<SocketAddr, Instant>>,
    /// Whether `failed` may hold anything: the accept path takes the lock
    /// only then.
    any_failed: AtomicBool,
}

/// How long an endpoint that failed is tried after the others.
const COOL_DOWN: Duration = Duration::from_secs(5);

impl Backends {
    pub fn new(set: EndpointSet) -> Backends {
        Backends {
            set: ArcSwap::from_pointee(set),
            cursor: AtomicUsize::new(0),
            failed: Mutex::new(HashMap::new()),
            any_failed: AtomicBool::new(false),
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
        self.candidates_at(Instant::now())
    }

    pub fn candidates_at(&self, now: Instant) -> Candidates {
        let set = self.load();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        // Round robin among the endpoints that have not failed lately, the
        // others after them: so a failed endpoint's turn is shared evenly
        // rather than handed to its neighbour.
        let (mut order, mut failed_last): (Vec<usize>, Vec<usize>) =
            if self.any_failed.load(Ordering::Relaxed) {
                let mut failed = self.lock_failed();
                failed.retain(|_, until| *until > now);
                self.any_failed.store(!failed.is_empty(), Ordering::Relaxed);
                (0..set.live.len()).partition(|&i| !failed.contains_key(&set.live[i].addr))
            } else {
                ((0..set.live.len()).collect(), Vec::new())
            };
        rotate(&mut order, start);
        rotate(&mut failed_last, start);
        order.extend(failed_last);
        Candidates { set, order }
    }

    /// A connection to `addr` failed: try it last for a while.
    pub fn report_failure(&self, addr: SocketAddr, now: Instant) {
        self.lock_failed().insert(addr, now + COOL_DOWN);
        self.any_failed.store(true, Ordering::Relaxed);
    }

    /// A connection to `addr` worked: it is back in its turn.
    pub fn report_success(&self, addr: SocketAddr) {
        if self.any_failed.load(Ordering::Relaxed) {
            self.lock_failed().remove(&addr);
        }
    }

    fn lock_failed(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Instant>> {
        // A plain map of deadlines: still consistent after a panic elsewhere.
        self.failed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn rotate(order: &mut [usize], start: usize) {
    if !order.is_empty() {
        let len = order.len();
        order.rotate_left(start % len);
    }
}

/// A snapshot of one port's endpoints in the order one connection tries them.
pub(crate) struct Candidates {
    set: Arc<EndpointSet>,
    /// Indexes into `set.live`.
    order: Vec<usize>,
}

impl Candidates {
    pub fn service_id(&self) -> &str {
        &self.set.service_id
    }

    pub fn len(&self) -> usize {
        self.set.live.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Endpoint> {
        self.order.iter().map(|&i| &self.set.live[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            proxy_protocol: None,
        }
    }

    fn first(backends: &Backends) -> String {
        backends.candidates().iter().next().unwrap().task_id.clone()
    }

    #[test]
    fn round_robin_visits_each_live_endpoint_in_turn() {
        let backends = Backends::new(EndpointSet::new(
            &route(&[("a", true), ("b", true), ("c", true)]),
            &HashSet::new(),
        ));
        let picks: Vec<String> = (0..6).map(|_| first(&backends)).collect();
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn candidates_cover_every_endpoint_once() {
        let backends = Backends::new(EndpointSet::new(
            &route(&[("a", true), ("b", true), ("c", true)]),
            &HashSet::new(),
        ));
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

    #[test]
    fn an_endpoint_that_failed_is_tried_last_until_its_cool_down_ends() {
        let backends = Backends::new(EndpointSet::new(
            &route(&[("a", true), ("b", true), ("c", true)]),
            &HashSet::new(),
        ));
        let now = Instant::now();
        let b = backends.load().live[1].addr;
        backends.report_failure(b, now);
        for _ in 0..3 {
            let candidates = backends.candidates_at(now);
            let order: Vec<&str> = candidates.iter().map(|e| e.task_id.as_str()).collect();
            assert_eq!(order.last(), Some(&"b"), "{order:?}");
            assert_eq!(order.len(), 3);
        }
        // After the cool-down, b takes its turn again.
        let later = now + COOL_DOWN + Duration::from_millis(1);
        let firsts: HashSet<String> = (0..3)
            .map(|_| {
                backends
                    .candidates_at(later)
                    .iter()
                    .next()
                    .unwrap()
                    .task_id
                    .clone()
            })
            .collect();
        assert!(firsts.contains("b"));
        // So does one that connected again.
        backends.report_failure(b, later);
        backends.report_success(b);
        let firsts: HashSet<String> = (0..3)
            .map(|_| {
                backends
                    .candidates_at(later)
                    .iter()
                    .next()
                    .unwrap()
                    .task_id
                    .clone()
            })
            .collect();
        assert!(firsts.contains("b"));
    }
}
