//! Orchestrators and scheduler as pure decisions over a state: each pass
//! returns ops, the test applies them as Raft would, and checks the result.

mod common;

use std::collections::HashMap;

use chrono::{Duration, Utc};
use flotilla_manager::orchestrator::{global, jobs, replicated, taskreaper, Plan, PASS_BUDGET};
use flotilla_store::ids::{format_time, now};
use flotilla_store::models::*;
use flotilla_store::state::TaskExt;
use flotilla_store::{Op, State};

struct World {
    state: State,
    index: u64,
    scheduler: common::CheckedScheduler,
}

impl World {
    fn new(nodes: &[(&str, &str)]) -> World {
        let mut w = World {
            state: State::default(),
            index: 0,
            scheduler: Default::default(),
        };
        for (id, host) in nodes {
            w.apply(vec![Op::PutNode(Box::new(Node {
                id: Some(id.to_string()),
                spec: Some(NodeSpec {
                    role: Some(NodeSpecRoleEnum::WORKER),
                    availability: Some(NodeSpecAvailabilityEnum::ACTIVE),
                    labels: Some(HashMap::new()),
                    ..Default::default()
                }),
                description: Some(NodeDescription {
                    hostname: Some(host.to_string()),
                    resources: Some(ResourceObject {
                        nano_cpus: Some(2_000_000_000),
                        memory_bytes: Some(1 << 30),
                        ..Default::default()
                    }),
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
                self.scheduler.forget();
            }
        }
    }

    /// Runs orchestrators, scheduler and reaper until nothing changes.
    fn settle(&mut self) {
        for _ in 0..50 {
            let t = Utc::now();
            let mut ops = Vec::new();
            for decide in [
                replicated::reconcile as fn(&State, _) -> Plan,
                global::reconcile,
                |s, t| jobs::reconcile_only(s, t, None),
                taskreaper::reconcile,
            ] {
                ops.extend(decide(&self.state, t).ops);
            }
            ops.extend(self.scheduler.pass(&self.state, &format_time(t)));
            if ops.is_empty() {
                return;
            }
            self.apply(ops);
        }
        panic!("did not settle");
    }

    /// What an agent would report: every assigned task wanted running runs.
    fn run_assigned(&mut self) {
        let ops: Vec<Op> = self
            .state
            .tasks
            .values()
            .filter(|t| t.state() == TaskState::ASSIGNED && t.desired() == TaskState::RUNNING)
            .map(|t| status(t.id_str(), TaskState::RUNNING))
            .collect();
        self.apply(ops);
    }

    fn create(&mut self, id: &str, replicas: Option<i64>, f: impl FnOnce(&mut ServiceSpec)) {
        let mut spec = ServiceSpec {
            name: Some(id.to_string()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some("busybox".into()),
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
    }

    fn running_on(&self, node: &str) -> usize {
        self.state
            .tasks_on_node(node)
            .filter(|t| t.desired() == TaskState::RUNNING)
            .count()
    }

    fn live(&self, svc: &str) -> Vec<&Task> {
        self.state
            .tasks_of_service(svc)
            .filter(|t| t.desired() <= TaskState::RUNNING)
            .collect()
    }

    fn scale(&mut self, svc: &str, n: i64) {
        let mut s = self.state.services[svc].clone();
        s.spec.as_mut().unwrap().mode.as_mut().unwrap().replicated =
            Some(ServiceSpecModeReplicated { replicas: Some(n) });
        let v = s.version.as_ref().unwrap().index.unwrap();
        self.apply(vec![Op::UpdateService {
            expected: v,
            service: Box::new(s),
        }]);
    }
}

fn status(id: &str, state: TaskState) -> Op {
    Op::SetTaskStatus {
        id: id.into(),
        status: TaskStatus {
            state: Some(state),
            timestamp: Some(now()),
            ..Default::default()
        },
    }
}

#[test]
fn replicas_spread_evenly() {
    let mut w = World::new(&[("n1", "a"), ("n2", "b"), ("n3", "c")]);
    w.create("web", Some(6), |_| {});
    w.settle();
    for n in ["n1", "n2", "n3"] {
        assert_eq!(w.running_on(n), 2, "node {n}");
    }
    let mut slots: Vec<i64> = w.live("web").iter().map(|t| t.slot_no()).collect();
    slots.sort();
    assert_eq!(slots, vec![1, 2, 3, 4, 5, 6]);
}

/// A pass assigns at most a thousand tasks (one Raft entry each); the
/// rest, of a service the commit did not touch, go in the passes after.
#[test]
fn a_pass_assigns_a_thousand_tasks_and_the_next_pass_goes_on() {
    let mut w = World::new(&[("n1", "a"), ("n2", "b")]);
    w.create("a", Some(1200), |_| {});
    w.create("b", Some(10), |_| {});
    let t = Utc::now();
    w.apply(replicated::reconcile(&w.state, t).ops);
    let first = w.scheduler.pass(&w.state, &format_time(t));
    let assigned = |ops: &[Op]| {
        ops.iter()
            .filter(|op| matches!(op, Op::AssignTask { .. }))
            .count()
    };
    assert_eq!(assigned(&first), 1000);
    w.apply(first);
    w.settle();
    let placed = |svc| {
        w.state
            .tasks_of_service(svc)
            .filter(|t| t.state() == TaskState::ASSIGNED)
            .count()
    };
    assert_eq!((placed("a"), placed("b")), (1200, 10));
}

/// A pass creates at most `PASS_BUDGET` tasks and names the services it
/// did not finish; a pass over just those goes on where it stopped.
#[test]
fn a_pass_creates_at_most_its_budget_and_names_the_services_left() {
    let mut w = World::new(&[("n1", "a")]);
    w.create("a", Some(1500), |_| {});
    w.create("b", Some(1500), |_| {});
    w.create("c", Some(10), |_| {});
    let t = Utc::now();
    let first = replicated::reconcile(&w.state, t);
    assert_eq!(first.ops.len(), PASS_BUDGET);
    let left: Vec<&str> = first.rest.iter().map(String::as_str).collect();
    assert_eq!(left, ["b", "c"]);
    w.apply(first.ops);
    let second = replicated::reconcile_only(&w.state, t, Some(&first.rest));
    assert_eq!(second.ops.len(), 1010);
    assert!(second.rest.is_empty());
    w.apply(second.ops);
    for (svc, n) in [("a", 1500), ("b", 1500), ("c", 10)] {
        let mut slots: Vec<i64> = w.live(svc).iter().map(|t| t.slot_no()).collect();
        slots.sort();
        assert_eq!(slots, (1..=n).collect::<Vec<_>>(), "{svc}");
    }
}

#[test]
fn scale_down_prefers_busiest_nodes_and_tasks_not_running() {
    let mut w = World::new(&[("n1", "a")]);
    w.create("web", Some(4), |_| {});
    w.settle();
    w.run_assigned();
    // A second node joins; two more replicas land there but do not run yet.
    let mut w2 = World::new(&[("n2", "b")]);
    let n2 = w2.state.nodes.remove("n2").unwrap();
    w.apply(vec![Op::PutNode(Box::new(n2))]);
    w.scale("web", 6);
    w.settle();
    assert_eq!(w.running_on("n2"), 2);
    w.scale("web", 3);
    w.settle();
    let live = w.live("web");
    assert_eq!(live.len(), 3);
    // The two not-running tasks go first, then one from the busy node.
    assert!(live.iter().all(|t| t.state() == TaskState::RUNNING));
    assert_eq!(w.running_on("n1"), 3);
}

/// Found by flotilla-chaos (seed 7): scaled to 0 and straight back to 2,
/// the new slot 2 started on another node while the old slot 2's task was
/// still stopping.
#[test]
fn a_scale_up_does_not_reuse_a_slot_whose_task_is_still_stopping() {
    let mut w = World::new(&[("n1", "a"), ("n2", "b")]);
    w.create("web", Some(2), |_| {});
    w.settle();
    w.run_assigned();
    w.scale("web", 0);
    w.settle();
    // Both old tasks are told to go, and still run.
    assert!(w.live("web").is_empty());
    w.scale("web", 2);
    w.settle();
    let mut new: Vec<i64> = w.live("web").iter().map(|t| t.slot_no()).collect();
    new.sort();
    assert_eq!(new, [3, 4]);
    // Once the old ones report they stopped, their numbers are free again.
    let stopped: Vec<Op> = w
        .state
        .tasks_of_service("web")
        .filter(|t| t.desired() > TaskState::RUNNING)
        .map(|t| status(t.id_str(), TaskState::SHUTDOWN))
        .collect();
    w.apply(stopped);
    w.scale("web", 4);
    w.settle();
    let mut all: Vec<i64> = w.live("web").iter().map(|t| t.slot_no()).collect();
    all.sort();
    assert_eq!(all, [1, 2, 3, 4]);
}

#[test]
fn failed_task_is_replaced_after_the_restart_delay() {
    let mut w = World::new(&[("n1", "a")]);
    w.create("web", Some(1), |_| {});
    w.settle();
    w.run_assigned();
    let first = w.live("web")[0].id_str().to_string();
    w.apply(vec![status(&first, TaskState::FAILED)]);
    let plan = replicated::reconcile(&w.state, Utc::now());
    w.apply(plan.ops);
    let live = w.live("web");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].desired(), TaskState::READY, "waits out the delay");
    assert_eq!(live[0].slot_no(), 1);
    // Before the delay nothing more happens, and a wake-up is asked for.
    let plan = replicated::reconcile(&w.state, Utc::now());
    assert!(plan.ops.is_empty());
    assert!(plan.wake_at.is_some());
    // After it, the replacement is wanted running.
    let plan = replicated::reconcile(&w.state, Utc::now() + Duration::seconds(6));
    w.apply(plan.ops);
    assert_eq!(w.live("web")[0].desired(), TaskState::RUNNING);
}

#[test]
fn restart_condition_none_leaves_the_slot_finished() {
    let mut w = World::new(&[("n1", "a")]);
    w.create("job", Some(2), |s| {
        s.task_template.as_mut().unwrap().restart_policy = Some(TaskSpecRestartPolicy {
            condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
            ..Default::default()
        });
    });
    w.settle();
    w.run_assigned();
    let ids: Vec<String> = w
        .live("job")
        .iter()
        .map(|t| t.id_str().to_string())
        .collect();
    w.apply(
        ids.iter()
            .map(|id| status(id, TaskState::COMPLETE))
            .collect(),
    );
    w.settle();
    assert_eq!(w.state.tasks.len(), 2, "no replacement task");
    assert!(w
        .state
        .tasks
        .values()
        .all(|t| t.desired() == TaskState::SHUTDOWN));
}

#[test]
fn drained_node_tasks_move_and_pending_explains_why() {
    let mut w = World::new(&[("n1", "a"), ("n2", "b")]);
    w.create("web", Some(2), |_| {});
    w.settle();
    let n1 = &w.state.nodes["n1"];
    let mut spec = n1.spec.clone().unwrap();
    spec.availability = Some(NodeSpecAvailabilityEnum::DRAIN);
    let v = n1.version.as_ref().unwrap().index.unwrap();
    w.apply(vec![Op::UpdateNodeSpec {
        id: "n1".into(),
        expected: v,
        spec,
        updated_at: now(),
    }]);
    w.settle();
    assert_eq!(w.running_on("n1"), 0);
    assert_eq!(w.running_on("n2"), 2);

    w.create("pinned", Some(1), |s| {
        s.task_template.as_mut().unwrap().placement = Some(TaskSpecPlacement {
            constraints: Some(vec!["node.hostname==zzz".into()]),
            ..Default::default()
        });
    });
    w.settle();
    let t = w.live("pinned")[0];
    assert_eq!(t.state(), TaskState::PENDING);
    assert_eq!(
        t.status.as_ref().unwrap().err.as_deref(),
        Some("no suitable node (1 node not available for new tasks; scheduling constraints not satisfied on 1 node)")
    );
}

#[test]
fn max_replicas_per_node_and_reservations_are_respected() {
    let mut w = World::new(&[("n1", "a"), ("n2", "b")]);
    w.create("web", Some(3), |s| {
        s.task_template.as_mut().unwrap().placement = Some(TaskSpecPlacement {
            max_replicas: Some(1),
            ..Default::default()
        });
    });
    w.settle();
    assert_eq!(w.running_on("n1"), 1);
    assert_eq!(w.running_on("n2"), 1);
    let pending: Vec<_> = w
        .live("web")
        .into_iter()
        .filter(|t| t.state() == TaskState::PENDING)
        .collect();
    assert_eq!(pending.len(), 1);
    assert!(pending[0]
        .status
        .as_ref()
        .unwrap()
        .err
        .as_deref()
        .unwrap()
        .contains("max replicas per node"));

    w.create("big", Some(1), |s| {
        s.task_template.as_mut().unwrap().resources = Some(TaskSpecResources {
            reservations: Some(ResourceObject {
                memory_bytes: Some(2 << 30),
                ..Default::default()
            }),
            ..Default::default()
        });
    });
    w.settle();
    let t = w.live("big")[0];
    assert_eq!(
        t.status.as_ref().unwrap().err.as_deref(),
        Some("no suitable node (insufficient resources on 2 nodes)")
    );
}

/// Publishes port 80 as 8080 on the node itself (`mode=host`).
fn host_port(s: &mut ServiceSpec) {
    use bollard::models::{EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec};
    s.endpoint_spec = Some(EndpointSpec {
        ports: Some(vec![EndpointPortConfig {
            target_port: Some(80),
            published_port: Some(8080),
            publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
            ..Default::default()
        }]),
        ..Default::default()
    });
}

#[test]
fn host_mode_ports_keep_two_tasks_off_one_node() {
    let mut w = World::new(&[("n1", "a"), ("n2", "b")]);
    w.create("web", Some(3), host_port);
    w.settle();
    assert_eq!(w.running_on("n1"), 1);
    assert_eq!(w.running_on("n2"), 1);
    let pending: Vec<_> = w
        .live("web")
        .into_iter()
        .filter(|t| t.state() == TaskState::PENDING)
        .collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].status.as_ref().unwrap().err.as_deref(),
        Some("no suitable node (host-mode port already in use on 2 nodes)")
    );
    // Another service on the same host port waits too; a different one fits.
    w.create("other", Some(1), host_port);
    w.settle();
    assert_eq!(w.live("other")[0].state(), TaskState::PENDING);
    // Once the first service is gone its ports are free: the waiting task
    // of another service is placed (the scheduler must look at it again
    // although nothing of its own service changed).
    w.apply(vec![Op::RemoveService { id: "web".into() }]);
    w.settle();
    assert_eq!(w.live("other")[0].state(), TaskState::ASSIGNED);
}

#[test]
fn a_global_service_with_a_host_mode_port_runs_on_every_node() {
    let mut w = World::new(&[("n1", "a"), ("n2", "b")]);
    w.create("edge", None, host_port);
    w.settle();
    assert_eq!(w.running_on("n1"), 1);
    assert_eq!(w.running_on("n2"), 1);
}

#[test]
fn global_service_runs_once_per_eligible_node() {
    let mut w = World::new(&[("n1", "a"), ("n2", "b"), ("n3", "c")]);
    w.create("agent", None, |_| {});
    w.settle();
    for n in ["n1", "n2", "n3"] {
        assert_eq!(w.running_on(n), 1);
    }
    let mut down = w.state.nodes["n3"].status.clone().unwrap();
    down.state = Some(NodeState::DOWN);
    w.apply(vec![Op::SetNodeStatus {
        id: "n3".into(),
        status: down,
        description: None,
        updated_at: now(),
    }]);
    w.settle();
    assert_eq!(w.running_on("n3"), 0);
    assert_eq!(w.live("agent").len(), 2);
}

#[test]
fn history_is_capped_and_removed_service_tasks_go() {
    let mut w = World::new(&[("n1", "a")]);
    w.create("web", Some(1), |_| {});
    w.settle();
    for _ in 0..8 {
        w.run_assigned();
        let id = w.live("web")[0].id_str().to_string();
        w.apply(vec![status(&id, TaskState::FAILED)]);
        w.apply(replicated::reconcile(&w.state, Utc::now()).ops);
        w.apply(replicated::reconcile(&w.state, Utc::now() + Duration::seconds(6)).ops);
        w.settle();
    }
    assert_eq!(w.state.tasks_of_service("web").count(), 5);
    w.apply(vec![Op::RemoveService { id: "web".into() }]);
    w.settle();
    // The running task is marked for removal; it goes once the agent stops it.
    let left: Vec<_> = w.state.tasks.values().collect();
    assert!(left.iter().all(|t| t.desired() == TaskState::REMOVE));
    let ids: Vec<String> = left.iter().map(|t| t.id_str().to_string()).collect();
    w.apply(
        ids.iter()
            .map(|id| status(id, TaskState::SHUTDOWN))
            .collect(),
    );
    w.settle();
    assert!(w.state.tasks.is_empty());
}

#[test]
fn tasks_on_a_network_go_only_where_overlay_networks_are_carried() {
    let mut w = World::new(&[("n1", "a"), ("n2", "b")]);
    w.state
        .nodes
        .get_mut("n2")
        .unwrap()
        .description
        .as_mut()
        .unwrap()
        .engine = Some(EngineDescription {
        plugins: Some(vec![EngineDescriptionPlugins {
            typ: Some("Network".into()),
            name: Some("overlay".into()),
        }]),
        ..Default::default()
    });
    w.apply(vec![Op::CreateNetwork {
        id: "net1".into(),
        created_at: now(),
        spec: Box::new(flotilla_store::networks::NetworkSpec {
            name: "front".into(),
            ..Default::default()
        }),
    }]);
    let on_front = |s: &mut ServiceSpec| {
        s.task_template.as_mut().unwrap().networks = Some(vec![NetworkAttachmentConfig {
            target: Some("net1".into()),
            ..Default::default()
        }]);
    };
    w.create("api", Some(3), on_front);
    w.create("plain", Some(2), |_| {});
    w.settle();
    assert_eq!(
        w.live("api")
            .iter()
            .filter(|t| t.node() == Some("n2"))
            .count(),
        3,
        "every api task on the node that carries overlay networks"
    );
    // With that node drained, they wait and say why.
    let n2 = &w.state.nodes["n2"];
    let mut spec = n2.spec.clone().unwrap();
    spec.availability = Some(NodeSpecAvailabilityEnum::DRAIN);
    let v = n2.version.as_ref().unwrap().index.unwrap();
    w.apply(vec![Op::UpdateNodeSpec {
        id: "n2".into(),
        expected: v,
        spec,
        updated_at: now(),
    }]);
    w.settle();
    let pending: Vec<&Task> = w
        .live("api")
        .into_iter()
        .filter(|t| t.state() == TaskState::PENDING)
        .collect();
    assert_eq!(pending.len(), 3);
    assert_eq!(
        pending[0].status.as_ref().unwrap().err.as_deref(),
        Some("no suitable node (1 node not available for new tasks; missing plugin on 1 node)")
    );
}

/// A job service as the API stores it (counts filled in, iteration 0).
fn create_job(w: &mut World, id: &str, mode: ServiceSpecMode, f: impl FnOnce(&mut ServiceSpec)) {
    let mut spec = ServiceSpec {
        name: Some(id.to_string()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some("busybox".into()),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                delay: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mode: Some(mode),
        ..Default::default()
    };
    f(&mut spec);
    let svc = Service::from(bollard::models::Service {
        id: Some(id.into()),
        spec: Some(spec),
        job_status: Some(ServiceJobStatus {
            job_iteration: Some(ObjectVersion { index: Some(0) }),
            last_execution: Some(now()),
        }),
        ..Default::default()
    });
    w.apply(vec![Op::CreateService(Box::new(svc))]);
}

fn replicated_job(max: i64, total: i64) -> ServiceSpecMode {
    ServiceSpecMode {
        replicated_job: Some(ServiceSpecModeReplicatedJob {
            max_concurrent: Some(max),
            total_completions: Some(total),
        }),
        ..Default::default()
    }
}

/// What an agent reports for each assigned task of `svc` wanted to run:
/// it ran and ended in `end` (COMPLETE or FAILED).
fn end_assigned(w: &mut World, svc: &str, end: TaskState) -> usize {
    let ids: Vec<String> = w
        .state
        .tasks_of_service(svc)
        .filter(|t| t.state() == TaskState::ASSIGNED && t.should_run())
        .map(|t| t.id_str().to_string())
        .collect();
    for id in &ids {
        w.apply(vec![status(id, TaskState::RUNNING)]);
        w.apply(vec![status(id, end)]);
    }
    ids.len()
}

fn count(w: &World, svc: &str, state: TaskState) -> usize {
    w.state
        .tasks_of_service(svc)
        .filter(|t| t.state() == state)
        .count()
}

#[test]
fn a_replicated_job_runs_max_concurrent_at_a_time_until_total_completions() {
    let mut w = World::new(&[("n1", "a"), ("n2", "b")]);
    create_job(&mut w, "job", replicated_job(2, 5), |_| {});
    let mut waves = Vec::new();
    for _ in 0..10 {
        w.settle();
        let ran = end_assigned(&mut w, "job", TaskState::COMPLETE);
        if ran == 0 {
            break;
        }
        waves.push(ran);
    }
    assert_eq!(waves, [2, 2, 1], "at most MaxConcurrent at once");
    assert_eq!(count(&w, "job", TaskState::COMPLETE), 5);
    // Slots from 0, as SwarmKit numbers a job's; every task wants COMPLETE.
    let mut slots: Vec<i64> = w
        .state
        .tasks_of_service("job")
        .map(|t| t.slot_no())
        .collect();
    slots.sort();
    assert_eq!(slots, [0, 1, 2, 3, 4]);
    assert!(w
        .state
        .tasks_of_service("job")
        .all(|t| t.desired() == TaskState::COMPLETE));
    // Done: nothing more is created.
    w.settle();
    assert_eq!(w.state.tasks_of_service("job").count(), 5);
}

#[test]
fn a_failed_job_task_is_replaced_and_a_completed_one_never_reruns() {
    let mut w = World::new(&[("n1", "a")]);
    create_job(&mut w, "job", replicated_job(1, 1), |_| {});
    w.settle();
    end_assigned(&mut w, "job", TaskState::FAILED);
    w.settle();
    // The replacement (same slot, same iteration) runs and completes.
    let replacement: Vec<&Task> = w
        .state
        .tasks_of_service("job")
        .filter(|t| t.state() == TaskState::ASSIGNED)
        .collect();
    assert_eq!(replacement.len(), 1);
    assert_eq!(replacement[0].slot_no(), 0);
    assert_eq!(replacement[0].desired(), TaskState::COMPLETE);
    end_assigned(&mut w, "job", TaskState::COMPLETE);
    w.settle();
    assert_eq!(count(&w, "job", TaskState::COMPLETE), 1);
    assert_eq!(w.state.tasks_of_service("job").count(), 2);
}

#[test]
fn restart_condition_none_gives_a_failed_job_slot_up() {
    let mut w = World::new(&[("n1", "a")]);
    create_job(&mut w, "job", replicated_job(1, 2), |s| {
        let p = s
            .task_template
            .as_mut()
            .unwrap()
            .restart_policy
            .as_mut()
            .unwrap();
        p.condition = Some(TaskSpecRestartPolicyConditionEnum::NONE);
    });
    w.settle();
    end_assigned(&mut w, "job", TaskState::FAILED);
    w.settle();
    end_assigned(&mut w, "job", TaskState::COMPLETE);
    w.settle();
    // Slot 0 failed for good, slot 1 completed: two tasks, no retry.
    assert_eq!(w.state.tasks_of_service("job").count(), 2);
    assert_eq!(end_assigned(&mut w, "job", TaskState::COMPLETE), 0);
}

#[test]
fn a_global_job_runs_once_per_node_and_again_on_an_update() {
    let mut w = World::new(&[("n1", "a"), ("n2", "b")]);
    let mode = ServiceSpecMode {
        global_job: Some(HashMap::new()),
        ..Default::default()
    };
    create_job(&mut w, "gj", mode, |_| {});
    w.settle();
    assert_eq!(end_assigned(&mut w, "gj", TaskState::COMPLETE), 2);
    w.settle();
    assert_eq!(end_assigned(&mut w, "gj", TaskState::COMPLETE), 0);
    // The next iteration (what an update does): it runs again everywhere.
    let mut s = w.state.services["gj"].clone();
    s.job_status.as_mut().unwrap().job_iteration = Some(ObjectVersion { index: Some(1) });
    let v = s.version.as_ref().unwrap().index.unwrap();
    w.apply(vec![Op::UpdateService {
        expected: v,
        service: Box::new(s),
    }]);
    w.settle();
    let next: Vec<&Task> = w
        .state
        .tasks_of_service("gj")
        .filter(|t| t.job_iteration.as_ref().and_then(|v| v.index) == Some(1))
        .collect();
    assert_eq!(next.len(), 2);
    assert!(next.iter().all(|t| t.state() == TaskState::ASSIGNED));
}

fn label(w: &mut World, node: &str, key: &str, value: &str) {
    let mut n = w.state.nodes[node].clone();
    n.spec
        .as_mut()
        .unwrap()
        .labels
        .get_or_insert_with(HashMap::new)
        .insert(key.into(), value.into());
    w.apply(vec![Op::PutNode(Box::new(n))]);
}

#[test]
fn spread_preferences_balance_label_values_before_nodes() {
    // Zone a has three nodes, zone b one, n5 no zone label at all: spread
    // over the zone puts a third of the tasks in each group, whatever
    // the groups' sizes (SwarmKit's tree), then evenly within a group.
    let mut w = World::new(&[
        ("n1", "a"),
        ("n2", "b"),
        ("n3", "c"),
        ("n4", "d"),
        ("n5", "e"),
    ]);
    for (n, zone) in [("n1", "a"), ("n2", "a"), ("n3", "a"), ("n4", "b")] {
        label(&mut w, n, "zone", zone);
    }
    w.create("web", Some(6), |s| {
        s.task_template.as_mut().unwrap().placement = Some(TaskSpecPlacement {
            preferences: Some(vec![TaskSpecPlacementPreferences {
                spread: Some(TaskSpecPlacementSpread {
                    spread_descriptor: Some("node.labels.zone".into()),
                }),
            }]),
            ..Default::default()
        });
    });
    w.settle();
    let per_node: Vec<usize> = ["n1", "n2", "n3", "n4", "n5"]
        .iter()
        .map(|n| w.running_on(n))
        .collect();
    assert_eq!(per_node.iter().sum::<usize>(), 6);
    assert_eq!(
        per_node[0] + per_node[1] + per_node[2],
        2,
        "zone a: {per_node:?}"
    );
    assert_eq!(per_node[3], 2, "zone b: {per_node:?}");
    assert_eq!(per_node[4], 2, "no zone: {per_node:?}");
}

#[test]
fn placement_platforms_keep_tasks_off_other_platforms() {
    let mut w = World::new(&[("n1", "a"), ("n2", "b")]);
    for (n, arch) in [("n1", "x86_64"), ("n2", "aarch64")] {
        let mut node = w.state.nodes[n].clone();
        node.description.as_mut().unwrap().platform = Some(Platform {
            architecture: Some(arch.into()),
            os: Some("linux".into()),
        });
        w.apply(vec![Op::PutNode(Box::new(node))]);
    }
    w.create("web", Some(3), |s| {
        s.task_template.as_mut().unwrap().placement = Some(TaskSpecPlacement {
            platforms: Some(vec![Platform {
                architecture: Some("arm64".into()),
                os: Some("linux".into()),
            }]),
            ..Default::default()
        });
    });
    w.settle();
    assert_eq!((w.running_on("n1"), w.running_on("n2")), (0, 3));
    w.create("x86", Some(1), |s| {
        s.task_template.as_mut().unwrap().placement = Some(TaskSpecPlacement {
            platforms: Some(vec![Platform {
                architecture: Some("s390x".into()),
                os: Some("linux".into()),
            }]),
            ..Default::default()
        });
    });
    w.settle();
    let t = w.state.tasks_of_service("x86").next().unwrap();
    assert_eq!(
        t.status.as_ref().unwrap().err.as_deref(),
        Some("no suitable node (unsupported platform on 2 nodes)")
    );
}

#[test]
fn tasks_carry_the_service_s_registry_credentials_to_their_node() {
    let mut w = World::new(&[("n1", "a")]);
    w.create("web", Some(1), |_| {});
    let mut svc = w.state.services["web"].clone();
    svc.runtime.registry_auth = Some(RegistryAuth("eyJ1c2VybmFtZSI6ImEifQ==".into()));
    let v = svc.version.as_ref().unwrap().index.unwrap();
    w.apply(vec![Op::UpdateService {
        expected: v,
        service: Box::new(svc),
    }]);
    w.settle();
    let t = w.state.tasks_of_service("web").next().unwrap();
    assert_eq!(
        t.runtime.registry_auth,
        Some(RegistryAuth("eyJ1c2VybmFtZSI6ImEifQ==".into()))
    );
    // Never printed.
    assert!(!format!("{t:?}").contains("eyJ1c2VybmFtZSI6ImEifQ"));
}

#[test]
fn generic_resources_go_only_where_enough_are_left_and_are_assigned() {
    let mut w = World::new(&[("n1", "a"), ("n2", "b")]);
    // n1 offers two named GPUs; n2 none.
    let mut n1 = w.state.nodes["n1"].clone();
    n1.description
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .generic_resources = Some(
        ["g1", "g2"]
            .iter()
            .map(|v| GenericResourcesInner {
                named_resource_spec: Some(GenericResourcesInnerNamedResourceSpec {
                    kind: Some("GPU".into()),
                    value: Some(v.to_string()),
                }),
                discrete_resource_spec: None,
            })
            .collect(),
    );
    w.apply(vec![Op::PutNode(Box::new(n1))]);
    w.create("ml", Some(3), |s| {
        s.task_template.as_mut().unwrap().resources = Some(TaskSpecResources {
            reservations: Some(ResourceObject {
                generic_resources: Some(vec![GenericResourcesInner {
                    discrete_resource_spec: Some(GenericResourcesInnerDiscreteResourceSpec {
                        kind: Some("GPU".into()),
                        value: Some(1),
                    }),
                    named_resource_spec: None,
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    });
    w.settle();
    assert_eq!((w.running_on("n1"), w.running_on("n2")), (2, 0));
    let mut given: Vec<String> = w
        .state
        .tasks_on_node("n1")
        .flat_map(|t| t.assigned_generic_resources.clone().unwrap_or_default())
        .filter_map(|r| r.named_resource_spec?.value)
        .collect();
    given.sort();
    assert_eq!(given, ["g1", "g2"]);
    let pending: Vec<&Task> = w
        .state
        .tasks_of_service("ml")
        .filter(|t| t.state() == TaskState::PENDING)
        .collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        pending[0].status.as_ref().unwrap().err.as_deref(),
        Some("no suitable node (insufficient resources on 2 nodes)")
    );
}
