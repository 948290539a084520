//! Flags shared by `service create` and `service update`, and how they
//! become a ServiceSpec (docker/cli cli/command/service/opts.go). An option
//! left out stays `None`, which is how docker's `flags.Changed` reads here.

use std::collections::HashMap;

use bollard::models::{
    EndpointPortConfig, HealthConfig, Limit, Mount, NetworkAttachmentConfig, ResourceObject,
    ServiceSpecRollbackConfig, ServiceSpecUpdateConfig, TaskSpecResources, TaskSpecRestartPolicy,
};
use clap::Args;
use serde_json::Value;

use crate::client::{CliError, Result};
use crate::format::duration::parse_go_duration;
use crate::format::units::{parse_nano_cpus, parse_ram_bytes};

fn parse_positive_duration(text: &str) -> std::result::Result<i64, String> {
    let nanos = parse_go_duration(text)?;
    if nanos < 0 {
        return Err("duration cannot be negative".to_string());
    }
    Ok(nanos)
}

fn parse_ratio(text: &str) -> std::result::Result<f64, String> {
    text.parse::<f32>()
        .map(f64::from)
        .map_err(|e| e.to_string())
}

/// One rolling-update policy (`--update-*` or `--rollback-*`).
#[derive(Debug, Default, Clone)]
pub struct UpdatePolicyFlags {
    pub parallelism: Option<i64>,
    pub delay: Option<i64>,
    pub monitor: Option<i64>,
    pub failure_action: Option<String>,
    pub max_failure_ratio: Option<f64>,
    pub order: Option<String>,
}

impl UpdatePolicyFlags {
    fn any(&self) -> bool {
        self.parallelism.is_some()
            || self.delay.is_some()
            || self.monitor.is_some()
            || self.failure_action.is_some()
            || self.max_failure_ratio.is_some()
            || self.order.is_some()
    }

    /// Applies the given flags onto `config` (which starts at SwarmKit's
    /// defaults when the service had none), as JSON so the same code serves
    /// UpdateConfig and RollbackConfig.
    fn apply(&self, config: Option<Value>) -> Result<Option<Value>> {
        if !self.any() {
            return Ok(config);
        }
        let mut config = config.unwrap_or_else(default_update_config);
        let set = |config: &mut Value, key: &str, value: Value| config[key] = value;
        if let Some(p) = self.parallelism {
            set(&mut config, "Parallelism", p.into());
        }
        if let Some(d) = self.delay {
            set(&mut config, "Delay", d.into());
        }
        if let Some(m) = self.monitor {
            set(&mut config, "Monitor", m.into());
        }
        if let Some(action) = &self.failure_action {
            check_choice(action, &["pause", "continue", "rollback"], "failure action")?;
            set(&mut config, "FailureAction", action.clone().into());
        }
        if let Some(ratio) = self.max_failure_ratio {
            set(&mut config, "MaxFailureRatio", ratio.into());
        }
        if let Some(order) = &self.order {
            check_choice(order, &["start-first", "stop-first"], "update order")?;
            set(&mut config, "Order", order.clone().into());
        }
        Ok(Some(config))
    }
}

/// SwarmKit's defaults for both update and rollback policies.
fn default_update_config() -> Value {
    serde_json::json!({
        "Parallelism": 1,
        "FailureAction": "pause",
        "Monitor": 5_000_000_000i64,
        "MaxFailureRatio": 0,
        "Order": "stop-first",
    })
}

fn check_choice(value: &str, allowed: &[&str], what: &str) -> Result<()> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(CliError::Other(format!(
            "invalid {what} \"{value}\": must be one of {}",
            allowed.join(", ")
        )))
    }
}

