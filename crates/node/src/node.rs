//! The node: always an executor (and the API in front, see [`crate::run`]);
//! once in a swarm, its [`Membership`]. Membership survives restarts: the
//! node's identity, certificate and (for managers) the Raft data stay under
//! `--data-dir`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flotilla_agent::exec::Executor;
use flotilla_api::node::{Local, NodeControl, Place};
use flotilla_manager::controlapi::swarm::{init as new_swarm, InitParams, NetworkDefaults};
use flotilla_manager::Error;
use flotilla_store::models::{self as m, SwarmInitRequest, SwarmJoinRequest};
use flotilla_store::raft::seal::{LockError, UnlockKey};
use flotilla_store::{ids, Store};
use tokio::sync::RwLock;

use crate::addr;
use crate::identity::{Files, Identity};
use crate::membership::{self, Bootstrap, Context, Membership};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    Auto,
    Docker,
    Process,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub executor: ExecutorKind,
    /// The Docker Engine for the docker executor and for pass-through
    /// (`unix:///var/run/docker.sock` when not given).
    pub docker_host: Option<String>,
    /// Overrides the OS hostname in the node's description.
    pub hostname: Option<String>,
    /// Generic resources the node offers (`--node-generic-resource`).
    pub generic_resources: Vec<flotilla_store::models::GenericResourcesInner>,
    /// Serve VIPs, task addresses and DNS (needs CAP_NET_ADMIN and the
    /// node's network namespace to itself).
    pub service_addrs: bool,
    /// Which routing mesh serves published ports and VIPs (`--mesh`).
    pub mesh: flotilla_agent::network::MeshMode,
    /// Keep clients' addresses through the mesh (`--mesh-client-addr`).
    pub mesh_client_addr: bool,
    /// Where Prometheus scrapes the node (`--metrics-addr`); off if none.
    pub metrics_addr: Option<String>,
}

pub struct Node {
    /// The executor, the engine beside the node, its description.
    local: Local,
    ctx: Context,
    membership: RwLock<Option<Arc<Membership>>>,
    /// Why a membership on disk could not be resumed (an expired
    /// certificate), for the API to say.
    resume_error: RwLock<Option<String>>,
    /// A manager of an autolocked swarm that restarted: who it is, until
    /// `swarm unlock` gives the key its keys are wrapped with.
    locked: RwLock<Option<Identity>>,
}

const SWARM_LOCKED: &str = "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"docker swarm unlock\" to unlock it.";

const NOT_A_MANAGER: &str = "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.";
const ALREADY_IN_SWARM: &str = "This node is already part of a swarm. Use \"docker swarm leave\" to leave this swarm and join another one.";

fn unix_path(host: &str) -> PathBuf {
    PathBuf::from(host.strip_prefix("unix://").unwrap_or(host))
}

