//! The updater as pure decisions: a simulated cluster (orchestrators,
//! scheduler, and agents that walk tasks through their states) on a clock
//! the test moves, so every wait is exact and nothing sleeps.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, TimeZone, Utc};
use flotilla_manager::controlapi::service::{rolled_back, updated};
use flotilla_manager::orchestrator::{global, replicated, Plan};
use flotilla_store::ids::format_time;
use flotilla_store::models::*;
use flotilla_store::state::{is_terminal, TaskExt};
use flotilla_store::{ChangeMark, Op, State};
use proptest::prelude::*;

const OLD: &str = "app:1";
const NEW: &str = "app:2";
/// Tasks of this image exit as soon as they start.
const CRASH: &str = "app:crash";

struct World {
    state: State,
    index: u64,
    now: DateTime<Utc>,
    /// Tasks whose agent is slow: they stay STARTING (or, asked to stop,
    /// RUNNING) until released.
    held: BTreeSet<String>,
    /// Where the last leader pass left off, and when: the next pass at the
    /// same instant checks that reconciling only the services changed
    /// since (what the leader's controllers do) decides what a full pass
    /// decides.
    mark: Option<(ChangeMark, DateTime<Utc>)>,
    scheduler: common::CheckedScheduler,
}

impl World {
    fn new(nodes: &[&str]) -> World {
        let mut w = World {
            state: State::default(),
            index: 0,
            now: Utc.with_ymd_and_hms(2024, 1, 1, 12, 0, 0).unwrap(),
            held: BTreeSet::new(),
            mark: None,
            scheduler: Default::default(),
        };
        for id in nodes {
            w.apply(vec![Op::PutNode(Box::new(Node {
                id: Some(id.to_string()),
                spec: Some(NodeSpec {
                    role: Some(NodeSpecRoleEnum::WORKER),
                    availability: Some(NodeSpecAvailabilityEnum::ACTIVE),
                    ..Default::default()
                }),
                description: Some(NodeDescription {
                    hostname: Some(id.to_string()),
                    ..Default::default()
                }),
                status: Some(NodeStatus {
                    state: Some(NodeState::READY),
                    ..Default::default()
                }),
                ..Default::default()
            }))]);
        }
        w
    }

    fn apply(&mut self, ops: Vec<Op>) {
        self.index += 1;
        for op in ops {
            if self.state.apply(self.index, op).is_err() {
                // As in the leader: a failed op means a full pass next.
                self.mark = None;
                self.scheduler.forget();
            }
        }
    }

    fn advance(&mut self, secs: i64) {
        self.now += Duration::seconds(secs);
    }

    /// One leader pass: orchestrators then scheduler, on the test's clock.
    fn decide(&mut self) -> Plan {
        let mut plan = replicated::reconcile(&self.state, self.now);
        let g = global::reconcile(&self.state, self.now);
        plan.ops.extend(g.ops);
        if let Some(at) = g.wake_at {
            plan.wake(at);
        }
        let now = format_time(self.now);
        plan.ops.extend(self.scheduler.pass(&self.state, &now));
        plan
    }

    /// Leader passes until they have nothing more to do; returns the last
    /// wake-up asked for.
    fn pass(&mut self) -> Option<DateTime<Utc>> {
        for _ in 0..50 {
            let plan = self.decide();
            self.check_partial_pass();
            self.mark = Some((self.state.change_mark(), self.now));
            if plan.ops.is_empty() {
                return plan.wake_at;
            }
            self.apply(plan.ops);
        }
        panic!("leader passes did not settle");
    }

    fn check_partial_pass(&self) {
        let Some((mark, at)) = self.mark else { return };
        let Some(changed) = self
            .state
            .changed_services_for(&mark, flotilla_manager::orchestrator::update::INTEREST)
            .filter(|_| at == self.now)
        else {
            return;
        };
        let orchestrators = |only: Option<&BTreeSet<String>>| {
            let mut ops = replicated::reconcile_only(&self.state, self.now, only).ops;
            ops.extend(global::reconcile_only(&self.state, self.now, only).ops);
            let mut shape: Vec<String> = ops.iter().map(op_shape).collect();
            shape.sort();
            shape
        };
        assert_eq!(
            orchestrators(Some(&changed)),
            orchestrators(None),
            "a pass over the changed services {changed:?} decides what a full pass does"
        );
    }

    fn report(&mut self, id: &str, state: TaskState) {
        let status = TaskStatus {
            state: Some(state),
            timestamp: Some(format_time(self.now)),
            ..Default::default()
        };
        self.apply(vec![Op::SetTaskStatus {
            id: id.into(),
            status,
        }]);
    }

