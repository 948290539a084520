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
    match docker.create_network(request.clone()).await {
        Ok(_) => Ok(()),
        // The subnet is still held by the engine network of a swarm
        // network removed since (`stack rm` then `stack deploy` at once:
        // the old tasks' containers are still stopping on it). The store
        // never gives two live networks overlapping subnets, so that one
        // goes, its last containers cut off it, and the new one is made.
        Err(e) if e.to_string().contains("overlaps") => {
            remove_overlapping(docker, net).await?;
            docker
                .create_network(request)
                .await
                .map(|_| ())
                .map_err(|e| format!("creating the engine network {name} for {}: {e}", net.name))
        }
        Err(e) => Err(format!(
            "creating the engine network {name} for {}: {e}",
            net.name
        )),
    }
}

/// Removes Flotilla's engine networks, other than `net`'s, whose subnet
/// overlaps `net`'s, disconnecting whatever containers are still on them.
async fn remove_overlapping(docker: &Docker, net: &LocalNetwork) -> Result<(), String> {
    use bollard::models::NetworkDisconnectRequest;
    use bollard::query_parameters::ListNetworksOptions;
    let filters = HashMap::from([("label".to_string(), vec![LOCAL_LABEL.to_string()])]);
    let ours = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(|e| format!("listing the engine's networks: {e}"))?;
    for other in ours {
        let id = other.labels.as_ref().and_then(|l| l.get(LOCAL_LABEL));
        let subnets = other
            .ipam
            .as_ref()
            .and_then(|i| i.config.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|c| c.subnet.as_deref())
            .filter_map(|s| flotilla_store::networks::Subnet::parse(s).ok());
        let overlapping = subnets.into_iter().any(|s| s.overlaps(&net.subnet));
        let (Some(name), Some(id)) = (other.name.as_deref(), id) else {
            continue;
        };
        if id == &net.id || !overlapping {
            continue;
        }
        let attached = docker
            .inspect_network(name, None)
            .await
            .ok()
            .and_then(|n| n.containers)
            .unwrap_or_default();
        for container in attached.keys() {
            let request = NetworkDisconnectRequest {
                container: container.clone(),
                force: Some(true),
            };
            let _ = docker.disconnect_network(name, request).await;
        }
        tracing::info!(network = %name, "removing the engine network of a removed swarm network: its subnet is wanted again");
        remove_network(docker, id).await?;
        super::host::tear_down(id).await?;
    }
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
