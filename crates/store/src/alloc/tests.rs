//! The allocators as `apply` uses them: through ops on a state.

use super::*;
use crate::error::StoreError;
use crate::network::tests::port;
use crate::network::{service_vip, task_addr, task_ports, DNS_ADDR};
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

/// A state with a swarm (and so its ingress network).
pub(crate) fn swarm() -> State {
    let mut s = State::default();
    let swarm = bollard::models::Swarm {
        id: Some("c1".into()),
        ..Default::default()
    };
    s.apply(
        1,
        Op::InitCluster {
            swarm: Box::new(swarm),
            ca_key_pem: String::new(),
            unlock_key: None,
        },
    )
    .unwrap();
    s
}

fn vip(s: &State, service: &str) -> Option<Ipv4Addr> {
    let ingress = s.ingress().map(|n| n.id.clone()).unwrap_or_default();
    service_vip(&s.services[service], &ingress)
}

#[test]
fn the_dns_server_is_the_ingress_networks_gateway() {
    let s = swarm();
    let ingress = s.ingress().unwrap();
    assert_eq!(ingress.ipam.gateway, DNS_ADDR);
    assert_eq!(ingress.ipam.subnet.to_string(), "198.18.0.0/16");
}

#[test]
fn ingress_ports_are_numbered_and_kept() {
    let mut s = swarm();
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
    let mut s = swarm();
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
    let mut s = swarm();
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
    let pool = s.allocations.clone();
    let before = s.services["b"].clone();
    let clash = svc("b", vec![port(8080, 80, Mode::INGRESS)]);
    assert!(matches!(
        update(&mut s, 3, clash),
        Err(StoreError::PortInUse { .. })
    ));
    assert_eq!(s.services["b"], before);
    assert_eq!(s.allocations, pool);
}

#[test]
fn vips_and_task_addresses_are_unique_and_reused_after_release() {
    let mut s = swarm();
    s.apply(
        1,
        Op::CreateService(Box::new(svc("a", vec![port(8080, 80, Mode::INGRESS)]))),
    )
    .unwrap();
    assert_eq!(vip(&s, "a"), Some(Ipv4Addr::new(198, 18, 0, 2)));
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
    let before = s.allocations.clone();
    s.rebuild_indexes();
    assert_eq!(s.allocations, before);
}

#[test]
fn a_vip_goes_back_to_the_pool_when_the_service_stops_publishing() {
    let mut s = swarm();
    s.apply(
        1,
        Op::CreateService(Box::new(svc("a", vec![port(8080, 80, Mode::INGRESS)]))),
    )
    .unwrap();
    update(&mut s, 2, svc("a", vec![])).unwrap();
    assert_eq!(vip(&s, "a"), None);
    s.apply(
        3,
        Op::CreateService(Box::new(svc("b", vec![port(9090, 80, Mode::INGRESS)]))),
    )
    .unwrap();
    assert_eq!(vip(&s, "b"), Some(Ipv4Addr::new(198, 18, 0, 2)));
}

#[test]
fn a_service_without_ports_gets_no_addresses() {
    let mut s = swarm();
    s.apply(1, Op::CreateService(Box::new(svc("a", vec![]))))
        .unwrap();
    assert_eq!(vip(&s, "a"), None);
    s.apply(2, Op::CreateTask(Box::new(task_of("t", "a"))))
        .unwrap();
    assert_eq!(task_addr(&s.tasks["t"]), None);
    assert!(task_ports(&s.tasks["t"]).is_empty());
}

fn net_spec(name: &str, subnet: Option<&str>) -> crate::networks::NetworkSpec {
    crate::networks::NetworkSpec {
        name: name.into(),
        ipam: subnet.map(|s| crate::networks::IpamRequest {
            subnet: crate::networks::Subnet::parse(s).unwrap(),
            gateway: None,
            range: None,
        }),
        ..Default::default()
    }
}

fn create_net(
    s: &mut State,
    index: u64,
    id: &str,
    spec: crate::networks::NetworkSpec,
) -> Result<(), StoreError> {
    s.apply(
        index,
        Op::CreateNetwork {
            id: id.into(),
            created_at: "2026-12-05T00:00:00Z".into(),
            spec: Box::new(spec),
        },
    )
}

