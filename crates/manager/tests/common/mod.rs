//! Helpers shared by the manager's integration tests.

use flotilla_manager::scheduler::{self, Scheduler};
use flotilla_store::{ChangeMark, Op, State};

/// The leader's scheduler, which keeps node loads between passes and looks
/// at the services changed since its last pass, checked on every pass
/// against what a fresh full pass decides.
#[derive(Default)]
pub struct CheckedScheduler {
    scheduler: Scheduler,
    mark: Option<ChangeMark>,
}

impl CheckedScheduler {
    pub fn pass(&mut self, state: &State, now: &str) -> Vec<Op> {
        let scope = self
            .mark
            .and_then(|m| state.changed_services_for(&m, scheduler::INTEREST));
        let ops = self.scheduler.pass(state, now, scope.as_ref());
        self.mark = Some(state.change_mark());
        let full = scheduler::schedule(state, now);
        assert_eq!(
            format!("{ops:#?}"),
            format!("{full:#?}"),
            "the scheduler over {scope:?} decides what a full pass does"
        );
        ops
    }

    /// As in the leader: after a failed op the next pass is a full one.
    pub fn forget(&mut self) {
        self.mark = None;
    }
}
