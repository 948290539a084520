//! `node ls | inspect | update | ps | rm | promote | demote`, following
//! docker/cli's cli/command/node.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{Node, NodeSpec, SystemInfo, Task, TlsInfo};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::{
    add_filter, decode, encode, filters_pair, parse_filters, query, CliError, Client, Result,
};
use crate::format::table::{header, render_list, QUIET_FORMAT};
use crate::format::{date_pretty, enum_text, natural_cmp, pretty_print, units::bytes_size};
use crate::out;
use crate::task::{self, TaskFormat};

pub const DEFAULT_TABLE_FORMAT: &str = "table {{.ID}} {{if .Self}}*{{else}} {{ end }}\t{{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}\t{{.EngineVersion}}";

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// List nodes in the swarm
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more nodes
    Inspect(InspectArgs),
    /// Update a node
    Update(UpdateArgs),
    /// List tasks running on one or more nodes, defaults to current node
    Ps(PsArgs),
    /// Remove one or more nodes from the swarm
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Promote one or more nodes to manager in the swarm
    Promote(RoleArgs),
    /// Demote one or more nodes from manager in the swarm
    Demote(RoleArgs),
}

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

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short, long, value_name = "string")]
    format: Option<String>,
    /// Print the information in a human friendly format
    #[arg(long)]
    pretty: bool,
    #[arg(value_name = "self|NODE", required = true)]
    nodes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Availability of the node ("active", "pause", "drain")
    #[arg(long, value_name = "string")]
    availability: Option<String>,
    /// Add or update a node label (key=value)
    #[arg(long = "label-add", value_name = "list")]
    label_add: Vec<String>,
    /// Remove a node label if exists
    #[arg(long = "label-rm", value_name = "list")]
    label_rm: Vec<String>,
    /// Role of the node ("worker", "manager")
    #[arg(long, value_name = "string")]
    role: Option<String>,
    #[arg(value_name = "NODE")]
    node: String,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    #[command(flatten)]
    list: task::ListFlags,
    #[arg(value_name = "NODE")]
    nodes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force remove a node from the swarm
    #[arg(short, long)]
    force: bool,
    #[arg(value_name = "NODE", required = true)]
    nodes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RoleArgs {
    #[arg(value_name = "NODE", required = true)]
    nodes: Vec<String>,
}

pub async fn run(client: &Client, cmd: NodeCmd) -> Result<()> {
    match cmd {
        NodeCmd::Ls(args) => ls(client, args).await,
        NodeCmd::Inspect(args) => inspect(client, args).await,
        NodeCmd::Update(args) => update(client, args).await,
        NodeCmd::Ps(args) => ps(client, args).await,
        NodeCmd::Rm(args) => rm(client, args).await,
        NodeCmd::Promote(args) => change_role(client, args, "manager").await,
        NodeCmd::Demote(args) => change_role(client, args, "worker").await,
    }
}

async fn self_id(client: &Client) -> Result<String> {
    let info: SystemInfo = client.get("/info").await?;
    Ok(info.swarm.and_then(|s| s.node_id).unwrap_or_default())
}

/// This daemon's node ID and the cluster's TLS info, for node ls.
async fn swarm_identity(client: &Client) -> Result<(String, Option<TlsInfo>)> {
    let info: SystemInfo = client.get("/info").await?;
    let swarm = info.swarm.unwrap_or_default();
    let tls = swarm.cluster.and_then(|c| c.tls_info);
    Ok((swarm.node_id.unwrap_or_default(), tls))
}

/// docker's node `Reference`: "self" is this daemon's node.
async fn reference(client: &Client, node: &str) -> Result<String> {
    if node != "self" {
        return Ok(node.to_string());
    }
    let id = self_id(client).await?;
    if id.is_empty() {
        return Err(CliError::Other("node ID not found in /info".to_string()));
    }
    Ok(id)
}

fn node_path(id: &str) -> String {
    format!("/nodes/{}", encode(id))
}