    /// One agent step for one task, as the worker takes them: stop what is
    /// no longer wanted, prepare what is wanted READY, start (and for the
    /// crash image, fail) what is wanted RUNNING. Returns whether it moved.
    fn agent_step(&mut self, id: &str) -> bool {
        let Some(t) = self.state.tasks.get(id) else {
            return false;
        };
        let (state, desired) = (t.state(), t.desired());
        if is_terminal(state) || state < TaskState::ASSIGNED {
            return false;
        }
        let next = if desired > TaskState::RUNNING {
            if self.held.contains(id) {
                return false;
            }
            TaskState::SHUTDOWN
        } else if state == TaskState::RUNNING {
            return false;
        } else if state < TaskState::READY {
            TaskState::READY
        } else if desired < TaskState::RUNNING {
            return false;
        } else if state == TaskState::READY {
            TaskState::STARTING
        } else if image(t) == CRASH {
            TaskState::FAILED
        } else if self.held.contains(id) {
            return false;
        } else {
            TaskState::RUNNING
        };
        self.report(id, next);
        true
    }

    /// Agents take every step they can.
    fn agents(&mut self) -> bool {
        let mut moved = false;
        loop {
            let ids: Vec<String> = self.state.tasks.keys().cloned().collect();
            let mut any = false;
            for id in ids {
                any |= self.agent_step(&id);
            }
            if !any {
                return moved;
            }
            moved = true;
        }
    }

    /// Leader and agents until neither has anything to do at this time.
    fn converge(&mut self) -> Option<DateTime<Utc>> {
        loop {
            let wake = self.pass();
            if !self.agents() {
                return wake;
            }
        }
    }

    /// Converges, then jumps to each wake-up in turn, for at most `secs`.
    fn run_for(&mut self, secs: i64) {
        let end = self.now + Duration::seconds(secs);
        while let Some(at) = self.converge() {
            if at > end {
                break;
            }
            self.now = self.now.max(at);
        }
        self.now = end;
        self.converge();
    }

    fn create(&mut self, id: &str, replicas: Option<i64>, f: impl FnOnce(&mut ServiceSpec)) {
        let mut spec = ServiceSpec {
            name: Some(id.to_string()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(OLD.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            mode: Some(match replicas {
                Some(n) => ServiceSpecMode {
                    replicated: Some(ServiceSpecModeReplicated { replicas: Some(n) }),
                    ..Default::default()
                },
                None => ServiceSpecMode {
                    global: Some(HashMap::new()),
                    ..Default::default()
                },
            }),
            ..Default::default()
        };
        f(&mut spec);
        let svc = Service::from(bollard::models::Service {
            id: Some(id.into()),
            spec: Some(spec),
            ..Default::default()
        });
        self.apply(vec![Op::CreateService(Box::new(svc))]);
        self.converge();
    }

    /// `service update`, as the control API writes it.
    fn update(&mut self, id: &str, f: impl FnOnce(&mut ServiceSpec)) {
        let svc = self.state.services[id].clone();
        let mut spec = svc.spec.clone().unwrap();
        f(&mut spec);
        let expected = svc.version.as_ref().unwrap().index.unwrap();
        let next = updated(svc, spec, &format_time(self.now)).unwrap();
        self.apply(vec![Op::UpdateService {
            expected,
            service: Box::new(next),
        }]);
    }

    /// `service rollback`, as the control API writes it.
    fn rollback(&mut self, id: &str) {
        let svc = self.state.services[id].clone();
        let expected = svc.version.as_ref().unwrap().index.unwrap();
        let next = rolled_back(svc, &format_time(self.now)).unwrap();
        self.apply(vec![Op::UpdateService {
            expected,
            service: Box::new(next),
        }]);
    }

    fn tasks(&self, svc: &str) -> Vec<&Task> {
        self.state.tasks_of_service(svc).collect()
    }

    /// Running tasks (wanted running) per image.
    fn running(&self, svc: &str) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for t in self.tasks(svc) {
            if t.state() == TaskState::RUNNING && t.desired() == TaskState::RUNNING {
                *out.entry(image(t).to_string()).or_default() += 1;
            }
        }
        out
    }

    fn running_of(&self, svc: &str, img: &str) -> usize {
        self.running(svc).get(img).copied().unwrap_or(0)
    }

    fn status(&self, svc: &str) -> ServiceUpdateStatus {
        self.state.services[svc]
            .update_status
            .clone()
            .unwrap_or_default()
    }

    fn phase(&self, svc: &str) -> Option<ServiceUpdateStatusStateEnum> {
        self.status(svc).state
    }

    /// Tasks the updater created, per slot (replicated) or node (global).
    fn update_tasks_per_slot(&self, svc: &str) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for t in self.tasks(svc) {
            if t.runtime.update.is_some() {
                let key = if t.slot_no() != 0 {
                    t.slot_no().to_string()
                } else {
                    t.node().unwrap_or_default().to_string()
                };
                *out.entry(key).or_default() += 1;
            }
        }
        out
    }