/// Flags common to `service create` and `service update`.
#[derive(Args, Debug, Default, Clone)]
pub struct CommonFlags {
    /// Exit immediately instead of waiting for the service to converge
    #[arg(short, long)]
    pub detach: bool,
    /// Suppress progress output
    #[arg(short, long)]
    pub quiet: bool,
    /// Let the swarm move tasks onto nodes that become ready and active again (Flotilla; default true)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "bool", value_parser = crate::tls::parse_go_bool)]
    pub rebalance: Option<bool>,
    /// Working directory inside the container
    #[arg(short, long, value_name = "string")]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long, value_name = "string")]
    pub user: Option<String>,
    /// Container hostname
    #[arg(long, value_name = "string")]
    pub hostname: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long, value_name = "command")]
    pub entrypoint: Option<String>,
    /// Allocate a pseudo-TTY
    #[arg(short, long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "bool")]
    pub tty: Option<bool>,
    /// Use an init inside each service container to forward signals and reap processes
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "bool")]
    pub init: Option<bool>,
    /// Mount the container's root filesystem as read only
    #[arg(long = "read-only", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "bool")]
    pub read_only: Option<bool>,
    /// Limit CPUs
    #[arg(long = "limit-cpu", value_name = "decimal", value_parser = parse_nano_cpus)]
    pub limit_cpu: Option<i64>,
    /// Limit Memory
    #[arg(long = "limit-memory", value_name = "bytes", value_parser = parse_ram_bytes)]
    pub limit_memory: Option<i64>,
    /// Limit maximum number of processes (default 0 = unlimited)
    #[arg(long = "limit-pids", value_name = "int")]
    pub limit_pids: Option<i64>,
    /// Reserve CPUs
    #[arg(long = "reserve-cpu", value_name = "decimal", value_parser = parse_nano_cpus)]
    pub reserve_cpu: Option<i64>,
    /// Reserve Memory
    #[arg(long = "reserve-memory", value_name = "bytes", value_parser = parse_ram_bytes)]
    pub reserve_memory: Option<i64>,
    /// Time to wait before force killing a container (ns|us|ms|s|m|h) (default 10s)
    #[arg(long = "stop-grace-period", value_name = "duration", value_parser = parse_go_duration)]
    pub stop_grace_period: Option<i64>,
    /// Signal to stop the container
    #[arg(long = "stop-signal", value_name = "string")]
    pub stop_signal: Option<String>,
    /// Number of tasks
    #[arg(long, value_name = "uint", allow_negative_numbers = true)]
    pub replicas: Option<u64>,
    /// Number of job tasks to run concurrently (default equal to --replicas)
    #[arg(
        long = "max-concurrent",
        value_name = "uint",
        allow_negative_numbers = true
    )]
    pub max_concurrent: Option<u64>,
    /// Maximum number of tasks per node (default 0 = unlimited)
    #[arg(long = "replicas-max-per-node", value_name = "uint")]
    pub replicas_max_per_node: Option<u64>,
    /// Restart when condition is met ("none", "on-failure", "any") (default "any")
    #[arg(long = "restart-condition", value_name = "string")]
    pub restart_condition: Option<String>,
    /// Delay between restart attempts (ns|us|ms|s|m|h) (default 5s)
    #[arg(long = "restart-delay", value_name = "duration", value_parser = parse_go_duration)]
    pub restart_delay: Option<i64>,
    /// Maximum number of restarts before giving up
    #[arg(long = "restart-max-attempts", value_name = "uint")]
    pub restart_max_attempts: Option<u64>,
    /// Window used to evaluate the restart policy (ns|us|ms|s|m|h)
    #[arg(long = "restart-window", value_name = "duration", value_parser = parse_go_duration)]
    pub restart_window: Option<i64>,
    /// Maximum number of tasks updated simultaneously (0 to update all at once)
    #[arg(long = "update-parallelism", value_name = "uint")]
    pub update_parallelism: Option<u64>,
    /// Delay between updates (ns|us|ms|s|m|h) (default 0s)
    #[arg(long = "update-delay", value_name = "duration", value_parser = parse_positive_duration)]
    pub update_delay: Option<i64>,
    /// Duration after each task update to monitor for failure (ns|us|ms|s|m|h) (default 5s)
    #[arg(long = "update-monitor", value_name = "duration", value_parser = parse_positive_duration)]
    pub update_monitor: Option<i64>,
    /// Action on update failure ("pause", "continue", "rollback") (default "pause")
    #[arg(long = "update-failure-action", value_name = "string")]
    pub update_failure_action: Option<String>,
    /// Failure rate to tolerate during an update (default 0)
    #[arg(long = "update-max-failure-ratio", value_name = "float", value_parser = parse_ratio)]
    pub update_max_failure_ratio: Option<f64>,
    /// Update order ("start-first", "stop-first") (default "stop-first")
    #[arg(long = "update-order", value_name = "string")]
    pub update_order: Option<String>,
    /// Maximum number of tasks rolled back simultaneously (0 to roll back all at once)
    #[arg(long = "rollback-parallelism", value_name = "uint")]
    pub rollback_parallelism: Option<u64>,
    /// Delay between task rollbacks (ns|us|ms|s|m|h) (default 0s)
    #[arg(long = "rollback-delay", value_name = "duration", value_parser = parse_positive_duration)]
    pub rollback_delay: Option<i64>,
    /// Duration after each task rollback to monitor for failure (ns|us|ms|s|m|h) (default 5s)
    #[arg(long = "rollback-monitor", value_name = "duration", value_parser = parse_positive_duration)]
    pub rollback_monitor: Option<i64>,
    /// Action on rollback failure ("pause", "continue") (default "pause")
    #[arg(long = "rollback-failure-action", value_name = "string")]
    pub rollback_failure_action: Option<String>,
    /// Failure rate to tolerate during a rollback (default 0)
    #[arg(long = "rollback-max-failure-ratio", value_name = "float", value_parser = parse_ratio)]
    pub rollback_max_failure_ratio: Option<f64>,
    /// Rollback order ("start-first", "stop-first") (default "stop-first")
    #[arg(long = "rollback-order", value_name = "string")]
    pub rollback_order: Option<String>,
    /// Endpoint mode (vip or dnsrr) (default "vip")
    #[arg(long = "endpoint-mode", value_name = "string")]
    pub endpoint_mode: Option<String>,
    /// Command to run to check health
    #[arg(long = "health-cmd", value_name = "string")]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h)
    #[arg(long = "health-interval", value_name = "duration", value_parser = parse_positive_duration)]
    pub health_interval: Option<i64>,
    /// Maximum time to allow one check to run (ms|s|m|h)
    #[arg(long = "health-timeout", value_name = "duration", value_parser = parse_positive_duration)]
    pub health_timeout: Option<i64>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long = "health-retries", value_name = "int")]
    pub health_retries: Option<i64>,
    /// Start period for the container to initialize before counting retries towards unstable (ms|s|m|h)
    #[arg(long = "health-start-period", value_name = "duration", value_parser = parse_positive_duration)]
    pub health_start_period: Option<i64>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
    /// Do not query the registry to resolve image digest and supported platforms
    #[arg(long = "no-resolve-image")]
    pub no_resolve_image: bool,
    /// Send registry authentication details to swarm agents
    #[arg(long = "with-registry-auth")]
    pub with_registry_auth: bool,
}

