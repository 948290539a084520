//! SIGTERM stops the daemon in order, promptly and with exit code 0, even in
//! the middle of a burst of writes: every acknowledged write is there after
//! the restart, and the tasks it was running are adopted, not lost or
//! started twice.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;

/// What `flotilla daemon` promises for an orderly stop (its SHUTDOWN_BOUND).
const STOP_BOUND: Duration = Duration::from_secs(15);

fn spec(name: &str) -> String {
    json!({
        "Name": name,
        "Mode": {"Replicated": {"Replicas": 1}},
        "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Args": ["sleep", "1000"]}}
    })
    .to_string()
}

/// Running task id per service, for every service that has exactly one.
fn running_tasks(d: &Daemon) -> BTreeMap<String, Vec<String>> {
    let tasks = d.get_json("/tasks");
    let mut per_service: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in tasks.as_array().into_iter().flatten() {
        if task_state(t) == "running" {
            let service = t["ServiceID"].as_str().unwrap_or_default().to_string();
            per_service
                .entry(service)
                .or_default()
                .push(task_id(t).to_string());
        }
    }
    per_service
}

#[test]
fn sigterm_during_a_burst_of_writes_loses_nothing() {
    let mut d = Daemon::start(Executor::Process);
    d.init(&[]);
    // Tasks that run before the burst: they must be the same tasks after.
    let mut ids = BTreeMap::new();
    for i in 0..5 {
        let r = d.post("/services/create", &spec(&format!("before{i}")));
        assert_eq!(r.status, 201, "{}", r.body);
        ids.insert(r.json()["ID"].as_str().unwrap().to_string(), ());
    }
    let before = wait_for(Duration::from_secs(30), "5 running tasks", || {
        let running = running_tasks(&d);
        if running.len() == 5 && running.values().all(|t| t.len() == 1) {
            Ok(running)
        } else {
            Err(format!("{running:?}"))
        }
    });

    // Four clients create services as fast as they are acknowledged.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let ended = Arc::new(AtomicBool::new(false));
    let socket = d.socket();
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (acked, ended, socket) = (acked.clone(), ended.clone(), socket.clone());
            std::thread::spawn(move || {
                let mut sent = 0;
                for i in 0.. {
                    if ended.load(Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("burst{c}x{i}");
                    let body = spec(&name);
                    sent += 1;
                    match common::http::request(&socket, "POST", "/services/create", Some(&body)) {
                        Ok(r) if r.status == 201 => {
                            let id = r.json()["ID"].as_str().unwrap().to_string();
                            acked.lock().unwrap().insert((name, id));
                        }
                        // Refused while stopping, or the connection closed:
                        // not acknowledged, so either outcome is allowed.
                        Ok(_) | Err(_) => {}
                    }
                }
                sent
            })
        })
        .collect();
    wait_until(Duration::from_secs(30), "20 acknowledged creates", || {
        acked.lock().unwrap().len() >= 20
    });
    let (code, took) = d.terminate(STOP_BOUND);
    let during = acked.lock().unwrap().len();
    ended.store(true, Ordering::Relaxed);
    let sent: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let acked = acked.lock().unwrap().clone();
    println!(
        "SIGTERM after {during} acknowledged creates; stopped in {took:?} with {code:?}; \
         {} acknowledged of {sent} sent",
        acked.len()
    );
    assert_eq!(code, Some(0), "exit code after SIGTERM:\n{}", d.log());
    assert!(
        d.log().contains("SIGTERM: stopping") && d.log().contains("stopped"),
        "{}",
        d.log()
    );

    d.start_again();
    // Every acknowledged create is there, with the id it was given.
    for (name, id) in &acked {
        let r = d.get(&format!("/services/{name}"));
        assert_eq!(
            r.status, 200,
            "acknowledged service {name} lost: {}",
            r.body
        );
        assert_eq!(r.json()["ID"], id.as_str(), "{name}");
    }
    // The tasks running before are the ones running after: adopted, not
    // replaced; and every service runs exactly one task.
    let services = d.get_json("/services").as_array().unwrap().len();
    let after = wait_for(
        Duration::from_secs(60),
        "one running task per service",
        || {
            let running = running_tasks(&d);
            if running.len() == services && running.values().all(|t| t.len() == 1) {
                Ok(running)
            } else {
                let all = d.get_json("/services");
                let idle: Vec<String> = all
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["ID"].as_str())
                    .filter(|id| running.get(*id).is_none_or(|t| t.len() != 1))
                    .map(|id| format!("{id}: {}", summary(&d.tasks(id))))
                    .collect();
                Err(format!(
                    "{} of {services} services running; not: {idle:?}",
                    running.len()
                ))
            }
        },
    );
    for (service, tasks) in &before {
        assert_eq!(after.get(service), Some(tasks), "service {service}'s task");
    }
    let doubled: Vec<_> = after.iter().filter(|(_, t)| t.len() > 1).collect();
    assert!(doubled.is_empty(), "{doubled:?}");
}
