//! `/_ping`, `/version` and `/info`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use axum::Json;
use flotilla_store::models::{self as m, NodeSpecRoleEnum};
use flotilla_store::network::host_of;

use crate::node::{Daemon, Place};
use crate::{API_VERSION, MIN_API_VERSION};

pub async fn ping(State(d): State<Arc<Daemon>>) -> impl IntoResponse {
    let mut h = HeaderMap::new();
    h.insert("API-Version", HeaderValue::from_static(API_VERSION));
    h.insert("OSType", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert(
        "Cache-Control",
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert("Pragma", HeaderValue::from_static("no-cache"));
    let swarm = match d.place().await {
        Some(p) if p.store.is_some() => "active/manager",
        Some(_) => "active/worker",
        None => "inactive",
    };
    h.insert("Swarm", HeaderValue::from_static(swarm));
    (h, "OK")
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub async fn version() -> Json<m::SystemVersion> {
    let v = env!("CARGO_PKG_VERSION").to_string();
    Json(m::SystemVersion {
        platform: Some(m::SystemVersionPlatform {
            name: "Flotilla".into(),
        }),
        components: Some(vec![m::SystemVersionComponents {
            name: "Flotilla".into(),
            version: v.clone(),
            details: None,
        }]),
        version: Some(v),
        api_version: Some(API_VERSION.into()),
        min_api_version: Some(MIN_API_VERSION.into()),
        git_commit: Some(option_env!("FLOTILLA_COMMIT").unwrap_or("unknown").into()),
        go_version: Some(format!("rust (flotilla {})", env!("CARGO_PKG_VERSION"))),
        os: Some(std::env::consts::OS.into()),
        arch: Some(std::env::consts::ARCH.into()),
        kernel_version: Some(kernel_version()),
        experimental: Some(false),
        build_time: None,
    })
}

fn manager_info(mem: &Place, store: &flotilla_store::Store) -> m::SwarmInfo {
    store.read(|s| {
        let managers: Vec<&m::Node> = s
            .nodes
            .values()
            .filter(|n| n.spec.as_ref().and_then(|s| s.role) == Some(NodeSpecRoleEnum::MANAGER))
            .collect();
        m::SwarmInfo {
            node_id: Some(mem.node_id.clone()),
            node_addr: Some(host_of(&mem.addr).to_string()),
            local_node_state: Some(m::LocalNodeState::ACTIVE),
            control_available: Some(true),
            error: Some(String::new()),
            remote_managers: Some(
                managers
                    .iter()
                    .map(|n| m::PeerNode {
                        node_id: n.id.clone(),
                        addr: n.manager_status.as_ref().and_then(|ms| ms.addr.clone()),
                    })
                    .collect(),
            ),
            nodes: Some(s.nodes.len() as i64),
            managers: Some(managers.len() as i64),
            cluster: s.cluster.as_ref().map(|c| m::ClusterInfo {
                id: c.id.clone(),
                version: c.version.clone(),
                created_at: c.created_at.clone(),
                updated_at: c.updated_at.clone(),
                spec: c
                    .spec
                    .clone()
                    .map(flotilla_manager::controlapi::swarm::with_defaults),
                tls_info: c.tls_info.clone().map(flotilla_manager::ca::with_issuer),
                root_rotation_in_progress: Some(c.root_rotation_in_progress.unwrap_or(false)),
                data_path_port: c.data_path_port,
                default_addr_pool: c.default_addr_pool.clone(),
                subnet_size: c.subnet_size,
            }),
        }
    })
}

/// `docker info`: the Docker Engine's own (its containers, images,
/// runtimes, plugins) with this node's swarm section, as on a Swarm node;
/// Flotilla's description of the node where no engine runs beside it.
pub async fn info(State(d): State<Arc<Daemon>>) -> Json<serde_json::Value> {
    let ours = flotilla_info(&*d).await;
    let engine = crate::passthrough::ask(
        &*d,
        axum::http::Method::GET,
        "/info",
        axum::body::Bytes::new(),
    )
    .await;
    let merged = match engine {
        Ok((status, body)) if status.is_success() => {
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .filter(serde_json::Value::is_object)
                .map(|mut v| {
                    v["Swarm"] = serde_json::to_value(&ours.swarm).unwrap_or_default();
                    v
                })
        }
        _ => None,
    };
    Json(merged.unwrap_or_else(|| serde_json::to_value(&ours).unwrap_or_default()))
}

async fn flotilla_info(d: &Daemon) -> m::SystemInfo {
    let desc = &d.local().description;
    let locked = d.locked().await;
    let swarm = match d.place().await {
        None if locked.is_some() => m::SwarmInfo {
            local_node_state: Some(m::LocalNodeState::LOCKED),
            control_available: Some(false),
            node_id: locked,
            node_addr: Some(String::new()),
            ..Default::default()
        },
        None => m::SwarmInfo {
            local_node_state: Some(m::LocalNodeState::INACTIVE),
            control_available: Some(false),
            node_id: Some(String::new()),
            node_addr: Some(String::new()),
            ..Default::default()
        },
        Some(mem) => match &mem.store {
            Some(store) => manager_info(&mem, store),
            None => m::SwarmInfo {
                node_id: Some(mem.node_id.clone()),
                node_addr: Some(host_of(&mem.addr).to_string()),
                local_node_state: Some(m::LocalNodeState::ACTIVE),
                control_available: Some(false),
                error: Some(String::new()),
                remote_managers: Some(
                    mem.managers
                        .iter()
                        .map(|a| m::PeerNode {
                            node_id: None,
                            addr: Some(a.clone()),
                        })
                        .collect(),
                ),
                ..Default::default()
            },
        },
    };
    m::SystemInfo {
        id: Some(swarm.node_id.clone().unwrap_or_default()),
        name: Some(desc.hostname.clone()),
        server_version: Some(env!("CARGO_PKG_VERSION").into()),
        operating_system: Some(format!("Flotilla ({} executor)", d.local().exec.kind())),
        os_type: Some(std::env::consts::OS.into()),
        os_version: Some(String::new()),
        architecture: Some(desc.architecture.clone()),
        ncpu: Some(desc.nano_cpus / 1_000_000_000),
        mem_total: Some(desc.memory_bytes),
        kernel_version: Some(kernel_version()),
        docker_root_dir: Some(d.local().data_dir.display().to_string()),
        driver: Some(d.local().exec.kind().into()),
        logging_driver: Some("json-file".into()),
        index_server_address: Some("https://index.docker.io/v1/".into()),
        swarm: Some(swarm),
        labels: Some(Vec::new()),
        experimental_build: Some(false),
        debug: Some(false),
        ..Default::default()
    }
}
