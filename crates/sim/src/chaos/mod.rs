//! The fault-injection harness (`flotilla-chaos`): seeded schedules of
//! faults against a cluster of `scripts/cluster.sh`, clients whose every
//! answer is recorded, and checks that what was acknowledged holds.
//!
//! - [`schedule`]: the faults a seed gives (pure).
//! - [`model`]: what the answers allow the swarm to show (pure).
//! - [`observe`]: what the managers show, and the task processes in /proc.
//! - [`cluster`]: the cluster through cluster.sh.
//! - [`run`]: one run: clients and faults, then the checks.

pub mod cluster;
pub mod model;
pub mod observe;
pub mod run;
pub mod schedule;
