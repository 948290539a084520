//! `service create`: flags to ServiceSpec, a best-effort registry digest
//! lookup, POST /services/create, then the convergence display.

use std::collections::HashMap;

use bollard::models::{
    EndpointSpec, ServiceCreateResponse, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    ServiceSpecModeReplicatedJob, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecDnsConfig,
    TaskSpecPlacement,
};
use clap::Args;

use super::opts::{kv_map, merge_env, parse_mount, parse_network, parse_publish, CommonFlags};
use super::refs::{parse_config, parse_secret, resolve_configs, resolve_secrets, FileRef};
use crate::client::{decode, encode, CliError, Client, Result};
use crate::out;
use crate::registry::{auth_token_for_image, AuthEnv, AUTH_HEADER};

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub common: CommonFlags,
    #[command(flatten)]
    pub host: super::hostopts::CreateHostFlags,
    /// Service name
    #[arg(long, value_name = "string")]
    pub name: Option<String>,
    /// Service mode ("replicated", "global", "replicated-job", "global-job")
    #[arg(long, value_name = "string", default_value = "replicated")]
    pub mode: String,
    /// Set environment variables
    #[arg(short, long = "env", value_name = "list")]
    pub env: Vec<String>,
    /// Service labels
    #[arg(short, long = "label", value_name = "list")]
    pub label: Vec<String>,
    /// Container labels
    #[arg(long = "container-label", value_name = "list")]
    pub container_label: Vec<String>,
    /// Placement constraints
    #[arg(long, value_name = "list")]
    pub constraint: Vec<String>,
    /// Add a placement preference
    #[arg(long = "placement-pref", value_name = "pref")]
    pub placement_pref: Vec<String>,
    /// Attach a filesystem mount to the service
    #[arg(long, value_name = "mount")]
    pub mount: Vec<String>,
    /// Publish a port as a node port
    #[arg(short, long, value_name = "port")]
    pub publish: Vec<String>,
    /// Network attachments
    #[arg(long, value_name = "network")]
    pub network: Vec<String>,
    /// Specify secrets to expose to the service
    #[arg(long, value_name = "secret", value_parser = parse_secret)]
    pub secret: Vec<FileRef>,
    /// Specify configurations to expose to the service
    #[arg(long, value_name = "config", value_parser = parse_config)]
    pub config: Vec<FileRef>,
    /// IMAGE [COMMAND] [ARG...]; flags after IMAGE belong to the command.
    #[arg(value_name = "IMAGE", required = true, num_args = 1.., trailing_var_arg = true)]
    pub image_and_args: Vec<String>,
}

pub async fn run(client: &Client, args: CreateArgs) -> Result<()> {
    run_with(client, args, &AuthEnv::from_process()).await
}

/// `run` with the registry credentials looked up in `env`.
pub async fn run_with(client: &Client, args: CreateArgs, env: &AuthEnv) -> Result<()> {
    let mut spec = build_spec(&args)?;
    resolve_networks(client, &mut spec).await?;
    resolve_secrets_and_configs(client, &mut spec, &args).await?;
    // docker: only with the flag, for the image as given.
    let token = match args.image_and_args.first() {
        Some(image) if args.common.with_registry_auth => Some(auth_token_for_image(image, env)?),
        _ => None,
    };
    let headers: Vec<(&str, &str)> = token
        .as_deref()
        .map(|t| vec![(AUTH_HEADER, t)])
        .unwrap_or_default();
    let query = !args.common.no_resolve_image;
    let resolve_warning = prepare_image(client, &mut spec, query, &headers).await;
    let answer = client
        .post_with_headers("/services/create", Some(&spec), &headers)
        .await?;
    let response: ServiceCreateResponse = decode(&answer)?;
    // The daemon's warnings, then the client's own (as docker appends it).
    let mut warnings = response.warnings.unwrap_or_default();
    warnings.extend(resolve_warning);
    super::print_warnings(&warnings);
    let id = response.id.unwrap_or_default();
    out(&format!("{id}\n"));
    if args.common.detach {
        return Ok(());
    }
    crate::progress::wait_on_service(client, &id, args.common.quiet).await
}

/// docker's ToService: each `--network` target, a name or ID as given,
/// becomes the swarm network's ID (GET /networks/{name}?scope=swarm; an
/// unknown one fails with "Error: No such network: NAME"), then the
/// attachments are sorted by ID.
async fn resolve_networks(client: &Client, spec: &mut ServiceSpec) -> Result<()> {
    let Some(networks) = spec
        .task_template
        .as_mut()
        .and_then(|t| t.networks.as_mut())
    else {
        return Ok(());
    };
    for network in networks.iter_mut() {
        let given = network.target.clone().unwrap_or_default();
        network.target = Some(crate::network::swarm_network_id(client, &given).await?);
    }
    networks.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(())
}

