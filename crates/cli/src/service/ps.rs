//! `service ps`: match services by full ID, full name, then ID prefix (as
//! docker does), list their tasks, print the task table.

use bollard::models::{Service, Task};
use clap::Args;

use crate::client::{
    add_filter, filters_pair, parse_filters, query, CliError, Client, Filters, Result,
};
use crate::task::{self, TaskFormat};

#[derive(Args, Debug)]
pub struct PsArgs {
    #[command(flatten)]
    list: task::ListFlags,
    #[arg(value_name = "SERVICE", required = true)]
    services: Vec<String>,
}

pub async fn run(client: &Client, args: PsArgs) -> Result<()> {
    let mut filters = parse_filters(&args.list.filter)?;
    let not_found = match_services(client, &args.services, &mut filters).await?;
    resolve_node_filter(client, &mut filters).await?;
    let path = format!(
        "/tasks{}",
        query(&filters_pair(&filters).into_iter().collect::<Vec<_>>())
    );
    let tasks: Vec<Task> = client.get(&path).await?;
    // docker prints whole task IDs with -q so they can be passed on.
    let how = TaskFormat {
        trunc: !args.list.no_trunc && !args.list.quiet,
        quiet: args.list.quiet,
        format: args.list.format.clone(),
        resolve: !args.list.no_resolve,
    };
    task::print(client, tasks, &how).await?;
    if not_found.is_empty() {
        Ok(())
    } else {
        Err(CliError::Other(not_found.join("\n")))
    }
}

/// Adds a `service` filter per matched service; returns "no such service"
/// messages for the others (an error when nothing matched at all).
async fn match_services(
    client: &Client,
    names: &[String],
    filters: &mut Filters,
) -> Result<Vec<String>> {
    let by_id = list(client, "id", names).await?;
    let by_name = list(client, "name", names).await?;
    let mut not_found = Vec::new();
    let mut matched = 0;
    for name in names {
        let exact = by_id
            .iter()
            .find(|s| s.id.as_deref() == Some(name))
            .or_else(|| {
                by_name
                    .iter()
                    .find(|s| s.spec.as_ref().and_then(|sp| sp.name.as_deref()) == Some(name))
            });
        if let Some(service) = exact {
            add_filter(
                filters,
                "service",
                service.id.as_deref().unwrap_or_default(),
            );
            matched += 1;
            continue;
        }
        let prefixed: Vec<&Service> = by_id
            .iter()
            .filter(|s| {
                s.id.as_deref()
                    .is_some_and(|id| id.starts_with(name.as_str()))
            })
            .collect();
        match prefixed.as_slice() {
            [] => not_found.push(format!("no such service: {name}")),
            [service] => {
                add_filter(
                    filters,
                    "service",
                    service.id.as_deref().unwrap_or_default(),
                );
                matched += 1;
            }
            _ => {
                return Err(CliError::Other(format!(
                    "multiple services found with provided prefix: {name}"
                )))
            }
        }
    }
    if matched == 0 {
        return Err(CliError::Other(not_found.join("\n")));
    }
    Ok(not_found)
}

async fn list(client: &Client, key: &str, values: &[String]) -> Result<Vec<Service>> {
    let mut filters = Filters::new();
    for value in values {
        add_filter(&mut filters, key, value);
    }
    let path = format!(
        "/services{}",
        query(&filters_pair(&filters).into_iter().collect::<Vec<_>>())
    );
    client.get(&path).await
}

/// `-f node=self` means this daemon's node, as in docker.
async fn resolve_node_filter(client: &Client, filters: &mut Filters) -> Result<()> {
    let Some(nodes) = filters.get_mut("node") else {
        return Ok(());
    };
    if nodes.remove("self").is_some() {
        let info: bollard::models::SystemInfo = client.get("/info").await?;
        nodes.insert(info.swarm.and_then(|s| s.node_id).unwrap_or_default(), true);
    }
    Ok(())
}
