//! What container a task becomes: its name, labels and the create request,
//! as plain functions of the task so the mapping is tested without an engine.
//! The mapping follows Docker's own swarm executor (moby's
//! daemon/cluster/executor/container/container.go).

use std::collections::HashMap;
use std::net::IpAddr;

use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointPortConfig, EndpointSettings, HostConfig,
    HostConfigLogConfig, Mount, MountType, NetworkingConfig, RestartPolicy, RestartPolicyNameEnum,
    TaskSpecContainerSpec,
};

use crate::exec::Attached;
use flotilla_store::models::Task;

/// Swarm's labels, put on every container so `docker ps --filter` and the
/// tools written for Swarm find tasks the way they do under Docker.
pub(crate) const TASK_ID_LABEL: &str = "com.docker.swarm.task.id";
pub(crate) const NODE_ID_LABEL: &str = "com.docker.swarm.node.id";
/// Marks the containers Flotilla owns, so `list` never adopts a container
/// that a real Docker Swarm on the same engine runs.
pub(crate) const MANAGED_LABEL: &str = "com.flotilla.managed";
/// The ports the container was made to publish (the task's, as JSON): the
/// executor's own record, so a restarted daemon that adopts the container
/// knows which of its bound ports are the task's.
pub(crate) const PORTS_LABEL: &str = "com.flotilla.ports";

/// Docker's default grace period between the stop signal and SIGKILL.
pub(crate) const DEFAULT_STOP_GRACE_SECS: i64 = 10;

pub(crate) fn container_spec(task: &Task) -> Option<&TaskSpecContainerSpec> {
    task.spec.as_ref()?.container_spec.as_ref()
}

pub(crate) fn task_id(task: &Task) -> &str {
    task.id.as_deref().unwrap_or_default()
}

/// The service's name, which the task carries in Flotilla's runtime state
/// (Docker's Task has no service annotations); the service id stands in
/// when it is missing.
pub(crate) fn service_name(task: &Task) -> &str {
    task.runtime
        .service_name
        .as_deref()
        .filter(|name| !name.is_empty())
        .or(task.service_id.as_deref())
        .unwrap_or_default()
}

/// `<service>.<slot>.<task id>`, or `<service>.<node id>.<task id>` for a
/// global service's task (which has no slot), as Docker names them.
pub fn container_name(task: &Task) -> String {
    let service = service_name(task);
    match task.slot {
        Some(slot) if slot != 0 => format!("{service}.{slot}.{}", task_id(task)),
        _ => format!(
            "{service}.{}.{}",
            task.node_id.as_deref().unwrap_or_default(),
            task_id(task)
        ),
    }
}

/// Seconds the engine waits after the stop signal before it kills.
pub(crate) fn stop_grace_secs(task: &Task) -> i64 {
    match container_spec(task).and_then(|spec| spec.stop_grace_period) {
        // Docker truncates to whole seconds too.
        Some(nanos) if nanos >= 0 => nanos / 1_000_000_000,
        _ => DEFAULT_STOP_GRACE_SECS,
    }
}

/// The spec's labels, then the task's, then Swarm's own (which win), then
/// Flotilla's mark: the same precedence as Docker's.
pub(crate) fn labels(task: &Task) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    if let Some(spec_labels) = container_spec(task).and_then(|spec| spec.labels.as_ref()) {
        labels.extend(spec_labels.clone());
    }
    if let Some(task_labels) = &task.labels {
        labels.extend((**task_labels).clone());
    }
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    let system = [
        ("task", String::new()),
        ("task.id", task_id(task).to_string()),
        ("task.name", container_name(task)),
        ("node.id", text(&task.node_id)),
        ("service.id", text(&task.service_id)),
        ("service.name", service_name(task).to_string()),
    ];
    for (key, value) in system {
        labels.insert(format!("com.docker.swarm.{key}"), value);
    }
    labels.insert(MANAGED_LABEL.to_string(), "true".to_string());
    if !task.runtime.ports.is_empty() {
        if let Ok(json) = serde_json::to_string(&task.runtime.ports) {
            labels.insert(PORTS_LABEL.to_string(), json);
        }
    }
    labels
}

