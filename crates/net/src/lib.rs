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
//! - [`mesh`]: [`Mesh`], which opens and closes one listener per published
//!   port and swaps endpoint sets atomically.
//! - `balance`: the endpoint set of one port: round robin over healthy,
//!   undrained endpoints.
//! - `tcp`: the TCP listener of one port and the per-connection proxy.
//! - `splice`: moving bytes between two sockets, zero-copy on Linux.
//! - `udp`: the UDP socket of one port and its client flows.
//! - [`dns`]: [`Dns`], the service discovery server, and its [`DnsTable`].
//! - [`error`]: the typed errors of all of the above.

mod balance;
pub mod dns;
pub mod error;
pub mod mesh;
mod splice;
pub mod table;
mod tcp;
mod udp;

pub use dns::{Dns, DnsService, DnsTable, EndpointMode};
pub use error::{DnsError, MeshError, PortFailure, TableError};
pub use mesh::{Mesh, MeshConfig};
pub use table::{Endpoint, MeshTable, Protocol, PublishedPort, Route};