impl CommonFlags {
    pub fn update_policy(&self) -> UpdatePolicyFlags {
        UpdatePolicyFlags {
            parallelism: self.update_parallelism.map(|p| p as i64),
            delay: self.update_delay,
            monitor: self.update_monitor,
            failure_action: self.update_failure_action.clone(),
            max_failure_ratio: self.update_max_failure_ratio,
            order: self.update_order.clone(),
        }
    }

    pub fn rollback_policy(&self) -> UpdatePolicyFlags {
        UpdatePolicyFlags {
            parallelism: self.rollback_parallelism.map(|p| p as i64),
            delay: self.rollback_delay,
            monitor: self.rollback_monitor,
            failure_action: self.rollback_failure_action.clone(),
            max_failure_ratio: self.rollback_max_failure_ratio,
            order: self.rollback_order.clone(),
        }
    }

    pub fn update_config(
        &self,
        current: Option<ServiceSpecUpdateConfig>,
    ) -> Result<Option<ServiceSpecUpdateConfig>> {
        let current = current.map(|c| serde_json::to_value(c).unwrap_or_default());
        from_json(self.update_policy().apply(current)?)
    }

    pub fn rollback_config(
        &self,
        current: Option<ServiceSpecRollbackConfig>,
    ) -> Result<Option<ServiceSpecRollbackConfig>> {
        let current = current.map(|c| serde_json::to_value(c).unwrap_or_default());
        from_json(self.rollback_policy().apply(current)?)
    }