/// The task's ports, from a container's [`PORTS_LABEL`].
pub(crate) fn ports_of(labels: &HashMap<String, String>) -> Vec<EndpointPortConfig> {
    labels
        .get(PORTS_LABEL)
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default()
}

fn non_empty<T>(list: &Option<Vec<T>>) -> Option<Vec<T>>
where
    T: Clone,
{
    list.as_ref().filter(|items| !items.is_empty()).cloned()
}

/// The create request for the task's container, publishing `ports` (the
/// task's, from `ports::requested`); `dns` is the resolver its containers
/// get unless the spec names its own nameservers.
pub(crate) fn create_body(
    task: &Task,
    ports: &[EndpointPortConfig],
    dns: Option<IpAddr>,
    networks: &[Attached],
) -> ContainerCreateBody {
    let empty = TaskSpecContainerSpec::default();
    let spec = container_spec(task).unwrap_or(&empty);
    // Command replaces the image's entrypoint and Args its cmd; Args alone
    // keeps the image's entrypoint (Docker's rule).
    let (entrypoint, cmd) = match non_empty(&spec.command) {
        Some(command) => (Some(command), Some(spec.args.clone().unwrap_or_default())),
        None => (None, non_empty(&spec.args)),
    };
    let (exposed, bindings) = super::ports::bindings(ports);
    // On overlay networks: created on the first (the others and the
    // default bridge are joined before it starts), and resolving through
    // the node's DNS server there, which answers it by its networks.
    let first = networks.first();
    let dns = first.map(|a| IpAddr::V4(a.node_addr)).or(dns);
    let networking_config = first.map(|a| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(a.engine_network.clone(), endpoint(a))])),
    });
    ContainerCreateBody {
        image: spec.image.clone(),
        entrypoint,
        cmd,
        env: environment(task, spec),
        user: spec.user.clone().filter(|user| !user.is_empty()),
        working_dir: spec.dir.clone().filter(|dir| !dir.is_empty()),
        hostname: spec.hostname.clone().filter(|name| !name.is_empty()),
        labels: Some(labels(task)),
        stop_signal: spec.stop_signal.clone().filter(|signal| !signal.is_empty()),
        stop_timeout: Some(stop_grace_secs(task)),
        healthcheck: spec.health_check.clone(),
        tty: spec.tty,
        open_stdin: spec.open_stdin,
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(HostConfig {
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            network_mode: first.map(|a| a.engine_network.clone()),
            ..host_config(task, spec, dns)
        }),
        networking_config,
        ..Default::default()
    }
}

/// The task's secrets and configs: each file bind-mounted read-only from
/// the node's tmpfs at its target, as Docker mounts them.
pub(crate) fn file_mounts(files: &crate::taskfiles::TaskFiles) -> Vec<Mount> {
    files
        .files
        .iter()
        .map(|f| Mount {
            target: Some(f.target.clone()),
            source: Some(f.host.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        })
        .collect()
}

/// The spec's environment, then the generic resources the task was given
/// (`DOCKER_RESOURCE_<KIND>`), as Docker's executor writes them.
fn environment(task: &Task, spec: &TaskSpecContainerSpec) -> Option<Vec<String>> {
    let generic = crate::exec::generic_resource_env(task);
    if generic.is_empty() {
        return spec.env.clone();
    }
    let mut env = spec.env.clone().unwrap_or_default();
    env.extend(generic.into_iter().map(|(k, v)| format!("{k}={v}")));
    Some(env)
}

/// A container's place on an overlay network's engine network: its
/// address, and the MAC every node expects of it (engines of API 1.44 and
/// later take it; older ones derive the same one from the address).
pub(crate) fn endpoint(a: &Attached) -> EndpointSettings {
    EndpointSettings {
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: Some(a.addr.to_string()),
            ..Default::default()
        }),
        mac_address: Some(flotilla_store::network::mac_string(
            flotilla_store::network::mac_of(a.addr),
        )),
        ..Default::default()
    }
}

