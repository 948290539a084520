//! Creating, updating and removing services.

use flotilla_store::host_options::{privilege_refusal, HostOptions};
use flotilla_store::ids;
use flotilla_store::models::{
    EndpointSpec, ObjectVersion, Service, ServiceEndpoint, ServiceJobStatus, ServiceSpec,
    ServiceSpecMode, ServiceSpecModeReplicated, ServiceUpdateStatus, ServiceUpdateStatusStateEnum,
};
use flotilla_store::state::version_of;
use flotilla_store::{Op, Store};

use super::names::random_name;
use crate::constraint;
use crate::error::{Error, Result, Unimplemented};
use flotilla_store::models::RegistryAuth;
use flotilla_store::secrets::DataKind;
use flotilla_store::{Kind, StoreError};

fn invalid(msg: impl std::fmt::Display) -> Error {
    Error::InvalidSpec(msg.to_string())
}

/// DNS label rules, as SwarmKit checks service names.
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn non_negative(what: &str, v: Option<i64>) -> Result<()> {
    match v {
        Some(n) if n < 0 => Err(invalid(format!("{what} cannot be negative"))),
        _ => Ok(()),
    }
}

/// Checks a spec and fills what Docker fills (a name, replicated mode).
pub fn validate(mut spec: ServiceSpec) -> Result<ServiceSpec> {
    if spec.name.as_deref().unwrap_or_default().is_empty() {
        spec.name = Some(random_name());
    }
    let name = spec.name.clone().unwrap_or_default();
    if !valid_name(&name) {
        return Err(invalid(format!(
            "name must be valid as a DNS name component: \"{name}\" (letters, digits, '-', '_' and '.', at most 63, starting and ending with a letter or digit)"
        )));
    }
    // The deprecated top-level Networks are the tasks' (as dockerd moves
    // them), unless the template names its own.
    if let Some(nets) = spec.networks.take().filter(|n| !n.is_empty()) {
        let template = spec.task_template.get_or_insert_with(Default::default);
        if template.networks.as_ref().is_none_or(|n| n.is_empty()) {
            template.networks = Some(nets);
        }
    }
    // Go's omitempty maps of the container spec: dockerd (through
    // SwarmKit's protobuf) keeps an empty one as none, so a client that
    // sends `{}` and one that sends nothing describe the same tasks and an
    // update between the two replaces nothing.
    if let Some(c) = spec
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())
    {
        if c.labels.as_ref().is_some_and(|l| l.is_empty()) {
            c.labels = None;
        }
        if c.sysctls.as_ref().is_some_and(|l| l.is_empty()) {
            c.sysctls = None;
        }
    }
    let template = spec.task_template.as_ref();
    let container = template.and_then(|t| t.container_spec.as_ref());
    if container
        .and_then(|c| c.image.as_deref())
        .unwrap_or_default()
        .is_empty()
    {
        return Err(invalid("ContainerSpec: image reference must be provided"));
    }
    let mode = spec.mode.get_or_insert_with(|| ServiceSpecMode {
        replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
        ..Default::default()
    });
    let kinds = [
        mode.replicated.is_some(),
        mode.global.is_some(),
        mode.replicated_job.is_some(),
        mode.global_job.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() > 1 {
        return Err(invalid(
            "only one service mode (Replicated, Global, ReplicatedJob, GlobalJob) can be set",
        ));
    }
    if let Some(job) = mode.replicated_job.as_mut() {
        // dockerd's defaults: one at a time, as many completions as that.
        let max = *job.max_concurrent.get_or_insert(1);
        let total = *job.total_completions.get_or_insert(max);
        if max < 0 {
            return Err(Error::InvalidArgument(
                "Maximum concurrent jobs must not be negative".into(),
            ));
        }
        if total < 0 {
            return Err(Error::InvalidArgument(
                "Total completed jobs must not be negative".into(),
            ));
        }
    }
    let is_job = mode.replicated_job.is_some() || mode.global_job.is_some();
    if is_job && spec.update_config.is_some() {
        return Err(Error::InvalidArgument(
            "Jobs may not have an update config".into(),
        ));
    }
    let mode = spec.mode.get_or_insert_with(Default::default);
    match (&mut mode.replicated, &mode.global) {
        _ if is_job => {}
        (Some(_), Some(_)) => {
            return Err(invalid("only one of Replicated or Global mode can be set"))
        }
        (None, None) => mode.replicated = Some(ServiceSpecModeReplicated { replicas: Some(1) }),
        (Some(r), None) => {
            let n = *r.replicas.get_or_insert(1);
            if n < 0 {
                return Err(Error::InvalidArgument(format!(
                    "invalid replicas value {n}: the number of replicas must be 0 or more"
                )));
            }
            at_most_max_tasks("replicas", n)?;
        }
        (None, Some(_)) => {}
    }
    if let Some(job) = mode.replicated_job.as_ref() {
        at_most_max_tasks("max concurrent", job.max_concurrent.unwrap_or(0))?;
        at_most_max_tasks("total completions", job.total_completions.unwrap_or(0))?;
    }
    if let Some(t) = template {
        if let Some(p) = t.placement.as_ref() {
            constraint::parse_all(p.constraints.as_deref().unwrap_or_default())
                .map_err(|e| invalid(format!("invalid constraint: {e}")))?;
            non_negative("max replicas per node", p.max_replicas)?;
            for pref in p.preferences.iter().flatten() {
                let descriptor = pref
                    .spread
                    .as_ref()
                    .and_then(|s| s.spread_descriptor.as_deref())
                    .unwrap_or_default();
                if !constraint::is_attribute(descriptor) {
                    return Err(invalid(format!(
                        "invalid placement preference: spread over {descriptor:?}: expected node.labels.<name>, engine.labels.<name>, node.id, node.hostname, node.role, node.platform.os or node.platform.arch"
                    )));
                }
            }
        }
        if let Some(r) = t.restart_policy.as_ref() {
            non_negative("TaskSpec: restart-delay", r.delay)?;
            non_negative("TaskSpec: restart-max-attempts", r.max_attempts)?;
            non_negative("TaskSpec: restart-window", r.window)?;
        }
        if let Some(res) = t.resources.as_ref() {
            let r = res.reservations.as_ref();
            let l = res.limits.as_ref();
            non_negative("reserved CPUs", r.and_then(|r| r.nano_cpus))?;
            non_negative("reserved memory", r.and_then(|r| r.memory_bytes))?;
            non_negative("CPU limit", l.and_then(|l| l.nano_cpus))?;
            non_negative("memory limit", l.and_then(|l| l.memory_bytes))?;
            for g in r
                .and_then(|r| r.generic_resources.as_ref())
                .into_iter()
                .flatten()
            {
                let counted = g.discrete_resource_spec.as_ref().is_some_and(|d| {
                    d.kind.as_deref().is_some_and(|k| !k.is_empty()) && d.value.unwrap_or(0) > 0
                });
                if !counted || g.named_resource_spec.is_some() {
                    return Err(invalid(
                        "a generic resource reservation is a kind and a count of 1 or more (--generic-resource KIND=COUNT)",
                    ));
                }
            }
        }
        if let Some(c) = container {
            non_negative("ContainerSpec: stop grace period", c.stop_grace_period)?;
            check_container_options(c)?;
        }
    }
    let update = spec
        .update_config
        .as_ref()
        .map(|c| (c.parallelism, c.delay, c.monitor, c.max_failure_ratio));
    let rollback = spec
        .rollback_config
        .as_ref()
        .map(|c| (c.parallelism, c.delay, c.monitor, c.max_failure_ratio));
    for (what, cfg) in [("UpdateConfig", update), ("RollbackConfig", rollback)] {
        if let Some((parallelism, delay, monitor, ratio)) = cfg {
            non_negative(&format!("{what}: parallelism"), parallelism)?;
            non_negative(&format!("{what}: delay"), delay)?;
            non_negative(&format!("{what}: monitor"), monitor)?;
            if ratio.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
                return Err(invalid(format!(
                    "{what}: max failure ratio must be between 0 and 1"
                )));
            }
        }
    }
    validate_endpoint(spec.endpoint_spec.as_ref())?;
    validate_proxy_protocol(&spec)?;
    fill_defaults(&mut spec)?;
    Ok(spec)
}

