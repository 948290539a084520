//! `service inspect`: raw JSON, a `--format` template, or docker's
//! serviceInspectPrettyTemplate written out field by field.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{Service, TaskSpecContainerSpec};
use clap::Args;
use serde_json::Value;

use crate::client::{CliError, Client, Result};
use crate::format::duration::{format_go_duration, human_duration, since};
use crate::format::enum_text;
use crate::format::template::go_string;
use crate::format::units::bytes_size;
use crate::out;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short, long, value_name = "string")]
    format: Option<String>,
    /// Print the information in a human friendly format
    #[arg(long)]
    pretty: bool,
    #[arg(value_name = "SERVICE", required = true)]
    services: Vec<String>,
}

pub async fn run(client: &Client, args: InspectArgs) -> Result<()> {
    if args.pretty && args.format.as_deref().is_some_and(|f| !f.is_empty()) {
        return Err("--format is incompatible with human friendly format".into());
    }
    let mut services = Vec::new();
    let mut errors = Vec::new();
    for name in &args.services {
        match super::get_service(client, name, true).await {
            Ok(found) => services.push(found),
            Err(err) => {
                let err = if err.is_not_found() {
                    CliError::Other(format!("Error: no such service: {name}"))
                } else {
                    err
                };
                // --pretty prints nothing unless every service is found.
                if args.pretty {
                    return Err(err);
                }
                errors.push(err.to_string());
            }
        }
    }
    if args.pretty {
        let mut text = String::new();
        for (service, raw) in &services {
            let names = network_names(client, service).await;
            text += &(pretty(service, raw, &names) + "\n");
        }
        out(&text);
        return Ok(());
    }
    let raws: Vec<bytes::Bytes> = services.into_iter().map(|(_, raw)| raw).collect();
    crate::node::print_inspect(&raws, args.format.as_deref(), errors)
}

/// docker's resolveNetworks: network ID to name for the service's
/// attachments, looked up as swarm networks; one that cannot be read is
/// left out (and shown by its target).
async fn network_names(client: &Client, service: &Service) -> HashMap<String, String> {
    let targets = service
        .spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.networks.clone())
        .unwrap_or_default();
    let mut names = HashMap::new();
    for target in targets.into_iter().filter_map(|n| n.target) {
        if let Some((id, name)) = crate::network::swarm_network(client, &target).await {
            names.insert(id, name);
        }
    }
    names
}

/// docker's serviceInspectPrettyTemplate for one service (`raw` supplies
/// fields bollard spells differently from Docker, e.g. Healthcheck;
/// `network_names` maps network IDs to the names shown).
pub fn pretty(service: &Service, raw: &[u8], network_names: &HashMap<String, String>) -> String {
    let spec = service.spec.clone().unwrap_or_default();
    let task = spec.task_template.clone().unwrap_or_default();
    let container = task.container_spec.clone().unwrap_or_default();
    let mut s = format!(
        "\nID:\t\t{}\nName:\t\t{}",
        service.id.clone().unwrap_or_default(),
        spec.name.clone().unwrap_or_default()
    );
    if let Some(labels) = spec.labels.as_ref().filter(|l| !l.is_empty()) {
        s += "\nLabels:";
        for (k, v) in labels.iter().collect::<BTreeMap<_, _>>() {
            s += &if v.is_empty() {
                format!("\n {k}")
            } else {
                format!("\n {k}={v}")
            };
        }
    }
    s += &mode_section(&spec);
    s += &update_status_section(service);
    s += &placement_section(&task.placement.clone().unwrap_or_default());
    s += &policy_section(
        "UpdateConfig",
        "Update order:      ",
        spec.update_config
            .as_ref()
            .map(|c| serde_json::to_value(c).unwrap_or_default()),
    );
    s += &policy_section(
        "RollbackConfig",
        "Rollback order:    ",
        spec.rollback_config
            .as_ref()
            .map(|c| serde_json::to_value(c).unwrap_or_default()),
    );
    s += &container_section(&container);
    s += &log_driver_section(&task);
    s += &resources_section(&task);
    s += &network_section(service, &spec, network_names);
    s += &health_section(raw);
    s.push('\n');
    s
}

fn mode_section(spec: &bollard::models::ServiceSpec) -> String {
    let mode = spec.mode.clone().unwrap_or_default();
    let mut s = "\nService Mode:".to_string();
    if mode.global.is_some() {
        s += "\tGlobal";
    } else if let Some(replicated) = &mode.replicated {
        s += "\tReplicated";
        if let Some(replicas) = replicated.replicas {
            s += &format!("\n Replicas:\t{replicas}");
        }
    }
    s
}