    /// Sets the image of the spec (a template change).
    fn set_image(&mut self, svc: &str, img: &str) {
        let img = img.to_string();
        self.update(svc, move |s| {
            s.task_template
                .as_mut()
                .unwrap()
                .container_spec
                .as_mut()
                .unwrap()
                .image = Some(img)
        });
    }
}

/// An op without the random parts (new task IDs).
fn op_shape(op: &Op) -> String {
    match op {
        Op::CreateTask(t) => format!(
            "create {} slot {} node {:?} desired {}",
            t.service(),
            t.slot_no(),
            t.node(),
            t.desired()
        ),
        Op::SetTaskDesired { id, desired, .. } => format!("desired {id} {desired}"),
        Op::UpdateService { service, .. } => format!(
            "service {} {:?}",
            service.id.as_deref().unwrap_or_default(),
            service.update_status.as_ref().and_then(|s| s.state)
        ),
        other => format!("{other:?}"),
    }
}

fn image(t: &Task) -> &str {
    t.spec
        .as_ref()
        .and_then(|s| s.container_spec.as_ref())
        .and_then(|c| c.image.as_deref())
        .unwrap_or_default()
}

fn update_config(
    parallelism: i64,
    delay_s: i64,
    action: ServiceSpecUpdateConfigFailureActionEnum,
    ratio: f64,
    order: ServiceSpecUpdateConfigOrderEnum,
) -> impl FnOnce(&mut ServiceSpec) {
    move |s| {
        s.update_config = Some(ServiceSpecUpdateConfig {
            parallelism: Some(parallelism),
            delay: Some(delay_s * 1_000_000_000),
            failure_action: Some(action),
            monitor: Some(5_000_000_000),
            max_failure_ratio: Some(ratio),
            order: Some(order),
        })
    }
}

use ServiceSpecUpdateConfigFailureActionEnum as Action;
use ServiceSpecUpdateConfigOrderEnum as Order;
use ServiceUpdateStatusStateEnum as Phase;

#[test]
fn slots_roll_parallelism_at_a_time_after_delay_then_monitor() {
    let mut w = World::new(&["n1", "n2"]);
    w.create(
        "redis",
        Some(4),
        update_config(2, 10, Action::PAUSE, 0.0, Order::STOP_FIRST),
    );
    assert_eq!(w.running_of("redis", OLD), 4);

    w.set_image("redis", NEW);
    w.converge();
    let st = w.status("redis");
    assert_eq!(st.state, Some(Phase::UPDATING));
    assert_eq!(st.message.as_deref(), Some("update in progress"));
    assert_eq!(st.started_at, Some(format_time(w.now)));
    assert_eq!(w.running_of("redis", NEW), 2, "first two slots");
    assert_eq!(w.running_of("redis", OLD), 2);

    // Once running, each place waits the delay (10 s), not the monitor.
    w.run_for(9);
    assert_eq!(w.running_of("redis", NEW), 2, "still waiting at 9 s");
    w.advance(1);
    let wake = w.converge();
    assert_eq!(w.running_of("redis", NEW), 4, "next two slots at 10 s");
    assert_eq!(
        wake,
        Some(w.now + Duration::seconds(10)),
        "wakes when their delay ends"
    );
    assert_eq!(w.phase("redis"), Some(Phase::UPDATING));

    // The last delay, then one monitor period (5 s) to catch failures.
    w.run_for(14);
    assert_eq!(w.phase("redis"), Some(Phase::UPDATING));
    w.run_for(1);
    let st = w.status("redis");
    assert_eq!(st.state, Some(Phase::COMPLETED));
    assert_eq!(st.message.as_deref(), Some("update completed"));
    assert_eq!(st.completed_at, Some(format_time(w.now)));
    assert_eq!(w.running("redis"), BTreeMap::from([(NEW.to_string(), 4)]));
    // Each slot replaced exactly once.
    assert!(w.update_tasks_per_slot("redis").values().all(|n| *n == 1));
    assert_eq!(w.update_tasks_per_slot("redis").len(), 4);
}

#[test]
fn parallelism_zero_replaces_every_slot_at_once() {
    let mut w = World::new(&["n1"]);
    w.create(
        "web",
        Some(5),
        update_config(0, 0, Action::PAUSE, 0.0, Order::STOP_FIRST),
    );
    w.set_image("web", NEW);
    w.converge();
    assert_eq!(w.running_of("web", NEW), 5);
}

