//! The container options Docker's swarm spec has no field for (moby#24862,
//! swarmkit#1244): privileged, devices, the size of /dev/shm and a named
//! AppArmor profile. Flotilla keeps them as reserved labels of the
//! ContainerSpec, so they are part of the task template (a change rolls the
//! tasks, as any spec change does), every client decodes the service, and
//! the docker CLI can set them with `--container-label`. The manager checks
//! them on create and update; the executors read them here.

use bollard::models::TaskSpecContainerSpec;

/// `true` runs the task's container privileged.
pub const PRIVILEGED: &str = "com.flotilla.privileged";
/// Comma-separated `HOST[:CONTAINER[:PERMS]]` entries, as `docker run
/// --device` takes them.
pub const DEVICES: &str = "com.flotilla.devices";
/// The size of the container's /dev/shm, in bytes.
pub const SHM_SIZE: &str = "com.flotilla.shm-size";
/// An AppArmor profile by name (the swarm spec only has default and
/// disabled).
pub const APPARMOR_PROFILE: &str = "com.flotilla.apparmor-profile";

/// The swarm setting (a label of the SwarmSpec) that lets services ask for
/// privileged containers and devices: `true` allows them. Off by default,
/// as Nomad's `allow_privileged`.
pub const ALLOW_PRIVILEGED: &str = "com.flotilla.allow-privileged";

/// Whether the swarm allows privileged containers and devices.
pub fn swarm_allows_privileged(swarm: Option<&bollard::models::Swarm>) -> bool {
    swarm
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.labels.as_ref())
        .and_then(|l| l.get(ALLOW_PRIVILEGED))
        .and_then(|v| parse_bool(v))
        .unwrap_or(false)
}

/// Why a service spec may not be written now, if it may not: it asks for
/// privileged containers or devices while the swarm does not allow them,
/// and more than the service already had (`current`'s spec or previous
/// spec: a service that was allowed keeps running, and can still be
/// scaled or rolled back, once the swarm stops allowing new ones).
pub fn privilege_refusal(
    swarm: Option<&bollard::models::Swarm>,
    spec: &bollard::models::ServiceSpec,
    current: Option<&crate::models::Service>,
) -> Option<String> {
    let options = |spec: Option<&bollard::models::ServiceSpec>| {
        spec.and_then(|s| s.task_template.as_ref())
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| HostOptions::of(c).ok())
            .unwrap_or_default()
    };
    let wanted = options(Some(spec));
    let asked = wanted.needing_privilege();
    if asked.is_empty() || swarm_allows_privileged(swarm) {
        return None;
    }
    let granted = |had: HostOptions| {
        (had.privileged || !wanted.privileged)
            && wanted.devices.iter().all(|d| had.devices.contains(d))
    };
    if let Some(svc) = current {
        if granted(options(svc.spec.as_ref())) || granted(options(svc.previous_spec.as_ref())) {
            return None;
        }
    }
    let name = spec.name.as_deref().unwrap_or_default();
    let verb = if asked.len() == 1 { "is" } else { "are" };
    Some(format!(
        "service \"{name}\": {} {verb} not allowed on this swarm (flotilla swarm update --allow-privileged)",
        asked.join(" and ")
    ))
}

/// One device passed through to a task's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub host: String,
    pub container: String,
    /// cgroup permissions, some of `rwm`.
    pub permissions: String,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.host, self.container, self.permissions)
    }
}

/// The options decoded from a container spec's reserved labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostOptions {
    pub privileged: bool,
    pub devices: Vec<Device>,
    pub shm_size: Option<i64>,
    pub apparmor_profile: Option<String>,
}

