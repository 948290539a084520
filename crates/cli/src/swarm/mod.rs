//! `swarm ca | init | join | join-token | leave | unlock | unlock-key |
//! update`, following docker/cli's cli/command/swarm (same requests, same
//! messages, our program name).

mod ca;
mod unlock;

use bollard::models::{Node, Swarm, SwarmSpec, SystemInfo};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::{decode, query, CliError, Client, Result};
use crate::format::duration::parse_go_duration;
use crate::{out, PROGRAM};

const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:2377";
const DEFAULT_PORT: &str = "2377";

#[derive(Subcommand, Debug)]
pub enum SwarmCmd {
    /// Display and rotate the root CA
    Ca(ca::CaArgs),
    /// Initialize a swarm
    Init(InitArgs),
    /// Join a swarm as a node and/or manager
    Join(JoinArgs),
    /// Manage join tokens
    JoinToken(JoinTokenArgs),
    /// Leave the swarm
    Leave(LeaveArgs),
    /// Unlock swarm
    Unlock(unlock::UnlockArgs),
    /// Manage the unlock key
    UnlockKey(unlock::UnlockKeyArgs),
    /// Update the swarm
    Update(UpdateArgs),
}

/// Cluster settings shared by `init` and `update`; `None` means "not given".
#[derive(Args, Debug, Default)]
pub struct SwarmSpecArgs {
    /// Task history retention limit
    #[arg(long = "task-history-limit", value_name = "int")]
    task_history_limit: Option<i64>,
    /// Dispatcher heartbeat period (ns|us|ms|s|m|h)
    #[arg(long = "dispatcher-heartbeat", value_name = "duration", value_parser = parse_go_duration)]
    dispatcher_heartbeat: Option<i64>,
    /// Validity period for node certificates (ns|us|ms|s|m|h)
    #[arg(long = "cert-expiry", value_name = "duration", value_parser = parse_go_duration)]
    cert_expiry: Option<i64>,
    /// Specifications of one or more certificate signing endpoints
    #[arg(long = "external-ca", value_name = "external-ca", value_parser = ca::parse_external_ca)]
    external_ca: Vec<ca::ExternalCa>,
    /// Number of additional Raft snapshots to retain
    #[arg(long = "max-snapshots", value_name = "uint")]
    max_snapshots: Option<u64>,
    /// Number of log entries between Raft snapshots
    #[arg(long = "snapshot-interval", value_name = "uint")]
    snapshot_interval: Option<u64>,
    /// Enable manager autolocking (requiring an unlock key to start a stopped manager)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "bool", value_parser = crate::tls::parse_go_bool)]
    autolock: Option<bool>,
    /// Move tasks onto nodes that become ready and active again (Flotilla; default true)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "bool", value_parser = crate::tls::parse_go_bool)]
    rebalance: Option<bool>,
    /// Let `flotilla exec` run from worker nodes, relayed by a manager (Flotilla; default false)
    #[arg(long = "allow-worker-exec", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "bool", value_parser = crate::tls::parse_go_bool)]
    allow_worker_exec: Option<bool>,
    /// Allow services to run privileged containers and pass devices through (Flotilla; default false)
    #[arg(long = "allow-privileged", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "bool", value_parser = crate::tls::parse_go_bool)]
    allow_privileged: Option<bool>,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Advertised address (format: "<ip|interface>[:port]")
    #[arg(long = "advertise-addr", value_name = "string")]
    advertise_addr: Option<String>,
    /// Listen address (format: "<ip|interface>[:port]")
    #[arg(long = "listen-addr", value_name = "node-addr", default_value = DEFAULT_LISTEN_ADDR)]
    listen_addr: String,
    /// Address or interface to use for data path traffic (format: "<ip|interface>")
    #[arg(long = "data-path-addr", value_name = "string")]
    data_path_addr: Option<String>,
    /// Port number to use for data path traffic (1024 - 49151)
    #[arg(long = "data-path-port", value_name = "uint32")]
    data_path_port: Option<u32>,
    /// Force create a new cluster from current state
    #[arg(long = "force-new-cluster")]
    force_new_cluster: bool,
    /// Availability of the node ("active", "pause", "drain")
    #[arg(long, value_name = "string")]
    availability: Option<String>,
    /// default address pool in CIDR format
    #[arg(
        long = "default-addr-pool",
        value_name = "ipNetSlice",
        value_delimiter = ','
    )]
    default_addr_pool: Vec<String>,
    /// default address pool subnet mask length
    #[arg(
        long = "default-addr-pool-mask-length",
        value_name = "uint32",
        default_value_t = 24
    )]
    default_addr_pool_mask_length: u32,
    #[command(flatten)]
    spec: SwarmSpecArgs,
}