/// The options Flotilla keeps as reserved labels decode, and a custom
/// seccomp profile is there and is JSON (dockerd would only fail as each
/// task's container is created).
fn check_container_options(c: &bollard::models::TaskSpecContainerSpec) -> Result<()> {
    use bollard::models::TaskSpecContainerSpecPrivilegesSeccompModeEnum as Seccomp;
    HostOptions::of(c).map_err(|e| invalid(format!("ContainerSpec: {e}")))?;
    let seccomp = c.privileges.as_ref().and_then(|p| p.seccomp.as_ref());
    if let Some(s) = seccomp.filter(|s| s.mode == Some(Seccomp::CUSTOM)) {
        let profile = s.profile.as_deref().unwrap_or_default();
        if serde_json::from_str::<serde_json::Value>(profile).map_or(true, |v| !v.is_object()) {
            return Err(invalid(
                "ContainerSpec: a custom seccomp profile must be a JSON object",
            ));
        }
    }
    Ok(())
}

/// Refuses a spec that asks for privileged containers or devices while
/// the swarm does not allow them (`swarm update --allow-privileged`), as
/// the store will when the write applies (that check is in the log's
/// order; this one answers before anything is proposed).
fn check_privilege_allowed(
    store: &Store,
    spec: &ServiceSpec,
    current: Option<&flotilla_store::models::Service>,
) -> Result<()> {
    if let Some(c) = spec
        .task_template
        .as_ref()
        .and_then(|t| t.container_spec.as_ref())
    {
        HostOptions::of(c).map_err(|e| invalid(format!("ContainerSpec: {e}")))?;
    }
    match store.read(|s| privilege_refusal(s.cluster.as_ref(), spec, current)) {
        Some(why) => Err(Error::InvalidArgument(why)),
        None => Ok(()),
    }
}