    /// Restart policy: untouched unless a --restart-* flag is given; then
    /// SwarmKit's defaults (any, 5s) fill what the service lacked.
    pub fn restart_policy(
        &self,
        current: Option<TaskSpecRestartPolicy>,
    ) -> Result<Option<TaskSpecRestartPolicy>> {
        let given = self.restart_condition.is_some()
            || self.restart_delay.is_some()
            || self.restart_max_attempts.is_some()
            || self.restart_window.is_some();
        if !given {
            return Ok(current);
        }
        let mut policy = current.map(|p| serde_json::to_value(p).unwrap_or_default()).unwrap_or_else(|| {
            serde_json::json!({"Condition": "any", "Delay": 5_000_000_000i64, "MaxAttempts": 0})
        });
        if let Some(condition) = &self.restart_condition {
            check_choice(
                condition,
                &["none", "on-failure", "any"],
                "restart condition",
            )?;
            policy["Condition"] = condition.clone().into();
        }
        if let Some(delay) = self.restart_delay {
            policy["Delay"] = delay.into();
        }
        if let Some(attempts) = self.restart_max_attempts {
            policy["MaxAttempts"] = attempts.into();
        }
        if let Some(window) = self.restart_window {
            policy["Window"] = window.into();
        }
        from_json(Some(policy))
    }

    /// Applies the resource flags; a service always carries both halves, as
    /// the docker CLI sends them.
    pub fn resources(&self, current: Option<TaskSpecResources>) -> TaskSpecResources {
        let mut resources = current.unwrap_or_default();
        let limits = resources.limits.get_or_insert_with(Limit::default);
        set_nonzero(&mut limits.nano_cpus, self.limit_cpu);
        set_nonzero(&mut limits.memory_bytes, self.limit_memory);
        set_nonzero(&mut limits.pids, self.limit_pids);
        let reservations = resources
            .reservations
            .get_or_insert_with(ResourceObject::default);
        set_nonzero(&mut reservations.nano_cpus, self.reserve_cpu);
        set_nonzero(&mut reservations.memory_bytes, self.reserve_memory);
        resources
    }

    /// The health check from `--health-*` / `--no-healthcheck`, on top of `current`.
    pub fn health_check(&self, current: Option<HealthConfig>) -> Result<Option<HealthConfig>> {
        let have_settings = self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some();
        if self.no_healthcheck {
            if have_settings {
                return Err("--no-healthcheck conflicts with --health-* options".into());
            }
            return Ok(Some(HealthConfig {
                test: Some(vec!["NONE".to_string()]),
                ..Default::default()
            }));
        }
        if !have_settings {
            return Ok(current);
        }
        let mut health = current
            .filter(|h| h.test.as_deref() != Some(&["NONE".to_string()][..]))
            .unwrap_or_default();
        if let Some(cmd) = &self.health_cmd {
            health.test = if cmd.is_empty() {
                None
            } else {
                Some(vec!["CMD-SHELL".to_string(), cmd.clone()])
            };
        }
        set_nonzero(&mut health.interval, self.health_interval);
        set_nonzero(&mut health.timeout, self.health_timeout);
        set_nonzero(&mut health.retries, self.health_retries);
        set_nonzero(&mut health.start_period, self.health_start_period);
        Ok(Some(health))
    }

    pub fn entrypoint_words(&self) -> Result<Option<Vec<String>>> {
        self.entrypoint.as_deref().map(shell_words).transpose()
    }
}