impl Node {
    pub async fn start(cfg: NodeConfig) -> anyhow::Result<Arc<Node>> {
        std::fs::create_dir_all(&cfg.data_dir)?;
        // The swarm's state, keys and certificates live here: the node's
        // user only.
        if let Err(e) = std::fs::set_permissions(
            &cfg.data_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        ) {
            tracing::warn!("cannot make {} private (0700): {e}", cfg.data_dir.display());
        }
        let docker_host = cfg
            .docker_host
            .clone()
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        use flotilla_agent::exec::docker::DockerExecutor;
        let (docker, engine) = match cfg.executor {
            ExecutorKind::Process => (None, docker_socket_if_alive(&docker_host).await),
            ExecutorKind::Docker => {
                let d = DockerExecutor::connect(Some(&docker_host))
                    .await
                    .map_err(|e| anyhow::anyhow!("--executor docker: {e}"))?;
                (Some(Arc::new(d)), Some(unix_path(&docker_host)))
            }
            // Never host processes without being asked: a task's command
            // would run on the host instead of in its image.
            ExecutorKind::Auto => match DockerExecutor::connect(Some(&docker_host)).await {
                Ok(d) => (Some(Arc::new(d)), Some(unix_path(&docker_host))),
                Err(e) => anyhow::bail!(
                    "no Docker Engine answers at {docker_host} ({e}): start one, point \
                     --docker-host at it, or run tasks as host processes with --executor process"
                ),
            },
        };
        let exec: Arc<dyn Executor> = match &docker {
            Some(d) => d.clone(),
            None => process_executor(&cfg),
        };
        let mut description = exec.describe().await;
        if let Some(h) = &cfg.hostname {
            description.hostname = h.clone();
        }
        description
            .generic_resources
            .extend(cfg.generic_resources.iter().cloned());

        tracing::info!("executor: {}", exec.kind());
        let ctx = Context {
            exec: exec.clone(),
            docker,
            service_addrs: cfg.service_addrs,
            mesh: cfg.mesh,
            mesh_client_addr: cfg.mesh_client_addr,
            hostname: cfg.hostname.clone(),
            generic_resources: cfg.generic_resources.clone(),
            files: Files::new(&cfg.data_dir),
            task_files: flotilla_agent::taskfiles::TmpfsRoot::for_data_dir(&cfg.data_dir),
            relays: Default::default(),
        };
        let daemon = Arc::new(Node {
            local: Local {
                exec,
                engine,
                description,
                data_dir: cfg.data_dir,
            },
            ctx,
            membership: RwLock::new(None),
            resume_error: RwLock::new(None),
            locked: RwLock::new(None),
        });
        let files = &daemon.ctx.files;
        if let Some(id) = files.read_identity()?.filter(|_| files.is_locked()) {
            tracing::warn!(
                "node {}: the swarm is locked; nothing is served until `swarm unlock`",
                id.node_id
            );
            *daemon.locked.write().await = Some(id);
        } else if let Some((id, cert, ca)) = files.read()? {
            tracing::info!(
                "rejoining swarm as node {} ({})",
                id.node_id,
                if id.manager { "manager" } else { "worker" }
            );
            match membership::start(&daemon.ctx, id, cert, ca, None, Bootstrap::Resume).await {
                Ok(m) => {
                    let m = Arc::new(m);
                    daemon.follow_role(&m);
                    *daemon.membership.write().await = Some(m);
                }
                Err(e) => {
                    tracing::error!("cannot resume swarm membership: {e:#}");
                    *daemon.resume_error.write().await = Some(format!("{e:#}"));
                }
            }
        }
        Ok(daemon)
    }

    /// The membership, unless it is being changed right now (no wait:
    /// for callers that cannot).
    pub(crate) fn membership_now(&self) -> Option<Arc<Membership>> {
        self.membership.try_read().ok()?.clone()
    }

    pub async fn membership(&self) -> Option<Arc<Membership>> {
        self.membership.read().await.clone()
    }

    /// The node's swarm part stopped in order (agent, manager, Raft; see
    /// [`Membership::stop`]), for a daemon that is exiting: its tasks keep
    /// running and its state is on disk for the next start.
    pub async fn shutdown(&self) {
        let membership = self.membership.write().await.take();
        if let Some(m) = membership {
            m.stop().await;
        }
    }

    /// The node's ID while it waits for its unlock key.
    pub async fn locked(&self) -> Option<String> {
        self.locked
            .read()
            .await
            .as_ref()
            .map(|id| id.node_id.clone())
    }

    /// `POST /swarm/unlock`: takes the key if it opens this manager's
    /// keys, and resumes the membership with it.
    pub async fn unlock(self: &Arc<Self>, key: &str) -> Result<(), Error> {
        let mut slot = self.membership.write().await;
        let mut locked = self.locked.write().await;
        let Some(id) = locked.clone() else {
            return Err(Error::Conflict("swarm is not locked".into()));
        };
        let key = UnlockKey::parse(key).map_err(Error::InvalidArgument)?;
        let files = &self.ctx.files;
        files.unlock(key).map_err(|_| {
            Error::Unauthorized("swarm could not be unlocked: invalid key provided".into())
        })?;
        let (_, cert, ca) = files
            .read()
            .and_then(|r| r.ok_or_else(|| anyhow::anyhow!("no identity on disk")))
            .map_err(internal)?;
        let m = membership::start(&self.ctx, id, cert, ca, None, Bootstrap::Resume)
            .await
            .map_err(|e| {
                let wrong = e
                    .chain()
                    .any(|c| c.downcast_ref::<LockError>() == Some(&LockError::WrongKey));
                if wrong {
                    Error::Unauthorized("swarm could not be unlocked: invalid key provided".into())
                } else {
                    Error::Internal(format!("swarm component could not be started: {e:#}"))
                }
            });
        let m = match m {
            Ok(m) => Arc::new(m),
            Err(e) => {
                files.forget_key();
                return Err(e);
            }
        };
        tracing::info!("unlocked");
        self.follow_role(&m);
        *slot = Some(m);
        *locked = None;
        Ok(())
    }

