//! Published ports: what a task asks for (its `com.flotilla.ports` label),
//! the bindings a container's create request asks of the engine, and the
//! host ports the engine actually bound, read back from an inspect. Plain
//! functions, tested without an engine. The process executor shares
//! `requested`.

use std::collections::{HashMap, HashSet};

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum as Proto,
    EndpointPortConfigPublishModeEnum as Mode, PortBinding, PortMap,
};
use flotilla_store::models::Task;

/// The task's ports with protocol and mode spelled out (tcp and ingress
/// when unset: Docker's defaults); an error names an entry that cannot be
/// published.
pub(crate) fn requested(task: &Task) -> Result<Vec<EndpointPortConfig>, String> {
    flotilla_store::network::task_ports(task)
        .iter()
        .cloned()
        .map(normalize)
        .collect()
}

fn normalize(mut port: EndpointPortConfig) -> Result<EndpointPortConfig, String> {
    let valid = |p: Option<i64>| p.is_some_and(|p| (1..=65535).contains(&p));
    if !valid(port.target_port) {
        return Err(format!(
            "invalid target port {} in the published ports",
            port.target_port.unwrap_or_default()
        ));
    }
    if port.published_port.is_some_and(|p| p != 0) && !valid(port.published_port) {
        return Err(format!(
            "invalid published port {} in the published ports",
            port.published_port.unwrap_or_default()
        ));
    }
    if matches!(port.protocol, None | Some(Proto::EMPTY)) {
        port.protocol = Some(Proto::TCP);
    }
    if matches!(port.publish_mode, None | Some(Mode::EMPTY)) {
        port.publish_mode = Some(Mode::INGRESS);
    }
    Ok(port)
}

/// The engine's name for a container port: "8080/tcp".
pub(crate) fn key(port: &EndpointPortConfig) -> String {
    let protocol = port.protocol.unwrap_or(Proto::TCP);
    format!("{}/{protocol}", port.target_port.unwrap_or_default())
}

/// The host port a port must have: its published port in host mode; None
/// (any port) in ingress mode, where the mesh owns the published port, or
/// when host mode leaves the choice to the engine (published port 0).
pub(crate) fn fixed(port: &EndpointPortConfig) -> Option<i64> {
    (port.publish_mode == Some(Mode::HOST))
        .then_some(port.published_port)
        .flatten()
        .filter(|&p| p > 0)
}

/// ExposedPorts and PortBindings of the create request, for `requested`'s
/// ports: a fixed host port for each host-mode port that has one, and one
/// ephemeral port (HostPort "") per container port for the others, on all
/// the host's addresses (HostIp ""), as `docker run -p` does.
pub(crate) fn bindings(ports: &[EndpointPortConfig]) -> (Vec<String>, PortMap) {
    let mut exposed = Vec::new();
    let mut map = PortMap::new();
    for port in ports {
        let key = key(port);
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        let binding = PortBinding {
            host_ip: Some(String::new()),
            host_port: Some(fixed(port).map(|p| p.to_string()).unwrap_or_default()),
        };
        let list = map.entry(key).or_insert(None).get_or_insert_with(Vec::new);
        if !list.contains(&binding) {
            list.push(binding);
        }
    }
    (exposed, map)
}

/// Where each of `requested`'s ports is reachable on the host, from the
/// container's NetworkSettings.Ports: the same entries with PublishedPort
/// set to the bound host port. An error names the first port the engine did
/// not bind.
pub(crate) fn published(
    ports: &[EndpointPortConfig],
    bound: Option<&PortMap>,
) -> Result<Vec<EndpointPortConfig>, String> {
    // The fixed host ports of each container port: an ephemeral binding is
    // the one bound port that is not among them.
    let mut fixed_ports: HashMap<String, HashSet<i64>> = HashMap::new();
    for port in ports {
        if let Some(host_port) = fixed(port) {
            fixed_ports.entry(key(port)).or_default().insert(host_port);
        }
    }
    let mut out = Vec::new();
    for port in ports {
        let key = key(port);
        let host_ports = host_ports(bound.and_then(|map| map.get(&key)?.as_deref()));
        let found = match fixed(port) {
            Some(wanted) => host_ports.into_iter().find(|&p| p == wanted),
            None => {
                let taken = fixed_ports.get(&key);
                host_ports
                    .into_iter()
                    .find(|p| taken.is_none_or(|t| !t.contains(p)))
            }
        };
        let Some(host_port) = found else {
            return Err(format!("port {key} was not published"));
        };
        out.push(EndpointPortConfig {
            published_port: Some(host_port),
            ..port.clone()
        });
    }
    Ok(out)
}

