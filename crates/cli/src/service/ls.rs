//! `service ls`: GET /services?status=true, docker's columns and port ranges.

use bollard::models::{EndpointPortConfig, Service};
use clap::Args;
use serde_json::{json, Value};

use crate::client::{filters_pair, parse_filters, query, Client, Result};
use crate::format::table::{header, render_list, QUIET_FORMAT};
use crate::format::{display_image, enum_text, natural_cmp, truncate_id};
use crate::out;

pub const DEFAULT_TABLE_FORMAT: &str =
    "table {{.ID}}\t{{.Name}}\t{{.Mode}}\t{{.Replicas}}\t{{.Image}}\t{{.Ports}}";

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Filter output based on conditions provided
    #[arg(short, long = "filter", value_name = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long, value_name = "string")]
    format: Option<String>,
    /// Only display IDs
    #[arg(short, long)]
    quiet: bool,
}

pub async fn run(client: &Client, args: LsArgs) -> Result<()> {
    let filters = parse_filters(&args.filter)?;
    let mut params = vec![("status", "true".to_string())];
    params.extend(filters_pair(&filters));
    let services: Vec<Service> = client.get(&format!("/services{}", query(&params))).await?;
    let format = match args.format.as_deref() {
        Some(f) if !f.is_empty() && f != "table" => f,
        _ if args.quiet => QUIET_FORMAT,
        _ => DEFAULT_TABLE_FORMAT,
    };
    out(&render(services, format)?);
    Ok(())
}

pub fn render(mut services: Vec<Service>, format: &str) -> Result<String> {
    services.sort_by(|a, b| natural_cmp(&name(a), &name(b)));
    let rows: Vec<Value> = services.iter().map(row).collect();
    let head = header(&[
        ("ID", "ID"),
        ("Name", "NAME"),
        ("Mode", "MODE"),
        ("Replicas", "REPLICAS"),
        ("Image", "IMAGE"),
        ("Ports", "PORTS"),
    ]);
    Ok(render_list(format, &head, &rows)?)
}

fn name(service: &Service) -> String {
    service
        .spec
        .as_ref()
        .and_then(|s| s.name.clone())
        .unwrap_or_default()
}

fn row(service: &Service) -> Value {
    let spec = service.spec.clone().unwrap_or_default();
    let image = spec
        .task_template
        .as_ref()
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    json!({
        "ID": truncate_id(service.id.as_deref().unwrap_or_default()),
        "Name": name(service),
        "Mode": mode(service),
        "Replicas": replicas(service),
        "Image": display_image(&image),
        "Ports": ports(service.endpoint.as_ref().and_then(|e| e.ports.clone()).unwrap_or_default()),
    })
}

fn mode(service: &Service) -> &'static str {
    let mode = service
        .spec
        .as_ref()
        .and_then(|s| s.mode.clone())
        .unwrap_or_default();
    if mode.global.is_some() {
        "global"
    } else if mode.replicated.is_some() {
        "replicated"
    } else if mode.replicated_job.is_some() {
        "replicated job"
    } else if mode.global_job.is_some() {
        "global job"
    } else {
        ""
    }
}

fn replicas(service: &Service) -> String {
    let status = service.service_status.clone().unwrap_or_default();
    let running = status.running_tasks.unwrap_or(0);
    let desired = status.desired_tasks.unwrap_or(0);
    let completed = status.completed_tasks.unwrap_or(0);
    let spec = service.spec.clone().unwrap_or_default();
    let spec_mode = spec.mode.clone().unwrap_or_default();
    if let Some(job) = &spec_mode.replicated_job {
        return format!(
            "{running}/{desired} ({completed}/{} completed)",
            job.total_completions.unwrap_or(0)
        );
    }
    if spec_mode.global_job.is_some() {
        return format!(
            "{running}/{desired} ({completed}/{} completed)",
            desired + completed
        );
    }
    let max = spec
        .task_template
        .and_then(|t| t.placement)
        .and_then(|p| p.max_replicas)
        .unwrap_or(0);
    if max > 0 && spec_mode.replicated.is_some() {
        return format!("{running}/{desired} (max {max} per node)");
    }
    format!("{running}/{desired}")
}