    /// The store, or Docker's error for a node that is not a manager.
    pub async fn store(&self) -> Result<Store, Error> {
        if self.locked.read().await.is_some() {
            return Err(Error::Unavailable(SWARM_LOCKED.into()));
        }
        match self.membership().await {
            Some(m) => m
                .store
                .clone()
                .ok_or_else(|| Error::Unavailable(NOT_A_MANAGER.into())),
            None => match self.resume_error.read().await.clone() {
                Some(e) => Err(Error::Unavailable(e)),
                None => Err(Error::NotInSwarm),
            },
        }
    }

    /// `POST /swarm/init`: returns the new node's ID.
    pub async fn init(self: &Arc<Self>, req: SwarmInitRequest) -> Result<String, Error> {
        let mut slot = self.membership.write().await;
        if self.locked.read().await.is_some() {
            return Err(Error::Unavailable(SWARM_LOCKED.into()));
        }
        if req.force_new_cluster == Some(true) {
            let Some(old) = slot.take() else {
                return Err(Error::InvalidArgument(
                    "--force-new-cluster: this node is not part of a swarm to recover".into(),
                ));
            };
            if !old.id.manager {
                *slot = Some(old);
                return Err(Error::Unavailable(NOT_A_MANAGER.into()));
            }
            let forced = self.force_new_cluster(old).await;
            let m = match forced {
                Ok(m) => m,
                Err(e) => {
                    // Back as it was, without quorum, rather than out of the swarm.
                    if let Ok(Some((id, cert, ca))) = self.ctx.files.read() {
                        if let Ok(m) =
                            membership::start(&self.ctx, id, cert, ca, None, Bootstrap::Resume)
                                .await
                        {
                            let m = Arc::new(m);
                            self.follow_role(&m);
                            *slot = Some(m);
                        }
                    }
                    return Err(e);
                }
            };
            let node_id = m.id.node_id.clone();
            let m = Arc::new(m);
            self.follow_role(&m);
            *slot = Some(m);
            return Ok(node_id);
        }
        if slot.is_some() {
            return Err(Error::Unavailable(ALREADY_IN_SWARM.into()));
        }
        let (listener, listen, advertise) =
            bind(req.listen_addr.as_deref(), req.advertise_addr.as_deref()).await?;
        let node_id = ids::new_id();
        let new = new_swarm(InitParams {
            node_id: node_id.clone(),
            addr: advertise.clone(),
            description: self.local.description.to_model(),
            spec: req.spec.unwrap_or_default(),
            network: NetworkDefaults {
                default_addr_pool: req.default_addr_pool.unwrap_or_default(),
                subnet_size: req.subnet_size.unwrap_or_default(),
                data_path_port: req.data_path_port.unwrap_or_default(),
            },
        })?;
        let id = Identity {
            node_id: node_id.clone(),
            manager: true,
            cluster_id: new.cluster_id.clone(),
            raft_id: rand::random::<u64>() >> 1,
            addr: advertise,
            listen_addr: listen,
            managers: Vec::new(),
        };
        let files = &self.ctx.files;
        files.remove_all().map_err(internal)?;
        // With --autolock the keys are wrapped from the first write on.
        files.relock(new.unlock_key.clone()).map_err(internal)?;
        files
            .write_cert(&new.node_cert, &new.root_ca_pem)
            .map_err(internal)?;
        let started = membership::start(
            &self.ctx,
            id.clone(),
            new.node_cert,
            new.root_ca_pem,
            Some(listener),
            Bootstrap::Init(new.ops),
        )
        .await;
        let m = match started {
            Ok(m) => m,
            Err(e) => {
                let _ = files.remove_all();
                return Err(Error::Internal(format!("starting the swarm: {e:#}")));
            }
        };
        // Written last: a crash before this point leaves no half-made swarm.
        if let Err(e) = files.write_identity(&id) {
            m.stop().await;
            let _ = files.remove_all();
            return Err(internal(e));
        }
        let m = Arc::new(m);
        self.follow_role(&m);
        *slot = Some(m);
        Ok(node_id)
    }

