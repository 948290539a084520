//! Which manager the session calls: the last known leader first. After a
//! failure, the leader the answer names (a typed `NotLeader`) comes first;
//! otherwise the manager that failed goes last, so one dead manager does
//! not cost a whole backoff round. An answer the agent could not use
//! (a protocol error) moves nothing: another manager would answer the same.

use flotilla_store::StoreError;

use super::SessionError;

/// The managers to try, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Managers(Vec<String>);

/// Where the session goes after a failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// To the leader the manager named.
    Leader(String),
    /// To the next manager; the failed one goes last.
    Rotate,
    /// Nowhere: the failure was not the manager's.
    Stay,
}

/// The decision after a call failed with `error`.
pub fn next(error: &SessionError) -> Next {
    match error {
        SessionError::Refused {
            error: StoreError::NotLeader {
                leader: Some(leader),
            },
            ..
        } => Next::Leader(leader.clone()),
        SessionError::Refused { .. } | SessionError::Failed { .. } => Next::Rotate,
        SessionError::Protocol { .. } | SessionError::NoManager => Next::Stay,
    }
}

impl Managers {
    pub fn new(managers: Vec<String>) -> Managers {
        Managers(managers)
    }

    /// The manager to call now.
    pub fn current(&self) -> Result<String, SessionError> {
        self.0.first().cloned().ok_or(SessionError::NoManager)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Reorders the list after `failed` answered `error`.
    pub fn failed(&mut self, failed: &str, error: &SessionError) {
        match next(error) {
            Next::Leader(leader) => {
                self.0.retain(|a| *a != leader);
                self.0.insert(0, leader);
            }
            Next::Rotate => {
                if let Some(pos) = self.0.iter().position(|a| a == failed) {
                    let a = self.0.remove(pos);
                    self.0.push(a);
                }
            }
            Next::Stay => {}
        }
    }

    /// Adds managers the dispatcher told about (joined since this node did).
    pub fn learn(&mut self, managers: &[String]) {
        for m in managers {
            if !self.0.contains(m) {
                self.0.push(m.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managers(v: &[&str]) -> Managers {
        Managers::new(list(v))
    }

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn not_leader(addr: &str, leader: Option<&str>) -> SessionError {
        SessionError::Refused {
            addr: addr.into(),
            error: StoreError::NotLeader {
                leader: leader.map(Into::into),
            },
        }
    }

    #[test]
    fn the_session_follows_the_leader_a_follower_names() {
        let mut m = managers(&["a:2377", "b:2377", "c:2377"]);
        m.failed("a:2377", &not_leader("a:2377", Some("c:2377")));
        assert_eq!(m.as_slice(), list(&["c:2377", "a:2377", "b:2377"]));
        // A leader the list did not know yet is tried first too.
        m.failed("c:2377", &not_leader("c:2377", Some("d:2377")));
        assert_eq!(
            m.as_slice(),
            list(&["d:2377", "c:2377", "a:2377", "b:2377"])
        );
        assert_eq!(m.current(), Ok("d:2377".to_string()));
    }

    #[test]
    fn without_a_named_leader_the_failed_manager_goes_last() {
        let mut m = managers(&["a:2377", "b:2377", "c:2377"]);
        m.failed("a:2377", &not_leader("a:2377", None));
        assert_eq!(m.as_slice(), list(&["b:2377", "c:2377", "a:2377"]));
        let unreachable = SessionError::Failed {
            addr: "b:2377".into(),
            message: "connection refused".into(),
        };
        m.failed("b:2377", &unreachable);
        assert_eq!(m.as_slice(), list(&["c:2377", "a:2377", "b:2377"]));
        // Another store error names no leader either.
        let no_leader = SessionError::Refused {
            addr: "c:2377".into(),
            error: StoreError::NoLeader,
        };
        m.failed("c:2377", &no_leader);
        assert_eq!(m.as_slice(), list(&["a:2377", "b:2377", "c:2377"]));
    }

    #[test]
    fn an_answer_the_agent_cannot_use_moves_nothing() {
        let mut m = managers(&["a:2377", "b:2377"]);
        let bad = SessionError::Protocol {
            addr: "a:2377".into(),
            message: "decoding: expected value".into(),
        };
        assert_eq!(next(&bad), Next::Stay);
        m.failed("a:2377", &bad);
        assert_eq!(m.as_slice(), list(&["a:2377", "b:2377"]));
    }

    #[test]
    fn managers_told_about_are_added_once_at_the_end() {
        let mut m = managers(&["b:2377"]);
        m.learn(&list(&["a:2377", "b:2377", "c:2377"]));
        assert_eq!(m.as_slice(), list(&["b:2377", "a:2377", "c:2377"]));
        assert_eq!(Managers::default().current(), Err(SessionError::NoManager));
    }
}