async fn ls(client: &Client, args: LsArgs) -> Result<()> {
    let filters = parse_filters(&args.filter)?;
    let path = format!(
        "/nodes{}",
        query(&filters_pair(&filters).into_iter().collect::<Vec<_>>())
    );
    let mut nodes: Vec<Node> = client.get(&path).await?;
    let (me, cluster_tls) = swarm_identity(client).await?;
    nodes.sort_by(|a, b| natural_cmp(&hostname(a), &hostname(b)));
    let rows: Vec<Value> = nodes
        .iter()
        .map(|n| ls_row(n, &me, cluster_tls.as_ref()))
        .collect();
    let format = match args.format.as_deref() {
        Some(f) if !f.is_empty() && f != "table" => f,
        _ if args.quiet => QUIET_FORMAT,
        _ => DEFAULT_TABLE_FORMAT,
    };
    out(&render_list(format, &ls_header(), &rows)?);
    Ok(())
}

fn hostname(node: &Node) -> String {
    node.description
        .as_ref()
        .and_then(|d| d.hostname.clone())
        .unwrap_or_default()
}

fn ls_header() -> Value {
    let mut head = header(&[
        ("ID", "ID"),
        ("Hostname", "HOSTNAME"),
        ("Status", "STATUS"),
        ("Availability", "AVAILABILITY"),
        ("ManagerStatus", "MANAGER STATUS"),
        ("EngineVersion", "ENGINE VERSION"),
        ("TLSStatus", "TLS STATUS"),
    ]);
    head["Self"] = Value::String(String::new());
    head
}

/// "Ready" when the node trusts the cluster's current root CA, "Needs Rotation" when not.
fn tls_status(node: &Node, cluster: Option<&TlsInfo>) -> &'static str {
    let empty = TlsInfo::default();
    let node_tls = node.description.as_ref().and_then(|d| d.tls_info.as_ref());
    match (cluster, node_tls) {
        (Some(cluster), Some(mine)) if *cluster != empty && *mine != empty => {
            if cluster == mine {
                "Ready"
            } else {
                "Needs Rotation"
            }
        }
        _ => "Unknown",
    }
}

fn ls_row(node: &Node, me: &str, cluster_tls: Option<&TlsInfo>) -> Value {
    let id = node.id.clone().unwrap_or_default();
    let manager_status = match &node.manager_status {
        Some(m) if m.leader == Some(true) => "Leader".to_string(),
        Some(m) => pretty_print(&enum_text(&m.reachability)),
        None => String::new(),
    };
    json!({
        "ID": id,
        "Self": !id.is_empty() && id == me,
        "Hostname": hostname(node),
        "Status": pretty_print(&enum_text(&node.status.as_ref().and_then(|s| s.state))),
        "Availability": pretty_print(&enum_text(&node.spec.as_ref().and_then(|s| s.availability))),
        "ManagerStatus": manager_status,
        "EngineVersion": node.description.as_ref().and_then(|d| d.engine.as_ref()).and_then(|e| e.engine_version.clone()).unwrap_or_default(),
        "TLSStatus": tls_status(node, cluster_tls),
    })
}

async fn inspect(client: &Client, args: InspectArgs) -> Result<()> {
    let mut raws = Vec::new();
    let mut errors = Vec::new();
    for node in &args.nodes {
        let found = match reference(client, node).await {
            Ok(id) => client.get_raw(&node_path(&id)).await,
            Err(err) => Err(err),
        };
        match found {
            Ok(raw) => raws.push(raw),
            // --pretty prints nothing unless every node is found.
            Err(err) if args.pretty => return Err(err),
            Err(err) => errors.push(err.to_string()),
        }
    }
    if args.pretty {
        let mut text = String::new();
        for raw in &raws {
            text.push_str(&pretty(&decode(raw)?));
            text.push('\n');
        }
        out(&text);
        return Ok(());
    }
    print_inspect(&raws, args.format.as_deref(), errors)
}

/// docker inspect's output: the objects found, as an indented array or a
/// template run once per object, then the lookups that failed.
pub fn print_inspect(
    raws: &[bytes::Bytes],
    format: Option<&str>,
    errors: Vec<String>,
) -> Result<()> {
    print_found(raws, format)?;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Other(errors.join("\n")))
    }
}

fn print_found(raws: &[bytes::Bytes], format: Option<&str>) -> Result<()> {
    print_found_raw(raws, format).map_err(|err| match err {
        CliError::Other(message) => CliError::Other(format!("template parsing error: {message}")),
        other => other,
    })
}