fn on_networks(id: &str, nets: &[&str]) -> Service {
    let mut svc = svc(id, vec![]);
    let spec = svc.spec.as_mut().unwrap();
    spec.task_template = Some(bollard::models::TaskSpec {
        networks: Some(
            nets.iter()
                .map(|n| bollard::models::NetworkAttachmentConfig {
                    target: Some(n.to_string()),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    });
    svc
}

fn task_on(id: &str, svc: &Service) -> Task {
    Task {
        spec: svc
            .spec
            .as_ref()
            .and_then(|s| s.task_template.clone())
            .map(std::sync::Arc::new),
        ..task_of(id, svc.id.as_deref().unwrap())
    }
}

#[test]
fn networks_get_subnets_from_the_default_pool_and_their_own_vni() {
    let mut s = swarm();
    create_net(&mut s, 2, "n1", net_spec("front", None)).unwrap();
    create_net(&mut s, 3, "n2", net_spec("back", None)).unwrap();
    let (a, b) = (&s.networks["n1"], &s.networks["n2"]);
    assert_eq!(a.ipam.subnet.to_string(), "10.0.0.0/24");
    assert_eq!(a.ipam.gateway, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(b.ipam.subnet.to_string(), "10.0.1.0/24");
    assert_eq!((a.vni, b.vni), (4097, 4098));
    // A subnet given by hand is skipped by the next default one.
    create_net(&mut s, 4, "n3", net_spec("mine", Some("10.0.2.0/23"))).unwrap();
    create_net(&mut s, 5, "n4", net_spec("next", None)).unwrap();
    assert_eq!(s.networks["n4"].ipam.subnet.to_string(), "10.0.4.0/24");
    // The swarm's own pools, as `swarm init --default-addr-pool` sets them.
    let mut s = swarm();
    let cluster = s.cluster.as_mut().unwrap();
    cluster.default_addr_pool = Some(vec!["10.20.0.0/16".into()]);
    cluster.subnet_size = Some(26);
    create_net(&mut s, 2, "n1", net_spec("front", None)).unwrap();
    create_net(&mut s, 3, "n2", net_spec("back", None)).unwrap();
    assert_eq!(s.networks["n1"].ipam.subnet.to_string(), "10.20.0.0/26");
    assert_eq!(s.networks["n2"].ipam.subnet.to_string(), "10.20.0.64/26");
}

#[test]
fn bad_networks_are_refused_and_leave_nothing_behind() {
    let mut s = swarm();
    create_net(&mut s, 2, "n1", net_spec("front", Some("10.9.0.0/16"))).unwrap();
    let before = (s.networks.clone(), s.allocations.clone());
    let e = create_net(&mut s, 3, "n2", net_spec("back", Some("10.9.7.0/24"))).unwrap_err();
    assert!(
        e.to_string()
            .contains("overlaps with the subnet 10.9.0.0/16 of network front"),
        "{e}"
    );
    let e = create_net(&mut s, 3, "n2", net_spec("mesh", Some("198.18.4.0/24"))).unwrap_err();
    assert!(e.to_string().contains("network ingress"), "{e}");
    let e = create_net(&mut s, 3, "n2", net_spec("front", None)).unwrap_err();
    assert!(matches!(e, StoreError::NameTaken { .. }), "{e}");
    let mut gw = net_spec("gw", Some("10.10.0.0/24"));
    gw.ipam.as_mut().unwrap().gateway = Some(Ipv4Addr::new(10, 11, 0, 1));
    let e = create_net(&mut s, 3, "n2", gw).unwrap_err();
    assert!(
        e.to_string().contains("does not contain gateway 10.11.0.1"),
        "{e}"
    );
    let mut vx = net_spec("vx", None);
    vx.options
        .insert(crate::networks::VXLAN_OPTION.into(), "4097".into());
    let e = create_net(&mut s, 3, "n2", vx).unwrap_err();
    assert!(e.to_string().contains("4097 is in use"), "{e}");
    assert_eq!((s.networks.clone(), s.allocations.clone()), before);
}

#[test]
fn services_and_tasks_get_addresses_on_their_networks() {
    let mut s = swarm();
    create_net(&mut s, 2, "n1", net_spec("front", None)).unwrap();
    create_net(&mut s, 3, "n2", net_spec("back", None)).unwrap();
    let api = on_networks("api", &["n1", "n2"]);
    s.apply(4, Op::CreateService(Box::new(api.clone())))
        .unwrap();
    assert_eq!(
        vips(&s.services["api"]),
        vec![
            ("n1".to_string(), Ipv4Addr::new(10, 0, 0, 2)),
            ("n2".to_string(), Ipv4Addr::new(10, 0, 1, 2)),
        ]
    );
    s.apply(5, Op::CreateTask(Box::new(task_on("t1", &api))))
        .unwrap();
    s.apply(6, Op::CreateTask(Box::new(task_on("t2", &api))))
        .unwrap();
    let addrs = |s: &State, t: &str| -> Vec<Ipv4Addr> {
        s.tasks[t].runtime.networks.iter().map(|a| a.addr).collect()
    };
    assert_eq!(
        addrs(&s, "t1"),
        [Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 1, 3)]
    );
    assert_eq!(
        addrs(&s, "t2"),
        [Ipv4Addr::new(10, 0, 0, 4), Ipv4Addr::new(10, 0, 1, 4)]
    );
    // The node a task goes to gets an address on each of its networks.
    let status = bollard::models::TaskStatus {
        state: Some(bollard::models::TaskState::ASSIGNED),
        ..Default::default()
    };
    s.apply(
        7,
        Op::AssignTask {
            id: "t1".into(),
            node_id: "node-a".into(),
            status,
            generic: None,
        },
    )
    .unwrap();
    assert_eq!(
        s.networks["n1"].node_addrs["node-a"],
        Ipv4Addr::new(10, 0, 0, 5)
    );
    assert_eq!(
        s.networks["n2"].node_addrs["node-a"],
        Ipv4Addr::new(10, 0, 1, 5)
    );
    // A task that stopped gives its addresses back, and shows them still.
    let failed = bollard::models::TaskStatus {
        state: Some(bollard::models::TaskState::FAILED),
        ..Default::default()
    };
    s.apply(
        8,
        Op::SetTaskStatus {
            id: "t1".into(),
            status: failed,
        },
    )
    .unwrap();
    assert_eq!(
        addrs(&s, "t1"),
        [Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 1, 3)]
    );
    s.apply(9, Op::CreateTask(Box::new(task_on("t3", &api))))
        .unwrap();
    assert_eq!(
        addrs(&s, "t3"),
        [Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 1, 3)]
    );
    // Removing the dead task must not free what t3 now holds.
    s.apply(10, Op::RemoveTask { id: "t1".into() }).unwrap();
    let before = s.allocations.clone();
    s.rebuild_indexes();
    assert_eq!(s.allocations, before, "a load rebuilds the same pools");
    // Leaving a network gives its VIP back; the other is kept.
    update(&mut s, 11, on_networks("api", &["n2"])).unwrap();
    assert_eq!(
        vips(&s.services["api"]),
        vec![("n2".to_string(), Ipv4Addr::new(10, 0, 1, 2))]
    );
    // An unknown network is refused.
    let e = update(&mut s, 12, on_networks("api", &["nope"])).unwrap_err();
    assert_eq!(e.to_string(), "network nope not found");
}

#[test]
fn a_network_in_use_cannot_be_removed() {
    let mut s = swarm();
    create_net(&mut s, 2, "n1", net_spec("front", None)).unwrap();
    s.apply(3, Op::CreateService(Box::new(on_networks("web", &["n1"]))))
        .unwrap();
    let e = s
        .apply(4, Op::RemoveNetwork { id: "n1".into() })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "network front is in use by service svc-web (web)"
    );
    s.apply(
        5,
        Op::CreateService(Box::new(svc("p", vec![port(8080, 80, Mode::INGRESS)]))),
    )
    .unwrap();
    let ingress = s.ingress().unwrap().id.clone();
    let e = s
        .apply(
            6,
            Op::RemoveNetwork {
                id: ingress.clone(),
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("in use by service svc-p"), "{e}");
    s.apply(7, Op::RemoveService { id: "web".into() }).unwrap();
    s.apply(8, Op::RemoveNetwork { id: "n1".into() }).unwrap();
    s.apply(9, Op::RemoveService { id: "p".into() }).unwrap();
    s.apply(10, Op::RemoveNetwork { id: ingress }).unwrap();
    let e = s
        .apply(
            11,
            Op::CreateService(Box::new(svc("q", vec![port(8080, 80, Mode::INGRESS)]))),
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("no ingress network is present"),
        "{e}"
    );
}

mod random_histories {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Create,
        Assign(usize, u8),
        Fail(usize),
        Remove(usize),
        Reload,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => Just(Step::Create),
            2 => (any::<usize>(), 0u8..3).prop_map(|(i, n)| Step::Assign(i, n)),
            2 => any::<usize>().prop_map(Step::Fail),
            1 => any::<usize>().prop_map(Step::Remove),
            1 => Just(Step::Reload),
        ]
    }

    /// After any history of tasks made, placed, failed and removed, and of
    /// reloads: no two holders share an address on a network, and a
    /// reload rebuilds the very pools `apply` kept.
    fn check_invariants(s: &State) {
        let mut held: std::collections::BTreeSet<(String, Ipv4Addr)> = Default::default();
        let mut hold = |net: &str, ip: Ipv4Addr, who: &str| {
            assert!(
                held.insert((net.to_string(), ip)),
                "{ip} on {net} twice ({who})"
            );
        };
        for svc in s.services.values() {
            for (net, ip) in vips(svc) {
                hold(&net, ip, "a VIP");
            }
        }
        for net in s.networks.values() {
            for (node, ip) in &net.node_addrs {
                hold(&net.id, *ip, node);
            }
        }
        for t in s.tasks.values().filter(|t| holds_addresses(t)) {
            for (net, ip) in task_addrs(t, &s.networks) {
                hold(&net, ip, t.id_str());
            }
        }
        let rebuilt = Allocations::rebuild(&s.networks, &s.services, &s.tasks);
        assert_eq!(rebuilt, s.allocations);
    }

    proptest! {
        #[test]
        fn addresses_are_never_given_twice(steps in proptest::collection::vec(step(), 1..60)) {
            let mut s = swarm();
            create_net(&mut s, 2, "n1", net_spec("small", Some("10.30.0.0/28"))).unwrap();
            create_net(&mut s, 3, "n2", net_spec("big", None)).unwrap();
            let api = on_networks("api", &["n1", "n2"]);
            s.apply(4, Op::CreateService(Box::new(api.clone()))).unwrap();
            let mut ids: Vec<String> = Vec::new();
            for (i, step) in steps.into_iter().enumerate() {
                let index = 10 + i as u64;
                let pick = |k: usize| (!ids.is_empty()).then(|| ids[k % ids.len()].clone());
                match step {
                    Step::Create => {
                        let id = format!("t{i}");
                        // A full /28 refuses the task; nothing is taken.
                        if s.apply(index, Op::CreateTask(Box::new(task_on(&id, &api)))).is_ok() {
                            ids.push(id);
                        }
                    }
                    Step::Assign(k, node) => {
                        if let Some(id) = pick(k) {
                            let status = bollard::models::TaskStatus {
                                state: Some(bollard::models::TaskState::ASSIGNED),
                                ..Default::default()
                            };
                            let _ = s.apply(index, Op::AssignTask { id, node_id: format!("node{node}"), status, generic: None });
                        }
                    }
                    Step::Fail(k) => {
                        if let Some(id) = pick(k) {
                            let status = bollard::models::TaskStatus {
                                state: Some(bollard::models::TaskState::FAILED),
                                ..Default::default()
                            };
                            let _ = s.apply(index, Op::SetTaskStatus { id, status });
                        }
                    }
                    Step::Remove(k) => {
                        if let Some(id) = pick(k) {
                            s.apply(index, Op::RemoveTask { id: id.clone() }).unwrap();
                            ids.retain(|x| x != &id);
                        }
                    }
                    Step::Reload => s.rebuild_indexes(),
                }
                check_invariants(&s);
            }
        }
    }
}
