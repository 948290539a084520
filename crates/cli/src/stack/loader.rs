//! Reading compose files: YAML, interpolation, docker's transforms, the
//! merge of several `-c` files, and the typed parse by the `compose_spec`
//! crate, which validates every key (unknown keys are errors, with their
//! path and line).
//!
//! docker/cli loads a file as a generic mapping, interpolates it, then
//! decodes it with its own transforms (short port and volume syntax,
//! sizes, Go durations). Where compose_spec reads a value differently from
//! docker, the value is rewritten to docker's meaning before the typed
//! parse, and the few keys compose_spec has no field for (swarm's
//! `template_driver`, a secret's or config's `name`, a float
//! `max_failure_ratio`, the job modes) are kept under `x-flotilla-*`
//! extension keys, which compose_spec carries through untouched.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use compose_spec::Compose;
use serde_yaml::{Mapping, Value};

use super::envfile;
use super::template::{self, key_text};
use crate::format::duration::parse_go_duration;
use crate::format::units::parse_ram_bytes;

/// Extension keys for what compose_spec has no field for.
pub const X_NAME: &str = "x-flotilla-name";
pub const X_TEMPLATE_DRIVER: &str = "x-flotilla-template-driver";
pub const X_MAX_FAILURE_RATIO: &str = "x-flotilla-max-failure-ratio";
pub const X_MODE: &str = "x-flotilla-mode";
pub const X_INIT: &str = "x-flotilla-init";

/// docker's types.UnsupportedProperties and DeprecatedProperties, and the
/// compose-spec service keys a swarm service has no field for: named in
/// one "Ignoring unsupported options" warning per service. (privileged,
/// devices, security_opt and shm_size, which docker ignores, Flotilla
/// honours: service::hostopts.)
const UNSUPPORTED: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "build",
    "cgroup",
    "cgroup_parent",
    "cgroupns_mode",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpus",
    "develop",
    "device_cgroup_rules",
    "dns_opt",
    "domainname",
    "expose",
    "external_links",
    "group_add",
    "ipc",
    "links",
    "mac_address",
    "mem_reservation",
    "mem_swappiness",
    "network_mode",
    "oom_kill_disable",
    "pid",
    "pids_limit",
    "platform",
    "profiles",
    "pull_policy",
    "restart",
    "runtime",
    "scale",
    "storage_opt",
    "tmpfs",
    "userns_mode",
    "uts",
];

/// Keys inside a service's items that the conversion has no field for,
/// as (the service key, the item key): named like `ports.host_ip`.
const UNSUPPORTED_ITEM_KEYS: &[(&str, &str)] = &[
    ("ports", "host_ip"),
    ("ports", "app_protocol"),
    ("ports", "name"),
    ("networks", "ipv4_address"),
    ("networks", "ipv6_address"),
    ("networks", "link_local_ips"),
    ("networks", "mac_address"),
    ("networks", "priority"),
    ("networks", "gw_priority"),
];

/// docker's types.ForbiddenProperties: an error, as with docker.
const FORBIDDEN: &[(&str, &str)] = &[
    ("cpu_quota", "Set resource limits using deploy.resources"),
    ("cpu_shares", "Set resource limits using deploy.resources"),
    ("cpuset", "Set resource limits using deploy.resources"),
    ("extends", "Support for `extends` is not implemented yet."),
    ("mem_limit", "Set resource limits using deploy.resources"),
    ("memswap_limit", "Set resource limits using deploy.resources"),
    ("volume_driver", "Instead of setting the volume driver on the service, define a volume using the top-level `volumes` option and specify the driver there."),
    ("volumes_from", "To share a volume between services, define it using the top-level `volumes` option and reference it from each service that shares it using the service-level `volumes` option."),
];

/// A loaded stack file (or several merged).
pub struct Loaded {
    pub compose: Compose,
    /// Interpolation variables: the process environment over `.env`.
    pub env: HashMap<String, String>,
    /// Service keys a swarm cannot honour, sorted, by service.
    pub unsupported: BTreeMap<String, Vec<String>>,
}

