//! `service update`: read the service, apply the flags to its spec (docker's
//! updateService), post it with the read version, then show convergence.

use std::collections::{BTreeSet, HashMap, HashSet};

use bollard::models::{
    NetworkAttachmentConfig, ServiceSpec, TaskSpecContainerSpec, TaskSpecPlacement,
};
use clap::Args;

use super::opts::{
    kv_map, merge_env, parse_mount, parse_network, parse_publish, shell_words, CommonFlags,
};
use super::refs::{
    parse_config, parse_secret, resolve_configs, resolve_secrets, update_configs, update_secrets,
    FileRef,
};
use super::UpdateAuth;
use crate::client::{CliError, Client, Result};
use crate::out;
use crate::registry::{auth_token_for_image, AuthEnv};

#[derive(Args, Debug, Default)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub common: CommonFlags,
    #[command(flatten)]
    pub host: super::hostopts::UpdateHostFlags,
    /// Service image tag
    #[arg(long, value_name = "string")]
    pub image: Option<String>,
    /// Service command args
    #[arg(long, value_name = "command", allow_hyphen_values = true)]
    pub args: Option<String>,
    /// Add or update an environment variable
    #[arg(long = "env-add", value_name = "list")]
    pub env_add: Vec<String>,
    /// Remove an environment variable
    #[arg(long = "env-rm", value_name = "list")]
    pub env_rm: Vec<String>,
    /// Add or update a service label
    #[arg(long = "label-add", value_name = "list")]
    pub label_add: Vec<String>,
    /// Remove a label by its key
    #[arg(long = "label-rm", value_name = "list")]
    pub label_rm: Vec<String>,
    /// Add or update a container label
    #[arg(long = "container-label-add", value_name = "list")]
    pub container_label_add: Vec<String>,
    /// Remove a container label by its key
    #[arg(long = "container-label-rm", value_name = "list")]
    pub container_label_rm: Vec<String>,
    /// Add or update a placement constraint
    #[arg(long = "constraint-add", value_name = "list")]
    pub constraint_add: Vec<String>,
    /// Remove a constraint
    #[arg(long = "constraint-rm", value_name = "list")]
    pub constraint_rm: Vec<String>,
    /// Add or update a mount on a service
    #[arg(long = "mount-add", value_name = "mount")]
    pub mount_add: Vec<String>,
    /// Remove a mount by its target path
    #[arg(long = "mount-rm", value_name = "list")]
    pub mount_rm: Vec<String>,
    /// Add or update a published port
    #[arg(long = "publish-add", value_name = "port")]
    pub publish_add: Vec<String>,
    /// Remove a published port by its target port
    #[arg(long = "publish-rm", value_name = "port")]
    pub publish_rm: Vec<String>,
    /// Add a network
    #[arg(long = "network-add", value_name = "network")]
    pub network_add: Vec<String>,
    /// Remove a network
    #[arg(long = "network-rm", value_name = "list")]
    pub network_rm: Vec<String>,
    /// Add or update a secret on a service
    #[arg(long = "secret-add", value_name = "secret", value_parser = parse_secret)]
    pub secret_add: Vec<FileRef>,
    /// Remove a secret
    #[arg(long = "secret-rm", value_name = "list")]
    pub secret_rm: Vec<String>,
    /// Add or update a config file on a service
    #[arg(long = "config-add", value_name = "config", value_parser = parse_config)]
    pub config_add: Vec<FileRef>,
    /// Remove a configuration file
    #[arg(long = "config-rm", value_name = "list")]
    pub config_rm: Vec<String>,
    /// Force update even if no changes require it
    #[arg(long)]
    pub force: bool,
    /// Rollback to previous specification
    #[arg(long)]
    pub rollback: bool,
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

pub async fn run(client: &Client, args: UpdateArgs) -> Result<()> {
    run_with(client, args, &AuthEnv::from_process()).await
}