/// Go's `omitempty`: a zero is the same as "not set".
fn set_nonzero(field: &mut Option<i64>, value: Option<i64>) {
    if let Some(v) = value {
        *field = if v == 0 { None } else { Some(v) };
    }
}

fn from_json<T: serde::de::DeserializeOwned>(value: Option<Value>) -> Result<Option<T>> {
    value
        .map(|v| {
            serde_json::from_value(v)
                .map_err(|e| CliError::Other(format!("invalid configuration: {e}")))
        })
        .transpose()
}

/// Splits a command line into words with POSIX shell quoting, like the
/// shlex package docker uses for --entrypoint and --args.
pub fn shell_words(text: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => current.push(c),
                        None => return Err("EOF found when expecting closing quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => current.push(c),
                            Some(c) => {
                                current.push('\\');
                                current.push(c);
                            }
                            None => return Err("EOF found after escape character".into()),
                        },
                        Some(c) => current.push(c),
                        None => return Err("EOF found when expecting closing quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => current.push(c),
                    None => return Err("EOF found after escape character".into()),
                }
            }
            c => {
                in_word = true;
                current.push(c);
            }
        }
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}

/// `KEY=VALUE` list flags into a map (a bare `KEY` maps to "").
pub fn kv_map(pairs: &[String]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.clone(), String::new()),
        })
        .collect()
}

/// An `--env` entry: a bare name takes its value from this process's
/// environment when set, as docker does.
pub fn env_entry(entry: &str) -> String {
    if entry.contains('=') {
        return entry.to_string();
    }
    match std::env::var(entry) {
        Ok(value) => format!("{entry}={value}"),
        Err(_) => entry.to_string(),
    }
}

/// Appends env entries, a later one replacing an earlier one with the same name.
pub fn merge_env(current: &mut Vec<String>, entries: &[String]) {
    for entry in entries {
        let entry = env_entry(entry);
        let key = entry
            .split_once('=')
            .map_or(entry.as_str(), |(k, _)| k)
            .to_string();
        current.retain(|existing| {
            existing
                .split_once('=')
                .map_or(existing.as_str(), |(k, _)| k)
                != key
        });
        current.push(entry);
    }
}

/// Parses `--publish`: "8080:80", "8080:80/udp", "80", ranges "8080-8081:80-81",
/// or the long form "published=8080,target=80,protocol=udp,mode=host".
pub fn parse_publish(spec: &str) -> Result<Vec<EndpointPortConfig>> {
    if spec.contains('=') {
        return parse_publish_long(spec).map(|p| vec![p]);
    }
    let (ports, protocol) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let parts: Vec<&str> = ports.split(':').collect();
    let (published, target) = match parts.as_slice() {
        [target] => ("", *target),
        [published, target] => (*published, *target),
        [_ip, published, target] => (*published, *target),
        _ => {
            return Err(CliError::Other(format!(
                "invalid port format for --publish: {spec}"
            )))
        }
    };
    let targets = port_range(target, spec)?;
    let published = if published.is_empty() {
        None
    } else {
        Some(port_range(published, spec)?)
    };
    if let Some(p) = &published {
        if p.len() != targets.len() && p.len() != 1 && targets.len() != 1 {
            return Err(CliError::Other(format!(
                "invalid ranges specified for container and host ports: {spec}"
            )));
        }
    }
    let protocol = parse_enum(&protocol.to_lowercase(), "protocol")?;
    Ok(targets
        .iter()
        .enumerate()
        .map(|(i, &target)| EndpointPortConfig {
            protocol: Some(protocol),
            target_port: Some(target),
            published_port: published
                .as_ref()
                .map(|p| p.get(i).copied().unwrap_or(p[0])),
            publish_mode: Some(bollard::models::EndpointPortConfigPublishModeEnum::INGRESS),
            ..Default::default()
        })
        .collect())
}

fn port_range(text: &str, spec: &str) -> Result<Vec<i64>> {
    let bad = || CliError::Other(format!("invalid port format for --publish: {spec}"));
    let (start, end) = text.split_once('-').unwrap_or((text, text));
    let start: i64 = start.parse().map_err(|_| bad())?;
    let end: i64 = end.parse().map_err(|_| bad())?;
    if start > end || !(0..=65535).contains(&end) {
        return Err(bad());
    }
    Ok((start..=end).collect())
}