/// docker's runCreate after ToService: the `--secret` names, then the
/// `--config` names, become references by ID (ParseSecrets, setConfigs); a
/// name that is not there ("secret not found: NAME") or two references to
/// one file fail before the service is asked for.
async fn resolve_secrets_and_configs(
    client: &Client,
    spec: &mut ServiceSpec,
    args: &CreateArgs,
) -> Result<()> {
    let container = spec
        .task_template
        .get_or_insert_with(Default::default)
        .container_spec
        .get_or_insert_with(Default::default);
    if !args.secret.is_empty() {
        container.secrets = Some(resolve_secrets(client, &args.secret).await?);
    }
    if !args.config.is_empty() {
        container.configs = Some(resolve_configs(client, &args.config).await?);
    }
    Ok(())
}

/// What docker's client does to the image before it sends a service
/// (ServiceCreate, ServiceUpdate): tags a bare name ":latest"; then, when
/// `query`, asks the registry through the daemon (with the request's
/// credentials headers) and pins the image to its digest. Returns the
/// warning when the registry could not be asked.
pub(crate) async fn prepare_image(
    client: &Client,
    spec: &mut ServiceSpec,
    query: bool,
    headers: &[(&str, &str)],
) -> Option<String> {
    let container = spec
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())?;
    let given = container.image.clone().unwrap_or_default();
    let image = crate::registry::image_with_tag(&given).unwrap_or(given);
    container.image = Some(image.clone());
    if !query {
        return None;
    }
    let digest = match client
        .get_with_headers::<serde_json::Value>(
            &format!("/distribution/{}/json", encode(&image)),
            headers,
        )
        .await
    {
        Ok(answer) => answer["Descriptor"]["digest"].as_str().map(str::to_string),
        Err(_) => None,
    };
    match digest {
        Some(digest) => {
            container.image = Some(crate::registry::image_with_digest(&image, &digest));
            None
        }
        None => Some(digest_warning(&image)),
    }
}

pub(crate) fn digest_warning(image: &str) -> String {
    format!(
        "image {image} could not be accessed on a registry to record\nits digest. Each node will access {image} independently,\npossibly leading to different nodes running different\nversions of the image.\n"
    )
}

/// The ServiceSpec the docker CLI would send for these flags.
pub fn build_spec(args: &CreateArgs) -> Result<ServiceSpec> {
    let common = &args.common;
    let (image, command_args) = args.image_and_args.split_first().ok_or_else(|| {
        CliError::Other("\"service create\" requires at least 1 argument.".into())
    })?;
    if !args.placement_pref.is_empty() {
        return Err("--placement-pref is not supported by flotilla yet".into());
    }
    let mut env = Vec::new();
    merge_env(&mut env, &args.env);
    let mut mounts = Vec::new();
    for mount in &args.mount {
        mounts.push(parse_mount(mount)?);
    }
    let mut ports = Vec::new();
    for publish in &args.publish {
        ports.extend(parse_publish(publish)?);
    }
    let mut networks = Vec::new();
    for network in &args.network {
        networks.push(parse_network(network)?);
    }
    let health_check = common.health_check(None)?;
    let mode = mode(args)?;
    let update_config = common.update_config(None)?;
    let rollback_config = common.rollback_config(None)?;
    if is_job(&mode) && (update_config.is_some() || rollback_config.is_some()) {
        return Err("update and rollback configuration is not supported for jobs".into());
    }
    let mut container = TaskSpecContainerSpec {
        image: Some(image.clone()),
        args: non_empty(command_args.to_vec()),
        command: common.entrypoint_words()?.and_then(non_empty),
        env: non_empty(env),
        hostname: common.hostname.clone().filter(|h| !h.is_empty()),
        labels: Some(kv_map(&args.container_label)),
        dir: common.workdir.clone().filter(|d| !d.is_empty()),
        user: common.user.clone().filter(|u| !u.is_empty()),
        stop_signal: common.stop_signal.clone().filter(|s| !s.is_empty()),
        tty: common.tty.filter(|t| *t),
        read_only: common.read_only.filter(|r| *r),
        mounts: non_empty(mounts),
        init: Some(common.init.unwrap_or(false)),
        dns_config: Some(TaskSpecContainerSpecDnsConfig::default()),
        stop_grace_period: common.stop_grace_period,
        health_check,
        ..Default::default()
    };
    args.host.apply(&mut container)?;
    let placement = TaskSpecPlacement {
        constraints: non_empty(args.constraint.clone()),
        max_replicas: common
            .replicas_max_per_node
            .filter(|m| *m > 0)
            .map(|m| m as i64),
        ..Default::default()
    };
    let task_template = TaskSpec {
        container_spec: Some(container),
        resources: Some(common.resources(None)),
        restart_policy: common.restart_policy(None)?,
        placement: Some(placement),
        networks: non_empty(networks),
        ..Default::default()
    };
    let mut labels = kv_map(&args.label);
    super::opts::set_rebalance(&mut labels, common.rebalance);
    Ok(ServiceSpec {
        name: args.name.clone().filter(|n| !n.is_empty()),
        labels: Some(labels),
        task_template: Some(task_template),
        mode: Some(mode),
        update_config,
        rollback_config,
        endpoint_spec: Some(endpoint_spec(common.endpoint_mode.as_deref(), ports)?),
        ..Default::default()
    })
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    if items.is_empty() {
        None
    } else {
        Some(items)
    }
}

