//! Keeps the scale benchmark from rotting: a real manager (the daemon's
//! own code, in this process, serving the Engine API on a unix socket),
//! 20 simulated nodes joined through the real join protocol, and the
//! benchmark's driver creating a service of 100 replicas through the API;
//! all 100 must run, spread over the simulated nodes only.

use std::collections::HashMap;
use std::time::Duration;

use flotilla_node::node::Handle;
use flotilla_node::{ExecutorKind, Node, NodeConfig};
use flotilla_sim::load::http::Client;
use flotilla_sim::load::scale::{self, ScaleSpec};
use flotilla_sim::{Fleet, FleetSpec};
use flotilla_store::models::SwarmInitRequest;
use serde_json::{json, Value};

const NODES: usize = 20;
const REPLICAS: u64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_sim_nodes_run_tasks() {
    let dir = tempfile::Builder::new()
        .prefix("flsim-test-")
        .tempdir()
        .expect("tempdir");
    let socket = dir.path().join("api.sock");
    let host = format!("unix://{}", socket.display());

    let daemon = Node::start(NodeConfig {
        data_dir: dir.path().join("data"),
        executor: ExecutorKind::Process,
        // No Docker Engine behind this manager, whatever the machine has.
        docker_host: Some(format!("unix://{}/no-docker.sock", dir.path().display())),
        hostname: Some("flsim-test-manager".into()),
        generic_resources: Vec::new(),
        service_addrs: false,
        mesh: Default::default(),
        mesh_client_addr: false,
        metrics_addr: None,
    })
    .await
    .expect("daemon starts");
    let (stop_serving, stop) = tokio::sync::watch::channel(false);
    let api: std::sync::Arc<flotilla_api::node::Daemon> =
        std::sync::Arc::new(Handle(daemon.clone()));
    let serving = tokio::spawn(flotilla_api::serve(
        api,
        flotilla_api::listen::Listen {
            hosts: vec![host.clone()],
            ..Default::default()
        },
        stop,
    ));
    let manager_id = daemon
        .init(SwarmInitRequest {
            listen_addr: Some("127.0.0.1:0".into()),
            advertise_addr: Some("127.0.0.1".into()),
            ..Default::default()
        })
        .await
        .expect("swarm init");
    let cluster_addr = daemon
        .membership()
        .await
        .expect("a membership after init")
        .id
        .addr
        .clone();

    let mut api = Client::new(&host);
    wait_for_socket(&mut api).await;
    let swarm = api.json("GET", "/swarm", None).await.expect("GET /swarm");
    let token = swarm
        .pointer("/JoinTokens/Worker")
        .and_then(Value::as_str)
        .expect("a worker token")
        .to_string();
    drain(&mut api, &manager_id).await;

    let fleet = Fleet::join(FleetSpec::new(&cluster_addr, &token, NODES), |_| {}).await;
    assert!(
        fleet.failures.is_empty(),
        "sim nodes failed to join: {:?}",
        fleet.failures
    );
    assert_eq!(fleet.nodes.len(), NODES);

    let spec = ScaleSpec {
        hosts: vec![host.clone()],
        nodes: NODES,
        node_prefix: "sim".into(),
        services: 1,
        replicas: REPLICAS,
        concurrency: 1,
        service_prefix: "slowsim".into(),
        manager_pids: vec![std::process::id()],
        sim_pid: None,
        nodes_timeout: Duration::from_secs(60),
        run_timeout: Duration::from_secs(90),
        poll_every: Duration::from_millis(100),
        probe_every: Duration::from_millis(50),
    };
    let report = scale::run(&spec, &|line| eprintln!("{line}"))
        .await
        .expect("the benchmark driver runs");
    assert_eq!(report.nodes_ready, NODES);
    assert_eq!(
        report.create_latencies.len(),
        1,
        "{:?}",
        report.create_errors
    );
    assert!(
        report.converged.is_some(),
        "only {} of {REPLICAS} tasks RUNNING",
        report.running
    );
    assert_eq!(report.managers.len(), 1, "the manager was sampled");
    let text = flotilla_sim::load::render(&spec, 1, &report);
    assert!(text.contains("| 20 | 1 | 100 |"), "{text}");
    let line = flotilla_sim::load::figures_line(&spec, 1, &report);
    assert!(
        line.starts_with(
            "SCALE nodes=20 managers=1 services=1 replicas=100 tasks=100 converged=1 "
        ),
        "{line}"
    );

    // Where the tasks run: on simulated nodes only, spread evenly.
    let per_node = running_per_host(&mut api).await;
    assert_eq!(per_node.values().sum::<usize>(), REPLICAS as usize);
    assert!(
        per_node.keys().all(|h| h.starts_with("sim-")),
        "a task ran off the simulated nodes: {per_node:?}"
    );
    assert_eq!(per_node.len(), NODES, "{per_node:?}");
    assert!(per_node.values().all(|&n| n == 5), "{per_node:?}");
    let workloads: usize = fleet.nodes.iter().map(|n| n.exec.workloads()).sum();
    assert_eq!(workloads, REPLICAS as usize);

    // Scaling to 0 stops every simulated workload.
    let svc = api
        .json("GET", "/services/slowsim-0001", None)
        .await
        .expect("inspect");
    let version = svc.pointer("/Version/Index").and_then(Value::as_u64);
    let id = svc.get("ID").and_then(Value::as_str).unwrap_or_default();
    api.json(
        "POST",
        &format!("/services/{id}/update?version={}", version.unwrap_or(0)),
        Some(&scale::service_spec("slowsim-0001", 0, 1)),
    )
    .await
    .expect("scale to 0");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left: usize = fleet.nodes.iter().map(|n| n.exec.workloads()).sum();
        let running = running_per_host(&mut api).await.values().sum::<usize>();
        if running == 0 && left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after scaling to 0: {running} tasks running, {left} sim workloads left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    fleet.stop().await;
    if let Some(m) = daemon.membership().await {
        m.stop().await;
    }
    stop_serving.send_replace(true);
    let _ = serving.await;
}