#[test]
fn changes_outside_the_template_roll_nothing() {
    let mut w = World::new(&["n1"]);
    w.create("web", Some(2), |_| {});
    let before: Vec<String> = w.tasks("web").iter().map(|t| t.id_str().into()).collect();
    w.update("web", |s| {
        s.labels = Some(HashMap::from([("a".into(), "b".into())]));
        s.mode
            .as_mut()
            .unwrap()
            .replicated
            .as_mut()
            .unwrap()
            .replicas = Some(3);
    });
    w.run_for(30);
    assert_eq!(w.phase("web"), None, "no update started");
    let after: Vec<String> = w.tasks("web").iter().map(|t| t.id_str().into()).collect();
    assert_eq!(after.len(), 3);
    assert!(before.iter().all(|id| after.contains(id)), "old tasks kept");
}

#[test]
fn force_update_rolls_every_slot() {
    let mut w = World::new(&["n1"]);
    w.create("web", Some(2), |_| {});
    w.update("web", |s| {
        s.task_template.as_mut().unwrap().force_update = Some(1)
    });
    w.run_for(60);
    assert_eq!(w.phase("web"), Some(Phase::COMPLETED));
    assert_eq!(w.update_tasks_per_slot("web").len(), 2);
}

#[test]
fn stop_first_stops_the_old_task_before_starting_the_new() {
    let mut w = World::new(&["n1"]);
    w.create("web", Some(1), |_| {});
    w.set_image("web", NEW);
    w.pass();
    // The new task is prepared while the old one still runs...
    let new = w
        .tasks("web")
        .into_iter()
        .find(|t| image(t) == NEW)
        .unwrap()
        .id_str()
        .to_string();
    let old = w
        .tasks("web")
        .into_iter()
        .find(|t| image(t) == OLD)
        .unwrap()
        .id_str()
        .to_string();
    assert_eq!(w.state.tasks[&new].desired(), TaskState::READY);
    assert_eq!(w.state.tasks[&old].desired(), TaskState::SHUTDOWN);
    w.agent_step(&new);
    w.pass();
    assert_eq!(w.state.tasks[&new].state(), TaskState::READY);
    assert_eq!(
        w.state.tasks[&new].desired(),
        TaskState::READY,
        "old still runs"
    );
    // ...and started once the old one reports it stopped.
    w.agent_step(&old);
    w.pass();
    assert_eq!(w.state.tasks[&new].desired(), TaskState::RUNNING);
}

#[test]
fn start_first_runs_the_new_task_before_stopping_the_old() {
    let mut w = World::new(&["n1", "n2"]);
    w.create(
        "web",
        Some(3),
        update_config(1, 0, Action::PAUSE, 0.0, Order::START_FIRST),
    );
    w.set_image("web", NEW);
    // Step by step: never fewer than 3 running.
    for _ in 0..200 {
        w.pass();
        let ids: Vec<String> = w.state.tasks.keys().cloned().collect();
        for id in ids {
            w.agent_step(&id);
            let running = w
                .tasks("web")
                .iter()
                .filter(|t| t.state() == TaskState::RUNNING)
                .count();
            assert!(running >= 3, "only {running} running");
        }
        w.advance(1);
    }
    assert_eq!(w.phase("web"), Some(Phase::COMPLETED));
    assert_eq!(w.running("web"), BTreeMap::from([(NEW.to_string(), 3)]));
}

#[test]
fn a_failing_task_pauses_the_update_and_is_named() {
    let mut w = World::new(&["n1"]);
    w.create("web", Some(4), |_| {});
    w.set_image("web", CRASH);
    w.run_for(20);
    let st = w.status("web");
    assert_eq!(st.state, Some(Phase::PAUSED));
    // The first failure paused it; restarts of the slot failed since.
    let failed = w
        .tasks("web")
        .into_iter()
        .filter(|t| t.state() == TaskState::FAILED)
        // The first to fail: a restart can be created in the same tick as
        // the task it replaces, so the end time breaks the tie.
        .min_by_key(|t| {
            (
                t.created_at.clone(),
                t.status.as_ref().and_then(|s| s.timestamp.clone()),
            )
        })
        .unwrap();
    assert_eq!(
        st.message,
        Some(format!(
            "update paused due to failure or early termination of task {}",
            failed.id_str()
        ))
    );
    // Only the first slot was touched; the others keep running the old spec.
    assert_eq!(w.update_tasks_per_slot("web").len(), 1);
    assert_eq!(w.running_of("web", OLD), 3);
    w.run_for(120);
    assert_eq!(
        w.running_of("web", OLD),
        3,
        "paused: nothing more is replaced"
    );
    assert_eq!(w.update_tasks_per_slot("web").len(), 1);
    // Restarts of the updated slot keep its new spec.
    let slot = w
        .update_tasks_per_slot("web")
        .keys()
        .next()
        .unwrap()
        .clone();
    let restarts: Vec<&Task> = w
        .tasks("web")
        .into_iter()
        .filter(|t| t.slot_no().to_string() == slot && image(t) == CRASH)
        .collect();
    assert!(restarts.len() > 1, "restarted on the new spec");

    // The next `service update` resumes it (here with a spec that works).
    w.set_image("web", NEW);
    w.run_for(60);
    assert_eq!(w.phase("web"), Some(Phase::COMPLETED));
    assert_eq!(w.running("web"), BTreeMap::from([(NEW.to_string(), 4)]));
}

