//! The docker executor: each task is a container of the local Docker Engine,
//! named and labelled as Docker Swarm does, so `docker ps` shows the tasks
//! the way it shows a real swarm's.
//!
//! The engine is the source of truth: every step asks it (inspect, list), so
//! a daemon restart loses nothing. Docker events only make the waits prompt;
//! each wait also re-inspects every second in case an event is lost.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, EndpointPortConfig, EventMessage,
    HealthStatusEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use flotilla_store::models::Task;
use futures::stream::{BoxStream, StreamExt};

use super::{
    Attached, ExecError, Executor, Existing, ExitStatus, LogLine, LogOptions, LogStream,
    NetworkAttacher, NodeDescription, RuntimeInfo, TaskFiles,
};

/// `X-Registry-Auth` as clients send it (base64url JSON, padded or not)
/// as the credentials the engine's pull takes.
fn registry_credentials(header: &str) -> Option<bollard::auth::DockerCredentials> {
    use base64::Engine;
    let engines = [
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD,
    ];
    let json = engines.iter().find_map(|e| e.decode(header.trim()).ok())?;
    serde_json::from_slice(&json).ok()
}

mod exec;
mod options;
pub(super) mod ports;
mod spec;
#[cfg(test)]
mod tests;

pub use spec::container_name;
use spec::{container_spec, task_id, MANAGED_LABEL, NODE_ID_LABEL, TASK_ID_LABEL};

/// Where the engine listens unless told otherwise. DOCKER_HOST is not read on
/// purpose: users point it at Flotilla's own socket to drive the swarm, and
/// the daemon must not take itself for the engine.
const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// `--executor auto` falls back to the process executor when no engine
/// answers within this time, so a start-up without Docker stays quick.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a wait re-inspects the container when no event arrives.
const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// How long an engine that fails to answer about a container is asked
/// again before the task is failed (see `observe`).
const ENGINE_PATIENCE: Duration = Duration::from_secs(30);

/// Docker's wording (moby's swarm executor), so `service ps` reads the same.
const UNHEALTHY: &str = "dockerexec: unhealthy container";

pub struct DockerExecutor {
    docker: Docker,
    /// The resolver of the containers created from now on (see `set_dns`).
    dns: RwLock<Option<IpAddr>>,
    /// What sets a task's overlay networks up (see `set_networks`).
    networks: RwLock<Option<Arc<dyn NetworkAttacher>>>,
}

impl DockerExecutor {
    /// Connects to the engine at `docker_host` (`unix:///path`, a bare socket
    /// path, or `tcp://host:port`), or at /var/run/docker.sock, and fails fast
    /// when nothing answers there.
    pub async fn connect(docker_host: Option<&str>) -> Result<DockerExecutor, ExecError> {
        let host = match docker_host {
            Some(path) if path.starts_with('/') => format!("unix://{path}"),
            Some(host) => host.to_string(),
            None => DEFAULT_DOCKER_HOST.to_string(),
        };
        let unreachable =
            |why: String| ExecError::Failed(format!("no Docker Engine at {host}: {why}"));
        let docker = Docker::connect_with_host(&host).map_err(|e| unreachable(e.to_string()))?;
        match tokio::time::timeout(PING_TIMEOUT, docker.ping()).await {
            Ok(Ok(_)) => Ok(DockerExecutor {
                docker,
                dns: RwLock::new(None),
                networks: RwLock::new(None),
            }),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Err(_) => Err(unreachable(format!("no answer within {PING_TIMEOUT:?}"))),
        }
    }

    /// The DNS server of the containers created from now on: the node's own
    /// (service discovery) once it runs. A task spec that names its own
    /// nameservers keeps them. None (the default) leaves the engine's
    /// default, the host's resolvers. Containers already created keep theirs.
    pub fn set_dns(&self, dns: Option<IpAddr>) {
        *self.dns.write().unwrap_or_else(|e| e.into_inner()) = dns;
    }

