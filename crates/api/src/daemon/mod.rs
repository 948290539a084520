//! The daemon: what a node runs. Always the API and an executor; once the
//! node is in a swarm, its membership: the store, the dispatcher, the
//! leader's controllers and the agent. Membership survives restarts: the
//! node's identity and the Raft data stay under `--data-dir`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flotilla_agent::exec::{Executor, NodeDescription};
use flotilla_agent::session::{Assignments, Session};
use flotilla_agent::worker::Worker;
use flotilla_manager::controlapi::swarm::{init_ops, random_base36, InitParams};
use flotilla_manager::dispatcher::{Dispatcher, DEFAULT_HEARTBEAT};
use flotilla_manager::Error;
use flotilla_store::models::{self as m, SwarmInitRequest, TaskStatus};
use flotilla_store::{ids, Store, StoreConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, RwLock};
use tokio::task::JoinHandle;

pub const DEFAULT_PORT: u16 = 2377;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    Auto,
    Docker,
    Process,
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub data_dir: PathBuf,
    pub executor: ExecutorKind,
    /// The Docker Engine for the docker executor and for pass-through
    /// (`unix:///var/run/docker.sock` when not given).
    pub docker_host: Option<String>,
    /// Overrides the OS hostname in the node's description.
    pub hostname: Option<String>,
}

/// Who this node is in its swarm; written at init/join, read at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Identity {
    node_id: String,
    raft_id: u64,
    addr: String,
}

/// A running swarm membership.
pub struct Membership {
    pub store: Store,
    pub dispatcher: Arc<Dispatcher>,
    pub node_id: String,
    pub addr: String,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

pub struct Daemon {
    pub cfg: DaemonConfig,
    pub exec: Arc<dyn Executor>,
    /// The Docker Engine socket requests outside the swarm API go to.
    pub engine: Option<PathBuf>,
    pub description: NodeDescription,
    membership: RwLock<Option<Arc<Membership>>>,
    pub started: std::time::Instant,
}

fn swarm_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("swarm")
}

fn unix_path(host: &str) -> PathBuf {
    PathBuf::from(host.strip_prefix("unix://").unwrap_or(host))
}

