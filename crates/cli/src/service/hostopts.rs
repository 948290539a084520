//! The container options Docker's swarm refuses or ignores, as `docker run`
//! names them (`--privileged`, `--device`, `--security-opt`, `--shm-size`),
//! and the ones the swarm spec has but the docker CLI's services only
//! partly take (`--cap-add`, `--cap-drop`, `--sysctl`, `--ulimit`): their
//! flags on `service create` and `service update`, their parsing (shared
//! with `stack deploy`), and where each goes in the ContainerSpec.
//!
//! Privileged, devices, shm size and a named AppArmor profile have no field
//! in the swarm spec: they go in reserved `com.flotilla.*` container labels
//! (the daemon's flotilla_store::host_options reads them), which the docker
//! CLI can set too with `--container-label`.

use std::collections::{BTreeSet, HashMap};

use bollard::models::{
    ResourcesUlimits, TaskSpecContainerSpec, TaskSpecContainerSpecPrivileges,
    TaskSpecContainerSpecPrivilegesAppArmor,
    TaskSpecContainerSpecPrivilegesAppArmorModeEnum as AppArmorMode,
    TaskSpecContainerSpecPrivilegesSeLinuxContext, TaskSpecContainerSpecPrivilegesSeccomp,
    TaskSpecContainerSpecPrivilegesSeccompModeEnum as SeccompMode,
};
use clap::Args;

use crate::client::{CliError, Result};
use crate::format::units::parse_ram_bytes;

pub use flotilla_store::host_options::{
    parse_device, Device, APPARMOR_PROFILE as APPARMOR_PROFILE_LABEL, DEVICES as DEVICES_LABEL,
    PRIVILEGED as PRIVILEGED_LABEL, SHM_SIZE as SHM_SIZE_LABEL,
};

/// Flags `service create` and `service update` share.
#[derive(Args, Debug, Default, Clone)]
pub struct HostFlags {
    /// Give extended privileges to the service's containers (the swarm must allow it)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "bool", value_parser = crate::tls::parse_go_bool)]
    pub privileged: Option<bool>,
    /// Security options (seccomp=PROFILE|unconfined, apparmor=PROFILE|unconfined, no-new-privileges[=bool], label=...)
    #[arg(long = "security-opt", value_name = "list")]
    pub security_opt: Vec<String>,
    /// Add Linux capabilities
    #[arg(long = "cap-add", value_name = "list")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long = "cap-drop", value_name = "list")]
    pub cap_drop: Vec<String>,
    /// Size of /dev/shm (0 for the engine's default)
    #[arg(long = "shm-size", value_name = "bytes", value_parser = parse_ram_bytes)]
    pub shm_size: Option<i64>,
}

/// `service create`'s own: whole lists.
#[derive(Args, Debug, Default, Clone)]
pub struct CreateHostFlags {
    #[command(flatten)]
    pub common: HostFlags,
    /// Add a host device to the service's containers (HOST[:CONTAINER[:PERMS]]; the swarm must allow it)
    #[arg(long, value_name = "list")]
    pub device: Vec<String>,
    /// Sysctl options
    #[arg(long, value_name = "list")]
    pub sysctl: Vec<String>,
    /// Ulimit options (NAME=SOFT[:HARD])
    #[arg(long, value_name = "list")]
    pub ulimit: Vec<String>,
}

/// `service update`'s own: additions and removals, as docker's update flags.
#[derive(Args, Debug, Default, Clone)]
pub struct UpdateHostFlags {
    #[command(flatten)]
    pub common: HostFlags,
    /// Add or update a host device (HOST[:CONTAINER[:PERMS]])
    #[arg(long = "device-add", value_name = "list")]
    pub device_add: Vec<String>,
    /// Remove a device by its path in the container
    #[arg(long = "device-rm", value_name = "list")]
    pub device_rm: Vec<String>,
    /// Add or update a Sysctl option
    #[arg(long = "sysctl-add", value_name = "list")]
    pub sysctl_add: Vec<String>,
    /// Remove a Sysctl option
    #[arg(long = "sysctl-rm", value_name = "list")]
    pub sysctl_rm: Vec<String>,
    /// Add or update a ulimit option
    #[arg(long = "ulimit-add", value_name = "ulimit")]
    pub ulimit_add: Vec<String>,
    /// Remove a ulimit option
    #[arg(long = "ulimit-rm", value_name = "list")]
    pub ulimit_rm: Vec<String>,
}