#[test]
fn start_first_holds_its_place_until_the_old_task_stopped() {
    let mut w = World::new(&["n1"]);
    w.create(
        "web",
        Some(2),
        update_config(1, 0, Action::PAUSE, 0.0, Order::START_FIRST),
    );
    // The old tasks' agent is slow to stop them.
    let old: Vec<String> = w
        .tasks("web")
        .into_iter()
        .map(|t| t.id_str().to_string())
        .collect();
    w.held.extend(old);
    w.set_image("web", NEW);
    w.run_for(30);
    let observed_running = w
        .tasks("web")
        .into_iter()
        .filter(|t| t.state() == TaskState::RUNNING)
        .count();
    assert_eq!(
        observed_running, 3,
        "one extra task at most (parallelism 1)"
    );
    assert_eq!(w.running_of("web", NEW), 1);

    w.held.clear();
    w.run_for(30);
    assert_eq!(w.running("web"), BTreeMap::from([(NEW.to_string(), 2)]));
    assert_eq!(w.phase("web"), Some(Phase::COMPLETED));
}

#[test]
fn a_task_failing_after_its_monitor_period_is_not_an_update_failure() {
    // One slot at a time, 10 s apart: the first new task fails 6 s after
    // it started running, past the 5 s monitor period, while the update
    // waits out the delay.
    let mut w = World::new(&["n1"]);
    w.create(
        "web",
        Some(2),
        update_config(1, 10, Action::PAUSE, 0.0, Order::STOP_FIRST),
    );
    let first_new = |w: &World, img: &str| {
        w.tasks("web")
            .into_iter()
            .find(|t| image(t) == img && t.state() == TaskState::RUNNING)
            .unwrap()
            .id_str()
            .to_string()
    };
    w.set_image("web", NEW);
    w.converge();
    let first = first_new(&w, NEW);
    w.advance(6);
    w.report(&first, TaskState::FAILED);
    w.run_for(60);
    assert_eq!(w.phase("web"), Some(Phase::COMPLETED));

    // Within the monitor period, the same exit pauses.
    w.set_image("web", OLD);
    w.converge();
    let early = first_new(&w, OLD);
    w.advance(4);
    w.report(&early, TaskState::FAILED);
    w.converge();
    assert_eq!(w.phase("web"), Some(Phase::PAUSED));
}

#[test]
fn a_failure_after_the_update_moved_on_still_counts_within_the_monitor() {
    // Without a delay every slot is replaced at once; the first task
    // fails 3 s later, during the final monitor period.
    let mut w = World::new(&["n1"]);
    w.create(
        "web",
        Some(3),
        update_config(1, 0, Action::PAUSE, 0.0, Order::STOP_FIRST),
    );
    w.set_image("web", NEW);
    w.converge();
    assert_eq!(w.running_of("web", NEW), 3);
    assert_eq!(w.phase("web"), Some(Phase::UPDATING));
    let victim = w
        .tasks("web")
        .into_iter()
        .find(|t| image(t) == NEW && t.state() == TaskState::RUNNING)
        .unwrap()
        .id_str()
        .to_string();
    w.advance(3);
    w.report(&victim, TaskState::FAILED);
    w.converge();
    assert_eq!(w.phase("web"), Some(Phase::PAUSED));
}

#[test]
fn a_slow_task_holds_up_one_place_not_the_others() {
    let mut w = World::new(&["n1"]);
    w.create(
        "web",
        Some(6),
        update_config(2, 0, Action::PAUSE, 0.0, Order::STOP_FIRST),
    );
    w.set_image("web", NEW);
    w.pass();
    let first: Vec<String> = w
        .tasks("web")
        .into_iter()
        .filter(|t| image(t) == NEW)
        .map(|t| t.id_str().to_string())
        .collect();
    assert_eq!(first.len(), 2, "two places");
    w.held.insert(first[0].clone());
    w.run_for(30);
    assert_eq!(w.running_of("web", NEW), 5, "the other place did the rest");
    assert_eq!(w.phase("web"), Some(Phase::UPDATING));
    let in_flight = w
        .tasks("web")
        .into_iter()
        .filter(|t| image(t) == NEW && t.state() < TaskState::RUNNING)
        .count();
    assert_eq!(in_flight, 1, "never more than two slots in flight");

    w.held.clear();
    w.converge();
    assert_eq!(w.running_of("web", NEW), 6);
    w.run_for(5);
    assert_eq!(w.phase("web"), Some(Phase::COMPLETED));
    assert!(w.update_tasks_per_slot("web").values().all(|n| *n == 1));
}