impl Daemon {
    pub async fn start(cfg: DaemonConfig) -> anyhow::Result<Arc<Daemon>> {
        std::fs::create_dir_all(&cfg.data_dir)?;
        let docker_host = cfg
            .docker_host
            .clone()
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        let (exec, engine): (Arc<dyn Executor>, Option<PathBuf>) = match cfg.executor {
            ExecutorKind::Process => (
                process_executor(&cfg),
                docker_socket_if_alive(&docker_host).await,
            ),
            ExecutorKind::Docker => {
                let d = flotilla_agent::exec::docker::DockerExecutor::connect(Some(&docker_host))
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "--executor docker: no Docker Engine answers at {docker_host}: {e}"
                        )
                    })?;
                (Arc::new(d), Some(unix_path(&docker_host)))
            }
            ExecutorKind::Auto => {
                match flotilla_agent::exec::docker::DockerExecutor::connect(Some(&docker_host))
                    .await
                {
                    Ok(d) => (Arc::new(d), Some(unix_path(&docker_host))),
                    Err(e) => {
                        tracing::info!(
                            "no Docker Engine at {docker_host} ({e}): tasks run as host processes"
                        );
                        (process_executor(&cfg), None)
                    }
                }
            }
        };
        let mut description = exec.describe().await;
        if let Some(h) = &cfg.hostname {
            description.hostname = h.clone();
        }
        tracing::info!("executor: {}", exec.kind());
        let daemon = Arc::new(Daemon {
            cfg,
            exec,
            engine,
            description,
            membership: RwLock::new(None),
            started: std::time::Instant::now(),
        });
        if let Some(id) = daemon.read_identity()? {
            tracing::info!("rejoining swarm as node {}", id.node_id);
            let m = daemon.clone().run_membership(id, false).await?;
            *daemon.membership.write().await = Some(m);
        }
        Ok(daemon)
    }

    pub async fn membership(&self) -> Option<Arc<Membership>> {
        self.membership.read().await.clone()
    }

    /// The store, or Docker's "not a swarm manager" error.
    pub async fn store(&self) -> Result<Store, Error> {
        self.membership()
            .await
            .map(|m| m.store.clone())
            .ok_or_else(|| Error::Unavailable(flotilla_manager::error::NOT_IN_SWARM.into()))
    }

    fn identity_path(&self) -> PathBuf {
        swarm_dir(&self.cfg.data_dir).join("node.json")
    }

    fn read_identity(&self) -> anyhow::Result<Option<Identity>> {
        match std::fs::read(self.identity_path()) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn node_description(&self) -> m::NodeDescription {
        description_model(&self.description)
    }

    /// `POST /swarm/init`: returns the new node's ID.
    pub async fn init(self: &Arc<Self>, req: SwarmInitRequest) -> Result<String, Error> {
        let mut slot = self.membership.write().await;
        if slot.is_some() {
            return Err(Error::Unavailable(
                "This node is already part of a swarm. Use \"docker swarm leave\" to leave this swarm and join another one.".into(),
            ));
        }
        if req.force_new_cluster == Some(true) {
            return Err(Error::InvalidArgument(
                "--force-new-cluster: this node is not part of a swarm to recover".into(),
            ));
        }
        let autolock = req
            .spec
            .as_ref()
            .and_then(|s| s.encryption_config.as_ref())
            .and_then(|e| e.auto_lock_managers);
        if autolock == Some(true) {
            return Err(Error::InvalidArgument(
                "autolock is not supported by Flotilla yet".into(),
            ));
        }
        let addr = advertise_addr(req.advertise_addr.as_deref(), req.listen_addr.as_deref())?;
        let id = Identity {
            node_id: ids::new_id(),
            raft_id: rand::random::<u64>() >> 1,
            addr: addr.clone(),
        };
        let dir = swarm_dir(&self.cfg.data_dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Internal(format!("creating {}: {e}", dir.display())))?;
        let m = self
            .clone()
            .run_membership(id.clone(), true)
            .await
            .map_err(|e| Error::Internal(format!("starting the swarm: {e:#}")))?;
        let ops = init_ops(InitParams {
            node_id: id.node_id.clone(),
            addr,
            description: self.node_description(),
            spec: req.spec.unwrap_or_default(),
            // The digest of the cluster's root CA goes here once the CA lands.
            ca_digest: random_base36(50),
        });
        if let Err(e) = m
            .store
            .propose(ops)
            .await
            .and_then(|(_, r)| r.into_iter().collect::<Result<Vec<_>, _>>())
        {
            m.stop().await;
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.into());
        }
        // Written last: a crash before this point leaves no half-made swarm behind.
        let bytes = serde_json::to_vec_pretty(&id).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(self.identity_path(), bytes)
            .map_err(|e| Error::Internal(format!("writing node identity: {e}")))?;
        *slot = Some(m);
        Ok(id.node_id)
    }

    /// `POST /swarm/leave?force=…`.
    pub async fn leave(&self, force: bool) -> Result<(), Error> {
        let mut slot = self.membership.write().await;
        let Some(m) = slot.clone() else {
            return Err(Error::Unavailable(
                "This node is not part of a swarm".into(),
            ));
        };
        if !force {
            return Err(Error::Unavailable(
                "You are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message.".into(),
            ));
        }
        m.stop().await;
        // Leaving ends this node's tasks, as Docker removes its swarm containers.
        let tasks: Vec<m::Task> = m
            .store
            .read(|s| s.tasks_on_node(&m.node_id).cloned().collect());
        for t in &tasks {
            let _ = self.exec.shutdown(t).await;
            let _ = self.exec.remove(t).await;
        }
        if let Ok(list) = self.exec.list(&m.node_id).await {
            for e in list {
                let t = m::Task {
                    id: Some(e.task_id),
                    ..Default::default()
                };
                let _ = self.exec.shutdown(&t).await;
                let _ = self.exec.remove(&t).await;
            }
        }
        m.store.shutdown().await;
        *slot = None;
        let dir = swarm_dir(&self.cfg.data_dir);
        std::fs::remove_dir_all(&dir)
            .map_err(|e| Error::Internal(format!("removing {}: {e}", dir.display())))?;
        Ok(())
    }

    async fn run_membership(
        self: Arc<Self>,
        id: Identity,
        bootstrap: bool,
    ) -> anyhow::Result<Arc<Membership>> {
        let store = Store::open(StoreConfig {
            data_dir: swarm_dir(&self.cfg.data_dir),
            node_id: id.node_id.clone(),
            raft_id: id.raft_id,
            addr: id.addr.clone(),
        })
        .await?;
        if bootstrap {
            store.bootstrap().await?;
        }
        if !store.wait_for_leader(Duration::from_secs(15)).await {
            tracing::warn!("no Raft leader yet; the API answers writes once one is elected");
        }
        let period = store
            .read(|s| {
                s.cluster
                    .as_ref()
                    .and_then(|c| c.spec.as_ref())
                    .and_then(|s| s.dispatcher.as_ref())
                    .and_then(|d| d.heartbeat_period)
            })
            .filter(|p| *p > 0)
            .map_or(DEFAULT_HEARTBEAT, |ns| Duration::from_nanos(ns as u64));
        let dispatcher = Dispatcher::start(store.clone(), period);
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(flotilla_manager::leader::run(
            store.clone(),
            dispatcher.clone(),
            stop_rx.clone(),
        )));
        let session = Arc::new(LocalSession {
            dispatcher: dispatcher.clone(),
            node_id: id.node_id.clone(),
            addr: flotilla_manager::controlapi::swarm::host_of(&id.addr).to_string(),
            hostname: self.cfg.hostname.clone(),
        });
        let worker = Worker::new(session, self.exec.clone(), id.node_id.clone());
        tasks.push(tokio::spawn(worker.run(stop_rx)));
        Ok(Arc::new(Membership {
            store,
            dispatcher,
            node_id: id.node_id,
            addr: id.addr,
            stop,
            tasks,
        }))
    }
}

