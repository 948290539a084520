//! The agent: runs on every node, keeps a session with the managers and
//! makes the tasks assigned to this node real through an executor.
//!
//! - [`session`]: the link to the dispatcher.
//! - [`worker`]: one controller per assigned task.
//! - [`exec`]: executors (docker, process); [`logserver`]: task logs for
//!   managers asking from elsewhere in the cluster; [`execserver`]: commands
//!   run in tasks (`exec`) for them.
//! - [`network`]: the routing mesh and DNS; [`overlay`]: overlay networks;
//!   [`port_guard`]: tasks' ingress host ports kept to the swarm's nodes.
//! - [`taskfiles`]: tasks' secrets and configs as files on a tmpfs;
//!   [`templates`]: Go templates in what a task is given.

pub mod exec;
pub mod execserver;
pub mod logserver;
pub mod metrics;
pub mod network;
pub mod overlay;
pub mod port_guard;
pub mod session;
pub mod taskfiles;
pub mod templates;
pub mod worker;
