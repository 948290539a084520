//! The rebalancer as pure decisions: a simulated cluster (the replicated
//! orchestrator with its rebalancer, the scheduler, agents that walk tasks
//! through their states) on a clock the test moves.

mod common;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, TimeZone, Utc};
use flotilla_manager::orchestrator::rebalance::{self, Rebalancer, MAX_MOVES, SETTLE};
use flotilla_manager::orchestrator::{update, Plan};
use flotilla_store::ids::format_time;
use flotilla_store::models::*;
use flotilla_store::state::{is_move, is_terminal, TaskExt};
use flotilla_store::{ChangeMark, Op, State};

struct World {
    state: State,
    index: u64,
    now: DateTime<Utc>,
    rebalancer: Rebalancer,
    scheduler: common::CheckedScheduler,
    /// The fewest running tasks seen per service, once it first had all.
    low: HashMap<String, usize>,
    /// The most moves in flight seen at once.
    most_moving: usize,
    /// Where the last pass left off; None: the next is a full pass (at a
    /// wake-up, as in the leader).
    mark: Option<ChangeMark>,
    /// Tasks that start on this node fail.
    crash_on: Option<String>,
}

impl World {
    fn new(nodes: &[(&str, &str)]) -> World {
        let mut w = World {
            state: State::default(),
            index: 0,
            now: Utc.with_ymd_and_hms(2024, 1, 1, 12, 0, 0).unwrap(),
            rebalancer: Rebalancer::default(),
            scheduler: Default::default(),
            low: HashMap::new(),
            most_moving: 0,
            mark: None,
            crash_on: None,
        };
        for (id, zone) in nodes {
            w.apply(vec![Op::PutNode(Box::new(Node {
                id: Some(id.to_string()),
                spec: Some(NodeSpec {
                    role: Some(NodeSpecRoleEnum::WORKER),
                    availability: Some(NodeSpecAvailabilityEnum::ACTIVE),
                    labels: Some(HashMap::from([("zone".to_string(), zone.to_string())])),
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
                self.scheduler.forget();
            }
        }
    }

    /// One leader pass, over what changed since the last one (as the
    /// leader's controller runs it).
    fn decide(&mut self) -> Plan {
        let scope = self
            .mark
            .and_then(|m| self.state.changed_services_for(&m, update::INTEREST));
        let mut plan = self
            .rebalancer
            .reconcile(&self.state, self.now, scope.as_ref());
        self.mark = Some(self.state.change_mark());
        let now = format_time(self.now);
        plan.ops.extend(self.scheduler.pass(&self.state, &now));
        plan
    }

    fn pass(&mut self) -> Option<DateTime<Utc>> {
        for _ in 0..100 {
            let plan = self.decide();
            if plan.ops.is_empty() {
                return plan.wake_at;
            }
            self.apply(plan.ops);
            self.observe();
        }
        panic!("leader passes did not settle");
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

    /// One agent step for one task; a task on a node that is down does
    /// not move.
    fn agent_step(&mut self, id: &str) -> bool {
        let Some(t) = self.state.tasks.get(id) else {
            return false;
        };
        let up = t
            .node()
            .and_then(|n| self.state.nodes.get(n))
            .is_some_and(|n| n.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY));
        let (state, desired) = (t.state(), t.desired());
        if !up || is_terminal(state) || state < TaskState::ASSIGNED {
            return false;
        }
        let next = if desired > TaskState::RUNNING {
            TaskState::SHUTDOWN
        } else if state == TaskState::RUNNING {
            return false;
        } else if state < TaskState::READY {
            TaskState::READY
        } else if desired < TaskState::RUNNING {
            return false;
        } else if state == TaskState::READY {
            TaskState::STARTING
        } else if t.node().is_some() && t.node() == self.crash_on.as_deref() {
            TaskState::FAILED
        } else {
            TaskState::RUNNING
        };
        self.report(id, next);
        true
    }

    /// Agents take one step each (so that a pass sees every stage).
    fn agents(&mut self) -> bool {
        let ids: Vec<String> = self.state.tasks.keys().cloned().collect();
        let mut any = false;
        for id in ids {
            if self.agent_step(&id) {
                any = true;
                self.observe();
            }
        }
        any
    }

    fn observe(&mut self) {
        let moving = self
            .state
            .tasks
            .values()
            .filter(|t| is_move(t) && t.desired() <= TaskState::RUNNING)
            .filter(|t| {
                t.state() < TaskState::RUNNING
                    || self.state.tasks_of_service(t.service()).any(|o| {
                        o.slot_no() == t.slot_no()
                            && o.id_str() != t.id_str()
                            && !is_terminal(o.state())
                    })
            })
            .count();
        self.most_moving = self.most_moving.max(moving);
        let ids: Vec<String> = self.state.services.keys().cloned().collect();
        for id in ids {
            let running = self.running(&id);
            if let Some(low) = self.low.get_mut(&id) {
                *low = (*low).min(running);
            } else if running == replicas(&self.state.services[&id]) {
                self.low.insert(id, running);
            }
        }
    }

    fn converge(&mut self) -> Option<DateTime<Utc>> {
        loop {
            let wake = self.pass();
            if !self.agents() {
                return wake;
            }
        }
    }

    /// Converges, then jumps to each wake-up in turn, for `secs`.
    fn run_for(&mut self, secs: i64) {
        let end = self.now + Duration::seconds(secs);
        while let Some(at) = self.converge() {
            if at > end {
                break;
            }
            self.now = self.now.max(at);
            self.mark = None;
        }
        self.now = end;
        self.mark = None;
        self.converge();
    }

    fn create(&mut self, id: &str, replicas: i64, f: impl FnOnce(&mut ServiceSpec)) {
        let mut spec = ServiceSpec {
            name: Some(id.to_string()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some("app:1".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(replicas),
                }),
                ..Default::default()
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

    fn set_node(&mut self, id: &str, f: impl FnOnce(&mut Node)) {
        let mut node = self.state.nodes[id].clone();
        f(&mut node);
        node.updated_at = Some(format_time(self.now));
        self.apply(vec![Op::PutNode(Box::new(node))]);
    }

    fn availability(&mut self, id: &str, a: NodeSpecAvailabilityEnum) {
        self.set_node(id, |n| n.spec.as_mut().unwrap().availability = Some(a));
    }

    fn status(&mut self, id: &str, s: NodeState) {
        self.set_node(id, |n| n.status.as_mut().unwrap().state = Some(s));
    }

    fn running(&self, svc: &str) -> usize {
        self.state
            .tasks_of_service(svc)
            .filter(|t| t.state() == TaskState::RUNNING && t.desired() == TaskState::RUNNING)
            .count()
    }

    /// Running tasks per node.
    fn spread(&self, svc: &str) -> BTreeMap<String, usize> {
        let mut out: BTreeMap<String, usize> =
            self.state.nodes.keys().map(|n| (n.clone(), 0)).collect();
        for t in self.state.tasks_of_service(svc) {
            if t.state() == TaskState::RUNNING && t.desired() == TaskState::RUNNING {
                *out.entry(t.node().unwrap_or_default().to_string())
                    .or_default() += 1;
            }
        }
        out
    }

    fn moves(&self, svc: &str) -> usize {
        self.state
            .tasks_of_service(svc)
            .filter(|t| is_move(t))
            .count()
    }
}

fn replicas(svc: &Service) -> usize {
    flotilla_manager::orchestrator::replicas(svc) as usize
}

fn counts(w: &World, svc: &str) -> Vec<usize> {
    w.spread(svc).values().copied().collect()
}

fn three() -> World {
    World::new(&[("n1", "a"), ("n2", "a"), ("n3", "b")])
}

fn start_first(s: &mut ServiceSpec) {
    s.update_config = Some(ServiceSpecUpdateConfig {
        order: Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
        ..Default::default()
    });
}

#[test]
fn a_drained_node_activated_again_gets_its_share_back_after_it_settles() {
    let mut w = three();
    w.create("web", 9, |_| {});
    assert_eq!(counts(&w, "web"), [3, 3, 3]);
    w.availability("n3", NodeSpecAvailabilityEnum::DRAIN);
    w.run_for(1);
    assert_eq!(w.spread("web")["n3"], 0);
    assert_eq!(w.running("web"), 9);

    w.low.clear();
    w.availability("n3", NodeSpecAvailabilityEnum::ACTIVE);
    w.run_for(SETTLE.num_seconds() - 1);
    assert_eq!(
        w.spread("web")["n3"],
        0,
        "nothing moves before the node settles"
    );
    assert_eq!(w.moves("web"), 0);
    w.run_for(30);
    assert_eq!(counts(&w, "web"), [3, 3, 3]);
    assert_eq!(w.moves("web"), 3, "three moves, no more");
    // Stop-first with parallelism 1: one task down at a time, at most.
    assert_eq!(w.low["web"], 8);
    assert!(w
        .state
        .tasks_of_service("web")
        .all(|t| t.desired() != TaskState::RUNNING || t.state() == TaskState::RUNNING));
}

#[test]
fn start_first_moves_never_drop_below_the_replicas() {
    let mut w = three();
    w.create("web", 7, start_first);
    w.status("n3", NodeState::DOWN);
    w.run_for(1);
    assert_eq!(w.running("web"), 7);
    w.low.clear();
    w.status("n3", NodeState::READY);
    w.run_for(60);
    let mut c = counts(&w, "web");
    c.sort();
    assert_eq!(c, [2, 2, 3]);
    assert_eq!(
        w.low["web"], 7,
        "start-first: never fewer than the replicas"
    );
    assert_eq!(
        w.state
            .tasks_of_service("web")
            .filter(|t| t.desired() == TaskState::RUNNING)
            .count(),
        7
    );
}

#[test]
fn a_new_node_joining_gets_tasks_and_one_task_of_imbalance_is_left_alone() {
    let mut w = World::new(&[("n1", "a"), ("n2", "a")]);
    w.create("web", 4, |_| {});
    w.create("odd", 3, |_| {});
    w.run_for(60);
    w.apply(vec![Op::PutNode(Box::new({
        let mut n = w.state.nodes["n1"].clone();
        n.id = Some("n3".into());
        n.updated_at = Some(format_time(w.now));
        n
    }))]);
    w.run_for(60);
    let mut c = counts(&w, "web");
    c.sort();
    assert_eq!(c, [1, 1, 2]);
    // 2/1/0 -> 1/1/1 is one move; 3 over 3 nodes needs it.
    assert_eq!(counts(&w, "odd"), [1, 1, 1]);
}

#[test]
fn no_moves_when_turned_off_for_the_service_or_the_swarm() {
    let mut w = three();
    w.create("web", 6, |s| {
        s.labels = Some(HashMap::from([(
            rebalance::LABEL.to_string(),
            "false".to_string(),
        )]));
    });
    w.create("api", 6, |_| {});
    w.availability("n3", NodeSpecAvailabilityEnum::DRAIN);
    w.run_for(1);
    w.availability("n3", NodeSpecAvailabilityEnum::ACTIVE);
    w.run_for(60);
    assert_eq!(w.spread("web")["n3"], 0);
    assert_eq!(w.spread("api")["n3"], 2);

    w.apply(vec![Op::InitCluster {
        swarm: Box::new(Swarm {
            spec: Some(SwarmSpec {
                labels: Some(HashMap::from([(
                    rebalance::LABEL.to_string(),
                    "false".to_string(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ca_key_pem: String::new(),
        unlock_key: None,
    }]);
    w.availability("n3", NodeSpecAvailabilityEnum::DRAIN);
    w.run_for(1);
    w.availability("n3", NodeSpecAvailabilityEnum::ACTIVE);
    w.run_for(60);
    assert_eq!(w.spread("api")["n3"], 0, "the swarm's setting turns it off");
}

#[test]
fn constraints_max_replicas_and_spread_preferences_are_kept() {
    let mut w = World::new(&[("n1", "a"), ("n2", "a"), ("n3", "b"), ("n4", "b")]);
    w.create("only-a", 6, |s| {
        s.task_template.as_mut().unwrap().placement = Some(TaskSpecPlacement {
            constraints: Some(vec!["node.labels.zone==a".into()]),
            ..Default::default()
        });
    });
    w.create("capped", 4, |s| {
        s.task_template.as_mut().unwrap().placement = Some(TaskSpecPlacement {
            max_replicas: Some(2),
            ..Default::default()
        });
    });
    w.create("zones", 8, |s| {
        s.task_template.as_mut().unwrap().placement = Some(TaskSpecPlacement {
            preferences: Some(vec![TaskSpecPlacementPreferences {
                spread: Some(TaskSpecPlacementSpread {
                    spread_descriptor: Some("node.labels.zone".into()),
                }),
            }]),
            ..Default::default()
        });
    });
    for n in ["n2", "n4"] {
        w.availability(n, NodeSpecAvailabilityEnum::DRAIN);
    }
    w.run_for(1);
    assert_eq!(w.spread("zones")["n3"], 4);
    for n in ["n2", "n4"] {
        w.availability(n, NodeSpecAvailabilityEnum::ACTIVE);
    }
    w.run_for(120);
    assert_eq!(w.spread("only-a")["n2"], 3);
    assert_eq!(
        w.spread("only-a")["n4"],
        0,
        "constraints: zone b takes none"
    );
    assert!(w.spread("capped").values().all(|c| *c <= 2));
    // Spread by zone first, then within each zone.
    assert_eq!(counts(&w, "zones"), [2, 2, 2, 2]);
}

#[test]
fn moves_across_the_swarm_are_bounded() {
    let mut w = three();
    for i in 0..12 {
        w.create(&format!("s{i:02}"), 6, |s| {
            s.update_config = Some(ServiceSpecUpdateConfig {
                parallelism: Some(0),
                ..Default::default()
            });
        });
    }
    w.availability("n3", NodeSpecAvailabilityEnum::DRAIN);
    w.run_for(1);
    w.most_moving = 0;
    w.availability("n3", NodeSpecAvailabilityEnum::ACTIVE);
    w.run_for(120);
    for i in 0..12 {
        assert_eq!(counts(&w, &format!("s{i:02}")), [2, 2, 2], "s{i:02}");
    }
    assert!(w.most_moving > 1, "moves run side by side");
    assert!(
        w.most_moving <= MAX_MOVES,
        "{} moves at once, more than {MAX_MOVES}",
        w.most_moving
    );
}

#[test]
fn a_node_that_comes_and_goes_waits_longer_each_time() {
    let mut w = three();
    w.create("web", 6, |_| {});
    for _ in 0..2 {
        w.status("n3", NodeState::DOWN);
        w.run_for(1);
        w.status("n3", NodeState::READY);
        w.run_for(5);
    }
    assert_eq!(w.moves("web"), 0, "it never stayed long enough");
    w.status("n3", NodeState::DOWN);
    w.run_for(1);
    w.status("n3", NodeState::READY);
    // Lost three times in the last minutes: it waits 10 s x 2^2.
    w.run_for(SETTLE.num_seconds() * 4 - 2);
    assert_eq!(w.spread("web")["n3"], 0);
    w.run_for(30);
    assert_eq!(counts(&w, "web"), [2, 2, 2]);
}

#[test]
fn a_new_leader_finishes_a_start_first_move_in_flight() {
    let mut w = three();
    w.create("web", 6, start_first);
    w.availability("n3", NodeSpecAvailabilityEnum::DRAIN);
    w.run_for(1);
    w.availability("n3", NodeSpecAvailabilityEnum::ACTIVE);
    w.run_for(SETTLE.num_seconds() - 1);
    w.now += SETTLE - Duration::seconds(SETTLE.num_seconds() - 1);
    // One leader pass makes the first move; then the lead changes hands.
    let plan = w.decide();
    assert!(
        plan.ops
            .iter()
            .any(|op| matches!(op, Op::CreateTask(t) if is_move(t))),
        "{plan:#?} {:?} {}",
        w.spread("web"),
        w.now
    );
    w.apply(plan.ops);
    w.rebalancer = Rebalancer::default();
    w.run_for(30);
    assert_eq!(w.spread("web")["n3"], 1, "the move in flight ends on n3");
    assert_eq!(w.running("web"), 6, "and the old task stopped");
    assert_eq!(
        w.state
            .tasks_of_service("web")
            .filter(|t| t.desired() == TaskState::RUNNING)
            .count(),
        6
    );
}

#[test]
fn a_moved_task_that_fails_stops_the_service_s_moves() {
    let mut w = three();
    w.create("web", 9, |s| {
        s.task_template.as_mut().unwrap().restart_policy = Some(TaskSpecRestartPolicy {
            condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
            ..Default::default()
        });
    });
    w.availability("n3", NodeSpecAvailabilityEnum::DRAIN);
    w.run_for(1);
    w.crash_on = Some("n3".into());
    w.availability("n3", NodeSpecAvailabilityEnum::ACTIVE);
    w.run_for(60);
    assert_eq!(w.moves("web"), 1, "one failed move, then no more");
    assert_eq!(w.spread("web")["n3"], 0);
}

#[test]
fn a_move_its_node_cannot_take_any_more_is_given_up_and_the_slot_refilled() {
    let mut w = three();
    let memory = |w: &mut World, node: &str, bytes: i64| {
        w.set_node(node, |n| {
            n.description.as_mut().unwrap().resources = Some(ResourceObject {
                memory_bytes: Some(bytes),
                nano_cpus: Some(4_000_000_000),
                ..Default::default()
            })
        })
    };
    for n in ["n1", "n2", "n3"] {
        memory(&mut w, n, 8 << 30);
    }
    w.create("web", 6, |s| {
        s.task_template.as_mut().unwrap().resources = Some(TaskSpecResources {
            reservations: Some(ResourceObject {
                memory_bytes: Some(1 << 30),
                ..Default::default()
            }),
            ..Default::default()
        });
    });
    w.availability("n3", NodeSpecAvailabilityEnum::DRAIN);
    w.run_for(1);
    w.availability("n3", NodeSpecAvailabilityEnum::ACTIVE);
    w.run_for(SETTLE.num_seconds() - 1);
    w.now += Duration::seconds(1);
    let plan = w.decide();
    assert!(plan
        .ops
        .iter()
        .any(|op| matches!(op, Op::CreateTask(t) if is_move(t))));
    w.apply(plan.ops);
    // The node shrinks before the move's task is placed there.
    memory(&mut w, "n3", 512 << 20);
    w.run_for(20);
    assert_eq!(
        w.running("web"),
        5,
        "stop-first: the moved slot waits for its node"
    );
    w.run_for(60);
    assert_eq!(
        w.running("web"),
        6,
        "the move was given up and its slot refilled"
    );
    assert_eq!(w.spread("web")["n3"], 0);
}
