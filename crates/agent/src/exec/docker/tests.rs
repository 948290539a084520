//! The docker executor against the local Docker Engine, with the images of
//! tests/images/build.sh. Without an engine they fail with a message that
//! says so.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bollard::models::{
    EndpointPortConfigProtocolEnum as Proto, EndpointPortConfigPublishModeEnum as Mode,
    HealthConfig, Limit, Mount, MountType, TaskSpec, TaskSpecContainerSpec, TaskSpecResources,
};
use flotilla_store::models::{Task, TaskRuntime};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// The engine the tests use, whatever DOCKER_HOST says.
const ENGINE: &str = "unix:///var/run/docker.sock";
const IMAGE: &str = "flotilla-busybox:latest";
const HEALTHY_IMAGE: &str = "flotilla-busybox:healthy";
/// busybox httpd on 8080/tcp; GET / answers the container's hostname.
const HELLO_IMAGE: &str = "flotilla-hello:latest";

/// Every wait in these tests ends by this time.
const LIMIT: Duration = Duration::from_secs(30);

async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(LIMIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: no answer within {LIMIT:?}"),
    }
}

/// The executor, a clean-up guard for this test's containers, and a node id
/// of this test's own (tests run in parallel, in one process or many).
/// Without an engine the test fails: the suite needs one (README), and a
/// test that skipped would pass with the executor broken.
async fn setup() -> (DockerExecutor, Cleanup) {
    let executor = DockerExecutor::connect(Some(ENGINE))
        .await
        .unwrap_or_else(|e| panic!("these tests need the Docker Engine at {ENGINE}: {e}"));
    build_images();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let node = format!(
        "dnode{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    (executor, Cleanup { node })
}

fn build_images() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/images/build.sh");
        let status = std::process::Command::new("bash")
            .arg(&script)
            .env("DOCKER_HOST", ENGINE)
            .status()
            .expect("run tests/images/build.sh");
        assert!(status.success(), "{} failed", script.display());
    });
}

/// Removes the test's containers (all carry its node id) even when the test
/// fails. The docker CLI, not bollard: Drop cannot await.
struct Cleanup {
    node: String,
}

