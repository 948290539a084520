//! `flotilla`: the node daemon (`flotilla daemon`) and the client commands
//! (`flotilla swarm|node|service …`), which speak the Docker Engine API to
//! a daemon like the docker CLI does.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use flotilla_agent::network::MeshMode;
use flotilla_node::{ExecutorKind, NodeConfig};

/// The docker CLI's default host when TLS is on.
const DEFAULT_TLS_HOST: &str = "tcp://localhost:2376";

#[derive(Parser)]
#[command(
    name = "flotilla",
    version,
    about = "Docker Swarm mode, rebuilt in Rust"
)]
struct Cli {
    /// Daemon socket to connect to (unix:///path or tcp://host:port)
    #[arg(
        short = 'H',
        long = "host",
        env = "FLOTILLA_HOST",
        global = true,
        display_order = 999
    )]
    host: Option<String>,
    /// The docker CLI's --tls, --tlsverify, --tlscacert, --tlscert, --tlskey (global)
    #[command(flatten)]
    tls: flotilla_cli::TlsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the API, the agent, and the manager once in a swarm
    Daemon(DaemonArgs),
    #[command(flatten)]
    Client(flotilla_cli::ClientCommand),
}

#[derive(Clone, Copy, ValueEnum)]
enum Executor {
    /// docker; an error when no Docker Engine answers (never host processes)
    Auto,
    /// containers through the local Docker Engine
    Docker,
    /// the task's command as a host process, as user nobody unless the
    /// service's --user names another
    Process,
}

/// Which routing mesh serves published ports and VIPs.
#[derive(Clone, Copy, ValueEnum)]
enum MeshArg {
    /// the kernel's NAT where it can be set up (root, iptables, a network
    /// namespace to itself), else the user-space proxy
    Auto,
    /// the kernel's NAT (iptables), per-connection balancing
    Kernel,
    /// the user-space proxy (splice)
    Userspace,
}

#[derive(clap::Args)]
struct DaemonArgs {
    /// Where the node keeps its state (Raft log, snapshots, identity)
    #[arg(long, default_value = "/var/lib/flotilla")]
    data_dir: PathBuf,
    /// How tasks run
    #[arg(long, value_enum, default_value_t = Executor::Auto)]
    executor: Executor,
    /// Docker Engine for the docker executor and for pass-through
    #[arg(long, env = "FLOTILLA_DOCKER_HOST")]
    docker_host: Option<String>,
    /// Hostname this node reports (default: the OS hostname)
    #[arg(long)]
    hostname: Option<String>,
    /// A generic resource this node offers, as dockerd's: KIND=COUNT
    /// (`SSD=2`) or KIND=VALUE, once per value (`GPU=uuid1`); repeatable
    #[arg(long = "node-generic-resource", value_name = "KIND=VALUE", value_parser = generic_resource)]
    node_generic_resource: Vec<flotilla_store::models::GenericResourcesInner>,
    /// Serve only published ports: no service VIPs, task addresses or DNS
    /// server (which need root and a network namespace of their own; for
    /// several daemons on one host)
    #[arg(
        long,
        env = "FLOTILLA_NO_SERVICE_ADDRS",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    no_service_addrs: bool,
    /// The routing mesh: kernel NAT or the user-space proxy
    #[arg(long, value_enum, env = "FLOTILLA_MESH", default_value_t = MeshArg::Auto)]
    mesh: MeshArg,
    /// Keep clients' addresses through the routing mesh: tasks on other
    /// nodes are reached over a tunnel, not from this node's address
    /// (docs/network.md, "The client's address")
    #[arg(
        long = "mesh-client-addr",
        env = "FLOTILLA_CLIENT_ADDR",
        default_value = "true",
        value_name = "bool",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    mesh_client_addr: bool,
    /// Serve the API on tcp:// without verifying clients' certificates
    /// (plain HTTP, or --tls alone): whoever reaches the port is root on
    /// this host
    #[arg(long)]
    insecure_tcp: bool,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics, as dockerd's
    /// --metrics-addr (off unless given; e.g. 127.0.0.1:9323)
    #[arg(long, value_name = "HOST:PORT", env = "FLOTILLA_METRICS_ADDR")]
    metrics_addr: Option<String>,
    /// Log filter (tracing's syntax), e.g. info or flotilla=debug
    #[arg(long, env = "FLOTILLA_LOG", default_value = "info")]
    log: String,
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // The docker CLI exits 125 on flag errors; help and version are not errors.
            std::process::exit(if err.use_stderr() { 125 } else { 0 });
        }
    };
    // As the docker CLI: a client asked for TLS and given no host talks to
    // tcp://localhost:2376 (dockerd's TLS port), not the local socket.
    let tls_client = matches!(cli.command, Command::Client(_))
        && cli.tls.resolve() != flotilla_cli::TlsMode::None;
    let host = cli.host.clone().unwrap_or_else(|| {
        if tls_client {
            DEFAULT_TLS_HOST.to_string()
        } else {
            flotilla_cli::default_host()
        }
    });
    if matches!(cli.command, Command::Daemon(_)) {
        limit_malloc_arenas();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flotilla: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Client(cmd) => flotilla_cli::run(&host, &cli.tls, cmd).await,
            Command::Daemon(args) => match daemon(host, &cli.tls, args).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("flotilla daemon: {e:#}");
                    1
                }
            },
        }
    });
    std::process::exit(code);
}