impl CreateHostFlags {
    pub fn apply(&self, c: &mut TaskSpecContainerSpec) -> Result<()> {
        self.common.apply_settings(c)?;
        let (add, drop) = effective_caps(
            self.common.cap_add.iter().map(String::as_str),
            self.common.cap_drop.iter().map(String::as_str),
        );
        c.capability_add = non_empty(add);
        c.capability_drop = non_empty(drop);
        let mut devices = Vec::new();
        for text in &self.device {
            devices.push(parse_device(text)?);
        }
        set_devices(c, &devices);
        let sysctls = parse_sysctls(&self.sysctl)?;
        if !sysctls.is_empty() {
            c.sysctls = Some(sysctls);
        }
        let mut ulimits = Vec::new();
        for text in &self.ulimit {
            upsert_ulimit(&mut ulimits, parse_ulimit(text)?);
        }
        c.ulimits = non_empty(ulimits);
        Ok(())
    }
}

impl UpdateHostFlags {
    pub fn apply(&self, c: &mut TaskSpecContainerSpec) -> Result<()> {
        self.common.apply_settings(c)?;
        self.update_caps(c);
        self.update_devices(c)?;
        if !self.sysctl_add.is_empty() || !self.sysctl_rm.is_empty() {
            let mut sysctls = c.sysctls.take().unwrap_or_default();
            for key in &self.sysctl_rm {
                sysctls.remove(key.split_once('=').map_or(key.as_str(), |(k, _)| k));
            }
            sysctls.extend(parse_sysctls(&self.sysctl_add)?);
            c.sysctls = (!sysctls.is_empty()).then_some(sysctls);
        }
        if !self.ulimit_add.is_empty() || !self.ulimit_rm.is_empty() {
            let mut ulimits = c.ulimits.take().unwrap_or_default();
            ulimits.retain(|u| {
                !self
                    .ulimit_rm
                    .iter()
                    .any(|name| u.name.as_deref() == Some(name.split('=').next().unwrap_or(name)))
            });
            for text in &self.ulimit_add {
                upsert_ulimit(&mut ulimits, parse_ulimit(text)?);
            }
            c.ulimits = non_empty(ulimits);
        }
        Ok(())
    }

    /// docker's updateCapabilities: an added capability leaves the drop
    /// list, a dropped one the add list.
    fn update_caps(&self, c: &mut TaskSpecContainerSpec) {
        let flags = &self.common;
        if flags.cap_add.is_empty() && flags.cap_drop.is_empty() {
            return;
        }
        let (to_add, to_drop) = effective_caps(
            flags.cap_add.iter().map(String::as_str),
            flags.cap_drop.iter().map(String::as_str),
        );
        let mut add: Vec<String> = c.capability_add.take().unwrap_or_default();
        let mut drop: Vec<String> = c.capability_drop.take().unwrap_or_default();
        add.retain(|cap| !to_drop.contains(cap));
        drop.retain(|cap| !to_add.contains(cap));
        add.extend(to_add);
        drop.extend(to_drop);
        let (add, drop) = effective_caps(
            add.iter().map(String::as_str),
            drop.iter().map(String::as_str),
        );
        c.capability_add = non_empty(add);
        c.capability_drop = non_empty(drop);
    }

    fn update_devices(&self, c: &mut TaskSpecContainerSpec) -> Result<()> {
        if self.device_add.is_empty() && self.device_rm.is_empty() {
            return Ok(());
        }
        let mut devices = current_devices(c)?;
        devices.retain(|d| {
            !self
                .device_rm
                .iter()
                .any(|rm| d.container == *rm || d.host == *rm)
        });
        for text in &self.device_add {
            let device = parse_device(text)?;
            devices.retain(|d| d.container != device.container);
            devices.push(device);
        }
        set_devices(c, &devices);
        Ok(())
    }
}

