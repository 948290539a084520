//! The manager: everything a manager node runs besides the store.
//!
//! - [`controlapi`]: validates API requests and turns them into store ops.
//! - [`orchestrator`]: replicated and global services, restarts, the task reaper.
//! - [`scheduler`]: places pending tasks on nodes.
//! - [`dispatcher`]: agent sessions: registration, heartbeats, assignments, status.
//! - [`leader`]: runs the controllers above while this manager leads.

pub mod ca;
pub mod constraint;
pub mod controlapi;
pub mod dispatcher;
pub mod error;
pub mod execbroker;
pub mod execrelay;
pub mod generic;
pub mod leader;
pub mod logbroker;
pub mod metrics;
pub mod orchestrator;
pub mod raftmembers;
pub mod scheduler;
mod status_reports;

pub use error::Error;

#[cfg(test)]
mod testutil;