#[derive(Args, Debug)]
pub struct JoinArgs {
    /// Token for entry into the swarm
    #[arg(long, value_name = "string")]
    token: String,
    /// Listen address (format: "<ip|interface>[:port]")
    #[arg(long = "listen-addr", value_name = "node-addr", default_value = DEFAULT_LISTEN_ADDR)]
    listen_addr: String,
    /// Advertised address (format: "<ip|interface>[:port]")
    #[arg(long = "advertise-addr", value_name = "string")]
    advertise_addr: Option<String>,
    /// Address or interface to use for data path traffic (format: "<ip|interface>")
    #[arg(long = "data-path-addr", value_name = "string")]
    data_path_addr: Option<String>,
    /// Availability of the node ("active", "pause", "drain")
    #[arg(long, value_name = "string", default_value = "active")]
    availability: String,
    /// A manager's address (format: "<ip|hostname>[:port]")
    #[arg(value_name = "HOST:PORT")]
    remote: String,
}

#[derive(Args, Debug)]
pub struct JoinTokenArgs {
    /// Rotate join token
    #[arg(long)]
    rotate: bool,
    /// Only display token
    #[arg(short, long)]
    quiet: bool,
    /// worker or manager
    #[arg(value_name = "worker|manager")]
    role: String,
}

#[derive(Args, Debug)]
pub struct LeaveArgs {
    /// Force this node to leave the swarm, ignoring warnings
    #[arg(short, long)]
    force: bool,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[command(flatten)]
    spec: SwarmSpecArgs,
}

use flotilla_store::host_options::ALLOW_PRIVILEGED as ALLOW_PRIVILEGED_LABEL;

/// A swarm setting that is off unless its label says `true`
/// (`--allow-privileged`, `--allow-worker-exec`): true sets it, false
/// removes it, none leaves it as it was.
fn set_allow_label(spec: &mut SwarmSpec, label: &str, allow: Option<bool>) {
    let Some(allow) = allow else { return };
    let labels = spec.labels.get_or_insert_with(Default::default);
    if allow {
        labels.insert(label.to_string(), "true".to_string());
    } else {
        labels.remove(label);
    }
}

pub async fn run(client: &Client, cmd: SwarmCmd) -> Result<()> {
    match cmd {
        SwarmCmd::Init(args) => init(client, args).await,
        SwarmCmd::Join(args) => join(client, args).await,
        SwarmCmd::JoinToken(args) => join_token(client, args).await,
        SwarmCmd::Leave(args) => leave(client, args).await,
        SwarmCmd::Update(args) => update(client, args).await,
        SwarmCmd::Ca(args) => ca::ca_to_stdout(client, args).await,
        SwarmCmd::Unlock(_) => unlock::unlock(client, unlock::read_key_from_stdin).await,
        SwarmCmd::UnlockKey(args) => unlock::unlock_key(client, args, &mut std::io::stdout()).await,
    }
}

