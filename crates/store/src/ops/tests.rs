//! Ops applied to a state: conflicts, versions, forward-only task states.

use super::*;
use crate::objects::{version_of, TaskExt};
use bollard::models::ServiceSpec as Spec;

pub(crate) fn svc(id: &str, name: &str) -> Service {
    Service::from(bollard::models::Service {
        id: Some(id.into()),
        spec: Some(Spec {
            name: Some(name.into()),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub(crate) fn task(id: &str, svc: &str) -> Task {
    Task {
        id: Some(id.into()),
        service_id: Some(svc.into()),
        status: Some(TaskStatus {
            state: Some(TaskState::NEW),
            ..Default::default()
        }),
        desired_state: Some(TaskState::RUNNING),
        ..Default::default()
    }
}

#[test]
fn duplicate_service_name_is_a_conflict_and_changes_nothing() {
    let mut s = State::default();
    s.apply(1, Op::CreateService(Box::new(svc("a", "web"))))
        .unwrap();
    let err = s
        .apply(2, Op::CreateService(Box::new(svc("b", "web"))))
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::NameTaken {
            kind: Kind::Service,
            name: "web".into()
        }
    );
    assert_eq!(s.services.len(), 1);
}

#[test]
fn stale_service_version_is_out_of_sequence() {
    let mut s = State::default();
    s.apply(5, Op::CreateService(Box::new(svc("a", "web"))))
        .unwrap();
    let err = s
        .apply(
            6,
            Op::UpdateService {
                expected: 4,
                service: Box::new(svc("a", "web2")),
            },
        )
        .unwrap_err();
    assert_eq!(err, out_of_sequence(Kind::Service, "a", 4, 5));
    s.apply(
        7,
        Op::UpdateService {
            expected: 5,
            service: Box::new(svc("a", "web2")),
        },
    )
    .unwrap();
    assert_eq!(version_of(&s.services["a"].version), 7);
}

#[test]
fn task_state_never_moves_back() {
    let mut s = State::default();
    s.apply(1, Op::CreateTask(Box::new(task("t", "a"))))
        .unwrap();
    let running = TaskStatus {
        state: Some(TaskState::RUNNING),
        ..Default::default()
    };
    s.apply(
        2,
        Op::SetTaskStatus {
            id: "t".into(),
            status: running,
        },
    )
    .unwrap();
    let back = TaskStatus {
        state: Some(TaskState::PREPARING),
        ..Default::default()
    };
    assert!(s
        .apply(
            3,
            Op::SetTaskStatus {
                id: "t".into(),
                status: back
            }
        )
        .is_err());
    assert_eq!(s.tasks["t"].state(), TaskState::RUNNING);
}

#[test]
fn the_first_running_report_is_remembered() {
    let mut s = State::default();
    s.apply(1, Op::CreateTask(Box::new(task("t", "a"))))
        .unwrap();
    let report = |state, at: &str| Op::SetTaskStatus {
        id: "t".into(),
        status: TaskStatus {
            state: Some(state),
            timestamp: Some(at.into()),
            ..Default::default()
        },
    };
    let since = |s: &State| s.tasks["t"].runtime.running_since.clone();
    s.apply(2, report(TaskState::STARTING, "t1")).unwrap();
    assert_eq!(since(&s), None);
    s.apply(3, report(TaskState::RUNNING, "t2")).unwrap();
    s.apply(4, report(TaskState::RUNNING, "t3")).unwrap();
    s.apply(5, report(TaskState::FAILED, "t4")).unwrap();
    assert_eq!(since(&s).as_deref(), Some("t2"));
}

#[test]
fn assignment_updates_node_index_once() {
    let mut s = State::default();
    s.apply(1, Op::CreateTask(Box::new(task("t", "a"))))
        .unwrap();
    let st = TaskStatus {
        state: Some(TaskState::ASSIGNED),
        ..Default::default()
    };
    s.apply(
        2,
        Op::AssignTask {
            id: "t".into(),
            node_id: "n".into(),
            status: st.clone(),
            generic: None,
        },
    )
    .unwrap();
    assert!(s
        .apply(
            3,
            Op::AssignTask {
                id: "t".into(),
                node_id: "m".into(),
                status: st,
                generic: None,
            }
        )
        .is_err());
    assert_eq!(s.tasks_on_node("n").count(), 1);
    assert_eq!(s.tasks_on_node("m").count(), 0);
    s.apply(4, Op::RemoveTask { id: "t".into() }).unwrap();
    assert_eq!(s.tasks_on_node("n").count(), 0);
    assert_eq!(s.tasks_of_service("a").count(), 0);
}

/// What a node is sent again: a task's assignment and desired state move
/// its `assignment_index`, the status its node reported does not; a
/// reload starts it at the task's version.
#[test]
fn only_writes_a_node_acts_on_move_a_tasks_assignment_index() {
    let mut s = State::default();
    s.apply(1, Op::CreateTask(Box::new(task("t", "a"))))
        .unwrap();
    let at = |s: &State| (s.tasks["t"].assignment_index, s.tasks["t"].version_index());
    assert_eq!(at(&s), (1, 1));
    let status = |state| TaskStatus {
        state: Some(state),
        ..Default::default()
    };
    s.apply(
        2,
        Op::AssignTask {
            id: "t".into(),
            node_id: "n".into(),
            status: status(TaskState::ASSIGNED),
            generic: None,
        },
    )
    .unwrap();
    assert_eq!(at(&s), (2, 2));
    for (index, state) in [(3, TaskState::STARTING), (4, TaskState::RUNNING)] {
        s.apply(
            index,
            Op::SetTaskStatus {
                id: "t".into(),
                status: status(state),
            },
        )
        .unwrap();
    }
    assert_eq!(at(&s), (2, 4), "the node's own reports are not news to it");
    s.apply(
        5,
        Op::SetTaskDesired {
            id: "t".into(),
            desired: TaskState::SHUTDOWN,
            updated_at: String::new(),
        },
    )
    .unwrap();
    assert_eq!(at(&s), (5, 5));
    s.apply(
        6,
        Op::SetTaskStatus {
            id: "t".into(),
            status: status(TaskState::SHUTDOWN),
        },
    )
    .unwrap();
    s.rebuild_indexes();
    assert_eq!(at(&s), (6, 6));
    // A task that joins a node's set by its status is news to the node.
    let mut global = task("g", "a");
    global.node_id = Some("n".into());
    s.apply(7, Op::CreateTask(Box::new(global))).unwrap();
    s.apply(
        8,
        Op::SetTaskStatus {
            id: "g".into(),
            status: status(TaskState::REJECTED),
        },
    )
    .unwrap();
    assert_eq!(s.tasks["g"].assignment_index, 8);
}

#[test]
fn tasks_with_one_template_and_labels_share_them_after_a_reload_too() {
    use bollard::models::{TaskSpec, TaskSpecContainerSpec};
    use std::sync::Arc;
    let spec = |image: &str| {
        Some(Arc::new(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.into()),
                ..Default::default()
            }),
            ..Default::default()
        }))
    };
    let with = |id: &str, image: &str| {
        let mut t = Task {
            spec: spec(image),
            ..task(id, "a")
        };
        t.runtime.service_labels = Arc::new([("tier".into(), image.into())].into());
        t
    };
    let mut s = State::default();
    for (i, (id, image)) in [
        ("t1", "web:1"),
        ("t2", "web:1"),
        ("t3", "web:2"),
        ("t4", "web:2"),
    ]
    .into_iter()
    .enumerate()
    {
        s.apply(i as u64 + 1, Op::CreateTask(Box::new(with(id, image))))
            .unwrap();
    }
    let shared = |s: &State, a: &str, b: &str| {
        let spec = |id: &str| s.tasks[id].spec.clone().unwrap();
        let labels = |id: &str| s.tasks[id].runtime.service_labels.clone();
        let same_labels = Arc::ptr_eq(&labels(a), &labels(b));
        assert_eq!(Arc::ptr_eq(&spec(a), &spec(b)), same_labels);
        same_labels
    };
    assert!(shared(&s, "t1", "t2"));
    assert!(shared(&s, "t3", "t4"));
    assert!(!shared(&s, "t2", "t3"));
    assert_eq!(s.tasks["t3"].spec, spec("web:2"));
    assert_eq!(s.tasks["t3"].runtime.service_labels["tier"], "web:2");

    // A state loaded from its JSON (a snapshot) shares them again.
    let mut loaded: State = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
    assert!(!shared(&loaded, "t1", "t2"));
    loaded.rebuild_indexes();
    assert!(shared(&loaded, "t1", "t2"));
    assert!(shared(&loaded, "t3", "t4"));
}