/// What dockerd's conversion to SwarmKit's spec and back fills into what a
/// client left out (docker-py leaves out more than the docker CLI): empty
/// labels, a ForceUpdate of 0, the endpoint's vip mode and each port's tcp
/// protocol and ingress publish mode. The `container` runtime and `default`
/// isolation that the API shows (api/src/docker/shown.rs) are stored as
/// unset: a spec read, changed and sent back (`docker service scale`)
/// keeps the template its tasks run, so nothing is rolled for it.
fn fill_defaults(spec: &mut ServiceSpec) -> Result<()> {
    use bollard::models::{
        EndpointPortConfigProtocolEnum as Proto, EndpointPortConfigPublishModeEnum as Publish,
        EndpointSpecModeEnum, TaskSpecContainerSpecIsolationEnum as Isolation,
    };
    spec.labels.get_or_insert_with(Default::default);
    if let Some(t) = spec.task_template.as_mut() {
        t.force_update.get_or_insert(0);
        match t.runtime.as_deref() {
            None | Some("" | "container") => t.runtime = None,
            Some(other) => {
                return Err(invalid(format!(
                    "runtime {other} is not supported by Flotilla: services run containers"
                )))
            }
        }
        if let Some(c) = t.container_spec.as_mut() {
            if matches!(c.isolation, Some(Isolation::DEFAULT | Isolation::EMPTY)) {
                c.isolation = None;
            }
        }
    }
    // Go's zero value "" is "not given" too.
    if let Some(e) = spec.endpoint_spec.as_mut() {
        if matches!(e.mode, None | Some(EndpointSpecModeEnum::EMPTY)) {
            e.mode = Some(EndpointSpecModeEnum::VIP);
        }
        for p in e.ports.iter_mut().flatten() {
            if matches!(p.protocol, None | Some(Proto::EMPTY)) {
                p.protocol = Some(Proto::TCP);
            }
            if matches!(p.publish_mode, None | Some(Publish::EMPTY)) {
                p.publish_mode = Some(Publish::INGRESS);
            }
        }
    }
    Ok(())
}

/// The PROXY protocol label names published TCP ingress ports of the spec
/// (docs/network.md, "The client's address").
fn validate_proxy_protocol(spec: &ServiceSpec) -> Result<()> {
    use bollard::models::{
        EndpointPortConfigProtocolEnum as Proto, EndpointPortConfigPublishModeEnum as Mode,
    };
    let Some(label) = spec
        .labels
        .as_ref()
        .and_then(|l| l.get(flotilla_store::network::PROXY_PROTOCOL_LABEL))
    else {
        return Ok(());
    };
    let tcp_ingress: Vec<u16> = spec
        .endpoint_spec
        .as_ref()
        .and_then(|e| e.ports.as_ref())
        .into_iter()
        .flatten()
        .filter(|p| p.publish_mode != Some(Mode::HOST))
        .filter(|p| p.protocol.unwrap_or(Proto::TCP) == Proto::TCP)
        .filter_map(|p| u16::try_from(p.published_port?).ok())
        .collect();
    flotilla_store::network::check_proxy_protocol_label(label, &tcp_ingress).map_err(invalid)
}