/// docker's ToServiceMode: the mode and its counts from --mode,
/// --replicas and --max-concurrent, refusing what a mode cannot use. A
/// replicated job's counts are left out when not given, for the daemon to
/// fill in (MaxConcurrent 1, TotalCompletions = MaxConcurrent).
fn mode(args: &CreateArgs) -> Result<ServiceSpecMode> {
    let common = &args.common;
    let replicas = common.replicas.map(|r| r as i64);
    let max_concurrent = common.max_concurrent.map(|m| m as i64);
    let max_per_node = common.replicas_max_per_node.is_some_and(|m| m > 0);
    const REPLICAS: &str = "replicas can only be used with replicated or replicated-job mode";
    const MAX_PER_NODE: &str =
        "replicas-max-per-node can only be used with replicated or replicated-job mode";
    const MAX_CONCURRENT: &str = "max-concurrent can only be used with replicated-job mode";
    let mut mode = ServiceSpecMode::default();
    match args.mode.as_str() {
        "global" => {
            if replicas.is_some() {
                return Err(REPLICAS.into());
            }
            if max_per_node {
                return Err(MAX_PER_NODE.into());
            }
            if max_concurrent.is_some() {
                return Err(MAX_CONCURRENT.into());
            }
            mode.global = Some(HashMap::new());
        }
        "replicated" => {
            if max_concurrent.is_some() {
                return Err(MAX_CONCURRENT.into());
            }
            mode.replicated = Some(ServiceSpecModeReplicated { replicas });
        }
        "replicated-job" => {
            mode.replicated_job = Some(ServiceSpecModeReplicatedJob {
                max_concurrent: max_concurrent.or(replicas),
                total_completions: replicas,
            });
        }
        "global-job" => {
            if max_per_node {
                return Err(MAX_PER_NODE.into());
            }
            if max_concurrent.is_some() {
                return Err(MAX_CONCURRENT.into());
            }
            if replicas.is_some() {
                return Err(REPLICAS.into());
            }
            mode.global_job = Some(HashMap::new());
        }
        other => {
            return Err(CliError::Other(format!(
                "Unknown mode: {other}, only replicated and global supported"
            )))
        }
    }
    Ok(mode)
}

fn is_job(mode: &ServiceSpecMode) -> bool {
    mode.replicated_job.is_some() || mode.global_job.is_some()
}

