//! `service create | ls | inspect | ps | scale | update | rollback | rm | logs`
//! (docker/cli cli/command/service), one file per command; `opts` holds the
//! flags create and update share, `refs` their secrets and configs,
//! `hostopts` the container options Docker's swarm refuses (privileged,
//! devices, security options...).
//! `service restart` is flotilla's own: `service update --force` by name.

mod create;
pub(crate) mod hostopts;
mod inspect;
mod logs;
mod ls;
pub(crate) mod opts;
mod ps;
mod refs;
mod scale;
mod update;
#[cfg(test)]
mod wire_tests;

pub(crate) use create::digest_warning;
pub(crate) use logs::Demuxer;
pub(crate) use ls::{render as render_list, DEFAULT_TABLE_FORMAT as LIST_TABLE_FORMAT};
pub(crate) use opts::{parse_publish, shell_words};

use bollard::models::{Service, ServiceUpdateResponse};
use clap::{Args, Subcommand};

use crate::client::{decode, encode, query, CliError, Client, Result};
use crate::out;

#[derive(Subcommand, Debug)]
pub enum ServiceCmd {
    /// Create a new service
    Create(Box<create::CreateArgs>),
    /// List services
    #[command(visible_alias = "list")]
    Ls(ls::LsArgs),
    /// Display detailed information on one or more services
    Inspect(inspect::InspectArgs),
    /// List the tasks of one or more services
    Ps(ps::PsArgs),
    /// Scale one or multiple replicated services
    Scale(scale::ScaleArgs),
    /// Update a service
    Update(Box<update::UpdateArgs>),
    /// Revert changes to a service's configuration
    Rollback(RollbackArgs),
    /// Restart the tasks of one or more services (`service update --force`)
    ///
    /// A rolling restart, and another name for `service update --force`:
    /// the service's ForceUpdate counter goes up by one and nothing else
    /// changes, so its tasks are replaced under its update config
    /// (parallelism, delay, order, failure action), with the same progress
    /// display. A job service (replicated-job, global-job) is run again.
    ///
    /// Services are restarted in the order given; without --detach each one
    /// is waited for before the next is restarted. A service that cannot be
    /// restarted does not stop the others; the command then fails.
    ///
    /// Not a docker command: Swarm users asked for it in moby/moby#24413.
    Restart(RestartArgs),
    /// Remove one or more services
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Fetch the logs of a service or task
    Logs(logs::LogsArgs),
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// Exit immediately instead of waiting for the service to converge
    #[arg(short, long)]
    detach: bool,
    /// Suppress progress output
    #[arg(short, long)]
    quiet: bool,
    #[arg(value_name = "SERVICE")]
    service: String,
}

#[derive(Args, Debug)]
pub struct RestartArgs {
    /// Exit immediately instead of waiting for the service to converge
    #[arg(short, long)]
    detach: bool,
    /// Suppress progress output
    #[arg(short, long)]
    quiet: bool,
    #[arg(value_name = "SERVICE", required = true)]
    services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    #[arg(value_name = "SERVICE", required = true)]
    services: Vec<String>,
}

pub async fn run(client: &Client, cmd: ServiceCmd) -> Result<()> {
    match cmd {
        ServiceCmd::Create(args) => create::run(client, *args).await,
        ServiceCmd::Ls(args) => ls::run(client, args).await,
        ServiceCmd::Inspect(args) => inspect::run(client, args).await,
        ServiceCmd::Ps(args) => ps::run(client, args).await,
        ServiceCmd::Scale(args) => scale::run(client, args).await,
        ServiceCmd::Update(args) => update::run(client, *args).await,
        ServiceCmd::Rollback(args) => rollback(client, args).await,
        ServiceCmd::Restart(args) => restart(client, args).await,
        ServiceCmd::Rm(args) => rm(client, args).await,
        ServiceCmd::Logs(args) => logs::run(client, args).await,
    }
}

/// GET /services/{name or id}.
pub(crate) async fn get_service(
    client: &Client,
    name: &str,
    insert_defaults: bool,
) -> Result<(Service, bytes::Bytes)> {
    let path = format!(
        "/services/{}{}",
        encode(name),
        query(&[("insertDefaults", insert_defaults.to_string())])
    );
    let raw = client.get_raw(&path).await?;
    let mut service: Service = decode(&raw)?;
    adopt_docker_healthcheck(&mut service, &raw);
    Ok((service, raw))
}