/// SwarmKit's checks of an EndpointSpec, with its messages.
fn validate_endpoint(spec: Option<&EndpointSpec>) -> Result<()> {
    use bollard::models::{
        EndpointPortConfigProtocolEnum as Proto, EndpointPortConfigPublishModeEnum as Mode,
        EndpointSpecModeEnum,
    };
    let Some(spec) = spec else { return Ok(()) };
    let dnsrr = spec.mode == Some(EndpointSpecModeEnum::DNSRR);
    let mut seen = std::collections::BTreeSet::new();
    for port in spec.ports.iter().flatten() {
        let ingress = port.publish_mode != Some(Mode::HOST);
        if dnsrr && ingress {
            return Err(invalid(
                "EndpointSpec: port published with ingress mode can't be used with dnsrr mode",
            ));
        }
        if port.protocol == Some(Proto::SCTP) {
            return Err(invalid(
                "EndpointSpec: SCTP ports are not supported by Flotilla's routing mesh",
            ));
        }
        for (what, value) in [
            ("target", port.target_port),
            ("published", port.published_port),
        ] {
            if value.is_some_and(|p| !(0..=65535).contains(&p)) {
                return Err(invalid(format!(
                    "EndpointSpec: {what} port {} is out of range 0-65535",
                    value.unwrap_or_default()
                )));
            }
        }
        if port.target_port.unwrap_or(0) == 0 {
            return Err(invalid("EndpointSpec: a port needs a target port"));
        }
        let published = port.published_port.unwrap_or(0);
        if published != 0 && !seen.insert((published, port.protocol.unwrap_or(Proto::TCP))) {
            return Err(invalid("EndpointSpec: duplicate published ports provided"));
        }
    }
    Ok(())
}

/// The networks a spec attaches its tasks to, named as the client named
/// them (docker-py sends names, the docker CLI IDs), turned into IDs as
/// dockerd does before SwarmKit sees the spec.
/// Each secret and config reference names an object that exists, by ID or
/// by name (the docker CLI sends both; a client that sends one gets the
/// other filled in), and has a file target no other reference of its kind
/// takes: SwarmKit's checks and words. The store checks again as the
/// service is written, in Raft order.
fn resolve_data_refs(store: &Store, spec: &mut ServiceSpec) -> Result<()> {
    let Some(c) = spec
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())
    else {
        return Ok(());
    };
    let secrets = c.secrets.iter_mut().flatten().map(|r| DataRef {
        id: &mut r.secret_id,
        name: &mut r.secret_name,
        target: r.file.as_ref().map(|f| f.name.clone().unwrap_or_default()),
    });
    resolve_refs(store, DataKind::Secret, secrets.collect())?;
    if c.configs.iter().flatten().any(|r| r.runtime.is_some()) {
        return Err(invalid(
            "config references with a Runtime target (Windows credential specs) are not supported by Flotilla",
        ));
    }
    let configs = c.configs.iter_mut().flatten().map(|r| DataRef {
        id: &mut r.config_id,
        name: &mut r.config_name,
        target: r.file.as_ref().map(|f| f.name.clone().unwrap_or_default()),
    });
    resolve_refs(store, DataKind::Config, configs.collect())
}

/// One secret or config reference, whichever kind.
struct DataRef<'a> {
    id: &'a mut Option<String>,
    name: &'a mut Option<String>,
    /// The file's name (its path in the container), when it has a file.
    target: Option<String>,
}

