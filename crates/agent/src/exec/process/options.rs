//! The container options a plain host process can honour, and the ones it
//! cannot, which reject the task by name rather than run it without them:
//!
//! - ulimits: `setrlimit` before exec; no-new-privileges: `prctl`.
//! - init: honoured by construction. An init's jobs are forwarding signals
//!   to the whole program and reaping its orphans; the executor signals the
//!   task's process group, and orphans go to the host's init.
//! - seccomp and AppArmor unconfined, SELinux labelling disabled: what a
//!   host process already is.
//! - privileged, devices, shm size, sysctls, capabilities, a custom
//!   seccomp or AppArmor profile, SELinux labels: they need a container
//!   (its own /dev, /dev/shm, network namespace, or a profile to confine
//!   it), so the task is rejected.

use bollard::models::{
    TaskSpecContainerSpec, TaskSpecContainerSpecPrivilegesAppArmorModeEnum as AppArmorMode,
    TaskSpecContainerSpecPrivilegesSeccompModeEnum as SeccompMode,
};
use flotilla_store::host_options::HostOptions;

/// What the process executor applies to a task's process before exec.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ProcessLimits {
    /// (resource, soft, hard); `RLIM_INFINITY` for -1.
    pub rlimits: Vec<(i32, u64, u64)>,
    pub no_new_privileges: bool,
}

const NEEDS_CONTAINER: &str =
    "needs a container: the process executor runs tasks as host processes (run the service on a node with the docker executor)";

/// The limits to apply, or why the task cannot run here.
pub(crate) fn checked(spec: Option<&TaskSpecContainerSpec>) -> Result<ProcessLimits, String> {
    let Some(spec) = spec else {
        return Ok(ProcessLimits::default());
    };
    let options = HostOptions::of(spec)?;
    let mut refused = Vec::new();
    if options.privileged {
        refused.push("privileged");
    }
    if !options.devices.is_empty() {
        refused.push("devices");
    }
    if options.shm_size.is_some() {
        refused.push("shm_size");
    }
    if spec.sysctls.as_ref().is_some_and(|s| !s.is_empty()) {
        refused.push("sysctls");
    }
    if spec.capability_add.as_ref().is_some_and(|c| !c.is_empty()) {
        refused.push("cap_add");
    }
    if spec.capability_drop.as_ref().is_some_and(|c| !c.is_empty()) {
        refused.push("cap_drop");
    }
    let privileges = spec.privileges.as_ref();
    if privileges
        .and_then(|p| p.seccomp.as_ref())
        .is_some_and(|s| s.mode == Some(SeccompMode::CUSTOM))
    {
        refused.push("a seccomp profile");
    }
    let apparmor_mode = privileges
        .and_then(|p| p.app_armor.as_ref())
        .and_then(|a| a.mode);
    if options.apparmor_profile.is_some() && apparmor_mode != Some(AppArmorMode::DISABLED) {
        refused.push("an AppArmor profile");
    }
    if privileges
        .and_then(|p| p.se_linux_context.as_ref())
        .is_some_and(|c| {
            [&c.user, &c.role, &c.typ, &c.level]
                .iter()
                .any(|v| v.as_deref().is_some_and(|v| !v.is_empty()))
        })
    {
        refused.push("SELinux labels");
    }
    if !refused.is_empty() {
        return Err(format!("{} {NEEDS_CONTAINER}", refused.join(", ")));
    }
    let mut rlimits = Vec::new();
    for ulimit in spec.ulimits.iter().flatten() {
        let name = ulimit.name.as_deref().unwrap_or_default();
        let resource =
            rlimit_resource(name).ok_or_else(|| format!("invalid ulimit type: {name}"))?;
        let value = |v: Option<i64>| match v {
            Some(n) if n >= 0 => n as u64,
            _ => libc::RLIM_INFINITY,
        };
        let (soft, hard) = (value(ulimit.soft), value(ulimit.hard));
        if soft > hard {
            return Err(format!(
                "ulimit {name}: soft limit {soft} is above the hard limit {hard}"
            ));
        }
        rlimits.push((resource, soft, hard));
    }
    Ok(ProcessLimits {
        rlimits,
        no_new_privileges: privileges.and_then(|p| p.no_new_privileges) == Some(true),
    })
}

