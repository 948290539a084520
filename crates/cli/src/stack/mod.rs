//! `stack deploy | ls | ps | services | rm` (docker/cli cli/command/stack,
//! swarm orchestrator): a compose file deployed as services, networks,
//! secrets and configs labelled `com.docker.stack.namespace=STACK`.
//!
//! - `template`, `envfile`, `loader`: reading the compose files;
//! - `convert`: compose to Engine API bodies, as docker builds them;
//! - `deploy`: the create-or-update sequence and depends_on.

mod convert;
mod deploy;
mod envfile;
mod loader;
mod template;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use bollard::models::{Service, Task};
use clap::{ArgAction, Args, Subcommand};
use serde_json::{json, Value};

use crate::client::{
    add_filter, filters_pair, parse_filters, query, CliError, Client, Filters, Result,
};
use crate::format::natural_cmp;
use crate::format::table::{header, render_list};
use crate::out;
use crate::task::{self, TaskFormat};

pub use convert::LABEL_NAMESPACE;

#[derive(Subcommand, Debug)]
pub enum StackCmd {
    /// Deploy a new stack or update an existing stack
    #[command(
        visible_alias = "up",
        long_about = "Deploy a new stack or update an existing stack.\n\n\
Unlike docker, which ignores it, flotilla honours depends_on: services are \
created in dependency order, and a service whose dependency says \
`condition: service_healthy` (or service_started, the short form's meaning, \
or service_completed_successfully) is created only once that dependency's \
tasks are running and healthy (running, completed with exit code 0). A cycle \
or an unknown service in depends_on is an error before anything is created."
    )]
    Deploy(DeployArgs),
    /// List stacks
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// List the tasks in the stack
    Ps(PsArgs),
    /// List the services in the stack
    Services(ServicesArgs),
    /// Remove one or more stacks
    #[command(visible_aliases = ["remove", "down"])]
    Rm(RmArgs),
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// Path to a Compose file, or "-" to read from stdin
    #[arg(short = 'c', long = "compose-file", value_name = "strings")]
    pub compose_file: Vec<String>,
    /// Send registry authentication details to Swarm agents
    #[arg(long = "with-registry-auth")]
    pub with_registry_auth: bool,
    /// Prune services that are no longer referenced
    #[arg(long)]
    pub prune: bool,
    /// Query the registry to resolve image digest and supported platforms ("always", "changed", "never")
    #[arg(
        long = "resolve-image",
        value_name = "string",
        default_value = "always"
    )]
    pub resolve_image: String,
    /// Exit immediately instead of waiting for the stack services to converge
    #[arg(short, long, value_name = "bool", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = ArgAction::Set)]
    pub detach: Option<bool>,
    /// Suppress progress output
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(value_name = "STACK")]
    pub stack: String,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Format output using a custom template
    #[arg(long, value_name = "string")]
    format: Option<String>,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    #[command(flatten)]
    list: task::ListFlags,
    #[arg(value_name = "STACK")]
    stack: String,
}

#[derive(Args, Debug)]
pub struct ServicesArgs {
    /// Filter output based on conditions provided
    #[arg(short, long = "filter", value_name = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long, value_name = "string")]
    format: Option<String>,
    /// Only display IDs
    #[arg(short, long)]
    quiet: bool,
    #[arg(value_name = "STACK")]
    stack: String,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Do not wait for stack removal
    #[arg(short, long, value_name = "bool", num_args = 0..=1, require_equals = true,
          default_value = "true", default_missing_value = "true", action = ArgAction::Set)]
    detach: bool,
    #[arg(value_name = "STACK", required = true)]
    stacks: Vec<String>,
}

pub async fn run(client: &Client, cmd: StackCmd) -> Result<()> {
    match cmd {
        StackCmd::Deploy(mut args) => {
            let given = args.detach.is_some();
            let detach = args.detach.unwrap_or(true);
            args.detach = Some(detach);
            deploy::run(client, args, given).await
        }
        StackCmd::Ls(args) => ls(client, args).await,
        StackCmd::Ps(args) => ps(client, args).await,
        StackCmd::Services(args) => services(client, args).await,
        StackCmd::Rm(args) => rm(client, args).await,
    }
}