async fn wait_for_socket(api: &mut Client) {
    for _ in 0..100 {
        if api.raw("GET", "/_ping", None).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the API never answered on {}", api.socket().display());
}

/// Drains the manager, so every task goes to a simulated node. Retried:
/// the manager's own agent registering bumps the node's version meanwhile.
async fn drain(api: &mut Client, node: &str) {
    let mut last = String::new();
    for _ in 0..20 {
        let n = api
            .json("GET", &format!("/nodes/{node}"), None)
            .await
            .expect("inspect manager");
        let version = n
            .pointer("/Version/Index")
            .and_then(Value::as_u64)
            .expect("node version");
        let mut spec = n.get("Spec").cloned().unwrap_or_else(|| json!({}));
        spec["Availability"] = json!("drain");
        let path = format!("/nodes/{node}/update?version={version}");
        match api.json("POST", &path, Some(&spec)).await {
            Ok(_) => return,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot drain the manager: {last}");
}

/// RUNNING tasks (desired running) per node hostname.
async fn running_per_host(api: &mut Client) -> HashMap<String, usize> {
    let nodes = api.json("GET", "/nodes", None).await.expect("GET /nodes");
    let hostname: HashMap<&str, &str> = nodes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| {
            Some((
                n.get("ID")?.as_str()?,
                n.pointer("/Description/Hostname")?.as_str()?,
            ))
        })
        .collect();
    let tasks = api.json("GET", "/tasks", None).await.expect("GET /tasks");
    let mut per_node = HashMap::new();
    for t in tasks.as_array().into_iter().flatten() {
        let running = t.pointer("/Status/State").and_then(Value::as_str) == Some("running")
            && t.get("DesiredState").and_then(Value::as_str) == Some("running");
        if !running {
            continue;
        }
        let node = t.get("NodeID").and_then(Value::as_str).unwrap_or_default();
        let host = hostname.get(node).copied().unwrap_or(node);
        *per_node.entry(host.to_string()).or_insert(0) += 1;
    }
    per_node
}
