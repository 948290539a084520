//! Executors run a task's workload. The worker drives each task through
//! prepare → start → wait_healthy → wait, and shutdown → remove when the
//! manager no longer wants it; an executor only carries those steps out.

use async_trait::async_trait;
use bollard::models::EndpointPortConfig;
use flotilla_store::models::Task;
use futures::stream::BoxStream;

pub use crate::taskfiles::TaskFiles;

pub mod docker;
pub mod process;

/// What went wrong in a step. The worker maps `Rejected` to the REJECTED
/// task state (the task could never run here: bad spec, missing image) and
/// `Failed` to FAILED (it could have, but did not).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Failed(String),
    /// The workload is gone (container removed, process record lost).
    #[error("{0}")]
    NotFound(String),
}

/// How a finished task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: i64,
    /// Why, when the engine says more than the code (e.g. "OOMKilled").
    pub message: Option<String>,
}

/// Where a started workload lives, reported in TaskStatus.ContainerStatus,
/// and where its target ports are reachable on this node, reported in
/// TaskStatus.PortStatus: one entry per port of the task's
/// `com.flotilla.ports` label, `PublishedPort` being the host port (the
/// one asked for in host mode, one the executor picked in ingress mode).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeInfo {
    pub container_id: Option<String>,
    pub pid: Option<i64>,
    pub ports: Vec<EndpointPortConfig>,
}

/// A workload found on this node at start-up (containers carry the task id
/// in their labels; process tasks have a record on disk).
#[derive(Debug, Clone, PartialEq)]
pub struct Existing {
    pub task_id: String,
    pub running: bool,
    pub runtime: RuntimeInfo,
}

/// What the node offers, for the Node object's Description.
#[derive(Debug, Clone, Default)]
pub struct NodeDescription {
    pub hostname: String,
    pub os: String,
    pub architecture: String,
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    pub engine_version: String,
    /// The network drivers tasks here can use, as Docker's engines list
    /// theirs (`overlay` where the node carries overlay networks): the
    /// scheduler places a task on a network only where `overlay` is.
    pub network_plugins: Vec<String>,
    /// `--node-generic-resource`: what the node offers beside CPU and
    /// memory (`SSD=2`, `GPU=uuid`).
    pub generic_resources: Vec<bollard::models::GenericResourcesInner>,
}

/// `DOCKER_RESOURCE_<KIND>=…` for the generic resources a task was given,
/// as Docker's executor sets them: named values joined by commas, or the
/// count.
pub fn generic_resource_env(task: &Task) -> Vec<(String, String)> {
    let mut by_kind: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for r in task.assigned_generic_resources.iter().flatten() {
        if let Some(n) = &r.named_resource_spec {
            by_kind
                .entry(n.kind.clone().unwrap_or_default())
                .or_default()
                .push(n.value.clone().unwrap_or_default());
        }
        if let Some(d) = &r.discrete_resource_spec {
            by_kind
                .entry(d.kind.clone().unwrap_or_default())
                .or_default()
                .push(d.value.unwrap_or(0).to_string());
        }
    }
    by_kind
        .into_iter()
        .map(|(kind, values)| {
            (
                format!("DOCKER_RESOURCE_{}", kind.to_uppercase()),
                values.join(","),
            )
        })
        .collect()
}

/// The network drivers of a node whose tasks can join overlay networks.
pub const NETWORK_PLUGINS: [&str; 4] = ["bridge", "host", "null", "overlay"];

impl NodeDescription {
    /// The same, in Docker's model (a Node's `Description`).
    pub fn to_model(&self) -> bollard::models::NodeDescription {
        use bollard::models as m;
        m::NodeDescription {
            hostname: Some(self.hostname.clone()),
            platform: Some(m::Platform {
                architecture: Some(self.architecture.clone()),
                os: Some(self.os.clone()),
            }),
            resources: Some(m::ResourceObject {
                nano_cpus: Some(self.nano_cpus),
                memory_bytes: Some(self.memory_bytes),
                generic_resources: (!self.generic_resources.is_empty())
                    .then(|| self.generic_resources.clone()),
            }),
            engine: Some(m::EngineDescription {
                engine_version: Some(self.engine_version.clone()),
                labels: Some(Default::default()),
                plugins: (!self.network_plugins.is_empty()).then(|| {
                    self.network_plugins
                        .iter()
                        .map(|name| m::EngineDescriptionPlugins {
                            typ: Some("Network".into()),
                            name: Some(name.clone()),
                        })
                        .collect()
                }),
            }),
            tls_info: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone)]
pub struct LogLine {
    pub stream: LogStream,
    /// RFC 3339 with nanoseconds, as Docker prints it.
    pub timestamp: String,
    /// The line's bytes, including its trailing newline when it had one.
    pub line: bytes::Bytes,
}

#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub follow: bool,
    /// Last N lines only; None means all.
    pub tail: Option<usize>,
    /// Unix seconds; lines older than this are skipped.
    pub since: Option<i64>,
    pub stdout: bool,
    pub stderr: bool,
}