fn print_found_raw(raws: &[bytes::Bytes], format: Option<&str>) -> Result<()> {
    match format {
        None | Some("") => {
            let joined: Vec<String> = raws
                .iter()
                .map(|r| String::from_utf8_lossy(r).trim().to_string())
                .collect();
            let array = format!("[{}]", joined.join(","));
            out(&format!("{}\n", crate::format::json::indent(&array)));
        }
        Some(format) => {
            let template = crate::format::template::Template::parse(
                &format.replace("\\n", "\n").replace("\\t", "\t"),
            )?;
            let mut text = String::new();
            for raw in raws {
                let value: Value = decode(raw)?;
                text.push_str(&template.execute(&value, crate::format::template::Mode::Lenient)?);
                text.push('\n');
            }
            out(&text);
        }
    }
    Ok(())
}

/// docker's nodeInspectPrettyTemplate, written out.
fn pretty(node: &Node) -> String {
    let spec = node.spec.clone().unwrap_or_default();
    let desc = node.description.clone().unwrap_or_default();
    let status = node.status.clone().unwrap_or_default();
    let mut s = format!("ID:\t\t\t{}", node.id.clone().unwrap_or_default());
    if let Some(name) = spec.name.as_ref().filter(|n| !n.is_empty()) {
        s += &format!("\nName:\t\t\t{name}");
    }
    push_labels(&mut s, "Labels", spec.labels.as_ref());
    s += &format!(
        "\nHostname:              \t{}",
        desc.hostname.clone().unwrap_or_default()
    );
    s += &format!(
        "\nJoined at:             \t{}",
        date_pretty(&node.created_at)
    );
    s += &format!(
        "\nStatus:\n State:\t\t\t{}",
        pretty_print(&enum_text(&status.state))
    );
    if let Some(message) = status.message.as_ref().filter(|m| !m.is_empty()) {
        s += &format!("\n Message:              \t{}", pretty_print(message));
    }
    s += &format!(
        "\n Availability:         \t{}",
        pretty_print(&enum_text(&spec.availability))
    );
    if let Some(addr) = status.addr.as_ref().filter(|a| !a.is_empty()) {
        s += &format!("\n Address:\t\t{addr}");
    }
    if let Some(manager) = &node.manager_status {
        s += &format!(
            "\nManager Status:\n Address:\t\t{}\n Raft Status:\t\t{}\n Leader:\t\t{}",
            manager.addr.clone().unwrap_or_default(),
            pretty_print(&enum_text(&manager.reachability)),
            if manager.leader == Some(true) {
                "Yes"
            } else {
                "No"
            }
        );
    }
    let platform = desc.platform.clone().unwrap_or_default();
    s += &format!(
        "\nPlatform:\n Operating System:\t{}\n Architecture:\t\t{}",
        platform.os.unwrap_or_default(),
        platform.architecture.unwrap_or_default()
    );
    let resources = desc.resources.clone().unwrap_or_default();
    let memory = resources.memory_bytes.unwrap_or(0);
    s += &format!(
        "\nResources:\n CPUs:\t\t\t{}\n Memory:\t\t{}",
        resources.nano_cpus.unwrap_or(0) / 1_000_000_000,
        if memory == 0 {
            String::new()
        } else {
            bytes_size(memory as f64)
        }
    );
    let engine = desc.engine.clone().unwrap_or_default();
    let mut plugins: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for plugin in engine.plugins.clone().unwrap_or_default() {
        plugins
            .entry(plugin.typ.unwrap_or_default())
            .or_default()
            .push(plugin.name.unwrap_or_default());
    }
    if !plugins.is_empty() {
        s += "\nPlugins:";
        for (kind, names) in &plugins {
            s += &format!("\n {kind}:\t\t{}", names.join(", "));
        }
    }
    s += &format!(
        "\nEngine Version:\t\t{}",
        engine.engine_version.clone().unwrap_or_default()
    );
    let engine_labels: Option<HashMap<String, String>> = engine.labels.clone();
    push_labels(&mut s, "Engine Labels", engine_labels.as_ref());
    if let Some(tls) = desc.tls_info.as_ref() {
        let root = tls.trust_root.clone().unwrap_or_default();
        let subject = tls.cert_issuer_subject.clone().unwrap_or_default();
        let key = tls.cert_issuer_public_key.clone().unwrap_or_default();
        if !(root.is_empty() && subject.is_empty() && key.is_empty()) {
            s += &format!("\nTLS Info:\n TrustRoot:\n{root}\n Issuer Subject:\t{subject}\n Issuer Public Key:\t{key}");
        }
    }
    s
}

