//! The task table of `service ps` and `node ps` (docker/cli
//! cli/command/task): names with slots, history rows indented with ` \_ `,
//! natural sort, "Running 5 seconds ago".

use std::collections::HashMap;

use bollard::models::Task;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::client::{date_text, Client, Result};
use crate::format::table::{header, render_list, QUIET_FORMAT};
use crate::format::{display_image, ellipsis, enum_text, natural_cmp, pretty_print, truncate_id};
use crate::resolve::Resolver;

pub const DEFAULT_TABLE_FORMAT: &str =
    "table {{.ID}}\t{{.Name}}\t{{.Image}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}\t{{.Ports}}";

/// Errors longer than this are cut in tables unless --no-trunc.
const MAX_ERROR_LENGTH: usize = 30;

/// The flags `node ps` and `service ps` share.
#[derive(clap::Args, Debug)]
pub struct ListFlags {
    /// Filter output based on conditions provided
    #[arg(short, long = "filter", value_name = "filter")]
    pub filter: Vec<String>,
    /// Pretty-print tasks using a Go template
    #[arg(long, value_name = "string")]
    pub format: Option<String>,
    /// Do not map IDs to Names
    #[arg(long = "no-resolve")]
    pub no_resolve: bool,
    /// Do not truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Only display task IDs
    #[arg(short, long)]
    pub quiet: bool,
}

/// How to print a task list.
pub struct TaskFormat {
    pub trunc: bool,
    pub quiet: bool,
    pub format: Option<String>,
    /// Map service and node IDs to names (false with --no-resolve).
    pub resolve: bool,
}

impl TaskFormat {
    fn template(&self) -> &str {
        match self.format.as_deref() {
            Some(format) if !format.is_empty() && format != "table" => format,
            _ if self.quiet => QUIET_FORMAT,
            _ => DEFAULT_TABLE_FORMAT,
        }
    }
}

/// Resolves names through the daemon and prints the tasks.
pub async fn print(client: &Client, tasks: Vec<Task>, how: &TaskFormat) -> Result<()> {
    let mut resolver = Resolver::new(client);
    let mut services = HashMap::new();
    let mut nodes = HashMap::new();
    for task in &tasks {
        let service_id = task.service_id.clone().unwrap_or_default();
        if !services.contains_key(&service_id) {
            let name = if how.resolve {
                resolver.service(&service_id).await
            } else {
                service_id.clone()
            };
            services.insert(service_id.clone(), name);
        }
        let node_id = task.node_id.clone().unwrap_or_default();
        if !nodes.contains_key(&node_id) {
            let name = if how.resolve {
                resolver.node(&node_id).await
            } else {
                node_id.clone()
            };
            nodes.insert(node_id.clone(), name);
        }
    }
    let text = render(tasks, &services, &nodes, how, Utc::now())?;
    crate::out(&text);
    Ok(())
}

/// Renders tasks given resolved service and node names; pure so golden
/// outputs can be tested.
pub fn render(
    tasks: Vec<Task>,
    services: &HashMap<String, String>,
    nodes: &HashMap<String, String>,
    how: &TaskFormat,
    now: DateTime<Utc>,
) -> Result<String> {
    let template = how.template();
    let indent = if template.starts_with("table") {
        " \\_ "
    } else {
        ""
    };
    let mut named: Vec<(String, Task)> = tasks
        .into_iter()
        .map(|t| (task_name(&t, services), t))
        .collect();
    named.sort_by(|(name_a, a), (name_b, b)| {
        natural_cmp(name_a, name_b).then_with(|| created(b).cmp(&created(a)))
    });
    let mut rows = Vec::with_capacity(named.len());
    let mut previous = String::new();
    for (name, task) in &named {
        let shown = if *name == previous {
            format!("{indent}{name}")
        } else {
            name.clone()
        };
        previous = name.clone();
        let node = nodes
            .get(task.node_id.as_deref().unwrap_or_default())
            .cloned()
            .unwrap_or_default();
        rows.push(row(task, &shown, &node, how.trunc, now));
    }
    Ok(render_list(template, &task_header(), &rows)?)
}

fn created(task: &Task) -> Option<DateTime<chrono::FixedOffset>> {
    date_text(&task.created_at).and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
}

/// "service.slot", or "service.nodeid" for global services.
fn task_name(task: &Task, services: &HashMap<String, String>) -> String {
    let service_id = task.service_id.clone().unwrap_or_default();
    let service = services.get(&service_id).cloned().unwrap_or(service_id);
    match task.slot {
        Some(slot) if slot != 0 => format!("{service}.{slot}"),
        _ => format!("{service}.{}", task.node_id.clone().unwrap_or_default()),
    }
}

fn task_header() -> Value {
    header(&[
        ("ID", "ID"),
        ("Name", "NAME"),
        ("Image", "IMAGE"),
        ("Node", "NODE"),
        ("DesiredState", "DESIRED STATE"),
        ("CurrentState", "CURRENT STATE"),
        ("Error", "ERROR"),
        ("Ports", "PORTS"),
    ])
}

fn row(task: &Task, name: &str, node: &str, trunc: bool, now: DateTime<Utc>) -> Value {
    let id = task.id.clone().unwrap_or_default();
    let image = task
        .spec
        .as_ref()
        .and_then(|s| s.container_spec.as_ref())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    json!({
        "ID": if trunc { truncate_id(&id) } else { id },
        "Name": name,
        "Image": if trunc { display_image(&image) } else { image },
        "Node": node,
        "DesiredState": pretty_print(&enum_text(&task.desired_state)),
        "CurrentState": current_state(task, now),
        "Error": error_text(task, trunc),
        "Ports": ports(task),
    })
}