fn host_config(
    task: &Task,
    spec: &TaskSpecContainerSpec,
    dns_server: Option<IpAddr>,
) -> HostConfig {
    let limits = task
        .spec
        .as_ref()
        .and_then(|task_spec| task_spec.resources.as_ref())
        .and_then(|resources| resources.limits.as_ref());
    let reservations = task
        .spec
        .as_ref()
        .and_then(|task_spec| task_spec.resources.as_ref())
        .and_then(|resources| resources.reservations.as_ref());
    let log_driver = task
        .spec
        .as_ref()
        .and_then(|task_spec| task_spec.log_driver.as_ref())
        .filter(|l| l.name.as_deref().is_some_and(|n| !n.is_empty()));
    let dns = spec.dns_config.as_ref();
    HostConfig {
        // Zero means "no limit" in the swarm spec and in the engine alike.
        nano_cpus: limits.and_then(|l| l.nano_cpus).filter(|&n| n > 0),
        memory: limits.and_then(|l| l.memory_bytes).filter(|&n| n > 0),
        // What Docker's executor passes on of the reservations (CPU ones
        // are the scheduler's only).
        memory_reservation: reservations.and_then(|r| r.memory_bytes).filter(|&n| n > 0),
        // The service's `--log-driver`, or the swarm's task default
        // (filled in when the task was made); else the engine's default.
        log_config: log_driver.map(|l| HostConfigLogConfig {
            typ: l.name.clone(),
            config: l.options.clone(),
        }),
        pids_limit: limits.and_then(|l| l.pids).filter(|&n| n > 0),
        mounts: non_empty(&spec.mounts),
        init: spec.init,
        group_add: non_empty(&spec.groups),
        readonly_rootfs: spec.read_only,
        sysctls: spec.sysctls.clone(),
        cap_add: non_empty(&spec.capability_add),
        cap_drop: non_empty(&spec.capability_drop),
        ulimits: non_empty(&spec.ulimits),
        oom_score_adj: spec.oom_score_adj,
        // The spec's nameservers, else the node's DNS server (service
        // discovery), else the engine's default (the host's resolv.conf).
        dns: dns
            .and_then(|d| non_empty(&d.nameservers))
            .or_else(|| dns_server.map(|ip| vec![ip.to_string()])),
        dns_search: dns.and_then(|d| non_empty(&d.search)),
        dns_options: dns.and_then(|d| non_empty(&d.options)),
        extra_hosts: spec.hosts.as_ref().map(|hosts| extra_hosts(hosts)),
        // Flotilla's restart policy decides whether a task runs again, with a
        // new task and a new container; the engine must never restart one.
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        ..Default::default()
    }
}

