//! Service discovery: a DNS server per node answering `<service>` and
//! `tasks.<service>` from a [`DnsTable`] the daemon swaps in, NXDOMAIN for
//! unknown names of our zone, and forwarding everything else to the host's
//! resolvers.
//!
//! hickory-server supplies the transport (UDP and TCP framing, per-request
//! tasks); the answers come from our own request handler rather than a
//! hickory zone: our "zone" is a map swapped as a whole, which hickory's
//! record-set authorities do not model.

mod forward;
mod table;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol as Transport;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tracing::{debug, warn};

use crate::error::DnsError;
use crate::table::Protocol;
use forward::Upstreams;
use table::Resolution;
pub use table::{DnsService, DnsTable, EndpointMode};

/// Answers change as tasks come and go: a short TTL keeps client caches
/// from holding on to a task that has been stopped.
const TTL: u32 = 10;

/// A TCP client that sends nothing for this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Responses queued per TCP connection.
const TCP_RESPONSE_QUEUE: usize = 32;

/// TCP connections the kernel queues before accept (tokio's default).
const TCP_BACKLOG: i32 = 1024;

/// The node's DNS server. Cheap to clone: clones share the table, so one
/// clone can `run` while another `apply`s.
#[derive(Clone)]
pub struct Dns {
    inner: Arc<Inner>,
}

struct Inner {
    bind: SocketAddr,
    table: ArcSwap<DnsTable>,
    upstreams: Upstreams,
    /// Rotates multi-address answers so clients that take the first address
    /// spread over the tasks.
    rotation: AtomicUsize,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Dns {
    /// A server for `bind` that forwards non-local names to the resolvers
    /// of /etc/resolv.conf, read once, here: all of them, loopback stubs
    /// such as systemd-resolved's 127.0.0.53 included (the server runs in
    /// the host's network namespace, where they answer), except `bind`
    /// itself. What the daemon calls. Binds nothing until `run`.
    pub fn new(bind: SocketAddr) -> Dns {
        let upstreams = match std::fs::read_to_string("/etc/resolv.conf") {
            Ok(text) => Upstreams::from_resolv_conf(&text, bind),
            Err(e) => {
                warn!(error = %e, "cannot read /etc/resolv.conf: names outside the cluster will be refused");
                Upstreams::default()
            }
        };
        Dns::build(bind, upstreams)
    }

    /// A server that forwards non-local names to `upstreams` (none: they are
    /// answered REFUSED).
    pub fn with_upstreams(bind: SocketAddr, upstreams: Vec<SocketAddr>) -> Dns {
        Dns::build(bind, Upstreams::new(upstreams))
    }

    fn build(bind: SocketAddr, upstreams: Upstreams) -> Dns {
        let (shutdown, _) = tokio::sync::watch::channel(false);
        Dns {
            inner: Arc::new(Inner {
                bind,
                table: ArcSwap::from_pointee(DnsTable::new()),
                upstreams,
                rotation: AtomicUsize::new(0),
                shutdown,
            }),
        }
    }

    /// Replaces every name at once; queries in flight finish on the old table.
    pub fn apply(&self, table: DnsTable) {
        self.inner.table.store(Arc::new(table));
    }

    /// Binds UDP and TCP on the address given to `new` and serves until
    /// `shutdown` (or until this future is dropped). The sockets share
    /// their port like the mesh's (SO_REUSEPORT), so a server at a specific
    /// address (198.18.0.1:53, say) can run while a service publishes port
    /// 53 on the mesh's wildcard address.
    pub async fn run(&self) -> Result<(), DnsError> {
        self.run_at(self.inner.bind).await
    }

    /// Like `run`, on another address: one server answers at several (a
    /// node's address on each overlay network), from one table.
    pub async fn run_at(&self, addr: SocketAddr) -> Result<(), DnsError> {
        let bind_error = |protocol| {
            move |source| DnsError::Bind {
                addr,
                protocol,
                source,
            }
        };
        let udp = crate::socket::udp_socket(addr).map_err(bind_error(Protocol::Udp))?;
        let tcp =
            crate::socket::tcp_listener(addr, TCP_BACKLOG).map_err(bind_error(Protocol::Tcp))?;
        self.serve(udp, tcp).await
    }

    /// Serves on sockets the caller bound (tests bind port 0 and read the
    /// port back) until `shutdown` or until this future is dropped.
    pub async fn serve(&self, udp: UdpSocket, tcp: TcpListener) -> Result<(), DnsError> {
        let addr = udp.local_addr().unwrap_or(self.inner.bind);
        let mut stop = self.inner.shutdown.subscribe();
        // The server owns its tasks (a JoinSet): dropping it ends them all.
        let mut server = Server::new(Handler {
            inner: self.inner.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE, TCP_RESPONSE_QUEUE);
        tokio::select! {
            done = server.block_until_done() => done.map_err(|e| DnsError::Server { addr, message: e.to_string() }),
            _ = stop.wait_for(|stopped| *stopped) => Ok(()),
        }
    }

    /// Ends `run`/`serve` on every clone.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

/// hickory's entry point: one call per query.
struct Handler {
    inner: Arc<Inner>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        let result = if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            crate::metrics::dns_answered("notimp");
            reply_code(request, ResponseCode::NotImp, response).await
        } else {
            match request.request_info() {
                Ok(info) => {
                    let name = info.query.name().to_string();
                    let resolution = self.inner.table.load().resolve_for(
                        &name,
                        info.query.query_type(),
                        Some(request.src().ip()),
                    );
                    self.answer(request, &name, resolution, response).await
                }
                Err(_) => {
                    crate::metrics::dns_answered("formerr");
                    reply_code(request, ResponseCode::FormErr, response).await
                }
            }
        };
        result.unwrap_or_else(|e| {
            debug!(client = %request.src(), error = %e, "DNS response not sent");
            failed(request)
        })
    }
}

type SendResult = Result<ResponseInfo, hickory_server::net::NetError>;

impl Handler {
    async fn answer<R: ResponseHandler>(
        &self,
        request: &Request,
        name: &str,
        resolution: Resolution,
        response: R,
    ) -> SendResult {
        let ours = match &resolution {
            Resolution::Addresses(_) => Some("service"),
            Resolution::NoData => Some("nodata"),
            Resolution::NxDomain => Some("nxdomain"),
            // Told by `forward`, which knows how it went.
            Resolution::Elsewhere => None,
        };
        if let Some(answer) = ours {
            crate::metrics::dns_answered(answer);
        }
        match resolution {
            Resolution::Addresses(mut ips) => {
                let turn = self.inner.rotation.fetch_add(1, Ordering::Relaxed) % ips.len();
                ips.rotate_left(turn);
                reply_addresses(request, &ips, response).await
            }
            Resolution::NoData => reply_code(request, ResponseCode::NoError, response).await,
            Resolution::NxDomain => reply_code(request, ResponseCode::NXDomain, response).await,
            Resolution::Elsewhere => self.forward(request, name, response).await,
        }
    }

