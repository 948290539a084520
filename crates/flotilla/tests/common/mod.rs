//! Harness for black-box system tests: a real `flotilla daemon` process per
//! test (own data dir and socket in a tempdir), the `flotilla` and `docker`
//! CLIs run against it, raw HTTP on its socket, `kill -9` and restart, and
//! polling waits that always have a timeout.
//!
//! Tests run in parallel against one shared Docker Engine, so nothing here
//! uses a global name: cleanup finds a daemon's containers by its node id.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod cluster;
pub mod http;
pub mod table;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use http::Response;
#[allow(unused_imports)]
pub use table::Table;

pub const FLOTILLA: &str = env!("CARGO_BIN_EXE_flotilla");
/// The images `tests/images/build.sh` makes from Debian's static busybox.
pub const IMAGE: &str = "flotilla-busybox:latest";
pub const HEALTHY_IMAGE: &str = "flotilla-busybox:healthy";
/// A long-running command that exits at once on SIGTERM (busybox `sleep`
/// as PID 1 ignores it, and each stop would cost the whole grace period).
pub const FOREVER: &[&str] = &[
    "sh",
    "-c",
    "trap 'exit 0' TERM; while :; do sleep 0.2; done",
];
/// Hostname the test daemons report, so `service ps` and log prefixes are
/// predictable.
pub const HOSTNAME: &str = "flotilla-test";

/// `swarm init` arguments every test daemon uses: the cluster port on a
/// free loopback port, since 2377 can be bound by one daemon only and tests
/// run in parallel (the daemon binds port 0 and keeps the real port).
pub const LISTEN: &[&str] = &["--listen-addr", "127.0.0.1:0"];

/// How long a CLI command may take before the test fails instead of hanging.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// A finished command.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Panics, showing both streams, unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Out {
        assert_eq!(self.code, 0, "command failed: {self:#?}");
        self
    }

    /// Panics unless the command failed; returns its output for checks.
    #[track_caller]
    pub fn failed(self) -> Out {
        assert_ne!(self.code, 0, "command should have failed: {self:#?}");
        self
    }

    pub fn lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// Runs a command to its end (or kills it after `COMMAND_TIMEOUT`).
pub fn run(mut cmd: Command) -> Out {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    // Readers on threads: a full pipe must not block the child.
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {COMMAND_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// `docker ARGS` against the machine's real Docker Engine.
pub fn engine(args: &[&str]) -> Out {
    let mut cmd = Command::new("docker");
    cmd.args(args)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT");
    run(cmd)
}

/// Builds the busybox test images once per test binary (the script is
/// idempotent and serialises concurrent builds with a lock).
pub fn build_images() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/images/build.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(script).env_remove("DOCKER_HOST");
        run(cmd).ok();
    });
}