/// `run` with the registry credentials looked up in `env`.
pub async fn run_with(client: &Client, args: UpdateArgs, env: &AuthEnv) -> Result<()> {
    let (service, _) = super::get_service(client, &args.service, false).await?;
    let mut spec = service.spec.clone().unwrap_or_default();
    if args.rollback {
        if other_flags_given(&args) {
            return Err("other flags may not be combined with --rollback".into());
        }
    } else {
        let networks = resolve_network_changes(client, &args).await?;
        apply(&mut spec, &args)?;
        if let Some(changes) = networks {
            apply_networks(&mut spec, changes)?;
        }
        apply_secrets_and_configs(client, &mut spec, &args).await?;
    }
    // docker: the credentials of the image the service will run (the one
    // it had when --image is not given).
    let token = if args.common.with_registry_auth {
        let image = spec
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        Some(auth_token_for_image(&image, env)?)
    } else {
        None
    };
    let auth = match token.as_deref() {
        Some(token) => UpdateAuth::Header(token),
        None => UpdateAuth::FromSpec,
    };
    // docker asks the registry only for a new --image.
    let query = args.image.is_some() && !args.common.no_resolve_image;
    super::post_update(client, &service, &spec, args.rollback, auth, query).await?;
    out(&format!("{}\n", args.service));
    if args.common.detach {
        return Ok(());
    }
    crate::progress::wait_on_service(client, &args.service, args.common.quiet).await
}

/// Whether anything but --rollback, --detach and --quiet was given.
fn other_flags_given(args: &UpdateArgs) -> bool {
    let bare = UpdateArgs {
        common: CommonFlags {
            detach: args.common.detach,
            quiet: args.common.quiet,
            ..Default::default()
        },
        rollback: args.rollback,
        service: args.service.clone(),
        ..Default::default()
    };
    format!("{args:?}") != format!("{bare:?}")
}

/// Applies every given flag onto the spec, leaving the rest as it was.
pub fn apply(spec: &mut ServiceSpec, args: &UpdateArgs) -> Result<()> {
    let common = &args.common;
    update_labels(
        spec.labels.get_or_insert_with(HashMap::new),
        &args.label_add,
        &args.label_rm,
    );
    super::opts::set_rebalance(
        spec.labels.get_or_insert_with(HashMap::new),
        common.rebalance,
    );
    update_mode(spec, common)?;
    spec.update_config = common.update_config(spec.update_config.take())?;
    spec.rollback_config = common.rollback_config(spec.rollback_config.take())?;
    update_endpoint(spec, args)?;
    let task = spec.task_template.get_or_insert_with(Default::default);
    task.restart_policy = common.restart_policy(task.restart_policy.take())?;
    task.resources = Some(common.resources(task.resources.take()));
    update_placement(task.placement.get_or_insert_with(Default::default), args);
    if args.force {
        super::force_update(spec);
    }
    let task = spec.task_template.get_or_insert_with(Default::default);
    update_container(
        task.container_spec.get_or_insert_with(Default::default),
        args,
    )
}

/// `--network-rm` and `--network-add` with every network looked up as a
/// swarm network (GET /networks/{name}?scope=swarm), as docker's
/// updateNetworks does before it changes anything.
#[derive(Debug, Default)]
pub struct NetworkChanges {
    /// IDs of the networks to detach.
    pub remove: HashSet<String>,
    /// The attachments to add, each with its target as given and its
    /// network's ID in place.
    pub add: Vec<(String, NetworkAttachmentConfig)>,
}

async fn resolve_network_changes(
    client: &Client,
    args: &UpdateArgs,
) -> Result<Option<NetworkChanges>> {
    if args.network_add.is_empty() && args.network_rm.is_empty() {
        return Ok(None);
    }
    // docker parses --network-add as a flag, before any lookup.
    let mut add = Vec::new();
    for text in &args.network_add {
        let attachment = parse_network(text)?;
        add.push((attachment.target.clone().unwrap_or_default(), attachment));
    }
    let mut changes = NetworkChanges::default();
    let to_remove: BTreeSet<&String> = args.network_rm.iter().collect();
    for name in to_remove {
        changes
            .remove
            .insert(crate::network::swarm_network_id(client, name).await?);
    }
    for (given, mut attachment) in add {
        attachment.target = Some(crate::network::swarm_network_id(client, &given).await?);
        changes.add.push((given, attachment));
    }
    Ok(Some(changes))
}

/// docker's updateNetworks on resolved networks: the deprecated
/// spec.Networks moves into the task template when that has none, removed
/// IDs go, added ones join (one already attached is an error), sorted by ID.
pub fn apply_networks(spec: &mut ServiceSpec, changes: NetworkChanges) -> Result<()> {
    let deprecated = spec.networks.take();
    let task = spec.task_template.get_or_insert_with(Default::default);
    let current = match task.networks.take() {
        Some(networks) if !networks.is_empty() => networks,
        _ => deprecated.unwrap_or_default(),
    };
    let mut attached = HashSet::new();
    let mut networks = Vec::new();
    for network in current {
        let target = network.target.clone().unwrap_or_default();
        if changes.remove.contains(&target) {
            continue;
        }
        attached.insert(target);
        networks.push(network);
    }
    for (given, network) in changes.add {
        let id = network.target.clone().unwrap_or_default();
        if !attached.insert(id) {
            return Err(CliError::Other(format!(
                "service is already attached to network {given}"
            )));
        }
        networks.push(network);
    }
    networks.sort_by(|a, b| a.target.cmp(&b.target));
    task.networks = if networks.is_empty() {
        None
    } else {
        Some(networks)
    };
    Ok(())
}