#[test]
fn continue_goes_on_despite_failures() {
    let mut w = World::new(&["n1"]);
    w.create(
        "web",
        Some(3),
        update_config(1, 0, Action::CONTINUE, 0.0, Order::STOP_FIRST),
    );
    w.set_image("web", CRASH);
    w.run_for(120);
    assert_eq!(w.phase("web"), Some(Phase::COMPLETED));
    assert_eq!(w.update_tasks_per_slot("web").len(), 3);
}

#[test]
fn max_failure_ratio_counts_failed_slots_among_those_updated() {
    // Two slots per batch; one of each batch fails at once.
    let run = |ratio: f64| {
        let mut w = World::new(&["n1"]);
        w.create(
            "web",
            Some(4),
            update_config(2, 0, Action::PAUSE, ratio, Order::STOP_FIRST),
        );
        w.set_image("web", NEW);
        for _ in 0..2 {
            w.pass();
            let victim = w
                .tasks("web")
                .into_iter()
                .filter(|t| image(t) == NEW && t.desired() <= TaskState::RUNNING)
                .filter(|t| t.state() < TaskState::RUNNING)
                .map(|t| t.id_str().to_string())
                .min();
            if let Some(id) = victim {
                w.report(&id, TaskState::REJECTED);
            }
            w.converge();
            w.advance(5);
            w.converge();
        }
        w.run_for(60);
        w.phase("web")
    };
    assert_eq!(
        run(0.5),
        Some(Phase::COMPLETED),
        "1 of 2, then 2 of 4: tolerated"
    );
    assert_eq!(run(0.25), Some(Phase::PAUSED), "1 of 2 is past 0.25");
}

#[test]
fn failure_action_rollback_restores_the_previous_spec_once() {
    let mut w = World::new(&["n1"]);
    w.create(
        "web",
        Some(3),
        update_config(1, 0, Action::ROLLBACK, 0.0, Order::STOP_FIRST),
    );
    w.set_image("web", CRASH);
    w.run_for(3);
    let st = w.status("web");
    assert_eq!(st.state, Some(Phase::ROLLBACK_STARTED));
    assert!(
        st.message
            .as_deref()
            .unwrap()
            .starts_with("update rolled back due to failure or early termination of task "),
        "{st:?}"
    );
    let svc = &w.state.services["web"];
    assert_eq!(
        svc.spec
            .as_ref()
            .unwrap()
            .task_template
            .as_ref()
            .unwrap()
            .container_spec
            .as_ref()
            .unwrap()
            .image
            .as_deref(),
        Some(OLD)
    );
    assert!(svc.previous_spec.is_none());
    w.run_for(60);
    let st = w.status("web");
    assert_eq!(st.state, Some(Phase::ROLLBACK_COMPLETED));
    assert_eq!(st.message.as_deref(), Some("rollback completed"));
    assert_eq!(w.running("web"), BTreeMap::from([(OLD.to_string(), 3)]));
}

#[test]
fn a_failing_rollback_pauses_and_is_never_rolled_back() {
    let mut w = World::new(&["n1"]);
    // The spec rolled back to crashes; the update's failure action is
    // rollback, the rollback's own is pause.
    w.create("web", Some(2), |s| {
        s.task_template
            .as_mut()
            .unwrap()
            .container_spec
            .as_mut()
            .unwrap()
            .image = Some(CRASH.into());
    });
    w.update("web", |s| {
        s.task_template
            .as_mut()
            .unwrap()
            .container_spec
            .as_mut()
            .unwrap()
            .image = Some(NEW.into());
        update_config(1, 0, Action::ROLLBACK, 0.0, Order::STOP_FIRST)(s);
    });
    w.run_for(60);
    assert_eq!(w.phase("web"), Some(Phase::COMPLETED));
    w.rollback("web");
    let st = w.status("web");
    assert_eq!(st.state, Some(Phase::ROLLBACK_STARTED));
    assert_eq!(st.message.as_deref(), Some("manually requested rollback"));
    w.run_for(30);
    let st = w.status("web");
    assert_eq!(st.state, Some(Phase::ROLLBACK_PAUSED));
    assert!(
        st.message
            .as_deref()
            .unwrap()
            .starts_with("rollback paused due to failure or early termination of task "),
        "{st:?}"
    );
    assert_eq!(w.running_of("web", NEW), 1, "the other slot is left alone");
}

