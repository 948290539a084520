//! Compose types to Engine API bodies, as docker/cli's cli/compose/convert
//! (compose.go, service.go, volume.go) builds them: the same names
//! (`STACK_name`), labels (`com.docker.stack.namespace`,
//! `com.docker.stack.image`) and JSON, field for field with Go's
//! `omitempty` rules, so the daemon receives what `docker stack deploy`
//! would send.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use compose_spec::service::deploy::resources::Resources;
use compose_spec::service::deploy::{Deploy, UpdateOrRollbackConfig};
use compose_spec::service::healthcheck::{Healthcheck, Test};
use compose_spec::service::volumes::mount::Mount;
use compose_spec::service::{Command, Limit};
use compose_spec::{Compose, Extensions, ListOrMap, Resource, Service, ShortOrLong};
use serde_json::{json, Map, Value};

use super::loader::{X_INIT, X_MAX_FAILURE_RATIO, X_MODE, X_NAME, X_TEMPLATE_DRIVER};

pub const LABEL_NAMESPACE: &str = "com.docker.stack.namespace";
pub const LABEL_IMAGE: &str = "com.docker.stack.image";
const DEFAULT_NETWORK: &str = "default";

/// docker's convert.Namespace.
#[derive(Clone, Debug)]
pub struct Namespace(pub String);

impl Namespace {
    pub fn scope(&self, name: &str) -> String {
        format!("{}_{name}", self.0)
    }

    pub fn descope<'a>(&self, name: &'a str) -> &'a str {
        name.strip_prefix(&format!("{}_", self.0)).unwrap_or(name)
    }
}

/// A secret or config to create, by name.
#[derive(Debug, Clone)]
pub struct FileObject {
    pub name: String,
    pub spec: Value,
}

/// Everything `stack deploy` creates, converted before anything is sent.
#[derive(Debug)]
pub struct Converted {
    /// Networks to create: name -> create body (without the driver default).
    pub networks: BTreeMap<String, Value>,
    /// Names of the external networks the services use.
    pub external_networks: Vec<String>,
    /// Names of the external secrets and configs the services use.
    pub external_secrets: Vec<String>,
    pub external_configs: Vec<String>,
    pub secrets: Vec<FileObject>,
    pub configs: Vec<FileObject>,
    /// Service specs by the compose service name; secret and config
    /// references carry names, their IDs are filled in at deploy.
    pub services: BTreeMap<String, Value>,
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn ext<'a>(extensions: &'a Extensions, key: &str) -> Option<&'a serde_yaml::Value> {
    extensions
        .iter()
        .find(|(k, _)| k.as_str() == key)
        .map(|(_, v)| v)
}

fn ext_str(extensions: &Extensions, key: &str) -> Option<String> {
    ext(extensions, key).and_then(|v| v.as_str().map(str::to_string))
}

/// A ListOrMap as docker's Labels / Mapping: KEY=VALUE entries, a bare key
/// mapping to "".
fn string_map(list: &ListOrMap) -> BTreeMap<String, String> {
    match list {
        ListOrMap::List(items) => items
            .iter()
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (item.clone(), String::new()),
            })
            .collect(),
        ListOrMap::Map(map) => map
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    v.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                )
            })
            .collect(),
    }
}

fn stack_labels(ns: &Namespace, labels: BTreeMap<String, String>) -> Value {
    let mut labels = labels;
    labels.insert(LABEL_NAMESPACE.to_string(), ns.0.clone());
    json!(labels)
}

fn nanos(d: &std::time::Duration) -> i64 {
    d.as_nanos().min(i64::MAX as u128) as i64
}

/// Inserts a value unless it is what Go's omitempty leaves out.
fn put(map: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    };
    if !empty {
        map.insert(key.to_string(), value);
    }
}

/// The networks the services attach to (docker's getServicesDeclaredNetworks).
fn declared_networks(compose: &Compose) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for service in compose.services.values() {
        let attached = service_network_names(service);
        if attached.is_empty() {
            names.insert(DEFAULT_NETWORK.to_string());
        }
        names.extend(attached);
    }
    names
}

fn service_network_names(service: &Service) -> Vec<String> {
    use compose_spec::service::NetworkConfig;
    match &service.network_config {
        Some(NetworkConfig::Networks(ShortOrLong::Short(names))) => {
            names.iter().map(|n| n.to_string()).collect()
        }
        Some(NetworkConfig::Networks(ShortOrLong::Long(map))) => {
            map.keys().map(|n| n.to_string()).collect()
        }
        _ => Vec::new(),
    }
}

