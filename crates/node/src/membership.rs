//! A running swarm membership. A manager runs the store (Raft over the
//! cluster port), the cluster RPC server, the dispatcher and — while it
//! leads — the controllers; every node runs the agent, whose session goes
//! to the leader's dispatcher over mutual TLS, and renews its certificate.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flotilla_agent::exec::Executor;
use flotilla_agent::network::{NetworkConfig, NodeNetwork};
use flotilla_agent::session::{ManagerSession, Session};
use flotilla_agent::worker::Worker;
use flotilla_ca::{NodeCert, Renewal};
use flotilla_manager::dispatcher::Dispatcher;
use flotilla_rpc::agent::GrpcTransport;
use flotilla_rpc::control::GrpcForward;
use flotilla_rpc::messages::AddManager;
use flotilla_rpc::peers::Peers;
use flotilla_rpc::raft::GrpcNetwork;
use flotilla_store::{Op, Store, StoreConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::addr;
use crate::certs;
use crate::identity::{Files, Identity};

/// How the membership comes to be.
pub enum Bootstrap {
    /// A restart: everything is on disk already.
    Resume,
    /// `swarm init`: this node is the first manager and writes these ops.
    Init(Vec<Op>),
    /// `swarm join` with a manager token: ask `remote` to add us to Raft.
    JoinManager { remote: String },
}

pub struct Membership {
    pub id: Identity,
    /// Managers only.
    pub store: Option<Store>,
    /// Managers only: where logs of tasks on other nodes come from (and
    /// where `exec` into them goes through).
    pub logs: Option<RemoteLogs>,
    /// The role the leader says this node has: a promotion or demotion.
    pub role: watch::Receiver<Option<bool>>,
    /// Where a worker's API relays its clients' execs: the manager its
    /// agent's session calls now, over the node's mutual TLS.
    pub relay: RelayPath,
    /// The agent's side (network, worker, certificate renewal) and the
    /// manager's (cluster port, leader controllers, reachability), each with
    /// its own stop signal so that [`Membership::stop`] ends them in order.
    agent: tokio::sync::Mutex<Component>,
    manager: tokio::sync::Mutex<Component>,
}

/// What a manager reads other nodes' task logs through: its dispatcher's
/// broker when it leads, the leader's otherwise.
#[derive(Clone)]
pub struct RemoteLogs {
    pub store: Store,
    pub dispatcher: Arc<Dispatcher>,
    pub peers: Peers,
}

#[derive(Clone)]
pub struct RelayPath {
    pub session: Arc<ManagerSession>,
    pub peers: Peers,
}

/// Background tasks that end when told to, joined on stop.
struct Component {
    name: &'static str,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// How long a component's tasks get to end once told to stop before they
/// are aborted: a stop signal is seen within one loop turn, so only a task
/// stuck in I/O is aborted.
const STOP_BOUND: Duration = Duration::from_secs(5);

impl Component {
    fn new(name: &'static str) -> Component {
        Component {
            name,
            stop: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Tells every task to stop and waits for them, aborting what has not
    /// ended within [`STOP_BOUND`].
    async fn stop(&mut self) {
        self.stop.send_replace(true);
        let deadline = tokio::time::Instant::now() + STOP_BOUND;
        for mut task in self.tasks.drain(..) {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!(
                    "{}: a task did not stop within {STOP_BOUND:?}; aborted",
                    self.name
                );
                task.abort();
            }
        }
    }
}

pub struct Context {
    pub exec: Arc<dyn Executor>,
    /// The same executor when it is Docker's: containers get the node's
    /// DNS server as their resolver.
    pub docker: Option<Arc<flotilla_agent::exec::docker::DockerExecutor>>,
    /// VIPs, task addresses and DNS on this node (see NetworkConfig).
    pub service_addrs: bool,
    /// Which routing mesh (see NetworkConfig).
    pub mesh: flotilla_agent::network::MeshMode,
    /// Keep clients' addresses through the mesh (see NetworkConfig).
    pub mesh_client_addr: bool,
    pub hostname: Option<String>,
    /// `--node-generic-resource`.
    pub generic_resources: Vec<flotilla_store::models::GenericResourcesInner>,
    pub files: Files,
    /// Where tasks' secrets and configs are written (in memory).
    pub task_files: flotilla_agent::taskfiles::TmpfsRoot,
    /// Who serves the execs workers relay to this node as a manager (its
    /// API, once up).
    pub relays: flotilla_manager::execrelay::ExecRelays,
}

type Tls<T> = (watch::Sender<Arc<T>>, watch::Receiver<Arc<T>>);

pub async fn start(
    ctx: &Context,
    id: Identity,
    cert: NodeCert,
    ca_pem: String,
    listener: Option<TcpListener>,
    bootstrap: Bootstrap,
) -> anyhow::Result<Membership> {
    if let Ok(me) = cert.identity() {
        if me.not_after < SystemTime::now() {
            let e = flotilla_ca::needs_renewal(
                &id.node_id,
                me.not_after,
                SystemTime::now(),
                me.validity(),
                0.5,
            );
            if let Renewal::Expired(e) = e {
                anyhow::bail!("{e}");
            }
        }
    }
    let (server_tls, client_tls) = certs::tls_configs(&ca_pem, &cert)?;
    let server: Tls<rustls::ServerConfig> = watch::channel(server_tls);
    let client: Tls<rustls::ClientConfig> = watch::channel(client_tls);
    let peers = Peers::new(client.1.clone());
    let mut agent = Component::new("agent");
    let mut manager = Component::new("manager");

    let mut store = None;
    let mut logs = None;
    let mut managers = id.managers.clone();
    if id.manager {
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind(&id.listen_addr).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on the cluster port {}: {e}", id.listen_addr)
            })?,
        };
        let local = addr::local_addr(listener.local_addr()?, &id.addr);
        let s = Store::open_with(
            StoreConfig {
                data_dir: ctx.files.dir().to_path_buf(),
                node_id: id.node_id.clone(),
                raft_id: id.raft_id,
                addr: id.addr.clone(),
                unlock_key: ctx.files.unlock_key(),
            },
            GrpcNetwork {
                peers: Some(peers.clone()),
            },
        )
        .await?;
        s.set_forwarder(Arc::new(GrpcForward {
            peers: peers.clone(),
        }));
        let (dispatcher, background) = Dispatcher::start(s.clone(), manager.stopped());
        manager.spawn(background);
        let serve = flotilla_rpc::server::serve(
            listener,
            id.cluster_id.clone(),
            server.1.clone(),
            s.clone(),
            dispatcher.clone(),
            peers.clone(),
            ctx.relays.clone(),
            manager.stopped(),
        );
        manager.spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!("cluster port stopped: {e}");
            }
        });
        match bootstrap {
            Bootstrap::Init(ops) => {
                s.bootstrap().await?;
                if !s.wait_for_leader(Duration::from_secs(10)).await {
                    anyhow::bail!("the new swarm's Raft elected no leader");
                }
                let (_, results) = s.propose(ops).await?;
                results.into_iter().collect::<Result<Vec<_>, _>>()?;
            }
            Bootstrap::JoinManager { remote } => {
                let mut c =
                    flotilla_rpc::pb::control_client::ControlClient::new(peers.channel(&remote)?);
                let msg = flotilla_rpc::pb::Json {
                    data: serde_json::to_vec(&AddManager {
                        raft_id: id.raft_id,
                        addr: id.addr.clone(),
                        node_id: None,
                    })?,
                };
                c.add_manager(msg).await.map_err(|e| {
                    anyhow::anyhow!("joining Raft through {remote}: {}", e.message())
                })?;
                s.wait_for_leader(Duration::from_secs(10)).await;
            }
            Bootstrap::Resume => {
                if !s.wait_for_leader(Duration::from_secs(15)).await {
                    tracing::warn!("no Raft leader yet; writes fail with Docker's no-leader error until one is elected");
                }
            }
        }
        logs = Some(RemoteLogs {
            store: s.clone(),
            dispatcher: dispatcher.clone(),
            peers: peers.clone(),
        });
        manager.spawn(flotilla_manager::leader::run(
            s.clone(),
            dispatcher,
            manager.stopped(),
        ));
        manager.spawn(follow_autolock(
            s.clone(),
            ctx.files.clone(),
            manager.stopped(),
        ));
        manager.spawn(track_reachability(
            s.clone(),
            peers.clone(),
            id.addr.clone(),
            manager.stopped(),
        ));
        managers.insert(0, local);
        store = Some(s);
    }

    // The agent's session, over gRPC to the leader's dispatcher.
    let session = ManagerSession::new(
        GrpcTransport::new(peers.clone()),
        managers,
        addr::host_of(&id.addr).to_string(),
        flotilla_agent::session::NodeOverrides {
            hostname: ctx.hostname.clone(),
            generic_resources: ctx.generic_resources.clone(),
        },
    );
    let role = session.role();
    let network = NodeNetwork::start(NetworkConfig {
        bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        service_addrs: ctx.service_addrs,
        mesh: ctx.mesh,
        client_addr: ctx.mesh_client_addr,
    })
    .await;
    if let Some(docker) = &ctx.docker {
        docker.set_dns(network.resolver());
        // Overlay networks need what the service addresses need (root,
        // iproute2) and iptables; without them a task on a network is
        // refused with the reason.
        if network.resolver().is_some() {
            let overlay = flotilla_agent::overlay::Overlay::new(
                id.node_id.clone(),
                docker.engine(),
                network.dns(),
                session.routes(),
            );
            docker.set_networks(overlay.clone());
            agent.spawn(overlay.run(agent.stopped()));
        }
    }
    agent.spawn(network.clone().run(session.routes(), agent.stopped()));
    agent.spawn(flotilla_agent::logserver::serve(
        session.clone(),
        ctx.exec.clone(),
        agent.stopped(),
    ));
    agent.spawn(flotilla_agent::execserver::serve(
        session.clone(),
        ctx.exec.clone(),
        agent.stopped(),
    ));
    let drain = network.clone();
    let worker = Worker::new(session.clone(), ctx.exec.clone(), id.node_id.clone())
        .with_drain(Arc::new(move |task: String| {
            let network = drain.clone();
            Box::pin(async move { network.drain(&task).await })
        }))
        .with_files(ctx.task_files.clone());
    agent.spawn(worker.run(agent.stopped()));
    let relay = RelayPath {
        session: session.clone(),
        peers: peers.clone(),
    };
    let renewal_stop = agent.stopped();
    agent.spawn(certs::follow(
        certs::Ctx {
            files: ctx.files.clone(),
            node_id: id.node_id.clone(),
            peers,
            own: store.is_some().then(|| id.addr.clone()),
            session: session.clone(),
            server: server.0,
            client: client.0,
        },
        cert,
        ca_pem,
        renewal_stop,
    ));
    Ok(Membership {
        id,
        store,
        logs,
        role,
        relay,
        agent: agent.into(),
        manager: manager.into(),
    })
}