/// The distinct host ports of a container port's bindings, in order: those
/// on IPv4's any-address (the engine adds an IPv6 twin for each), or all of
/// them when there is none.
fn host_ports(bindings: Option<&[PortBinding]>) -> Vec<i64> {
    let bindings = bindings.unwrap_or_default();
    let any_v4 = |b: &&PortBinding| matches!(b.host_ip.as_deref(), Some("0.0.0.0") | Some(""));
    let chosen: Vec<&PortBinding> = if bindings.iter().any(|b| any_v4(&b)) {
        bindings.iter().filter(any_v4).collect()
    } else {
        bindings.iter().collect()
    };
    let mut ports = Vec::new();
    for binding in chosen {
        let port = binding
            .host_port
            .as_deref()
            .and_then(|p| p.parse::<i64>().ok())
            .filter(|&p| p > 0);
        if let Some(port) = port.filter(|p| !ports.contains(p)) {
            ports.push(port);
        }
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(target: i64, published: i64, mode: Mode, protocol: Proto) -> EndpointPortConfig {
        EndpointPortConfig {
            protocol: Some(protocol),
            target_port: Some(target),
            published_port: Some(published),
            publish_mode: Some(mode),
            ..Default::default()
        }
    }

    fn binding(ip: &str, port: &str) -> PortBinding {
        PortBinding {
            host_ip: Some(ip.into()),
            host_port: Some(port.into()),
        }
    }

    fn task_with(ports: &str) -> Task {
        let mut task = Task::default();
        task.runtime.ports = serde_json::from_str(ports).expect("ports as JSON");
        task
    }

    #[test]
    fn requested_ports_get_docker_defaults_and_bad_ones_are_refused() {
        let ports =
            requested(&task_with(r#"[{"TargetPort":80,"PublishedPort":30080}]"#)).expect("valid");
        assert_eq!(ports, vec![port(80, 30080, Mode::INGRESS, Proto::TCP)]);
        assert!(requested(&Task::default()).expect("no label").is_empty());
        assert!(requested(&task_with(r#"[{"PublishedPort":30080}]"#)).is_err());
        assert!(requested(&task_with(r#"[{"TargetPort":70000}]"#)).is_err());
    }

    #[test]
    fn host_ports_are_fixed_and_ingress_ports_ephemeral() {
        let ports = vec![
            port(8080, 30000, Mode::INGRESS, Proto::TCP),
            port(8080, 8080, Mode::HOST, Proto::TCP),
            port(53, 0, Mode::HOST, Proto::UDP),
            // Another ingress port on the same target shares its binding.
            port(8080, 30001, Mode::INGRESS, Proto::TCP),
        ];
        let (exposed, map) = bindings(&ports);
        assert_eq!(exposed, vec!["8080/tcp", "53/udp"]);
        assert_eq!(
            map["8080/tcp"],
            Some(vec![binding("", ""), binding("", "8080")])
        );
        assert_eq!(map["53/udp"], Some(vec![binding("", "")]));
    }

    #[test]
    fn bound_ports_are_read_back_per_mode() {
        let ports = vec![
            port(8080, 30000, Mode::INGRESS, Proto::TCP),
            port(8080, 8080, Mode::HOST, Proto::TCP),
            port(53, 0, Mode::HOST, Proto::UDP),
        ];
        let bound = PortMap::from([
            (
                "8080/tcp".to_string(),
                Some(vec![
                    binding("0.0.0.0", "8080"),
                    binding("::", "8080"),
                    binding("0.0.0.0", "49153"),
                    binding("::", "49153"),
                ]),
            ),
            (
                "53/udp".to_string(),
                Some(vec![binding("::", "49154"), binding("0.0.0.0", "49155")]),
            ),
        ]);
        let published = published(&ports, Some(&bound)).expect("all bound");
        let host_ports: Vec<_> = published.iter().map(|p| p.published_port).collect();
        assert_eq!(host_ports, vec![Some(49153), Some(8080), Some(49155)]);
        assert_eq!(published[0].publish_mode, Some(Mode::INGRESS));
        assert_eq!(published[1].publish_mode, Some(Mode::HOST));
        assert_eq!(published[2].protocol, Some(Proto::UDP));
    }

    #[test]
    fn a_port_the_engine_did_not_bind_is_an_error() {
        let ports = vec![port(8080, 30000, Mode::INGRESS, Proto::TCP)];
        assert_eq!(
            published(&ports, None),
            Err("port 8080/tcp was not published".to_string())
        );
        let only_fixed = PortMap::from([(
            "8080/tcp".to_string(),
            Some(vec![binding("0.0.0.0", "8080")]),
        )]);
        let both = vec![
            port(8080, 8080, Mode::HOST, Proto::TCP),
            port(8080, 30000, Mode::INGRESS, Proto::TCP),
        ];
        assert!(published(&both, Some(&only_fixed)).is_err());
        assert!(published(&both[..1], Some(&only_fixed)).is_ok());
    }
}