/// Loads the `-c` files ("-" is stdin) as `docker stack deploy` does.
pub fn load(files: &[String], stdin: &mut dyn Read) -> Result<Loaded, String> {
    let first = files
        .first()
        .ok_or("Specify a Compose file (with --compose-file)")?;
    let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
    let working_dir = if first == "-" && files.len() == 1 {
        cwd
    } else {
        let path = cwd.join(first);
        path.parent().map(Path::to_path_buf).unwrap_or(cwd)
    };
    let mut env = HashMap::new();
    let dotenv = working_dir.join(".env");
    if dotenv.is_file() {
        let text =
            std::fs::read_to_string(&dotenv).map_err(|e| format!("{}: {e}", dotenv.display()))?;
        env = envfile::parse_dotenv(&text)?;
    }
    env.extend(std::env::vars());
    let mut texts = Vec::new();
    for file in files {
        let text = if file == "-" {
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(|e| format!("reading the compose file from stdin: {e}"))?;
            text
        } else {
            std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?
        };
        texts.push((file.clone(), text));
    }
    load_texts(&texts, working_dir, env)
}

/// The load after the files are read (separate so tests need no files).
pub fn load_texts(
    texts: &[(String, String)],
    working_dir: PathBuf,
    env: HashMap<String, String>,
) -> Result<Loaded, String> {
    let lookup = |key: &str| env.get(key).cloned();
    let mut unsupported: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut merged: Option<Value> = None;
    let mut version: Option<String> = None;
    for (file, text) in texts {
        let mut value: Value = serde_yaml::from_str(text).map_err(|e| format!("{file}: {e}"))?;
        if !value.is_mapping() {
            return Err(format!("{file}: top-level object must be a mapping"));
        }
        let file_version = value.get("version").map(scalar_text);
        match (&version, &file_version) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!(
                    "version mismatched between two composefiles : {a} and {b}"
                ))
            }
            (None, Some(_)) => version = file_version.clone(),
            _ => {}
        }
        check_forbidden(&value)?;
        for (service, keys) in unsupported_keys(&value) {
            unsupported.entry(service).or_default().extend(keys);
        }
        template::interpolate(&mut value, &lookup).map_err(|e| format!("{file}: {e}"))?;
        adapt(&mut value, &working_dir, &lookup).map_err(|e| format!("{file}: {e}"))?;
        typed(&value).map_err(|e| format!("{file}: {}", with_line(&e, text)))?;
        resolve_env_files(&mut value, &working_dir, &lookup).map_err(|e| format!("{file}: {e}"))?;
        merged = Some(match merged {
            None => value,
            Some(base) => merge_files(base, value),
        });
    }
    let merged = merged.ok_or("No files specified")?;
    let compose = typed(&merged)?;
    for (name, service) in &compose.services {
        if service.image.is_none() {
            return Err(format!(
                "invalid image reference for service {name}: no image specified"
            ));
        }
    }
    Ok(Loaded {
        compose,
        env,
        unsupported: unsupported
            .into_iter()
            .map(|(service, keys)| (service, keys.into_iter().collect()))
            .collect(),
    })
}