fn resolve_refs(store: &Store, kind: DataKind, refs: Vec<DataRef<'_>>) -> Result<()> {
    let what = kind.name();
    let mut missing = Vec::new();
    let mut targets = std::collections::BTreeMap::new();
    for r in refs {
        let id = r.id.clone().unwrap_or_default();
        let name = r.name.clone().unwrap_or_default();
        if id.is_empty() && name.is_empty() {
            return Err(invalid(format!("malformed {what} reference")));
        }
        let found = store.read(|s| {
            let all = s.data_objects(kind);
            let object = if id.is_empty() {
                all.values().find(|o| o.name == name)
            } else {
                all.get(&id)
            };
            object
                .filter(|o| name.is_empty() || o.name == name)
                .map(|o| (o.id.clone(), o.name.clone()))
        });
        match found {
            Some((found_id, found_name)) => {
                *r.id = Some(found_id);
                *r.name = Some(found_name);
            }
            None => missing.push(if name.is_empty() { id } else { name.clone() }),
        }
        let Some(target) = r.target else {
            return Err(invalid(format!(
                "malformed {what} reference, no target provided"
            )));
        };
        if target.is_empty() {
            return Err(invalid(format!(
                "malformed file {what} reference, invalid target file name provided"
            )));
        }
        let name = r.name.clone().unwrap_or_default();
        if let Some(previous) = targets.insert(target.clone(), name.clone()) {
            return Err(invalid(format!(
                "{what} references '{previous}' and '{name}' have a conflicting target: '{target}'"
            )));
        }
    }
    if !missing.is_empty() {
        return Err(Error::Store(StoreError::DataNotFound {
            kind: Kind::from(kind),
            names: missing,
        }));
    }
    Ok(())
}

fn resolve_networks(store: &Store, spec: &mut ServiceSpec) -> Result<()> {
    let Some(nets) = spec
        .task_template
        .as_mut()
        .and_then(|t| t.networks.as_mut())
    else {
        return Ok(());
    };
    let mut seen = std::collections::BTreeSet::new();
    for net in nets.iter_mut() {
        let key = net.target.clone().unwrap_or_default();
        if key.is_empty() {
            return Err(invalid("a network attachment needs a target network"));
        }
        let found = store.read(|s| {
            s.find_network(&key)
                .map(|n| (n.id.clone(), n.name().to_string(), n.is_ingress()))
        });
        let Some((id, name, ingress)) = found else {
            if ["bridge", "host", "none", "default"].contains(&key.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "The network {key} cannot be used with services. Only networks scoped to the swarm can be used, such as those created with the overlay driver."
                )));
            }
            return Err(Error::not_found(Kind::Network, key));
        };
        if ingress {
            return Err(invalid(format!(
                "service cannot be explicitly attached to the ingress network \"{name}\""
            )));
        }
        if !seen.insert(id.clone()) {
            return Err(invalid(format!(
                "network {name} is attached more than once"
            )));
        }
        net.target = Some(id);
    }
    Ok(())
}

/// `POST /services/create`: returns the new service's ID. `registry_auth`
/// is the client's `X-Registry-Auth` (`--with-registry-auth`).
pub async fn create(
    store: &Store,
    spec: ServiceSpec,
    registry_auth: Option<RegistryAuth>,
) -> Result<String> {
    let mut spec = validate(spec)?;
    check_privilege_allowed(store, &spec, None)?;
    resolve_networks(store, &mut spec)?;
    resolve_data_refs(store, &mut spec)?;
    let now = ids::now();
    let id = ids::new_id();
    // A job's first iteration (SwarmKit numbers them from 0).
    let job_status = crate::orchestrator::jobs::is_job_spec(&spec).then(|| ServiceJobStatus {
        job_iteration: Some(ObjectVersion { index: Some(0) }),
        last_execution: Some(now.clone()),
    });
    let mut svc = Service::from(bollard::models::Service {
        id: Some(id.clone()),
        created_at: Some(now.clone()),
        job_status,
        updated_at: Some(now),
        endpoint: Some(ServiceEndpoint {
            spec: Some(
                spec.endpoint_spec
                    .clone()
                    .unwrap_or_else(EndpointSpec::default),
            ),
            ..Default::default()
        }),
        spec: Some(spec),
        ..Default::default()
    });
    svc.runtime.registry_auth = registry_auth;
    store.propose_one(Op::CreateService(Box::new(svc))).await?;
    Ok(id)
}

fn lookup(store: &Store, key: &str) -> Result<Service> {
    store
        .read(|s| s.find_service(key).cloned())
        .ok_or_else(|| Error::not_found(Kind::Service, key))
}