impl HostFlags {
    /// `--privileged`, `--shm-size`, `--security-opt`: settings, each
    /// replacing what the spec had.
    fn apply_settings(&self, c: &mut TaskSpecContainerSpec) -> Result<()> {
        if let Some(privileged) = self.privileged {
            set_label(c, PRIVILEGED_LABEL, privileged.then(|| "true".to_string()));
        }
        if let Some(size) = self.shm_size {
            if size < 0 {
                return Err("invalid --shm-size: it cannot be negative".into());
            }
            set_label(c, SHM_SIZE_LABEL, (size > 0).then(|| size.to_string()));
        }
        for opt in &self.security_opt {
            apply_security_opt(c, opt, &|path| {
                std::fs::read_to_string(path)
                    .map_err(|e| format!("opening seccomp profile ({path}) failed: {e}"))
            })?;
        }
        Ok(())
    }
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

fn set_label(c: &mut TaskSpecContainerSpec, key: &str, value: Option<String>) {
    let labels = c.labels.get_or_insert_with(HashMap::new);
    match value {
        Some(value) => {
            labels.insert(key.to_string(), value);
        }
        None => {
            labels.remove(key);
        }
    }
}

/// The devices label's value for `devices` (none removes it).
pub fn devices_label(devices: &[Device]) -> Option<String> {
    let entries: Vec<String> = devices.iter().map(Device::to_string).collect();
    (!entries.is_empty()).then(|| entries.join(","))
}

fn set_devices(c: &mut TaskSpecContainerSpec, devices: &[Device]) {
    set_label(c, DEVICES_LABEL, devices_label(devices));
}

fn current_devices(c: &TaskSpecContainerSpec) -> Result<Vec<Device>> {
    let Some(value) = c.labels.as_ref().and_then(|l| l.get(DEVICES_LABEL)) else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            parse_device(e).map_err(|err| {
                CliError::Other(format!("the service's {DEVICES_LABEL} label: {err}"))
            })
        })
        .collect()
}

/// `KEY=VALUE` sysctls.
fn parse_sysctls(list: &[String]) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for entry in list {
        match entry.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_string(), v.to_string());
            }
            _ => {
                return Err(CliError::Other(format!(
                    "invalid sysctl: {entry}: expected KEY=VALUE"
                )))
            }
        }
    }
    Ok(out)
}

/// The names go-units knows (docker's ulimitNameMapping).
const ULIMIT_NAMES: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// go-units' ParseUlimit: `NAME=SOFT[:HARD]`.
pub fn parse_ulimit(text: &str) -> std::result::Result<ResourcesUlimits, String> {
    let (name, limits) = text
        .split_once('=')
        .ok_or_else(|| format!("invalid ulimit argument: {text}"))?;
    if !ULIMIT_NAMES.contains(&name) {
        return Err(format!("invalid ulimit type: {name}"));
    }
    let number = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| format!("invalid ulimit argument: {text}"))
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((soft, hard)) => (number(soft)?, number(hard)?),
        None => {
            let n = number(limits)?;
            (n, n)
        }
    };
    if hard >= 0 && (soft > hard || soft < 0) {
        return Err(format!(
            "ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
        ));
    }
    Ok(ResourcesUlimits {
        name: Some(name.to_string()),
        soft: Some(soft),
        hard: Some(hard),
    })
}

fn upsert_ulimit(list: &mut Vec<ResourcesUlimits>, ulimit: ResourcesUlimits) {
    list.retain(|u| u.name != ulimit.name);
    list.push(ulimit);
    list.sort_by(|a, b| a.name.cmp(&b.name));
}

/// docker's opts.EffectiveCapAddCapDrop: names upper-cased with `CAP_`,
/// ALL alone when given, a capability both added and dropped added.
pub fn effective_caps<'a>(
    add: impl Iterator<Item = &'a str>,
    drop: impl Iterator<Item = &'a str>,
) -> (Vec<String>, Vec<String>) {
    let normalize = |c: &str| {
        let c = c.trim().to_uppercase();
        if c == "ALL" || c == "RESET" || c.starts_with("CAP_") {
            c
        } else {
            format!("CAP_{c}")
        }
    };
    let mut adds: BTreeSet<String> = add.map(normalize).collect();
    let mut drops: BTreeSet<String> = drop.map(normalize).collect();
    if adds.contains("ALL") {
        adds = BTreeSet::from(["ALL".to_string()]);
    }
    if drops.contains("ALL") {
        drops = BTreeSet::from(["ALL".to_string()]);
    }
    let cap_drop = drops
        .iter()
        .filter(|c| !adds.contains(*c) && *c != "RESET")
        .cloned()
        .collect();
    let cap_add = adds.into_iter().filter(|c| c != "RESET").collect();
    (cap_add, cap_drop)
}