/// "Running 5 seconds ago".
pub fn current_state(task: &Task, now: DateTime<Utc>) -> String {
    let status = task.status.as_ref();
    let state = status.map(|s| enum_text(&s.state)).unwrap_or_default();
    let elapsed = status
        .and_then(|s| date_text(&s.timestamp))
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .and_then(|t| (now - t.with_timezone(&Utc)).to_std().ok())
        .unwrap_or_default();
    format!(
        "{} {} ago",
        pretty_print(&state),
        crate::format::duration::human_duration(elapsed).to_lowercase()
    )
}

fn error_text(task: &Task, trunc: bool) -> String {
    let err = task
        .status
        .as_ref()
        .and_then(|s| s.err.clone())
        .unwrap_or_default();
    let err = if trunc {
        ellipsis(&err, MAX_ERROR_LENGTH)
    } else {
        err
    };
    if err.is_empty() {
        err
    } else {
        format!("\"{err}\"")
    }
}

fn ports(task: &Task) -> String {
    let ports = task
        .status
        .as_ref()
        .and_then(|s| s.port_status.as_ref())
        .and_then(|p| p.ports.clone())
        .unwrap_or_default();
    ports
        .iter()
        .map(|p| {
            format!(
                "*:{}->{}/{}",
                p.published_port.unwrap_or(0),
                p.target_port.unwrap_or(0),
                enum_text(&p.protocol)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(
        id: &str,
        slot: i64,
        node: &str,
        state: &str,
        desired: &str,
        ts: &str,
        created: &str,
    ) -> Task {
        serde_json::from_value(json!({
            "ID": id, "ServiceID": "svc1", "Slot": slot, "NodeID": node,
            "CreatedAt": created, "DesiredState": desired,
            "Spec": {"ContainerSpec": {"Image": "busybox:latest@sha256:1234"}},
            "Status": {"Timestamp": ts, "State": state}
        }))
        .unwrap()
    }

    fn names() -> (HashMap<String, String>, HashMap<String, String>) {
        let services = HashMap::from([("svc1".to_string(), "web".to_string())]);
        let nodes = HashMap::from([("n1".to_string(), "manager1".to_string())]);
        (services, nodes)
    }

    #[test]
    fn history_rows_are_indented_and_sorted() {
        let now: DateTime<Utc> = "2024-01-01T00:01:00Z".parse().unwrap();
        let tasks = vec![
            task(
                "bbbbbbbbbbbbbbbbbbbbbbbbb",
                10,
                "n1",
                "running",
                "running",
                "2024-01-01T00:00:55Z",
                "2024-01-01T00:00:50Z",
            ),
            task(
                "ccccccccccccccccccccccccc",
                2,
                "n1",
                "shutdown",
                "shutdown",
                "2024-01-01T00:00:00Z",
                "2024-01-01T00:00:00Z",
            ),
            task(
                "aaaaaaaaaaaaaaaaaaaaaaaaa",
                2,
                "n1",
                "running",
                "running",
                "2024-01-01T00:00:59.5Z",
                "2024-01-01T00:00:30Z",
            ),
        ];
        let (services, nodes) = names();
        let how = TaskFormat {
            trunc: true,
            quiet: false,
            format: None,
            resolve: true,
        };
        let out = render(tasks, &services, &nodes, &how, now).unwrap();
        let expected = "\
ID             NAME        IMAGE            NODE       DESIRED STATE   CURRENT STATE                    ERROR     PORTS
aaaaaaaaaaaa   web.2       busybox:latest   manager1   Running         Running less than a second ago             
cccccccccccc    \\_ web.2   busybox:latest   manager1   Shutdown        Shutdown about a minute ago                
bbbbbbbbbbbb   web.10      busybox:latest   manager1   Running         Running 5 seconds ago                      
";
        assert_eq!(out, expected);
    }

    #[test]
    fn quiet_and_no_trunc() {
        let now: DateTime<Utc> = "2024-01-01T00:01:00Z".parse().unwrap();
        let tasks = vec![task(
            "aaaaaaaaaaaaaaaaaaaaaaaaa",
            1,
            "n1",
            "running",
            "running",
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00Z",
        )];
        let (services, nodes) = names();
        let quiet = TaskFormat {
            trunc: true,
            quiet: true,
            format: None,
            resolve: true,
        };
        assert_eq!(
            render(tasks.clone(), &services, &nodes, &quiet, now).unwrap(),
            "aaaaaaaaaaaa\n"
        );
        let full = TaskFormat {
            trunc: false,
            quiet: false,
            format: Some("{{.ID}} {{.Image}} {{.Name}}".into()),
            resolve: true,
        };
        assert_eq!(
            render(tasks, &services, &nodes, &full, now).unwrap(),
            "aaaaaaaaaaaaaaaaaaaaaaaaa busybox:latest@sha256:1234 web.1\n"
        );
    }

    #[test]
    fn errors_are_quoted_and_cut() {
        let mut t = task(
            "a",
            1,
            "n1",
            "rejected",
            "shutdown",
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00Z",
        );
        if let Some(status) = t.status.as_mut() {
            status.err = Some("No such image: flotilla-busybox:does-not-exist".into());
        }
        assert_eq!(error_text(&t, true), "\"No such image: flotilla-busyb…\"");
        assert_eq!(
            error_text(&t, false),
            "\"No such image: flotilla-busybox:does-not-exist\""
        );
    }
}
