//! The agent: runs on every node, keeps a session with the managers and
//! makes the tasks assigned to this node real through an executor.
//!
//! - [`session`]: the link to the dispatcher.
//! - [`worker`]: one controller per assigned task.
//! - [`exec`]: executors (docker, process).

pub mod exec;
pub mod network;
pub mod session;
pub mod worker;
