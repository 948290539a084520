//! What a task's security settings become in its container's HostConfig:
//! the spec's Privileges as moby's swarm executor turns them into
//! SecurityOpt entries (daemon/cluster/executor/container/container.go,
//! applyPrivileges), and the options Docker's swarm spec lacks, which
//! Flotilla keeps as reserved container labels (privileged, devices, shm
//! size, a named AppArmor profile; flotilla_store::host_options).

use bollard::models::{
    DeviceMapping, HostConfig, TaskSpecContainerSpec, TaskSpecContainerSpecPrivileges,
    TaskSpecContainerSpecPrivilegesAppArmorModeEnum as AppArmorMode,
    TaskSpecContainerSpecPrivilegesSeccompModeEnum as SeccompMode,
};
use flotilla_store::host_options::HostOptions;

/// Sets the privileges and reserved-label options of `spec` on `host`; a
/// malformed reserved label is the error (the task cannot run as asked).
pub(crate) fn apply(host: &mut HostConfig, spec: &TaskSpecContainerSpec) -> Result<(), String> {
    let options = HostOptions::of(spec)?;
    let mut security = security_opts(spec.privileges.as_ref());
    if let Some(profile) = &options.apparmor_profile {
        security.retain(|o| !o.starts_with("apparmor="));
        security.push(format!("apparmor={profile}"));
    }
    if !security.is_empty() {
        host.security_opt = Some(security);
    }
    if options.privileged {
        host.privileged = Some(true);
    }
    if !options.devices.is_empty() {
        host.devices = Some(
            options
                .devices
                .iter()
                .map(|d| DeviceMapping {
                    path_on_host: Some(d.host.clone()),
                    path_in_container: Some(d.container.clone()),
                    cgroup_permissions: Some(d.permissions.clone()),
                })
                .collect(),
        );
    }
    host.shm_size = options.shm_size;
    Ok(())
}

/// moby's applyPrivileges: the default modes set nothing.
fn security_opts(privileges: Option<&TaskSpecContainerSpecPrivileges>) -> Vec<String> {
    let mut out = Vec::new();
    let Some(p) = privileges else { return out };
    if let Some(selinux) = &p.se_linux_context {
        if selinux.disable == Some(true) {
            out.push("label=disable".to_string());
        }
        let parts = [
            ("user", &selinux.user),
            ("role", &selinux.role),
            ("type", &selinux.typ),
            ("level", &selinux.level),
        ];
        for (key, value) in parts {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                out.push(format!("label={key}:{value}"));
            }
        }
    }
    if let Some(seccomp) = &p.seccomp {
        match seccomp.mode {
            Some(SeccompMode::UNCONFINED) => out.push("seccomp=unconfined".to_string()),
            Some(SeccompMode::CUSTOM) => out.push(format!(
                "seccomp={}",
                seccomp.profile.as_deref().unwrap_or_default()
            )),
            _ => {}
        }
    }
    if p.app_armor.as_ref().and_then(|a| a.mode) == Some(AppArmorMode::DISABLED) {
        out.push("apparmor=unconfined".to_string());
    }
    if p.no_new_privileges == Some(true) {
        out.push("no-new-privileges=true".to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        TaskSpecContainerSpecPrivilegesAppArmor, TaskSpecContainerSpecPrivilegesSeLinuxContext,
        TaskSpecContainerSpecPrivilegesSeccomp,
    };
    use flotilla_store::host_options::{APPARMOR_PROFILE, DEVICES, PRIVILEGED, SHM_SIZE};
    use std::collections::HashMap;

    fn spec_with(
        labels: &[(&str, &str)],
        privileges: Option<TaskSpecContainerSpecPrivileges>,
    ) -> TaskSpecContainerSpec {
        TaskSpecContainerSpec {
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<HashMap<_, _>>(),
            ),
            privileges,
            ..Default::default()
        }
    }

    #[test]
    fn reserved_labels_become_host_config() {
        let spec = spec_with(
            &[
                (PRIVILEGED, "true"),
                (DEVICES, "/dev/null:/dev/mydev:rw,/dev/fuse"),
                (SHM_SIZE, "134217728"),
            ],
            None,
        );
        let mut host = HostConfig::default();
        apply(&mut host, &spec).unwrap();
        assert_eq!(host.privileged, Some(true));
        assert_eq!(host.shm_size, Some(134_217_728));
        let devices = host.devices.unwrap();
        assert_eq!(devices[0].path_on_host.as_deref(), Some("/dev/null"));
        assert_eq!(devices[0].path_in_container.as_deref(), Some("/dev/mydev"));
        assert_eq!(devices[0].cgroup_permissions.as_deref(), Some("rw"));
        assert_eq!(devices[1].path_in_container.as_deref(), Some("/dev/fuse"));
        assert_eq!(host.security_opt, None);
        let bad = spec_with(&[(DEVICES, "fuse")], None);
        assert!(apply(&mut HostConfig::default(), &bad).is_err());
    }

    #[test]
    fn privileges_become_security_opts_as_mobys() {
        let privileges = TaskSpecContainerSpecPrivileges {
            se_linux_context: Some(TaskSpecContainerSpecPrivilegesSeLinuxContext {
                disable: Some(false),
                user: Some("u".into()),
                level: Some("s0:c1".into()),
                ..Default::default()
            }),
            seccomp: Some(TaskSpecContainerSpecPrivilegesSeccomp {
                mode: Some(SeccompMode::CUSTOM),
                profile: Some(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#.into()),
            }),
            app_armor: Some(TaskSpecContainerSpecPrivilegesAppArmor {
                mode: Some(AppArmorMode::DISABLED),
            }),
            no_new_privileges: Some(true),
            ..Default::default()
        };
        let mut host = HostConfig::default();
        apply(&mut host, &spec_with(&[], Some(privileges.clone()))).unwrap();
        assert_eq!(
            host.security_opt.unwrap(),
            [
                "label=user:u",
                "label=level:s0:c1",
                r#"seccomp={"defaultAction":"SCMP_ACT_ALLOW"}"#,
                "apparmor=unconfined",
                "no-new-privileges=true"
            ]
        );
        // A named AppArmor profile replaces the spec's mode.
        let mut host = HostConfig::default();
        apply(
            &mut host,
            &spec_with(&[(APPARMOR_PROFILE, "mine")], Some(privileges)),
        )
        .unwrap();
        let opts = host.security_opt.unwrap();
        assert!(opts.contains(&"apparmor=mine".to_string()), "{opts:?}");
        assert!(!opts.contains(&"apparmor=unconfined".to_string()));
        // Default modes set nothing.
        let defaults = TaskSpecContainerSpecPrivileges {
            seccomp: Some(TaskSpecContainerSpecPrivilegesSeccomp {
                mode: Some(SeccompMode::DEFAULT),
                profile: None,
            }),
            no_new_privileges: Some(false),
            ..Default::default()
        };
        let mut host = HostConfig::default();
        apply(&mut host, &spec_with(&[], Some(defaults))).unwrap();
        assert_eq!(host.security_opt, None);
    }
}