impl Cleanup {
    fn task(&self, command: &[&str]) -> Task {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!("{}t{}", self.node, NEXT.fetch_add(1, Ordering::Relaxed));
        Task {
            id: Some(id),
            node_id: Some(self.node.clone()),
            service_id: Some("svcid".into()),
            slot: Some(1),
            runtime: TaskRuntime {
                service_name: Some("web".into()),
                ..Default::default()
            },
            spec: Some(std::sync::Arc::new(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(IMAGE.into()),
                    command: (!command.is_empty())
                        .then(|| command.iter().map(|s| s.to_string()).collect()),
                    // Busybox as pid 1 ignores SIGTERM: keep stops short.
                    stop_grace_period: Some(1_000_000_000),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label={NODE_ID_LABEL}={}", self.node);
        let Ok(listed) = std::process::Command::new("docker")
            .args(["-H", ENGINE, "ps", "-aq", "--filter", &filter])
            .output()
        else {
            return;
        };
        for id in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
            let _ = std::process::Command::new("docker")
                .args(["-H", ENGINE, "rm", "-f", "-v", id])
                .output();
        }
    }
}

fn spec_of(task: &mut Task) -> &mut TaskSpecContainerSpec {
    task.spec
        .as_mut()
        .map(std::sync::Arc::make_mut)
        .and_then(|s| s.container_spec.as_mut())
        .expect("test tasks have a container spec")
}

async fn run(executor: &DockerExecutor, task: &Task) -> RuntimeInfo {
    within("prepare", executor.prepare(task, &TaskFiles::default()))
        .await
        .expect("prepare");
    within("start", executor.start(task)).await.expect("start")
}

async fn all_logs(executor: &DockerExecutor, task: &Task, opts: LogOptions) -> Vec<String> {
    let stream = within("logs", executor.logs(task, opts))
        .await
        .expect("logs");
    let lines = within("reading logs", stream.collect::<Vec<_>>()).await;
    lines
        .iter()
        .map(|l| String::from_utf8_lossy(&l.line).into_owned())
        .collect()
}

#[tokio::test]
async fn runs_a_task_as_a_labelled_container() {
    let (executor, cleanup) = setup().await;
    let mut task = cleanup.task(&["sh", "-c"]);
    let spec = spec_of(&mut task);
    spec.args = Some(vec!["echo \"$GREETING\"; echo oops >&2; exit 7".into()]);
    spec.env = Some(vec!["GREETING=hello world".into()]);
    spec.labels = Some(HashMap::from([("tier".into(), "front".into())]));
    spec.hostname = Some("webhost".into());

    within("prepare", executor.prepare(&task, &TaskFiles::default()))
        .await
        .expect("prepare");
    // Idempotent: the second prepare reuses the container.
    within(
        "prepare again",
        executor.prepare(&task, &TaskFiles::default()),
    )
    .await
    .expect("prepare again");
    let runtime = within("start", executor.start(&task)).await.expect("start");
    let id = runtime.container_id.clone().expect("container id");

    let status = within("wait", executor.wait(&task)).await.expect("wait");
    assert_eq!(status.code, 7);

    let container = executor
        .docker
        .inspect_container(&id, None)
        .await
        .expect("inspect");
    assert_eq!(
        container.name.as_deref(),
        Some(format!("/web.1.{}", task_id(&task)).as_str())
    );
    let config = container.config.expect("config");
    let labels = config.labels.expect("labels");
    assert_eq!(labels["tier"], "front");
    assert_eq!(labels[TASK_ID_LABEL], task_id(&task));
    assert_eq!(labels[NODE_ID_LABEL], cleanup.node);
    assert_eq!(labels["com.docker.swarm.service.name"], "web");
    assert_eq!(labels[MANAGED_LABEL], "true");
    assert_eq!(config.hostname.as_deref(), Some("webhost"));
    let restart = container
        .host_config
        .and_then(|h| h.restart_policy)
        .and_then(|p| p.name);
    assert_eq!(restart, Some(bollard::models::RestartPolicyNameEnum::NO));
    let found = executor.find_container(&task).await.expect("find");
    assert_eq!(found.as_deref(), Some(id.as_str()));

    let mut lines = all_logs(&executor, &task, LogOptions::default()).await;
    lines.sort();
    assert_eq!(lines, vec!["hello world\n", "oops\n"]);
    let stderr = LogOptions {
        stderr: true,
        ..Default::default()
    };
    assert_eq!(all_logs(&executor, &task, stderr).await, vec!["oops\n"]);

    // Shutting down a stopped container and removing twice are harmless.
    within("shutdown", executor.shutdown(&task))
        .await
        .expect("shutdown");
    within("remove", executor.remove(&task))
        .await
        .expect("remove");
    within("remove again", executor.remove(&task))
        .await
        .expect("remove again");
    assert!(executor.inspect(&id).await.expect("inspect").is_none());
}

#[tokio::test]
async fn args_alone_run_under_the_image_entrypoint() {
    let (executor, cleanup) = setup().await;
    let mut task = cleanup.task(&[]);
    spec_of(&mut task).args = Some(vec!["echo".into(), "from args".into()]);
    run(&executor, &task).await;
    let status = within("wait", executor.wait(&task)).await.expect("wait");
    assert_eq!(
        status,
        ExitStatus {
            code: 0,
            message: None
        }
    );
    // A task runs once: starting it again does not rerun the container.
    within("start again", executor.start(&task))
        .await
        .expect("start again");
    assert_eq!(
        all_logs(&executor, &task, LogOptions::default()).await,
        vec!["from args\n"]
    );
}

#[tokio::test]
async fn shutdown_stops_within_the_grace_period() {
    let (executor, cleanup) = setup().await;
    let task = cleanup.task(&["sleep", "1000"]);
    let runtime = run(&executor, &task).await;
    assert!(runtime.pid.is_some_and(|pid| pid > 0));
    let started = Instant::now();
    within("shutdown", executor.shutdown(&task))
        .await
        .expect("shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    let status = within("wait", executor.wait(&task)).await.expect("wait");
    assert_eq!(
        status.code, 137,
        "SIGKILL after the grace period: {status:?}"
    );
}

#[tokio::test]
async fn container_removed_behind_our_back_is_noticed() {
    let (executor, cleanup) = setup().await;
    let task = cleanup.task(&["sleep", "1000"]);
    run(&executor, &task).await;
    let waiting = executor.wait(&task);
    let remove = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let force = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        executor
            .docker
            .remove_container(&container_name(&task), Some(force))
            .await
            .expect("remove behind the executor's back");
        Instant::now()
    };
    let (waited, removed_at) = within("wait", futures::future::join(waiting, remove)).await;
    // `rm -f` kills, then removes: a wait that sees the kill before the
    // removal ends with SIGKILL's code, one that sees the removal with
    // NotFound. Either way it ended, which is what is noticed.
    assert!(
        matches!(
            waited,
            Err(ExecError::NotFound(_)) | Ok(ExitStatus { code: 137, .. })
        ),
        "{waited:?}"
    );
    // Events make it prompt; the fallback poll (1 s) would too, so the bound
    // only says it is noticed at once rather than at some later reconcile.
    assert!(
        removed_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        removed_at.elapsed()
    );
}

#[tokio::test]
async fn image_healthcheck_gates_healthy() {
    let (executor, cleanup) = setup().await;
    let mut task = cleanup.task(&["sleep", "1000"]);
    spec_of(&mut task).image = Some(HEALTHY_IMAGE.into());
    run(&executor, &task).await;
    within("wait_healthy", executor.wait_healthy(&task))
        .await
        .expect("healthy");
    let container = executor
        .inspect(&container_name(&task))
        .await
        .expect("inspect")
        .expect("exists");
    let health = container
        .state
        .and_then(|s| s.health)
        .and_then(|h| h.status);
    assert_eq!(health, Some(HealthStatusEnum::HEALTHY));
}

#[tokio::test]
async fn unhealthy_container_is_stopped_and_reported() {
    let (executor, cleanup) = setup().await;
    let mut task = cleanup.task(&["sleep", "1000"]);
    spec_of(&mut task).health_check = Some(HealthConfig {
        test: Some(vec!["CMD-SHELL".into(), "exit 1".into()]),
        interval: Some(200_000_000),
        timeout: Some(1_000_000_000),
        retries: Some(2),
        ..Default::default()
    });
    run(&executor, &task).await;
    match within("wait_healthy", executor.wait_healthy(&task)).await {
        Err(ExecError::Failed(message)) => {
            assert_eq!(
                message,
                "task: non-zero exit (137): dockerexec: unhealthy container"
            )
        }
        other => panic!("expected unhealthy, got {other:?}"),
    }
    let status = within("wait", executor.wait(&task)).await.expect("wait");
    assert_eq!(status.code, 137);
}

#[tokio::test]
async fn a_new_executor_lists_the_node_containers() {
    let (executor, cleanup) = setup().await;
    let running = cleanup.task(&["sleep", "1000"]);
    let finished = cleanup.task(&["true"]);
    let runtime = run(&executor, &running).await;
    run(&executor, &finished).await;
    within("wait", executor.wait(&finished))
        .await
        .expect("wait");
    drop(executor);

    let again = DockerExecutor::connect(Some(ENGINE))
        .await
        .expect("connect again");
    let mut found = within("list", again.list(&cleanup.node))
        .await
        .expect("list");
    found.sort_by_key(|e| !e.running);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].task_id, task_id(&running));
    assert!(found[0].running);
    assert_eq!(found[0].runtime, runtime);
    assert_eq!(found[1].task_id, task_id(&finished));
    assert!(!found[1].running);
    assert!(within("list", again.list("no-such-node"))
        .await
        .expect("list")
        .is_empty());
}