fn parse_publish_long(spec: &str) -> Result<EndpointPortConfig> {
    let mut port = EndpointPortConfig {
        protocol: Some(bollard::models::EndpointPortConfigProtocolEnum::TCP),
        publish_mode: Some(bollard::models::EndpointPortConfigPublishModeEnum::INGRESS),
        ..Default::default()
    };
    for field in spec.split(',') {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| CliError::Other(format!("invalid field {field}")))?;
        let number = || {
            value
                .parse::<i64>()
                .map_err(|_| CliError::Other(format!("invalid {key} value {value}")))
        };
        match key.to_lowercase().as_str() {
            "protocol" => port.protocol = Some(parse_enum(&value.to_lowercase(), "protocol")?),
            "mode" => port.publish_mode = Some(parse_enum(&value.to_lowercase(), "publish mode")?),
            "target" => port.target_port = Some(number()?),
            "published" => port.published_port = Some(number()?),
            _ => return Err(CliError::Other(format!("invalid field key {key}"))),
        }
    }
    if port.target_port.is_none() {
        return Err(CliError::Other(format!(
            "missing mandatory field \"target\" in {spec}"
        )));
    }
    Ok(port)
}

fn parse_enum<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_value(Value::String(text.to_string()))
        .map_err(|_| CliError::Other(format!("invalid {what}: {text}")))
}

/// Parses `--mount type=bind,source=/a,target=/b,readonly`.
pub fn parse_mount(spec: &str) -> Result<Mount> {
    let mut mount = serde_json::json!({"Type": "volume"});
    for field in spec.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v)),
            None => (field.to_lowercase(), None),
        };
        let text = || {
            value.map(str::to_string).ok_or_else(|| {
                CliError::Other(format!("invalid field '{field}' must be a key=value pair"))
            })
        };
        let flag = || parse_bool(value.unwrap_or("true"), field);
        match key.as_str() {
            "type" => mount["Type"] = text()?.into(),
            "source" | "src" => mount["Source"] = text()?.into(),
            "target" | "dst" | "destination" => mount["Target"] = text()?.into(),
            "readonly" | "ro" => mount["ReadOnly"] = flag()?.into(),
            "consistency" => mount["Consistency"] = text()?.into(),
            "bind-propagation" => mount["BindOptions"]["Propagation"] = text()?.into(),
            "volume-nocopy" => mount["VolumeOptions"]["NoCopy"] = flag()?.into(),
            "volume-driver" => mount["VolumeOptions"]["DriverConfig"]["Name"] = text()?.into(),
            "volume-label" => {
                let (k, v) = text()?
                    .split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .unwrap_or((text()?, String::new()));
                mount["VolumeOptions"]["Labels"][k] = v.into();
            }
            "volume-opt" => {
                let (k, v) = text()?
                    .split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .unwrap_or((text()?, String::new()));
                mount["VolumeOptions"]["DriverConfig"]["Options"][k] = v.into();
            }
            "tmpfs-size" => mount["TmpfsOptions"]["SizeBytes"] = parse_ram_bytes(&text()?)?.into(),
            "tmpfs-mode" => {
                let mode = i64::from_str_radix(&text()?, 8).map_err(|_| {
                    CliError::Other(format!(
                        "invalid value for {key}: {}",
                        text().unwrap_or_default()
                    ))
                })?;
                mount["TmpfsOptions"]["Mode"] = mode.into();
            }
            _ => {
                return Err(CliError::Other(format!(
                    "unexpected key '{key}' in '{field}'"
                )))
            }
        }
    }
    if mount.get("Target").is_none() {
        return Err("target is required".into());
    }
    serde_json::from_value(mount).map_err(|e| CliError::Other(format!("invalid mount {spec}: {e}")))
}