#[test]
fn a_manual_rollback_is_paced_by_the_rollback_config() {
    let mut w = World::new(&["n1"]);
    w.create("web", Some(4), |s| {
        s.rollback_config = Some(ServiceSpecRollbackConfig {
            parallelism: Some(2),
            delay: Some(20_000_000_000),
            monitor: Some(1_000_000_000),
            ..Default::default()
        });
    });
    w.update("web", |s| {
        s.task_template
            .as_mut()
            .unwrap()
            .container_spec
            .as_mut()
            .unwrap()
            .image = Some(NEW.into());
        s.update_config = Some(ServiceSpecUpdateConfig {
            parallelism: Some(0),
            ..Default::default()
        });
    });
    w.run_for(30);
    assert_eq!(w.running_of("web", NEW), 4);
    w.rollback("web");
    w.converge();
    assert_eq!(w.running_of("web", OLD), 2);
    w.run_for(19);
    assert_eq!(w.running_of("web", OLD), 2, "20 s delay");
    w.run_for(1);
    assert_eq!(w.running_of("web", OLD), 4);
    w.run_for(20);
    assert_eq!(
        w.phase("web"),
        Some(Phase::ROLLBACK_STARTED),
        "20 s delay + 1 s monitor"
    );
    w.run_for(1);
    assert_eq!(w.phase("web"), Some(Phase::ROLLBACK_COMPLETED));
}

#[test]
fn a_rollback_that_changes_no_template_completes_at_once() {
    let mut w = World::new(&["n1"]);
    w.create("web", Some(1), |_| {});
    w.update("web", |s| {
        s.labels = Some(HashMap::from([("a".into(), "b".into())]));
    });
    w.rollback("web");
    w.converge();
    assert_eq!(w.phase("web"), Some(Phase::ROLLBACK_COMPLETED));
}

#[test]
fn restarts_keep_the_slot_template_until_the_updater_moves_it() {
    let mut w = World::new(&["n1"]);
    w.create(
        "web",
        Some(2),
        update_config(1, 10, Action::PAUSE, 0.0, Order::STOP_FIRST),
    );
    w.set_image("web", NEW);
    w.converge();
    // An old task crashes mid-update: its replacement keeps the old spec.
    let old = w
        .tasks("web")
        .into_iter()
        .find(|t| image(t) == OLD && t.state() == TaskState::RUNNING)
        .unwrap()
        .id_str()
        .to_string();
    w.report(&old, TaskState::FAILED);
    w.pass();
    let replacement = w
        .tasks("web")
        .into_iter()
        .filter(|t| t.desired() <= TaskState::RUNNING && t.state() < TaskState::RUNNING)
        .map(image)
        .collect::<Vec<_>>();
    assert_eq!(replacement, [OLD]);
    w.run_for(60);
    assert_eq!(w.phase("web"), Some(Phase::COMPLETED));
    assert_eq!(w.running("web"), BTreeMap::from([(NEW.to_string(), 2)]));
}

#[test]
fn global_services_roll_node_by_node() {
    let mut w = World::new(&["n1", "n2", "n3"]);
    w.create(
        "agent",
        None,
        update_config(1, 5, Action::PAUSE, 0.0, Order::STOP_FIRST),
    );
    assert_eq!(w.running_of("agent", OLD), 3);
    w.set_image("agent", NEW);
    w.converge();
    assert_eq!(w.running_of("agent", NEW), 1);
    w.run_for(5);
    assert_eq!(w.running_of("agent", NEW), 2);
    w.run_for(5);
    assert_eq!(w.running_of("agent", NEW), 3);
    w.run_for(9);
    assert_eq!(
        w.phase("agent"),
        Some(Phase::UPDATING),
        "delay, then monitor"
    );
    w.run_for(1);
    assert_eq!(w.phase("agent"), Some(Phase::COMPLETED));
    for n in ["n1", "n2", "n3"] {
        assert_eq!(w.update_tasks_per_slot("agent")[n], 1);
    }
}

/// A new leader has nothing but the replicated state: a copy of the store
/// taken mid-update (through the snapshot format) must reach the same
/// decisions and finish the update without touching a slot twice.
#[test]
fn a_new_leader_resumes_from_the_store_alone() {
    let mut w = World::new(&["n1", "n2"]);
    w.create(
        "redis",
        Some(4),
        update_config(2, 10, Action::PAUSE, 0.0, Order::STOP_FIRST),
    );
    w.set_image("redis", NEW);
    w.converge();
    w.run_for(7); // first two slots running since 0 s, waiting out the delay

    let snapshot = serde_json::to_string(&w.state).unwrap();
    let mut leader2 = World {
        state: reload(&snapshot),
        index: w.index,
        now: w.now,
        held: BTreeSet::new(),
        mark: None,
        scheduler: Default::default(),
    };
    let plan = leader2.decide();
    assert!(
        plan.ops.is_empty(),
        "nothing to do during the delay: {:?}",
        plan.ops
    );
    assert_eq!(
        plan.wake_at,
        Some(w.now + Duration::seconds(3)),
        "wakes when the delay ends"
    );

    // Both would start the same slots at the same moment.
    w.advance(3);
    leader2.advance(3);
    let a = w.decide();
    let b = leader2.decide();
    assert_eq!(creations(&a), creations(&b));
    // The new leader carries on (the old one's entry never committed).
    leader2.run_for(30);
    assert_eq!(leader2.phase("redis"), Some(Phase::COMPLETED));
    let per_slot = leader2.update_tasks_per_slot("redis");
    assert_eq!(per_slot.len(), 4);
    assert!(per_slot.values().all(|n| *n == 1), "{per_slot:?}");
}