fn update_status_section(service: &Service) -> String {
    let Some(status) = &service.update_status else {
        return String::new();
    };
    let state = enum_text(&status.state);
    if state.is_empty() {
        return String::new();
    }
    // docker's template prints the bare duration since each time, no "ago".
    let elapsed = |date: &Option<String>| date.as_deref().map(|d| human_duration(since(d)));
    let started = elapsed(&crate::client::date_text(&status.started_at));
    let completed = elapsed(&crate::client::date_text(&status.completed_at));
    let mut s = format!("\nUpdateStatus:\n State:\t\t{state}");
    if let Some(started) = started {
        s += &format!("\n Started:\t{started}");
    }
    if let (true, Some(completed)) = (state == "completed", completed) {
        s += &format!("\n Completed:\t{completed}");
    }
    s += &format!(
        "\n Message:\t{}",
        status.message.clone().unwrap_or_default()
    );
    s
}

fn placement_section(placement: &bollard::models::TaskSpecPlacement) -> String {
    let mut s = "\nPlacement:".to_string();
    if let Some(constraints) = placement.constraints.as_ref().filter(|c| !c.is_empty()) {
        s += &format!("\n Constraints:\t[{}]", constraints.join(" "));
    }
    let prefs: Vec<String> = placement
        .preferences
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.spread.and_then(|s| s.spread_descriptor))
        .map(|d| format!("spread={d}"))
        .collect();
    if !prefs.is_empty() {
        s += &format!("\n Preferences:   [{}]", prefs.join(" "));
    }
    if let Some(max) = placement.max_replicas.filter(|m| *m > 0) {
        s += &format!("\n Max Replicas Per Node:   {max}");
    }
    s
}

/// UpdateConfig and RollbackConfig share one layout.
fn policy_section(title: &str, order_label: &str, config: Option<Value>) -> String {
    let Some(config) = config else {
        return String::new();
    };
    let nanos = |key: &str| config[key].as_i64().unwrap_or(0);
    let text = |key: &str| config[key].as_str().unwrap_or_default().to_string();
    let mut s = format!(
        "\n{title}:\n Parallelism:\t{}",
        config["Parallelism"].as_i64().unwrap_or(0)
    );
    if nanos("Delay") > 0 {
        s += &format!("\n Delay:\t\t{}", format_go_duration(nanos("Delay")));
    }
    s += &format!("\n On failure:\t{}", text("FailureAction"));
    if nanos("Monitor") > 0 {
        s += &format!(
            "\n Monitoring Period: {}",
            format_go_duration(nanos("Monitor"))
        );
    }
    let ratio = config["MaxFailureRatio"].as_f64().unwrap_or(0.0);
    s += &format!(
        "\n Max failure ratio: {}\n {order_label}{}",
        ratio as f32,
        text("Order")
    );
    s
}

