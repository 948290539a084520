//! The pacing of an update or a rollback, read from the service spec with
//! SwarmKit's defaults: parallelism 1 (0 = all at once), no delay, failure
//! action pause, monitor 5 s, max failure ratio 0, order stop-first.

use chrono::Duration;
use flotilla_store::models::{
    ServiceSpec, ServiceSpecRollbackConfigFailureActionEnum as RollbackAction,
    ServiceSpecRollbackConfigOrderEnum as RollbackOrder,
    ServiceSpecUpdateConfigFailureActionEnum as UpdateAction,
    ServiceSpecUpdateConfigOrderEnum as UpdateOrder,
};

pub const DEFAULT_MONITOR: Duration = Duration::seconds(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureAction {
    Pause,
    Continue,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The old task stops before the new one starts: never two tasks of a
    /// slot at once.
    StopFirst,
    /// The new task runs before the old one stops: never fewer tasks than
    /// wanted.
    StartFirst,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Slots replaced at once; 0 means all of them.
    pub parallelism: usize,
    pub delay: Duration,
    pub failure_action: FailureAction,
    pub monitor: Duration,
    pub max_failure_ratio: f64,
    pub order: Order,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            parallelism: 1,
            delay: Duration::zero(),
            failure_action: FailureAction::Pause,
            monitor: DEFAULT_MONITOR,
            max_failure_ratio: 0.0,
            order: Order::StopFirst,
        }
    }
}

fn nanos(v: Option<i64>) -> Option<Duration> {
    v.map(|n| Duration::nanoseconds(n.max(0)))
}

/// The config that paces the service's rollout now: `RollbackConfig` while
/// rolling back, `UpdateConfig` otherwise. A missing field takes Docker's
/// default; a zero monitor too, as the docker CLI reads it.
pub fn config(spec: &ServiceSpec, rollback: bool) -> Config {
    let d = Config::default();
    let (parallelism, delay, monitor, ratio, action, order) = if rollback {
        let c = spec.rollback_config.clone().unwrap_or_default();
        let action = match c.failure_action {
            Some(RollbackAction::CONTINUE) => FailureAction::Continue,
            _ => FailureAction::Pause,
        };
        let order = match c.order {
            Some(RollbackOrder::START_FIRST) => Order::StartFirst,
            _ => Order::StopFirst,
        };
        (
            c.parallelism,
            c.delay,
            c.monitor,
            c.max_failure_ratio,
            action,
            order,
        )
    } else {
        let c = spec.update_config.clone().unwrap_or_default();
        let action = match c.failure_action {
            Some(UpdateAction::CONTINUE) => FailureAction::Continue,
            Some(UpdateAction::ROLLBACK) => FailureAction::Rollback,
            _ => FailureAction::Pause,
        };
        let order = match c.order {
            Some(UpdateOrder::START_FIRST) => Order::StartFirst,
            _ => Order::StopFirst,
        };
        (
            c.parallelism,
            c.delay,
            c.monitor,
            c.max_failure_ratio,
            action,
            order,
        )
    };
    Config {
        parallelism: parallelism.map_or(d.parallelism, |p| p.max(0) as usize),
        delay: nanos(delay).unwrap_or(d.delay),
        failure_action: action,
        monitor: nanos(monitor).filter(|m| !m.is_zero()).unwrap_or(d.monitor),
        max_failure_ratio: ratio.unwrap_or(0.0).clamp(0.0, 1.0),
        order,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_store::models::{ServiceSpecRollbackConfig, ServiceSpecUpdateConfig};

    #[test]
    fn docker_defaults() {
        assert_eq!(config(&ServiceSpec::default(), false), Config::default());
        assert_eq!(config(&ServiceSpec::default(), true), Config::default());
    }

    #[test]
    fn reads_the_config_of_the_phase() {
        let spec = ServiceSpec {
            update_config: Some(ServiceSpecUpdateConfig {
                parallelism: Some(0),
                delay: Some(10_000_000_000),
                failure_action: Some(UpdateAction::ROLLBACK),
                monitor: Some(0),
                max_failure_ratio: Some(0.5),
                order: Some(UpdateOrder::START_FIRST),
            }),
            rollback_config: Some(ServiceSpecRollbackConfig {
                parallelism: Some(3),
                failure_action: Some(RollbackAction::CONTINUE),
                monitor: Some(1_000_000_000),
                ..Default::default()
            }),
            ..Default::default()
        };
        let u = config(&spec, false);
        assert_eq!(u.parallelism, 0);
        assert_eq!(u.delay, Duration::seconds(10));
        assert_eq!(u.failure_action, FailureAction::Rollback);
        assert_eq!(u.monitor, DEFAULT_MONITOR, "0 means the default");
        assert_eq!(u.max_failure_ratio, 0.5);
        assert_eq!(u.order, Order::StartFirst);
        let r = config(&spec, true);
        assert_eq!(r.parallelism, 3);
        assert_eq!(r.failure_action, FailureAction::Continue);
        assert_eq!(r.monitor, Duration::seconds(1));
        assert_eq!(r.order, Order::StopFirst);
    }
}