fn push_labels(s: &mut String, title: &str, labels: Option<&HashMap<String, String>>) {
    let Some(labels) = labels.filter(|l| !l.is_empty()) else {
        return;
    };
    *s += &format!("\n{title}:");
    let sorted: BTreeMap<_, _> = labels.iter().collect();
    for (k, v) in sorted {
        *s += &if v.is_empty() {
            format!("\n - {k}")
        } else {
            format!("\n - {k}={v}")
        };
    }
}

async fn update(client: &Client, args: UpdateArgs) -> Result<()> {
    let id = reference(client, &args.node).await?;
    let node: Node = client.get(&node_path(&id)).await?;
    let mut spec = node.spec.clone().unwrap_or_default();
    merge_update(&mut spec, &args)?;
    post_spec(client, &node, &spec).await?;
    out(&format!("{}\n", args.node));
    Ok(())
}

fn merge_update(spec: &mut NodeSpec, args: &UpdateArgs) -> Result<()> {
    if let Some(role) = &args.role {
        spec.role = Some(parse_enum(&role.to_lowercase(), "role")?);
    }
    if let Some(availability) = &args.availability {
        spec.availability = Some(parse_enum(&availability.to_lowercase(), "availability")?);
    }
    let labels = spec.labels.get_or_insert_with(HashMap::new);
    for pair in &args.label_add {
        let (k, v) = pair.split_once('=').unwrap_or((pair.as_str(), ""));
        labels.insert(k.to_string(), v.to_string());
    }
    for key in &args.label_rm {
        if labels.remove(key).is_none() {
            return Err(CliError::Other(format!(
                "key {key} doesn't exist in node's labels"
            )));
        }
    }
    Ok(())
}

fn parse_enum<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_value(Value::String(text.to_string()))
        .map_err(|_| CliError::Other(format!("invalid {what} \"{text}\"")))
}

async fn post_spec(client: &Client, node: &Node, spec: &NodeSpec) -> Result<()> {
    let id = node.id.clone().unwrap_or_default();
    let version = node.version.as_ref().and_then(|v| v.index).unwrap_or(0);
    let path = format!(
        "{}/update{}",
        node_path(&id),
        query(&[("version", version.to_string())])
    );
    client.post(&path, Some(spec)).await.map(|_| ())
}

async fn change_role(client: &Client, args: RoleArgs, role: &str) -> Result<()> {
    for name in &args.nodes {
        let id = reference(client, name).await?;
        let node: Node = client.get(&node_path(&id)).await?;
        let mut spec = node.spec.clone().unwrap_or_default();
        if enum_text(&spec.role) == role {
            out(&if role == "manager" {
                format!("Node {name} is already a manager.\n")
            } else {
                format!("Node {name} is already a worker.\n")
            });
            continue;
        }
        spec.role = Some(parse_enum(role, "role")?);
        post_spec(client, &node, &spec).await?;
        out(&if role == "manager" {
            format!("Node {name} promoted to a manager in the swarm.\n")
        } else {
            format!("Manager {name} demoted in the swarm.\n")
        });
    }
    Ok(())
}

async fn ps(client: &Client, args: PsArgs) -> Result<()> {
    let refs = if args.nodes.is_empty() {
        vec!["self".to_string()]
    } else {
        args.nodes.clone()
    };
    let base = parse_filters(&args.list.filter)?;
    let mut tasks: Vec<Task> = Vec::new();
    let mut errors = Vec::new();
    for name in &refs {
        match node_tasks(client, name, &base).await {
            Ok(found) => {
                for t in found {
                    if !tasks.iter().any(|seen| seen.id == t.id) {
                        tasks.push(t);
                    }
                }
            }
            Err(err) => errors.push(err.to_string()),
        }
    }
    if !tasks.is_empty() || errors.is_empty() {
        let how = TaskFormat {
            trunc: !args.list.no_trunc,
            quiet: args.list.quiet,
            format: args.list.format.clone(),
            resolve: !args.list.no_resolve,
        };
        task::print(client, tasks, &how).await?;
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Other(errors.join("\n")))
    }
}