/// The leader records which managers answer Raft (`node ls` shows
/// Reachable or Unreachable); it writes only changes.
/// Keeps this manager's keys (its DEK, its TLS key) wrapped as the swarm
/// says: by the unlock key while autolock is on, and by the new one when it
/// is rotated; plain once autolock is off. Every manager does it for
/// itself, from the replicated swarm object.
async fn follow_autolock(store: Store, files: Files, mut stop: watch::Receiver<bool>) {
    use flotilla_store::raft::seal::UnlockKey;
    let mut applied = store.subscribe();
    // What the files are wrapped with, as the state spells it: compared on
    // every commit, so not derived from the key each time.
    let mut have = files.unlock_key().map(|k| k.human());
    loop {
        let want = store.read(|s| s.unlock_key.clone());
        if want != have {
            let key = match want.as_deref().map(UnlockKey::parse).transpose() {
                Ok(k) => k,
                Err(e) => {
                    tracing::error!("the swarm's unlock key does not parse: {e}");
                    return;
                }
            };
            // The DEK first: a crash between the two leaves the
            // certificate under the old key, which `swarm unlock` tells.
            let locked = store
                .lock_with(key.as_ref())
                .map_err(anyhow::Error::from)
                .and_then(|()| files.relock(key.clone()));
            if locked.is_ok() {
                have = want;
            }
            match locked {
                Ok(()) if key.is_some() => {
                    tracing::info!(
                        "autolock: this manager's keys are wrapped by the swarm's unlock key"
                    )
                }
                Ok(()) => tracing::info!("autolock off: this manager's keys are stored unwrapped"),
                Err(e) => tracing::error!("autolock: rewrapping this manager's keys: {e:#}"),
            }
        }
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn track_reachability(
    store: Store,
    peers: Peers,
    own_addr: String,
    mut stop: watch::Receiver<bool>,
) {
    use flotilla_store::models::Reachability;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if !store.is_leader() {
            continue;
        }
        let ops: Vec<Op> = store.read(|s| {
            s.nodes
                .values()
                .filter_map(|n| {
                    let ms = n.manager_status.as_ref()?;
                    let addr = ms.addr.as_deref()?;
                    let now = if addr == own_addr || peers.reachable(addr, Duration::from_secs(3)) {
                        Reachability::REACHABLE
                    } else {
                        Reachability::UNREACHABLE
                    };
                    let id = n.id.clone()?;
                    (ms.reachability != Some(now)).then_some(Op::SetReachability {
                        id,
                        reachability: now,
                    })
                })
                .collect()
        });
        if !ops.is_empty() {
            if let Err(e) = store.propose(ops).await {
                tracing::debug!("recording reachability: {e}");
            }
        }
    }
}

impl Membership {
    /// Stops the node's part in the swarm in order: the agent (its tasks
    /// keep running, to be adopted on restart), then the manager's
    /// controllers and cluster port, then Raft, whose log is flushed (every
    /// acknowledged write is on disk already: acknowledgements wait for the
    /// fsync).
    pub async fn stop(&self) {
        self.agent.lock().await.stop().await;
        self.manager.lock().await.stop().await;
        if let Some(s) = &self.store {
            s.shutdown().await;
        }
    }
}
