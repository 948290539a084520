//! `network ls`: GET /networks, sorted by name, docker's network formatter
//! (cli/command/network/formatter.go) for the table, `-q`, raw and templates.

use std::collections::BTreeMap;

use clap::Args;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::{filters_pair, parse_filters, query, Client, Result};
use crate::format::table::{header, render_list, QUIET_FORMAT};
use crate::format::template::METHOD_SUFFIX;
use crate::format::{go_time_string, natural_cmp, truncate_id};
use crate::out;

pub const DEFAULT_TABLE_FORMAT: &str = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}";
const RAW_FORMAT: &str =
    "network_id: {{.ID}}\\nname: {{.Name}}\\ndriver: {{.Driver}}\\nscope: {{.Scope}}\\n";
const RAW_QUIET_FORMAT: &str = "network_id: {{.ID}}";

#[derive(Args, Debug, Default)]
pub struct LsArgs {
    /// Provide filter values (e.g. 'driver=bridge')
    #[arg(short, long = "filter", value_name = "filter")]
    pub filter: Vec<String>,
    /// Pretty-print networks using a Go template
    #[arg(long, value_name = "string")]
    pub format: Option<String>,
    /// Do not truncate the output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Only display network IDs
    #[arg(short, long)]
    pub quiet: bool,
}

/// The fields of types.NetworkResource the list shows (null or missing
/// fields read as Go's zero values).
#[derive(Deserialize, Debug, Default, Clone)]
pub struct NetworkSummary {
    #[serde(rename = "Name", default)]
    pub name: Option<String>,
    #[serde(rename = "Id", default)]
    pub id: Option<String>,
    #[serde(rename = "Created", default)]
    pub created: Option<String>,
    #[serde(rename = "Scope", default)]
    pub scope: Option<String>,
    #[serde(rename = "Driver", default)]
    pub driver: Option<String>,
    #[serde(rename = "EnableIPv6", default)]
    pub enable_ipv6: Option<bool>,
    #[serde(rename = "Internal", default)]
    pub internal: Option<bool>,
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
}

pub async fn run(client: &Client, args: LsArgs) -> Result<()> {
    let filters = parse_filters(&args.filter)?;
    let params: Vec<_> = filters_pair(&filters).into_iter().collect();
    let networks: Vec<NetworkSummary> = client.get(&format!("/networks{}", query(&params))).await?;
    let format = choose_format(args.format.as_deref(), args.quiet);
    out(&render(networks, format, !args.no_trunc)?);
    Ok(())
}

/// docker's NewFormat for networks: "table" (the default) and "raw" have
/// quiet and full forms; any other format is used as given, even with -q.
pub fn choose_format(format: Option<&str>, quiet: bool) -> &str {
    match format.filter(|f| !f.is_empty()).unwrap_or("table") {
        "table" if quiet => QUIET_FORMAT,
        "table" => DEFAULT_TABLE_FORMAT,
        "raw" if quiet => RAW_QUIET_FORMAT,
        "raw" => RAW_FORMAT,
        other => other,
    }
}

pub fn render(mut networks: Vec<NetworkSummary>, format: &str, trunc: bool) -> Result<String> {
    networks.sort_by(|a, b| natural_cmp(&name(a), &name(b)));
    let rows: Vec<Value> = networks.iter().map(|n| row(n, trunc)).collect();
    let head = header(&[
        ("ID", "NETWORK ID"),
        ("Name", "NAME"),
        ("Driver", "DRIVER"),
        ("Scope", "SCOPE"),
        ("IPv6", "IPV6"),
        ("Internal", "INTERNAL"),
        ("Labels", "LABELS"),
        ("CreatedAt", "CREATED AT"),
    ]);
    Ok(render_list(format, &head, &rows)?)
}

fn name(network: &NetworkSummary) -> String {
    network.name.clone().unwrap_or_default()
}

