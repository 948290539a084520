//! How many bytes of heap the applied state holds per task, by counting
//! every allocation: 1,000 services of 100 replicas (the scale benchmark's
//! shape: two service labels, a one-image template) created, assigned to
//! 1,000 nodes and reported RUNNING through the same ops the manager
//! commits. Prints the figures; asserts nothing.
//!
//! `cargo run --release -p flotilla-store --example task_bytes`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use flotilla_store::models::{
    NodeDescription, ObjectVersion, ServiceSpec, Task, TaskSpec, TaskSpecContainerSpec, TaskState,
    TaskStatus,
};
use flotilla_store::ops::Op;
use flotilla_store::state::State;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - layout.size() as isize, Ordering::Relaxed);
        System.realloc(ptr, layout, new)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const NODES: usize = 1_000;
const SERVICES: usize = 1_000;
const REPLICAS: usize = 100;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn id(kind: &str, n: usize) -> String {
    format!("{kind}{n:0>23}")
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn main() {
    sizes();
    let mut state = State::default();
    let mut index = 0u64;
    let mut apply = |state: &mut State, op: Op| {
        index += 1;
        state.apply(index, op).expect("op applies");
    };
    for n in 0..NODES {
        let node = flotilla_store::models::Node {
            id: Some(id("n", n)),
            version: Some(ObjectVersion { index: Some(1) }),
            description: Some(NodeDescription {
                hostname: Some(format!("sim-{n}")),
                ..Default::default()
            }),
            ..Default::default()
        };
        apply(&mut state, Op::PutNode(Box::new(node)));
    }
    let before = live();
    let template = TaskSpec {
        container_spec: Some(TaskSpecContainerSpec {
            image: Some("flotilla-sim:scale".into()),
            command: Some(vec!["sleep".into(), "infinity".into()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut task_ids = Vec::new();
    for s in 0..SERVICES {
        let service_id = id("s", s);
        let spec = ServiceSpec {
            name: Some(format!("svc-{s}")),
            labels: Some(
                [
                    ("com.flotilla.bench".to_string(), "scale".to_string()),
                    ("generation".to_string(), "1".to_string()),
                ]
                .into(),
            ),
            task_template: Some(template.clone()),
            ..Default::default()
        };
        let service = flotilla_store::models::Service {
            id: Some(service_id.clone()),
            spec: Some(spec),
            ..Default::default()
        };
        apply(&mut state, Op::CreateService(Box::new(service.clone())));
        for slot in 1..=REPLICAS {
            let at = now();
            let task = Task {
                id: Some(id("t", s * REPLICAS + slot)),
                created_at: Some(at.clone()),
                updated_at: Some(at.clone()),
                labels: None,
                spec: Some(std::sync::Arc::new(template.clone())),
                service_id: Some(service_id.clone()),
                slot: Some(slot as i64),
                status: Some(TaskStatus {
                    timestamp: Some(at),
                    state: Some(TaskState::NEW),
                    message: Some("created".into()),
                    ..Default::default()
                }),
                desired_state: Some(TaskState::RUNNING),
                runtime: flotilla_store::models::TaskRuntime {
                    service_name: Some(format!("svc-{s}")),
                    service_labels: std::sync::Arc::new(
                        service
                            .spec
                            .as_ref()
                            .unwrap()
                            .labels
                            .clone()
                            .unwrap()
                            .into_iter()
                            .collect(),
                    ),
                    ..Default::default()
                },
                ..Default::default()
            };
            task_ids.push(task.id.clone().unwrap());
            apply(&mut state, Op::CreateTask(Box::new(task)));
        }
    }
    let created = live();
    for (n, task) in task_ids.iter().enumerate() {
        apply(
            &mut state,
            Op::AssignTask {
                id: task.clone(),
                node_id: id("n", n % NODES),
                status: TaskStatus {
                    timestamp: Some(now()),
                    state: Some(TaskState::ASSIGNED),
                    message: Some("scheduler assigned task to node".into()),
                    ..Default::default()
                },
                generic: None,
            },
        );
    }
    let assigned = live();
    for task in &task_ids {
        for state_now in [
            TaskState::PREPARING,
            TaskState::STARTING,
            TaskState::RUNNING,
        ] {
            apply(
                &mut state,
                Op::SetTaskStatus {
                    id: task.clone(),
                    status: TaskStatus {
                        timestamp: Some(now()),
                        state: Some(state_now),
                        message: Some("started".into()),
                        ..Default::default()
                    },
                },
            );
        }
    }
    let running = live();
    let tasks = (SERVICES * REPLICAS) as f64;
    let per = |bytes: isize| (bytes - before) as f64 / tasks;
    println!(
        "size_of::<Task>() = {} B, size_of::<Op>() = {} B",
        std::mem::size_of::<Task>(),
        std::mem::size_of::<Op>()
    );
    println!("heap per task, created:  {:.0} B", per(created));
    println!("heap per task, assigned: {:.0} B", per(assigned));
    println!("heap per task, running:  {:.0} B", per(running));
    let changes = live();
    drop(state);
    println!(
        "state dropped: {:.0} B per task were the state's",
        (changes - live()) as f64 / tasks
    );
}

#[allow(dead_code)]
fn sizes() {
    use flotilla_store::models::*;
    println!(
        "TaskStatus {} TaskRuntime {} GenericResources {} ObjectVersion {} Labels {} ContainerStatus {}",
        std::mem::size_of::<Option<TaskStatus>>(),
        std::mem::size_of::<TaskRuntime>(),
        std::mem::size_of::<Option<GenericResources>>(),
        std::mem::size_of::<Option<ObjectVersion>>(),
        std::mem::size_of::<Option<std::collections::HashMap<String, String>>>(),
        std::mem::size_of::<Option<ContainerStatus>>(),
    );
}