    /// `swarm init --force-new-cluster` on a manager: its Raft restarts as
    /// the only member of a new group with the whole state it has, so the
    /// swarm takes writes again after losing its quorum. Its workers keep
    /// their certificates and their tasks, and find it among the managers
    /// they know; the other managers stay in the node list until they are
    /// demoted and removed, and must join again.
    async fn force_new_cluster(&self, m: Arc<Membership>) -> Result<Membership, Error> {
        let id = m.id.clone();
        let (_, cert, ca) = self
            .ctx
            .files
            .read()
            .and_then(|r| r.ok_or_else(|| anyhow::anyhow!("no identity on disk")))
            .map_err(internal)?;
        m.stop().await;
        drop(m);
        let me = flotilla_store::raft::Peer {
            addr: id.addr.clone(),
            node_id: id.node_id.clone(),
        };
        // Requests in flight may hold the old store (and its database)
        // for a moment after it stopped.
        let mut tries = 0;
        let tasks = loop {
            let forced = flotilla_store::raft::recover::force_new_cluster(
                self.ctx.files.dir(),
                self.ctx.files.unlock_key().as_ref(),
                id.raft_id,
                me.clone(),
            )
            .await;
            match forced {
                Ok(tasks) => break tasks,
                Err(e) if tries < 50 && e.to_string().contains("already open") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(Error::Internal(format!("--force-new-cluster: {e:#}"))),
            }
        };
        tracing::warn!(
            "forced a new cluster: this manager is the only member of its Raft, with the swarm's state ({tasks} tasks)"
        );
        let m = membership::start(&self.ctx, id.clone(), cert, ca, None, Bootstrap::Resume)
            .await
            .map_err(|e| Error::Internal(format!("--force-new-cluster: restarting: {e:#}")))?;
        // The other managers are out of Raft now: their ManagerStatus goes
        // (they can be demoted and removed, and join again).
        if let Some(store) = &m.store {
            let ops: Vec<flotilla_store::Op> = store.read(|s| {
                s.nodes
                    .values()
                    .filter(|n| n.manager_status.is_some())
                    .filter_map(|n| n.id.clone())
                    .filter(|n| *n != id.node_id)
                    .map(|id| flotilla_store::Op::SetManagerStatus { id, status: None })
                    .collect()
            });
            if let Err(e) = store.propose(ops).await {
                tracing::warn!("--force-new-cluster: clearing the other managers' status: {e}");
            }
        }
        Ok(m)
    }

