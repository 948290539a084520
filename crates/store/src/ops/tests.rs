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
