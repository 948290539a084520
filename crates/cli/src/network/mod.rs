//! `network create | inspect | ls | prune | rm` (docker/cli
//! cli/command/network), and the name-to-ID lookup that `service create
//! --network` and `service update --network-add/--network-rm` use.

pub(crate) mod create;
mod ls;

use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::client::{decode, encode, filters_pair, parse_filters, query, CliError, Client, Result};
use crate::format::template::{Mode, Template};
use crate::{confirm, out};

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a network
    Create(Box<create::CreateArgs>),
    /// Display detailed information on one or more networks
    Inspect(InspectArgs),
    /// List networks
    #[command(visible_alias = "list")]
    Ls(ls::LsArgs),
    /// Remove all unused networks
    Prune(PruneArgs),
    /// Remove one or more networks
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format the output using the given Go template
    #[arg(short, long, value_name = "string")]
    format: Option<String>,
    /// Verbose output for diagnostics
    #[arg(short, long)]
    verbose: bool,
    #[arg(value_name = "NETWORK", required = true)]
    networks: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    #[arg(value_name = "NETWORK", required = true)]
    networks: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
    /// Provide filter values (e.g. 'until=<timestamp>')
    #[arg(long = "filter", value_name = "filter")]
    filter: Vec<String>,
}

const INGRESS_WARNING: &str = "WARNING! Before removing the routing-mesh network, \
make sure all the nodes in your swarm run the same docker engine version. \
Otherwise, removal may not be effective and functionality of newly create \
ingress networks will be impaired.\nAre you sure you want to continue?";

const PRUNE_WARNING: &str = "WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue?";

pub async fn run(client: &Client, cmd: NetworkCmd) -> Result<()> {
    match cmd {
        NetworkCmd::Create(args) => create::run(client, *args).await,
        NetworkCmd::Inspect(args) => inspect(client, args).await,
        NetworkCmd::Ls(args) => ls::run(client, args).await,
        NetworkCmd::Prune(args) => prune(client, args).await,
        NetworkCmd::Rm(args) => rm(client, args).await,
    }
}

/// The docker client's answer to a 404 on a network ("Error: No such
/// network: X"); other errors pass unchanged.
fn not_found_as_docker(err: CliError, name: &str) -> CliError {
    if err.is_not_found() {
        CliError::Other(format!("Error: No such network: {name}"))
    } else {
        err
    }
}

/// GET /networks/{name} (NetworkInspectWithRaw), raw.
async fn get_raw(
    client: &Client,
    name: &str,
    scope: Option<&str>,
    verbose: bool,
) -> Result<bytes::Bytes> {
    if name.is_empty() {
        return Err(CliError::Other("Error: No such network: ".to_string()));
    }
    let mut params = Vec::new();
    if verbose {
        params.push(("verbose", "true".to_string()));
    }
    if let Some(scope) = scope {
        params.push(("scope", scope.to_string()));
    }
    let path = format!("/networks/{}{}", encode(name), query(&params));
    client
        .get_raw(&path)
        .await
        .map_err(|e| not_found_as_docker(e, name))
}

#[derive(Deserialize, Debug, Default)]
struct NetworkHead {
    #[serde(rename = "Id", default)]
    id: Option<String>,
    #[serde(rename = "Ingress", default)]
    ingress: Option<bool>,
}

/// docker's resolveNetworkID: a swarm network's ID from its name or ID.
pub(crate) async fn swarm_network_id(client: &Client, name: &str) -> Result<String> {
    let raw = get_raw(client, name, Some("swarm"), false).await?;
    let head: NetworkHead = decode(&raw)?;
    Ok(head.id.unwrap_or_default())
}

/// A swarm network's ID and name, for display; None when it cannot be read.
pub(crate) async fn swarm_network(client: &Client, name: &str) -> Option<(String, String)> {
    let raw = get_raw(client, name, Some("swarm"), false).await.ok()?;
    let value: Value = serde_json::from_slice(&raw).ok()?;
    Some((
        value["Id"].as_str()?.to_string(),
        value["Name"].as_str()?.to_string(),
    ))
}

