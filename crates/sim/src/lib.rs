//! flotilla-sim: simulated worker nodes for benchmarks and tests.
//!
//! Each simulated node is a real member of the swarm — its own key, its
//! own certificate from the real join protocol, its own mutual-TLS session
//! with the leader's dispatcher through the real agent — whose executor
//! runs nothing. Thousands of them fit in one process.
//!
//! - [`exec`]: the `sim` executor.
//! - [`node`]: one node: join, then the agent.
//! - [`fleet`]: many nodes, joined a bounded number at a time.
//! - [`load`]: the scale benchmark's driver (Engine API load, /proc samples).

pub mod chaos;
pub mod exec;
pub mod fleet;
pub mod load;
pub mod node;

pub use exec::{SimConfig, SimExecutor};
pub use fleet::{Fleet, FleetSpec, Progress};
pub use node::{JoinError, JoinSpec, SimNode};