/// The typed parse, naming the key of an error.
fn typed(value: &Value) -> Result<Compose, String> {
    let mut value = value.clone();
    if let Some(map) = value.as_mapping_mut() {
        map.entry("services".into())
            .or_insert_with(|| Value::Mapping(Mapping::new()));
    }
    serde_path_to_error::deserialize::<_, Compose>(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        if path.is_empty() || path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// Adds "at line L column C" to a typed error when parsing the file's own
/// text (before interpolation) fails at the same key.
fn with_line(error: &str, text: &str) -> String {
    let Some((path, _)) = error.split_once(": ") else {
        return error.to_string();
    };
    match serde_yaml::from_str::<Compose>(text) {
        Err(raw) if raw.to_string().starts_with(&format!("{path}: ")) => match raw.location() {
            Some(at) => format!("{error} at line {} column {}", at.line(), at.column()),
            None => error.to_string(),
        },
        _ => error.to_string(),
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => key_text(other),
    }
}

fn services_of(value: &Value) -> impl Iterator<Item = (&Value, &Mapping)> {
    value
        .get("services")
        .and_then(Value::as_mapping)
        .into_iter()
        .flat_map(|m| m.iter())
        .filter_map(|(k, v)| v.as_mapping().map(|m| (k, m)))
}

fn check_forbidden(value: &Value) -> Result<(), String> {
    let mut found = BTreeSet::new();
    for (_, service) in services_of(value) {
        for (key, description) in FORBIDDEN {
            if service.contains_key(*key) {
                found.insert(format!("{key}: {description}"));
            }
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = found.into_iter().collect();
    Err(format!(
        "Compose file contains unsupported options:\n\n{}\n",
        list.join("\n\n")
    ))
}

/// The keys of each service that will not be honoured.
fn unsupported_keys(value: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for (name, service) in services_of(value) {
        let mut found = BTreeSet::new();
        for key in UNSUPPORTED {
            if service.contains_key(*key) {
                found.insert(key.to_string());
            }
        }
        for (outer, inner) in UNSUPPORTED_ITEM_KEYS {
            let items: Vec<&Value> = match service.get(*outer) {
                Some(Value::Sequence(items)) => items.iter().collect(),
                Some(Value::Mapping(items)) => items.values().collect(),
                _ => Vec::new(),
            };
            if items.iter().any(|i| i.get(*inner).is_some()) {
                found.insert(format!("{outer}.{inner}"));
            }
        }
        // The short syntax's "IP:PUBLISHED:TARGET" has a host IP too.
        let short_with_ip = service
            .get("ports")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|p| p.split('/').next().unwrap_or_default().matches(':').count() >= 2);
        if short_with_ip {
            found.insert("ports.host_ip".to_string());
        }
        let volumes = service.get("volumes").and_then(Value::as_sequence);
        for (kind, key) in [
            ("bind", "create_host_path"),
            ("bind", "selinux"),
            ("tmpfs", "mode"),
        ] {
            if volumes
                .into_iter()
                .flatten()
                .any(|v| v.get(kind).and_then(|o| o.get(key)).is_some())
            {
                found.insert(format!("volumes.{kind}.{key}"));
            }
        }
        let reserved_devices = service
            .get("deploy")
            .and_then(|d| d.get("resources"))
            .and_then(|r| r.get("reservations"))
            .and_then(|r| r.get("devices"));
        if reserved_devices.is_some() {
            found.insert("deploy.resources.reservations.devices".to_string());
        }
        if !found.is_empty() {
            out.insert(key_text(name), found);
        }
    }
    out
}

type LookupFn<'a> = &'a dyn Fn(&str) -> Option<String>;

/// docker's transforms, on one interpolated file.
fn adapt(value: &mut Value, working_dir: &Path, lookup: LookupFn) -> Result<(), String> {
    let Some(root) = value.as_mapping_mut() else {
        return Ok(());
    };
    if let Some(services) = root.get_mut("services").and_then(Value::as_mapping_mut) {
        for (name, service) in services.iter_mut() {
            let name = key_text(name);
            if let Some(service) = service.as_mapping_mut() {
                adapt_service(service, working_dir, lookup)
                    .map_err(|e| format!("services.{name}.{e}"))?;
            }
        }
    }
    for section in ["networks", "volumes"] {
        if let Some(items) = root.get_mut(section).and_then(Value::as_mapping_mut) {
            for (name, item) in items.iter_mut() {
                if let Some(item) = item.as_mapping_mut() {
                    adapt_external(item, section, &key_text(name))?;
                    if let Some(labels) = item.get_mut("labels") {
                        list_to_map(labels, '=', false);
                    }
                }
            }
        }
    }
    for section in ["secrets", "configs"] {
        if let Some(items) = root.get_mut(section).and_then(Value::as_mapping_mut) {
            for (name, item) in items.iter_mut() {
                let name = key_text(name);
                let Some(item) = item.as_mapping_mut() else {
                    continue;
                };
                adapt_external(item, section, &name)?;
                if let Some(labels) = item.get_mut("labels") {
                    list_to_map(labels, '=', false);
                }
                if let Some(driver) = item.remove("template_driver") {
                    item.insert(X_TEMPLATE_DRIVER.into(), driver);
                }
                let external = item.get("external").and_then(Value::as_bool) == Some(true);
                if !external {
                    if let Some(custom) = item.remove("name") {
                        item.insert(X_NAME.into(), custom);
                    }
                    if let Some(file) = item.get("file").and_then(Value::as_str) {
                        let path = absolute(working_dir, file, lookup);
                        item.insert("file".into(), Value::from(path));
                    }
                }
            }
        }
    }
    Ok(())
}

/// `external: {name: x}` (deprecated) becomes `external: true, name: x`.
fn adapt_external(item: &mut Mapping, section: &str, name: &str) -> Result<(), String> {
    let Some(Value::Mapping(external)) = item.get("external").cloned() else {
        return Ok(());
    };
    let singular = section.trim_end_matches('s');
    if let Some(external_name) = external.get("name") {
        if item.contains_key("name") {
            return Err(format!(
                "{singular} {name}: {singular}.external.name and {singular}.name conflict; only use {singular}.name"
            ));
        }
        item.insert("name".into(), external_name.clone());
    }
    item.insert("external".into(), Value::Bool(true));
    Ok(())
}

fn adapt_service(
    service: &mut Mapping,
    working_dir: &Path,
    lookup: LookupFn,
) -> Result<(), String> {
    if let Some(Value::Sequence(ports)) = service.get_mut("ports") {
        let mut long = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            match port {
                Value::Mapping(_) => long.push(port.clone()),
                Value::Number(_) | Value::String(_) => long.extend(
                    short_port(&scalar_text(port)).map_err(|e| format!("ports[{i}]: {e}"))?,
                ),
                _ => return Err(format!("ports[{i}]: invalid type for port")),
            }
        }
        *ports = long;
    }
    if let Some(Value::Sequence(volumes)) = service.get_mut("volumes") {
        for (i, volume) in volumes.iter_mut().enumerate() {
            if let Value::String(spec) = volume {
                *volume = short_volume(spec).map_err(|e| format!("volumes[{i}]: {e}"))?;
            }
            if let Some(mount) = volume.as_mapping_mut() {
                let is_bind = mount.get("type").and_then(Value::as_str) == Some("bind");
                if let (true, Some(source)) = (is_bind, mount.get("source").and_then(Value::as_str))
                {
                    let path = absolute(working_dir, source, lookup);
                    mount.insert("source".into(), Value::from(path));
                }
                if let Some(size) = mount.get_mut("tmpfs").and_then(|t| t.get_mut("size")) {
                    to_bytes(size).map_err(|e| format!("volumes[{i}].tmpfs.size: {e}"))?;
                }
            }
        }
    }
    for key in ["environment", "labels", "sysctls"] {
        if let Some(value) = service.get_mut(key) {
            list_to_map(value, '=', key == "environment");
        }
    }
    if let Some(hosts) = service.get_mut("extra_hosts") {
        extra_hosts(hosts);
    }
    if let Some(networks) = service.get_mut("networks") {
        seq_to_null_map(networks);
    }
    if let Some(depends) = service.get_mut("depends_on") {
        if let Value::Sequence(names) = depends {
            let mut map = Mapping::new();
            for name in names.iter() {
                let mut condition = Mapping::new();
                condition.insert("condition".into(), "service_started".into());
                map.insert(name.clone(), Value::Mapping(condition));
            }
            *depends = Value::Mapping(map);
        }
    }
    for key in ["secrets", "configs"] {
        if let Some(Value::Sequence(refs)) = service.get_mut(key) {
            for (i, item) in refs.iter_mut().enumerate() {
                if let Some(mode) = item.get_mut("mode") {
                    octal_mode(mode).map_err(|e| format!("{key}[{i}].mode: {e}"))?;
                }
                for id in ["uid", "gid"] {
                    if let Some(Value::Number(n)) = item.get(id).cloned() {
                        if let Some(map) = item.as_mapping_mut() {
                            map.insert(id.into(), Value::from(n.to_string()));
                        }
                    }
                }
            }
        }
    }
    // `docker run --device /dev/x` form, which compose_spec refuses
    // without a container path.
    if let Some(Value::Sequence(devices)) = service.get_mut("devices") {
        for device in devices.iter_mut() {
            if let Value::String(path) = device {
                if !path.contains(':') {
                    *path = format!("{path}:{path}");
                }
            }
        }
    }
    if let Some(init) = service.get("init").cloned() {
        service.insert(X_INIT.into(), init);
    }
    let durations: &[&[&str]] = &[
        &["stop_grace_period"],
        &["healthcheck", "interval"],
        &["healthcheck", "timeout"],
        &["healthcheck", "start_period"],
        &["healthcheck", "start_interval"],
        &["deploy", "restart_policy", "delay"],
        &["deploy", "restart_policy", "window"],
        &["deploy", "update_config", "delay"],
        &["deploy", "update_config", "monitor"],
        &["deploy", "rollback_config", "delay"],
        &["deploy", "rollback_config", "monitor"],
    ];
    for path in durations {
        if let Some(value) = at_path(service, path) {
            to_duration(value).map_err(|e| format!("{}: {e}", path.join(".")))?;
        }
    }
    let sizes: &[&[&str]] = &[
        &["deploy", "resources", "limits", "memory"],
        &["deploy", "resources", "reservations", "memory"],
        &["shm_size"],
    ];
    for path in sizes {
        if let Some(value) = at_path(service, path) {
            to_bytes(value).map_err(|e| format!("{}: {e}", path.join(".")))?;
        }
    }
    if let Some(deploy) = service.get_mut("deploy").and_then(Value::as_mapping_mut) {
        if let Some(labels) = deploy.get_mut("labels") {
            list_to_map(labels, '=', false);
        }
        if let Some(mode) = deploy
            .get("mode")
            .and_then(Value::as_str)
            .map(str::to_string)
        {
            match mode.as_str() {
                "replicated-job" | "global-job" => {
                    deploy.insert(X_MODE.into(), Value::from(mode.as_str()));
                    deploy.insert("mode".into(), Value::from(mode.trim_end_matches("-job")));
                }
                "replicated" | "global" => {}
                other => return Err(format!("deploy.mode: Unknown mode: {other}")),
            }
        }
        for key in ["update_config", "rollback_config"] {
            if let Some(config) = deploy.get_mut(key).and_then(Value::as_mapping_mut) {
                if let Some(ratio) = config.remove("max_failure_ratio") {
                    config.insert(X_MAX_FAILURE_RATIO.into(), ratio);
                }
            }
        }
    }
    Ok(())
}

fn at_path<'a>(map: &'a mut Mapping, path: &[&str]) -> Option<&'a mut Value> {
    let (first, rest) = path.split_first()?;
    let mut value = map.get_mut(*first)?;
    for key in rest {
        value = value.get_mut(*key)?;
    }
    Some(value)
}