    /// The DNS server `set_dns` chose.
    pub fn dns(&self) -> Option<IpAddr> {
        *self.dns.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The node's overlay networks, once they run: without them a task on
    /// a network is refused here.
    pub fn set_networks(&self, networks: Arc<dyn NetworkAttacher>) {
        *self.networks.write().unwrap_or_else(|e| e.into_inner()) = Some(networks);
    }

    fn networks(&self) -> Option<Arc<dyn NetworkAttacher>> {
        self.networks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The engine client, for the node's overlay networks.
    pub fn engine(&self) -> Docker {
        self.docker.clone()
    }

    /// The task's overlay networks set up on this node, and where its
    /// container goes on each.
    async fn attach(&self, task: &Task) -> Result<Vec<Attached>, ExecError> {
        if task.runtime.networks.is_empty() {
            return Ok(Vec::new());
        }
        let Some(networks) = self.networks() else {
            return Err(ExecError::Rejected(
                "this node cannot attach tasks to overlay networks: its service network is off (it needs root, iproute2 and iptables, and no --no-service-addrs)".into(),
            ));
        };
        networks
            .attach(task)
            .await
            .map_err(|e| ExecError::Failed(format!("attaching to overlay networks: {e}")))
    }

    /// Joins a new container to its other networks before it starts: the
    /// task's overlay networks after the first, and the default bridge
    /// (its way out, where its ports are published) unless every network
    /// of the task is internal.
    async fn connect_networks(&self, name: &str, attached: &[Attached]) -> Result<(), ExecError> {
        use bollard::models::{EndpointIpamConfig, EndpointSettings, NetworkConnectRequest};
        let mut joins: Vec<(String, Option<EndpointSettings>)> = attached
            .iter()
            .skip(1)
            .map(|a| (a.engine_network.clone(), Some(spec::endpoint(a))))
            .collect();
        if attached.iter().any(|a| !a.internal) {
            joins.push(("bridge".to_string(), None));
        }
        for (network, endpoint_config) in joins {
            let request = NetworkConnectRequest {
                container: name.to_string(),
                endpoint_config: endpoint_config.or(Some(EndpointSettings {
                    ipam_config: None::<EndpointIpamConfig>,
                    ..Default::default()
                })),
            };
            if let Err(e) = self.docker.connect_network(&network, request).await {
                if status(&e) != Some(409) && !message(&e).contains("already exists") {
                    return Err(failed(
                        &format!("connecting the container to {network}"),
                        &e,
                    ));
                }
            }
        }
        Ok(())
    }

    /// The container that already exists for this task, found by its task id
    /// label (so a container survives a change in naming), if any.
    async fn find_container(&self, task: &Task) -> Result<Option<String>, ExecError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{TASK_ID_LABEL}={}", task_id(task))],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let found = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| failed("listing containers", &e))?;
        Ok(found.into_iter().find_map(|c| c.id))
    }

    /// The container to act on: found by the task id label when it exists,
    /// so a caller that knows only the task's ID (a leftover found at
    /// start-up, a node leaving) reaches it; else the name it would have.
    async fn target(&self, task: &Task) -> String {
        match self.find_container(task).await {
            Ok(Some(id)) => id,
            _ => container_name(task),
        }
    }

    /// Makes sure the image is here, trying a pull when it is not. A failed
    /// pull is not an error yet: Docker only reports the missing image when
    /// the container cannot be created, and so do we.
    /// Pulls the image unless the engine has it, with the service's
    /// registry credentials (`--with-registry-auth`) when it has some.
    async fn ensure_image(&self, image: &str, auth: Option<&flotilla_store::models::RegistryAuth>) {
        if self.docker.inspect_image(image).await.is_ok() {
            return;
        }
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let credentials = auth.and_then(|a| {
            let decoded = registry_credentials(&a.0);
            if decoded.is_none() {
                tracing::warn!(
                    image,
                    "the service's registry credentials do not decode; pulling without them"
                );
            }
            decoded
        });
        let mut pull = self.docker.create_image(Some(options), None, credentials);
        while let Some(progress) = pull.next().await {
            if let Err(e) = progress {
                tracing::warn!(image, error = %e, "pulling image failed");
                return;
            }
        }
    }

    async fn inspect(&self, name: &str) -> Result<Option<ContainerInspectResponse>, ExecError> {
        match self.docker.inspect_container(name, None).await {
            Ok(container) => Ok(Some(container)),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(failed("inspecting container", &e)),
        }
    }

    /// What the container is doing now, in the terms the waits care about.
    ///
    /// An engine that does not answer (busy, or restarting) is asked again
    /// for up to [`ENGINE_PATIENCE`]: failing the task at once would start a
    /// replacement while its container, most likely, runs on.
    async fn observe(&self, name: &str) -> Result<Observed, ExecError> {
        let give_up = tokio::time::Instant::now() + ENGINE_PATIENCE;
        let container = loop {
            match self.inspect(name).await {
                Ok(Some(container)) => break container,
                Ok(None) => return Ok(Observed::Gone),
                Err(e) if tokio::time::Instant::now() < give_up => {
                    tracing::warn!(container = %name, "{e}; asking again");
                    tokio::time::sleep(FALLBACK_POLL).await;
                }
                Err(e) => return Err(e),
            }
        };
        let state = container.state.unwrap_or_default();
        let health = state.health.as_ref().and_then(|h| h.status);
        Ok(match state.status {
            // The engine marks a container "removing" before it kills it for
            // a forced removal: it is going away, not merely exiting.
            Some(ContainerStateStatusEnum::REMOVING) => Observed::Gone,
            Some(ContainerStateStatusEnum::CREATED) => Observed::NotStarted,
            Some(ContainerStateStatusEnum::EXITED) | Some(ContainerStateStatusEnum::DEAD) => {
                let mut message = state.error.filter(|e| !e.is_empty());
                if state.oom_killed == Some(true) {
                    message = Some("OOMKilled".to_string());
                }
                Observed::Exited(ExitStatus {
                    code: state.exit_code.unwrap_or(-1),
                    message,
                })
            }
            _ => Observed::Running(health),
        })
    }

    /// Events about one container from `since` on. `since` replays what
    /// happened between the caller's decision to watch and the moment the
    /// request reaches the engine (the stream is lazy), so nothing is missed.
    fn events(
        &self,
        name: &str,
        since: f64,
    ) -> BoxStream<'static, Result<EventMessage, DockerError>> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("container".to_string(), vec![name.to_string()]),
        ]);
        let options = EventsOptions {
            since: Some(format!("{since:.9}")),
            until: None,
            filters: Some(filters),
        };
        self.docker.events(Some(options)).boxed()
    }

    fn watch(&self, name: &str) -> Watch {
        // A second back covers clock granularity; replayed events only cause
        // an extra inspect.
        let since = chrono::Utc::now().timestamp_micros() as f64 / 1e6 - 1.0;
        Watch {
            events: Some(self.events(name, since)),
        }
    }

    /// The runtime of a started container. One that runs without a port
    /// it must publish is of no use to the mesh: it is stopped (a failed
    /// task is not stopped again) and the start fails.
    async fn started(
        &self,
        name: &str,
        container: ContainerInspectResponse,
        wanted: &[EndpointPortConfig],
    ) -> Result<RuntimeInfo, ExecError> {
        match runtime_info(container, wanted) {
            Ok(info) => Ok(info),
            Err((_, why)) => {
                if let Err(e) = self.stop(name, 0).await {
                    tracing::warn!(container = %name, error = %e, "stopping container");
                }
                Err(ExecError::Failed(format!("container {name}: {why}")))
            }
        }
    }

    async fn stop(&self, name: &str, grace_secs: i64) -> Result<(), ExecError> {
        let options = StopContainerOptions {
            signal: None,
            t: Some(i32::try_from(grace_secs).unwrap_or(i32::MAX)),
        };
        // The engine answers a stop only once the container is down, which
        // can take the whole grace period: longer than the client's default
        // request timeout allows.
        let docker = self
            .docker
            .clone()
            .with_timeout(Duration::from_secs(grace_secs.max(0) as u64 + 60));
        match docker.stop_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            // Already stopped (304 is taken as success) or already gone.
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(failed("stopping container", &e)),
        }
    }
}

