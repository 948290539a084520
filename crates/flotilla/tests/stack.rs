//! `docker stack deploy` of a realistic application on the namespace
//! cluster (a manager and two workers, each with its own dockerd), with
//! the real docker CLI, then flotilla's own: several services on the
//! default and named networks, environment and env_file, a named volume
//! and a bind mount, a secret and a config, a healthcheck, deploy
//! (replicas, global, a job, resources, placement preferences, update
//! and restart policies, endpoint_mode, labels), ports in both syntaxes.
//! Then a change re-deployed, `--prune`, and `stack rm` leaving nothing.
//! One cluster for every check.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::cluster::{wait_timed as wait_until, Cluster};

const PREFIX: &str = "ftstk";

fn socket() -> String {
    format!("unix:///run/flotilla-cluster/{PREFIX}/manager/flotilla.sock")
}

/// `docker ARGS` (or `flotilla ARGS`) in `dir`: (success, stdout, stderr).
fn cli(program: &str, dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(program)
        .current_dir(dir)
        .arg("-H")
        .arg(socket())
        .args(args)
        .env("FLOTILLA_BIN", common::FLOTILLA)
        .output()
        .expect("run the CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn ok(program: &str, dir: &Path, args: &[&str]) -> String {
    let (ok, out, err) = cli(program, dir, args);
    assert!(ok, "{program} {args:?}: {out}{err}");
    out
}

const COMPOSE: &str = r#"version: "3.8"
services:
  web:
    image: flotilla-hello
    ports:
      - "18080:8080"
      - target: 8080
        published: 18081
        protocol: tcp
        mode: ingress
    networks: [front]
    environment:
      GREETING: hello
    env_file: web.env
    deploy:
      replicas: 2
      placement:
        preferences:
          - spread: node.labels.zone
      update_config: {parallelism: 1, delay: 0s}
      resources:
        limits: {memory: 64M}
        reservations: {memory: 8M}
      labels: {tier: web}
  api:
    image: flotilla-busybox
    command: ["sh", "-c", "while true; do printf 'HTTP/1.0 200 OK\r\n\r\napi:%s\n' \"$$(cat /run/secrets/api_key)\" | nc -l -p 9000; done"]
    networks: [front, back]
    secrets: [api_key]
    configs:
      - source: api_conf
        target: /etc/api.conf
    healthcheck:
      test: ["CMD", "true"]
      interval: 1s
    volumes:
      - apidata:/data
      - ./static:/static:ro
    deploy:
      mode: global
      endpoint_mode: dnsrr
      restart_policy: {condition: on-failure}
  migrate:
    image: flotilla-busybox
    command: ["sh", "-c", "echo migrated"]
    networks: [back]
    deploy:
      mode: replicated-job
networks:
  front: {}
  back: {internal: true}
volumes:
  apidata: {}
secrets:
  api_key:
    file: ./api_key.txt
configs:
  api_conf:
    file: ./api.conf
"#;

fn services(dir: &Path) -> BTreeSet<String> {
    ok(
        "docker",
        dir,
        &[
            "stack",
            "services",
            "--format",
            "{{.Name}} {{.Replicas}}",
            "app",
        ],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// The IDs of a service's tasks that should run.
fn live_tasks(dir: &Path, service: &str) -> BTreeSet<String> {
    ok(
        "docker",
        dir,
        &[
            "service",
            "ps",
            "-q",
            "--filter",
            "desired-state=running",
            service,
        ],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn slow_stack_deploy_update_prune_and_rm() {
    let c = Cluster::up(PREFIX, "10.213.51", 1, 2, "docker");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("stack.yml"), COMPOSE).expect("write");
    std::fs::write(d.join("web.env"), "MODE=prod\n").expect("write");
    std::fs::write(d.join("api_key.txt"), "k3y").expect("write");
    std::fs::write(d.join("api.conf"), "port=9000\n").expect("write");
    std::fs::create_dir(d.join("static")).expect("mkdir");
    std::fs::write(d.join("static/index.html"), "static\n").expect("write");
    for (node, zone) in [("worker01", "a"), ("worker02", "b")] {
        c.ok(
            "manager",
            &[
                "node",
                "update",
                "--label-add",
                &format!("zone={zone}"),
                node,
            ],
        );
    }

    // Bad input first: nothing of the stack may exist after it.
    std::fs::write(d.join("bad.yml"), "services: [web\n").expect("write");
    let (good, _, err) = cli("docker", d, &["stack", "deploy", "-c", "bad.yml", "app"]);
    assert!(!good && !err.is_empty(), "{err}");
    std::fs::write(
        d.join("external.yml"),
        "version: \"3.8\"\nservices:\n  x:\n    image: flotilla-busybox\n    networks: [nope]\nnetworks:\n  nope:\n    external: true\n",
    )
    .expect("write");
    let (good, out, err) = cli(
        "docker",
        d,
        &["stack", "deploy", "-c", "external.yml", "app"],
    );
    assert!(!good && (out + &err).contains("nope"), "{err}");
    let (_, ls, _) = cli("docker", d, &["stack", "ls"]);
    assert!(!ls.contains("app"), "half-deployed: {ls}");

    // Deploy, converge, reach.
    ok("docker", d, &["stack", "deploy", "-c", "stack.yml", "app"]);
    let want: BTreeSet<String> = [
        "app_api 3/3",
        "app_migrate 0/1 (1/1 completed)",
        "app_web 2/2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    wait_until(Duration::from_secs(90), "the stack converged", || {
        services(d) == want
    });
    let page = c.run(&[
        "exec",
        "--prefix",
        PREFIX,
        "worker02",
        "curl",
        "-sf",
        "http://127.0.0.1:18081/",
    ]);
    assert!(page.status.success() && !page.stdout.is_empty(), "{page:?}");
    // From inside an api task: the other tasks by name (dnsrr), each
    // answering with the secret it was given; the config and bind mount.
    let api = c.run(&[
        "docker",
        "--prefix",
        PREFIX,
        "worker01",
        "ps",
        "-q",
        "--filter",
        "label=com.docker.swarm.service.name=app_api",
    ]);
    let api = String::from_utf8_lossy(&api.stdout).trim().to_string();
    assert!(!api.is_empty());
    let seen = c.run(&[
        "docker",
        "--prefix",
        PREFIX,
        "worker01",
        "exec",
        &api,
        "sh",
        "-c",
        "wget -qO- http://app_api:9000/; cat /etc/api.conf /static/index.html",
    ]);
    let seen = String::from_utf8_lossy(&seen.stdout).into_owned();
    assert!(seen.contains("api:k3y"), "{seen}");
    assert!(
        seen.contains("port=9000") && seen.contains("static"),
        "{seen}"
    );
    let (_, ps, _) = cli(
        "docker",
        d,
        &["stack", "ps", "--format", "{{.Error}}", "app"],
    );
    assert!(ps.lines().all(|l| l.trim().is_empty()), "errors: {ps}");

    // Flotilla's own CLI reads the same stack as docker's.
    for args in [&["stack", "ls"][..], &["stack", "services", "app"][..]] {
        assert_eq!(
            ok(common::FLOTILLA, d, args),
            ok("docker", d, args),
            "{args:?}"
        );
    }

    // One service changed: only its tasks are replaced.
    let api_before = live_tasks(d, "app_api");
    let web_before = live_tasks(d, "app_web");
    std::fs::write(
        d.join("stack.yml"),
        COMPOSE.replace("GREETING: hello", "GREETING: hi"),
    )
    .expect("write");
    ok("docker", d, &["stack", "deploy", "-c", "stack.yml", "app"]);
    wait_until(Duration::from_secs(60), "web replaced", || {
        let now = live_tasks(d, "app_web");
        now.len() == 2 && now.is_disjoint(&web_before)
    });
    assert_eq!(live_tasks(d, "app_api"), api_before, "api untouched");

    // --prune: the job is no longer in the file.
    let without_job = {
        let start = COMPOSE.find("  migrate:").expect("migrate");
        let end = COMPOSE.find("networks:\n  front").expect("networks");
        format!("{}{}", &COMPOSE[..start], &COMPOSE[end..])
            .replace("GREETING: hello", "GREETING: hi")
    };
    std::fs::write(d.join("stack.yml"), without_job).expect("write");
    ok(
        "docker",
        d,
        &["stack", "deploy", "--prune", "-c", "stack.yml", "app"],
    );
    let names: BTreeSet<String> = ok(
        "docker",
        d,
        &["stack", "services", "--format", "{{.Name}}", "app"],
    )
    .lines()
    .map(str::to_string)
    .collect();
    assert_eq!(
        names,
        ["app_api", "app_web"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );

    // stack rm: services, networks, secrets and configs of the stack go,
    // and their containers with them.
    ok("docker", d, &["stack", "rm", "app"]);
    wait_until(Duration::from_secs(60), "nothing of the stack left", || {
        let left = |args: &[&str]| ok("docker", d, args).lines().any(|l| l.contains("app_"));
        let containers = ["manager", "worker01", "worker02"].iter().any(|h| {
            let ps = c.run(&[
                "docker",
                "--prefix",
                PREFIX,
                h,
                "ps",
                "-aq",
                "--filter",
                "label=com.docker.stack.namespace=app",
            ]);
            !String::from_utf8_lossy(&ps.stdout).trim().is_empty()
        });
        !left(&["service", "ls"])
            && !left(&["network", "ls", "--filter", "scope=swarm"])
            && !left(&["secret", "ls"])
            && !left(&["config", "ls"])
            && !containers
    });

    // Flotilla's CLI deploys too, and honours depends_on (docker ignores
    // it): web is created only once db is healthy and the migration job
    // has completed, which the objects' timestamps show.
    std::fs::write(d.join("order.yml"), ORDERED).expect("write");
    ok(
        common::FLOTILLA,
        d,
        &["stack", "deploy", "-c", "order.yml", "ord"],
    );
    let time = |args: &[&str]| {
        let text = ok("docker", d, args);
        chrono::DateTime::parse_from_rfc3339(text.trim().trim_matches('"'))
            .unwrap_or_else(|e| panic!("{args:?}: {text:?}: {e}"))
    };
    let db_task = ok("docker", d, &["service", "ps", "-q", "ord_db"]);
    let db_task = db_task.lines().next().expect("a db task").to_string();
    let job_task = ok("docker", d, &["service", "ps", "-q", "ord_migrate"]);
    let job_task = job_task.lines().next().expect("a job task").to_string();
    let db_running = time(&[
        "inspect",
        "--format",
        "{{json .Status.Timestamp}}",
        &db_task,
    ]);
    let job_done = time(&[
        "inspect",
        "--format",
        "{{json .Status.Timestamp}}",
        &job_task,
    ]);
    let web_created = time(&[
        "service",
        "inspect",
        "--format",
        "{{json .CreatedAt}}",
        "ord_web",
    ]);
    assert_eq!(
        ok(
            "docker",
            d,
            &["inspect", "--format", "{{.Status.State}}", &job_task]
        )
        .trim(),
        "complete"
    );
    assert!(
        web_created >= db_running,
        "web {web_created} before db ran {db_running}"
    );
    assert!(
        web_created >= job_done,
        "web {web_created} before the job ended {job_done}"
    );
    ok(common::FLOTILLA, d, &["stack", "rm", "ord"]);
}

const ORDERED: &str = r#"services:
  db:
    image: flotilla-busybox:healthy
    command: ["sleep", "3600"]
  migrate:
    image: flotilla-busybox
    command: ["sh", "-c", "sleep 1; echo migrated"]
    deploy:
      mode: replicated-job
  web:
    image: flotilla-busybox
    command: ["sleep", "3600"]
    depends_on:
      db:
        condition: service_healthy
      migrate:
        condition: service_completed_successfully
"#;