#[tokio::test]
async fn logs_tail_and_follow() {
    let (executor, cleanup) = setup().await;
    let task = cleanup.task(&[
        "sh",
        "-c",
        "echo one; echo two; echo three; sleep 1; echo four; sleep 1000",
    ]);
    run(&executor, &task).await;

    let follow = LogOptions {
        follow: true,
        ..Default::default()
    };
    let mut stream = within("logs", executor.logs(&task, follow))
        .await
        .expect("logs");
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let line = within("next line", stream.next())
            .await
            .expect("a line before the end");
        chrono::DateTime::parse_from_rfc3339(&line.timestamp).expect("RFC 3339 timestamp");
        seen.push(String::from_utf8_lossy(&line.line).into_owned());
    }
    assert_eq!(seen, vec!["one\n", "two\n", "three\n", "four\n"]);

    let tail = LogOptions {
        tail: Some(2),
        ..Default::default()
    };
    assert_eq!(
        all_logs(&executor, &task, tail).await,
        vec!["three\n", "four\n"]
    );
    // Following ends with the container.
    within("remove", executor.remove(&task))
        .await
        .expect("remove");
    assert!(within("end of logs", stream.next()).await.is_none());
}

#[tokio::test]
async fn missing_image_and_bad_spec_are_rejected() {
    let (executor, cleanup) = setup().await;
    let mut missing = cleanup.task(&["true"]);
    spec_of(&mut missing).image = Some("flotilla-no-such-image:1".into());
    match within("prepare", executor.prepare(&missing, &TaskFiles::default())).await {
        Err(ExecError::Rejected(message)) => {
            assert_eq!(message, "No such image: flotilla-no-such-image:1")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }

    let mut bad_mount = cleanup.task(&["true"]);
    spec_of(&mut bad_mount).mounts = Some(vec![Mount {
        typ: Some(MountType::BIND),
        source: Some("/no/such/source/dir".into()),
        target: Some("/data".into()),
        ..Default::default()
    }]);
    match within(
        "prepare",
        executor.prepare(&bad_mount, &TaskFiles::default()),
    )
    .await
    {
        Err(ExecError::Rejected(message)) => {
            assert!(message.contains("/no/such/source/dir"), "{message}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }

    let missing_program = cleanup.task(&["/no/such/program"]);
    within(
        "prepare",
        executor.prepare(&missing_program, &TaskFiles::default()),
    )
    .await
    .expect("prepare");
    assert!(matches!(
        executor.start(&missing_program).await,
        Err(ExecError::Rejected(_))
    ));
}

#[tokio::test]
async fn mounts_user_and_limits_reach_the_container() {
    let (executor, cleanup) = setup().await;
    let host_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(host_dir.path().join("note"), "from the host\n").expect("write");
    let mut task = cleanup.task(&["sh", "-c", "cat /data/note; id -u"]);
    let spec = spec_of(&mut task);
    spec.user = Some("nobody".into());
    spec.dir = Some("/tmp".into());
    spec.mounts = Some(vec![Mount {
        typ: Some(MountType::BIND),
        source: Some(host_dir.path().display().to_string()),
        target: Some("/data".into()),
        read_only: Some(true),
        ..Default::default()
    }]);
    if let Some(task_spec) = task.spec.as_mut().map(std::sync::Arc::make_mut) {
        task_spec.resources = Some(TaskSpecResources {
            limits: Some(Limit {
                nano_cpus: Some(500_000_000),
                memory_bytes: Some(64 * 1024 * 1024),
                pids: None,
            }),
            ..Default::default()
        });
    }
    let runtime = run(&executor, &task).await;
    within("wait", executor.wait(&task)).await.expect("wait");
    let lines = all_logs(&executor, &task, LogOptions::default()).await;
    assert_eq!(lines, vec!["from the host\n", "65534\n"]);
    let id = runtime.container_id.expect("container id");
    let container = executor
        .docker
        .inspect_container(&id, None)
        .await
        .expect("inspect");
    let host = container.host_config.expect("host config");
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(64 * 1024 * 1024));
    assert_eq!(
        container.config.and_then(|c| c.working_dir).as_deref(),
        Some("/tmp")
    );
}

#[tokio::test]
async fn out_of_memory_is_reported() {
    let (executor, cleanup) = setup().await;
    // Shell builtins only: the shell itself is what runs out of memory.
    let mut task = cleanup.task(&["sh", "-c", "x=a; while true; do x=\"$x$x\"; done"]);
    if let Some(task_spec) = task.spec.as_mut().map(std::sync::Arc::make_mut) {
        task_spec.resources = Some(TaskSpecResources {
            limits: Some(Limit {
                memory_bytes: Some(16 * 1024 * 1024),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    run(&executor, &task).await;
    let status = within("wait", executor.wait(&task)).await.expect("wait");
    assert_eq!(
        status,
        ExitStatus {
            code: 137,
            message: Some("OOMKilled".into())
        }
    );
}

#[tokio::test]
async fn describes_the_engine_host() {
    let (executor, _cleanup) = setup().await;
    let description = executor.describe().await;
    assert!(!description.engine_version.is_empty() && description.engine_version != "unknown");
    assert_eq!(description.os, "linux");
    assert!(description.nano_cpus >= 1_000_000_000);
    assert!(description.memory_bytes > 0);
}

#[tokio::test]
async fn connect_fails_fast_without_an_engine() {
    let started = Instant::now();
    let result = DockerExecutor::connect(Some("/nonexistent/docker.sock")).await;
    assert!(matches!(result, Err(ExecError::Failed(_))));
    assert!(started.elapsed() < Duration::from_secs(3));
}

fn port(target: i64, published: i64, mode: Mode) -> EndpointPortConfig {
    EndpointPortConfig {
        protocol: Some(Proto::TCP),
        target_port: Some(target),
        published_port: Some(published),
        publish_mode: Some(mode),
        ..Default::default()
    }
}

/// A task of flotilla-hello publishing `ports`, as the store marks it.
fn hello(cleanup: &Cleanup, ports: &[EndpointPortConfig]) -> Task {
    let mut task = cleanup.task(&[]);
    spec_of(&mut task).image = Some(HELLO_IMAGE.into());
    task.runtime.ports = ports.to_vec();
    task
}

/// The body of GET / on 127.0.0.1:`port`, asked again until the server
/// answers (the engine's proxy accepts before the server listens).
async fn http_get(port: i64) -> String {
    let port = u16::try_from(port).expect("a port number");
    within("GET /", async {
        loop {
            match get_once(port).await {
                Ok(body) => return body,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
}

async fn get_once(port: u16) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response).into_owned();
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
            Ok(body.to_string())
        }
        _ => Err(std::io::Error::other(format!(
            "no answer yet: {response:?}"
        ))),
    }
}

/// A TCP port nothing listens on now.
fn free_port() -> i64 {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    i64::from(listener.local_addr().expect("address").port())
}

async fn hostname(executor: &DockerExecutor, task: &Task) -> String {
    let container = executor
        .inspect(&container_name(task))
        .await
        .expect("inspect")
        .expect("exists");
    container
        .config
        .and_then(|c| c.hostname)
        .expect("a hostname")
}

#[tokio::test]
async fn ingress_port_is_published_on_an_ephemeral_host_port() {
    let (executor, cleanup) = setup().await;
    let task = hello(&cleanup, &[port(8080, 30080, Mode::INGRESS)]);
    let runtime = run(&executor, &task).await;
    assert_eq!(runtime.ports.len(), 1, "{:?}", runtime.ports);
    let published = &runtime.ports[0];
    assert_eq!(published.target_port, Some(8080));
    assert_eq!(published.protocol, Some(Proto::TCP));
    assert_eq!(published.publish_mode, Some(Mode::INGRESS));
    // The engine's pick: never the published port, which the mesh owns.
    let host_port = published.published_port.expect("a host port");
    assert!(host_port > 0 && host_port != 30080, "{host_port}");
    let body = http_get(host_port).await;
    assert_eq!(body.trim(), hostname(&executor, &task).await);

    // The same, for a restarted daemon (adoption) and a repeated start.
    let again = DockerExecutor::connect(Some(ENGINE))
        .await
        .expect("connect again");
    let found = within("list", again.list(&cleanup.node))
        .await
        .expect("list");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].runtime, runtime);
    let restarted = within("start again", again.start(&task))
        .await
        .expect("start again");
    assert_eq!(restarted, runtime);
}

#[tokio::test]
async fn host_mode_port_is_published_as_asked() {
    let (executor, cleanup) = setup().await;
    let fixed = free_port();
    let task = hello(&cleanup, &[port(8080, fixed, Mode::HOST)]);
    let runtime = run(&executor, &task).await;
    assert_eq!(runtime.ports, vec![port(8080, fixed, Mode::HOST)]);
    let body = http_get(fixed).await;
    assert_eq!(body.trim(), hostname(&executor, &task).await);
}

#[tokio::test]
async fn host_mode_port_in_use_fails_the_start() {
    let (executor, cleanup) = setup().await;
    let holder = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let taken = i64::from(holder.local_addr().expect("address").port());
    let task = hello(&cleanup, &[port(8080, taken, Mode::HOST)]);
    within("prepare", executor.prepare(&task, &TaskFiles::default()))
        .await
        .expect("prepare");
    match within("start", executor.start(&task)).await {
        Err(ExecError::Rejected(message)) => {
            assert!(message.contains(&taken.to_string()), "{message}")
        }
        other => panic!("expected the engine's refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn containers_use_the_node_dns_server_unless_the_spec_has_one() {
    let (executor, cleanup) = setup().await;
    executor.set_dns(Some("198.18.0.1".parse().expect("ip")));
    assert_eq!(executor.dns(), Some("198.18.0.1".parse().expect("ip")));
    let plain = cleanup.task(&["cat", "/etc/resolv.conf"]);
    let mut own = cleanup.task(&["cat", "/etc/resolv.conf"]);
    spec_of(&mut own).dns_config = Some(bollard::models::TaskSpecContainerSpecDnsConfig {
        nameservers: Some(vec!["192.0.2.53".into()]),
        search: Some(vec!["example.org".into()]),
        options: None,
    });
    for (task, nameserver) in [(&plain, "198.18.0.1"), (&own, "192.0.2.53")] {
        run(&executor, task).await;
        within("wait", executor.wait(task)).await.expect("wait");
        let lines = all_logs(&executor, task, LogOptions::default()).await;
        let nameservers: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.trim().strip_prefix("nameserver "))
            .collect();
        assert_eq!(nameservers, vec![nameserver], "{lines:?}");
    }
    let lines = all_logs(&executor, &own, LogOptions::default()).await;
    assert!(
        lines.iter().any(|l| l.trim() == "search example.org"),
        "{lines:?}"
    );
}