/// Polls `f` until it returns `Some`, failing the test after `timeout`.
/// The panic message says what was awaited and the last value seen.
#[track_caller]
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Polls `f` until it is true, failing the test after `timeout`.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    wait_for(timeout, what, || {
        if f() {
            Ok(())
        } else {
            Err("false".into())
        }
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executor {
    Docker,
    Process,
}

/// A `flotilla daemon` process with its own data dir and socket. Dropping it
/// kills the daemon and everything it ran, even when the test failed.
pub struct Daemon {
    dir: tempfile::TempDir,
    executor: Executor,
    /// More `flotilla daemon` arguments, kept for restarts.
    extra_args: Vec<String>,
    child: Option<Child>,
    /// Learned from `/info` once the node is in a swarm; cleanup needs it.
    node_id: Mutex<Option<String>>,
    /// The network namespace the daemon runs in (`ip netns exec`), with
    /// its service network on; `None`: the host's, published ports only.
    netns: Option<String>,
}

impl Daemon {
    pub fn start(executor: Executor) -> Daemon {
        Daemon::start_with(executor, &[])
    }

    /// A daemon with more `flotilla daemon` arguments.
    pub fn start_with(executor: Executor, extra_args: &[&str]) -> Daemon {
        Daemon::start_in(executor, None, extra_args)
    }

    /// A daemon in the network namespace `netns` (which the test made and
    /// removes), where it has the namespace to itself: service addresses
    /// on, and so the kernel's NAT for its mesh where it asks for it.
    pub fn start_in(executor: Executor, netns: Option<&str>, extra_args: &[&str]) -> Daemon {
        if executor == Executor::Docker {
            build_images();
        }
        let mut d = Daemon {
            dir: tempfile::Builder::new()
                .prefix("flotilla-test-")
                .tempdir()
                .unwrap(),
            executor,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
            node_id: Mutex::new(None),
            netns: netns.map(str::to_string),
        };
        d.spawn();
        d
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        // Appends: the log of a run before a kill -9 stays readable.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let executor = match self.executor {
            Executor::Docker => "docker",
            Executor::Process => "process",
        };
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, FLOTILLA])
                    .env_remove("FLOTILLA_NO_SERVICE_ADDRS");
                c
            }
            None => {
                let mut c = Command::new(FLOTILLA);
                // Test daemons share the host's network namespace:
                // published ports only (the netns cluster harness tests
                // the rest).
                c.env("FLOTILLA_NO_SERVICE_ADDRS", "1");
                c
            }
        };
        let child = command
            .arg("daemon")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args([
                "-H",
                &self.host(),
                "--executor",
                executor,
                "--hostname",
                HOSTNAME,
            ])
            .args(&self.extra_args)
            .env_remove("FLOTILLA_HOST")
            .env_remove("DOCKER_HOST")
            .env("FLOTILLA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start flotilla daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited with {status}:\n{}", self.log());
            }
            if self.try_get("/_ping").is_ok_and(|r| r.status == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "daemon never answered /_ping:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's log so far (stderr and stdout, every run).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGKILL, as `kill -9` does: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the daemon to exit (at most `bound`);
    /// returns its exit code and how long it took.
    pub fn terminate(&mut self, bound: Duration) -> (Option<i32>, Duration) {
        let mut child = self.child.take().expect("daemon running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        let sent = Instant::now();
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill -TERM");
        loop {
            if let Some(status) = child.try_wait().expect("wait for the daemon") {
                return (status.code(), sent.elapsed());
            }
            if sent.elapsed() > bound {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the daemon did not exit within {bound:?} of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the daemon again after [`Daemon::terminate`] or a kill.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Starts the daemon again on the same data dir and socket.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    // ---- clients ----

    /// `flotilla -H <this daemon> ARGS`.
    pub fn flotilla(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new(FLOTILLA);
        cmd.args(["-H", &self.host()])
            .args(args)
            .env_remove("FLOTILLA_HOST");
        run(cmd)
    }

    /// The real docker CLI with `DOCKER_HOST` pointing at this daemon.
    pub fn docker(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new("docker");
        cmd.args(args)
            .env("DOCKER_HOST", self.host())
            .env_remove("DOCKER_CONTEXT");
        run(cmd)
    }

    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<Response> {
        http::request(&self.socket(), method, path, body)
    }

    fn try_get(&self, path: &str) -> std::io::Result<Response> {
        self.try_request("GET", path, None)
    }

    #[track_caller]
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        self.try_request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    #[track_caller]
    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, None)
    }

    #[track_caller]
    pub fn post(&self, path: &str, body: &str) -> Response {
        self.request("POST", path, Some(body))
    }

    /// GET that must answer 200; returns the JSON body.
    #[track_caller]
    pub fn get_json(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }

    // ---- swarm ----

    /// `flotilla swarm init LISTEN ARGS`, which must succeed; learns the node id.
    pub fn init(&self, args: &[&str]) -> Out {
        let mut all = vec!["swarm", "init"];
        all.extend_from_slice(LISTEN);
        all.extend_from_slice(args);
        let out = self.flotilla(&all).ok();
        self.node_id();
        out
    }

    /// This daemon's node id (from `/info`, remembered).
    pub fn node_id(&self) -> String {
        let mut id = self.node_id.lock().unwrap();
        if id.is_none() {
            let info = self.get_json("/info");
            let got = info["Swarm"]["NodeID"].as_str().unwrap_or_default();
            assert!(!got.is_empty(), "node is not in a swarm: {info}");
            *id = Some(got.to_string());
        }
        id.clone().unwrap()
    }

    /// Tasks of one service (by name or id), straight from the API.
    pub fn tasks(&self, service: &str) -> Vec<Value> {
        let filters = serde_json::json!({ "service": [service] }).to_string();
        let v = self.get_json(&format!("/tasks?filters={}", url_encode(&filters)));
        v.as_array().cloned().unwrap_or_default()
    }

    /// Tasks of `service` whose observed state is `state` (e.g. "running").
    pub fn tasks_in_state(&self, service: &str, state: &str) -> Vec<Value> {
        self.tasks(service)
            .into_iter()
            .filter(|t| task_state(t) == state)
            .collect()
    }

    pub fn service(&self, name: &str) -> Value {
        self.get_json(&format!("/services/{name}"))
    }

    /// Names of the engine's containers that carry this node's labels;
    /// `all` includes stopped ones.
    pub fn containers(&self, all: bool) -> Vec<String> {
        let node = format!("label=com.docker.swarm.node.id={}", self.node_id());
        let mut args = vec!["ps", "--format", "{{.Names}}", "--filter", &node];
        args.extend(["--filter", "label=com.flotilla.managed=true"]);
        if all {
            args.push("-a");
        }
        engine(&args)
            .ok()
            .lines()
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Kills the processes the process executor started (they outlive the
    /// daemon by design), found through its per-task records.
    fn kill_host_processes(&self) {
        let Ok(entries) = std::fs::read_dir(self.data_dir().join("process")) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(bytes) = std::fs::read(entry.path().join("record.json")) else {
                continue;
            };
            let Ok(record) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            let (Some(pid), Some(start)) = (record["pid"].as_u64(), record["start_time"].as_u64())
            else {
                continue;
            };
            // Only our process: a reused pid has another start time.
            if proc_start_time(pid) == Some(start) {
                // Its own session and process group: kill the whole group.
                unsafe {
                    libc::kill(-(pid as i32), libc::SIGKILL);
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- daemon log (last 60 lines) ----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        // Learn the node id while the daemon can still tell it.
        let node = self
            .node_id
            .lock()
            .map(|g| g.clone())
            .unwrap_or(None)
            .or_else(|| {
                self.try_get("/info")
                    .ok()
                    .and_then(|r| serde_json::from_str::<Value>(&r.body).ok())
                    .and_then(|v| v["Swarm"]["NodeID"].as_str().map(String::from))
                    .filter(|s| !s.is_empty())
            });
        // The daemon first, or it would replace what is removed below.
        self.kill9();
        unmount_task_files(&self.data_dir());
        match self.executor {
            Executor::Process => self.kill_host_processes(),
            Executor::Docker => {
                if let Some(node) = node {
                    remove_containers_of(&node);
                }
            }
        }
    }
}

/// Unmounts the tmpfs of tasks' secrets and configs of the daemon whose
/// data directory is `data_dir` (its mount source names it), and removes
/// its mount point.
pub fn unmount_task_files(data_dir: &std::path::Path) {
    let source = format!("flotilla:{}", data_dir.display());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let mut fields = line.split(' ');
        if let (Some(src), Some(point)) = (fields.next(), fields.next()) {
            if src == source {
                let _ = Command::new("umount").args(["-l", point]).status();
                let _ = std::fs::remove_dir(point);
            }
        }
    }
}

fn remove_containers_of(node: &str) {
    let label = format!("label=com.docker.swarm.node.id={node}");
    let ids = engine(&[
        "ps",
        "-aq",
        "--filter",
        &label,
        "--filter",
        "label=com.flotilla.managed=true",
    ]);
    let ids: Vec<&str> = ids.stdout.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        engine(&args);
    }
}

/// Field 22 of /proc/PID/stat (start time in clock ticks).
fn proc_start_time(pid: u64) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: count after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---- task JSON accessors (Docker's Task shape) ----

pub fn task_state(t: &Value) -> &str {
    t["Status"]["State"].as_str().unwrap_or_default()
}

pub fn task_desired(t: &Value) -> &str {
    t["DesiredState"].as_str().unwrap_or_default()
}

pub fn task_slot(t: &Value) -> u64 {
    t["Slot"].as_u64().unwrap_or_default()
}

pub fn task_id(t: &Value) -> &str {
    t["ID"].as_str().unwrap_or_default()
}

pub fn task_err(t: &Value) -> &str {
    t["Status"]["Err"].as_str().unwrap_or_default()
}

pub fn task_container(t: &Value) -> &str {
    t["Status"]["ContainerStatus"]["ContainerID"]
        .as_str()
        .unwrap_or_default()
}

/// A compact view of tasks for failure messages: `slot:state/desired`.
pub fn summary(tasks: &[Value]) -> String {
    let mut v: Vec<String> = tasks
        .iter()
        .map(|t| format!("{}:{}/{}", task_slot(t), task_state(t), task_desired(t)))
        .collect();
    v.sort();
    v.join(" ")
}

/// `args` with `FOREVER` appended: the common tail of a `service create`.
pub fn with_forever<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend_from_slice(FOREVER);
    v
}

/// SwarmKit's task states in their order; a task's state only moves forward.
const STATE_ORDER: &[&str] = &[
    "new",
    "pending",
    "assigned",
    "accepted",
    "preparing",
    "ready",
    "starting",
    "running",
    "complete",
    "shutdown",
    "failed",
    "rejected",
    "remove",
    "orphaned",
];

/// Remembers the last state seen of every task and fails the test when a
/// later observation shows one that comes before it.
#[derive(Default)]
pub struct StateWatch {
    last: std::collections::HashMap<String, usize>,
}

impl StateWatch {
    #[track_caller]
    pub fn observe(&mut self, tasks: &[Value]) {
        for t in tasks {
            let state = task_state(t);
            let rank = STATE_ORDER
                .iter()
                .position(|s| *s == state)
                .unwrap_or_else(|| panic!("unknown task state {state:?}"));
            let prev = self.last.entry(task_id(t).to_string()).or_insert(rank);
            assert!(
                rank >= *prev,
                "task {} went back from {} to {state}",
                task_id(t),
                STATE_ORDER[*prev]
            );
            *prev = rank;
        }
    }
}
