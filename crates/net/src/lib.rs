//! flotilla-net: the routing mesh and service discovery of a node.
//!
//! The daemon feeds this crate, on every node, the cluster's published ports
//! and the endpoints of running tasks ([`MeshTable`]), and the names of
//! services ([`DnsTable`]). The crate does no cluster bookkeeping of its own:
//! each `apply` replaces the whole picture, so the caller can simply send the
//! current state after every store change.
//!
//! Table of contents:
//! - [`table`]: what the daemon feeds in: protocols, published ports, endpoints.
//! - [`mesh`]: [`Mesh`], which opens and closes one listener per route
//!   (published port, at the mesh's address or a specific one) and swaps
//!   endpoint sets atomically.
//! - [`addrs`]: [`LocalAddrs`], the service addresses (VIPs) on a local
//!   interface, kept equal to the wanted set.
//! - [`client_addr`]: [`ClientAddr`], the tunnel between the nodes and the
//!   policy routing that let both meshes keep clients' addresses.
//! - [`kernel`]: [`KernelMesh`], the same routes served by the kernel's
//!   NAT (iptables), where it can be set up; the proxy is the fallback.
//! - `balance`: the endpoint set of one port: round robin over healthy,
//!   undrained endpoints.
//! - `tcp`: the TCP listener of one port and the per-connection proxy.
//! - `socket`: binding listeners so a VIP and the wildcard share a port.
//! - `splice`: moving bytes between two sockets, zero-copy on Linux.
//! - `udp`: the UDP socket of one port and its client flows.
//! - [`proxy_protocol`]: the PROXY protocol header a published port may
//!   send its endpoints (opt-in).
//! - [`dns`]: [`Dns`], the service discovery server, and its [`DnsTable`].
//! - [`error`]: the typed errors of all of the above.

pub mod addrs;
mod balance;
pub mod client_addr;
mod config;
pub mod dns;
pub mod error;
pub mod host;
pub mod kernel;
mod marks;
pub mod mesh;
pub mod metrics;
mod protocol;
pub mod proxy_protocol;
mod socket;
mod splice;
pub mod table;
mod tcp;
mod udp;

pub use addrs::LocalAddrs;
pub use client_addr::ClientAddr;
pub use dns::{Dns, DnsService, DnsTable, EndpointMode};
pub use error::{AddrError, DnsError, KernelError, MeshError, PortFailure, TableError};
pub use kernel::KernelMesh;
pub use mesh::{Mesh, MeshConfig};
pub use proxy_protocol::ProxyVersion;
pub use table::{ClientPath, Endpoint, MeshTable, Protocol, PublishedPort, Route};