/// The resource of a ulimit name, as Docker's (go-units) names them.
fn rlimit_resource(name: &str) -> Option<i32> {
    let resource = match name {
        "as" => libc::RLIMIT_AS,
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "fsize" => libc::RLIMIT_FSIZE,
        "locks" => libc::RLIMIT_LOCKS,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "rss" => libc::RLIMIT_RSS,
        "rtprio" => libc::RLIMIT_RTPRIO,
        "rttime" => libc::RLIMIT_RTTIME,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "stack" => libc::RLIMIT_STACK,
        _ => return None,
    };
    Some(resource as i32)
}

/// Applies `limits` to the calling process: runs between fork and exec,
/// so it only makes async-signal-safe calls (setrlimit, prctl).
pub(crate) fn apply_in_child(limits: &ProcessLimits) -> std::io::Result<()> {
    for &(resource, soft, hard) in &limits.rlimits {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: a plain system call on a valid struct.
        #[allow(clippy::useless_conversion)]
        if unsafe { libc::setrlimit(resource.try_into().unwrap_or_default(), &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    if limits.no_new_privileges {
        // SAFETY: as above.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ResourcesUlimits, TaskSpecContainerSpecPrivileges, TaskSpecContainerSpecPrivilegesSeccomp,
    };
    use flotilla_store::host_options::{DEVICES, PRIVILEGED};
    use std::collections::HashMap;

    #[test]
    fn what_needs_a_container_is_refused_by_name() {
        let spec = TaskSpecContainerSpec {
            labels: Some(HashMap::from([
                (PRIVILEGED.to_string(), "true".to_string()),
                (DEVICES.to_string(), "/dev/fuse".to_string()),
            ])),
            sysctls: Some(HashMap::from([("net.core.somaxconn".into(), "1".into())])),
            capability_add: Some(vec!["CAP_NET_ADMIN".into()]),
            ..Default::default()
        };
        let err = checked(Some(&spec)).unwrap_err();
        assert!(
            err.starts_with("privileged, devices, sysctls, cap_add needs a container"),
            "{err}"
        );
        let seccomp = TaskSpecContainerSpec {
            privileges: Some(TaskSpecContainerSpecPrivileges {
                seccomp: Some(TaskSpecContainerSpecPrivilegesSeccomp {
                    mode: Some(SeccompMode::CUSTOM),
                    profile: Some("{}".into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(checked(Some(&seccomp))
            .unwrap_err()
            .contains("seccomp profile"));
    }

    #[test]
    fn ulimits_and_no_new_privileges_are_applied() {
        let spec = TaskSpecContainerSpec {
            ulimits: Some(vec![ResourcesUlimits {
                name: Some("nofile".into()),
                soft: Some(512),
                hard: Some(1024),
            }]),
            privileges: Some(TaskSpecContainerSpecPrivileges {
                no_new_privileges: Some(true),
                seccomp: Some(TaskSpecContainerSpecPrivilegesSeccomp {
                    mode: Some(SeccompMode::UNCONFINED),
                    profile: None,
                }),
                ..Default::default()
            }),
            init: Some(true),
            ..Default::default()
        };
        let limits = checked(Some(&spec)).unwrap();
        assert_eq!(limits.rlimits, [(libc::RLIMIT_NOFILE as i32, 512, 1024)]);
        assert!(limits.no_new_privileges);
        let bad = TaskSpecContainerSpec {
            ulimits: Some(vec![ResourcesUlimits {
                name: Some("bogus".into()),
                soft: Some(1),
                hard: Some(1),
            }]),
            ..Default::default()
        };
        assert_eq!(
            checked(Some(&bad)).unwrap_err(),
            "invalid ulimit type: bogus"
        );
    }
}