fn container_section(c: &TaskSpecContainerSpec) -> String {
    let mut s = format!(
        "\nContainerSpec:\n Image:\t\t{}",
        c.image.clone().unwrap_or_default()
    );
    if let Some(args) = c.args.as_ref().filter(|a| !a.is_empty()) {
        s += &format!(
            "\n Args:\t\t{}",
            args.iter().map(|a| format!("{a} ")).collect::<String>()
        );
    }
    if let Some(env) = c.env.as_ref().filter(|e| !e.is_empty()) {
        s += &format!(
            "\n Env:\t\t{}",
            env.iter().map(|e| format!("{e} ")).collect::<String>()
        );
    }
    if let Some(dir) = c.dir.as_ref().filter(|d| !d.is_empty()) {
        s += &format!("\n Dir:\t\t{dir}");
    }
    if let Some(init) = c.init {
        s += &format!("\n Init:\t\t{init}");
    }
    if let Some(user) = c.user.as_ref().filter(|u| !u.is_empty()) {
        s += &format!("\n User: {user}");
    }
    let add = c.capability_add.clone().unwrap_or_default();
    let drop = c.capability_drop.clone().unwrap_or_default();
    if !add.is_empty() || !drop.is_empty() {
        s += "\nCapabilities:";
        if !add.is_empty() {
            s += &format!("\n Add: {}", add.join(", "));
        }
        if !drop.is_empty() {
            s += &format!("\n Drop: {}", drop.join(", "));
        }
    }
    if let Some(sysctls) = c.sysctls.as_ref().filter(|m| !m.is_empty()) {
        s += "\nSysCtls:";
        for (k, v) in sysctls.iter().collect::<BTreeMap<_, _>>() {
            s += &if v.is_empty() {
                format!("\n {k}")
            } else {
                format!("\n {k}: {v}")
            };
        }
    }
    if let Some(ulimits) = c.ulimits.as_ref().filter(|u| !u.is_empty()) {
        s += "\nUlimits:";
        let sorted: BTreeMap<String, String> = ulimits
            .iter()
            .map(|u| {
                (
                    u.name.clone().unwrap_or_default(),
                    format!("{}:{}", u.soft.unwrap_or(0), u.hard.unwrap_or(0)),
                )
            })
            .collect();
        for (name, value) in sorted {
            s += &format!("\n {name}: {value}");
        }
    }
    s += &host_options_section(c);
    let mounts = c.mounts.clone().unwrap_or_default();
    if !mounts.is_empty() {
        s += "\nMounts:";
    }
    for m in mounts {
        s += &format!(
            "\n Target:\t{}\n  Source:\t{}\n  ReadOnly:\t{}\n  Type:\t\t{}",
            m.target.unwrap_or_default(),
            m.source.unwrap_or_default(),
            m.read_only.unwrap_or(false),
            enum_text(&m.typ)
        );
    }
    s + &configs_and_secrets_section(c)
}

/// The template's Configs and Secrets lists, configs first, each reference
/// as its file's name and its config's or secret's name. (A runtime config
/// reference, which has no file, stops docker's template with a nil
/// pointer error; here it shows an empty target.)
/// Flotilla's own lines, only for a service that has these options (the
/// reserved labels and the Privileges docker's template does not show).
fn host_options_section(c: &TaskSpecContainerSpec) -> String {
    use super::hostopts::{
        APPARMOR_PROFILE_LABEL, DEVICES_LABEL, PRIVILEGED_LABEL, SHM_SIZE_LABEL,
    };
    let labels = c.labels.clone().unwrap_or_default();
    let mut s = String::new();
    if labels.get(PRIVILEGED_LABEL).is_some_and(|v| v == "true") {
        s += "\nPrivileged:\ttrue";
    }
    if let Some(devices) = labels.get(DEVICES_LABEL).filter(|d| !d.is_empty()) {
        s += "\nDevices:";
        for device in devices.split(',') {
            s += &format!("\n {device}");
        }
    }
    if let Some(bytes) = labels
        .get(SHM_SIZE_LABEL)
        .and_then(|b| b.parse::<f64>().ok())
    {
        s += &format!("\nShm Size:\t{}", bytes_size(bytes));
    }
    let mut security = Vec::new();
    if let Some(p) = &c.privileges {
        use bollard::models::TaskSpecContainerSpecPrivilegesAppArmorModeEnum as AppArmor;
        use bollard::models::TaskSpecContainerSpecPrivilegesSeccompModeEnum as Seccomp;
        match p.seccomp.as_ref().and_then(|s| s.mode) {
            Some(Seccomp::UNCONFINED) => security.push("seccomp=unconfined".to_string()),
            Some(Seccomp::CUSTOM) => security.push("seccomp=<custom profile>".to_string()),
            _ => {}
        }
        if p.app_armor.as_ref().and_then(|a| a.mode) == Some(AppArmor::DISABLED) {
            security.push("apparmor=unconfined".to_string());
        }
        if p.no_new_privileges == Some(true) {
            security.push("no-new-privileges".to_string());
        }
        if let Some(l) = &p.se_linux_context {
            if l.disable == Some(true) {
                security.push("label=disable".to_string());
            }
            for (key, value) in [
                ("user", &l.user),
                ("role", &l.role),
                ("type", &l.typ),
                ("level", &l.level),
            ] {
                if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                    security.push(format!("label={key}:{v}"));
                }
            }
        }
    }
    if let Some(profile) = labels.get(APPARMOR_PROFILE_LABEL) {
        security.push(format!("apparmor={profile}"));
    }
    if !security.is_empty() {
        s += "\nSecurity Options:";
        for opt in security {
            s += &format!("\n {opt}");
        }
    }
    s
}