/// Where a task's container goes on one of its overlay networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The swarm network's name (for messages).
    pub network: String,
    /// The engine's local network the container joins.
    pub engine_network: String,
    pub addr: std::net::Ipv4Addr,
    pub internal: bool,
    /// This node's address there: the tasks' DNS server.
    pub node_addr: std::net::Ipv4Addr,
}

/// What sets a task's overlay networks up on this node before its
/// workload is made (the node's overlay, `crate::overlay`).
#[async_trait]
pub trait NetworkAttacher: Send + Sync + 'static {
    /// One entry per network of the task, in its order; empty for a task
    /// on none.
    async fn attach(&self, task: &Task) -> Result<Vec<Attached>, String>;
}

/// A command running in a task's workload (`exec`), started by
/// [`Executor::exec`].
pub struct ExecProcess {
    /// The engine's exec ID, or the process's pid.
    pub id: String,
    /// Its output as it comes: with a TTY, all of it is `Stdout`.
    pub output: BoxStream<'static, (LogStream, bytes::Bytes)>,
    /// Its stdin, when attached; dropping it closes the command's stdin.
    pub stdin: Option<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>>,
    pub control: Box<dyn ExecControl>,
}

/// What can be done to a running exec beside its input.
#[async_trait]
pub trait ExecControl: Send + Sync {
    async fn resize(&self, rows: u16, cols: u16) -> Result<(), ExecError>;
    /// The exit code, once its output has ended.
    async fn exit_code(&self) -> Result<i64, ExecError>;
    /// Ends the command: whoever ran it has gone away.
    async fn kill(&self);
}

#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// "docker", "process" or "sim".
    fn kind(&self) -> &'static str;
    async fn describe(&self) -> NodeDescription;
    /// Workloads of this node left from an earlier run of the daemon.
    async fn list(&self, node_id: &str) -> Result<Vec<Existing>, ExecError>;
    /// Everything short of starting: check the image, create the container
    /// with the task's secret and config `files` (written already, on the
    /// node's tmpfs). Idempotent: a workload that already exists for this
    /// task is reused.
    async fn prepare(&self, task: &Task, files: &TaskFiles) -> Result<(), ExecError>;
    async fn start(&self, task: &Task) -> Result<RuntimeInfo, ExecError>;
    /// Returns once the workload is healthy (at once when it has no
    /// healthcheck); an error when it turns unhealthy or exits non-zero
    /// first. A clean exit before the first check is Ok, as in Docker: the
    /// following `wait` reports the completion.
    async fn wait_healthy(&self, task: &Task) -> Result<(), ExecError>;
    /// Returns when the workload ends, for whatever reason.
    async fn wait(&self, task: &Task) -> Result<ExitStatus, ExecError>;
    /// Stop signal, then kill after the spec's grace period (default 10 s).
    async fn shutdown(&self, task: &Task) -> Result<(), ExecError>;
    /// Remove every trace of the task (container, log files, records).
    async fn remove(&self, task: &Task) -> Result<(), ExecError>;
    async fn logs(
        &self,
        task: &Task,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, LogLine>, ExecError>;
    /// Runs a command in the task's running workload (`flotilla exec`).
    async fn exec(
        &self,
        _task: &Task,
        _spec: &flotilla_store::exec::ExecSpec,
    ) -> Result<ExecProcess, ExecError> {
        Err(ExecError::Failed(format!(
            "the {} executor cannot run commands in its tasks",
            self.kind()
        )))
    }
}