impl HostOptions {
    /// Decodes the reserved labels of `spec`; a malformed one is an error
    /// that names it.
    pub fn of(spec: &TaskSpecContainerSpec) -> Result<HostOptions, String> {
        let Some(labels) = spec.labels.as_ref() else {
            return Ok(HostOptions::default());
        };
        let mut options = HostOptions::default();
        if let Some(value) = labels.get(PRIVILEGED) {
            options.privileged = parse_bool(value)
                .ok_or_else(|| format!("label {PRIVILEGED}={value:?}: expected true or false"))?;
        }
        if let Some(value) = labels.get(DEVICES) {
            for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                options
                    .devices
                    .push(parse_device(entry).map_err(|e| format!("label {DEVICES}: {e}"))?);
            }
        }
        if let Some(value) = labels.get(SHM_SIZE) {
            match value.trim().parse::<i64>() {
                Ok(0) => {}
                Ok(n) if n > 0 => options.shm_size = Some(n),
                _ => {
                    return Err(format!(
                        "label {SHM_SIZE}={value:?}: expected a size in bytes"
                    ))
                }
            }
        }
        if let Some(value) = labels.get(APPARMOR_PROFILE).map(|v| v.trim()) {
            if !value.is_empty() {
                options.apparmor_profile = Some(value.to_string());
            }
        }
        Ok(options)
    }

    /// The options a swarm must allow (`--allow-privileged`), by name.
    pub fn needing_privilege(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.privileged {
            out.push("privileged");
        }
        if !self.devices.is_empty() {
            out.push("devices");
        }
        out
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_lowercase().as_str() {
        "true" | "1" | "t" => Some(true),
        "" | "false" | "0" | "f" => Some(false),
        _ => None,
    }
}

fn valid_permissions(text: &str) -> bool {
    !text.is_empty() && text.len() <= 3 && text.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
}

/// `docker run --device`'s syntax (docker/cli opts.ParseDevice):
/// `HOST[:CONTAINER][:PERMS]`, the container path defaulting to the host's
/// and the permissions to `rwm`; both paths absolute.
pub fn parse_device(text: &str) -> Result<Device, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (host, container, permissions) = match parts.as_slice() {
        [host] => (*host, *host, "rwm"),
        [host, perms] if valid_permissions(perms) => (*host, *host, *perms),
        [host, container] => (*host, *container, "rwm"),
        [host, container, perms] if valid_permissions(perms) => (*host, *container, *perms),
        [_, _, perms] => return Err(format!("invalid device mode: {perms}")),
        _ => return Err(format!("invalid device specification: {text}")),
    };
    // The label lists devices separated by commas: a path cannot hold one.
    for path in [host, container] {
        if !path.starts_with('/') || path.contains(',') {
            return Err(format!(
                "invalid device {text}: {path} is not an absolute path"
            ));
        }
    }
    Ok(Device {
        host: host.to_string(),
        container: container.to_string(),
        permissions: permissions.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn spec(labels: &[(&str, &str)]) -> TaskSpecContainerSpec {
        TaskSpecContainerSpec {
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<HashMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn devices_take_docker_runs_syntax() {
        let d = |text: &str| parse_device(text).map(|d| d.to_string());
        assert_eq!(d("/dev/fuse").unwrap(), "/dev/fuse:/dev/fuse:rwm");
        assert_eq!(d("/dev/fuse:r").unwrap(), "/dev/fuse:/dev/fuse:r");
        assert_eq!(
            d("/dev/null:/dev/mydev").unwrap(),
            "/dev/null:/dev/mydev:rwm"
        );
        assert_eq!(
            d("/dev/null:/dev/mydev:rw").unwrap(),
            "/dev/null:/dev/mydev:rw"
        );
        assert!(d("/dev/null:/dev/mydev:rx").is_err());
        assert!(d("dev/null").is_err());
        assert!(d("/a:/b:r:x").is_err());
    }

    #[test]
    fn labels_decode_and_name_what_needs_privilege() {
        let options = HostOptions::of(&spec(&[
            (PRIVILEGED, "true"),
            (DEVICES, "/dev/fuse, /dev/null:/dev/mydev:r"),
            (SHM_SIZE, "67108864"),
            ("other", "x"),
        ]))
        .unwrap();
        assert!(options.privileged);
        assert_eq!(options.devices.len(), 2);
        assert_eq!(options.shm_size, Some(67_108_864));
        assert_eq!(options.needing_privilege(), ["privileged", "devices"]);
        let none = HostOptions::of(&spec(&[(PRIVILEGED, "false"), (SHM_SIZE, "0")])).unwrap();
        assert_eq!(none, HostOptions::default());
        assert!(none.needing_privilege().is_empty());
        let err = HostOptions::of(&spec(&[(SHM_SIZE, "64m")])).unwrap_err();
        assert!(err.contains(SHM_SIZE), "{err}");
        assert!(HostOptions::of(&spec(&[(PRIVILEGED, "yes please")])).is_err());
        assert!(HostOptions::of(&spec(&[(DEVICES, "fuse")])).is_err());
    }
}
