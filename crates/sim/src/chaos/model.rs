//! What the clients were told, and what the swarm must therefore hold.
//!
//! Each service is driven by one client, so its operations have a total
//! order. An acknowledged operation must be reflected; a refused one must
//! not; one whose answer never came (a timeout, a dropped connection) may
//! or may not have happened. So a service has a set of possible states, and
//! what every manager shows once the faults heal must be one of them.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// What a client asked of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    Create {
        replicas: u64,
    },
    /// A new value of the service's `CHAOS_GEN` variable: a rolling update.
    Update {
        generation: u64,
    },
    Scale {
        replicas: u64,
    },
    Remove,
}

/// How the operation ended for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Acknowledged,
    Refused,
    /// No answer: it may have happened or not.
    Indeterminate,
}

/// A service as the swarm may show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum State {
    Absent,
    Present { replicas: u64, generation: u64 },
}

impl State {
    fn after(self, op: Op) -> State {
        match (self, op) {
            (State::Absent, Op::Create { replicas }) => State::Present {
                replicas,
                generation: 0,
            },
            (State::Present { replicas, .. }, Op::Update { generation }) => State::Present {
                replicas,
                generation,
            },
            (State::Present { generation, .. }, Op::Scale { replicas }) => State::Present {
                replicas,
                generation,
            },
            (State::Present { .. }, Op::Remove) => State::Absent,
            // Not possible from this state: the swarm refuses it.
            (s, _) => s,
        }
    }
}

/// Every service's possible states, as its operations come in.
#[derive(Debug, Default, Clone)]
pub struct Model {
    services: BTreeMap<String, BTreeSet<State>>,
}

/// A service whose observed state is none of those possible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub service: String,
    pub observed: State,
    pub possible: Vec<State>,
}

impl Model {
    pub fn record(&mut self, service: &str, op: Op, outcome: Outcome) {
        let states = self
            .services
            .entry(service.to_string())
            .or_insert_with(|| BTreeSet::from([State::Absent]));
        match outcome {
            Outcome::Acknowledged => {
                *states = states.iter().map(|s| s.after(op)).collect();
            }
            Outcome::Indeterminate => {
                let after: Vec<State> = states.iter().map(|s| s.after(op)).collect();
                states.extend(after);
            }
            // A refusal changes nothing (Docker's errors are refusals
            // before any write).
            Outcome::Refused => {}
        }
    }

    /// The services a swarm showing `observed` (name → state; a name not
    /// there is absent) contradicts.
    pub fn check(&self, observed: &BTreeMap<String, State>) -> Vec<Violation> {
        self.services
            .iter()
            .filter_map(|(name, possible)| {
                let seen = observed.get(name).copied().unwrap_or(State::Absent);
                (!possible.contains(&seen)).then(|| Violation {
                    service: name.clone(),
                    observed: seen,
                    possible: possible.iter().copied().collect(),
                })
            })
            .collect()
    }

    /// The replicas a service may be asked to run once things settle: the
    /// largest of its possible states (None when it may be absent only).
    pub fn possible(&self, service: &str) -> Vec<State> {
        self.services
            .get(service)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn services(&self) -> impl Iterator<Item = &String> {
        self.services.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;

    fn present(replicas: u64, generation: u64) -> State {
        State::Present {
            replicas,
            generation,
        }
    }

    #[test]
    fn acknowledged_operations_must_all_show() {
        let mut m = Model::default();
        m.record("a", Op::Create { replicas: 2 }, Acknowledged);
        m.record("a", Op::Scale { replicas: 3 }, Acknowledged);
        m.record("a", Op::Update { generation: 1 }, Acknowledged);
        assert_eq!(m.possible("a"), [present(3, 1)]);
        let seen = BTreeMap::from([("a".to_string(), present(3, 1))]);
        assert!(m.check(&seen).is_empty());
        let lost = BTreeMap::from([("a".to_string(), present(2, 1))]);
        assert_eq!(m.check(&lost).len(), 1, "a lost scale");
        assert_eq!(m.check(&BTreeMap::new()).len(), 1, "a lost service");
    }

    #[test]
    fn an_unanswered_operation_may_have_happened_or_not() {
        let mut m = Model::default();
        m.record("a", Op::Create { replicas: 1 }, Indeterminate);
        m.record("a", Op::Scale { replicas: 4 }, Indeterminate);
        assert_eq!(
            m.possible("a"),
            [State::Absent, present(1, 0), present(4, 0)]
        );
        m.record("a", Op::Remove, Acknowledged);
        assert_eq!(m.possible("a"), [State::Absent]);
    }

    #[test]
    fn a_refusal_changes_nothing() {
        let mut m = Model::default();
        m.record("a", Op::Create { replicas: 1 }, Acknowledged);
        m.record("a", Op::Scale { replicas: 5 }, Refused);
        m.record("b", Op::Create { replicas: 1 }, Refused);
        assert_eq!(m.possible("a"), [present(1, 0)]);
        assert_eq!(m.possible("b"), [State::Absent]);
        let seen = BTreeMap::from([("b".to_string(), present(1, 0))]);
        assert_eq!(m.check(&seen).len(), 2, "a missing, b made though refused");
    }
}