/// A container's state as the waits see it.
enum Observed {
    Gone,
    NotStarted,
    /// Running (or paused, restarting), with its health when it has a
    /// healthcheck.
    Running(Option<HealthStatusEnum>),
    Exited(ExitStatus),
}

/// Wakes a wait loop when something may have changed.
struct Watch {
    events: Option<BoxStream<'static, Result<EventMessage, DockerError>>>,
}

impl Watch {
    /// Returns at the next event about the container, or after the fallback
    /// period. An event stream that breaks (engine restart) is dropped and
    /// the loop falls back to polling.
    async fn changed(&mut self) {
        let Some(events) = self.events.as_mut() else {
            tokio::time::sleep(FALLBACK_POLL / 5).await;
            return;
        };
        match tokio::time::timeout(FALLBACK_POLL, events.next()).await {
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "docker events stream failed; polling instead");
                self.events = None;
            }
            Ok(None) => self.events = None,
        }
    }
}

#[async_trait]
impl Executor for DockerExecutor {
    fn kind(&self) -> &'static str {
        "docker"
    }

    async fn describe(&self) -> NodeDescription {
        let mut description = super::process::host_description("unknown");
        match self.docker.info().await {
            Ok(info) => {
                let set = |target: &mut String, value: Option<String>| {
                    if let Some(value) = value.filter(|v| !v.is_empty()) {
                        *target = value;
                    }
                };
                set(&mut description.hostname, info.name);
                set(&mut description.os, info.os_type);
                set(&mut description.architecture, info.architecture);
                set(&mut description.engine_version, info.server_version);
                if let Some(cpus) = info.ncpu.filter(|&n| n > 0) {
                    description.nano_cpus = cpus * 1_000_000_000;
                }
                if let Some(memory) = info.mem_total.filter(|&n| n > 0) {
                    description.memory_bytes = memory;
                }
            }
            Err(e) => tracing::warn!(error = %e, "docker info failed; describing the host instead"),
        }
        // Once the node's overlay networks run, the scheduler may place
        // tasks on networks here.
        if self.networks().is_some() {
            description.network_plugins = super::NETWORK_PLUGINS
                .iter()
                .map(|p| p.to_string())
                .collect();
        }
        description
    }

    async fn list(&self, node_id: &str) -> Result<Vec<Existing>, ExecError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{NODE_ID_LABEL}={node_id}"),
                format!("{MANAGED_LABEL}=true"),
            ],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| failed("listing containers", &e))?;
        let mut existing = Vec::new();
        for container in containers {
            let labels = container.labels.unwrap_or_default();
            let (Some(task_id), Some(id)) = (labels.get(TASK_ID_LABEL), container.id) else {
                continue;
            };
            let running =
                container.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING);
            let mut runtime = RuntimeInfo {
                container_id: Some(id.clone()),
                ..Default::default()
            };
            if running {
                // The task's ports are on the container (see PORTS_LABEL).
                let mut task = Task::default();
                task.runtime.ports = spec::ports_of(&labels);
                let wanted = ports::requested(&task).unwrap_or_default();
                if let Some(inspected) = self.inspect(&id).await? {
                    runtime = runtime_info(inspected, &wanted).unwrap_or_else(|(info, why)| {
                        tracing::warn!(container = %id, "adopted container: {why}");
                        info
                    });
                }
            }
            existing.push(Existing {
                task_id: task_id.clone(),
                running,
                runtime,
            });
        }
        Ok(existing)
    }

    async fn prepare(&self, task: &Task, files: &TaskFiles) -> Result<(), ExecError> {
        let image = container_spec(task)
            .and_then(|spec| spec.image.clone())
            .filter(|image| !image.is_empty())
            .ok_or_else(|| ExecError::Rejected("task has no image".to_string()))?;
        let ports = ports::requested(task).map_err(ExecError::Rejected)?;
        // Before anything is attached for it: a task whose options are
        // malformed cannot run here.
        if let Some(spec) = container_spec(task) {
            options::apply(&mut Default::default(), spec).map_err(ExecError::Rejected)?;
        }
        if self.find_container(task).await?.is_some() {
            return Ok(());
        }
        let attached = self.attach(task).await?;
        self.ensure_image(&image, task.runtime.registry_auth.as_ref())
            .await;
        let name = container_name(task);
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        let mut body = spec::create_body(task, &ports, self.dns(), &attached);
        if let Some(host) = body.host_config.as_mut() {
            host.mounts
                .get_or_insert_with(Vec::new)
                .extend(spec::file_mounts(files));
            if let Some(spec) = container_spec(task) {
                options::apply(host, spec).map_err(ExecError::Rejected)?;
            }
        }
        match self.docker.create_container(Some(options), body).await {
            Ok(created) => {
                for warning in created.warnings {
                    tracing::warn!(container = %name, %warning, "container created with a warning");
                }
                self.connect_networks(&name, &attached).await
            }
            // Same name: created by an earlier attempt whose answer was lost,
            // or a stranger. Only ours (same task id) may be reused.
            Err(e) if status(&e) == Some(409) => match self.find_container(task).await? {
                Some(_) => Ok(()),
                None => Err(ExecError::Rejected(message(&e))),
            },
            // A bad spec (400) or a missing image (404) can never run here.
            Err(e) if matches!(status(&e), Some(400 | 404)) => {
                Err(ExecError::Rejected(message(&e)))
            }
            Err(e) => Err(failed("creating container", &e)),
        }
    }

    async fn start(&self, task: &Task) -> Result<RuntimeInfo, ExecError> {
        let name = container_name(task);
        let wanted = ports::requested(task).map_err(ExecError::Rejected)?;
        let container = self.inspect(&name).await?.ok_or_else(|| removed(&name))?;
        // A task runs once: a container that ran already (a restarted daemon
        // may ask again) is not started a second time; `wait` reports how it
        // ended.
        let state = container.state.as_ref().and_then(|s| s.status);
        if state != Some(ContainerStateStatusEnum::CREATED) {
            return self.started(&name, container, &wanted).await;
        }
        if let Err(e) = self.docker.start_container(&name, None).await {
            return Err(match status(&e) {
                Some(404) => removed(&name),
                // The engine refused to run this container (no such
                // executable, bad mount...): like Docker, the task is
                // rejected.
                Some(_) => {
                    ExecError::Rejected(format!("starting container failed: {}", message(&e)))
                }
                None => failed("starting container", &e),
            });
        }
        let container = self.inspect(&name).await?.ok_or_else(|| removed(&name))?;
        self.started(&name, container, &wanted).await
    }

    async fn wait_healthy(&self, task: &Task) -> Result<(), ExecError> {
        let name = container_name(task);
        let mut watch = self.watch(&name);
        let mut cause: Option<&str> = None;
        loop {
            match self.observe(&name).await? {
                Observed::Gone => return Err(removed(&name)),
                Observed::NotStarted => {
                    return Err(ExecError::Failed(format!(
                        "container {name} is not started"
                    )))
                }
                // Docker's rule: a task that ends well before its first
                // healthy check simply completed; `wait` reports it.
                Observed::Exited(status) if status.code == 0 => return Ok(()),
                Observed::Exited(status) => {
                    return Err(ExecError::Failed(exit_error(&status, cause)))
                }
                Observed::Running(Some(HealthStatusEnum::UNHEALTHY)) if cause.is_none() => {
                    // Stop it, then report how it ended, as Docker does.
                    cause = Some(UNHEALTHY);
                    self.shutdown(task).await?;
                    continue;
                }
                Observed::Running(Some(
                    HealthStatusEnum::STARTING | HealthStatusEnum::UNHEALTHY,
                )) => {}
                // Healthy, or no healthcheck at all.
                Observed::Running(_) => return Ok(()),
            }
            watch.changed().await;
        }
    }

    async fn wait(&self, task: &Task) -> Result<ExitStatus, ExecError> {
        let name = container_name(task);
        let mut watch = self.watch(&name);
        let mut cause: Option<&str> = None;
        loop {
            match self.observe(&name).await? {
                Observed::Gone => return Err(removed(&name)),
                Observed::Exited(mut status) => {
                    if let Some(cause) = cause {
                        status.message = Some(cause.to_string());
                    }
                    return Ok(status);
                }
                // A running task that turns unhealthy is stopped: Docker's
                // rule, and what lets the restart policy replace it.
                Observed::Running(Some(HealthStatusEnum::UNHEALTHY)) if cause.is_none() => {
                    cause = Some(UNHEALTHY);
                    self.shutdown(task).await?;
                    continue;
                }
                Observed::Running(_) | Observed::NotStarted => {}
            }
            watch.changed().await;
        }
    }

    async fn shutdown(&self, task: &Task) -> Result<(), ExecError> {
        let target = self.target(task).await;
        self.stop(&target, spec::stop_grace_secs(task)).await
    }

    async fn remove(&self, task: &Task) -> Result<(), ExecError> {
        let name = self.target(task).await;
        let options = RemoveContainerOptions {
            force: true,
            // The container's anonymous volumes go with it, as in Docker.
            v: true,
            link: false,
        };
        match self.docker.remove_container(&name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            // 409: a removal is already in progress.
            Err(e) if status(&e) == Some(409) => Ok(()),
            Err(e) => Err(failed("removing container", &e)),
        }
    }

    async fn logs(
        &self,
        task: &Task,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, LogLine>, ExecError> {
        let name = container_name(task);
        // The logs request only fails once its stream is read: ask first so
        // a missing container is an error, not an empty stream.
        if self.inspect(&name).await?.is_none() {
            return Err(removed(&name));
        }
        // The engine refuses a request for neither stream; both is what a
        // caller that set neither means.
        let both = !opts.stdout && !opts.stderr;
        let options = LogsOptions {
            follow: opts.follow,
            stdout: opts.stdout || both,
            stderr: opts.stderr || both,
            since: opts
                .since
                .map_or(0, |s| i32::try_from(s.max(0)).unwrap_or(i32::MAX)),
            until: 0,
            // Always, so every line carries the engine's own time.
            timestamps: true,
            tail: opts
                .tail
                .map_or_else(|| "all".to_string(), |n| n.to_string()),
        };
        let lines = self
            .docker
            .logs(&name, Some(options))
            .take_while(|item| {
                if let Err(e) = item {
                    tracing::debug!(error = %e, "container log stream ended");
                }
                futures::future::ready(item.is_ok())
            })
            .filter_map(|item| futures::future::ready(item.ok().and_then(log_line)));
        Ok(lines.boxed())
    }

    async fn exec(
        &self,
        task: &Task,
        spec: &flotilla_store::exec::ExecSpec,
    ) -> Result<super::ExecProcess, ExecError> {
        exec::run(self, task, spec).await
    }
}

