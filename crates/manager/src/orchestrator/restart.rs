//! The restart policy: whether a task that ended gets a replacement, and
//! when. Condition any / on-failure / none, a delay (default 5 s), at most
//! N attempts within a window.

use flotilla_store::models::{
    Service, Task, TaskSpecRestartPolicyConditionEnum as Condition, TaskState,
};
use flotilla_store::state::TaskExt;

use super::parse_time;

pub const DEFAULT_DELAY_NS: i64 = 5_000_000_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub condition: Condition,
    pub delay: chrono::Duration,
    pub max_attempts: u64,
    pub window: chrono::Duration,
}

pub fn policy(svc: &Service) -> Policy {
    let p = svc
        .spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.restart_policy.clone())
        .unwrap_or_default();
    let condition = match p.condition {
        Some(c) if c != Condition::EMPTY => c,
        _ => Condition::ANY,
    };
    Policy {
        condition,
        delay: chrono::Duration::nanoseconds(p.delay.unwrap_or(DEFAULT_DELAY_NS).max(0)),
        max_attempts: p.max_attempts.unwrap_or(0).max(0) as u64,
        window: chrono::Duration::nanoseconds(p.window.unwrap_or(0).max(0)),
    }
}

/// Whether `ended` (a task of the slot that reached a terminal state while
/// still wanted) should be replaced, given the slot's other `history`.
pub fn should_restart(
    p: &Policy,
    ended: &Task,
    history: &[&Task],
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    match p.condition {
        Condition::NONE => return false,
        Condition::ON_FAILURE if ended.state() == TaskState::COMPLETE => return false,
        _ => {}
    }
    if p.max_attempts == 0 {
        return true;
    }
    // Restarts so far: earlier tasks of this slot that ended, counted within
    // the window when one is set.
    let restarts = history
        .iter()
        .filter(|t| t.id_str() != ended.id_str() && t.state() > TaskState::RUNNING)
        .filter(|t| {
            p.window.is_zero() || parse_time(&t.created_at).is_some_and(|c| now - c <= p.window)
        })
        .count() as u64;
    restarts < p.max_attempts
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_store::models::{ServiceSpec, TaskSpec, TaskSpecRestartPolicy, TaskStatus};

    fn svc(cond: Condition, max: i64) -> Service {
        Service::from(bollard::models::Service {
            spec: Some(ServiceSpec {
                task_template: Some(TaskSpec {
                    restart_policy: Some(TaskSpecRestartPolicy {
                        condition: Some(cond),
                        max_attempts: Some(max),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn ended(id: &str, state: TaskState) -> Task {
        Task {
            id: Some(id.into()),
            status: Some(TaskStatus {
                state: Some(state),
                ..Default::default()
            }),
            created_at: Some(flotilla_store::ids::now()),
            ..Default::default()
        }
    }

    #[test]
    fn conditions() {
        let now = chrono::Utc::now();
        let done = ended("a", TaskState::COMPLETE);
        let failed = ended("b", TaskState::FAILED);
        assert!(should_restart(
            &policy(&svc(Condition::ANY, 0)),
            &done,
            &[],
            now
        ));
        assert!(!should_restart(
            &policy(&svc(Condition::ON_FAILURE, 0)),
            &done,
            &[],
            now
        ));
        assert!(should_restart(
            &policy(&svc(Condition::ON_FAILURE, 0)),
            &failed,
            &[],
            now
        ));
        assert!(!should_restart(
            &policy(&svc(Condition::NONE, 0)),
            &failed,
            &[],
            now
        ));
    }

    #[test]
    fn max_attempts_counts_earlier_ends() {
        let now = chrono::Utc::now();
        let p = policy(&svc(Condition::ANY, 2));
        let (a, b, c) = (
            ended("a", TaskState::FAILED),
            ended("b", TaskState::FAILED),
            ended("c", TaskState::FAILED),
        );
        assert!(should_restart(&p, &a, &[&a], now));
        assert!(should_restart(&p, &b, &[&a, &b], now));
        assert!(!should_restart(&p, &c, &[&a, &b, &c], now));
    }

    #[test]
    fn default_delay_is_five_seconds() {
        assert_eq!(
            policy(&Service::default()).delay,
            chrono::Duration::seconds(5)
        );
        assert_eq!(policy(&Service::default()).condition, Condition::ANY);
    }
}