/// Parses `--network` / `--network-add` as docker's `opts.NetworkOpt`: a
/// network name or ID, or (when the value holds `word=word` anywhere) the
/// CSV long form `name=N,alias=A,driver-opt=k=v,ip=..,ip6=..`, whose keys
/// and values docker lower-cases. The target is still a name here; the
/// caller turns it into the network's ID. ip and ip6 are accepted and, as
/// in docker's convertNetworks, dropped.
pub fn parse_network(value: &str) -> Result<NetworkAttachmentConfig> {
    if !network_long_syntax(value) {
        return Ok(NetworkAttachmentConfig {
            target: Some(value.to_string()),
            ..Default::default()
        });
    }
    let mut target = String::new();
    let mut aliases = Vec::new();
    let mut driver_opts: Option<HashMap<String, String>> = None;
    for field in csv_record(value)? {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| CliError::Other(format!("invalid field {field}")))?;
        let key = key.to_lowercase().trim().to_string();
        let value = value.to_lowercase().trim().to_string();
        match key.as_str() {
            "name" => target = value,
            "alias" => aliases.push(value),
            "ip" | "ip6" => {}
            "driver-opt" => {
                let (k, v) = value.split_once('=').ok_or_else(|| {
                    CliError::Other("invalid key value pair format in driver options".to_string())
                })?;
                driver_opts
                    .get_or_insert_with(HashMap::new)
                    .insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => return Err(CliError::Other(format!("invalid field key {key}"))),
        }
    }
    if target.is_empty() {
        return Err("network name/id is not specified".into());
    }
    Ok(NetworkAttachmentConfig {
        target: Some(target),
        aliases: (!aliases.is_empty()).then_some(aliases),
        driver_opts,
    })
}

/// Go's unanchored `\w+=\w+(,\w+=\w+)*` match: an "=" with a word character
/// (ASCII letter, digit or "_") on each side.
fn network_long_syntax(value: &str) -> bool {
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    value
        .as_bytes()
        .windows(3)
        .any(|w| w[1] == b'=' && word(&w[0]) && word(&w[2]))
}

/// One record of Go's encoding/csv (comma-separated, `"`-quoted fields with
/// `""` for a quote, the record ending at a newline), with its errors.
pub fn csv_record(text: &str) -> Result<Vec<String>> {
    let line = text.split('\n').next().unwrap_or_default();
    let line = line.strip_suffix('\r').unwrap_or(line);
    let error = |column: usize, what: &str| {
        CliError::Other(format!("parse error on line 1, column {column}: {what}"))
    };
    let chars: Vec<char> = line.chars().collect();
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        let mut field = String::new();
        if chars.get(i) == Some(&'"') {
            i += 1;
            loop {
                match chars.get(i) {
                    Some('"') if chars.get(i + 1) == Some(&'"') => {
                        field.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        match chars.get(i) {
                            None | Some(',') => break,
                            Some(_) => {
                                return Err(error(
                                    i + 1,
                                    "extraneous or missing \" in quoted-field",
                                ))
                            }
                        }
                    }
                    Some(c) => {
                        field.push(*c);
                        i += 1;
                    }
                    None => return Err(error(i + 1, "extraneous or missing \" in quoted-field")),
                }
            }
        } else {
            while let Some(&c) = chars.get(i) {
                match c {
                    ',' => break,
                    '"' => return Err(error(i + 1, "bare \" in non-quoted-field")),
                    c => field.push(c),
                }
                i += 1;
            }
        }
        fields.push(field);
        if chars.get(i) == Some(&',') {
            i += 1;
        } else {
            return Ok(fields);
        }
    }
}

fn parse_bool(value: &str, field: &str) -> Result<bool> {
    match value.to_lowercase().as_str() {
        "1" | "true" | "t" => Ok(true),
        "0" | "false" | "f" => Ok(false),
        _ => Err(CliError::Other(format!("invalid value for {field}"))),
    }
}

/// The label that turns rebalancing off (`false`) on the swarm's spec or
/// a service's (the manager's `orchestrator::rebalance::LABEL`).
pub const REBALANCE_LABEL: &str = "com.flotilla.rebalance";