async fn init(client: &Client, args: InitArgs) -> Result<()> {
    let request = init_request(&args)?;
    let answer = client
        .post("/swarm/init", Some(&request))
        .await
        .map_err(|err| match err {
            CliError::Daemon { message, .. }
                if message.contains("could not choose an IP address to advertise")
                    || message.contains("could not find the system's IP address") =>
            {
                CliError::Other(format!(
                    "Error response from daemon: {message} - specify one with --advertise-addr"
                ))
            }
            other => other,
        })?;
    let node_id: String = decode(&answer)?;
    out(&format!(
        "Swarm initialized: current node ({node_id}) is now a manager.\n\n"
    ));
    print_join_command(client, &node_id, true, false).await?;
    out(&format!(
        "To add a manager to this swarm, run '{PROGRAM} swarm join-token manager' and follow the instructions.\n"
    ));
    if args.spec.autolock == Some(true) {
        print_unlock_key(client).await?;
    }
    Ok(())
}

/// docker/cli's swarm/join.go: POST /swarm/join, then say which role the
/// token gave, read back from /info.
async fn join(client: &Client, args: JoinArgs) -> Result<()> {
    let availability = args.availability.to_lowercase();
    if !matches!(availability.as_str(), "active" | "pause" | "drain") {
        return Err(CliError::Other(format!(
            "invalid availability \"{}\", only active, pause and drain are supported",
            args.availability
        )));
    }
    let request = json!({
        "ListenAddr": with_default_port(&args.listen_addr),
        "AdvertiseAddr": args.advertise_addr.clone().unwrap_or_default(),
        "DataPathAddr": args.data_path_addr.clone().unwrap_or_default(),
        "RemoteAddrs": [args.remote],
        "JoinToken": args.token,
        "Availability": availability,
    });
    client.post("/swarm/join", Some(&request)).await?;
    let info: SystemInfo = client.get("/info").await?;
    let manager = info
        .swarm
        .and_then(|s| s.control_available)
        .unwrap_or(false);
    if manager {
        out("This node joined a swarm as a manager.\n");
    } else {
        out("This node joined a swarm as a worker.\n");
    }
    Ok(())
}

/// The InitRequest docker sends: bollard's model lacks AutoLockManagers and
/// Availability, so the body is assembled as JSON.
fn init_request(args: &InitArgs) -> Result<Value> {
    let mut request = json!({
        "ListenAddr": with_default_port(&args.listen_addr),
        "AdvertiseAddr": args.advertise_addr.clone().unwrap_or_default(),
        "DataPathAddr": args.data_path_addr.clone().unwrap_or_default(),
        "DataPathPort": args.data_path_port.unwrap_or(0),
        "DefaultAddrPool": args.default_addr_pool,
        "ForceNewCluster": args.force_new_cluster,
        "Spec": merge_spec(SwarmSpec::default(), &args.spec, None),
        "AutoLockManagers": args.spec.autolock.unwrap_or(false),
        "SubnetSize": args.default_addr_pool_mask_length,
    });
    if let Some(availability) = &args.availability {
        let lower = availability.to_lowercase();
        if !matches!(lower.as_str(), "active" | "pause" | "drain") {
            return Err(CliError::Other(format!(
                "invalid availability \"{availability}\", only active, pause and drain are supported"
            )));
        }
        request["Availability"] = Value::String(lower);
    }
    Ok(request)
}

/// docker's NodeAddrOption: a listen address without a port gets 2377.
fn with_default_port(addr: &str) -> String {
    let has_port = match addr.rsplit_once(':') {
        Some((host, port)) => {
            !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) && !host.ends_with(':')
        }
        None => false,
    };
    if has_port || addr.ends_with(']') && addr.contains("]:") {
        addr.to_string()
    } else if addr.starts_with('[') || !addr.contains(':') {
        format!("{addr}:{DEFAULT_PORT}")
    } else {
        addr.to_string()
    }
}