impl Membership {
    async fn stop(&self) {
        self.stop.send_replace(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn process_executor(cfg: &DaemonConfig) -> Arc<dyn Executor> {
    Arc::new(flotilla_agent::exec::process::ProcessExecutor::new(
        cfg.data_dir.join("process"),
    ))
}

async fn docker_socket_if_alive(host: &str) -> Option<PathBuf> {
    let path = unix_path(host);
    let ok = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::UnixStream::connect(&path),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    ok.then_some(path)
}

/// Docker's rules: the advertise address if given, else the listen
/// address unless it is a wildcard, else this host's outbound address;
/// port 2377 unless one is given.
fn advertise_addr(advertise: Option<&str>, listen: Option<&str>) -> Result<String, Error> {
    let with_port = |a: &str| {
        if a.parse::<std::net::SocketAddr>().is_ok()
            || (a.contains(':')
                && !a.contains("::")
                && a.rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok()))
        {
            a.to_string()
        } else {
            format!("{a}:{DEFAULT_PORT}")
        }
    };
    if let Some(a) = advertise.filter(|a| !a.is_empty()) {
        let addr = with_port(a);
        let host = flotilla_manager::controlapi::swarm::host_of(&addr);
        if host.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::InvalidArgument(format!(
                "advertise address must be a non-zero IP address or network interface (with optional port number): {a}"
            )));
        }
        return Ok(addr);
    }
    if let Some(l) = listen.filter(|l| !l.is_empty()) {
        let addr = with_port(l);
        let host = flotilla_manager::controlapi::swarm::host_of(&addr);
        if host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| !ip.is_unspecified())
        {
            return Ok(addr);
        }
    }
    // The address the kernel would use for outbound traffic; connecting a
    // UDP socket sends nothing.
    let ip = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into());
    Ok(format!("{ip}:{DEFAULT_PORT}"))
}

/// The agent of a manager node talks to its own dispatcher directly.
struct LocalSession {
    dispatcher: Arc<Dispatcher>,
    node_id: String,
    addr: String,
    hostname: Option<String>,
}

/// The executor's view of the node in Docker's model.
fn description_model(d: &NodeDescription) -> m::NodeDescription {
    m::NodeDescription {
        hostname: Some(d.hostname.clone()),
        platform: Some(m::Platform {
            architecture: Some(d.architecture.clone()),
            os: Some(d.os.clone()),
        }),
        resources: Some(m::ResourceObject {
            nano_cpus: Some(d.nano_cpus),
            memory_bytes: Some(d.memory_bytes),
            ..Default::default()
        }),
        engine: Some(m::EngineDescription {
            engine_version: Some(d.engine_version.clone()),
            labels: Some(Default::default()),
            plugins: None,
        }),
        tls_info: None,
    }
}

#[async_trait]
impl Session for LocalSession {
    async fn register(&self, mut description: NodeDescription) -> Result<Duration, String> {
        if let Some(h) = &self.hostname {
            description.hostname = h.clone();
        }
        self.dispatcher
            .register(&self.node_id, description_model(&description), &self.addr)
            .await
            .map_err(|e| e.to_string())?;
        Ok(self.dispatcher.period())
    }

    async fn heartbeat(&self) -> Result<(), String> {
        self.dispatcher.heartbeat(&self.node_id);
        Ok(())
    }

    async fn assignments(&self) -> Result<watch::Receiver<Assignments>, String> {
        Ok(self.dispatcher.assignments(&self.node_id))
    }

    fn report(&self, task_id: &str, status: TaskStatus) {
        self.dispatcher.report(&self.node_id, task_id, status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_address_rules() {
        assert_eq!(
            advertise_addr(Some("10.1.2.3"), None).unwrap(),
            "10.1.2.3:2377"
        );
        assert_eq!(
            advertise_addr(Some("10.1.2.3:4000"), None).unwrap(),
            "10.1.2.3:4000"
        );
        assert_eq!(
            advertise_addr(None, Some("127.0.0.5:2377")).unwrap(),
            "127.0.0.5:2377"
        );
        assert!(advertise_addr(Some("not an ip"), None).is_err());
        assert!(advertise_addr(None, Some("0.0.0.0:2377"))
            .unwrap()
            .ends_with(":2377"));
    }
}
