//! The agent: runs on every node, keeps a session with the manager and makes
//! the tasks assigned to this node real through an executor.

pub mod exec;