impl DeployArgs {
    fn detached(&self) -> bool {
        self.detach.unwrap_or(true)
    }
}

/// docker's validateStackName: not empty once quotes and spaces are trimmed.
pub(crate) fn validate_stack_name(name: &str) -> Result<()> {
    if name
        .trim_matches(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .is_empty()
    {
        return Err(format!("invalid stack name: {name:?}").into());
    }
    Ok(())
}

/// The `label=com.docker.stack.namespace=STACK` filter.
pub(crate) fn stack_filter(stack: &str) -> (&'static str, String) {
    let mut filters = Filters::new();
    add_filter(&mut filters, "label", &format!("{LABEL_NAMESPACE}={stack}"));
    filters_pair(&filters).unwrap_or(("filters", String::new()))
}

fn with_stack_filter(flags: &[String], stack: &str) -> Result<Filters> {
    let mut filters = parse_filters(flags)?;
    add_filter(&mut filters, "label", &format!("{LABEL_NAMESPACE}={stack}"));
    Ok(filters)
}

const STACK_TABLE_FORMAT: &str = "table {{.Name}}\t{{.Services}}";

async fn ls(client: &Client, args: LsArgs) -> Result<()> {
    let mut filters = Filters::new();
    add_filter(&mut filters, "label", LABEL_NAMESPACE);
    let services: Vec<Value> = client
        .get(&format!(
            "/services{}",
            query(&filters_pair(&filters).into_iter().collect::<Vec<_>>())
        ))
        .await?;
    let mut stacks: BTreeMap<String, usize> = BTreeMap::new();
    for service in &services {
        let Some(name) = service["Spec"]["Labels"][LABEL_NAMESPACE].as_str() else {
            return Err(format!(
                "cannot get label {LABEL_NAMESPACE} for service {}",
                service["ID"].as_str().unwrap_or_default()
            )
            .into());
        };
        *stacks.entry(name.to_string()).or_default() += 1;
    }
    out(&render_stacks(stacks, args.format.as_deref())?);
    Ok(())
}

fn render_stacks(stacks: BTreeMap<String, usize>, format: Option<&str>) -> Result<String> {
    let format = match format {
        None | Some("") | Some("table") => STACK_TABLE_FORMAT,
        Some(f) => f,
    };
    let mut names: Vec<(String, usize)> = stacks.into_iter().collect();
    names.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    let rows: Vec<Value> = names
        .iter()
        .map(|(name, count)| json!({"Name": name, "Services": count.to_string()}))
        .collect();
    let head = header(&[("Name", "NAME"), ("Services", "SERVICES")]);
    Ok(render_list(format, &head, &rows)?)
}

async fn ps(client: &Client, args: PsArgs) -> Result<()> {
    validate_stack_name(&args.stack)?;
    let filters = with_stack_filter(&args.list.filter, &args.stack)?;
    let tasks: Vec<Task> = client
        .get(&format!(
            "/tasks{}",
            query(&filters_pair(&filters).into_iter().collect::<Vec<_>>())
        ))
        .await?;
    if tasks.is_empty() {
        return Err(format!("nothing found in stack: {}", args.stack).into());
    }
    // Unlike service ps, stack ps keeps IDs short with -q, as docker does.
    let how = TaskFormat {
        trunc: !args.list.no_trunc,
        quiet: args.list.quiet,
        format: args.list.format.clone(),
        resolve: !args.list.no_resolve,
    };
    task::print(client, tasks, &how).await
}

async fn services(client: &Client, args: ServicesArgs) -> Result<()> {
    validate_stack_name(&args.stack)?;
    let filters = with_stack_filter(&args.filter, &args.stack)?;
    let mut params: Vec<(&str, String)> = Vec::new();
    if !args.quiet {
        params.push(("status", "true".into()));
    }
    params.extend(filters_pair(&filters));
    let services: Vec<Service> = client.get(&format!("/services{}", query(&params))).await?;
    if services.is_empty() {
        eprintln!("Nothing found in stack: {}", args.stack);
        return Ok(());
    }
    let format = match args.format.as_deref() {
        Some(f) if !f.is_empty() && f != "table" => f,
        _ if args.quiet => crate::format::table::QUIET_FORMAT,
        _ => crate::service::LIST_TABLE_FORMAT,
    };
    out(&crate::service::render_list(services, format)?);
    Ok(())
}

async fn rm(client: &Client, args: RmArgs) -> Result<()> {
    for stack in &args.stacks {
        validate_stack_name(stack)?;
    }
    let mut errors = Vec::new();
    for stack in &args.stacks {
        let pair = [stack_filter(stack)];
        let services = deploy::stack_services(client, stack).await?;
        let networks: Vec<Value> = client.get(&format!("/networks{}", query(&pair))).await?;
        let secrets: Vec<Value> = client.get(&format!("/secrets{}", query(&pair))).await?;
        let configs: Vec<Value> = client.get(&format!("/configs{}", query(&pair))).await?;
        if services.len() + networks.len() + secrets.len() + configs.len() == 0 {
            eprintln!("Nothing found in stack: {stack}");
            continue;
        }
        let mut failed = remove_services(client, services).await;
        failed |= remove_objects(client, "secret", &secrets, |o| &o["Spec"]["Name"]).await;
        failed |= remove_objects(client, "config", &configs, |o| &o["Spec"]["Name"]).await;
        failed |= remove_objects(client, "network", &networks, |o| &o["Name"]).await;
        if failed {
            errors.push(format!(
                "failed to remove some resources from stack: {stack}"
            ));
            continue;
        }
        if !args.detach {
            if let Err(err) = wait_tasks_gone(client, stack).await {
                errors.push(format!("failed to wait on tasks of stack: {stack}: {err}"));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Other(errors.join("\n")))
    }
}

/// docker's removeServices: by name order, "Removing service NAME".
pub(crate) async fn remove_services(client: &Client, mut services: Vec<Value>) -> bool {
    services.sort_by(|a, b| a["Spec"]["Name"].as_str().cmp(&b["Spec"]["Name"].as_str()));
    remove_objects(client, "service", &services, |s| &s["Spec"]["Name"]).await
}

async fn remove_objects(
    client: &Client,
    kind: &str,
    objects: &[Value],
    name: impl Fn(&Value) -> &Value,
) -> bool {
    let mut failed = false;
    for object in objects {
        // Networks say "Id", the swarm objects "ID".
        let id = object["ID"]
            .as_str()
            .or_else(|| object["Id"].as_str())
            .unwrap_or_default();
        out(&format!(
            "Removing {kind} {}\n",
            name(object).as_str().unwrap_or_default()
        ));
        if let Err(err) = client
            .delete(&format!("/{kind}s/{}", crate::client::encode(id)))
            .await
        {
            failed = true;
            // docker prints this without a newline.
            eprint!("Failed to remove {kind} {id}: {err}");
        }
    }
    failed
}

/// `stack rm --detach=false`: until every task of the stack has ended.
async fn wait_tasks_gone(client: &Client, stack: &str) -> Result<()> {
    loop {
        let tasks: Vec<Value> = client
            .get(&format!("/tasks{}", query(&[stack_filter(stack)])))
            .await
            .map_err(|e| CliError::Other(format!("failed to get tasks: {e}")))?;
        let running = tasks.iter().any(|t| {
            !matches!(
                t["Status"]["State"].as_str().unwrap_or_default(),
                "complete" | "shutdown" | "failed" | "rejected" | "remove" | "orphaned"
            )
        });
        if !running {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