/// A Go duration string ("1.5s", "1m30s") as compose_spec writes durations.
fn to_duration(value: &mut Value) -> Result<(), String> {
    if let Value::String(text) = value {
        let nanos = parse_go_duration(text)?;
        if nanos < 0 {
            return Err(format!("negative duration {text}"));
        }
        *value = Value::from(compose_spec::duration::to_string(
            std::time::Duration::from_nanos(nanos as u64),
        ));
    }
    Ok(())
}

/// A size ("50M", "1.5g") as bytes, like go-units RAMInBytes.
fn to_bytes(value: &mut Value) -> Result<(), String> {
    if let Value::String(text) = value {
        *value = Value::from(parse_ram_bytes(text)?);
    }
    Ok(())
}

/// File modes as yaml.v3 reads them: "0440" and "0o440" are octal.
fn octal_mode(value: &mut Value) -> Result<(), String> {
    if let Value::String(text) = value {
        let parsed =
            if let Some(octal) = text.strip_prefix("0o").or_else(|| text.strip_prefix("0O")) {
                u32::from_str_radix(octal, 8)
            } else if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
                u32::from_str_radix(hex, 16)
            } else if text.len() > 1 && text.starts_with('0') {
                u32::from_str_radix(&text[1..], 8)
            } else {
                text.parse()
            };
        *value = Value::from(parsed.map_err(|_| format!("invalid file mode {text:?}"))?);
    }
    Ok(())
}