/// `--rebalance`: the service label the manager reads (absent means on).
pub fn set_rebalance(labels: &mut std::collections::HashMap<String, String>, on: Option<bool>) {
    if let Some(on) = on {
        labels.insert(REBALANCE_LABEL.to_string(), on.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shell_words_like_shlex() {
        assert_eq!(
            shell_words("ping -c 1 'a b' \"c d\"").unwrap(),
            vec!["ping", "-c", "1", "a b", "c d"]
        );
        assert!(shell_words("'open").is_err());
    }

    #[test]
    fn publish_forms() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!([{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}])
        );
        let p = parse_publish("80/udp").unwrap();
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!([{"Protocol": "udp", "TargetPort": 80, "PublishMode": "ingress"}])
        );
        let p = parse_publish("published=8080,target=80,mode=host").unwrap();
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!([{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "host"}])
        );
        assert_eq!(parse_publish("8080-8081:80-81").unwrap().len(), 2);
        assert!(parse_publish("x:80").is_err());
    }

    #[test]
    fn mounts() {
        let m = parse_mount("type=bind,source=/a,target=/b,readonly").unwrap();
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"Type": "bind", "Source": "/a", "Target": "/b", "ReadOnly": true})
        );
        let m = parse_mount("type=tmpfs,dst=/t,tmpfs-size=64m").unwrap();
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 67108864}})
        );
        assert!(parse_mount("type=bind,source=/a").is_err());
    }

    #[test]
    fn network_short_and_long_syntax() {
        let n = |text: &str| serde_json::to_value(parse_network(text).unwrap()).unwrap();
        assert_eq!(n("my-net"), json!({"Target": "my-net"}));
        // No word=word anywhere: the whole value is a name, as in docker.
        assert_eq!(n("x=-y"), json!({"Target": "x=-y"}));
        assert_eq!(n("name=my-net"), json!({"Target": "my-net"}));
        assert_eq!(
            n("name=Front,alias=Web,alias=www,driver-opt=Com.Opt=V1,ip=10.0.0.5"),
            json!({"Target": "front", "Aliases": ["web", "www"], "DriverOpts": {"com.opt": "v1"}})
        );
        assert_eq!(
            n("\"name=a,b\",alias=c"),
            json!({"Target": "a,b", "Aliases": ["c"]})
        );
        let err = |text: &str| parse_network(text).unwrap_err().to_string();
        assert_eq!(err("name=a,bogus=1"), "invalid field key bogus");
        assert_eq!(err("name=a,alias"), "invalid field alias");
        assert_eq!(err("alias=a"), "network name/id is not specified");
        assert_eq!(
            err("name=a,driver-opt=x"),
            "invalid key value pair format in driver options"
        );
        assert!(err("name=a\"b").contains("bare \" in non-quoted-field"));
        assert!(err("\"name=a").contains("extraneous or missing \" in quoted-field"));
    }

    #[test]
    fn env_merging() {
        let mut env = vec!["A=1".to_string(), "B=2".to_string()];
        merge_env(&mut env, &["A=3".to_string(), "C=4".to_string()]);
        assert_eq!(env, vec!["B=2", "A=3", "C=4"]);
    }

    #[test]
    fn update_policy_starts_from_swarmkit_defaults() {
        let flags = CommonFlags {
            update_delay: Some(10_000_000_000),
            update_parallelism: Some(2),
            ..Default::default()
        };
        let config = flags.update_config(None).unwrap();
        assert_eq!(
            serde_json::to_value(config).unwrap(),
            json!({"Parallelism": 2, "Delay": 10_000_000_000i64, "FailureAction": "pause", "Monitor": 5_000_000_000i64, "MaxFailureRatio": 0.0, "Order": "stop-first"})
        );
        assert!(CommonFlags::default()
            .update_config(None)
            .unwrap()
            .is_none());
        let bad = CommonFlags {
            update_failure_action: Some("explode".into()),
            ..Default::default()
        };
        assert!(bad.update_config(None).is_err());
    }
}