fn removed(name: &str) -> ExecError {
    ExecError::NotFound(format!("container {name} removed"))
}

/// Where the container lives and, while it runs, the host ports of its
/// `wanted` ports (from `ports::requested`). Err when a port is not bound,
/// with what could be told anyway.
fn runtime_info(
    container: ContainerInspectResponse,
    wanted: &[EndpointPortConfig],
) -> Result<RuntimeInfo, (RuntimeInfo, String)> {
    let running = container
        .state
        .as_ref()
        .is_some_and(|s| s.running == Some(true));
    let mut info = RuntimeInfo {
        container_id: container.id,
        pid: container.state.and_then(|s| s.pid).filter(|&pid| pid > 0),
        ports: Vec::new(),
    };
    // A stopped container has no bindings left; it has nothing to reach.
    if !running || wanted.is_empty() {
        return Ok(info);
    }
    let bound = container.network_settings.and_then(|n| n.ports);
    match ports::published(wanted, bound.as_ref()) {
        Ok(ports) => {
            info.ports = ports;
            Ok(info)
        }
        Err(why) => Err((info, why)),
    }
}

/// Splits "<timestamp> <line>" as the engine sends it with timestamps on.
fn log_line(output: bollard::container::LogOutput) -> Option<LogLine> {
    use bollard::container::LogOutput;
    let (stream, message) = match output {
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            (LogStream::Stdout, message)
        }
        LogOutput::StdErr { message } => (LogStream::Stderr, message),
        LogOutput::StdIn { .. } => return None,
    };
    let space = message.iter().position(|&b| b == b' ')?;
    let timestamp = String::from_utf8_lossy(&message[..space]).into_owned();
    Some(LogLine {
        stream,
        timestamp,
        line: message.slice(space + 1..),
    })
}