/// docker's mergeSwarmSpec: the flags given, over `spec`; `ca_cert` is the
/// certificate an `--external-ca` without one gets (update: the current
/// root; init: none).
fn merge_spec(mut spec: SwarmSpec, args: &SwarmSpecArgs, ca_cert: Option<&str>) -> SwarmSpec {
    if let Some(limit) = args.task_history_limit {
        spec.orchestration
            .get_or_insert_with(Default::default)
            .task_history_retention_limit = Some(limit);
    }
    if let Some(period) = args.dispatcher_heartbeat {
        spec.dispatcher
            .get_or_insert_with(Default::default)
            .heartbeat_period = Some(period);
    }
    if let Some(keep) = args.max_snapshots {
        spec.raft
            .get_or_insert_with(Default::default)
            .keep_old_snapshots = Some(keep);
    }
    if let Some(interval) = args.snapshot_interval {
        spec.raft
            .get_or_insert_with(Default::default)
            .snapshot_interval = Some(interval);
    }
    if let Some(autolock) = args.autolock {
        spec.encryption_config
            .get_or_insert_with(Default::default)
            .auto_lock_managers = Some(autolock);
    }
    if let Some(on) = args.rebalance {
        spec.labels.get_or_insert_with(Default::default).insert(
            crate::service::opts::REBALANCE_LABEL.to_string(),
            on.to_string(),
        );
    }
    set_allow_label(&mut spec, ALLOW_PRIVILEGED_LABEL, args.allow_privileged);
    set_allow_label(&mut spec, ALLOW_WORKER_EXEC_LABEL, args.allow_worker_exec);
    ca::merge_ca_flags(&mut spec, args.cert_expiry, &args.external_ca, ca_cert);
    spec
}

/// The label that lets workers' clients `exec` (the manager's
/// `flotilla_manager::execrelay::ALLOW_WORKER_EXEC`).
pub const ALLOW_WORKER_EXEC_LABEL: &str = "com.flotilla.allow-worker-exec";

async fn print_join_command(
    client: &Client,
    node_id: &str,
    worker: bool,
    manager: bool,
) -> Result<()> {
    let node: Node = client
        .get(&format!("/nodes/{}", crate::client::encode(node_id)))
        .await?;
    let swarm: Swarm = client.get("/swarm").await?;
    let Some(status) = node.manager_status else {
        return Ok(());
    };
    let addr = status.addr.unwrap_or_default();
    let tokens = swarm.join_tokens.unwrap_or_default();
    if worker {
        out(&join_text(
            "worker",
            &tokens.worker.unwrap_or_default(),
            &addr,
        ));
    }
    if manager {
        out(&join_text(
            "manager",
            &tokens.manager.unwrap_or_default(),
            &addr,
        ));
    }
    Ok(())
}

fn join_text(role: &str, token: &str, addr: &str) -> String {
    format!(
        "To add a {role} to this swarm, run the following command:\n\n    {PROGRAM} swarm join --token {token} {addr}\n\n"
    )
}

/// docker's init and update: the key, printed only when there is one.
async fn print_unlock_key(client: &Client) -> Result<()> {
    let key = unlock::fetch_unlock_key(client).await?;
    out(&unlock::unlock_text(&key));
    Ok(())
}

async fn join_token(client: &Client, args: JoinTokenArgs) -> Result<()> {
    let worker = args.role == "worker";
    let manager = args.role == "manager";
    if !worker && !manager {
        return Err(CliError::Other(format!("unknown role {}", args.role)));
    }
    if args.rotate {
        let swarm: Swarm = client.get("/swarm").await?;
        let rotate = Rotate {
            worker_token: worker,
            manager_token: manager,
            unlock_key: false,
        };
        let spec = swarm.spec.clone().unwrap_or_default();
        update_swarm(client, &swarm, &spec, rotate).await?;
        if !args.quiet {
            out(&format!(
                "Successfully rotated {} join token.\n\n",
                args.role
            ));
        }
    }
    let swarm: Swarm = client.get("/swarm").await?;
    let tokens = swarm.join_tokens.unwrap_or_default();
    if args.quiet {
        let token = if worker {
            tokens.worker
        } else {
            tokens.manager
        };
        out(&format!("{}\n", token.unwrap_or_default()));
        return Ok(());
    }
    let info: SystemInfo = client.get("/info").await?;
    let node_id = info.swarm.and_then(|s| s.node_id).unwrap_or_default();
    print_join_command(client, &node_id, worker, manager).await
}

