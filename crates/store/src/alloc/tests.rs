//! The allocators as `apply` uses them: through ops on a state.

use super::*;
use crate::error::StoreError;
use crate::network::tests::port;
use crate::network::{task_ports, DNS_ADDR};
use crate::ops::Op;
use crate::state::State;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum as Mode, EndpointSpec, ServiceSpec,
};

/// A TCP port config as the tests write them (published 0: left open).
fn svc(id: &str, ports: Vec<EndpointPortConfig>) -> Service {
    Service::from(bollard::models::Service {
        id: Some(id.into()),
        spec: Some(ServiceSpec {
            name: Some(format!("svc-{id}")),
            endpoint_spec: Some(EndpointSpec {
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn task_of(id: &str, service: &str) -> Task {
    Task {
        id: Some(id.into()),
        service_id: Some(service.into()),
        ..Default::default()
    }
}

fn published(s: &State, id: &str) -> Vec<i64> {
    s.services[id]
        .endpoint
        .as_ref()
        .and_then(|e| e.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| p.published_port.unwrap_or(0))
        .collect()
}

fn update(s: &mut State, index: u64, service: Service) -> Result<(), StoreError> {
    let expected = crate::state::version_of(&s.services[service.id.as_deref().unwrap()].version);
    s.apply(
        index,
        Op::UpdateService {
            expected,
            service: Box::new(service),
        },
    )
}

#[test]
fn the_dns_server_is_the_service_networks_own_address() {
    assert_eq!(Allocations::default().addrs.gateway(), DNS_ADDR);
}

#[test]
fn ingress_ports_are_numbered_and_kept() {
    let mut s = State::default();
    let ports = vec![port(0, 80, Mode::INGRESS), port(0, 443, Mode::INGRESS)];
    s.apply(1, Op::CreateService(Box::new(svc("a", ports.clone()))))
        .unwrap();
    assert_eq!(published(&s, "a"), vec![30000, 30001]);
    s.apply(
        2,
        Op::CreateService(Box::new(svc("b", vec![port(0, 80, Mode::INGRESS)]))),
    )
    .unwrap();
    assert_eq!(published(&s, "b"), vec![30002]);
    // An update keeps the numbers the service already had.
    update(&mut s, 3, svc("a", ports)).unwrap();
    assert_eq!(published(&s, "a"), vec![30000, 30001]);
}

#[test]
fn a_taken_ingress_port_is_refused_naming_its_owner() {
    let mut s = State::default();
    s.apply(
        1,
        Op::CreateService(Box::new(svc("a", vec![port(8080, 80, Mode::INGRESS)]))),
    )
    .unwrap();
    let err = s
        .apply(
            2,
            Op::CreateService(Box::new(svc("b", vec![port(8080, 80, Mode::INGRESS)]))),
        )
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::PortInUse {
            port: 8080,
            protocol: "tcp".into(),
            service_name: "svc-a".into(),
            service_id: "a".into(),
        }
    );
    assert!(!s.services.contains_key("b"));
    // Host mode on the same number is a node-local matter.
    s.apply(
        3,
        Op::CreateService(Box::new(svc("c", vec![port(8080, 80, Mode::HOST)]))),
    )
    .unwrap();
    // Once the owner is gone the port is free.
    s.apply(4, Op::RemoveService { id: "a".into() }).unwrap();
    s.apply(
        5,
        Op::CreateService(Box::new(svc("b", vec![port(8080, 80, Mode::INGRESS)]))),
    )
    .unwrap();
}

#[test]
fn a_refused_update_keeps_the_services_ports_and_vip() {
    let mut s = State::default();
    s.apply(
        1,
        Op::CreateService(Box::new(svc("a", vec![port(8080, 80, Mode::INGRESS)]))),
    )
    .unwrap();
    s.apply(
        2,
        Op::CreateService(Box::new(svc("b", vec![port(9090, 80, Mode::INGRESS)]))),
    )
    .unwrap();
    let pool = s.allocations.addrs.clone();
    let before = s.services["b"].clone();
    let clash = svc("b", vec![port(8080, 80, Mode::INGRESS)]);
    assert!(matches!(
        update(&mut s, 3, clash),
        Err(StoreError::PortInUse { .. })
    ));
    assert_eq!(s.services["b"], before);
    assert_eq!(s.allocations.addrs, pool);
}

#[test]
fn vips_and_task_addresses_are_unique_and_reused_after_release() {
    let mut s = State::default();
    s.apply(
        1,
        Op::CreateService(Box::new(svc("a", vec![port(8080, 80, Mode::INGRESS)]))),
    )
    .unwrap();
    assert_eq!(
        service_vip(&s.services["a"]),
        Some(Ipv4Addr::new(198, 18, 0, 2))
    );
    for (i, id) in ["t1", "t2"].into_iter().enumerate() {
        s.apply(2 + i as u64, Op::CreateTask(Box::new(task_of(id, "a"))))
            .unwrap();
    }
    assert_eq!(
        task_addr(&s.tasks["t1"]),
        Some(Ipv4Addr::new(198, 18, 0, 3))
    );
    assert_eq!(
        task_addr(&s.tasks["t2"]),
        Some(Ipv4Addr::new(198, 18, 0, 4))
    );
    assert_eq!(task_ports(&s.tasks["t1"]).len(), 1);
    s.apply(5, Op::RemoveTask { id: "t1".into() }).unwrap();
    s.apply(6, Op::CreateTask(Box::new(task_of("t3", "a"))))
        .unwrap();
    assert_eq!(
        task_addr(&s.tasks["t3"]),
        Some(Ipv4Addr::new(198, 18, 0, 3))
    );
    // The pool is rebuilt the same from the objects (snapshot load).
    let before = s.allocations.addrs.clone();
    s.rebuild_indexes();
    assert_eq!(s.allocations.addrs, before);
}

#[test]
fn a_vip_goes_back_to_the_pool_when_the_service_stops_publishing() {
    let mut s = State::default();
    s.apply(
        1,
        Op::CreateService(Box::new(svc("a", vec![port(8080, 80, Mode::INGRESS)]))),
    )
    .unwrap();
    update(&mut s, 2, svc("a", vec![])).unwrap();
    assert_eq!(service_vip(&s.services["a"]), None);
    s.apply(
        3,
        Op::CreateService(Box::new(svc("b", vec![port(9090, 80, Mode::INGRESS)]))),
    )
    .unwrap();
    assert_eq!(
        service_vip(&s.services["b"]),
        Some(Ipv4Addr::new(198, 18, 0, 2))
    );
}

#[test]
fn a_service_without_ports_gets_no_addresses() {
    let mut s = State::default();
    s.apply(1, Op::CreateService(Box::new(svc("a", vec![]))))
        .unwrap();
    assert_eq!(service_vip(&s.services["a"]), None);
    s.apply(2, Op::CreateTask(Box::new(task_of("t", "a"))))
        .unwrap();
    assert_eq!(task_addr(&s.tasks["t"]), None);
    assert!(task_ports(&s.tasks["t"]).is_empty());
}