/// The orchestrators make a service's tasks from the copies of its
/// template and labels the state holds from the service's write on, so
/// the tasks of a new service share them before any is stored; a new
/// template is a new copy, shared in turn.
#[test]
fn new_tasks_get_the_service_s_shared_template_and_labels() {
    use bollard::models::{TaskSpec, TaskSpecContainerSpec};
    use std::sync::Arc;
    let template = |image: &str| TaskSpec {
        container_spec: Some(TaskSpecContainerSpec {
            image: Some(image.into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut service = svc("a", "web");
    let spec = service.spec.as_mut().unwrap();
    spec.task_template = Some(template("web:1"));
    spec.labels = Some([("tier".to_string(), "front".to_string())].into());
    let mut s = State::default();
    s.apply(1, Op::CreateService(Box::new(service))).unwrap();
    let (t1, l1) = s.shared_for_new_task(&s.services["a"]);
    let (t2, l2) = s.shared_for_new_task(&s.services["a"]);
    let (t1, t2) = (t1.unwrap(), t2.unwrap());
    assert!(Arc::ptr_eq(&t1, &t2) && Arc::ptr_eq(&l1, &l2));
    assert_eq!(*t1, template("web:1"));
    assert_eq!(l1["tier"], "front");

    let mut service = s.services["a"].clone();
    let spec = service.spec.as_mut().unwrap();
    spec.task_template = Some(template("web:2"));
    spec.labels = None;
    s.apply(
        2,
        Op::UpdateService {
            expected: 1,
            service: Box::new(service),
        },
    )
    .unwrap();
    let (t3, l3) = s.shared_for_new_task(&s.services["a"]);
    let (t4, _) = s.shared_for_new_task(&s.services["a"]);
    let (t3, t4) = (t3.unwrap(), t4.unwrap());
    assert!(Arc::ptr_eq(&t3, &t4));
    assert_eq!(*t3, template("web:2"));
    assert!(l3.is_empty());

    // A task made from them is stored with them, not a copy.
    let mut t = task("t1", "a");
    t.spec = Some(t3.clone());
    t.runtime.service_labels = l3;
    s.apply(3, Op::CreateTask(Box::new(t))).unwrap();
    assert!(Arc::ptr_eq(s.tasks["t1"].spec.as_ref().unwrap(), &t3));
}

/// The indexes hold the tasks themselves: after every kind of change they
/// are the state's current copies, and a change made the state's only
/// holder does not copy the task.
#[test]
fn indexes_follow_every_change_of_a_task() {
    use std::sync::Arc;
    let mut s = State::default();
    s.apply(1, Op::CreateTask(Box::new(task("t", "a"))))
        .unwrap();
    let status = |state| TaskStatus {
        state: Some(state),
        ..Default::default()
    };
    let ops = [
        Op::AssignTask {
            id: "t".into(),
            node_id: "n1".into(),
            status: status(TaskState::ASSIGNED),
            generic: None,
        },
        Op::SetTaskStatus {
            id: "t".into(),
            status: status(TaskState::RUNNING),
        },
        Op::SetTaskDesired {
            id: "t".into(),
            desired: TaskState::SHUTDOWN,
            updated_at: "later".into(),
        },
    ];
    for (i, op) in ops.into_iter().enumerate() {
        let before = Arc::as_ptr(&s.tasks["t"]);
        s.apply(i as u64 + 2, op).unwrap();
        let now = &s.tasks["t"];
        assert_eq!(Arc::as_ptr(now), before, "changed in place, not copied");
        let of_service: Vec<&Task> = s.tasks_of_service("a").collect();
        let on_node: Vec<&Task> = s.tasks_on_node("n1").collect();
        assert!(std::ptr::eq(of_service[0], &**now));
        assert!(std::ptr::eq(on_node[0], &**now));
    }
    assert_eq!(
        s.tasks_on_node("n1").next().unwrap().desired(),
        TaskState::SHUTDOWN
    );
    s.apply(9, Op::RemoveTask { id: "t".into() }).unwrap();
    assert_eq!(s.tasks_of_service("a").count(), 0);
    assert_eq!(s.tasks_on_node("n1").count(), 0);
}

#[test]
fn a_service_s_name_is_free_again_once_it_is_removed_and_after_a_reload() {
    let mut s = State::default();
    s.apply(1, Op::CreateService(Box::new(svc("a", "web"))))
        .unwrap();
    assert!(s
        .apply(2, Op::CreateService(Box::new(svc("b", "web"))))
        .is_err());
    s.apply(3, Op::RemoveService { id: "a".into() }).unwrap();
    s.apply(4, Op::CreateService(Box::new(svc("b", "web"))))
        .unwrap();
    let mut loaded: State = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
    loaded.rebuild_indexes();
    assert!(loaded
        .apply(5, Op::CreateService(Box::new(svc("c", "web"))))
        .is_err());
    loaded
        .apply(6, Op::CreateService(Box::new(svc("c", "api"))))
        .unwrap();
}

/// `--allow-privileged` is checked as the op applies, so a create cannot
/// pass a `swarm update` that turned it off just before; a service that
/// was allowed keeps what it had (scale, rollback) but gets nothing more.
#[test]
fn privileged_services_need_the_swarm_to_allow_them_in_the_log_s_order() {
    use crate::host_options::{ALLOW_PRIVILEGED, DEVICES, PRIVILEGED};
    let with = |id: &str, labels: &[(&str, &str)], replicas: i64| {
        let mut s = svc(id, "web");
        let spec = s.spec.as_mut().unwrap();
        spec.task_template = Some(bollard::models::TaskSpec {
            container_spec: Some(bollard::models::TaskSpecContainerSpec {
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        });
        spec.mode = Some(bollard::models::ServiceSpecMode {
            replicated: Some(bollard::models::ServiceSpecModeReplicated {
                replicas: Some(replicas),
            }),
            ..Default::default()
        });
        s
    };
    let swarm = |allow: bool| bollard::models::Swarm {
        spec: Some(bollard::models::SwarmSpec {
            labels: Some([(ALLOW_PRIVILEGED.to_string(), allow.to_string())].into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut s = State {
        cluster: Some(swarm(false)),
        ..Default::default()
    };
    let err = s
        .apply(
            1,
            Op::CreateService(Box::new(with("a", &[(PRIVILEGED, "true")], 1))),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("privileged is not allowed"),
        "{err}"
    );
    assert!(s.services.is_empty());

    s.cluster = Some(swarm(true));
    s.apply(
        2,
        Op::CreateService(Box::new(with("a", &[(PRIVILEGED, "true")], 1))),
    )
    .unwrap();
    s.cluster = Some(swarm(false));
    let update = |s: &State, labels: &[(&str, &str)], replicas| Op::UpdateService {
        expected: version_of(&s.services["a"].version),
        service: Box::new(with("a", labels, replicas)),
    };
    let scale = update(&s, &[(PRIVILEGED, "true")], 3);
    s.apply(3, scale).expect("what it had: a scale is allowed");
    let more = update(&s, &[(PRIVILEGED, "true"), (DEVICES, "/dev/fuse")], 3);
    let err = s.apply(4, more).unwrap_err();
    assert!(err.to_string().contains("devices are not allowed"), "{err}");
}
