//! The faults of a run, decided from its seed alone before it starts, so a
//! failing seed replays the same schedule (the hosts it names are resolved
//! at the time of each fault only for "the leader").

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// A kind of fault, as `--faults` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `kill -9` of everything a host runs, then a restart.
    Kill,
    /// A host's network cut, then healed.
    Partition,
    /// The leader's network cut, then healed.
    PartitionLeader,
    /// The leader's daemon stopped (SIGSTOP), then continued.
    PauseLeader,
    /// A worker fault and a manager fault at once (never two managers: a
    /// three-manager swarm keeps its quorum).
    Double,
    /// A manager's data directory filled up, then given its space back.
    DiskFull,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Kill,
        Kind::Partition,
        Kind::PartitionLeader,
        Kind::PauseLeader,
        Kind::Double,
        Kind::DiskFull,
    ];

    pub fn parse(name: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown fault {name:?}: the faults are {}",
                    names.join(", ")
                )
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Partition => "partition",
            Kind::PartitionLeader => "partition-leader",
            Kind::PauseLeader => "pause-leader",
            Kind::Double => "double",
            Kind::DiskFull => "disk-full",
        }
    }
}

/// Who a fault hits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    Host(String),
    /// Whichever manager leads when the fault starts.
    Leader,
}

/// What is done to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Kill,
    Partition,
    Pause,
    /// Fill the host's data directory's filesystem.
    Fill,
}

/// One fault: from `at` (since the start of the run) for `lasts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub at: Duration,
    pub lasts: Duration,
    pub action: Action,
    pub target: Target,
}

/// The hosts of the cluster, by role.
#[derive(Debug, Clone)]
pub struct Hosts {
    pub managers: Vec<String>,
    pub workers: Vec<String>,
}

/// The faults of a run of `duration`, one after another with a pause of
/// one to four seconds between them, each lasting two to eight seconds
/// (longer than the time it takes the swarm to notice, shorter than a
/// run), the last one over before the run ends.
pub fn plan(seed: u64, duration: Duration, kinds: &[Kind], hosts: &Hosts) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    if kinds.is_empty() || hosts.managers.is_empty() {
        return out;
    }
    let mut at = Duration::from_millis(rng.random_range(1000..4000));
    loop {
        let lasts = Duration::from_millis(rng.random_range(2000..8000));
        if at + lasts > duration {
            return out;
        }
        let kind = kinds[rng.random_range(0..kinds.len())];
        let pick =
            |rng: &mut StdRng, from: &[String]| from[rng.random_range(0..from.len())].clone();
        let all: Vec<String> = hosts
            .managers
            .iter()
            .chain(&hosts.workers)
            .cloned()
            .collect();
        let mut one = |action, target| {
            out.push(Fault {
                at,
                lasts,
                action,
                target,
            })
        };
        match kind {
            Kind::Kill => one(Action::Kill, Target::Host(pick(&mut rng, &all))),
            Kind::Partition => one(Action::Partition, Target::Host(pick(&mut rng, &all))),
            Kind::PartitionLeader => one(Action::Partition, Target::Leader),
            Kind::PauseLeader => one(Action::Pause, Target::Leader),
            Kind::DiskFull => one(Action::Fill, Target::Host(pick(&mut rng, &hosts.managers))),
            Kind::Double => {
                let manager = pick(&mut rng, &hosts.managers);
                let actions = [Action::Kill, Action::Partition, Action::Pause];
                let a = actions[rng.random_range(0..actions.len())];
                one(a, Target::Host(manager));
                if !hosts.workers.is_empty() {
                    let worker = pick(&mut rng, &hosts.workers);
                    let b = [Action::Kill, Action::Partition][rng.random_range(0..2)];
                    one(b, Target::Host(worker));
                }
            }
        }
        at += lasts + Duration::from_millis(rng.random_range(1000..4000));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Hosts {
        Hosts {
            managers: vec!["manager1".into(), "manager2".into(), "manager3".into()],
            workers: vec!["worker01".into(), "worker02".into()],
        }
    }

    #[test]
    fn a_seed_gives_the_same_schedule_and_another_seed_another() {
        let d = Duration::from_secs(120);
        let a = plan(7, d, &Kind::ALL, &hosts());
        assert_eq!(a, plan(7, d, &Kind::ALL, &hosts()));
        assert_ne!(a, plan(8, d, &Kind::ALL, &hosts()));
        assert!(a.len() >= 10, "{} faults in two minutes", a.len());
    }

    #[test]
    fn faults_do_not_overlap_but_in_pairs_and_end_within_the_run() {
        let d = Duration::from_secs(300);
        for seed in 0..50 {
            let faults = plan(seed, d, &Kind::ALL, &hosts());
            for f in &faults {
                assert!(f.at + f.lasts <= d);
            }
            for w in faults.windows(2) {
                let (a, b) = (&w[0], &w[1]);
                if a.at == b.at {
                    // A double fault: a manager and a worker.
                    let Target::Host(m) = &a.target else { panic!() };
                    let Target::Host(h) = &b.target else { panic!() };
                    assert!(m.starts_with("manager") && h.starts_with("worker"));
                } else {
                    assert!(a.at + a.lasts < b.at, "seed {seed}: {a:?} then {b:?}");
                }
            }
        }
    }

    #[test]
    fn only_the_asked_kinds_happen() {
        let faults = plan(3, Duration::from_secs(200), &[Kind::PauseLeader], &hosts());
        assert!(!faults.is_empty());
        assert!(faults
            .iter()
            .all(|f| f.action == Action::Pause && f.target == Target::Leader));
        assert!(Kind::parse("disk").unwrap_err().contains("kill, partition"));
    }
}
