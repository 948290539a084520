//! What the kernel path of the mesh and the tunnel that keeps clients'
//! addresses agree on: the marks each sets and the other matches, and the
//! tunnel's device.

/// The connmark bit of a connection the mesh translated: one bit, so the
/// rest of the mark stays whoever else's. Not one Docker or kube-proxy
/// (0x4000, 0x8000) uses.
pub const MARK: u32 = 0x0200_0000;

/// A connection the proxy made from a client's address.
pub const PROXY_MARK: u32 = 0x0100_0000;

/// The tunnel between the nodes.
pub const TUNNEL_DEVICE: &str = "flotilla-ca";