/// docker's getUpdatedSecrets then getUpdatedConfigs, after the other
/// flags: `--secret-rm` / `--config-rm` drop the references to those names,
/// `--secret-add` / `--config-add` are looked up (as for create) and
/// appended. Docker runs both on every update, so a runtime config
/// reference no credential spec uses goes even when no flag asks.
async fn apply_secrets_and_configs(
    client: &Client,
    spec: &mut ServiceSpec,
    args: &UpdateArgs,
) -> Result<()> {
    let added_secrets = resolve_secrets(client, &args.secret_add).await?;
    let container = spec
        .task_template
        .get_or_insert_with(Default::default)
        .container_spec
        .get_or_insert_with(Default::default);
    update_secrets(container, &args.secret_rm, added_secrets);
    let added_configs = resolve_configs(client, &args.config_add).await?;
    update_configs(container, &args.config_rm, added_configs);
    Ok(())
}

fn update_labels(labels: &mut HashMap<String, String>, add: &[String], remove: &[String]) {
    labels.extend(kv_map(add));
    for key in remove {
        labels.remove(key);
    }
}

fn update_mode(spec: &mut ServiceSpec, common: &CommonFlags) -> Result<()> {
    let Some(replicas) = common.replicas else {
        return Ok(());
    };
    match spec.mode.as_mut().and_then(|m| m.replicated.as_mut()) {
        Some(replicated) => {
            replicated.replicas = Some(replicas as i64);
            Ok(())
        }
        None => Err("replicas can only be used with replicated mode".into()),
    }
}

fn update_endpoint(spec: &mut ServiceSpec, args: &UpdateArgs) -> Result<()> {
    if args.common.endpoint_mode.is_none()
        && args.publish_add.is_empty()
        && args.publish_rm.is_empty()
    {
        return Ok(());
    }
    let current = spec.endpoint_spec.take().unwrap_or_default();
    let mut ports = current.ports.clone().unwrap_or_default();
    let mut remove = Vec::new();
    for text in &args.publish_rm {
        remove.extend(parse_publish(text)?);
    }
    ports.retain(|p| {
        !remove
            .iter()
            .any(|r| r.target_port == p.target_port && r.protocol == p.protocol)
    });
    for text in &args.publish_add {
        for port in parse_publish(text)? {
            ports.retain(|p| {
                !(p.published_port == port.published_port
                    && p.published_port.is_some()
                    && p.protocol == port.protocol)
            });
            ports.push(port);
        }
    }
    ports.sort_by_key(|p| (p.published_port, p.target_port));
    let mode = args
        .common
        .endpoint_mode
        .clone()
        .or_else(|| crate::format::enum_text(&current.mode).into())
        .filter(|m| !m.is_empty());
    spec.endpoint_spec = Some(super::create::endpoint_spec(mode.as_deref(), ports)?);
    Ok(())
}

fn update_placement(placement: &mut TaskSpecPlacement, args: &UpdateArgs) {
    if let Some(max) = args.common.replicas_max_per_node {
        placement.max_replicas = if max == 0 { None } else { Some(max as i64) };
    }
    if args.constraint_add.is_empty() && args.constraint_rm.is_empty() {
        return;
    }
    let mut constraints = placement.constraints.take().unwrap_or_default();
    constraints.extend(args.constraint_add.iter().cloned());
    constraints.retain(|c| !args.constraint_rm.contains(c));
    // Sorted like docker, so the result is predictable.
    constraints.sort();
    constraints.dedup();
    placement.constraints = if constraints.is_empty() {
        None
    } else {
        Some(constraints)
    };
}

