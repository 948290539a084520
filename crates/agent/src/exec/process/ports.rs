//! The host ports of a process task. A process has no network of its own:
//! each target port becomes a host port it listens on (0.0.0.0:$PORT), told
//! in its environment.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;

use bollard::models::{EndpointPortConfig, EndpointPortConfigProtocolEnum as Proto};
use flotilla_store::models::Task;

use super::ExecError;
use crate::exec::docker::ports::{fixed, key, requested};

/// Tries at finding one free port for every protocol of a target port.
const PICK_ATTEMPTS: usize = 20;

/// The task's ports (its label's entries, in order) with PublishedPort set to
/// the host port chosen for their target port. There is one per target
/// port, since `PORT_<target>` names no protocol: the first host-mode entry's
/// published port when it has one (refused when something holds it), else
/// a free port (checked for each of the target's protocols, then released
/// for the process to take). Ingress entries never get their published port:
/// the routing mesh listens there.
pub(super) fn choose(task: &Task) -> Result<Vec<EndpointPortConfig>, ExecError> {
    let wanted = requested(task).map_err(ExecError::Rejected)?;
    let mut chosen: HashMap<i64, i64> = HashMap::new();
    for port in &wanted {
        let target = port.target_port.unwrap_or_default();
        if chosen.contains_key(&target) {
            continue;
        }
        let same_target: Vec<&EndpointPortConfig> = wanted
            .iter()
            .filter(|p| p.target_port == port.target_port)
            .collect();
        let mut protocols: Vec<Proto> = same_target
            .iter()
            .map(|p| p.protocol.unwrap_or(Proto::TCP))
            .collect();
        protocols.sort();
        protocols.dedup();
        let host_port = match same_target.iter().find_map(|p| fixed(p)) {
            Some(host_port) => {
                let host_port = u16::try_from(host_port).unwrap_or_default();
                for protocol in &protocols {
                    if let Err(e) = bind(*protocol, host_port) {
                        return Err(ExecError::Rejected(format!(
                            "host port {host_port}/{protocol} for port {} is not available: {e}",
                            key(port)
                        )));
                    }
                }
                host_port
            }
            None => pick(&protocols).map_err(|e| {
                ExecError::Failed(format!("no free host port for port {}: {e}", key(port)))
            })?,
        };
        chosen.insert(target, i64::from(host_port));
    }
    Ok(wanted
        .into_iter()
        .map(|port| EndpointPortConfig {
            published_port: port.target_port.and_then(|t| chosen.get(&t).copied()),
            ..port
        })
        .collect())
}

/// `PORT_<target>` for every target port and `PORT` for the first one.
pub(super) fn env(ports: &[EndpointPortConfig]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Some(host_port) = ports.first().and_then(|p| p.published_port) {
        env.push(("PORT".to_string(), host_port.to_string()));
    }
    for port in ports {
        let (Some(target), Some(host_port)) = (port.target_port, port.published_port) else {
            continue;
        };
        let name = format!("PORT_{target}");
        if !env.iter().any(|(n, _)| *n == name) {
            env.push((name, host_port.to_string()));
        }
    }
    env
}

/// A port free for every protocol in `protocols`: the kernel picks one for
/// the first, the others are tried on the same number.
fn pick(protocols: &[Proto]) -> std::io::Result<u16> {
    let mut last = None;
    for _ in 0..PICK_ATTEMPTS {
        let (first, rest) = protocols.split_first().unwrap_or((&Proto::TCP, &[]));
        let (host_port, _held) = bind(*first, 0)?;
        match rest.iter().try_for_each(|p| bind(*p, host_port).map(drop)) {
            Ok(()) => return Ok(host_port),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port found")))
}

/// A socket on 0.0.0.0:`port`, where the process will listen, and its port;
/// the port is free again once the socket is dropped. SCTP is checked as
/// TCP.
fn bind(protocol: Proto, port: u16) -> std::io::Result<(u16, OwnedFd)> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    Ok(match protocol {
        Proto::UDP => {
            let socket = UdpSocket::bind(addr)?;
            (socket.local_addr()?.port(), socket.into())
        }
        _ => {
            let socket = TcpListener::bind(addr)?;
            (socket.local_addr()?.port(), socket.into())
        }
    })
}