/// Docker's text for a task that ended badly: "task: non-zero exit (137):
/// dockerexec: unhealthy container".
fn exit_error(status: &ExitStatus, cause: Option<&str>) -> String {
    match cause.or(status.message.as_deref()) {
        Some(cause) => format!("task: non-zero exit ({}): {cause}", status.code),
        None => format!("task: non-zero exit ({})", status.code),
    }
}

/// The HTTP status of an engine error, when the engine answered at all.
fn status(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own message, which users know from the docker CLI.
fn message(error: &DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn failed(doing: &str, error: &DockerError) -> ExecError {
    ExecError::Failed(format!("{doing} failed: {}", message(error)))
}

#[cfg(test)]
mod registry_tests {
    use super::registry_credentials;

    #[test]
    fn registry_auth_headers_decode_padded_or_not() {
        // {"username":"u","password":"p","serveraddress":"reg:5000"}
        let json = r#"{"username":"u","password":"p","serveraddress":"reg:5000"}"#;
        use base64::Engine;
        for engine in [
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            let c = registry_credentials(&engine.encode(json)).unwrap();
            assert_eq!(c.username.as_deref(), Some("u"));
            assert_eq!(c.password.as_deref(), Some("p"));
            assert_eq!(c.serveraddress.as_deref(), Some("reg:5000"));
        }
        assert!(registry_credentials("not base64 at all!").is_none());
    }
}