/// What `POST /swarm/update` rotates besides applying the spec.
#[derive(Default, Clone, Copy)]
pub(super) struct Rotate {
    pub worker_token: bool,
    pub manager_token: bool,
    pub unlock_key: bool,
}

/// `POST /swarm/update` with `spec` at `swarm`'s version, as the docker CLI
/// sends it (every rotation flag spelled out).
pub(super) async fn update_swarm(
    client: &Client,
    swarm: &Swarm,
    spec: &SwarmSpec,
    rotate: Rotate,
) -> Result<()> {
    let params = [
        ("version", version_of(swarm)),
        ("rotateWorkerToken", rotate.worker_token.to_string()),
        ("rotateManagerToken", rotate.manager_token.to_string()),
        ("rotateManagerUnlockKey", rotate.unlock_key.to_string()),
    ];
    client
        .post(&format!("/swarm/update{}", query(&params)), Some(spec))
        .await?;
    Ok(())
}

fn version_of(swarm: &Swarm) -> String {
    swarm
        .version
        .as_ref()
        .and_then(|v| v.index)
        .unwrap_or(0)
        .to_string()
}

async fn leave(client: &Client, args: LeaveArgs) -> Result<()> {
    let path = if args.force {
        "/swarm/leave?force=1"
    } else {
        "/swarm/leave"
    };
    client.post::<()>(path, None).await?;
    out("Node left the swarm.\n");
    Ok(())
}

impl SwarmSpecArgs {
    /// Whether no flag was given (docker's `NFlag() == 0`).
    fn is_empty(&self) -> bool {
        self.task_history_limit.is_none()
            && self.dispatcher_heartbeat.is_none()
            && self.cert_expiry.is_none()
            && self.external_ca.is_empty()
            && self.max_snapshots.is_none()
            && self.snapshot_interval.is_none()
            && self.autolock.is_none()
            && self.rebalance.is_none()
            && self.allow_worker_exec.is_none()
            && self.allow_privileged.is_none()
    }
}

/// docker's `swarm update` with no flag: its help on stdout, exit status 0.
fn print_update_help() -> Result<()> {
    use clap::{Args as _, Subcommand as _};
    let command = crate::TlsArgs::augment_args(crate::ClientCommand::augment_subcommands(
        clap::Command::new(PROGRAM),
    ));
    match command.try_get_matches_from([PROGRAM, "swarm", "update", "--help"]) {
        Err(help) => {
            out(&help.render().to_string());
            Ok(())
        }
        Ok(_) => Ok(()),
    }
}

