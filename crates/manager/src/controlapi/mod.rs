//! The control API: validates what clients ask and turns it into store
//! ops. Reads happen on the caller's side; every write here is checked
//! against the state again when Raft applies it (versions, name clashes).

pub mod names;
pub mod network;
pub mod node;
pub mod secret;
pub mod service;
pub mod swarm;