/// A relative path against the working directory, `~` as $HOME (docker's
/// absPath and expandUser).
fn absolute(working_dir: &Path, path: &str, lookup: LookupFn) -> String {
    let path = match (path.strip_prefix('~'), lookup("HOME")) {
        (Some(rest), Some(home)) => format!("{home}{rest}"),
        _ => path.to_string(),
    };
    if Path::new(&path).is_absolute() {
        return path;
    }
    let joined = working_dir.join(&path);
    clean(&joined)
}

/// Go's filepath.Clean for what Join does: "." and ".." resolved.
fn clean(path: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for component in path.components() {
        use std::path::Component;
        match component {
            Component::RootDir => parts.clear(),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop();
            }
            Component::Normal(p) => parts.push(p.to_string_lossy().to_string()),
            Component::Prefix(_) => {}
        }
    }
    format!("/{}", parts.join("/"))
}

/// A short port ("8080:80/udp", "80", "8000-8001:80-81") as the long
/// entries docker's nat.ParsePortSpecs makes of it.
fn short_port(spec: &str) -> Result<Vec<Value>, String> {
    let ports = crate::service::parse_publish(spec).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for port in ports {
        let mut map = Mapping::new();
        map.insert("target".into(), Value::from(port.target_port.unwrap_or(0)));
        if let Some(published) = port.published_port {
            map.insert("published".into(), Value::from(published));
        }
        map.insert(
            "protocol".into(),
            Value::from(crate::format::enum_text(&port.protocol)),
        );
        map.insert("mode".into(), Value::from("ingress"));
        out.push(Value::Mapping(map));
    }
    Ok(out)
}