    /// `POST /swarm/join`.
    pub async fn join(self: &Arc<Self>, req: SwarmJoinRequest) -> Result<(), Error> {
        let mut slot = self.membership.write().await;
        if slot.is_some() || self.locked.read().await.is_some() {
            return Err(Error::Unavailable(ALREADY_IN_SWARM.into()));
        }
        let token = req.join_token.clone().unwrap_or_default();
        let remotes = req.remote_addrs.clone().unwrap_or_default();
        let remote = remotes
            .first()
            .map(|r| {
                if r.contains(':') {
                    r.clone()
                } else {
                    format!("{r}:{}", addr::DEFAULT_PORT)
                }
            })
            .ok_or_else(|| {
                Error::InvalidArgument("at least 1 RemoteAddr is required to join".into())
            })?;
        let (listener, listen, advertise) =
            bind(req.listen_addr.as_deref(), req.advertise_addr.as_deref()).await?;
        let joined = flotilla_rpc::ca::join(
            &remote,
            &token,
            &advertise,
            self.local.description.to_model(),
        )
        .await
        .map_err(|e| match e {
            // Refused joins answer 400 whatever the manager's reason, in the
            // manager's (Docker's) words.
            flotilla_rpc::ca::CaError::Refused(e) => {
                Error::InvalidArgument(flotilla_api::error::render(&e).1)
            }
            flotilla_rpc::ca::CaError::Failed(m) => Error::InvalidArgument(m),
        })?;
        let reply = &joined.reply;
        let id = Identity {
            node_id: reply.node_id.clone(),
            manager: reply.manager,
            cluster_id: reply.cluster_id.clone(),
            raft_id: if reply.manager {
                rand::random::<u64>() >> 1
            } else {
                0
            },
            addr: advertise,
            listen_addr: listen,
            managers: reply.managers.clone(),
        };
        let files = &self.ctx.files;
        files.remove_all().map_err(internal)?;
        files
            .write_cert(&joined.cert, &joined.root_ca_pem)
            .map_err(internal)?;
        let (listener, bootstrap) = match reply.manager {
            true => (Some(listener), Bootstrap::JoinManager { remote }),
            // Workers do not serve the cluster port.
            false => (None, Bootstrap::Resume),
        };
        let m = membership::start(
            &self.ctx,
            id.clone(),
            joined.cert,
            joined.root_ca_pem,
            listener,
            bootstrap,
        )
        .await
        .map_err(|e| {
            let _ = files.remove_all();
            Error::Internal(format!("joining the swarm: {e:#}"))
        })?;
        files.write_identity(&id).map_err(internal)?;
        let m = Arc::new(m);
        self.follow_role(&m);
        *slot = Some(m);
        Ok(())
    }

    /// `POST /swarm/leave?force=…`.
    pub async fn leave(&self, force: bool) -> Result<(), Error> {
        let mut slot = self.membership.write().await;
        let Some(m) = slot.clone() else {
            if let Some(id) = self.locked.read().await.clone() {
                if !force {
                    return Err(Error::Unavailable("Swarm is encrypted and locked. Please unlock it first or use `--force` to ignore this message.".into()));
                }
                self.remove_workloads(&id.node_id).await;
                *self.locked.write().await = None;
                return self.ctx.files.remove_all().map_err(internal);
            }
            if self.resume_error.write().await.take().is_some() {
                return self.ctx.files.remove_all().map_err(internal);
            }
            return Err(Error::Unavailable(
                "This node is not part of a swarm".into(),
            ));
        };
        if m.id.manager && !force {
            let managers = m.store.as_ref().map_or(1, |s| {
                s.read(|st| flotilla_manager::ca::manager_addrs(st).len())
            });
            let msg = if managers <= 1 {
                "You are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message.".to_string()
            } else {
                "You are attempting to leave the swarm on a node that is participating as a manager. The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to suppress this message.".to_string()
            };
            return Err(Error::Unavailable(msg));
        }
        m.stop().await;
        self.remove_workloads(&m.id.node_id).await;
        *slot = None;
        self.ctx.files.remove_all().map_err(internal)
    }

    /// Leaving ends this node's tasks, as Docker removes its swarm
    /// containers: removed by force and all at once (a graceful stop of
    /// each, one after another, took longer than clients wait).
    async fn remove_workloads(&self, node_id: &str) {
        if let Ok(list) = self.local.exec.list(node_id).await {
            let removals = list.into_iter().map(|e| {
                let t = m::Task {
                    id: Some(e.task_id),
                    node_id: Some(node_id.to_string()),
                    ..Default::default()
                };
                let exec = self.local.exec.clone();
                async move {
                    if let Err(err) = exec.remove(&t).await {
                        tracing::warn!(
                            "leaving: removing the workload of task {}: {err}",
                            t.id.as_deref().unwrap_or_default()
                        );
                    }
                }
            });
            futures::future::join_all(removals).await;
        }
        if let Some(docker) = &self.ctx.docker {
            if let Err(e) = flotilla_agent::overlay::clear_all(&docker.engine()).await {
                tracing::warn!("leaving: overlay networks: {e}");
            }
        } else if self.ctx.service_addrs {
            // Without Docker there are no overlay networks, but the task
            // ports' guard is there all the same.
            flotilla_agent::overlay::host::remove_port_guard().await;
        }
        self.ctx.task_files.clear();
    }
}