fn update_container(container: &mut TaskSpecContainerSpec, args: &UpdateArgs) -> Result<()> {
    let common = &args.common;
    set_text(&mut container.image, &args.image);
    set_text(&mut container.dir, &common.workdir);
    set_text(&mut container.user, &common.user);
    set_text(&mut container.hostname, &common.hostname);
    set_text(&mut container.stop_signal, &common.stop_signal);
    if let Some(args_text) = &args.args {
        container.args = Some(shell_words(args_text)?).filter(|a| !a.is_empty());
    }
    if let Some(entrypoint) = common.entrypoint_words()? {
        container.command = Some(entrypoint).filter(|c| !c.is_empty());
    }
    if common.tty.is_some() {
        container.tty = common.tty;
    }
    if common.init.is_some() {
        container.init = common.init;
    }
    if common.read_only.is_some() {
        container.read_only = common.read_only;
    }
    if common.stop_grace_period.is_some() {
        container.stop_grace_period = common.stop_grace_period;
    }
    update_env(container, args);
    update_labels(
        container.labels.get_or_insert_with(HashMap::new),
        &args.container_label_add,
        &args.container_label_rm,
    );
    update_mounts(container, args)?;
    container.health_check = common.health_check(container.health_check.take())?;
    args.host.apply(container)
}

fn set_text(field: &mut Option<String>, value: &Option<String>) {
    if let Some(v) = value {
        *field = if v.is_empty() { None } else { Some(v.clone()) };
    }
}

fn update_env(container: &mut TaskSpecContainerSpec, args: &UpdateArgs) {
    if args.env_add.is_empty() && args.env_rm.is_empty() {
        return;
    }
    let mut env = container.env.take().unwrap_or_default();
    merge_env(&mut env, &args.env_add);
    env.retain(|entry| {
        let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
        !args.env_rm.iter().any(|r| r == key || r == entry)
    });
    container.env = if env.is_empty() { None } else { Some(env) };
}

fn update_mounts(container: &mut TaskSpecContainerSpec, args: &UpdateArgs) -> Result<()> {
    if args.mount_add.is_empty() && args.mount_rm.is_empty() {
        return Ok(());
    }
    let mut mounts = container.mounts.take().unwrap_or_default();
    for text in &args.mount_add {
        let mount = parse_mount(text)?;
        mounts.retain(|m| m.target != mount.target);
        mounts.push(mount);
    }
    mounts.retain(|m| !args.mount_rm.iter().any(|t| Some(t) == m.target.as_ref()));
    container.mounts = if mounts.is_empty() {
        None
    } else {
        Some(mounts)
    };
    if mounts_invalid(container) {
        return Err(CliError::Other("invalid mount".into()));
    }
    Ok(())
}

