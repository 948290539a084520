//! Published ports on one node: the mesh answers on the published port for
//! the docker and process executors, the ingress port is the cluster's to
//! give (Docker's conflict message, 30000 up when left open), and removing
//! the port closes it. These daemons share the machine's network namespace
//! (published ports only); VIPs and DNS are tested in tests/mesh.rs.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// The body of `GET /` on 127.0.0.1:port, if it answers 200.
fn get(port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.contains(" 200 ") => Ok(body.trim().to_string()),
        _ => Err(format!("answered {text:?}")),
    }
}

#[test]
fn slow_docker_published_port_answers_through_the_mesh() {
    build_images();
    let d = Daemon::start(Executor::Docker);
    d.init(&[]);
    d.flotilla(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "2",
        "-p",
        "18181:8080",
        "flotilla-hello",
    ])
    .ok();
    let hosts = wait_for(
        Duration::from_secs(60),
        "both tasks answering on 18181",
        || {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..10 {
                seen.insert(get(18181)?);
            }
            if seen.len() == 2 {
                Ok(seen)
            } else {
                Err(format!("{seen:?} {}", summary(&d.tasks("web"))))
            }
        },
    );
    assert!(hosts.iter().all(|h| h.len() == 12), "{hosts:?}");

    let ls = d.flotilla(&["service", "ls"]).ok();
    assert!(ls.stdout.contains("*:18181->8080/tcp"), "{}", ls.stdout);
    let pretty = d.flotilla(&["service", "inspect", "--pretty", "web"]).ok();
    assert!(
        pretty.stdout.contains(
            "Ports:\n PublishedPort = 18181\n  Protocol = tcp\n  TargetPort = 8080\n  PublishMode = ingress"
        ),
        "{}",
        pretty.stdout
    );
    // The executor's own host ports are the mesh's business, not the API's.
    let ps = d.flotilla(&["service", "ps", "web"]).ok();
    assert!(!ps.stdout.contains("->"), "{}", ps.stdout);

    // The port belongs to web: another service cannot have it.
    let out = d
        .flotilla(&[
            "service", "create", "-d", "--name", "other", "-p", "18181:80", IMAGE,
        ])
        .failed();
    assert!(
        out.stderr
            .contains("port '18181' is already in use by service 'web' (")
            && out.stderr.contains(") as an ingress port"),
        "{}",
        out.stderr
    );
    // Dropping the port closes it on the node.
    d.flotilla(&["service", "update", "-d", "--publish-rm", "8080", "web"])
        .ok();
    wait_until(Duration::from_secs(10), "18181 closed", || {
        get(18181).is_err()
    });
}

#[test]
fn ingress_ports_are_assigned_and_checked() {
    let d = Daemon::start(Executor::Process);
    d.init(&[]);
    d.flotilla(&[
        "service", "create", "-d", "--name", "a", "-p", "80", IMAGE, "sleep", "1000",
    ])
    .ok();
    let port = |name: &str| {
        d.flotilla(&[
            "service",
            "inspect",
            "--format",
            "{{range .Endpoint.Ports}}{{.PublishedPort}}{{end}}",
            name,
        ])
        .ok()
        .stdout
        .trim()
        .to_string()
    };
    assert_eq!(port("a"), "30000");
    d.flotilla(&[
        "service", "create", "-d", "--name", "b", "-p", "80", IMAGE, "sleep", "1000",
    ])
    .ok();
    assert_eq!(port("b"), "30001");
    let vip = d
        .flotilla(&[
            "service",
            "inspect",
            "--format",
            "{{range .Endpoint.VirtualIPs}}{{.Addr}}{{end}}",
            "a",
        ])
        .ok();
    assert!(vip.stdout.trim().starts_with("198.18."), "{}", vip.stdout);

    let out = d
        .flotilla(&[
            "service",
            "create",
            "--name",
            "rr",
            "--endpoint-mode",
            "dnsrr",
            "-p",
            "8080:80",
            IMAGE,
        ])
        .failed();
    assert!(
        out.stderr
            .contains("port published with ingress mode can't be used with dnsrr mode"),
        "{}",
        out.stderr
    );
    let out = d
        .flotilla(&[
            "service", "create", "--name", "dup", "-p", "8080:80", "-p", "8080:81", IMAGE,
        ])
        .failed();
    assert!(
        out.stderr.contains("duplicate published ports provided"),
        "{}",
        out.stderr
    );
}

#[test]
fn process_task_gets_its_port_and_the_mesh_reaches_it() {
    let d = Daemon::start(Executor::Process);
    d.init(&[]);
    // Readable by the task, which runs as nobody (the data dir is private).
    let www = tempfile::tempdir().unwrap();
    let dir = www.path().to_path_buf();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("index.html"), "from a process\n").unwrap();
    let script = format!("exec busybox httpd -f -p $PORT_9000 -h {}", dir.display());
    d.flotilla(&[
        "service",
        "create",
        "-d",
        "--name",
        "pweb",
        "-p",
        "18183:9000",
        IMAGE,
        "sh",
        "-c",
        &script,
    ])
    .ok();
    let body = wait_for(
        Duration::from_secs(30),
        "the process answering on 18183",
        || get(18183).map_err(|e| format!("{e}; {}", summary(&d.tasks("pweb")))),
    );
    assert_eq!(body, "from a process");
}