    async fn forward<R: ResponseHandler>(
        &self,
        request: &Request,
        name: &str,
        response: R,
    ) -> SendResult {
        if self.inner.upstreams.is_empty() {
            debug!(name, "no upstream resolver: refused");
            crate::metrics::dns_answered("refused");
            return reply_code(request, ResponseCode::Refused, response).await;
        }
        let over_tcp = request.protocol() == Transport::Tcp;
        match self
            .inner
            .upstreams
            .forward(request.as_slice(), over_tcp)
            .await
        {
            Ok(answer) => {
                crate::metrics::dns_answered("forwarded");
                relay(request, &answer, response).await
            }
            Err(e) => {
                crate::metrics::dns_answered("servfail");
                warn!(name, "forwarding failed: {e}");
                reply_code(request, ResponseCode::ServFail, response).await
            }
        }
    }
}

/// An authoritative answer with address records for the query's name.
async fn reply_addresses<R: ResponseHandler>(
    request: &Request,
    ips: &[std::net::IpAddr],
    mut response: R,
) -> SendResult {
    let name = match request.request_info() {
        Ok(info) => info.query.original().name().clone(),
        Err(_) => return reply_code(request, ResponseCode::FormErr, response).await,
    };
    let records: Vec<Record> = ips
        .iter()
        .map(|ip| {
            let data = match ip {
                std::net::IpAddr::V4(v4) => RData::A(A(*v4)),
                std::net::IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
            };
            Record::from_rdata(name.clone(), TTL, data)
        })
        .collect();
    let metadata = our_metadata(request, ResponseCode::NoError);
    let edns = response_edns(request);
    let message = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
        metadata,
        records.iter(),
        [],
        [],
        [],
    );
    response.send_response(message).await
}

/// An authoritative answer without records: NOERROR (no data), NXDOMAIN,
/// or an error code.
async fn reply_code<R: ResponseHandler>(
    request: &Request,
    code: ResponseCode,
    mut response: R,
) -> SendResult {
    let metadata = our_metadata(request, code);
    let edns = response_edns(request);
    let message =
        MessageResponseBuilder::new(&request.queries, edns.as_ref()).build_no_records(metadata);
    response.send_response(message).await
}

/// The upstream's answer, passed on as it came.
async fn relay<R: ResponseHandler>(
    request: &Request,
    answer: &Message,
    mut response: R,
) -> SendResult {
    let mut builder = MessageResponseBuilder::new(&request.queries, None);
    if let Some(edns) = &answer.edns {
        builder.edns(edns);
    }
    let mut metadata = answer.metadata;
    metadata.id = request.metadata.id;
    let message = builder.build(
        metadata,
        answer.answers.iter(),
        answer.authorities.iter(),
        [],
        answer.additionals.iter(),
    );
    response.send_response(message).await
}

/// EDNS of our own answers: only if the client used EDNS, advertising the
/// client's payload size so UDP answers are cut (TC) where the client needs.
fn response_edns(request: &Request) -> Option<Edns> {
    let asked = request.edns.as_ref()?;
    let mut edns = Edns::new();
    edns.set_max_payload(asked.max_payload().max(512));
    edns.set_version(0);
    Some(edns)
}

fn our_metadata(request: &Request, code: ResponseCode) -> Metadata {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = code != ResponseCode::Refused && code != ResponseCode::ServFail;
    metadata.recursion_available = true;
    metadata.response_code = code;
    metadata
}

/// What the handler reports when no response could be sent.
fn failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}