fn mounts_invalid(container: &TaskSpecContainerSpec) -> bool {
    container
        .mounts
        .as_ref()
        .is_some_and(|m| m.iter().any(|m| m.target.is_none()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: UpdateArgs,
    }

    fn updated(start: serde_json::Value, argv: &[&str]) -> serde_json::Value {
        let cli =
            Cli::try_parse_from(std::iter::once("update").chain(argv.iter().copied())).unwrap();
        let mut spec: ServiceSpec = serde_json::from_value(start).unwrap();
        apply(&mut spec, &cli.args).unwrap();
        serde_json::to_value(spec).unwrap()
    }

    fn base() -> serde_json::Value {
        json!({
            "Name": "redis",
            "Mode": {"Replicated": {"Replicas": 4}},
            "TaskTemplate": {"ContainerSpec": {"Image": "redis:3.0.6", "Env": ["A=1", "B=2"]}, "ForceUpdate": 0},
            "EndpointSpec": {"Mode": "vip"}
        })
    }

    #[test]
    fn image_replicas_env() {
        let s = updated(
            base(),
            &[
                "--image",
                "redis:3.0.7",
                "--replicas",
                "2",
                "--env-add",
                "C=3",
                "--env-rm",
                "A",
                "redis",
            ],
        );
        assert_eq!(s["TaskTemplate"]["ContainerSpec"]["Image"], "redis:3.0.7");
        assert_eq!(
            s["TaskTemplate"]["ContainerSpec"]["Env"],
            json!(["B=2", "C=3"])
        );
        assert_eq!(s["Mode"]["Replicated"]["Replicas"], 2);
        assert_eq!(s["EndpointSpec"], json!({"Mode": "vip"}));
    }

    #[test]
    fn force_constraints_and_policies() {
        let s = updated(
            base(),
            &[
                "--force",
                "--constraint-add",
                "node.role==manager",
                "--update-delay",
                "1s",
                "redis",
            ],
        );
        assert_eq!(s["TaskTemplate"]["ForceUpdate"], 1);
        assert_eq!(
            s["TaskTemplate"]["Placement"]["Constraints"],
            json!(["node.role==manager"])
        );
        assert_eq!(s["UpdateConfig"]["Delay"], 1_000_000_000i64);
        assert_eq!(s["UpdateConfig"]["Parallelism"], 1);
        let s = updated(s, &["--constraint-rm", "node.role==manager", "redis"]);
        assert!(s["TaskTemplate"]["Placement"].get("Constraints").is_none());
    }

    #[test]
    fn publish_add_and_remove() {
        let s = updated(base(), &["--publish-add", "8080:80", "redis"]);
        assert_eq!(s["EndpointSpec"]["Ports"][0]["TargetPort"], 80);
        let s = updated(s, &["--publish-rm", "80", "redis"]);
        assert!(s["EndpointSpec"].get("Ports").is_none());
    }

    fn attachment(target: &str) -> NetworkAttachmentConfig {
        NetworkAttachmentConfig {
            target: Some(target.to_string()),
            ..Default::default()
        }
    }

    fn with_networks(
        spec: serde_json::Value,
        changes: NetworkChanges,
    ) -> Result<serde_json::Value> {
        let mut spec: ServiceSpec = serde_json::from_value(spec).unwrap();
        apply_networks(&mut spec, changes)?;
        Ok(serde_json::to_value(spec).unwrap())
    }

    #[test]
    fn networks_add_and_remove_by_id() {
        let mut start = base();
        start["TaskTemplate"]["Networks"] =
            json!([{"Target": "id-b", "Aliases": ["x"]}, {"Target": "id-c"}]);
        let s = with_networks(
            start.clone(),
            NetworkChanges {
                remove: HashSet::from(["id-c".to_string()]),
                add: vec![("front".to_string(), attachment("id-a"))],
            },
        )
        .unwrap();
        assert_eq!(
            s["TaskTemplate"]["Networks"],
            json!([{"Target": "id-a"}, {"Target": "id-b", "Aliases": ["x"]}])
        );
        let s = with_networks(
            start.clone(),
            NetworkChanges {
                remove: HashSet::from(["id-b".to_string(), "id-c".to_string()]),
                add: vec![],
            },
        )
        .unwrap();
        assert!(s["TaskTemplate"].get("Networks").is_none());
        let err = with_networks(
            start,
            NetworkChanges {
                remove: HashSet::new(),
                add: vec![("back".to_string(), attachment("id-c"))],
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "service is already attached to network back"
        );
    }

    #[test]
    fn deprecated_spec_networks_move_into_the_task() {
        let mut start = base();
        start["Networks"] = json!([{"Target": "id-old"}]);
        let s = with_networks(
            start,
            NetworkChanges {
                remove: HashSet::new(),
                add: vec![("n".to_string(), attachment("id-new"))],
            },
        )
        .unwrap();
        assert!(s.get("Networks").is_none());
        assert_eq!(
            s["TaskTemplate"]["Networks"],
            json!([{"Target": "id-new"}, {"Target": "id-old"}])
        );
    }

    #[test]
    fn network_flags_parse() {
        let cli = Cli::try_parse_from([
            "update",
            "--network-add",
            "name=front,alias=web",
            "--network-add",
            "back",
            "--network-rm",
            "old",
            "redis",
        ])
        .unwrap();
        assert_eq!(cli.args.network_add, ["name=front,alias=web", "back"]);
        assert_eq!(cli.args.network_rm, ["old"]);
        let cli =
            Cli::try_parse_from(["update", "--rollback", "--network-rm", "x", "redis"]).unwrap();
        assert!(other_flags_given(&cli.args));
    }

    #[test]
    fn rollback_cannot_be_combined() {
        let cli = Cli::try_parse_from(["update", "--rollback", "-d", "redis"]).unwrap();
        assert!(!other_flags_given(&cli.args));
        let cli = Cli::try_parse_from(["update", "--rollback", "--image", "x", "redis"]).unwrap();
        assert!(other_flags_given(&cli.args));
    }

    #[test]
    fn jobs_take_force_but_not_replicas() {
        let job = json!({
            "Name": "job",
            "Mode": {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 2}},
            "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}
        });
        // --force runs the job again (the daemon starts a new iteration);
        // --max-concurrent is accepted and, as in docker, changes nothing.
        let s = updated(job.clone(), &["--force", "--max-concurrent", "5", "job"]);
        assert_eq!(s["TaskTemplate"]["ForceUpdate"], 1);
        assert_eq!(s["Mode"], job["Mode"]);
        let cli = Cli::try_parse_from(["update", "--replicas", "3", "job"]).unwrap();
        let mut spec: ServiceSpec = serde_json::from_value(job).unwrap();
        assert_eq!(
            apply(&mut spec, &cli.args).unwrap_err().to_string(),
            "replicas can only be used with replicated mode"
        );
    }
}
