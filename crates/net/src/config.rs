//! The mesh's tunables, shared by its TCP and UDP relays.

use std::time::Duration;

/// Tunables of the mesh; `Default` is what production uses.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// How long one endpoint gets to accept a connection before the next is
    /// tried. Loopback and a LAN answer in well under a millisecond; a dead
    /// node does not answer at all, so this bounds what it costs a client.
    pub connect_timeout: Duration,
    /// A UDP flow with no datagram either way for this long is ended.
    pub udp_idle_timeout: Duration,
    /// Most UDP flows per published port; datagrams of new clients beyond it
    /// are dropped. Each flow holds a socket and a 64 KiB buffer.
    pub udp_max_flows: usize,
    /// Relay TCP with splice(2) where the kernel has it (Linux). Off only to
    /// compare against the user-space copy.
    pub zero_copy: bool,
}

impl Default for MeshConfig {
    fn default() -> MeshConfig {
        MeshConfig {
            connect_timeout: Duration::from_secs(1),
            udp_idle_timeout: Duration::from_secs(30),
            udp_max_flows: 1024,
            zero_copy: true,
        }
    }
}