/// Reads a seccomp profile file (the client's, as `docker run` reads it).
pub type ReadProfile<'a> = &'a dyn Fn(&str) -> std::result::Result<String, String>;

/// One `--security-opt` (or compose `security_opt` entry) as `docker run`
/// takes it (`KEY=VALUE`, or the older `KEY:VALUE`), onto the spec's
/// Privileges (and the AppArmor profile label, a name the swarm spec
/// cannot hold).
pub fn apply_security_opt(
    c: &mut TaskSpecContainerSpec,
    opt: &str,
    read_profile: ReadProfile,
) -> std::result::Result<(), String> {
    let (key, value) = match opt.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => match opt.split_once(':') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        },
    };
    let invalid = || format!("invalid --security-opt: {opt:?}");
    let privileges = c
        .privileges
        .get_or_insert_with(TaskSpecContainerSpecPrivileges::default);
    match (key, value) {
        ("no-new-privileges", None) => privileges.no_new_privileges = Some(true),
        ("no-new-privileges", Some(v)) => {
            privileges.no_new_privileges =
                Some(crate::tls::parse_go_bool(v).map_err(|_| invalid())?);
        }
        ("seccomp", Some(v)) => {
            privileges.seccomp = Some(match v {
                "unconfined" => TaskSpecContainerSpecPrivilegesSeccomp {
                    mode: Some(SeccompMode::UNCONFINED),
                    profile: None,
                },
                "default" | "builtin" => TaskSpecContainerSpecPrivilegesSeccomp {
                    mode: Some(SeccompMode::DEFAULT),
                    profile: None,
                },
                path => {
                    let text = read_profile(path)?;
                    let json: serde_json::Value = serde_json::from_str(&text)
                        .map_err(|e| format!("decoding seccomp profile ({path}) failed: {e}"))?;
                    TaskSpecContainerSpecPrivilegesSeccomp {
                        mode: Some(SeccompMode::CUSTOM),
                        profile: Some(json.to_string()),
                    }
                }
            });
        }
        ("apparmor", Some(v)) => {
            let mode = match v {
                "unconfined" => AppArmorMode::DISABLED,
                _ => AppArmorMode::DEFAULT,
            };
            privileges.app_armor =
                Some(TaskSpecContainerSpecPrivilegesAppArmor { mode: Some(mode) });
            let named = !matches!(v, "unconfined" | "docker-default" | "default" | "");
            set_label(c, APPARMOR_PROFILE_LABEL, named.then(|| v.to_string()));
        }
        ("label", Some(v)) => {
            let context = privileges
                .se_linux_context
                .get_or_insert_with(TaskSpecContainerSpecPrivilegesSeLinuxContext::default);
            let (part, text) = v.split_once(':').unwrap_or((v, ""));
            let text = Some(text.to_string());
            match part {
                "disable" => context.disable = Some(true),
                "user" => context.user = text,
                "role" => context.role = text,
                "type" => context.typ = text,
                "level" => context.level = text,
                _ => return Err(invalid()),
            }
        }
        _ => {
            return Err(format!(
                "{}: a service takes seccomp=, apparmor=, no-new-privileges and label= options",
                invalid()
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> TaskSpecContainerSpec {
        TaskSpecContainerSpec::default()
    }

    #[test]
    fn create_flags_fill_the_spec_and_reserved_labels() {
        let flags = CreateHostFlags {
            common: HostFlags {
                privileged: Some(true),
                security_opt: vec![
                    "seccomp=unconfined".into(),
                    "apparmor=unconfined".into(),
                    "no-new-privileges".into(),
                    "label=level:s0:c100".into(),
                ],
                cap_add: vec!["net_admin".into(), "SYS_PTRACE".into()],
                cap_drop: vec!["mknod".into()],
                shm_size: Some(64 << 20),
            },
            device: vec!["/dev/null:/dev/mydev".into(), "/dev/fuse".into()],
            sysctl: vec!["net.core.somaxconn=1024".into()],
            ulimit: vec!["nofile=1024:2048".into(), "nproc=512".into()],
        };
        let mut c = spec();
        flags.apply(&mut c).unwrap();
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({
                "Labels": {
                    "com.flotilla.privileged": "true",
                    "com.flotilla.shm-size": "67108864",
                    "com.flotilla.devices": "/dev/null:/dev/mydev:rwm,/dev/fuse:/dev/fuse:rwm",
                },
                "Privileges": {
                    "Seccomp": {"Mode": "unconfined"},
                    "AppArmor": {"Mode": "disabled"},
                    "NoNewPrivileges": true,
                    "SELinuxContext": {"Level": "s0:c100"},
                },
                "Sysctls": {"net.core.somaxconn": "1024"},
                "CapabilityAdd": ["CAP_NET_ADMIN", "CAP_SYS_PTRACE"],
                "CapabilityDrop": ["CAP_MKNOD"],
                "Ulimits": [
                    {"Name": "nofile", "Soft": 1024, "Hard": 2048},
                    {"Name": "nproc", "Soft": 512, "Hard": 512},
                ],
            })
        );
    }

    #[test]
    fn update_flags_add_and_remove() {
        let mut c = spec();
        CreateHostFlags {
            common: HostFlags {
                privileged: Some(true),
                cap_add: vec!["NET_ADMIN".into()],
                cap_drop: vec!["MKNOD".into()],
                ..Default::default()
            },
            device: vec!["/dev/fuse".into(), "/dev/null:/dev/mydev".into()],
            sysctl: vec!["a.b=1".into(), "c.d=2".into()],
            ulimit: vec!["nofile=10".into()],
        }
        .apply(&mut c)
        .unwrap();
        UpdateHostFlags {
            common: HostFlags {
                privileged: Some(false),
                cap_add: vec!["mknod".into()],
                cap_drop: vec!["net_admin".into()],
                shm_size: Some(0),
                ..Default::default()
            },
            device_add: vec!["/dev/zero:/dev/mydev:r".into()],
            device_rm: vec!["/dev/fuse".into()],
            sysctl_add: vec!["e.f=3".into()],
            sysctl_rm: vec!["a.b".into()],
            ulimit_add: vec!["nproc=5:6".into()],
            ulimit_rm: vec!["nofile".into()],
        }
        .apply(&mut c)
        .unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v["Labels"],
            json!({"com.flotilla.devices": "/dev/zero:/dev/mydev:r"})
        );
        assert_eq!(v["CapabilityAdd"], json!(["CAP_MKNOD"]));
        assert_eq!(v["CapabilityDrop"], json!(["CAP_NET_ADMIN"]));
        assert_eq!(v["Sysctls"], json!({"c.d": "2", "e.f": "3"}));
        assert_eq!(
            v["Ulimits"],
            json!([{"Name": "nproc", "Soft": 5, "Hard": 6}])
        );
    }

    #[test]
    fn bad_values_are_refused_with_docker_words() {
        assert_eq!(
            parse_ulimit("nofile").unwrap_err(),
            "invalid ulimit argument: nofile"
        );
        assert_eq!(
            parse_ulimit("bogus=1").unwrap_err(),
            "invalid ulimit type: bogus"
        );
        assert_eq!(
            parse_ulimit("nofile=20:10").unwrap_err(),
            "ulimit soft limit must be less than or equal to hard limit: 20 > 10"
        );
        assert_eq!(
            parse_device("/a:/b:rx").unwrap_err(),
            "invalid device mode: rx"
        );
        assert!(parse_device("fuse").is_err());
        let read = |_: &str| -> std::result::Result<String, String> {
            Ok("{\"defaultAction\": \"SCMP_ACT_ALLOW\"}".into())
        };
        let mut c = spec();
        apply_security_opt(&mut c, "seccomp=/p.json", &read).unwrap();
        let seccomp = c.privileges.unwrap().seccomp.unwrap();
        assert_eq!(seccomp.mode, Some(SeccompMode::CUSTOM));
        assert_eq!(
            seccomp.profile.as_deref(),
            Some(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#)
        );
        let mut c = spec();
        let err = apply_security_opt(&mut c, "systempaths=unconfined", &read).unwrap_err();
        assert!(
            err.starts_with("invalid --security-opt: \"systempaths=unconfined\""),
            "{err}"
        );
        apply_security_opt(&mut c, "apparmor=my-profile", &read).unwrap();
        assert_eq!(c.labels.unwrap()[APPARMOR_PROFILE_LABEL], "my-profile");
        let bad_json = |_: &str| -> std::result::Result<String, String> { Ok("nope".into()) };
        assert!(
            apply_security_opt(&mut spec(), "seccomp:/p.json", &bad_json)
                .unwrap_err()
                .starts_with("decoding seccomp profile (/p.json) failed")
        );
    }
}