fn configs_and_secrets_section(c: &TaskSpecContainerSpec) -> String {
    let mut s = String::new();
    let entry = |target: Option<&String>, source: &Option<String>| {
        format!(
            "\n Target:\t{}\n  Source:\t{}",
            target.map(String::as_str).unwrap_or_default(),
            source.as_deref().unwrap_or_default()
        )
    };
    if let Some(configs) = c.configs.as_ref().filter(|c| !c.is_empty()) {
        s += "\nConfigs:";
        for config in configs {
            let target = config.file.as_ref().and_then(|f| f.name.as_ref());
            s += &entry(target, &config.config_name);
        }
    }
    if let Some(secrets) = c.secrets.as_ref().filter(|s| !s.is_empty()) {
        s += "\nSecrets:";
        for secret in secrets {
            let target = secret.file.as_ref().and_then(|f| f.name.as_ref());
            s += &entry(target, &secret.secret_name);
        }
    }
    s
}

fn log_driver_section(task: &bollard::models::TaskSpec) -> String {
    let Some(driver) = &task.log_driver else {
        return String::new();
    };
    let mut s = "\nLog Driver:".to_string();
    if let Some(name) = driver.name.as_ref().filter(|n| !n.is_empty()) {
        s += &format!("\n Name:\t\t{name}");
    }
    if let Some(options) = driver.options.as_ref().filter(|o| !o.is_empty()) {
        s += "\n LogOpts:";
        for (k, v) in options.iter().collect::<BTreeMap<_, _>>() {
            s += &if v.is_empty() {
                format!("\n  {k}")
            } else {
                format!("\n  {k}:       {v}")
            };
        }
    }
    s + "\n"
}

fn resources_section(task: &bollard::models::TaskSpec) -> String {
    let Some(resources) = &task.resources else {
        return String::new();
    };
    let mut s = "\nResources:".to_string();
    let reservations = resources.reservations.clone().unwrap_or_default();
    let (r_cpu, r_mem) = (
        reservations.nano_cpus.unwrap_or(0),
        reservations.memory_bytes.unwrap_or(0),
    );
    if r_cpu > 0 || r_mem > 0 {
        s += "\n Reservations:";
        if r_cpu > 0 {
            s += &format!("\n  CPU:\t\t{}", r_cpu as f64 / 1e9);
        }
        if r_mem > 0 {
            s += &format!("\n  Memory:\t{}", bytes_size(r_mem as f64));
        }
    }
    let limits = resources.limits.clone().unwrap_or_default();
    let (l_cpu, l_mem, pids) = (
        limits.nano_cpus.unwrap_or(0),
        limits.memory_bytes.unwrap_or(0),
        limits.pids.unwrap_or(0),
    );
    if l_cpu > 0 || l_mem > 0 || pids > 0 {
        s += "\n Limits:";
        if l_cpu > 0 {
            s += &format!("\n  CPU:\t\t{}", l_cpu as f64 / 1e9);
        }
        if l_mem > 0 {
            s += &format!("\n  Memory:\t{}", bytes_size(l_mem as f64));
        }
    }
    if pids > 0 {
        s += &format!("\n  PIDs:\t\t{pids}");
    }
    s
}

fn network_section(
    service: &Service,
    spec: &bollard::models::ServiceSpec,
    network_names: &HashMap<String, String>,
) -> String {
    let mut s = String::new();
    let networks = spec
        .task_template
        .as_ref()
        .and_then(|t| t.networks.clone())
        .unwrap_or_default();
    if !networks.is_empty() {
        s += "\nNetworks:";
        for network in networks {
            let target = network.target.unwrap_or_default();
            let shown = network_names.get(&target).unwrap_or(&target);
            s += &format!(" {shown}");
        }
        s += " ";
    }
    let mode = spec
        .endpoint_spec
        .as_ref()
        .map(|e| enum_text(&e.mode))
        .unwrap_or_default();
    s += &format!("\nEndpoint Mode:\t{mode}");
    let ports = service
        .endpoint
        .as_ref()
        .and_then(|e| e.ports.clone())
        .unwrap_or_default();
    if !ports.is_empty() {
        s += "\nPorts:";
        for p in ports {
            s += &format!(
                "\n PublishedPort = {}\n  Protocol = {}\n  TargetPort = {}\n  PublishMode = {}",
                p.published_port.unwrap_or(0),
                enum_text(&p.protocol),
                p.target_port.unwrap_or(0),
                enum_text(&p.publish_mode)
            );
        }
        s += " ";
    }
    s
}

