//! The process executor against real host processes.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bollard::models::{
    EndpointPortConfigProtocolEnum as Proto, EndpointPortConfigPublishModeEnum as Mode,
    HealthConfig, TaskSpec, TaskSpecContainerSpec,
};
use flotilla_store::models::Task;
use futures::StreamExt;

use super::*;

const NODE: &str = "node-process-tests";

/// Every wait in these tests ends by this time.
const LIMIT: Duration = Duration::from_secs(15);

async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(LIMIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: no answer within {LIMIT:?}"),
    }
}

fn unique_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "ptask{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn task(command: &[&str]) -> Task {
    let spec = TaskSpecContainerSpec {
        image: Some("flotilla-busybox:latest".into()),
        command: Some(command.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    with_spec(spec)
}

fn with_spec(spec: TaskSpecContainerSpec) -> Task {
    Task {
        id: Some(unique_id()),
        node_id: Some(NODE.into()),
        service_id: Some("svc".into()),
        slot: Some(1),
        spec: Some(std::sync::Arc::new(TaskSpec {
            container_spec: Some(spec),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn spec_of(task: &mut Task) -> &mut TaskSpecContainerSpec {
    task.spec
        .as_mut()
        .map(std::sync::Arc::make_mut)
        .and_then(|s| s.container_spec.as_mut())
        .expect("test tasks have a container spec")
}

async fn run(executor: &ProcessExecutor, task: &Task) -> RuntimeInfo {
    within("prepare", executor.prepare(task, &TaskFiles::default()))
        .await
        .expect("prepare");
    within("start", executor.start(task)).await.expect("start")
}

async fn all_logs(executor: &ProcessExecutor, task: &Task, opts: LogOptions) -> Vec<LogLine> {
    let stream = within("logs", executor.logs(task, opts))
        .await
        .expect("logs");
    within("reading logs", stream.collect::<Vec<_>>()).await
}

fn texts(lines: &[LogLine]) -> Vec<String> {
    lines
        .iter()
        .map(|l| String::from_utf8_lossy(&l.line).into_owned())
        .collect()
}

fn state_dir() -> StateDir {
    StateDir(tempfile::tempdir().expect("tempdir"))
}

/// A state dir that kills the processes recorded in it when dropped, so a
/// failing test leaves no `sleep 1000` behind.
struct StateDir(tempfile::TempDir);

impl StateDir {
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.path()) else {
            return;
        };
        for entry in entries.flatten() {
            let Some(record) = read_record(&entry.path()) else {
                continue;
            };
            if let (Some(pid), Some(start_time)) = (record.pid, record.start_time) {
                if alive(pid, start_time) {
                    kill_group(pid, libc::SIGKILL);
                }
            }
        }
    }
}

#[tokio::test]
async fn runs_command_and_reports_exit_code_and_logs() {
    let dir = state_dir();
    let executor = ProcessExecutor::new(dir.path().to_path_buf());
    let task = task(&["sh", "-c", "echo hi; echo oops >&2; exit 3"]);
    let runtime = run(&executor, &task).await;
    assert!(runtime.pid.is_some());
    let status = within("wait", executor.wait(&task)).await.expect("wait");
    assert_eq!(
        status,
        ExitStatus {
            code: 3,
            message: None
        }
    );
    // A task runs once: starting it again does not rerun the command.
    within("start again", executor.start(&task))
        .await
        .expect("start again");

    let mut lines = all_logs(&executor, &task, LogOptions::default()).await;
    // Across streams the order is by the time each line was first seen,
    // which may tie or cross within one watch period.
    lines.sort_by_key(|l| l.stream == LogStream::Stderr);
    assert_eq!(texts(&lines), vec!["hi\n", "oops\n"]);
    assert_eq!(lines[0].stream, LogStream::Stdout);
    assert_eq!(lines[1].stream, LogStream::Stderr);
    for line in &lines {
        chrono::DateTime::parse_from_rfc3339(&line.timestamp).expect("RFC 3339 timestamp");
    }
    let only_err = LogOptions {
        stderr: true,
        ..Default::default()
    };
    assert_eq!(
        texts(&all_logs(&executor, &task, only_err).await),
        vec!["oops\n"]
    );

    within("remove", executor.remove(&task))
        .await
        .expect("remove");
    assert!(!dir.path().join(task_id(&task)).exists());
}

#[tokio::test]
async fn task_without_command_is_rejected() {
    let dir = state_dir();
    let executor = ProcessExecutor::new(dir.path().to_path_buf());
    let task = with_spec(TaskSpecContainerSpec {
        image: Some("nginx".into()),
        ..Default::default()
    });
    match executor.prepare(&task, &TaskFiles::default()).await {
        Err(ExecError::Rejected(message)) => {
            assert!(message.starts_with("task has no command"), "{message}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn a_task_on_an_overlay_network_is_rejected_with_the_reason() {
    let dir = state_dir();
    let executor = ProcessExecutor::new(dir.path().to_path_buf());
    let mut on_net = task(&["true"]);
    on_net.runtime.networks = vec![flotilla_store::models::Attachment {
        network: "n1".into(),
        addr: "10.0.0.3".parse().expect("ip"),
    }];
    match executor.prepare(&on_net, &TaskFiles::default()).await {
        Err(ExecError::Rejected(message)) => {
            assert!(
                message.contains("cannot attach tasks to overlay networks"),
                "{message}"
            )
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_work_dir_user_or_executable_is_rejected() {
    let dir = state_dir();
    let executor = ProcessExecutor::new(dir.path().to_path_buf());
    let mut missing_dir = task(&["true"]);
    spec_of(&mut missing_dir).dir = Some("/no/such/dir".into());
    assert!(matches!(
        executor.prepare(&missing_dir, &TaskFiles::default()).await,
        Err(ExecError::Rejected(_))
    ));

    let mut ghost = task(&["true"]);
    spec_of(&mut ghost).user = Some("no-such-user-here".into());
    assert!(matches!(
        executor.prepare(&ghost, &TaskFiles::default()).await,
        Err(ExecError::Rejected(_))
    ));

    let missing = task(&["/no/such/program"]);
    within("prepare", executor.prepare(&missing, &TaskFiles::default()))
        .await
        .expect("prepare");
    assert!(matches!(
        executor.start(&missing).await,
        Err(ExecError::Rejected(_))
    ));
}

#[tokio::test]
async fn env_and_work_dir_reach_the_process() {
    let dir = state_dir();
    let executor = ProcessExecutor::new(dir.path().to_path_buf());
    let mut task = task(&["sh", "-c"]);
    let spec = spec_of(&mut task);
    spec.args = Some(vec!["echo \"$GREETING\"; pwd".into()]);
    spec.env = Some(vec!["GREETING=hello world".into()]);
    spec.dir = Some("/tmp".into());
    run(&executor, &task).await;
    within("wait", executor.wait(&task)).await.expect("wait");
    let lines = all_logs(&executor, &task, LogOptions::default()).await;
    assert_eq!(texts(&lines), vec!["hello world\n", "/tmp\n"]);
}

#[tokio::test]
async fn shutdown_stops_the_process_within_its_grace_period() {
    let dir = state_dir();
    let executor = ProcessExecutor::new(dir.path().to_path_buf());
    let polite = task(&["sleep", "1000"]);
    // This one ignores the stop signal: only the SIGKILL after grace ends it.
    let mut stubborn = task(&["sh", "-c", "trap '' TERM; sleep 1000"]);
    spec_of(&mut stubborn).stop_grace_period = Some(300_000_000);
    for task in [&polite, &stubborn] {
        run(&executor, task).await;
        // Let the shell set its trap before the signal comes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        within("shutdown", executor.shutdown(task))
            .await
            .expect("shutdown");
        assert!(started.elapsed() < Duration::from_secs(5));
        let status = within("wait", executor.wait(task)).await.expect("wait");
        assert!(status.code >= 128, "killed by a signal: {status:?}");
        within("remove", executor.remove(task))
            .await
            .expect("remove");
    }
    // A second shutdown of a finished task is harmless.
    within("shutdown", executor.shutdown(&polite))
        .await
        .expect("shutdown again");
}

/// Found by flotilla-chaos with a manager's disk full: the process started,
/// its record could not be written, and it ran on untracked while its task
/// was replaced (two processes in one slot, one that no task owned).
#[tokio::test]
async fn a_process_whose_record_cannot_be_written_does_not_outlive_start() {
    let dir = state_dir();
    let executor = ProcessExecutor::new(dir.path().to_path_buf());
    let marker = format!("4321.{}", std::process::id());
    let task = task(&["sleep", &marker]);
    within("prepare", executor.prepare(&task, &TaskFiles::default()))
        .await
        .expect("prepare");
    // The record's temporary file cannot be created: a write that fails
    // as a full disk's does, after the process has started.
    let task_dir = dir.path().join(task.id.as_deref().unwrap_or_default());
    std::fs::create_dir(task_dir.join("record.json.tmp")).expect("block the record");
    let err = within("start", executor.start(&task))
        .await
        .expect_err("the record cannot be written");
    assert!(err.to_string().contains("writing record"), "{err}");
    let running = || {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let zombie = stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|s| s.trim_start().starts_with('Z'));
                !zombie && String::from_utf8_lossy(&cmdline).contains(&marker)
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while running() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(running(), 0, "the process of {marker} still runs");
}

#[tokio::test]
async fn a_new_executor_adopts_running_processes_and_their_logs() {
    let dir = state_dir();
    let first = ProcessExecutor::new(dir.path().to_path_buf());
    let task = task(&["sh", "-c", "echo before; sleep 0.5; echo after; sleep 1000"]);
    let runtime = run(&first, &task).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(first);

    // What a restarted daemon does: a new executor on the same state dir.
    let second = ProcessExecutor::new(dir.path().to_path_buf());
    let found = within("list", second.list(NODE)).await.expect("list");
    let ours: Vec<_> = found
        .iter()
        .filter(|e| e.task_id == task_id(&task))
        .collect();
    assert_eq!(ours.len(), 1);
    assert!(ours[0].running);
    assert_eq!(ours[0].runtime.pid, runtime.pid);
    assert!(within("list", second.list("another-node"))
        .await
        .expect("list")
        .is_empty());

    let follow = LogOptions {
        follow: true,
        ..Default::default()
    };
    let mut stream = within("logs", second.logs(&task, follow))
        .await
        .expect("logs");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = within("next log line", stream.next())
            .await
            .expect("a line before the end");
        seen.push(String::from_utf8_lossy(&line.line).into_owned());
    }
    assert_eq!(seen, vec!["before\n", "after\n"]);

    within("shutdown", second.shutdown(&task))
        .await
        .expect("shutdown");
    within("wait", second.wait(&task)).await.expect("wait");
    // The process is gone, so following ends.
    assert!(within("end of logs", stream.next()).await.is_none());
    within("remove", second.remove(&task))
        .await
        .expect("remove");
    assert!(within("list", second.list(NODE))
        .await
        .expect("list")
        .is_empty());
}

#[tokio::test]
async fn logs_tail_and_since() {
    let dir = state_dir();
    let executor = ProcessExecutor::new(dir.path().to_path_buf());
    let task = task(&["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done"]);
    run(&executor, &task).await;
    within("wait", executor.wait(&task)).await.expect("wait");
    let tail = LogOptions {
        tail: Some(2),
        ..Default::default()
    };
    assert_eq!(
        texts(&all_logs(&executor, &task, tail).await),
        vec!["line4\n", "line5\n"]
    );
    let future = LogOptions {
        since: Some(chrono::Utc::now().timestamp() + 60),
        ..Default::default()
    };
    assert!(all_logs(&executor, &task, future).await.is_empty());
    let past = LogOptions {
        since: Some(chrono::Utc::now().timestamp() - 60),
        ..Default::default()
    };
    assert_eq!(all_logs(&executor, &task, past).await.len(), 5);
}

fn health(test: &[&str], interval_ms: i64, retries: i64) -> HealthConfig {
    HealthConfig {
        test: Some(test.iter().map(|s| s.to_string()).collect()),
        interval: Some(interval_ms * 1_000_000),
        timeout: Some(2_000_000_000),
        retries: Some(retries),
        ..Default::default()
    }
}

#[tokio::test]
async fn healthcheck_passes_once_the_process_is_ready() {
    let dir = state_dir();
    let executor = ProcessExecutor::new(dir.path().to_path_buf());
    // Where the task (nobody, under a root test) may write.
    let shared = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        shared.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let ready = shared.path().join("ready");
    let script = format!("sleep 0.3; touch {}; sleep 1000", ready.display());
    let mut task = task(&["sh", "-c", &script]);
    let check = format!("test -f {}", ready.display());
    spec_of(&mut task).health_check = Some(health(&["CMD-SHELL", &check], 100, 100));
    run(&executor, &task).await;
    within("wait_healthy", executor.wait_healthy(&task))
        .await
        .expect("healthy");
    assert!(Path::new(&ready).exists());
    within("remove", executor.remove(&task))
        .await
        .expect("remove");
}

#[tokio::test]
async fn failing_healthcheck_stops_the_process() {
    let dir = state_dir();
    let executor = ProcessExecutor::new(dir.path().to_path_buf());
    let mut task = task(&["sleep", "1000"]);
    spec_of(&mut task).health_check = Some(health(&["CMD", "false"], 100, 2));
    let runtime = run(&executor, &task).await;
    match within("wait_healthy", executor.wait_healthy(&task)).await {
        Err(ExecError::Failed(message)) => assert!(message.contains("unhealthy"), "{message}"),
        other => panic!("expected unhealthy, got {other:?}"),
    }
    let status = within("wait", executor.wait(&task)).await.expect("wait");
    assert!(status.code >= 128, "{status:?}");
    let pid = runtime
        .pid
        .and_then(|p| u32::try_from(p).ok())
        .expect("pid");
    assert!(host::proc_stat(pid).is_none_or(|s| s.zombie));
    within("remove", executor.remove(&task))
        .await
        .expect("remove");
}

#[tokio::test]
async fn describes_the_host() {
    let executor = ProcessExecutor::new(state_dir().path().to_path_buf());
    let description = executor.describe().await;
    assert_eq!(description.engine_version, "flotilla-process");
    assert!(description.nano_cpus >= 1_000_000_000);
    assert!(description.memory_bytes > 0);
    assert!(!description.hostname.is_empty());
}

#[tokio::test]
async fn runs_as_the_spec_user() {
    // SAFETY: geteuid cannot fail and touches no memory.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "switching users needs root: run the suite as root"
    );
    let dir = state_dir();
    let executor = ProcessExecutor::new(dir.path().to_path_buf());
    let mut task = task(&["sh", "-c", "id -u; id -g"]);
    spec_of(&mut task).user = Some("nobody".into());
    let nobody = resolve_user("nobody", Path::new("/etc")).expect("nobody in /etc/passwd");
    run(&executor, &task).await;
    within("wait", executor.wait(&task)).await.expect("wait");
    let lines = all_logs(&executor, &task, LogOptions::default()).await;
    assert_eq!(
        texts(&lines),
        vec![format!("{}\n", nobody.uid), format!("{}\n", nobody.gid)]
    );
}

fn port(target: i64, published: i64, mode: Mode, protocol: Proto) -> EndpointPortConfig {
    EndpointPortConfig {
        protocol: Some(protocol),
        target_port: Some(target),
        published_port: Some(published),
        publish_mode: Some(mode),
        ..Default::default()
    }
}

/// What the store does for a service with published ports.
fn publish(task: &mut Task, ports: &[EndpointPortConfig]) {
    task.runtime.ports = ports.to_vec();
}

/// A TCP port nothing listens on now.
fn free_port() -> i64 {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    i64::from(listener.local_addr().expect("address").port())
}

#[tokio::test]
async fn published_ports_reach_the_environment_and_survive_a_restart() {
    let dir = state_dir();
    let first = ProcessExecutor::new(dir.path().to_path_buf());
    let fixed = free_port();
    let mut task = task(&[
        "sh",
        "-c",
        "echo \"$PORT $PORT_8080 $PORT_9090 $PORT_5353\"; sleep 1000",
    ]);
    publish(
        &mut task,
        &[
            port(8080, 30080, Mode::INGRESS, Proto::TCP),
            port(9090, fixed, Mode::HOST, Proto::TCP),
            port(5353, 30053, Mode::INGRESS, Proto::UDP),
        ],
    );
    let runtime = run(&first, &task).await;
    let host_ports: Vec<i64> = runtime
        .ports
        .iter()
        .map(|p| p.published_port.expect("a host port"))
        .collect();
    assert_eq!(host_ports.len(), 3, "{:?}", runtime.ports);
    // Ingress: a free port of the executor's choice, never the published
    // one (the mesh listens there). Host mode: the published port.
    assert!(host_ports[0] > 0 && host_ports[0] != 30080);
    assert_eq!(host_ports[1], fixed);
    assert!(host_ports[2] > 0 && host_ports[2] != 30053);
    let described: Vec<_> = runtime
        .ports
        .iter()
        .map(|p| (p.target_port, p.protocol, p.publish_mode))
        .collect();
    assert_eq!(
        described,
        vec![
            (Some(8080), Some(Proto::TCP), Some(Mode::INGRESS)),
            (Some(9090), Some(Proto::TCP), Some(Mode::HOST)),
            (Some(5353), Some(Proto::UDP), Some(Mode::INGRESS)),
        ]
    );

    let follow = LogOptions {
        follow: true,
        ..Default::default()
    };
    let mut stream = within("logs", first.logs(&task, follow))
        .await
        .expect("logs");
    let line = within("first log line", stream.next())
        .await
        .expect("a line");
    assert_eq!(
        String::from_utf8_lossy(&line.line),
        format!(
            "{} {} {} {}\n",
            host_ports[0], host_ports[0], host_ports[1], host_ports[2]
        )
    );
    drop(stream);
    drop(first);

    // A restarted daemon reports the same ports.
    let second = ProcessExecutor::new(dir.path().to_path_buf());
    let found = within("list", second.list(NODE)).await.expect("list");
    let ours = found
        .iter()
        .find(|e| e.task_id == task_id(&task))
        .expect("the task's process");
    assert!(ours.running);
    assert_eq!(ours.runtime, runtime);
    let again = within("start again", second.start(&task))
        .await
        .expect("start again");
    assert_eq!(again, runtime);

    within("remove", second.remove(&task))
        .await
        .expect("remove");
}

#[tokio::test]
async fn host_port_in_use_is_rejected() {
    let dir = state_dir();
    let executor = ProcessExecutor::new(dir.path().to_path_buf());
    let holder = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let taken = i64::from(holder.local_addr().expect("address").port());
    let mut held = task(&["sleep", "1000"]);
    publish(&mut held, &[port(80, taken, Mode::HOST, Proto::TCP)]);
    within("prepare", executor.prepare(&held, &TaskFiles::default()))
        .await
        .expect("prepare");
    match within("start", executor.start(&held)).await {
        Err(ExecError::Rejected(message)) => {
            assert!(
                message.contains(&format!("host port {taken}/tcp")),
                "{message}"
            )
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // A target port that cannot be: refused before anything runs.
    let mut bad = task(&["true"]);
    publish(&mut bad, &[port(0, 80, Mode::HOST, Proto::TCP)]);
    assert!(matches!(
        executor.prepare(&bad, &TaskFiles::default()).await,
        Err(ExecError::Rejected(_))
    ));
}

#[tokio::test]
async fn ulimits_and_no_new_privileges_reach_the_process() {
    let dir = state_dir();
    let executor = ProcessExecutor::new(dir.path().to_path_buf());
    let mut task = task(&["sh", "-c", "ulimit -n; grep NoNewPrivs /proc/self/status"]);
    let spec = spec_of(&mut task);
    spec.ulimits = Some(vec![bollard::models::ResourcesUlimits {
        name: Some("nofile".into()),
        soft: Some(123),
        hard: Some(456),
    }]);
    spec.privileges = Some(bollard::models::TaskSpecContainerSpecPrivileges {
        no_new_privileges: Some(true),
        ..Default::default()
    });
    run(&executor, &task).await;
    let status = within("wait", executor.wait(&task)).await.expect("wait");
    assert_eq!(status.code, 0, "{status:?}");
    let stdout = LogOptions {
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let lines = texts(&all_logs(&executor, &task, stdout).await);
    assert_eq!(lines[0].trim(), "123", "{lines:?}");
    assert!(
        lines[1].split_whitespace().eq(["NoNewPrivs:", "1"]),
        "{lines:?}"
    );
}

#[tokio::test]
async fn options_that_need_a_container_reject_the_task() {
    let dir = state_dir();
    let executor = ProcessExecutor::new(dir.path().to_path_buf());
    let mut task = task(&["true"]);
    spec_of(&mut task).labels = Some(std::collections::HashMap::from([(
        flotilla_store::host_options::PRIVILEGED.to_string(),
        "true".to_string(),
    )]));
    let err = within("prepare", executor.prepare(&task, &TaskFiles::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ExecError::Rejected(m) if m.starts_with("privileged needs a container")),
        "{err:?}"
    );
}