/// The spec's hosts are `/etc/hosts` lines ("IP name [alias...]"); the engine
/// wants "name:IP" for each name.
fn extra_hosts(hosts: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for line in hosts {
        let mut fields = line.split_whitespace();
        let Some(ip) = fields.next() else { continue };
        for name in fields {
            out.push(format!("{name}:{ip}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{Limit, TaskSpec, TaskSpecContainerSpecDnsConfig, TaskSpecResources};
    use flotilla_store::models::TaskRuntime;

    fn spec_of(task: &mut Task) -> &mut TaskSpecContainerSpec {
        task.spec
            .as_mut()
            .map(std::sync::Arc::make_mut)
            .and_then(|s| s.container_spec.as_mut())
            .expect("test tasks have a container spec")
    }

    fn task(command: &[&str], args: &[&str]) -> Task {
        let strings = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect());
        Task {
            id: Some("tid".into()),
            service_id: Some("sid".into()),
            node_id: Some("nid".into()),
            slot: Some(3),
            runtime: TaskRuntime {
                service_name: Some("web".into()),
                ..Default::default()
            },
            spec: Some(std::sync::Arc::new(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some("busybox".into()),
                    command: strings(command),
                    args: strings(args),
                    labels: Some(HashMap::from([("mine".into(), "1".into())])),
                    stop_grace_period: Some(3_500_000_000),
                    ..Default::default()
                }),
                resources: Some(TaskSpecResources {
                    limits: Some(Limit {
                        nano_cpus: Some(500_000_000),
                        memory_bytes: Some(0),
                        pids: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn names_replicated_and_global_tasks_like_docker() {
        let mut t = task(&[], &[]);
        assert_eq!(container_name(&t), "web.3.tid");
        t.slot = None;
        assert_eq!(container_name(&t), "web.nid.tid");
        t.runtime.service_name = None;
        assert_eq!(container_name(&t), "sid.nid.tid");
    }

    #[test]
    fn command_replaces_entrypoint_and_args_are_the_cmd() {
        let body = create_body(&task(&["sh", "-c"], &["echo hi"]), &[], None, &[]);
        assert_eq!(
            body.entrypoint,
            Some(vec!["sh".to_string(), "-c".to_string()])
        );
        assert_eq!(body.cmd, Some(vec!["echo hi".to_string()]));

        let body = create_body(&task(&[], &["echo", "hi"]), &[], None, &[]);
        assert_eq!(body.entrypoint, None);
        assert_eq!(body.cmd, Some(vec!["echo".to_string(), "hi".to_string()]));

        let body = create_body(&task(&[], &[]), &[], None, &[]);
        assert_eq!((body.entrypoint, body.cmd), (None, None));
    }

    #[test]
    fn swarm_labels_win_over_spec_labels() {
        let mut t = task(&[], &[]);
        if let Some(spec) = t
            .spec
            .as_mut()
            .map(std::sync::Arc::make_mut)
            .and_then(|s| s.container_spec.as_mut())
        {
            spec.labels = Some(HashMap::from([(TASK_ID_LABEL.into(), "forged".into())]));
        }
        let labels = labels(&t);
        assert_eq!(labels[TASK_ID_LABEL], "tid");
        assert_eq!(labels["com.docker.swarm.task.name"], "web.3.tid");
        assert_eq!(labels["com.docker.swarm.service.id"], "sid");
        assert_eq!(labels["com.docker.swarm.service.name"], "web");
        assert_eq!(labels[NODE_ID_LABEL], "nid");
        assert_eq!(labels["com.docker.swarm.task"], "");
        assert_eq!(labels[MANAGED_LABEL], "true");
    }

    #[test]
    fn limits_grace_and_restart_policy() {
        let body = create_body(&task(&[], &[]), &[], None, &[]);
        assert_eq!(body.stop_timeout, Some(3));
        let host = body.host_config.unwrap_or_default();
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, None, "zero means no limit");
        assert_eq!(
            host.restart_policy.and_then(|p| p.name),
            Some(RestartPolicyNameEnum::NO)
        );
        assert_eq!(stop_grace_secs(&Task::default()), DEFAULT_STOP_GRACE_SECS);
    }

    #[test]
    fn node_dns_server_unless_the_spec_has_nameservers() {
        let node_dns: IpAddr = "198.18.0.1".parse().expect("ip");
        let host = |t: &Task, dns| {
            create_body(t, &[], dns, &[])
                .host_config
                .unwrap_or_default()
        };
        let mut t = task(&[], &[]);
        assert_eq!(host(&t, None).dns, None);
        assert_eq!(
            host(&t, Some(node_dns)).dns,
            Some(vec!["198.18.0.1".into()])
        );
        spec_of(&mut t).dns_config = Some(TaskSpecContainerSpecDnsConfig {
            nameservers: Some(vec!["9.9.9.9".into()]),
            search: Some(vec!["example.org".into()]),
            options: Some(vec!["ndots:2".into()]),
        });
        let config = host(&t, Some(node_dns));
        assert_eq!(config.dns, Some(vec!["9.9.9.9".into()]));
        assert_eq!(config.dns_search, Some(vec!["example.org".into()]));
        assert_eq!(config.dns_options, Some(vec!["ndots:2".into()]));
        // Search domains and options alone keep the node's server.
        spec_of(&mut t)
            .dns_config
            .as_mut()
            .expect("dns config")
            .nameservers = None;
        let config = host(&t, Some(node_dns));
        assert_eq!(config.dns, Some(vec!["198.18.0.1".into()]));
        assert_eq!(config.dns_search, Some(vec!["example.org".into()]));
    }

    #[test]
    fn published_ports_are_exposed_and_bound() {
        use bollard::models::{
            EndpointPortConfigProtocolEnum as Proto, EndpointPortConfigPublishModeEnum as Mode,
        };
        let ports = vec![
            EndpointPortConfig {
                protocol: Some(Proto::TCP),
                target_port: Some(8080),
                published_port: Some(30000),
                publish_mode: Some(Mode::INGRESS),
                ..Default::default()
            },
            EndpointPortConfig {
                protocol: Some(Proto::UDP),
                target_port: Some(53),
                published_port: Some(5353),
                publish_mode: Some(Mode::HOST),
                ..Default::default()
            },
        ];
        let body = create_body(&task(&[], &[]), &ports, None, &[]);
        assert_eq!(
            body.exposed_ports,
            Some(vec!["8080/tcp".to_string(), "53/udp".to_string()])
        );
        let bindings = body
            .host_config
            .and_then(|h| h.port_bindings)
            .expect("bindings");
        let host_port = |key: &str| {
            bindings[key].as_ref().expect("a binding")[0]
                .host_port
                .clone()
        };
        assert_eq!(host_port("8080/tcp").as_deref(), Some(""));
        assert_eq!(host_port("53/udp").as_deref(), Some("5353"));
        let none = create_body(&task(&[], &[]), &[], None, &[]);
        assert_eq!(none.exposed_ports, None);
        assert_eq!(none.host_config.and_then(|h| h.port_bindings), None);
    }

    #[test]
    fn hosts_lines_become_extra_hosts() {
        let hosts = vec!["10.0.0.1 db cache".to_string(), "  ".to_string()];
        assert_eq!(extra_hosts(&hosts), vec!["db:10.0.0.1", "cache:10.0.0.1"]);
    }

    #[test]
    fn log_driver_and_memory_reservation_reach_the_container() {
        let mut t = task(&[], &[]);
        let host = create_body(&t, &[], None, &[]).host_config.unwrap();
        assert_eq!(host.log_config, None);
        assert_eq!(host.memory_reservation, None);
        let spec = t.spec.as_mut().map(std::sync::Arc::make_mut).unwrap();
        spec.log_driver = Some(flotilla_store::models::TaskSpecLogDriver {
            name: Some("local".into()),
            options: Some(HashMap::from([("max-size".into(), "10m".into())])),
        });
        spec.resources.as_mut().unwrap().reservations =
            Some(flotilla_store::models::ResourceObject {
                memory_bytes: Some(64 << 20),
                nano_cpus: Some(100_000_000),
                ..Default::default()
            });
        let host = create_body(&t, &[], None, &[]).host_config.unwrap();
        let log = host.log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("local"));
        assert_eq!(log.config.unwrap()["max-size"], "10m");
        assert_eq!(host.memory_reservation, Some(64 << 20));
    }

    #[test]
    fn generic_resources_given_to_a_task_are_in_its_environment() {
        use flotilla_store::models::{
            GenericResourcesInner, GenericResourcesInnerDiscreteResourceSpec,
            GenericResourcesInnerNamedResourceSpec,
        };
        let mut t = task(&[], &[]);
        t.spec
            .as_mut()
            .map(std::sync::Arc::make_mut)
            .unwrap()
            .container_spec
            .as_mut()
            .unwrap()
            .env = Some(vec!["A=1".into()]);
        t.assigned_generic_resources = Some(vec![
            GenericResourcesInner {
                named_resource_spec: Some(GenericResourcesInnerNamedResourceSpec {
                    kind: Some("Gpu".into()),
                    value: Some("g1".into()),
                }),
                discrete_resource_spec: None,
            },
            GenericResourcesInner {
                named_resource_spec: Some(GenericResourcesInnerNamedResourceSpec {
                    kind: Some("Gpu".into()),
                    value: Some("g2".into()),
                }),
                discrete_resource_spec: None,
            },
            GenericResourcesInner {
                named_resource_spec: None,
                discrete_resource_spec: Some(GenericResourcesInnerDiscreteResourceSpec {
                    kind: Some("SSD".into()),
                    value: Some(2),
                }),
            },
        ]);
        let env = create_body(&t, &[], None, &[]).env.unwrap();
        assert_eq!(
            env,
            ["A=1", "DOCKER_RESOURCE_GPU=g1,g2", "DOCKER_RESOURCE_SSD=2"]
        );
    }
}