/// The whole stack.
pub fn convert(ns: &Namespace, compose: &Compose, lookup: Lookup) -> Result<Converted, String> {
    let (networks, external_networks) = networks(ns, compose)?;
    let secrets = file_objects(ns, compose, true, lookup)?;
    let configs = file_objects(ns, compose, false, lookup)?;
    let mut external_secrets = BTreeSet::new();
    let mut external_configs = BTreeSet::new();
    let mut services = BTreeMap::new();
    for (name, service) in &compose.services {
        let name = name.to_string();
        let spec = service_spec(ns, &name, service, compose)
            .map_err(|e| format!("service {name}: {e}"))?;
        for (list, out) in [
            (
                &spec["TaskTemplate"]["ContainerSpec"]["Secrets"],
                &mut external_secrets,
            ),
            (
                &spec["TaskTemplate"]["ContainerSpec"]["Configs"],
                &mut external_configs,
            ),
        ] {
            for item in list.as_array().into_iter().flatten() {
                let key = if item.get("SecretName").is_some() {
                    "SecretName"
                } else {
                    "ConfigName"
                };
                out.insert(item[key].as_str().unwrap_or_default().to_string());
            }
        }
        services.insert(name, spec);
    }
    // Referenced objects the stack creates itself are not external.
    for s in &secrets {
        external_secrets.remove(&s.name);
    }
    for c in &configs {
        external_configs.remove(&c.name);
    }
    Ok(Converted {
        networks,
        external_networks,
        external_secrets: external_secrets.into_iter().collect(),
        external_configs: external_configs.into_iter().collect(),
        secrets,
        configs,
        services,
    })
}

/// docker's convert.Networks.
fn networks(
    ns: &Namespace,
    compose: &Compose,
) -> Result<(BTreeMap<String, Value>, Vec<String>), String> {
    let mut result = BTreeMap::new();
    let mut external = Vec::new();
    for name in declared_networks(compose) {
        let config = compose
            .networks
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .and_then(|(_, v)| v.as_ref());
        match config {
            Some(Resource::External { name: custom }) => {
                external.push(custom.clone().unwrap_or(name));
            }
            Some(Resource::Compose(network)) => {
                let mut ipam = None;
                if let Some(config) = &network.ipam {
                    if config.driver.is_some() || !config.config.is_empty() {
                        let configs: Vec<Value> = config
                            .config
                            .iter()
                            .map(|c| {
                                let mut m = Map::new();
                                put(
                                    &mut m,
                                    "Subnet",
                                    json!(c.subnet.map(|s| s.to_string()).unwrap_or_default()),
                                );
                                Value::Object(m)
                            })
                            .collect();
                        ipam = Some(json!({
                            "Driver": config.driver.clone().unwrap_or_default(),
                            "Options": null,
                            "Config": if configs.is_empty() { Value::Null } else { json!(configs) },
                        }));
                    }
                }
                let options: BTreeMap<String, String> = network
                    .driver_opts
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let body = json!({
                    "Driver": network.driver.as_ref().map(|d| d.to_string()).unwrap_or_default(),
                    "Scope": "",
                    "IPAM": ipam,
                    "Internal": network.internal,
                    "Attachable": network.attachable,
                    "Ingress": false,
                    "ConfigOnly": false,
                    "ConfigFrom": null,
                    "Options": if options.is_empty() { Value::Null } else { json!(options) },
                    "Labels": stack_labels(ns, string_map(&network.labels)),
                });
                let target = network.name.clone().unwrap_or_else(|| ns.scope(&name));
                result.insert(target, body);
            }
            None => {
                let body = json!({
                    "Driver": "", "Scope": "", "IPAM": null, "Internal": false,
                    "Attachable": false, "Ingress": false, "ConfigOnly": false,
                    "ConfigFrom": null, "Options": null,
                    "Labels": stack_labels(ns, BTreeMap::new()),
                });
                result.insert(ns.scope(&name), body);
            }
        }
    }
    Ok((result, external))
}