/// A store loaded the way a manager loads a snapshot.
fn reload(json: &str) -> State {
    let parsed: State = serde_json::from_str(json).unwrap();
    // Re-apply every object through ops so the secondary indexes exist.
    let mut s = State::default();
    let mut i = 0;
    for n in parsed.nodes.values() {
        i += 1;
        s.apply(i, Op::PutNode(Box::new(n.clone()))).unwrap();
    }
    for svc in parsed.services.values() {
        i += 1;
        s.apply(i, Op::CreateService(Box::new(svc.clone())))
            .unwrap();
        // Versions matter for the updater's checked writes.
        s.services
            .get_mut(svc.id.as_deref().unwrap())
            .unwrap()
            .version = svc.version.clone();
    }
    for t in parsed.tasks.values() {
        i += 1;
        s.apply(i, Op::CreateTask(Box::new(Task::clone(t))))
            .unwrap();
    }
    s
}

/// (slot, image, desired) of the tasks a plan creates.
fn creations(plan: &Plan) -> Vec<(i64, String, TaskState)> {
    let mut v: Vec<_> = plan
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::CreateTask(t) => Some((t.slot_no(), image(t).to_string(), t.desired())),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// What one step of a random interleaving does.
#[derive(Debug, Clone)]
enum Event {
    /// The leader runs its passes.
    Leader,
    /// The agent takes one step on the n-th task.
    Agent(usize),
    /// The n-th running task exits with an error.
    Crash(usize),
    /// Time passes.
    Tick(i64),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => Just(Event::Leader),
        6 => (0usize..64).prop_map(Event::Agent),
        1 => (0usize..64).prop_map(Event::Crash),
        2 => (1i64..8).prop_map(Event::Tick),
    ]
}

/// Workloads that may be running: STARTING or RUNNING, per slot.
fn max_running_per_slot(w: &World) -> usize {
    let mut per: BTreeMap<i64, usize> = BTreeMap::new();
    for t in w.state.tasks.values() {
        if matches!(t.state(), TaskState::STARTING | TaskState::RUNNING) {
            *per.entry(t.slot_no()).or_default() += 1;
        }
    }
    per.values().copied().max().unwrap_or(0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// With stop-first, whatever the order in which reports arrive, passes
    /// run, tasks crash and time passes, no slot ever has two workloads up.
    /// Once the dust settles every slot runs the new spec, each replaced
    /// by the updater exactly once.
    #[test]
    fn stop_first_never_runs_two_tasks_of_a_slot(
        events in proptest::collection::vec(event(), 1..300),
        parallelism in 0i64..3,
        delay in 0i64..4,
    ) {
        let mut w = World::new(&["n1", "n2"]);
        w.create("web", Some(3), update_config(parallelism, delay, Action::CONTINUE, 0.0, Order::STOP_FIRST));
        w.set_image("web", NEW);
        for e in events {
            match e {
                Event::Leader => { w.pass(); }
                Event::Agent(n) => {
                    let ids: Vec<String> = w.state.tasks.keys().cloned().collect();
                    if !ids.is_empty() {
                        let id = ids[n % ids.len()].clone();
                        w.agent_step(&id);
                    }
                }
                Event::Crash(n) => {
                    let running: Vec<String> = w.state.tasks.values()
                        .filter(|t| t.state() == TaskState::RUNNING)
                        .map(|t| t.id_str().to_string())
                        .collect();
                    if !running.is_empty() {
                        let id = running[n % running.len()].clone();
                        w.report(&id, TaskState::FAILED);
                    }
                }
                Event::Tick(s) => w.advance(s),
            }
            prop_assert!(max_running_per_slot(&w) <= 1, "two workloads in a slot: {:?}",
                w.state.tasks.values().map(|t| (t.slot_no(), image(t).to_string(), t.state(), t.desired())).collect::<Vec<_>>());
        }
        w.run_for(200);
        prop_assert!(max_running_per_slot(&w) <= 1);
        prop_assert_eq!(w.phase("web"), Some(Phase::COMPLETED));
        prop_assert_eq!(w.running("web"), BTreeMap::from([(NEW.to_string(), 3)]));
        let per_slot = w.update_tasks_per_slot("web");
        prop_assert!(per_slot.values().all(|n| *n == 1), "{:?}", per_slot);
    }
}