async fn inspect(client: &Client, args: InspectArgs) -> Result<()> {
    // The template is parsed before anything is fetched; a bad one exits 64.
    let template = match args.format.as_deref().filter(|f| !f.is_empty()) {
        Some(format) => Some(Template::parse(format).map_err(|e| CliError::Status {
            code: 64,
            message: format!("template parsing error: {e}"),
        })?),
        None => None,
    };
    let mut raws = Vec::new();
    let mut errors = Vec::new();
    for name in &args.networks {
        match get_raw(client, name, None, args.verbose).await {
            Ok(raw) => raws.push(raw),
            Err(err) => errors.push(err.to_string()),
        }
    }
    out(&inspect_output(&raws, template.as_ref(), &mut errors));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Other(errors.join("\n")))
    }
}

/// docker's inspect.Inspect output for the networks found (see
/// [`crate::format::inspect_output`]), templates run on the typed view.
fn inspect_output(
    raws: &[bytes::Bytes],
    template: Option<&Template>,
    errors: &mut Vec<String>,
) -> String {
    crate::format::inspect_output(raws, template, errors, |t, value| {
        t.execute(&typed_view(value), Mode::Strict)
            .map_err(|e| e.to_string())
    })
}

/// The network as docker's template sees types.NetworkResource: every field
/// present (zero values for what the daemon left out) and Created printed
/// as Go prints a time.Time.
fn typed_view(value: Value) -> Value {
    let Value::Object(mut map) = value else {
        return value;
    };
    let zero = json!({
        "Name": "", "Id": "", "Created": "0001-01-01T00:00:00Z", "Scope": "", "Driver": "",
        "EnableIPv6": false, "IPAM": {}, "Internal": false, "Attachable": false,
        "Ingress": false, "ConfigFrom": {}, "ConfigOnly": false, "Containers": null,
        "Options": null, "Labels": null, "Peers": null, "Services": null
    });
    fill(&mut map, &zero);
    if let Some(Value::String(created)) = map.get("Created") {
        let shown = crate::format::go_time_string(created);
        map.insert("Created".to_string(), Value::String(shown));
    }
    if let Some(Value::Object(ipam)) = map.get_mut("IPAM") {
        fill(
            ipam,
            &json!({"Driver": "", "Options": null, "Config": null}),
        );
        if let Some(Value::Array(configs)) = ipam.get_mut("Config") {
            let zero =
                json!({"Subnet": "", "IPRange": "", "Gateway": "", "AuxiliaryAddresses": null});
            for config in configs.iter_mut().filter_map(Value::as_object_mut) {
                fill(config, &zero);
            }
        }
    }
    if let Some(Value::Object(from)) = map.get_mut("ConfigFrom") {
        fill(from, &json!({"Network": ""}));
    }
    if let Some(Value::Object(containers)) = map.get_mut("Containers") {
        let zero = json!({"Name": "", "EndpointID": "", "MacAddress": "", "IPv4Address": "", "IPv6Address": ""});
        for endpoint in containers.values_mut().filter_map(Value::as_object_mut) {
            fill(endpoint, &zero);
        }
    }
    if let Some(Value::Array(peers)) = map.get_mut("Peers") {
        for peer in peers.iter_mut().filter_map(Value::as_object_mut) {
            fill(peer, &json!({"Name": "", "IP": ""}));
        }
    }
    Value::Object(map)
}

/// Adds the keys of `zero` that `map` lacks (null stands for an absent
/// object, which becomes `{}` to be filled in turn).
fn fill(map: &mut Map<String, Value>, zero: &Value) {
    let Value::Object(zero) = zero else {
        return;
    };
    for (key, value) in zero {
        map.entry(key.clone()).or_insert_with(|| value.clone());
    }
}

async fn rm(client: &Client, args: RmArgs) -> Result<()> {
    let mut failed = false;
    for name in &args.networks {
        if let Ok(raw) = get_raw(client, name, None, false).await {
            let head: NetworkHead = decode(&raw).unwrap_or_default();
            if head.ingress == Some(true) && !confirm(INGRESS_WARNING) {
                continue;
            }
        }
        if name.is_empty() {
            eprintln!("Error: No such network: ");
            failed = true;
            continue;
        }
        match client.delete(&format!("/networks/{}", encode(name))).await {
            Ok(()) => out(&format!("{name}\n")),
            Err(err) => {
                eprintln!("{}", not_found_as_docker(err, name));
                failed = true;
            }
        }
    }
    if failed {
        // Each failure is printed already; only the exit status remains.
        Err(CliError::Other(String::new()))
    } else {
        Ok(())
    }
}