/// docker's ParseVolume: "src:dst:opts" into the long syntax.
fn short_volume(spec: &str) -> Result<Value, String> {
    let mut map = Mapping::new();
    let chars: Vec<char> = spec.chars().collect();
    if chars.is_empty() {
        return Err("invalid empty volume spec".into());
    }
    let (mut source, target, mut options): (Option<String>, Option<String>, Option<String>);
    options = None;
    source = None;
    if chars.len() <= 2 {
        target = Some(spec.to_string());
    } else {
        let found;
        let mut buffer = String::new();
        let mut fields: Vec<String> = Vec::new();
        for (i, c) in chars.iter().enumerate() {
            let drive =
                *c == ':' && buffer.chars().count() == 1 && buffer.chars().all(char::is_alphabetic);
            if *c == ':' && !drive {
                fields.push(std::mem::take(&mut buffer));
            } else {
                buffer.push(*c);
            }
            if i == chars.len() - 1 {
                fields.push(std::mem::take(&mut buffer));
            }
        }
        if fields.iter().any(String::is_empty) {
            return Err(format!(
                "invalid spec: {spec}: empty section between colons"
            ));
        }
        match fields.len() {
            1 => found = fields.pop(),
            2 => {
                found = fields.pop();
                source = fields.pop();
            }
            3 => {
                options = fields.pop();
                found = fields.pop();
                source = fields.pop();
            }
            _ => return Err(format!("invalid spec: {spec}: too many colons")),
        }
        target = found;
    }
    let is_path = source
        .as_deref()
        .is_some_and(|s| s.starts_with(['.', '/', '~']) || s.starts_with("\\\\"));
    map.insert(
        "type".into(),
        Value::from(if is_path { "bind" } else { "volume" }),
    );
    if let Some(source) = source {
        map.insert("source".into(), Value::from(source));
    }
    map.insert("target".into(), Value::from(target.unwrap_or_default()));
    for option in options.as_deref().unwrap_or_default().split(',') {
        match option {
            "ro" => {
                map.insert("read_only".into(), Value::Bool(true));
            }
            "rw" => {
                map.remove("read_only");
            }
            "nocopy" => {
                let mut volume = Mapping::new();
                volume.insert("nocopy".into(), Value::Bool(true));
                map.insert("volume".into(), Value::Mapping(volume));
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => {
                let mut bind = Mapping::new();
                bind.insert("propagation".into(), Value::from(option));
                map.insert("bind".into(), Value::Mapping(bind));
            }
            _ => {}
        }
    }
    Ok(Value::Mapping(map))
}

/// A `KEY=VALUE` list as a mapping (docker's transformMappingOrList): a
/// bare KEY maps to null when `allow_null` (environment), else to "".
/// Mapping values other than null become strings, as fmt.Sprint prints them.
fn list_to_map(value: &mut Value, separator: char, allow_null: bool) {
    match value {
        Value::Sequence(items) => {
            let mut map = Mapping::new();
            for item in items.iter() {
                let text = scalar_text(item);
                match text.split_once(separator) {
                    Some((k, v)) => map.insert(k.into(), Value::from(v)),
                    None if allow_null => map.insert(text.into(), Value::Null),
                    None => map.insert(text.into(), Value::from("")),
                };
            }
            *value = Value::Mapping(map);
        }
        Value::Mapping(map) => {
            for (_, item) in map.iter_mut() {
                match item {
                    Value::Null if allow_null => {}
                    Value::Null => *item = Value::from(""),
                    Value::String(_) => {}
                    other => *other = Value::from(scalar_text(other)),
                }
            }
        }
        _ => {}
    }
}

/// `extra_hosts` as an ordered mapping host -> ip: list entries "host:ip"
/// or "host=ip" keep their order, brackets around IPv6 go, a mapping is
/// sorted (docker's transformHostsList).
fn extra_hosts(value: &mut Value) {
    let mut pairs: Vec<(String, String)> = match value {
        Value::Sequence(items) => items
            .iter()
            .filter_map(|item| {
                let text = scalar_text(item);
                let at = text.find(['=', ':'])?;
                Some((text[..at].to_string(), text[at + 1..].to_string()))
            })
            .collect(),
        Value::Mapping(map) => {
            let mut pairs: Vec<(String, String)> = map
                .iter()
                .map(|(k, v)| (key_text(k), scalar_text(v)))
                .collect();
            pairs.sort();
            pairs
        }
        _ => return,
    };
    for (_, ip) in pairs.iter_mut() {
        if ip.len() > 2 && ip.starts_with('[') && ip.ends_with(']') {
            *ip = ip[1..ip.len() - 1].to_string();
        }
    }
    let mut map = Mapping::new();
    for (host, ip) in pairs {
        map.insert(host.into(), ip.into());
    }
    *value = Value::Mapping(map);
}

/// A list of names as a mapping name -> null.
fn seq_to_null_map(value: &mut Value) {
    if let Value::Sequence(items) = value {
        let mut map = Mapping::new();
        for item in items.iter() {
            map.insert(item.clone(), Value::Null);
        }
        *value = Value::Mapping(map);
    }
}

/// docker's resolveEnvironment: `env_file` entries then `environment`, a
/// value that is unset or empty taken from the variables when they have
/// it. The result replaces `environment`; `env_file` goes.
fn resolve_env_files(
    value: &mut Value,
    working_dir: &Path,
    lookup: LookupFn,
) -> Result<(), String> {
    let Some(services) = value.get_mut("services").and_then(Value::as_mapping_mut) else {
        return Ok(());
    };
    for (name, service) in services.iter_mut() {
        let Some(service) = service.as_mapping_mut() else {
            continue;
        };
        let mut environment: Vec<(String, Option<String>)> = Vec::new();
        let set = |environment: &mut Vec<(String, Option<String>)>,
                   key: String,
                   value: Option<String>| {
            let value = match (&value, lookup(&key)) {
                (None, Some(found)) => Some(found),
                (Some(v), Some(found)) if v.is_empty() => Some(found),
                _ => value,
            };
            environment.retain(|(k, _)| *k != key);
            environment.push((key, value));
        };
        if let Some(files) = service.remove("env_file") {
            let entries = match files {
                Value::Sequence(items) => items,
                other => vec![other],
            };
            for entry in entries {
                let (path, required) = match &entry {
                    Value::Mapping(m) => (
                        m.get("path").map(scalar_text).unwrap_or_default(),
                        m.get("required").and_then(Value::as_bool).unwrap_or(true),
                    ),
                    other => (scalar_text(other), true),
                };
                let full = absolute(working_dir, &path, lookup);
                let text = match std::fs::read_to_string(&full) {
                    Ok(text) => text,
                    Err(_) if !required => continue,
                    Err(e) => {
                        return Err(format!("services.{}.env_file: {full}: {e}", key_text(name)))
                    }
                };
                for (k, v) in envfile::parse_env_file(&full, &text, lookup)? {
                    set(&mut environment, k, Some(v));
                }
            }
        }
        if let Some(Value::Mapping(map)) = service.get("environment") {
            for (k, v) in map {
                let value = match v {
                    Value::Null => None,
                    other => Some(scalar_text(other)),
                };
                set(&mut environment, key_text(k), value);
            }
        }
        if environment.is_empty() {
            continue;
        }
        let mut map = Mapping::new();
        for (k, v) in environment {
            map.insert(k.into(), v.map_or(Value::Null, Value::from));
        }
        service.insert("environment".into(), Value::Mapping(map));
    }
    Ok(())
}

/// Merges a later file into an earlier one as docker's loader does:
/// services field by field (maps by key, most lists appended; ports by
/// published port, volumes by target, secrets and configs by source;
/// command and entrypoint replaced), top-level networks, volumes, secrets
/// and configs replaced whole by name.
fn merge_files(mut base: Value, over: Value) -> Value {
    let (Some(base_map), Value::Mapping(over_map)) = (base.as_mapping_mut(), over) else {
        return base;
    };
    for (key, value) in over_map {
        let name = key_text(&key);
        match (name.as_str(), base_map.get_mut(&key)) {
            ("services", Some(Value::Mapping(services))) => {
                if let Value::Mapping(over_services) = value {
                    for (service_name, service) in over_services {
                        match services.get_mut(&service_name) {
                            Some(existing) => merge_service(existing, service),
                            None => {
                                services.insert(service_name, service);
                            }
                        }
                    }
                }
            }
            ("networks" | "volumes" | "secrets" | "configs", Some(Value::Mapping(items))) => {
                if let Value::Mapping(over_items) = value {
                    for (item_name, item) in over_items {
                        items.insert(item_name, item);
                    }
                }
            }
            _ => {
                base_map.insert(key, value);
            }
        }
    }
    base
}

fn merge_service(base: &mut Value, over: Value) {
    let (Some(base), Value::Mapping(over)) = (base.as_mapping_mut(), over) else {
        return;
    };
    for (key, value) in over {
        let name = key_text(&key);
        let Some(existing) = base.get_mut(&key) else {
            base.insert(key, value);
            continue;
        };
        match name.as_str() {
            "command" | "entrypoint" => *existing = value,
            "ports" => merge_keyed(existing, value, |p| {
                let published = p.get("published").map(scalar_text).unwrap_or_default();
                if published.is_empty() || published == "0" {
                    format!(
                        "target:{}",
                        p.get("target").map(scalar_text).unwrap_or_default()
                    )
                } else {
                    published
                }
            }),
            "volumes" => merge_keyed(existing, value, |v| {
                v.get("target").map(scalar_text).unwrap_or_default()
            }),
            "secrets" | "configs" => merge_keyed(existing, value, |r| match r {
                Value::Mapping(m) => m.get("source").map(scalar_text).unwrap_or_default(),
                other => scalar_text(other),
            }),
            "logging" => {
                let driver = |v: &Value| v.get("driver").map(scalar_text).unwrap_or_default();
                let (old, new) = (driver(existing), driver(&value));
                if !old.is_empty() && !new.is_empty() && old != new {
                    *existing = value;
                } else {
                    merge_deep(existing, value);
                }
            }
            "networks" | "depends_on" | "ulimits" => match (existing, value) {
                (Value::Mapping(a), Value::Mapping(b)) => {
                    for (k, v) in b {
                        a.insert(k, v);
                    }
                }
                (existing, value) => *existing = value,
            },
            _ => merge_deep(existing, value),
        }
    }
}

/// mergo with override and append: mappings merge by key, lists append,
/// anything else is replaced.
fn merge_deep(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(a), Value::Mapping(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge_deep(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (Value::Sequence(a), Value::Sequence(b)) => a.extend(b),
        (base, over) => *base = over,
    }
}

fn merge_keyed(base: &mut Value, over: Value, key: impl Fn(&Value) -> String) {
    let (Value::Sequence(a), Value::Sequence(b)) = (&mut *base, over) else {
        return;
    };
    for item in b {
        let k = key(&item);
        match a.iter_mut().find(|existing| key(existing) == k) {
            Some(existing) => *existing = item,
            None => a.push(item),
        }
    }
}