/// glibc gives each thread that allocates its own arena, up to eight per
/// core, and memory freed in one arena serves only that arena: a manager
/// whose blocking threads (snapshots, the log's disk) and runtime threads
/// took turns with 100,000 tasks kept hundreds of MB more than it used.
/// One arena per core; set before any thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets a malloc parameter; no thread runs yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

async fn daemon(host: String, tls: &flotilla_cli::TlsArgs, args: DaemonArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log)?)
        .with_writer(std::io::stderr)
        .init();
    if matches!(args.mesh, MeshArg::Kernel) && args.no_service_addrs {
        anyhow::bail!(
            "--mesh kernel needs the node's network namespace to itself: it cannot go with --no-service-addrs"
        );
    }
    let cfg = NodeConfig {
        data_dir: args.data_dir,
        executor: match args.executor {
            Executor::Auto => ExecutorKind::Auto,
            Executor::Docker => ExecutorKind::Docker,
            Executor::Process => ExecutorKind::Process,
        },
        docker_host: args.docker_host,
        hostname: args.hostname,
        generic_resources: args.node_generic_resource,
        service_addrs: !args.no_service_addrs,
        mesh_client_addr: args.mesh_client_addr,
        mesh: match args.mesh {
            MeshArg::Auto => MeshMode::Auto,
            MeshArg::Kernel => MeshMode::Kernel,
            MeshArg::Userspace => MeshMode::Userspace,
        },
        metrics_addr: args.metrics_addr,
    };
    let tls = if host.starts_with("tcp://") {
        api_tls(tls.resolve())?
    } else {
        None
    };
    let listen = flotilla_api::listen::Listen {
        hosts: vec![host],
        tls,
        insecure_tcp: args.insecure_tcp,
    };
    flotilla_node::run(cfg, listen).await
}

/// The TLS the API serves TCP with, from dockerd's flags (the same as the
/// client's, with the same defaults): a server needs its certificate and
/// key, and `--tlsverify` the CA that signs its clients' certificates.
fn api_tls(mode: flotilla_cli::TlsMode) -> anyhow::Result<Option<flotilla_api::listen::ApiTls>> {
    use flotilla_cli::TlsMode;
    let (verify, ca, cert, key) = match mode {
        TlsMode::None => return Ok(None),
        TlsMode::Tls { ca, cert, key } => (false, ca, cert, key),
        TlsMode::Verify { ca, cert, key } => (true, ca, cert, key),
    };
    let (Some(cert), Some(key)) = (cert, key) else {
        anyhow::bail!(
            "serving the API with TLS needs the server's certificate and key: give --tlscert and --tlskey (or put cert.pem and key.pem in $DOCKER_CERT_PATH)"
        );
    };
    Ok(Some(flotilla_api::listen::ApiTls {
        verify,
        ca,
        cert,
        key,
    }))
}

/// `KIND=COUNT` (discrete) or `KIND=VALUE` (one named value), as dockerd
/// reads `--node-generic-resource`.
fn generic_resource(text: &str) -> Result<flotilla_store::models::GenericResourcesInner, String> {
    use flotilla_store::models::{
        GenericResourcesInner, GenericResourcesInnerDiscreteResourceSpec,
        GenericResourcesInnerNamedResourceSpec,
    };
    let (kind, value) = text
        .split_once('=')
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .ok_or_else(|| format!("{text:?} is not KIND=VALUE"))?;
    Ok(match value.parse::<i64>() {
        Ok(n) if n > 0 => GenericResourcesInner {
            discrete_resource_spec: Some(GenericResourcesInnerDiscreteResourceSpec {
                kind: Some(kind.to_string()),
                value: Some(n),
            }),
            named_resource_spec: None,
        },
        Ok(_) => return Err(format!("{text:?}: a count must be 1 or more")),
        Err(_) => GenericResourcesInner {
            named_resource_spec: Some(GenericResourcesInnerNamedResourceSpec {
                kind: Some(kind.to_string()),
                value: Some(value.to_string()),
            }),
            discrete_resource_spec: None,
        },
    })
}