/// Docker writes the container health check as "Healthcheck" while the API
/// description (and so bollard) says "HealthCheck"; accept Docker's spelling
/// so an update does not drop the health check.
fn adopt_docker_healthcheck(service: &mut Service, raw: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(raw) else {
        return;
    };
    let health = &value["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"];
    if health.is_null() {
        return;
    }
    let container = service
        .spec
        .as_mut()
        .and_then(|s| s.task_template.as_mut())
        .and_then(|t| t.container_spec.as_mut());
    if let (Some(container), Ok(parsed)) = (container, serde_json::from_value(health.clone())) {
        container.health_check.get_or_insert(parsed);
    }
}

/// Which registry credentials an update carries (docker's
/// ServiceUpdateOptions.EncodedRegistryAuth / RegistryAuthFrom).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum UpdateAuth<'a> {
    /// Neither (`service scale`, `service rollback`).
    None,
    /// `registryAuthFrom=spec`: keep the credentials the service has
    /// (`service update` without --with-registry-auth).
    FromSpec,
    /// `X-Registry-Auth` with these encoded credentials.
    Header(&'a str),
}

/// docker's client.ServiceUpdate: the image tagged (and, with
/// `query_registry`, pinned to its digest or warned about), then POST
/// /services/{id}/update with the service's current version; the
/// daemon's warnings and then the client's go to stderr.
pub(crate) async fn post_update(
    client: &Client,
    service: &Service,
    spec: &bollard::models::ServiceSpec,
    rollback: bool,
    auth: UpdateAuth<'_>,
    query_registry: bool,
) -> Result<()> {
    let id = service.id.clone().unwrap_or_default();
    let version = service.version.as_ref().and_then(|v| v.index).unwrap_or(0);
    // In the order Go's url.Values encodes them: sorted by key.
    let mut params = Vec::new();
    if auth == UpdateAuth::FromSpec {
        params.push(("registryAuthFrom", "spec".to_string()));
    }
    if rollback {
        params.push(("rollback", "previous".to_string()));
    }
    params.push(("version", version.to_string()));
    let path = format!("/services/{}/update{}", encode(&id), query(&params));
    let headers: Vec<(&str, &str)> = match auth {
        UpdateAuth::Header(token) => vec![(crate::registry::AUTH_HEADER, token)],
        _ => Vec::new(),
    };
    let mut spec = spec.clone();
    let resolve_warning = create::prepare_image(client, &mut spec, query_registry, &headers).await;
    let answer = client
        .post_with_headers(&path, Some(&spec), &headers)
        .await?;
    let response: ServiceUpdateResponse = decode(&answer).unwrap_or_default();
    let mut warnings = response.warnings.unwrap_or_default();
    warnings.extend(resolve_warning);
    print_warnings(&warnings);
    Ok(())
}

pub(crate) fn print_warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("{warning}");
    }
}

async fn rollback(client: &Client, args: RollbackArgs) -> Result<()> {
    let (service, _) = get_service(client, &args.service, false).await?;
    let spec = service.spec.clone().unwrap_or_default();
    post_update(client, &service, &spec, true, UpdateAuth::None, false).await?;
    out(&format!("{}\n", args.service));
    if args.detach {
        return Ok(());
    }
    crate::progress::wait_on_service(client, &args.service, args.quiet).await
}

/// `service restart`: for each service, what `service update --force`
/// does (ForceUpdate + 1, `registryAuthFrom=spec`), then its progress.
async fn restart(client: &Client, args: RestartArgs) -> Result<()> {
    let several = args.services.len() > 1;
    let mut errors = Vec::new();
    for name in &args.services {
        if let Err(err) = restart_one(client, name, &args).await {
            let text = err.to_string();
            errors.push(if several && !text.is_empty() {
                format!("{name}: {text}")
            } else {
                text
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Other(errors.join("\n")))
    }
}

async fn restart_one(client: &Client, name: &str, args: &RestartArgs) -> Result<()> {
    let (service, _) = get_service(client, name, false).await?;
    let mut spec = service.spec.clone().unwrap_or_default();
    force_update(&mut spec);
    post_update(client, &service, &spec, false, UpdateAuth::FromSpec, false).await?;
    out(&format!("{name}\n"));
    if args.detach {
        return Ok(());
    }
    crate::progress::wait_on_service(client, name, args.quiet).await
}

/// `--force`: one more ForceUpdate, which replaces every task.
pub(crate) fn force_update(spec: &mut bollard::models::ServiceSpec) {
    let task = spec.task_template.get_or_insert_with(Default::default);
    task.force_update = Some(task.force_update.unwrap_or(0) + 1);
}

async fn rm(client: &Client, args: RmArgs) -> Result<()> {
    let mut errors = Vec::new();
    for name in &args.services {
        match client.delete(&format!("/services/{}", encode(name))).await {
            Ok(()) => out(&format!("{name}\n")),
            Err(err) => errors.push(err.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Other(errors.join("\n")))
    }
}
