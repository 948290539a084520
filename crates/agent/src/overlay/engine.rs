//! The Docker Engine's side of an overlay network on this node: a local
//! bridge network with the swarm network's subnet, whose bridge Flotilla
//! names (so it can add the VXLAN device and addresses to it), that gives
//! its containers no way out (`internal`: the default bridge, connected
//! beside it, does that for networks that are not internal), and no
//! address of its own on the bridge (the node's address goes there).
//! Containers join it through the engine, so they have their interface
//! before their process starts.

use std::collections::HashMap;

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::Docker;
use flotilla_store::networks::LOCAL_LABEL;

use super::plan::LocalNetwork;

pub async fn ensure_network(docker: &Docker, net: &LocalNetwork) -> Result<(), String> {
    let name = net.engine_network();
    if let Ok(found) = docker.inspect_network(&name, None).await {
        let same = found
            .labels
            .as_ref()
            .and_then(|l| l.get(LOCAL_LABEL))
            .is_some_and(|id| id == &net.id);
        if same {
            return Ok(());
        }
        // Left by a network of the same ID prefix that is gone.
        let _ = docker.remove_network(&name).await;
    }
    let options = HashMap::from([
        ("com.docker.network.bridge.name".to_string(), net.bridge()),
        (
            "com.docker.network.bridge.inhibit_ipv4".to_string(),
            "true".to_string(),
        ),
        (
            "com.docker.network.driver.mtu".to_string(),
            net.mtu.to_string(),
        ),
    ]);
    let request = NetworkCreateRequest {
        name: name.clone(),
        driver: Some("bridge".into()),
        internal: Some(true),
        ipam: Some(Ipam {
            driver: Some("default".into()),
            config: Some(vec![IpamConfig {
                subnet: Some(net.subnet.to_string()),
                gateway: Some(net.gateway.to_string()),
                ..Default::default()
            }]),
            options: None,
        }),
        options: Some(options),
        labels: Some(HashMap::from([
            (LOCAL_LABEL.to_string(), net.id.clone()),
            ("com.flotilla.network.name".to_string(), net.name.clone()),
        ])),
        ..Default::default()
    };
    docker
        .create_network(request)
        .await
        .map_err(|e| format!("creating the engine network {name} for {}: {e}", net.name))?;
    Ok(())
}

/// Removes the engine's network of swarm network `id`; fails while a
/// container is still on it.
pub async fn remove_network(docker: &Docker, id: &str) -> Result<(), String> {
    let name = super::plan::engine_network_name(id);
    match docker.remove_network(&name).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(format!("removing the engine network {name}: {e}")),
    }
}