/// `POST /services/{id}/update?version=N[&rollback=previous]`; new
/// registry credentials replace the service's, none keep them.
pub async fn update(
    store: &Store,
    key: &str,
    version: u64,
    spec: ServiceSpec,
    rollback: bool,
    registry_auth: Option<RegistryAuth>,
) -> Result<()> {
    let svc = lookup(store, key)?;
    let current = version_of(&svc.version);
    // SwarmKit's order: the spec is checked (mode change, rename) before the
    // version, which the store compares when the update commits.
    let current_svc = svc.clone();
    let next = if rollback {
        rolled_back(svc, &ids::now())?
    } else {
        let mut spec = validate(spec)?;
        resolve_networks(store, &mut spec)?;
        resolve_data_refs(store, &mut spec)?;
        updated(svc, spec, &ids::now())?
    };
    if let Some(spec) = next.spec.as_ref() {
        check_privilege_allowed(store, spec, Some(&current_svc))?;
    }
    let mut next = next;
    if registry_auth.is_some() {
        next.runtime.registry_auth = registry_auth;
    }
    if current != version {
        let id = next.id.clone().unwrap_or_default();
        return Err(Error::out_of_sequence(Kind::Service, id, version, current));
    }
    store
        .propose_one(Op::UpdateService {
            expected: version,
            service: Box::new(next),
        })
        .await?;
    Ok(())
}

/// The service after `service update` to `spec` (already validated): the
/// current spec becomes the previous one, and the update status is reset
/// as SwarmKit does, so the updater starts afresh (a paused update
/// resumes).
pub fn updated(svc: Service, spec: ServiceSpec, now: &str) -> Result<Service> {
    replace_spec(svc, spec, None, now)
}

/// The service after `service rollback`: the previous spec comes back (and
/// the current one becomes the previous), paced by the restored spec's
/// rollback config; UpdateStatus says so as Docker's does.
pub fn rolled_back(svc: Service, now: &str) -> Result<Service> {
    let Some(previous) = svc.previous_spec.clone() else {
        return Err(Error::NoPreviousSpec {
            id: svc.id.clone().unwrap_or_default(),
        });
    };
    let status = ServiceUpdateStatus {
        state: Some(ServiceUpdateStatusStateEnum::ROLLBACK_STARTED),
        started_at: Some(now.to_string()),
        completed_at: None,
        message: Some("manually requested rollback".into()),
    };
    replace_spec(svc, previous, Some(status), now)
}

fn replace_spec(
    mut svc: Service,
    next: ServiceSpec,
    status: Option<ServiceUpdateStatus>,
    now: &str,
) -> Result<Service> {
    let current = svc.spec.clone().unwrap_or_default();
    // Both are gRPC Unimplemented in SwarmKit, so 501 from dockerd.
    if mode_kind(&current) != mode_kind(&next) {
        return Err(Error::Unimplemented(Unimplemented::ChangeServiceMode));
    }
    if current.name != next.name {
        return Err(Error::Unimplemented(Unimplemented::RenameService));
    }
    svc.previous_spec = Some(current);
    svc.update_status = status;
    svc.endpoint = Some(ServiceEndpoint {
        spec: Some(next.endpoint_spec.clone().unwrap_or_default()),
        ..svc.endpoint.take().unwrap_or_default()
    });
    svc.spec = Some(next);
    svc.updated_at = Some(now.to_string());
    // Any update of a job runs it again: its next iteration.
    if let Some(job) = svc.job_status.as_mut() {
        let index = job
            .job_iteration
            .as_ref()
            .and_then(|v| v.index)
            .unwrap_or(0);
        job.job_iteration = Some(ObjectVersion {
            index: Some(index + 1),
        });
        job.last_execution = Some(now.to_string());
    }
    Ok(svc)
}

/// Which of the four modes a spec is in.
fn mode_kind(spec: &ServiceSpec) -> [bool; 4] {
    let m = spec.mode.clone().unwrap_or_default();
    [
        m.replicated.is_some(),
        m.global.is_some(),
        m.replicated_job.is_some(),
        m.global_job.is_some(),
    ]
}

/// `DELETE /services/{id}`: the orchestrator then removes its tasks.
pub async fn remove(store: &Store, key: &str) -> Result<()> {
    let svc = lookup(store, key)?;
    store
        .propose_one(Op::RemoveService {
            id: svc.id.clone().unwrap_or_default(),
        })
        .await?;
    Ok(())
}

/// The most tasks one service may ask for at once. A swarm holds every
/// task in memory on every manager: a count far beyond what any swarm
/// runs (a typo, an overflow) would exhaust them, so it is refused.
pub const MAX_TASKS_PER_SERVICE: i64 = 100_000;