async fn node_tasks(
    client: &Client,
    name: &str,
    base: &crate::client::Filters,
) -> Result<Vec<Task>> {
    let id = reference(client, name).await?;
    let node: Node = client.get(&node_path(&id)).await?;
    let mut filters = base.clone();
    add_filter(&mut filters, "node", &node.id.unwrap_or_default());
    let path = format!(
        "/tasks{}",
        query(&filters_pair(&filters).into_iter().collect::<Vec<_>>())
    );
    client.get(&path).await
}

async fn rm(client: &Client, args: RmArgs) -> Result<()> {
    let mut errors = Vec::new();
    for name in &args.nodes {
        let path = format!(
            "{}{}",
            node_path(name),
            if args.force { "?force=1" } else { "" }
        );
        match client.delete(&path).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, host: &str, leader: bool) -> Node {
        serde_json::from_value(json!({
            "ID": id,
            "Spec": {"Availability": "active", "Role": "manager"},
            "Description": {"Hostname": host, "Engine": {"EngineVersion": "20.10.24"}},
            "Status": {"State": "ready", "Addr": "127.0.0.1"},
            "ManagerStatus": if leader { json!({"Leader": true, "Reachability": "reachable", "Addr": "127.0.0.1:2377"}) } else { json!(null) }
        }))
        .unwrap()
    }

    #[test]
    fn ls_table_marks_self_and_leader() {
        let rows = vec![
            ls_row(&node("nodeid1", "manager1", true), "nodeid1", None),
            ls_row(&node("nodeid2", "worker1", false), "nodeid1", None),
        ];
        let out = render_list(DEFAULT_TABLE_FORMAT, &ls_header(), &rows).unwrap();
        let expected = "\
ID          HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION
nodeid1 *   manager1   Ready     Active         Leader           20.10.24
nodeid2     worker1    Ready     Active                          20.10.24
";
        assert_eq!(out, expected);
    }

    #[test]
    fn update_merges_flags() {
        let mut spec: NodeSpec = serde_json::from_value(
            json!({"Availability": "active", "Role": "worker", "Labels": {"a": "1"}}),
        )
        .unwrap();
        let args = UpdateArgs {
            availability: Some("drain".into()),
            label_add: vec!["b=2".into(), "c".into()],
            label_rm: vec!["a".into()],
            role: None,
            node: "n".into(),
        };
        merge_update(&mut spec, &args).unwrap();
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            json!({"Availability": "drain", "Role": "worker", "Labels": {"b": "2", "c": ""}})
        );
        let bad = UpdateArgs {
            availability: Some("sleep".into()),
            label_add: vec![],
            label_rm: vec![],
            role: None,
            node: "n".into(),
        };
        assert!(merge_update(&mut spec, &bad).is_err());
    }

    #[test]
    fn pretty_matches_docker_template() {
        let n: Node = serde_json::from_value(json!({
            "ID": "nodeid1", "CreatedAt": "2024-01-01T10:00:00.5Z",
            "Spec": {"Availability": "active", "Role": "manager", "Labels": {"zone": "a"}},
            "Description": {"Hostname": "host1", "Platform": {"Architecture": "x86_64", "OS": "linux"},
                "Resources": {"NanoCPUs": 2000000000, "MemoryBytes": 8261709824i64},
                "Engine": {"EngineVersion": "20.10.24", "Plugins": [{"Type": "Network", "Name": "bridge"}, {"Type": "Network", "Name": "host"}]}},
            "Status": {"State": "ready", "Addr": "127.0.0.1"},
            "ManagerStatus": {"Leader": true, "Reachability": "reachable", "Addr": "127.0.0.1:2377"}
        })).unwrap();
        let expected = "ID:\t\t\tnodeid1\nLabels:\n - zone=a\nHostname:              \thost1\nJoined at:             \t2024-01-01 10:00:00.5 +0000 utc\nStatus:\n State:\t\t\tReady\n Availability:         \tActive\n Address:\t\t127.0.0.1\nManager Status:\n Address:\t\t127.0.0.1:2377\n Raft Status:\t\tReachable\n Leader:\t\tYes\nPlatform:\n Operating System:\tlinux\n Architecture:\t\tx86_64\nResources:\n CPUs:\t\t\t2\n Memory:\t\t7.694GiB\nPlugins:\n Network:\t\tbridge, host\nEngine Version:\t\t20.10.24";
        assert_eq!(pretty(&n), expected);
    }
}
