//! Task logs across the cluster, as SwarmKit's log broker carries them: a
//! manager asks the node running a task for its logs through the leader's
//! dispatcher (the request goes down the node's assignment stream), and
//! the node sends them back in chunks. These are the messages.

use serde::{Deserialize, Serialize};

use crate::models::Task;

/// What a node is asked for: one task's logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRequest {
    /// The subscription the answers go to.
    pub sub: u64,
    pub task: Task,
    pub follow: bool,
    /// Last N lines only.
    pub tail: Option<usize>,
    /// Unix seconds: older lines are skipped.
    pub since: Option<i64>,
    pub stdout: bool,
    pub stderr: bool,
}

/// One line of a task's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub stderr: bool,
    /// RFC 3339 with nanoseconds.
    pub timestamp: String,
    /// The line's bytes, base64 (a line need not be UTF-8).
    pub data: String,
}

impl LogEntry {
    pub fn new(stderr: bool, timestamp: String, line: &[u8]) -> LogEntry {
        use base64::Engine;
        LogEntry {
            stderr,
            timestamp,
            data: base64::engine::general_purpose::STANDARD.encode(line),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .unwrap_or_default()
    }
}

/// What a node sends back: lines of a subscription, and at its end why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub sub: u64,
    pub entries: Vec<LogEntry>,
    /// Set on the last chunk: empty when the logs simply ended, else why
    /// they could not be read.
    pub end: Option<String>,
}
