//! `docker events` against a manager: the swarm's events (services,
//! secrets, nodes) with Docker's actions and attributes, on the stream the
//! docker CLI reads, ended by `--until`.

mod common;

use std::process::{Command, Stdio};

use common::*;

#[test]
fn docker_events_show_the_swarm_s_objects_changing() {
    let d = Daemon::start(Executor::Process);
    d.init(&[]);
    let until = chrono::Utc::now().timestamp() + 5;
    let events = Command::new("docker")
        .args([
            "-H",
            &d.host(),
            "events",
            "--filter",
            "scope=swarm",
            "--until",
            &until.to_string(),
            "--format",
            "{{.Type}} {{.Action}} {{index .Actor.Attributes \"name\"}} {{index .Actor.Attributes \"replicas.new\"}}",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker events");
    std::thread::sleep(std::time::Duration::from_millis(500));
    d.docker(&with_forever(&[
        "service", "create", "-d", "--name", "evweb", "busybox",
    ]))
    .ok();
    d.docker(&["service", "scale", "-d", "evweb=3"]).ok();
    d.docker(&["service", "rm", "evweb"]).ok();
    let node = d.node_id();
    d.docker(&["node", "update", "--label-add", "zone=a", &node])
        .ok();
    let out = events.wait_with_output().expect("events end at --until");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    assert!(lines.contains(&"service create evweb"), "{text}");
    assert!(lines.contains(&"service update evweb 3"), "{text}");
    assert!(lines.contains(&"service remove evweb"), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("node update")), "{text}");
    // Only swarm events: no container or network ones.
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("service") || l.starts_with("node")),
        "{text}"
    );
}