/// Read from the raw JSON: Docker says "Healthcheck", bollard "HealthCheck".
fn health_section(raw: &[u8]) -> String {
    let value: Value = serde_json::from_slice(raw).unwrap_or_default();
    let container = &value["Spec"]["TaskTemplate"]["ContainerSpec"];
    let health = if container["Healthcheck"].is_object() {
        &container["Healthcheck"]
    } else {
        &container["HealthCheck"]
    };
    if !health.is_object() {
        return String::new();
    }
    let duration = |key: &str| format_go_duration(health[key].as_i64().unwrap_or(0));
    let mut s = format!(
        "\n Healthcheck:\n  Interval = {}\n  Retries = {}\n  StartPeriod =\t{}\n  Timeout =\t{}",
        duration("Interval"),
        health["Retries"].as_i64().unwrap_or(0),
        duration("StartPeriod"),
        duration("Timeout")
    );
    if let Some(tests) = health["Test"].as_array().filter(|t| !t.is_empty()) {
        s += "\n  Tests:";
        for test in tests {
            s += &format!("\n\t Test = {}", go_string(test));
        }
        s += " ";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pretty_like_docker_for_a_cli_created_service() {
        let raw = json!({
            "ID": "9uk4639qpg7npwf3fn2aasksr",
            "Spec": {
                "Name": "helloworld",
                "Labels": {},
                "TaskTemplate": {
                    "ContainerSpec": {"Image": "alpine", "Args": ["ping", "docker.com"], "Init": false},
                    "Resources": {"Limits": {}, "Reservations": {}},
                    "Placement": {}
                },
                "Mode": {"Replicated": {"Replicas": 1}},
                "UpdateConfig": {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5000000000i64, "MaxFailureRatio": 0, "Order": "stop-first"},
                "RollbackConfig": {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5000000000i64, "MaxFailureRatio": 0, "Order": "stop-first"},
                "EndpointSpec": {"Mode": "vip"}
            },
            "Endpoint": {"Spec": {}}
        });
        let bytes = serde_json::to_vec(&raw).unwrap();
        let service: Service = serde_json::from_slice(&bytes).unwrap();
        let expected = "
ID:\t\t9uk4639qpg7npwf3fn2aasksr
Name:\t\thelloworld
Service Mode:\tReplicated
 Replicas:\t1
Placement:
UpdateConfig:
 Parallelism:\t1
 On failure:\tpause
 Monitoring Period: 5s
 Max failure ratio: 0
 Update order:      stop-first
RollbackConfig:
 Parallelism:\t1
 On failure:\tpause
 Monitoring Period: 5s
 Max failure ratio: 0
 Rollback order:    stop-first
ContainerSpec:
 Image:\t\talpine
 Args:\t\tping docker.com 
 Init:\t\tfalse
Resources:
Endpoint Mode:\tvip
";
        assert_eq!(pretty(&service, &bytes, &HashMap::new()), expected);
    }

    #[test]
    fn pretty_lists_configs_then_secrets_after_the_mounts() {
        let raw = json!({
            "ID": "4mkjq7r0a1kb3bzvy6dsbbksn",
            "Spec": {
                "Name": "web",
                "TaskTemplate": {
                    "ContainerSpec": {
                        "Image": "nginx:alpine",
                        "Init": false,
                        "Mounts": [{"Type": "volume", "Source": "data", "Target": "/data"}],
                        "Secrets": [
                            {"File": {"Name": "db_password", "UID": "0", "GID": "0", "Mode": 292}, "SecretID": "s1", "SecretName": "db_password"},
                            {"File": {"Name": "/run/api", "UID": "33", "GID": "33", "Mode": 256}, "SecretID": "s2", "SecretName": "api_key"}
                        ],
                        "Configs": [
                            {"File": {"Name": "/etc/nginx/nginx.conf", "UID": "0", "GID": "0", "Mode": 292}, "ConfigID": "c1", "ConfigName": "nginx_conf"}
                        ]
                    },
                    "Placement": {},
                    "LogDriver": {"Name": "json-file"}
                },
                "Mode": {"Replicated": {"Replicas": 2}},
                "EndpointSpec": {"Mode": "vip"}
            }
        });
        let bytes = serde_json::to_vec(&raw).unwrap();
        let service: Service = serde_json::from_slice(&bytes).unwrap();
        let expected = "
ID:\t\t4mkjq7r0a1kb3bzvy6dsbbksn
Name:\t\tweb
Service Mode:\tReplicated
 Replicas:\t2
Placement:
ContainerSpec:
 Image:\t\tnginx:alpine
 Init:\t\tfalse
Mounts:
 Target:\t/data
  Source:\tdata
  ReadOnly:\tfalse
  Type:\t\tvolume
Configs:
 Target:\t/etc/nginx/nginx.conf
  Source:\tnginx_conf
Secrets:
 Target:\tdb_password
  Source:\tdb_password
 Target:\t/run/api
  Source:\tapi_key
Log Driver:
 Name:\t\tjson-file

Endpoint Mode:\tvip
";
        assert_eq!(pretty(&service, &bytes, &HashMap::new()), expected);
        // Only the lists there are.
        let container: TaskSpecContainerSpec = serde_json::from_value(json!({
            "Secrets": [{"File": {"Name": "t"}, "SecretName": "s"}], "Configs": []
        }))
        .unwrap();
        assert_eq!(
            configs_and_secrets_section(&container),
            "\nSecrets:\n Target:\tt\n  Source:\ts"
        );
        assert_eq!(
            configs_and_secrets_section(&TaskSpecContainerSpec::default()),
            ""
        );
    }

    #[test]
    fn networks_show_by_name() {
        let raw = json!({
            "ID": "x",
            "Spec": {"Name": "web", "TaskTemplate": {"Networks": [{"Target": "id1"}, {"Target": "id2"}]},
                "EndpointSpec": {"Mode": "vip"}}
        });
        let service: Service = serde_json::from_value(raw).unwrap();
        let spec = service.spec.clone().unwrap();
        let names = HashMap::from([("id1".to_string(), "front".to_string())]);
        assert_eq!(
            network_section(&service, &spec, &names),
            "\nNetworks: front id2 \nEndpoint Mode:\tvip"
        );
    }

    #[test]
    fn update_status_like_docker() {
        let started = time_from_now(-125);
        let raw = json!({
            "ID": "x",
            "UpdateStatus": {"State": "paused", "StartedAt": started, "CompletedAt": started,
                "Message": "update paused due to failure or early termination of task abc"}
        });
        let service: Service = serde_json::from_value(raw).unwrap();
        assert_eq!(
            update_status_section(&service),
            "\nUpdateStatus:\n State:\t\tpaused\n Started:\t2 minutes\n Message:\tupdate paused due to failure or early termination of task abc"
        );
        let raw = json!({"ID": "x", "UpdateStatus": {"State": "completed", "StartedAt": started,
            "CompletedAt": time_from_now(-3), "Message": "update completed"}});
        let service: Service = serde_json::from_value(raw).unwrap();
        assert_eq!(
            update_status_section(&service),
            "\nUpdateStatus:\n State:\t\tcompleted\n Started:\t2 minutes\n Completed:\t3 seconds\n Message:\tupdate completed"
        );
        let raw = json!({"ID": "x", "UpdateStatus": {"State": "rollback_started", "StartedAt": started,
            "Message": "manually requested rollback"}});
        let service: Service = serde_json::from_value(raw).unwrap();
        assert_eq!(
            update_status_section(&service),
            "\nUpdateStatus:\n State:\t\trollback_started\n Started:\t2 minutes\n Message:\tmanually requested rollback"
        );
    }

    /// An RFC 3339 time `secs` from now.
    fn time_from_now(secs: i64) -> String {
        (chrono::Utc::now() + chrono::Duration::seconds(secs))
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    }

    #[test]
    fn pretty_names_the_options_swarm_lacks() {
        let c: TaskSpecContainerSpec = serde_json::from_value(json!({
            "Image": "busybox",
            "Labels": {
                "com.flotilla.privileged": "true",
                "com.flotilla.devices": "/dev/fuse:/dev/fuse:rwm,/dev/null:/dev/mydev:r",
                "com.flotilla.shm-size": "67108864",
            },
            "Privileges": {"Seccomp": {"Mode": "unconfined"}, "NoNewPrivileges": true},
        }))
        .unwrap();
        assert_eq!(
            host_options_section(&c),
            "\nPrivileged:\ttrue\nDevices:\n /dev/fuse:/dev/fuse:rwm\n /dev/null:/dev/mydev:r\nShm Size:\t64MiB\nSecurity Options:\n seccomp=unconfined\n no-new-privileges"
        );
        assert_eq!(host_options_section(&TaskSpecContainerSpec::default()), "");
    }
}
