//! Objects as dockerd shows them: what its conversion from SwarmKit's
//! objects fills in or leaves out, applied to Flotilla's stored objects on
//! the way out. Checked against a real dockerd by
//! tests/clients/compare_dockerd.py.

use bollard::models::{
    ContainerStatus, EndpointPortConfigPublishModeEnum as Mode, PortStatus, ServiceSpec, TaskSpec,
    TaskSpecContainerSpecIsolationEnum,
};
use flotilla_store::models::{Service, Task};

/// A service: its specs' runtime and isolation as dockerd spells their
/// defaults.
pub fn service(svc: &Service) -> Service {
    let mut svc = svc.clone();
    svc.runtime = Default::default();
    if let Some(spec) = svc.spec.as_mut() {
        service_spec(spec);
    }
    if let Some(spec) = svc.previous_spec.as_mut() {
        service_spec(spec);
    }
    svc
}

fn service_spec(spec: &mut ServiceSpec) {
    if let Some(t) = spec.task_template.as_mut() {
        // The only runtime Flotilla runs; dockerd names it on services only.
        t.runtime.get_or_insert_with(|| "container".into());
        task_spec(t);
    }
}

fn task_spec(t: &mut TaskSpec) {
    if let Some(c) = t.container_spec.as_mut() {
        c.isolation
            .get_or_insert(TaskSpecContainerSpecIsolationEnum::DEFAULT);
    }
}

/// A task: Flotilla's runtime state left out, PortStatus with host-mode
/// ports only (the store also keeps the ingress target ports the mesh
/// routes to) and always present, labels and container status fields
/// always present as dockerd's Go structs write them.
pub fn task(task: &Task, state: &flotilla_store::State) -> Task {
    let mut task = task.clone();
    task.networks_attachments = super::network::attachments(&task, state);
    task.runtime = Default::default();
    task.labels.get_or_insert_with(Default::default);
    if let Some(t) = task.spec.as_mut().map(std::sync::Arc::make_mut) {
        task_spec(t);
    }
    let status = task.status.get_or_insert_with(Default::default);
    let host: Vec<_> = status
        .port_status
        .as_ref()
        .and_then(|p| p.ports.as_ref())
        .into_iter()
        .flatten()
        .filter(|p| p.publish_mode == Some(Mode::HOST))
        .cloned()
        .collect();
    status.port_status = Some(PortStatus {
        ports: (!host.is_empty()).then_some(host),
    });
    if let Some(c) = status.container_status.as_mut() {
        let ContainerStatus {
            container_id,
            pid,
            exit_code,
        } = c;
        container_id.get_or_insert_with(String::new);
        pid.get_or_insert(0);
        exit_code.get_or_insert(0);
    }
    task
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{EndpointPortConfig, TaskSpecContainerSpec, TaskStatus};
    use flotilla_store::models::TaskRuntime;

    #[test]
    fn a_task_shows_what_dockerd_always_writes_and_nothing_of_flotillas() {
        let port = |mode| EndpointPortConfig {
            target_port: Some(80),
            published_port: Some(8080),
            publish_mode: Some(mode),
            ..Default::default()
        };
        let t = Task {
            id: Some("t".into()),
            spec: Some(std::sync::Arc::new(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec::default()),
                ..Default::default()
            })),
            status: Some(TaskStatus {
                container_status: Some(ContainerStatus {
                    container_id: Some("c".into()),
                    ..Default::default()
                }),
                port_status: Some(PortStatus {
                    ports: Some(vec![port(Mode::INGRESS)]),
                }),
                ..Default::default()
            }),
            runtime: TaskRuntime {
                service_name: Some("web".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let v = serde_json::to_value(task(&t, &Default::default())).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "ID": "t",
                "Labels": {},
                "Spec": {"ContainerSpec": {"Isolation": "default"}},
                "Status": {
                    "ContainerStatus": {"ContainerID": "c", "PID": 0, "ExitCode": 0},
                    "PortStatus": {}
                }
            })
        );
        let mut host = t.clone();
        host.status.as_mut().unwrap().port_status = Some(PortStatus {
            ports: Some(vec![port(Mode::HOST), port(Mode::INGRESS)]),
        });
        let shown = task(&host, &Default::default());
        let ports = shown.status.unwrap().port_status.unwrap().ports.unwrap();
        assert_eq!(ports, vec![port(Mode::HOST)]);
    }

    #[test]
    fn a_spec_shown_and_sent_back_is_stored_as_it_was() {
        // `docker service scale` reads the spec, changes the replicas and
        // sends the rest back: the template its tasks run must not change.
        let sent = ServiceSpec {
            name: Some("web".into()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some("busybox".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let stored = flotilla_manager::controlapi::service::validate(sent).unwrap();
        let svc = Service::from(bollard::models::Service {
            spec: Some(stored.clone()),
            ..Default::default()
        });
        let back = service(&svc).spec.unwrap();
        assert_ne!(
            back, stored,
            "the API shows defaults the store leaves unset"
        );
        let again = flotilla_manager::controlapi::service::validate(back).unwrap();
        assert_eq!(again, stored);
    }

    #[test]
    fn a_service_names_its_runtime_and_isolation_in_both_specs() {
        let spec = ServiceSpec {
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec::default()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let svc = Service {
            spec: Some(spec.clone()),
            previous_spec: Some(spec),
            ..Default::default()
        };
        let v = serde_json::to_value(service(&svc)).unwrap();
        for key in ["Spec", "PreviousSpec"] {
            assert_eq!(v[key]["TaskTemplate"]["Runtime"], "container", "{v}");
            assert_eq!(
                v[key]["TaskTemplate"]["ContainerSpec"]["Isolation"],
                "default"
            );
        }
    }
}
