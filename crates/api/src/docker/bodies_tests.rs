//! The request bodies real clients sent to a real dockerd (captured from
//! its debug log, `testdata/`): the docker CLI, docker-py 7 and `docker
//! stack deploy` of a two-service compose file. Each is decoded as a route
//! decodes it and checked for what it says, then validated as the manager
//! stores it.

use bollard::models::{
    EndpointPortConfigProtocolEnum as Proto, EndpointPortConfigPublishModeEnum as Publish,
    EndpointSpecModeEnum, ServiceSpec, ServiceSpecUpdateConfigOrderEnum,
    TaskSpecRestartPolicyConditionEnum as Condition,
};
use bytes::Bytes;
use flotilla_manager::controlapi::service::validate;

use crate::routes::service_spec_body;

fn decoded(body: &'static str) -> ServiceSpec {
    let spec = service_spec_body(&Bytes::from_static(body.as_bytes())).expect("decodes");
    // Each also meets the manager's checks (what it fills is tested there;
    // network names are turned into IDs against the store).
    validate(spec.clone()).expect("valid");
    spec
}

fn replicas(s: &ServiceSpec) -> Option<i64> {
    s.mode.as_ref()?.replicated.as_ref()?.replicas
}

#[test]
fn stack_deploy_service_with_ports_networks_and_deploy_keys() {
    let s = decoded(include_str!("testdata/stack_service_web.json"));
    assert_eq!(s.name.as_deref(), Some("demo_web"));
    assert_eq!(replicas(&s), Some(3));
    let labels = s.labels.as_ref().unwrap();
    assert_eq!(labels["com.docker.stack.namespace"], "demo");
    assert_eq!(labels["tier"], "front");
    let t = s.task_template.as_ref().unwrap();
    let c = t.container_spec.as_ref().unwrap();
    assert_eq!(c.image.as_deref(), Some("flotilla-hello:latest"));
    assert_eq!(c.env.as_deref(), Some(&["MODE=prod".to_string()][..]));
    assert_eq!(c.stop_grace_period, Some(3_000_000_000));
    // The CLI writes dockerd's Go name, "Healthcheck".
    let h = c.health_check.as_ref().expect("Healthcheck decoded");
    assert_eq!(h.interval, Some(5_000_000_000));
    let nets = t.networks.as_ref().unwrap();
    assert_eq!(nets[0].target.as_deref(), Some("demo_front"));
    assert_eq!(nets[0].aliases.as_deref(), Some(&["web".to_string()][..]));
    let r = t.resources.as_ref().unwrap();
    assert_eq!(r.limits.as_ref().unwrap().nano_cpus, Some(500_000_000));
    assert_eq!(
        r.reservations.as_ref().unwrap().memory_bytes,
        Some(16 << 20)
    );
    let rp = t.restart_policy.as_ref().unwrap();
    assert_eq!(
        (rp.condition, rp.max_attempts),
        (Some(Condition::ON_FAILURE), Some(3))
    );
    let p = t.placement.as_ref().unwrap();
    assert_eq!(
        p.constraints.as_deref(),
        Some(&["node.role == manager".to_string()][..])
    );
    let u = s.update_config.as_ref().unwrap();
    assert_eq!(u.parallelism, Some(2));
    assert_eq!(u.delay, Some(10_000_000_000));
    assert_eq!(u.order, Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST));
    let ports = s.endpoint_spec.as_ref().unwrap().ports.as_ref().unwrap();
    assert_eq!(ports.len(), 2);
    assert_eq!(
        (
            ports[1].protocol,
            ports[1].publish_mode,
            ports[1].published_port
        ),
        (Some(Proto::UDP), Some(Publish::HOST), Some(19090))
    );
}

#[test]
fn stack_deploy_global_service_in_dnsrr_mode_on_two_networks() {
    let s = decoded(include_str!("testdata/stack_service_global_dnsrr.json"));
    assert_eq!(s.name.as_deref(), Some("demo_api"));
    assert!(s.mode.as_ref().unwrap().global.is_some());
    assert_eq!(
        s.endpoint_spec.as_ref().unwrap().mode,
        Some(EndpointSpecModeEnum::DNSRR)
    );
    let t = s.task_template.as_ref().unwrap();
    let c = t.container_spec.as_ref().unwrap();
    // Compose's `command` is the CLI's Args.
    assert_eq!(
        c.args.as_deref(),
        Some(&["sleep".to_string(), "1000".into()][..])
    );
    let targets: Vec<_> = t
        .networks
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.target.as_deref().unwrap())
        .collect();
    assert_eq!(targets, ["demo_back", "demo_front"]);
}

#[test]
fn docker_cli_service_create_with_mounts_health_and_limits() {
    let s = decoded(include_str!("testdata/cli_service_create.json"));
    assert_eq!(s.name.as_deref(), Some("cli1"));
    assert_eq!(replicas(&s), Some(2));
    let t = s.task_template.as_ref().unwrap();
    let c = t.container_spec.as_ref().unwrap();
    let m = &c.mounts.as_ref().unwrap()[0];
    assert_eq!(m.target.as_deref(), Some("/scratch"));
    assert!(c.health_check.is_some());
    let limits = t.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits.memory_bytes, Some(32 << 20));
    assert_eq!(s.update_config.as_ref().unwrap().delay, Some(5_000_000_000));
    let e = s.endpoint_spec.as_ref().unwrap();
    assert_eq!(e.mode, Some(EndpointSpecModeEnum::VIP));
    assert_eq!(e.ports.as_ref().unwrap()[0].published_port, Some(8081));
}

#[test]
fn docker_py_bodies_with_lowercase_modes_and_no_publish_mode() {
    let s = decoded(include_str!("testdata/dockerpy_service_create.json"));
    assert_eq!(replicas(&s), Some(5));
    let c = s
        .task_template
        .as_ref()
        .unwrap()
        .container_spec
        .as_ref()
        .unwrap();
    assert_eq!(
        c.command.as_deref(),
        Some(&["sleep".to_string(), "1000".into()][..])
    );
    assert_eq!(c.args, None, "docker-py sends Args: null");
    let port = &s.endpoint_spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    assert_eq!(port.publish_mode, None);
    let stored = validate(s).unwrap();
    let port = &stored.endpoint_spec.unwrap().ports.unwrap()[0];
    assert_eq!(port.publish_mode, Some(Publish::INGRESS));

    let g = decoded(include_str!("testdata/dockerpy_service_create_global.json"));
    assert!(g.mode.as_ref().unwrap().global.is_some());
    assert_eq!(replicas(&g), None);

    // Service.scale(2): the spec as dockerd showed it, replicas changed.
    let up = decoded(include_str!("testdata/dockerpy_service_scale.json"));
    assert_eq!(replicas(&up), Some(2));
    assert!(up.rollback_config.is_some() && up.update_config.is_some());
}
