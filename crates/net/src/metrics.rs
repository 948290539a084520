//! The node's network figures: DNS queries by the answer they got, and the
//! routing mesh's connections and bytes per service (published ports and
//! VIPs alike). Label values are bounded: answers are a fixed set, services
//! are named by ID.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Answer = [(&'static str, &'static str); 1];

static DNS_QUERIES: LazyLock<Family<Answer, Counter>> = LazyLock::new(Family::default);

/// `service_id`, then `path` (proxy or kernel).
type Route = [(&'static str, String); 2];

static MESH_CONNECTIONS: LazyLock<Family<Route, Counter>> = LazyLock::new(Family::default);
/// `service_id`, `path` and `direction` (in: from clients, out: to them).
static MESH_BYTES: LazyLock<Family<[(&'static str, String); 3], Counter>> =
    LazyLock::new(Family::default);

pub fn register(r: &mut Registry) {
    r.register(
        "flotilla_dns_queries",
        "DNS queries this node's service discovery answered, by answer (service, nodata, nxdomain, forwarded, refused, servfail, formerr, notimp)",
        DNS_QUERIES.clone(),
    );
    r.register(
        "flotilla_mesh_connections",
        "Connections (TCP) and flows (UDP) the routing mesh of this node sent to a service, at a published port or its VIP",
        MESH_CONNECTIONS.clone(),
    );
    r.register(
        "flotilla_mesh_bytes",
        "Bytes the routing mesh of this node carried for a service (in: from clients; out: to them; the proxy counts payload when a connection ends, the kernel path IP packets)",
        MESH_BYTES.clone(),
    );
}

pub(crate) fn dns_answered(answer: &'static str) {
    DNS_QUERIES.get_or_create(&[("answer", answer)]).inc();
}

/// The mesh path a figure was counted on.
#[derive(Clone, Copy)]
pub(crate) enum Path {
    Proxy,
    /// Counted from the rules' counters (bytes are IP packets' sizes).
    Kernel,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Proxy => "proxy",
            Path::Kernel => "kernel",
        }
    }
}

fn route(service_id: &str, path: Path) -> Route {
    [
        ("service_id", service_id.to_string()),
        ("path", path.name().to_string()),
    ]
}

pub(crate) fn mesh_connections(service_id: &str, path: Path, n: u64) {
    MESH_CONNECTIONS
        .get_or_create(&route(service_id, path))
        .inc_by(n);
}

pub(crate) fn mesh_bytes(service_id: &str, path: Path, bytes_in: u64, bytes_out: u64) {
    for (direction, n) in [("in", bytes_in), ("out", bytes_out)] {
        if n > 0 {
            let [a, b] = route(service_id, path);
            MESH_BYTES
                .get_or_create(&[a, b, ("direction", direction.to_string())])
                .inc_by(n);
        }
    }
}