async fn update(client: &Client, args: UpdateArgs) -> Result<()> {
    if args.spec.is_empty() {
        return print_update_help();
    }
    let swarm: Swarm = client.get("/swarm").await?;
    let previous_autolock = swarm
        .spec
        .as_ref()
        .and_then(|s| s.encryption_config.as_ref())
        .and_then(|e| e.auto_lock_managers)
        .unwrap_or(false);
    let trust_root = swarm
        .tls_info
        .as_ref()
        .and_then(|t| t.trust_root.clone())
        .unwrap_or_default();
    let spec = merge_spec(
        swarm.spec.clone().unwrap_or_default(),
        &args.spec,
        Some(&trust_root),
    );
    update_swarm(client, &swarm, &spec, Rotate::default()).await?;
    out("Swarm updated.\n");
    if args.spec.autolock == Some(true) && !previous_autolock {
        print_unlock_key(client).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_get_the_default_port() {
        assert_eq!(with_default_port("0.0.0.0:2377"), "0.0.0.0:2377");
        assert_eq!(with_default_port("10.0.0.1"), "10.0.0.1:2377");
        assert_eq!(with_default_port("10.0.0.1:4000"), "10.0.0.1:4000");
        assert_eq!(with_default_port("eth0"), "eth0:2377");
    }

    #[test]
    fn join_text_matches_docker() {
        assert_eq!(
            join_text("worker", "SWMTKN-1-x", "10.0.0.1:2377"),
            "To add a worker to this swarm, run the following command:\n\n    flotilla swarm join --token SWMTKN-1-x 10.0.0.1:2377\n\n"
        );
    }

    use crate::testutil::{FakeDaemon, Seen};
    use std::sync::Arc;

    /// A swarm manager whose autolock setting is `autolock`.
    fn manager(autolock: bool) -> FakeDaemon {
        FakeDaemon::start_with(Arc::new(move |seen: &Seen| {
            let path = seen.path.as_str();
            let body = match path {
                "/v1.41/swarm/init" => r#""node1""#.to_string(),
                "/v1.41/nodes/node1" => {
                    r#"{"ID":"node1","ManagerStatus":{"Addr":"10.0.0.1:2377"}}"#.to_string()
                }
                "/v1.41/swarm" => format!(
                    r#"{{"ID":"c1","Version":{{"Index":9}},"Spec":{{"Name":"default","EncryptionConfig":{{"AutoLockManagers":{autolock}}}}},"TLSInfo":{{"TrustRoot":"ROOT"}},"JoinTokens":{{"Worker":"SWMTKN-1-w","Manager":"SWMTKN-1-m"}}}}"#
                ),
                "/v1.41/swarm/unlockkey" => r#"{"UnlockKey":"SWMKEY-1-k"}"#.to_string(),
                p if p.starts_with("/v1.41/swarm/update") => String::new(),
                _ => return (404, r#"{"message":"page not found"}"#.to_string()),
            };
            (200, body)
        }))
    }

    fn paths(daemon: &FakeDaemon) -> Vec<String> {
        daemon
            .requests()
            .into_iter()
            .map(|(line, _)| line.split('?').next().unwrap_or_default().to_string())
            .collect()
    }

    #[derive(clap::Parser)]
    struct SwarmCli {
        #[command(subcommand)]
        cmd: SwarmCmd,
    }

    fn parse(args: &[&str]) -> SwarmCmd {
        use clap::Parser;
        SwarmCli::try_parse_from(std::iter::once("swarm").chain(args.iter().copied()))
            .unwrap()
            .cmd
    }

    #[tokio::test]
    async fn init_autolock_asks_for_the_unlock_key() {
        let daemon = manager(true);
        run(&daemon.client(), parse(&["init", "--autolock"]))
            .await
            .unwrap();
        let requests = daemon.requests();
        let request: Value = serde_json::from_str(&requests[0].1).unwrap();
        assert_eq!(request["AutoLockManagers"], true);
        assert_eq!(
            paths(&daemon),
            [
                "POST /v1.41/swarm/init",
                "GET /v1.41/nodes/node1",
                "GET /v1.41/swarm",
                "GET /v1.41/swarm/unlockkey"
            ]
        );
        let daemon = manager(false);
        run(&daemon.client(), parse(&["init", "--autolock=false"]))
            .await
            .unwrap();
        assert!(!paths(&daemon).contains(&"GET /v1.41/swarm/unlockkey".to_string()));
    }

    #[tokio::test]
    async fn update_autolock_prints_the_key_only_when_turned_on() {
        for (was, flag, asks) in [
            (false, "--autolock=true", true),
            (false, "--autolock", true),
            (true, "--autolock=true", false),
            (true, "--autolock=false", false),
            (false, "--autolock=f", false),
        ] {
            let daemon = manager(was);
            run(&daemon.client(), parse(&["update", flag]))
                .await
                .unwrap();
            let requests = daemon.requests();
            let spec: Value = serde_json::from_str(&requests[1].1).unwrap();
            let now = !matches!(flag, "--autolock=false" | "--autolock=f");
            assert_eq!(spec["EncryptionConfig"]["AutoLockManagers"], now, "{flag}");
            assert_eq!(
                paths(&daemon).contains(&"GET /v1.41/swarm/unlockkey".to_string()),
                asks,
                "{was} {flag}"
            );
        }
    }

    #[tokio::test]
    async fn update_external_ca_defaults_to_the_current_root() {
        let daemon = manager(false);
        run(
            &daemon.client(),
            parse(&[
                "update",
                "--external-ca",
                "protocol=cfssl,url=https://ca.example",
                "--cert-expiry",
                "720h",
            ]),
        )
        .await
        .unwrap();
        let requests = daemon.requests();
        assert_eq!(
            requests[1].0,
            "POST /v1.41/swarm/update?version=9&rotateWorkerToken=false&rotateManagerToken=false&rotateManagerUnlockKey=false"
        );
        let spec: Value = serde_json::from_str(&requests[1].1).unwrap();
        assert_eq!(
            spec["CAConfig"],
            json!({"NodeCertExpiry": 2_592_000_000_000_000i64, "ExternalCAs": [{"Protocol": "cfssl", "URL": "https://ca.example", "CACert": "ROOT"}]})
        );
    }

    #[tokio::test]
    async fn update_allow_privileged_sets_and_clears_the_swarm_label() {
        for (flag, want) in [
            ("--allow-privileged", json!("true")),
            ("--allow-privileged=true", json!("true")),
            ("--allow-privileged=false", Value::Null),
        ] {
            let daemon = manager(false);
            run(&daemon.client(), parse(&["update", flag]))
                .await
                .unwrap();
            let requests = daemon.requests();
            let spec: Value = serde_json::from_str(&requests[1].1).unwrap();
            assert_eq!(spec["Labels"][ALLOW_PRIVILEGED_LABEL], want, "{flag}");
            assert_eq!(spec["Name"], "default", "{flag}");
        }
        let mut spec = SwarmSpec::default();
        set_allow_label(&mut spec, ALLOW_PRIVILEGED_LABEL, Some(true));
        set_allow_label(&mut spec, ALLOW_PRIVILEGED_LABEL, None);
        assert_eq!(
            spec.labels.as_ref().unwrap()[ALLOW_PRIVILEGED_LABEL],
            "true"
        );
        set_allow_label(&mut spec, ALLOW_PRIVILEGED_LABEL, Some(false));
        assert!(spec.labels.unwrap().is_empty());
    }

    #[tokio::test]
    async fn update_allow_worker_exec_sets_and_clears_the_swarm_label() {
        for (flag, want) in [
            ("--allow-worker-exec", json!("true")),
            ("--allow-worker-exec=true", json!("true")),
            ("--allow-worker-exec=false", Value::Null),
        ] {
            let daemon = manager(false);
            run(&daemon.client(), parse(&["update", flag]))
                .await
                .unwrap();
            let requests = daemon.requests();
            let spec: Value = serde_json::from_str(&requests[1].1).unwrap();
            assert_eq!(spec["Labels"][ALLOW_WORKER_EXEC_LABEL], want, "{flag}");
        }
        use clap::Parser;
        assert!(
            SwarmCli::try_parse_from(["swarm", "update", "--allow-worker-exec=maybe"]).is_err()
        );
        let SwarmCmd::Init(init) = parse(&["init", "--allow-worker-exec"]) else {
            panic!("not init")
        };
        let spec = merge_spec(SwarmSpec::default(), &init.spec, None);
        assert_eq!(spec.labels.unwrap()[ALLOW_WORKER_EXEC_LABEL], "true");
    }

    #[tokio::test]
    async fn update_without_flags_only_shows_help() {
        let daemon = manager(false);
        run(&daemon.client(), parse(&["update"])).await.unwrap();
        assert!(daemon.requests().is_empty());
    }

    #[test]
    fn spec_flags_set_only_what_was_given() {
        let args = SwarmSpecArgs {
            task_history_limit: Some(3),
            dispatcher_heartbeat: Some(10_000_000_000),
            ..Default::default()
        };
        let spec = serde_json::to_value(merge_spec(SwarmSpec::default(), &args, None)).unwrap();
        assert_eq!(
            spec,
            json!({"Orchestration": {"TaskHistoryRetentionLimit": 3}, "Dispatcher": {"HeartbeatPeriod": 10_000_000_000i64}})
        );
    }
}