impl Node {
    /// Waits for the leader to give this node another role, then moves to it.
    fn follow_role(self: &Arc<Self>, m: &Arc<Membership>) {
        let mut role = m.role.clone();
        let current = m.id.manager;
        let daemon = Arc::downgrade(self);
        let this = Arc::downgrade(m);
        tokio::spawn(async move {
            loop {
                if role.changed().await.is_err() {
                    return;
                }
                let want = *role.borrow_and_update();
                if want.is_some_and(|w| w != current) {
                    if let (Some(d), Some(m)) = (daemon.upgrade(), this.upgrade()) {
                        d.change_role(m, !current).await;
                    }
                    return;
                }
            }
        });
    }

    /// Promotion or demotion: a certificate for the new role, then the
    /// membership restarted as that role. Tasks keep running throughout:
    /// the new agent adopts them.
    async fn change_role(self: Arc<Self>, old: Arc<Membership>, manager: bool) {
        let mut slot = self.membership.write().await;
        if !slot.as_ref().is_some_and(|m| Arc::ptr_eq(m, &old)) {
            return;
        }
        let what = if manager {
            "promoted to manager"
        } else {
            "demoted to worker"
        };
        tracing::info!("this node was {what}");
        match self.restart_as(&old, manager).await {
            Ok(m) => {
                let m = Arc::new(m);
                self.follow_role(&m);
                *slot = Some(m);
            }
            Err(e) => {
                tracing::error!("this node was {what} but could not take the new role: {e:#}; it keeps the old one until restarted");
            }
        }
    }