/// docker's networkContext, one field per method.
fn row(network: &NetworkSummary, trunc: bool) -> Value {
    let id = network.id.clone().unwrap_or_default();
    let labels = network.labels.clone().unwrap_or_default();
    // Go ranges over the map in random order; sorted here so output is stable.
    let joined: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let created = network
        .created
        .clone()
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string());
    let mut row = json!({
        "ID": if trunc { truncate_id(&id) } else { id },
        "Name": name(network),
        "Driver": network.driver.clone().unwrap_or_default(),
        "Scope": network.scope.clone().unwrap_or_default(),
        "IPv6": network.enable_ipv6.unwrap_or(false).to_string(),
        "Internal": network.internal.unwrap_or(false).to_string(),
        "Labels": joined.join(","),
        "CreatedAt": go_time_string(&created),
    });
    row[format!("Label{METHOD_SUFFIX}")] = json!(labels);
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(id: &str, name: &str, driver: &str, scope: &str) -> NetworkSummary {
        serde_json::from_value(json!({
            "Name": name, "Id": id, "Created": "2024-05-01T10:00:00.5Z", "Scope": scope,
            "Driver": driver, "EnableIPv6": false, "Internal": false,
            "Labels": {"b": "2", "a": "1"}, "Containers": {}, "Options": null
        }))
        .unwrap()
    }

    fn sample() -> Vec<NetworkSummary> {
        vec![
            network(
                "c1f0a5b7d9e3c1f0a5b7d9e3c1f0a5b7",
                "web10",
                "overlay",
                "swarm",
            ),
            network(
                "8f3e1c2b4a6d8f3e1c2b4a6d8f3e1c2b",
                "web2",
                "overlay",
                "swarm",
            ),
            network(
                "0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d",
                "bridge",
                "bridge",
                "local",
            ),
            network(
                "9z8y7x6w5v4u9z8y7x6w5v4u9z8y7x6w",
                "ingress",
                "overlay",
                "swarm",
            ),
        ]
    }

    #[test]
    fn default_table_sorted_naturally() {
        let expected = "\
NETWORK ID     NAME      DRIVER    SCOPE
0a1b2c3d4e5f   bridge    bridge    local
9z8y7x6w5v4u   ingress   overlay   swarm
8f3e1c2b4a6d   web2      overlay   swarm
c1f0a5b7d9e3   web10     overlay   swarm
";
        assert_eq!(
            render(sample(), choose_format(None, false), true).unwrap(),
            expected
        );
        assert_eq!(
            render(vec![], choose_format(Some(""), false), true).unwrap(),
            "NETWORK ID   NAME      DRIVER    SCOPE\n"
        );
    }

    #[test]
    fn quiet_no_trunc_and_raw() {
        assert_eq!(
            render(sample(), choose_format(None, true), true).unwrap(),
            "0a1b2c3d4e5f\n9z8y7x6w5v4u\n8f3e1c2b4a6d\nc1f0a5b7d9e3\n"
        );
        assert_eq!(
            render(sample(), choose_format(Some("table"), true), false).unwrap(),
            "0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d\n9z8y7x6w5v4u9z8y7x6w5v4u9z8y7x6w\n8f3e1c2b4a6d8f3e1c2b4a6d8f3e1c2b\nc1f0a5b7d9e3c1f0a5b7d9e3c1f0a5b7\n"
        );
        // A custom format wins over -q, as in docker.
        assert_eq!(
            render(
                sample()[..1].to_vec(),
                choose_format(Some("{{.Name}}"), true),
                true
            )
            .unwrap(),
            "web10\n"
        );
        assert_eq!(
            render(
                sample()[2..3].to_vec(),
                choose_format(Some("raw"), false),
                true
            )
            .unwrap(),
            "network_id: 0a1b2c3d4e5f\nname: bridge\ndriver: bridge\nscope: local\n\n"
        );
        assert_eq!(
            render(
                sample()[2..3].to_vec(),
                choose_format(Some("raw"), true),
                true
            )
            .unwrap(),
            "network_id: 0a1b2c3d4e5f\n"
        );
    }

    #[test]
    fn templates_see_dockers_fields() {
        let one = sample()[2..3].to_vec();
        assert_eq!(
            render(one.clone(), "{{json .}}", true).unwrap(),
            "{\"CreatedAt\":\"2024-05-01 10:00:00.5 +0000 UTC\",\"Driver\":\"bridge\",\"ID\":\"0a1b2c3d4e5f\",\"IPv6\":\"false\",\"Internal\":\"false\",\"Labels\":\"a=1,b=2\",\"Name\":\"bridge\",\"Scope\":\"local\"}\n"
        );
        assert_eq!(
            render(
                one.clone(),
                "table {{.Name}}\t{{.Label \"a\"}}\t{{.IPv6}}",
                true
            )
            .unwrap(),
            "NAME                IPV6\nbridge    1         false\n"
        );
        assert!(render(one, "{{.Nope}}", true)
            .unwrap_err()
            .to_string()
            .starts_with("template parsing error"));
    }
}