#[derive(Deserialize, Debug, Default)]
struct PruneReport {
    #[serde(rename = "NetworksDeleted", default)]
    networks_deleted: Option<Vec<String>>,
}

async fn prune(client: &Client, args: PruneArgs) -> Result<()> {
    let filters = parse_filters(&args.filter)?;
    if !args.force && !confirm(PRUNE_WARNING) {
        return Ok(());
    }
    let params: Vec<_> = filters_pair(&filters).into_iter().collect();
    let answer = client
        .post::<()>(&format!("/networks/prune{}", query(&params)), None)
        .await?;
    let report: PruneReport = serde_json::from_slice(&answer)
        .map_err(|e| CliError::Other(format!("Error retrieving network prune report: {e}")))?;
    out(&prune_output(&report.networks_deleted.unwrap_or_default()));
    Ok(())
}

/// docker prints the report with Println, so a blank line ends it.
fn prune_output(deleted: &[String]) -> String {
    if deleted.is_empty() {
        return String::new();
    }
    let mut text = "Deleted Networks:\n".to_string();
    for name in deleted {
        text.push_str(name);
        text.push('\n');
    }
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(value: Value) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(&value).unwrap())
    }

    fn network() -> Value {
        json!({
            "Name": "web", "Id": "abc123", "Created": "2024-05-01T10:00:00.5Z", "Scope": "swarm",
            "Driver": "overlay", "EnableIPv6": false,
            "IPAM": {"Driver": "default", "Options": null, "Config": [{"Subnet": "10.0.1.0/24", "Gateway": "10.0.1.1"}]},
            "Internal": false, "Attachable": true, "Ingress": false, "ConfigFrom": {"Network": ""},
            "ConfigOnly": false, "Containers": null, "Options": {"com.docker.network.driver.overlay.vxlanid_list": "4097"},
            "Labels": {}
        })
    }

    #[test]
    fn inspect_json_and_templates() {
        let mut errors = Vec::new();
        let daemon = bytes::Bytes::from_static(b"{\"Name\":\"a\",\"Labels\":{}}\n");
        let text = inspect_output(&[daemon], None, &mut errors);
        assert_eq!(
            text,
            "[\n    {\n        \"Name\": \"a\",\n        \"Labels\": {}\n    }\n]\n"
        );
        assert_eq!(inspect_output(&[], None, &mut errors), "[]\n");
        let template = Template::parse(
            "{{.Name}} {{.Created}} {{range .IPAM.Config}}{{.Subnet}} {{.IPRange}}|{{.Gateway}}{{end}} {{.ConfigFrom.Network}}{{json .Peers}}",
        )
        .unwrap();
        let text = inspect_output(&[raw(network())], Some(&template), &mut errors);
        assert_eq!(
            text,
            "web 2024-05-01 10:00:00.5 +0000 UTC 10.0.1.0/24 |10.0.1.1 null\n"
        );
        assert!(errors.is_empty());
        assert_eq!(inspect_output(&[], Some(&template), &mut errors), "\n");
        let bad = Template::parse("{{.Nope}}").unwrap();
        assert_eq!(
            inspect_output(&[raw(network())], Some(&bad), &mut errors),
            "\n"
        );
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("template parsing error: "),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn prune_report() {
        assert_eq!(prune_output(&[]), "");
        assert_eq!(
            prune_output(&["a".to_string(), "b".to_string()]),
            "Deleted Networks:\na\nb\n\n"
        );
        assert_eq!(
            format!("{PRUNE_WARNING} [y/N] "),
            "WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] "
        );
        assert!(INGRESS_WARNING.starts_with("WARNING! Before removing the routing-mesh network, make sure all the nodes in your swarm run the same docker engine version. Otherwise,"));
    }

    #[test]
    fn not_found_reads_like_dockers() {
        let err = CliError::Daemon {
            status: 404,
            message: "network web not found".to_string(),
        };
        assert_eq!(
            not_found_as_docker(err, "web").to_string(),
            "Error: No such network: web"
        );
        let err = CliError::Daemon {
            status: 403,
            message: "x is a pre-defined network and cannot be removed".to_string(),
        };
        assert_eq!(
            not_found_as_docker(err, "x").to_string(),
            "Error response from daemon: x is a pre-defined network and cannot be removed"
        );
    }
}