/// docker's convert.Secrets / convert.Configs: the objects the stack owns.
fn file_objects(
    ns: &Namespace,
    compose: &Compose,
    secrets: bool,
    lookup: Lookup,
) -> Result<Vec<FileObject>, String> {
    let mut out = Vec::new();
    let items: Vec<(String, Option<ObjectParts>)> = if secrets {
        compose
            .secrets
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    v.as_compose().map(|s| {
                        (
                            match &s.source {
                                compose_spec::secret::Source::File(p) => {
                                    ObjectSource::File(p.clone())
                                }
                                compose_spec::secret::Source::Environment(e) => {
                                    ObjectSource::Env(e.clone())
                                }
                            },
                            s.labels.clone(),
                            s.driver.clone(),
                            s.driver_opts
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .collect(),
                            s.extensions.clone(),
                        )
                    }),
                )
            })
            .collect()
    } else {
        compose
            .configs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    v.as_compose().map(|c| {
                        (
                            match &c.source {
                                compose_spec::config::Source::File(p) => {
                                    ObjectSource::File(p.clone())
                                }
                                compose_spec::config::Source::Environment(e) => {
                                    ObjectSource::Env(e.clone())
                                }
                                compose_spec::config::Source::Content(text) => {
                                    ObjectSource::Content(text.clone())
                                }
                            },
                            c.labels.clone(),
                            None,
                            Vec::new(),
                            c.extensions.clone(),
                        )
                    }),
                )
            })
            .collect()
    };
    for (key, item) in items {
        let Some((source, labels, driver, driver_opts, extensions)) = item else {
            continue;
        };
        let name = ext_str(&extensions, X_NAME).unwrap_or_else(|| ns.scope(&key));
        let data: Vec<u8> = if driver.is_some() {
            Vec::new()
        } else {
            match source {
                ObjectSource::File(path) => std::fs::read(&path)
                    .map_err(|e| format!("open {}: {}", path.display(), io_text(&e)))?,
                ObjectSource::Env(var) => lookup(&var).unwrap_or_default().into_bytes(),
                ObjectSource::Content(text) => text.into_bytes(),
            }
        };
        let mut spec = Map::new();
        spec.insert("Name".into(), json!(name));
        spec.insert("Labels".into(), stack_labels(ns, string_map(&labels)));
        if !data.is_empty() {
            spec.insert("Data".into(), json!(base64(&data)));
        }
        if let Some(driver) = driver {
            let mut d = Map::new();
            put(&mut d, "Name", json!(driver));
            let opts: BTreeMap<String, String> = driver_opts.into_iter().collect();
            put(&mut d, "Options", json!(opts));
            spec.insert("Driver".into(), Value::Object(d));
        }
        if let Some(templating) = ext_str(&extensions, X_TEMPLATE_DRIVER) {
            spec.insert("Templating".into(), json!({"Name": templating}));
        }
        out.push(FileObject {
            name,
            spec: Value::Object(spec),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A secret's or config's source, labels, driver, driver options, extensions.
type ObjectParts = (
    ObjectSource,
    ListOrMap,
    Option<String>,
    Vec<(String, String)>,
    Extensions,
);

enum ObjectSource {
    File(std::path::PathBuf),
    Env(String),
    Content(String),
}

/// Go's error text for the common cases ("no such file or directory").
fn io_text(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => err.to_string(),
    }
}

/// Standard base64, as Go's encoding/json writes []byte.
pub fn base64(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(TABLE[(n >> 18) as usize & 63] as char);
        out.push(TABLE[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            TABLE[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            TABLE[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// docker's convert.Service.
fn service_spec(
    ns: &Namespace,
    name: &str,
    service: &Service,
    compose: &Compose,
) -> Result<Value, String> {
    let deploy = service.deploy.clone().unwrap_or_default();
    let image = service
        .image
        .as_ref()
        .map(|i| i.as_str().to_string())
        .unwrap_or_default();
    let secrets = references(ns, service, compose, true)?;
    let configs = references(ns, service, compose, false)?;

    let host = host_options(service)?;
    let mut container_labels = string_map(&service.labels);
    container_labels.extend(host.labels.clone().unwrap_or_default());
    let mut container = Map::new();
    put(&mut container, "Image", json!(image));
    put(&mut container, "Labels", stack_labels(ns, container_labels));
    put(
        &mut container,
        "Command",
        json!(command_words(service.entrypoint.as_ref())?),
    );
    put(
        &mut container,
        "Args",
        json!(command_words(service.command.as_ref())?),
    );
    put(
        &mut container,
        "Hostname",
        json!(service
            .hostname
            .as_ref()
            .map(|h| h.to_string())
            .unwrap_or_default()),
    );
    put(
        &mut container,
        "Env",
        json!(environment(&service.environment)),
    );
    put(
        &mut container,
        "Dir",
        json!(service
            .working_dir
            .as_ref()
            .map(|d| d.as_path().display().to_string())
            .unwrap_or_default()),
    );
    put(
        &mut container,
        "User",
        json!(service
            .user
            .as_ref()
            .map(|u| u.to_string())
            .unwrap_or_default()),
    );
    let mut privileges = json!({
        "CredentialSpec": credential_spec(ns, service, &configs)?,
        "SELinuxContext": null,
        "NoNewPrivileges": false,
    });
    if let Some(Value::Object(given)) = host
        .privileges
        .as_ref()
        .and_then(|p| serde_json::to_value(p).ok())
    {
        for (key, value) in given {
            privileges[key] = value;
        }
    }
    container.insert("Privileges".into(), privileges);
    if let Some(init) = ext(&service.extensions, X_INIT).and_then(serde_yaml::Value::as_bool) {
        container.insert("Init".into(), json!(init));
    }
    put(
        &mut container,
        "StopSignal",
        json!(service.stop_signal.clone().unwrap_or_default()),
    );
    put(&mut container, "TTY", json!(service.tty));
    put(&mut container, "OpenStdin", json!(service.stdin_open));
    put(&mut container, "ReadOnly", json!(service.read_only));
    put(
        &mut container,
        "Mounts",
        json!(mounts(ns, service, compose)?),
    );
    if let Some(grace) = &service.stop_grace_period {
        container.insert("StopGracePeriod".into(), json!(nanos(grace)));
    }
    if let Some(health) = healthcheck(service.healthcheck.as_ref())? {
        container.insert("Healthcheck".into(), health);
    }
    let hosts: Vec<String> = service
        .extra_hosts
        .iter()
        .map(|(host, ip)| format!("{ip} {host}"))
        .collect();
    put(&mut container, "Hosts", json!(hosts));
    let dns: Option<Vec<String>> = service.dns.as_ref().map(|d| match d {
        compose_spec::ItemOrList::Item(ip) => vec![ip.to_string()],
        compose_spec::ItemOrList::List(ips) => ips.iter().map(|ip| ip.to_string()).collect(),
    });
    let search: Option<Vec<String>> = service.dns_search.as_ref().map(|d| match d {
        compose_spec::ItemOrList::Item(h) => vec![h.to_string()],
        compose_spec::ItemOrList::List(hs) => hs.iter().map(|h| h.to_string()).collect(),
    });
    if dns.is_some() || search.is_some() {
        let mut config = Map::new();
        put(&mut config, "Nameservers", json!(dns.unwrap_or_default()));
        put(&mut config, "Search", json!(search.unwrap_or_default()));
        container.insert("DNSConfig".into(), Value::Object(config));
    }
    put(&mut container, "Secrets", json!(secrets));
    put(&mut container, "Configs", json!(configs));
    put(
        &mut container,
        "Isolation",
        json!(service.isolation.clone().unwrap_or_default()),
    );
    put(
        &mut container,
        "Sysctls",
        json!(string_map(&service.sysctls)),
    );
    let (cap_add, cap_drop) = crate::service::hostopts::effective_caps(
        service.cap_add.iter().map(String::as_str),
        service.cap_drop.iter().map(String::as_str),
    );
    put(&mut container, "CapabilityAdd", json!(cap_add));
    put(&mut container, "CapabilityDrop", json!(cap_drop));
    put(&mut container, "Ulimits", json!(ulimits(service)));
    put(
        &mut container,
        "OomScoreAdj",
        json!(service
            .oom_score_adj
            .map(|o| i64::from(i16::from(o)))
            .unwrap_or(0)),
    );

    let mut task = Map::new();
    task.insert("ContainerSpec".into(), Value::Object(container));
    task.insert("Resources".into(), resources(deploy.resources.as_ref())?);
    if let Some(policy) = restart_policy(service, &deploy) {
        task.insert("RestartPolicy".into(), policy);
    }
    let placement = deploy.placement.clone().unwrap_or_default();
    let mut place = Map::new();
    put(&mut place, "Constraints", json!(placement.constraints));
    let preferences: Vec<Value> = placement
        .preferences
        .iter()
        .map(|p| json!({"Spread": {"SpreadDescriptor": p.spread.clone().unwrap_or_default()}}))
        .collect();
    put(&mut place, "Preferences", json!(preferences));
    put(
        &mut place,
        "MaxReplicas",
        json!(placement.max_replicas_per_node.unwrap_or(0)),
    );
    task.insert("Placement".into(), Value::Object(place));
    task.insert(
        "Networks".into(),
        json!(network_attachments(ns, name, service, compose)?),
    );
    if let Some(logging) = &service.logging {
        let mut driver = Map::new();
        put(
            &mut driver,
            "Name",
            json!(logging.driver.clone().unwrap_or_default()),
        );
        let options: BTreeMap<String, String> = logging
            .options
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    v.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                )
            })
            .collect();
        put(&mut driver, "Options", json!(options));
        task.insert("LogDriver".into(), Value::Object(driver));
    }
    task.insert("ForceUpdate".into(), json!(0));

    let mut labels = string_map(&deploy.labels);
    labels.insert(LABEL_NAMESPACE.into(), ns.0.clone());
    labels.insert(LABEL_IMAGE.into(), image);
    let mut spec = Map::new();
    spec.insert("Name".into(), json!(ns.scope(name)));
    spec.insert("Labels".into(), json!(labels));
    spec.insert("TaskTemplate".into(), Value::Object(task));
    spec.insert("Mode".into(), mode(&deploy)?);
    if let Some(update) = update_config(deploy.update_config.as_ref()) {
        spec.insert("UpdateConfig".into(), update);
    }
    if let Some(rollback) = update_config(deploy.rollback_config.as_ref()) {
        spec.insert("RollbackConfig".into(), rollback);
    }
    spec.insert("EndpointSpec".into(), endpoint_spec(service, &deploy));
    Ok(Value::Object(spec))
}

/// What docker ignores and Flotilla honours (service::hostopts):
/// privileged, devices and shm_size as reserved container labels,
/// security_opt as the spec's Privileges (a seccomp profile read from the
/// file named, relative to the current directory as `docker run` reads
/// it). Returned as a ContainerSpec holding only those labels and
/// privileges.
fn host_options(service: &Service) -> Result<bollard::models::TaskSpecContainerSpec, String> {
    use crate::service::hostopts::{
        apply_security_opt, devices_label, parse_device, DEVICES_LABEL, PRIVILEGED_LABEL,
        SHM_SIZE_LABEL,
    };
    let mut spec = bollard::models::TaskSpecContainerSpec::default();
    let mut labels = HashMap::new();
    if service.privileged {
        labels.insert(PRIVILEGED_LABEL.to_string(), "true".to_string());
    }
    let mut devices = Vec::new();
    for device in &service.devices {
        devices.push(parse_device(&device.to_string()).map_err(|e| format!("devices: {e}"))?);
    }
    if let Some(value) = devices_label(&devices) {
        labels.insert(DEVICES_LABEL.to_string(), value);
    }
    if let Some(bytes) = service
        .shm_size
        .and_then(|b| b.into_bytes())
        .filter(|b| *b > 0)
    {
        labels.insert(SHM_SIZE_LABEL.to_string(), bytes.to_string());
    }
    spec.labels = Some(labels);
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map_err(|e| format!("opening seccomp profile ({path}) failed: {e}"))
    };
    for opt in &service.security_opt {
        apply_security_opt(&mut spec, opt, &read).map_err(|e| format!("security_opt: {e}"))?;
    }
    Ok(spec)
}

/// docker's ShellCommand: a string split like a shell would, a list as is.
fn command_words(command: Option<&Command>) -> Result<Vec<String>, String> {
    match command {
        None => Ok(Vec::new()),
        Some(Command::List(words)) => Ok(words.clone()),
        Some(Command::String(text)) => crate::service::shell_words(text).map_err(|e| e.to_string()),
    }
}

/// docker's convertEnvironment: KEY=VALUE, or KEY alone when it has no
/// value, sorted.
fn environment(list: &ListOrMap) -> Vec<String> {
    let mut out: Vec<String> = match list {
        ListOrMap::List(items) => items.iter().cloned().collect(),
        ListOrMap::Map(map) => map
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.to_string(),
            })
            .collect(),
    };
    out.sort();
    out
}

fn ulimits(service: &Service) -> Vec<Value> {
    let mut out: Vec<Value> = service
        .ulimits
        .iter()
        .map(|(name, limit)| {
            let value = |l: &Limit<u64>| match l {
                Limit::Value(v) => *v as i64,
                Limit::Unlimited => -1,
            };
            let (soft, hard) = match limit {
                ShortOrLong::Short(single) => (value(single), value(single)),
                ShortOrLong::Long(u) => (value(&u.soft), value(&u.hard)),
            };
            json!({"Name": name.to_string(), "Hard": hard, "Soft": soft})
        })
        .collect();
    out.sort_by(|a, b| a["Name"].as_str().cmp(&b["Name"].as_str()));
    out
}

fn healthcheck(health: Option<&Healthcheck>) -> Result<Option<Value>, String> {
    let Some(health) = health else {
        return Ok(None);
    };
    let command = match health {
        Healthcheck::Disable => return Ok(Some(json!({"Test": ["NONE"]}))),
        Healthcheck::Command(command) => command,
    };
    let mut out = Map::new();
    let test = match &command.test {
        None => Vec::new(),
        // compose_spec keeps ["CMD", args...] as the args alone.
        Some(Test::Command(words)) => std::iter::once("CMD".to_string())
            .chain(words.iter().cloned())
            .collect(),
        Some(Test::ShellCommand(text)) => vec!["CMD-SHELL".to_string(), text.clone()],
    };
    put(&mut out, "Test", json!(test));
    for (key, value) in [
        ("Interval", &command.interval),
        ("Timeout", &command.timeout),
        ("StartPeriod", &command.start_period),
        ("StartInterval", &command.start_interval),
    ] {
        put(&mut out, key, json!(value.as_ref().map(nanos).unwrap_or(0)));
    }
    put(&mut out, "Retries", json!(command.retries.unwrap_or(0)));
    Ok(Some(Value::Object(out)))
}

/// docker's convertRestartPolicy: deploy.restart_policy, else `restart`.
fn restart_policy(service: &Service, deploy: &Deploy) -> Option<Value> {
    use compose_spec::service::Restart;
    if let Some(policy) = &deploy.restart_policy {
        let mut out = Map::new();
        put(
            &mut out,
            "Condition",
            json!(policy.condition.map(|c| c.as_str()).unwrap_or_default()),
        );
        if let Some(delay) = &policy.delay {
            out.insert("Delay".into(), json!(nanos(delay)));
        }
        if let Some(attempts) = policy.max_attempts {
            out.insert("MaxAttempts".into(), json!(attempts));
        }
        if let Some(window) = &policy.window {
            out.insert("Window".into(), json!(nanos(window)));
        }
        return Some(Value::Object(out));
    }
    match service.restart? {
        Restart::No => None,
        Restart::Always | Restart::UnlessStopped => Some(json!({"Condition": "any"})),
        Restart::OnFailure => Some(json!({"Condition": "on-failure", "MaxAttempts": 0})),
    }
}

fn resources(resources: Option<&Resources>) -> Result<Value, String> {
    let mut out = Map::new();
    let Some(resources) = resources else {
        return Ok(Value::Object(out));
    };
    let cpus = |c: Option<compose_spec::service::deploy::resources::Cpus>| {
        c.map(|c| (c.into_inner() * 1e9).round() as i64)
            .unwrap_or(0)
    };
    let bytes = |b: Option<compose_spec::service::ByteValue>| {
        b.and_then(|b| b.into_bytes()).unwrap_or(0) as i64
    };
    if let Some(limits) = &resources.limits {
        let mut l = Map::new();
        put(&mut l, "NanoCPUs", json!(cpus(limits.cpus)));
        put(&mut l, "MemoryBytes", json!(bytes(limits.memory)));
        let pids = match limits.pids {
            Some(Limit::Value(p)) => i64::from(p),
            Some(Limit::Unlimited) => -1,
            None => 0,
        };
        put(&mut l, "Pids", json!(pids));
        out.insert("Limits".into(), Value::Object(l));
    }
    if let Some(reservations) = &resources.reservations {
        let mut r = Map::new();
        put(&mut r, "NanoCPUs", json!(cpus(reservations.cpus)));
        put(&mut r, "MemoryBytes", json!(bytes(reservations.memory)));
        let generic: Vec<Value> = reservations
            .generic_resources
            .iter()
            .map(|g| {
                let mut m = Map::new();
                if let Some(d) = &g.discrete_resource_spec {
                    let mut spec = Map::new();
                    put(&mut spec, "Kind", json!(d.kind.clone().unwrap_or_default()));
                    put(&mut spec, "Value", json!(d.value.unwrap_or(0)));
                    m.insert("DiscreteResourceSpec".into(), Value::Object(spec));
                }
                Value::Object(m)
            })
            .collect();
        put(&mut r, "GenericResources", json!(generic));
        out.insert("Reservations".into(), Value::Object(r));
    }
    Ok(Value::Object(out))
}

/// docker's convertDeployMode, with the job modes.
fn mode(deploy: &Deploy) -> Result<Value, String> {
    use compose_spec::service::deploy::Mode;
    let job = ext_str(&deploy.extensions, X_MODE);
    let replicas = deploy.replicas;
    let global = deploy.mode == Some(Mode::Global);
    match (job.as_deref(), global) {
        (Some("global-job"), _) | (None, true) if replicas.is_some() => {
            Err("replicas can only be used with replicated or replicated-job mode".into())
        }
        (Some("global-job"), _) => Ok(json!({"GlobalJob": {}})),
        (Some(_), _) => {
            let mut job = Map::new();
            if let Some(r) = replicas {
                job.insert("MaxConcurrent".into(), json!(r));
                job.insert("TotalCompletions".into(), json!(r));
            }
            Ok(json!({"ReplicatedJob": job}))
        }
        (None, true) => Ok(json!({"Global": {}})),
        (None, false) => {
            let mut replicated = Map::new();
            if let Some(r) = replicas {
                replicated.insert("Replicas".into(), json!(r));
            }
            Ok(json!({"Replicated": replicated}))
        }
    }
}

fn update_config(config: Option<&UpdateOrRollbackConfig>) -> Option<Value> {
    let config = config?;
    let mut out = Map::new();
    out.insert("Parallelism".into(), json!(config.parallelism.unwrap_or(1)));
    put(
        &mut out,
        "Delay",
        json!(config.delay.as_ref().map(nanos).unwrap_or(0)),
    );
    put(
        &mut out,
        "FailureAction",
        json!(config
            .failure_action
            .map(|f| f.as_str())
            .unwrap_or_default()),
    );
    put(
        &mut out,
        "Monitor",
        json!(config.monitor.as_ref().map(nanos).unwrap_or(0)),
    );
    let ratio = ext(&config.extensions, X_MAX_FAILURE_RATIO)
        .and_then(serde_yaml::Value::as_f64)
        .unwrap_or(0.0);
    // Go sends a float32, written with the fewest digits that read back.
    let ratio: f64 = (ratio as f32).to_string().parse().unwrap_or(0.0);
    let ratio = if ratio.fract() == 0.0 {
        json!(ratio as i64)
    } else {
        json!(ratio)
    };
    out.insert("MaxFailureRatio".into(), ratio);
    out.insert(
        "Order".into(),
        json!(config.order.map(|o| o.as_str()).unwrap_or_default()),
    );
    Some(Value::Object(out))
}

fn endpoint_spec(service: &Service, deploy: &Deploy) -> Value {
    use compose_spec::service::deploy::EndpointMode;
    let mut ports: Vec<Value> = service
        .ports
        .iter()
        .filter_map(|port| match port {
            ShortOrLong::Long(port) => {
                let mut m = Map::new();
                put(
                    &mut m,
                    "Protocol",
                    json!(port
                        .protocol
                        .as_ref()
                        .map(|p| p.to_string())
                        .unwrap_or_default()),
                );
                put(&mut m, "TargetPort", json!(port.target));
                let published: u32 = port
                    .published
                    .as_ref()
                    .and_then(|r| r.to_string().split('-').next().and_then(|p| p.parse().ok()))
                    .unwrap_or(0);
                put(&mut m, "PublishedPort", json!(published));
                put(
                    &mut m,
                    "PublishMode",
                    json!(port.mode.map(|m| m.as_str()).unwrap_or_default()),
                );
                Some(Value::Object(m))
            }
            // The loader turns short ports into long ones.
            ShortOrLong::Short(_) => None,
        })
        .collect();
    ports.sort_by_key(|p| p["PublishedPort"].as_u64().unwrap_or(0));
    let mut out = Map::new();
    let endpoint_mode = match deploy.endpoint_mode {
        Some(EndpointMode::VIp) => "vip",
        Some(EndpointMode::DnsRR) => "dnsrr",
        _ => "",
    };
    put(&mut out, "Mode", json!(endpoint_mode));
    put(&mut out, "Ports", json!(ports));
    Value::Object(out)
}

/// docker's convertServiceNetworks.
fn network_attachments(
    ns: &Namespace,
    name: &str,
    service: &Service,
    compose: &Compose,
) -> Result<Vec<Value>, String> {
    use compose_spec::service::NetworkConfig;
    let mut attached: Vec<(
        String,
        Option<compose_spec::service::network_config::Network>,
    )> = match &service.network_config {
        Some(NetworkConfig::Networks(ShortOrLong::Short(names))) => {
            names.iter().map(|n| (n.to_string(), None)).collect()
        }
        Some(NetworkConfig::Networks(ShortOrLong::Long(map))) => map
            .iter()
            .map(|(n, c)| (n.to_string(), c.clone()))
            .collect(),
        _ => Vec::new(),
    };
    if attached.is_empty() {
        attached.push((DEFAULT_NETWORK.to_string(), None));
    }
    let mut out = Vec::new();
    for (network, config) in attached {
        let declared = compose.networks.iter().find(|(k, _)| k.as_str() == network);
        if declared.is_none() && network != DEFAULT_NETWORK {
            return Err(format!("undefined network {network:?}"));
        }
        let custom = declared.and_then(|(_, v)| match v {
            Some(Resource::External { name }) => Some(name.clone().unwrap_or(network.clone())),
            Some(Resource::Compose(n)) => n.name.clone(),
            None => None,
        });
        let target = custom.unwrap_or_else(|| ns.scope(&network));
        let mut aliases: Vec<String> = config
            .as_ref()
            .map(|c| c.aliases.iter().map(|a| a.to_string()).collect())
            .unwrap_or_default();
        if !matches!(target.as_str(), "default" | "bridge" | "host" | "none")
            && !target.starts_with("container:")
        {
            aliases.push(name.to_string());
        }
        let driver_opts: BTreeMap<String, String> = config
            .as_ref()
            .map(|c| {
                c.driver_opts
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let mut m = Map::new();
        put(&mut m, "Target", json!(target));
        put(&mut m, "Aliases", json!(aliases));
        put(&mut m, "DriverOpts", json!(driver_opts));
        out.push(Value::Object(m));
    }
    out.sort_by(|a, b| a["Target"].as_str().cmp(&b["Target"].as_str()));
    Ok(out)
}

/// docker's convertServiceSecrets / convertServiceConfigObjs, without the
/// IDs (filled in at deploy time, when the objects exist).
fn references(
    ns: &Namespace,
    service: &Service,
    compose: &Compose,
    secrets: bool,
) -> Result<Vec<Value>, String> {
    let (kind, list) = if secrets {
        ("secret", &service.secrets)
    } else {
        ("config", &service.configs)
    };
    let mut out: Vec<Value> = Vec::new();
    let mut targets = BTreeSet::new();
    for item in list {
        let (source, target, uid, gid, mode) = match item {
            ShortOrLong::Short(source) => (source.to_string(), None, None, None, None),
            ShortOrLong::Long(r) => (
                r.source.to_string(),
                r.target.as_ref().map(|t| t.display().to_string()),
                r.uid,
                r.gid,
                r.mode,
            ),
        };
        let object_name = object_name(ns, compose, secrets, &source)
            .ok_or_else(|| format!("undefined {kind} {source:?}"))?;
        let target = target.unwrap_or_else(|| source.clone());
        if !targets.insert(target.clone()) {
            return Err(format!(
                "duplicate {kind} target for {object_name} not allowed"
            ));
        }
        let file = json!({
            "Name": target,
            "UID": uid.map(|u| u.to_string()).unwrap_or_else(|| "0".into()),
            "GID": gid.map(|g| g.to_string()).unwrap_or_else(|| "0".into()),
            "Mode": mode.unwrap_or(0o444),
        });
        out.push(if secrets {
            json!({"File": file, "SecretID": "", "SecretName": object_name})
        } else {
            json!({"File": file, "ConfigID": "", "ConfigName": object_name})
        });
    }
    if !secrets {
        if let Some(compose_spec::service::CredentialSpecKind::Config(config)) =
            service.credential_spec.as_ref().map(|c| &c.kind)
        {
            let name = object_name(ns, compose, false, config.as_str())
                .ok_or_else(|| format!("undefined config {:?}", config.as_str()))?;
            out.push(json!({"Runtime": {}, "ConfigID": "", "ConfigName": name}));
        }
    }
    let key = if secrets { "SecretName" } else { "ConfigName" };
    out.sort_by(|a, b| a[key].as_str().cmp(&b[key].as_str()));
    Ok(out)
}

/// The swarm name of a top-level secret or config: its `name`, else STACK_key.
fn object_name(ns: &Namespace, compose: &Compose, secrets: bool, key: &str) -> Option<String> {
    if secrets {
        let (_, resource) = compose.secrets.iter().find(|(k, _)| k.as_str() == key)?;
        Some(match resource {
            Resource::External { name } => name.clone().unwrap_or_else(|| key.to_string()),
            Resource::Compose(s) => ext_str(&s.extensions, X_NAME).unwrap_or_else(|| ns.scope(key)),
        })
    } else {
        let (_, resource) = compose.configs.iter().find(|(k, _)| k.as_str() == key)?;
        Some(match resource {
            Resource::External { name } => name.clone().unwrap_or_else(|| key.to_string()),
            Resource::Compose(c) => ext_str(&c.extensions, X_NAME).unwrap_or_else(|| ns.scope(key)),
        })
    }
}

/// docker's convertCredentialSpec; a config's ID is set at deploy time.
fn credential_spec(ns: &Namespace, service: &Service, configs: &[Value]) -> Result<Value, String> {
    use compose_spec::service::CredentialSpecKind as Kind;
    let Some(spec) = &service.credential_spec else {
        return Ok(Value::Null);
    };
    Ok(match &spec.kind {
        Kind::File(path) => json!({"File": path.display().to_string()}),
        Kind::Registry(registry) => json!({"Registry": registry}),
        Kind::Config(config) => {
            let scoped = ns.scope(config.as_str());
            let found = configs.iter().any(|c| {
                let name = c["ConfigName"].as_str().unwrap_or_default();
                name == config.as_str() || name == scoped
            });
            if !found {
                return Err(format!(
                    "invalid credential spec: spec specifies config {}, but no such config can be found",
                    config.as_str()
                ));
            }
            json!({"Config": config.as_str()})
        }
    })
}

/// docker's convert.Volumes.
fn mounts(ns: &Namespace, service: &Service, compose: &Compose) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for volume in &service.volumes {
        let ShortOrLong::Long(mount) = volume else {
            // The loader turns short volumes into long ones.
            continue;
        };
        out.push(mount_spec(ns, mount, compose)?);
    }
    Ok(out)
}

fn mount_spec(ns: &Namespace, mount: &Mount, compose: &Compose) -> Result<Value, String> {
    let mut m = Map::new();
    let common = |m: &mut Map<String, Value>,
                  kind: &str,
                  source: &str,
                  common: &compose_spec::service::volumes::mount::Common| {
        put(m, "Type", json!(kind));
        put(m, "Source", json!(source));
        put(
            m,
            "Target",
            json!(common.target.as_path().display().to_string()),
        );
        put(m, "ReadOnly", json!(common.read_only));
        put(
            m,
            "Consistency",
            json!(common.consistency.clone().unwrap_or_default()),
        );
    };
    match mount {
        Mount::Volume(volume) => {
            let Some(source) = &volume.source else {
                common(&mut m, "volume", "", &volume.common);
                return Ok(Value::Object(m));
            };
            let source = source.as_str();
            let (_, declared) = compose
                .volumes
                .iter()
                .find(|(k, _)| k.as_str() == source)
                .ok_or_else(|| format!("undefined volume {source:?}"))?;
            let mut options = Map::new();
            if let Some(o) = &volume.volume {
                put(&mut options, "NoCopy", json!(o.nocopy));
                put(
                    &mut options,
                    "Subpath",
                    json!(o
                        .subpath
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()),
                );
            }
            let swarm_source = match declared {
                Some(Resource::External { name }) => {
                    name.clone().unwrap_or_else(|| source.to_string())
                }
                Some(Resource::Compose(v)) => v.name.clone().unwrap_or_else(|| ns.scope(source)),
                None => ns.scope(source),
            };
            common(&mut m, "volume", &swarm_source, &volume.common);
            if !matches!(declared, Some(Resource::External { .. })) {
                let (labels, driver, opts) = match declared {
                    Some(Resource::Compose(v)) => (
                        string_map(&v.labels),
                        v.driver.clone(),
                        v.driver_opts
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect::<BTreeMap<_, _>>(),
                    ),
                    _ => (BTreeMap::new(), None, BTreeMap::new()),
                };
                options.insert("Labels".into(), stack_labels(ns, labels));
                if driver.is_some() || !opts.is_empty() {
                    let mut d = Map::new();
                    put(&mut d, "Name", json!(driver.unwrap_or_default()));
                    put(&mut d, "Options", json!(opts));
                    options.insert("DriverConfig".into(), Value::Object(d));
                }
            }
            m.insert("VolumeOptions".into(), Value::Object(options));
        }
        Mount::Bind(bind) => {
            common(
                &mut m,
                "bind",
                &bind.source.as_path().display().to_string(),
                &bind.common,
            );
            if let Some(options) = &bind.bind {
                let mut b = Map::new();
                if let Some(p) = options.propagation {
                    put(
                        &mut b,
                        "Propagation",
                        serde_json::to_value(p).unwrap_or_default(),
                    );
                }
                m.insert("BindOptions".into(), Value::Object(b));
            }
        }
        Mount::Tmpfs(tmpfs) => {
            common(&mut m, "tmpfs", "", &tmpfs.common);
            if let Some(options) = &tmpfs.tmpfs {
                let mut t = Map::new();
                put(
                    &mut t,
                    "SizeBytes",
                    json!(options.size.and_then(|s| s.into_bytes()).unwrap_or(0)),
                );
                m.insert("TmpfsOptions".into(), Value::Object(t));
            }
        }
        Mount::NamedPipe(pipe) => {
            common(
                &mut m,
                "npipe",
                &pipe.source.as_path().display().to_string(),
                &pipe.common,
            );
        }
        Mount::Cluster(cluster) => {
            common(&mut m, "cluster", &cluster.source, &cluster.common);
            m.insert("ClusterOptions".into(), json!({}));
        }
    }
    Ok(Value::Object(m))
}

/// The `depends_on` of each service: dependency -> condition.
pub fn dependencies(compose: &Compose) -> HashMap<String, Vec<(String, Condition)>> {
    let mut out = HashMap::new();
    for (name, service) in &compose.services {
        let deps: Vec<(String, Condition)> = match &service.depends_on {
            ShortOrLong::Short(names) => names
                .iter()
                .map(|n| (n.to_string(), Condition::Started))
                .collect(),
            ShortOrLong::Long(map) => map
                .iter()
                .map(|(n, d)| {
                    use compose_spec::service::Condition as C;
                    let condition = match d.condition {
                        C::ServiceStarted => Condition::Started,
                        C::ServiceHealthy => Condition::Healthy,
                        C::ServiceCompletedSuccessfully => Condition::Completed,
                    };
                    (n.to_string(), condition)
                })
                .collect(),
        };
        out.insert(name.to_string(), deps);
    }
    out
}

/// What a service waits for in a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Started,
    Healthy,
    Completed,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "service_started",
            Condition::Healthy => "service_healthy",
            Condition::Completed => "service_completed_successfully",
        }
    }
}