fn at_most_max_tasks(what: &str, n: i64) -> Result<()> {
    if n > MAX_TASKS_PER_SERVICE {
        return Err(invalid(format!(
            "{what} {n} is more than the {MAX_TASKS_PER_SERVICE} tasks a service may have"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_store::models::{TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement};

    fn spec(image: &str) -> ServiceSpec {
        ServiceSpec {
            name: Some("web".into()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(image.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fills_name_and_mode() {
        let mut s = spec("busybox");
        s.name = None;
        let v = validate(s).unwrap();
        assert!(v.name.unwrap().contains('_'));
        assert_eq!(v.mode.unwrap().replicated.unwrap().replicas, Some(1));
    }

    #[test]
    fn empty_container_labels_are_none_as_after_dockerd() {
        let mut s = spec("busybox");
        let c = s
            .task_template
            .as_mut()
            .unwrap()
            .container_spec
            .as_mut()
            .unwrap();
        c.labels = Some(Default::default());
        c.sysctls = Some(Default::default());
        let v = validate(s).unwrap();
        let c = v.task_template.unwrap().container_spec.unwrap();
        assert_eq!((c.labels, c.sysctls), (None, None));
        // A spec with some keeps them.
        let mut s = spec("busybox");
        s.task_template
            .as_mut()
            .unwrap()
            .container_spec
            .as_mut()
            .unwrap()
            .labels = Some([("a".to_string(), "1".to_string())].into());
        let c = validate(s)
            .unwrap()
            .task_template
            .unwrap()
            .container_spec
            .unwrap();
        assert_eq!(c.labels.unwrap().len(), 1);
    }

    #[test]
    fn fills_what_dockerd_fills_for_clients_that_leave_it_out() {
        use bollard::models::{
            EndpointPortConfig, EndpointPortConfigProtocolEnum as Proto,
            EndpointPortConfigPublishModeEnum as Publish, EndpointSpecModeEnum,
        };
        let mut s = spec("busybox");
        s.endpoint_spec = Some(EndpointSpec {
            ports: Some(vec![EndpointPortConfig {
                target_port: Some(80),
                protocol: Some(Proto::EMPTY),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let v = validate(s).unwrap();
        assert_eq!(v.labels, Some(Default::default()));
        assert_eq!(v.task_template.unwrap().force_update, Some(0));
        let e = v.endpoint_spec.unwrap();
        assert_eq!(e.mode, Some(EndpointSpecModeEnum::VIP));
        let p = &e.ports.unwrap()[0];
        assert_eq!(
            (p.protocol, p.publish_mode),
            (Some(Proto::TCP), Some(Publish::INGRESS))
        );
        // No endpoint spec given: none made up, as dockerd.
        assert_eq!(validate(spec("busybox")).unwrap().endpoint_spec, None);
        // What the API shows is stored as unset, so a round trip keeps the
        // template; a runtime Flotilla does not run is refused.
        let mut shown = spec("busybox");
        let t = shown.task_template.as_mut().unwrap();
        t.runtime = Some("container".into());
        t.container_spec.as_mut().unwrap().isolation =
            Some(bollard::models::TaskSpecContainerSpecIsolationEnum::DEFAULT);
        let t = validate(shown).unwrap().task_template.unwrap();
        assert_eq!(
            (t.runtime, t.container_spec.unwrap().isolation),
            (None, None)
        );
        let mut plugin = spec("busybox");
        plugin.task_template.as_mut().unwrap().runtime = Some("plugin".into());
        assert!(validate(plugin).is_err());
    }

    #[test]
    fn rename_and_mode_change_are_refused() {
        let svc = Service::from(bollard::models::Service {
            id: Some("s1".into()),
            spec: Some(validate(spec("busybox")).unwrap()),
            ..Default::default()
        });
        let mut renamed = spec("busybox");
        renamed.name = Some("other".into());
        let e = updated(svc.clone(), validate(renamed).unwrap(), "now").unwrap_err();
        assert_eq!(e, Error::Unimplemented(Unimplemented::RenameService));
        // No name at all: Docker fills a random one, which is a rename too.
        let mut unnamed = spec("busybox");
        unnamed.name = None;
        let e = updated(svc.clone(), validate(unnamed).unwrap(), "now").unwrap_err();
        assert_eq!(e, Error::Unimplemented(Unimplemented::RenameService));
        let mut global = spec("busybox");
        global.mode = Some(ServiceSpecMode {
            global: Some(Default::default()),
            ..Default::default()
        });
        let e = updated(svc.clone(), validate(global).unwrap(), "now").unwrap_err();
        assert_eq!(e, Error::Unimplemented(Unimplemented::ChangeServiceMode));
        let mut same = spec("busybox:2");
        same.name = Some("web".into());
        assert!(updated(svc, validate(same).unwrap(), "now").is_ok());
    }

    #[test]
    fn refuses_bad_specs() {
        assert!(validate(spec("")).is_err());
        let mut s = spec("busybox");
        s.mode = Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(-1) }),
            ..Default::default()
        });
        assert!(validate(s).is_err());
        let mut s = spec("busybox");
        s.mode = Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(1_000_000_000),
            }),
            ..Default::default()
        });
        let e = validate(s).unwrap_err().to_string();
        assert!(
            e.contains("replicas 1000000000 is more than the 100000 tasks a service may have"),
            "{e}"
        );
        let mut s = spec("busybox");
        s.task_template.as_mut().unwrap().placement = Some(TaskSpecPlacement {
            constraints: Some(vec!["node.role=manager".into()]),
            ..Default::default()
        });
        let e = validate(s).unwrap_err().to_string();
        assert!(e.contains("invalid constraint"), "{e}");
        let mut s = spec("busybox");
        s.name = Some("bad name".into());
        assert!(validate(s).is_err());
    }

    fn with_labels(mut s: ServiceSpec, labels: &[(&str, &str)]) -> ServiceSpec {
        let c = s
            .task_template
            .as_mut()
            .and_then(|t| t.container_spec.as_mut())
            .unwrap();
        c.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        s
    }

    #[test]
    fn malformed_reserved_labels_and_seccomp_profiles_are_refused() {
        use flotilla_store::host_options::{DEVICES, SHM_SIZE};
        let e = validate(with_labels(spec("busybox"), &[(DEVICES, "fuse")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("com.flotilla.devices"), "{e}");
        let e = validate(with_labels(spec("busybox"), &[(SHM_SIZE, "-1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("com.flotilla.shm-size"), "{e}");
        let mut s = spec("busybox");
        let c = s
            .task_template
            .as_mut()
            .and_then(|t| t.container_spec.as_mut())
            .unwrap();
        c.privileges = Some(bollard::models::TaskSpecContainerSpecPrivileges {
            seccomp: Some(bollard::models::TaskSpecContainerSpecPrivilegesSeccomp {
                mode: Some(bollard::models::TaskSpecContainerSpecPrivilegesSeccompModeEnum::CUSTOM),
                profile: Some("not json".into()),
            }),
            ..Default::default()
        });
        let e = validate(s).unwrap_err().to_string();
        assert!(e.contains("seccomp profile must be a JSON object"), "{e}");
    }

    #[tokio::test]
    async fn privileged_and_devices_wait_for_the_swarm_to_allow_them() {
        use flotilla_store::host_options::{ALLOW_PRIVILEGED, DEVICES, PRIVILEGED};
        let (store, _dir) = crate::testutil::store().await;
        store
            .propose(crate::testutil::new_swarm().ops)
            .await
            .unwrap();
        let asked = with_labels(
            spec("busybox"),
            &[(PRIVILEGED, "true"), (DEVICES, "/dev/fuse")],
        );
        let e = create(&store, asked.clone(), None).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "service \"web\": privileged and devices are not allowed on this swarm (flotilla swarm update --allow-privileged)"
        );
        // An update of a plain service that asks for them is refused too.
        let id = create(&store, spec("busybox"), None).await.unwrap();
        let e = update(
            &store,
            &id,
            1,
            with_labels(spec("busybox"), &[(DEVICES, "/dev/fuse")]),
            false,
            None,
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string().contains("\"web\": devices is not allowed"),
            "{e}"
        );
        let (version, mut swarm_spec) = store.read(|s| {
            let c = s.cluster.clone().unwrap();
            (version_of(&c.version), c.spec.unwrap())
        });
        swarm_spec
            .labels
            .get_or_insert_with(Default::default)
            .insert(ALLOW_PRIVILEGED.into(), "true".into());
        super::super::swarm::update(&store, version, swarm_spec, false, false, false)
            .await
            .unwrap();
        let mut asked = asked;
        asked.name = Some("privileged".into());
        create(&store, asked, None).await.unwrap();
    }
}
