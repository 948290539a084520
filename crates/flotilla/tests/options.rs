//! The container options Docker's swarm refuses or ignores (privileged,
//! devices, security_opt, shm_size) and the ones it has (cap_add, sysctls,
//! ulimits, init), end to end on a one-node namespace cluster with the
//! docker executor: flags and compose keys to the stored spec, to the
//! task's container as its node's dockerd holds it. Privileged and devices
//! are refused until `swarm update --allow-privileged`; then they run.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::{wait_timed as wait_until, Cluster};
use serde_json::Value;

const PREFIX: &str = "fopt";

fn socket() -> String {
    format!("unix:///run/flotilla-cluster/{PREFIX}/manager/flotilla.sock")
}

/// `PROGRAM -H socket ARGS` in `dir`: (success, stdout+stderr).
fn cli(program: &str, dir: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(program)
        .current_dir(dir)
        .arg("-H")
        .arg(socket())
        .args(args)
        .output()
        .expect("run the CLI");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[track_caller]
fn ok(program: &str, dir: &Path, args: &[&str]) -> String {
    let (ok, out) = cli(program, dir, args);
    assert!(ok, "{program} {args:?}: {out}");
    out
}

#[track_caller]
fn refused(program: &str, dir: &Path, args: &[&str], service: &str, what: &str) {
    let (ok, out) = cli(program, dir, args);
    assert!(!ok, "{program} {args:?} should be refused: {out}");
    let want = format!(
        "service \"{service}\": {what} not allowed on this swarm (flotilla swarm update --allow-privileged)"
    );
    assert!(out.contains(&want), "{program} {args:?}: {out}");
}

/// The HostConfig of the running container of `service` on the node's
/// own dockerd, once there is one.
fn host_config(c: &Cluster, service: &str) -> (String, Value) {
    let mut found = None;
    wait_until(
        Duration::from_secs(60),
        &format!("{service} running"),
        || {
            found = c.container_on("manager", service);
            found.is_some()
        },
    );
    let id = found.unwrap_or_default();
    (id.clone(), inspect(c, &id))
}

/// The HostConfig of the latest container made for `service`, running or
/// not: a privileged one cannot start where the engine's capability
/// bounding set lacks one (on this machine, CAP_SYS_RESOURCE: `docker run
/// --privileged` fails there too), yet the engine holds what it was asked.
fn created_host_config(c: &Cluster, service: &str) -> Value {
    let label = format!("label=com.docker.swarm.service.name={service}");
    let mut found = String::new();
    wait_until(
        Duration::from_secs(60),
        &format!("a container of {service}"),
        || {
            let (_, text) = c.docker_on("manager", &["ps", "-a", "-q", "--filter", &label]);
            found = text.lines().next().unwrap_or_default().to_string();
            !found.is_empty()
        },
    );
    inspect(c, &found)
}

fn inspect(c: &Cluster, id: &str) -> Value {
    let (good, text) = c.docker_on("manager", &["inspect", id]);
    assert!(good, "inspect {id}: {text}");
    let inspected: Value = serde_json::from_str(&text).expect("docker inspect JSON");
    inspected[0]["HostConfig"].clone()
}

const COMPOSE: &str = r#"
services:
  app:
    image: flotilla-busybox
    command: ["sleep", "3600"]
    privileged: true
  opts:
    image: flotilla-busybox
    command: ["sleep", "3600"]
    devices: ["/dev/null:/dev/mydev"]
    security_opt: ["no-new-privileges:true"]
    cap_add: [SYS_PTRACE]
    sysctls: {net.core.somaxconn: 1024}
    ulimits: {nofile: {soft: 1024, hard: 2048}}
    init: true
    shm_size: 64m
"#;

#[test]
fn options_swarm_refuses_reach_the_container() {
    let c = Cluster::up(PREFIX, "10.213.87", 1, 0, "docker");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("stack.yml"), COMPOSE).expect("write the compose file");
    std::fs::write(
        d.join("no-mkdir.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .expect("write the seccomp profile");
    let flotilla = common::FLOTILLA;

    // Not allowed yet: by flag, by the docker CLI's container label, by
    // the stack's compose keys.
    let priv_args = [
        "service",
        "create",
        "-d",
        "--name",
        "priv",
        "--privileged",
        "flotilla-busybox",
        "sleep",
        "3600",
    ];
    refused(flotilla, d, &priv_args, "priv", "privileged is");
    refused(
        "docker",
        d,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "dev",
            "--container-label",
            "com.flotilla.devices=/dev/null:/dev/mydev",
            "flotilla-busybox",
            "sleep",
            "3600",
        ],
        "dev",
        "devices is",
    );
    refused(
        flotilla,
        d,
        &["stack", "deploy", "-c", "stack.yml", "fl"],
        "fl_app",
        "privileged is",
    );

    // On the wire: Docker's 400 with the message, whatever the client.
    let answer = common::http::request(
        Path::new(&format!("/run/flotilla-cluster/{PREFIX}/manager/flotilla.sock")),
        "POST",
        "/v1.41/services/create",
        Some(r#"{"Name": "raw", "TaskTemplate": {"ContainerSpec": {"Image": "flotilla-busybox", "Labels": {"com.flotilla.privileged": "true"}}}}"#),
    )
    .expect("POST /services/create");
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(
        answer.message(),
        "service \"raw\": privileged is not allowed on this swarm (flotilla swarm update --allow-privileged)"
    );

    assert!(ok(flotilla, d, &["swarm", "update", "--allow-privileged"]).contains("Swarm updated."));
    let labels = ok(
        "docker",
        d,
        &["info", "--format", "{{json .Swarm.Cluster.Spec.Labels}}"],
    );
    assert!(
        labels.contains(r#""com.flotilla.allow-privileged":"true""#),
        "{labels}"
    );

    // Allowed: the same requests succeed.
    ok(flotilla, d, &priv_args);
    let device = if Path::new("/dev/fuse").exists() {
        "/dev/fuse"
    } else {
        "/dev/null:/dev/fuse"
    };
    ok(
        flotilla,
        d,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "opts",
            "--device",
            device,
            "--device",
            "/dev/null:/dev/mydev",
            "--cap-add",
            "SYS_PTRACE",
            "--cap-drop",
            "MKNOD",
            "--sysctl",
            "net.core.somaxconn=1024",
            "--ulimit",
            "nofile=1024:2048",
            "--init",
            "--shm-size",
            "64m",
            "--security-opt",
            "no-new-privileges",
            "flotilla-busybox",
            "sleep",
            "3600",
        ],
    );
    let docker_stack = ok("docker", d, &["stack", "deploy", "-c", "stack.yml", "dk"]);
    let flotilla_stack = ok(flotilla, d, &["stack", "deploy", "-c", "stack.yml", "fl"]);
    assert!(
        !flotilla_stack.contains("Ignoring unsupported options"),
        "{flotilla_stack}"
    );

    let host = created_host_config(&c, "priv");
    assert_eq!(host["Privileged"], true, "{host}");

    let (opts, host) = host_config(&c, "opts");
    assert_eq!(host["Privileged"], false, "{host}");
    let devices: Vec<(String, String)> = host["Devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["PathOnHost"].as_str().unwrap_or_default().to_string(),
                d["PathInContainer"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert!(
        devices.contains(&("/dev/null".into(), "/dev/mydev".into())),
        "{host}"
    );
    assert_eq!(
        host["CapAdd"],
        serde_json::json!(["CAP_SYS_PTRACE"]),
        "{host}"
    );
    assert_eq!(host["CapDrop"], serde_json::json!(["CAP_MKNOD"]), "{host}");
    assert_eq!(host["Sysctls"]["net.core.somaxconn"], "1024", "{host}");
    assert_eq!(
        host["Ulimits"],
        serde_json::json!([{"Name": "nofile", "Soft": 1024, "Hard": 2048}]),
        "{host}"
    );
    assert_eq!(host["Init"], true, "{host}");
    assert_eq!(host["ShmSize"], 64 * 1024 * 1024, "{host}");
    assert_eq!(
        host["SecurityOpt"],
        serde_json::json!(["no-new-privileges=true"]),
        "{host}"
    );
    // Inside the task: the mapped devices, and the limits in force.
    let (good, inside) = c.sh_in(
        "manager",
        &opts,
        // PID 1 (the init), not the exec'd shell: what the task started with.
        "ls -l /dev/mydev; ls -l /dev/fuse; grep 'Max open files' /proc/1/limits; cat /proc/sys/net/core/somaxconn; grep NoNewPrivs /proc/1/status; cat /proc/1/comm",
    );
    assert!(good, "{inside}");
    let lines: Vec<&str> = inside.lines().collect();
    assert!(
        lines[0].starts_with("crw") && lines[0].contains("1,") && lines[0].ends_with("/dev/mydev"),
        "{inside}"
    );
    assert!(
        lines[1].starts_with("crw") && lines[1].ends_with("/dev/fuse"),
        "{inside}"
    );
    assert!(
        lines[2]
            .split_whitespace()
            .eq(["Max", "open", "files", "1024", "2048", "files"]),
        "{inside}"
    );
    assert_eq!(lines[3], "1024", "{inside}");
    assert!(
        lines[4].split_whitespace().eq(["NoNewPrivs:", "1"]),
        "{inside}"
    );
    assert_eq!(lines[5], "docker-init", "{inside}");

    // The service decodes for the docker CLI, with the options it keeps.
    let inspected = ok(
        "docker",
        d,
        &[
            "service",
            "inspect",
            "--format",
            "{{json .Spec.TaskTemplate.ContainerSpec}}",
            "opts",
        ],
    );
    let spec: Value = serde_json::from_str(&inspected).expect("ContainerSpec JSON");
    assert_eq!(
        spec["Labels"]["com.flotilla.shm-size"], "67108864",
        "{spec}"
    );
    assert_eq!(spec["Privileges"]["NoNewPrivileges"], true, "{spec}");

    // A change of an option rolls the task: a new container with it.
    ok(
        flotilla,
        d,
        &[
            "service",
            "update",
            "--shm-size",
            "32m",
            "--device-rm",
            "/dev/mydev",
            "--security-opt",
            "seccomp=no-mkdir.json",
            "opts",
        ],
    );
    let mut rolled = None;
    wait_until(Duration::from_secs(60), "opts rolled", || {
        rolled = c.container_on("manager", "opts").filter(|id| *id != opts);
        rolled.is_some()
    });
    let rolled = rolled.unwrap_or_default();
    let rolled_id = rolled.as_str();
    let host = inspect(&c, rolled_id);
    assert_eq!(host["ShmSize"], 32 * 1024 * 1024, "{host}");
    assert!(
        !host["Devices"].to_string().contains("/dev/mydev"),
        "{host}"
    );
    // The profile, read by the client, confines the task.
    let security = host["SecurityOpt"].to_string();
    assert!(
        security.contains("seccomp={") && security.contains("no-new-privileges=true"),
        "{host}"
    );
    let (_, inside) = c.sh_in("manager", rolled_id, "mkdir /tmp/x; echo status=$?");
    assert!(
        inside.contains("Operation not permitted") && inside.contains("status=1"),
        "{inside}"
    );

    // The docker CLI's stack sends what the swarm spec has (and warns
    // about the rest, as docker does); flotilla's sends everything.
    assert!(
        docker_stack.contains("Ignoring unsupported options"),
        "{docker_stack}"
    );
    let (_, host) = host_config(&c, "dk_app");
    assert_eq!(host["Privileged"], false, "{host}");
    let (_, host) = host_config(&c, "dk_opts");
    assert_eq!(
        host["CapAdd"],
        serde_json::json!(["CAP_SYS_PTRACE"]),
        "{host}"
    );
    assert_eq!(host["Sysctls"]["net.core.somaxconn"], "1024", "{host}");
    assert_eq!(host["Init"], true, "{host}");
    assert_eq!(host["Ulimits"][0]["Soft"], 1024, "{host}");
    assert!(
        host["Devices"].as_array().is_none_or(|d| d.is_empty()),
        "{host}"
    );
    let host = created_host_config(&c, "fl_app");
    assert_eq!(host["Privileged"], true, "{host}");
    let (fl_opts, host) = host_config(&c, "fl_opts");
    assert_eq!(host["ShmSize"], 64 * 1024 * 1024, "{host}");
    assert_eq!(
        host["SecurityOpt"],
        serde_json::json!(["no-new-privileges=true"]),
        "{host}"
    );
    assert_eq!(
        host["CapAdd"],
        serde_json::json!(["CAP_SYS_PTRACE"]),
        "{host}"
    );
    assert_eq!(host["Init"], true, "{host}");
    let (good, inside) = c.sh_in("manager", &fl_opts, "ls -l /dev/mydev");
    assert!(good && inside.starts_with("crw"), "{inside}");
}