/// Published ingress ports, grouped into ranges where consecutive (docker's
/// serviceContext.Ports).
fn ports(mut ports: Vec<EndpointPortConfig>) -> String {
    ports.sort_by(|a, b| {
        enum_text(&a.protocol)
            .cmp(&enum_text(&b.protocol))
            .then(a.published_port.cmp(&b.published_port))
    });
    let mut out = Vec::new();
    let mut current: Option<(i64, i64, i64, i64, String)> = None;
    for port in ports
        .iter()
        .filter(|p| enum_text(&p.publish_mode) == "ingress")
    {
        let (published, target) = (
            port.published_port.unwrap_or(0),
            port.target_port.unwrap_or(0),
        );
        let protocol = enum_text(&port.protocol);
        if let Some((_, p_end, t_start, t_end, proto)) = current.as_mut() {
            let is_range = *t_end != *t_start;
            let consecutive = published - *p_end <= 1 && target - *t_end <= 1;
            if *proto == protocol && consecutive && !(is_range && target <= *t_end) {
                *p_end = published;
                *t_end = target;
                continue;
            }
        }
        if let Some(range) = current.take() {
            out.push(range_text(&range));
        }
        current = Some((published, published, target, target, protocol));
    }
    out.extend(current.as_ref().map(range_text));
    out.join(", ")
}

fn range_text((p_start, p_end, t_start, t_end, protocol): &(i64, i64, i64, i64, String)) -> String {
    let span = |a: i64, b: i64| {
        if b > a {
            format!("{a}-{b}")
        } else {
            a.to_string()
        }
    };
    format!(
        "*:{}->{}/{protocol}",
        span(*p_start, *p_end),
        span(*t_start, *t_end)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(
        id: &str,
        name: &str,
        mode: Value,
        running: u64,
        desired: u64,
        ports: Value,
    ) -> Service {
        serde_json::from_value(json!({
            "ID": id,
            "Spec": {"Name": name, "Mode": mode, "TaskTemplate": {"ContainerSpec": {"Image": "busybox:latest@sha256:abc"}}},
            "Endpoint": {"Ports": ports},
            "ServiceStatus": {"RunningTasks": running, "DesiredTasks": desired}
        }))
        .unwrap()
    }

    fn port(published: i64, target: i64) -> Value {
        json!({"Protocol": "tcp", "PublishedPort": published, "TargetPort": target, "PublishMode": "ingress"})
    }

    #[test]
    fn default_table() {
        let services = vec![
            service(
                "9uk4639qpg7npwf3fn2aasksr",
                "web10",
                json!({"Replicated": {"Replicas": 2}}),
                1,
                2,
                json!([port(8080, 80)]),
            ),
            service(
                "aaaaaaaaaaaaaaaaaaaaaaaaa",
                "web2",
                json!({"Global": {}}),
                1,
                1,
                json!(null),
            ),
        ];
        let expected = "\
ID             NAME      MODE         REPLICAS   IMAGE            PORTS
aaaaaaaaaaaa   web2      global       1/1        busybox:latest   
9uk4639qpg7n   web10     replicated   1/2        busybox:latest   *:8080->80/tcp
";
        assert_eq!(render(services, DEFAULT_TABLE_FORMAT).unwrap(), expected);
    }

    #[test]
    fn port_ranges_group_like_docker() {
        // From docker/cli's formatter_test: 80->80, 81->81, 82->80 etc.
        let p = |list: &[(i64, i64)]| {
            let configs: Vec<EndpointPortConfig> = list
                .iter()
                .map(|(a, b)| serde_json::from_value(port(*a, *b)).unwrap())
                .collect();
            ports(configs)
        };
        assert_eq!(p(&[(80, 80), (81, 81), (82, 82)]), "*:80-82->80-82/tcp");
        assert_eq!(p(&[(80, 80), (81, 80)]), "*:80-81->80/tcp");
        assert_eq!(
            p(&[(80, 80), (81, 81), (82, 80)]),
            "*:80-81->80-81/tcp, *:82->80/tcp"
        );
        assert_eq!(
            p(&[(8080, 80), (9090, 90)]),
            "*:8080->80/tcp, *:9090->90/tcp"
        );
    }

    #[test]
    fn quiet_and_json() {
        let services = vec![service(
            "9uk4639qpg7npwf3fn2aasksr",
            "web",
            json!({"Replicated": {"Replicas": 1}}),
            1,
            1,
            json!(null),
        )];
        assert_eq!(
            render(services.clone(), QUIET_FORMAT).unwrap(),
            "9uk4639qpg7n\n"
        );
        assert_eq!(
            render(services, "{{json .}}").unwrap(),
            "{\"ID\":\"9uk4639qpg7n\",\"Image\":\"busybox:latest\",\"Mode\":\"replicated\",\"Name\":\"web\",\"Ports\":\"\",\"Replicas\":\"1/1\"}\n"
        );
    }
}