pub(crate) fn endpoint_spec(
    mode: Option<&str>,
    ports: Vec<bollard::models::EndpointPortConfig>,
) -> Result<EndpointSpec> {
    let mode = mode.unwrap_or("vip").to_lowercase();
    let mode = serde_json::from_value(serde_json::Value::String(mode.clone())).map_err(|_| {
        CliError::Other(format!(
            "invalid endpoint mode {mode}: must be vip or dnsrr"
        ))
    })?;
    Ok(EndpointSpec {
        mode: Some(mode),
        ports: non_empty(ports),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CreateArgs,
    }

    fn spec(argv: &[&str]) -> serde_json::Value {
        let cli =
            Cli::try_parse_from(std::iter::once("create").chain(argv.iter().copied())).unwrap();
        serde_json::to_value(build_spec(&cli.args).unwrap()).unwrap()
    }

    #[test]
    fn seed_redis_example() {
        let s = spec(&[
            "--replicas",
            "4",
            "--name",
            "redis",
            "--update-delay",
            "10s",
            "--update-parallelism",
            "2",
            "redis:3.0.6",
        ]);
        assert_eq!(s["Name"], "redis");
        assert_eq!(s["Mode"], json!({"Replicated": {"Replicas": 4}}));
        assert_eq!(
            s["UpdateConfig"],
            json!({"Parallelism": 2, "Delay": 10_000_000_000i64, "FailureAction": "pause", "Monitor": 5_000_000_000i64, "MaxFailureRatio": 0.0, "Order": "stop-first"})
        );
        assert_eq!(s["TaskTemplate"]["ContainerSpec"]["Image"], "redis:3.0.6");
        assert_eq!(s["EndpointSpec"], json!({"Mode": "vip"}));
        assert!(s.get("RollbackConfig").is_none());
    }

    #[test]
    fn command_and_flags_after_image_belong_to_the_command() {
        let s = spec(&[
            "--name",
            "helloworld",
            "alpine",
            "ping",
            "-c",
            "3",
            "enmilocalfunciona.io",
        ]);
        assert_eq!(
            s["TaskTemplate"]["ContainerSpec"]["Args"],
            json!(["ping", "-c", "3", "enmilocalfunciona.io"])
        );
        assert_eq!(s["Mode"], json!({"Replicated": {}}));
    }

    #[test]
    fn resources_restart_env_ports() {
        let s = spec(&[
            "--limit-cpu",
            "0.5",
            "--reserve-memory",
            "512M",
            "--restart-condition",
            "on-failure",
            "--restart-max-attempts",
            "3",
            "-e",
            "A=1",
            "-l",
            "tier=web",
            "-p",
            "8080:80",
            "--constraint",
            "node.role==manager",
            "--mode",
            "global",
            "busybox",
        ]);
        let t = &s["TaskTemplate"];
        assert_eq!(
            t["Resources"],
            json!({"Limits": {"NanoCPUs": 500_000_000}, "Reservations": {"MemoryBytes": 536_870_912}})
        );
        assert_eq!(
            t["RestartPolicy"],
            json!({"Condition": "on-failure", "Delay": 5_000_000_000i64, "MaxAttempts": 3})
        );
        assert_eq!(t["ContainerSpec"]["Env"], json!(["A=1"]));
        assert_eq!(t["Placement"]["Constraints"], json!(["node.role==manager"]));
        assert_eq!(s["Labels"], json!({"tier": "web"}));
        assert_eq!(s["Mode"], json!({"Global": {}}));
        assert_eq!(
            s["EndpointSpec"]["Ports"],
            json!([{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}])
        );
    }

    #[test]
    fn healthcheck_flags() {
        let s = spec(&[
            "--health-cmd",
            "true",
            "--health-interval",
            "5s",
            "--health-retries",
            "2",
            "busybox",
        ]);
        assert_eq!(
            s["TaskTemplate"]["ContainerSpec"]["HealthCheck"],
            json!({"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000i64, "Retries": 2})
        );
        let s = spec(&["--no-healthcheck", "busybox"]);
        assert_eq!(
            s["TaskTemplate"]["ContainerSpec"]["HealthCheck"],
            json!({"Test": ["NONE"]})
        );
    }

    #[test]
    fn network_attachments_keep_their_order_until_resolved() {
        let s = spec(&["busybox"]);
        assert!(s["TaskTemplate"].get("Networks").is_none());
        let s = spec(&[
            "--network",
            "backend",
            "--network",
            "name=Front,alias=web,driver-opt=opt=1",
            "busybox",
        ]);
        assert_eq!(
            s["TaskTemplate"]["Networks"],
            json!([
                {"Target": "backend"},
                {"Target": "front", "Aliases": ["web"], "DriverOpts": {"opt": "1"}}
            ])
        );
        let cli = Cli::try_parse_from(["create", "--network", "alias=x", "busybox"]).unwrap();
        assert_eq!(
            build_spec(&cli.args).unwrap_err().to_string(),
            "network name/id is not specified"
        );
    }

    #[test]
    fn bad_combinations() {
        let cli = Cli::try_parse_from(["create", "--mode", "global", "--replicas", "2", "busybox"])
            .unwrap();
        assert!(build_spec(&cli.args).is_err());
        assert!(Cli::try_parse_from(["create", "--replicas", "-1", "busybox"]).is_err());
        assert!(Cli::try_parse_from(["create", "--update-delay", "10", "busybox"]).is_err());
    }

    #[test]
    fn rebalance_is_a_service_label() {
        let label = |argv: &[&str]| {
            let cli = Cli::try_parse_from(argv).unwrap();
            build_spec(&cli.args)
                .unwrap()
                .labels
                .unwrap_or_default()
                .get(super::super::opts::REBALANCE_LABEL)
                .cloned()
        };
        assert_eq!(label(&["create", "busybox"]), None);
        assert_eq!(
            label(&["create", "--rebalance=false", "busybox"]),
            Some("false".into())
        );
        assert_eq!(
            label(&["create", "--rebalance", "busybox"]),
            Some("true".into())
        );
        assert!(Cli::try_parse_from(["create", "--rebalance=maybe", "busybox"]).is_err());
    }

    fn spec_error(argv: &[&str]) -> String {
        let cli =
            Cli::try_parse_from(std::iter::once("create").chain(argv.iter().copied())).unwrap();
        build_spec(&cli.args).unwrap_err().to_string()
    }

    #[test]
    fn job_modes_as_docker_sends_them() {
        // Counts left out for the daemon to fill in when not given.
        let s = spec(&["--mode", "replicated-job", "busybox"]);
        assert_eq!(s["Mode"], json!({"ReplicatedJob": {}}));
        // --replicas is TotalCompletions, and MaxConcurrent unless given.
        let s = spec(&["--mode", "replicated-job", "--replicas", "3", "busybox"]);
        assert_eq!(
            s["Mode"],
            json!({"ReplicatedJob": {"MaxConcurrent": 3, "TotalCompletions": 3}})
        );
        let s = spec(&[
            "--mode",
            "replicated-job",
            "--replicas",
            "5",
            "--max-concurrent",
            "2",
            "--replicas-max-per-node",
            "1",
            "busybox",
        ]);
        assert_eq!(
            s["Mode"],
            json!({"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 5}})
        );
        assert_eq!(s["TaskTemplate"]["Placement"]["MaxReplicas"], 1);
        let s = spec(&[
            "--mode",
            "replicated-job",
            "--max-concurrent",
            "2",
            "busybox",
        ]);
        assert_eq!(s["Mode"], json!({"ReplicatedJob": {"MaxConcurrent": 2}}));
        let s = spec(&["--mode", "global-job", "busybox"]);
        assert_eq!(s["Mode"], json!({"GlobalJob": {}}));
        assert!(s.get("UpdateConfig").is_none());
        assert!(s["TaskTemplate"].get("RestartPolicy").is_none());
    }

    #[test]
    fn mode_flag_misuse_fails_as_docker() {
        let max_concurrent = "max-concurrent can only be used with replicated-job mode";
        let replicas = "replicas can only be used with replicated or replicated-job mode";
        let per_node =
            "replicas-max-per-node can only be used with replicated or replicated-job mode";
        let cases: &[(&[&str], &str)] = &[
            (&["--max-concurrent", "2", "busybox"], max_concurrent),
            (
                &["--mode", "global", "--max-concurrent", "2", "busybox"],
                max_concurrent,
            ),
            (
                &["--mode", "global", "--replicas", "2", "busybox"],
                replicas,
            ),
            (
                &[
                    "--mode",
                    "global",
                    "--replicas-max-per-node",
                    "1",
                    "busybox",
                ],
                per_node,
            ),
            (
                &["--mode", "global-job", "--replicas", "2", "busybox"],
                replicas,
            ),
            (
                &["--mode", "global-job", "--max-concurrent", "2", "busybox"],
                max_concurrent,
            ),
            (
                &[
                    "--mode",
                    "global-job",
                    "--replicas-max-per-node",
                    "1",
                    "busybox",
                ],
                per_node,
            ),
            // docker checks global-job's flags in another order than global's.
            (
                &[
                    "--mode",
                    "global-job",
                    "--replicas",
                    "1",
                    "--replicas-max-per-node",
                    "1",
                    "busybox",
                ],
                per_node,
            ),
            (
                &[
                    "--mode",
                    "global",
                    "--replicas",
                    "1",
                    "--replicas-max-per-node",
                    "1",
                    "busybox",
                ],
                replicas,
            ),
            (
                &["--mode", "job", "busybox"],
                "Unknown mode: job, only replicated and global supported",
            ),
            (
                &[
                    "--mode",
                    "replicated-job",
                    "--update-parallelism",
                    "2",
                    "busybox",
                ],
                "update and rollback configuration is not supported for jobs",
            ),
            (
                &["--mode", "global-job", "--rollback-delay", "1s", "busybox"],
                "update and rollback configuration is not supported for jobs",
            ),
        ];
        for (argv, err) in cases {
            assert_eq!(spec_error(argv), *err, "{argv:?}");
        }
        assert!(Cli::try_parse_from(["create", "--max-concurrent", "-1", "busybox"]).is_err());
    }
}