    async fn restart_as(&self, old: &Membership, manager: bool) -> anyhow::Result<Membership> {
        let files = &self.ctx.files;
        let (mut id, cert, ca) = files
            .read()?
            .ok_or_else(|| anyhow::anyhow!("no identity on disk"))?;
        let mut managers: Vec<String> = match &old.store {
            Some(s) => s.read(flotilla_manager::ca::manager_addrs),
            None => id.managers.clone(),
        };
        managers.retain(|a| *a != id.addr);
        let tls = flotilla_ca::client_config(&ca, Some(&cert))?;
        let peers = flotilla_rpc::peers::Peers::new(tokio::sync::watch::channel(tls).1);
        let mut renewed = None;
        for m in &managers {
            match flotilla_rpc::ca::renew(peers.channel(m)?).await {
                Ok(c) => {
                    renewed = Some((m.clone(), c));
                    break;
                }
                Err(e) => tracing::warn!("renewing the certificate through {m}: {e}"),
            }
        }
        let (via, cert) =
            renewed.ok_or_else(|| anyhow::anyhow!("no manager renewed this node's certificate"))?;
        old.stop().await;
        // A manager's Raft data is its own: a new term as manager starts
        // empty, with a new DEK; a worker's keys are never locked.
        let _ = std::fs::remove_file(files.dir().join("raft.redb"));
        let _ = std::fs::remove_file(files.dir().join(flotilla_store::raft::SNAPSHOT_FILE));
        let _ = std::fs::remove_file(files.dir().join(flotilla_store::raft::seal::DEK_FILE));
        files.relock(None)?;
        files.write_cert(&cert, &ca)?;
        id.manager = manager;
        id.managers = managers;
        let (listener, bootstrap) = if manager {
            id.raft_id = rand::random::<u64>() >> 1;
            let l = tokio::net::TcpListener::bind(&id.listen_addr).await?;
            (Some(l), Bootstrap::JoinManager { remote: via })
        } else {
            id.raft_id = 0;
            (None, Bootstrap::Resume)
        };
        let m = membership::start(&self.ctx, id.clone(), cert, ca, listener, bootstrap).await?;
        files.write_identity(&id)?;
        Ok(m)
    }
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

/// Binds the cluster port (so port 0 becomes a real port before it is
/// advertised) and works out the advertise address.
async fn bind(
    listen: Option<&str>,
    advertise: Option<&str>,
) -> Result<(tokio::net::TcpListener, String, String), Error> {
    let want = addr::listen_addr(listen)?;
    let listener = tokio::net::TcpListener::bind(want).await.map_err(|e| {
        Error::InvalidArgument(format!("cannot listen on {want} for the cluster port: {e}"))
    })?;
    let bound = listener.local_addr().map_err(internal)?;
    let advertise = addr::advertise_addr(advertise, bound)?;
    Ok((listener, bound.to_string(), advertise))
}

fn process_executor(cfg: &NodeConfig) -> Arc<dyn Executor> {
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

/// The node as the API sees it.
pub struct Handle(pub Arc<Node>);

#[async_trait::async_trait]
impl NodeControl for Handle {
    fn local(&self) -> &Local {
        &self.0.local
    }

    async fn place(&self) -> Option<Place> {
        let m = self.0.membership().await?;
        Some(Place {
            node_id: m.id.node_id.clone(),
            addr: m.id.addr.clone(),
            store: m.store.clone(),
            managers: m.id.managers.clone(),
        })
    }

    async fn store(&self) -> Result<Store, Error> {
        self.0.store().await
    }

    async fn init(&self, req: SwarmInitRequest) -> Result<String, Error> {
        self.0.init(req).await
    }

    async fn join(&self, req: SwarmJoinRequest) -> Result<(), Error> {
        self.0.join(req).await
    }

    async fn leave(&self, force: bool) -> Result<(), Error> {
        self.0.leave(force).await
    }

    async fn locked(&self) -> Option<String> {
        self.0.locked().await
    }

    async fn unlock(&self, key: &str) -> Result<(), Error> {
        self.0.unlock(key).await
    }

    async fn remote_logs(
        &self,
        request: flotilla_store::logs::LogRequest,
    ) -> Result<futures::stream::BoxStream<'static, flotilla_store::logs::LogChunk>, String> {
        let remote = self
            .0
            .membership()
            .await
            .and_then(|m| m.logs.clone())
            .ok_or_else(|| "this node is not a manager".to_string())?;
        flotilla_rpc::dispatcher::task_logs(
            &remote.store,
            &remote.dispatcher,
            &remote.peers,
            request,
        )
        .await
    }

    async fn remote_exec(
        &self,
        task: flotilla_store::models::Task,
        spec: flotilla_store::exec::ExecSpec,
    ) -> Result<flotilla_manager::execbroker::Attached, String> {
        let membership = self
            .0
            .membership()
            .await
            .ok_or_else(|| "this node is not in a swarm".to_string())?;
        let remote = membership
            .logs
            .clone()
            .ok_or_else(|| "this node is not a manager".to_string())?;
        flotilla_rpc::exec::remote_exec(
            &remote.store,
            &remote.dispatcher,
            &remote.peers,
            &membership.id.addr,
            task,
            spec,
        )
        .await
    }

    async fn relay_exec(
        &self,
        request: flotilla_manager::execrelay::RelayRequest,
    ) -> Result<flotilla_manager::execbroker::Attached, flotilla_manager::execrelay::ExecRefusal>
    {
        use flotilla_manager::execrelay::ExecRefusal;
        let relay = self
            .0
            .membership()
            .await
            .ok_or_else(|| ExecRefusal::new(503, "this node is not in a swarm"))?
            .relay
            .clone();
        // The managers in the session's order (the one it uses now first);
        // the next only when one cannot be connected to, so a command is
        // never started twice.
        let mut why = "this node knows no manager to relay the exec to".to_string();
        let mut channel = None;
        for manager in relay.session.managers() {
            match relay.peers.connected(&manager).await {
                Ok(c) => {
                    channel = Some(c);
                    break;
                }
                Err(s) => why = s.message().to_string(),
            }
        }
        let channel = channel.ok_or_else(|| ExecRefusal::new(503, why))?;
        flotilla_rpc::exec::relay(channel, request).await
    }

    fn serve_exec_relays(&self, server: Arc<dyn flotilla_manager::execrelay::ExecOpener>) {
        self.0.ctx.relays.serve_with(server);
    }
}
