//! `--metrics-addr`: a real Prometheus (Debian's package, installed by
//! `.ci/run`) scrapes every node of a namespace cluster, and PromQL through
//! its HTTP API sees what the cluster does: replicas, nodes, the leader,
//! task states, a scale, a worker lost and a leader lost.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::cluster::{wait_timed as wait_until, Cluster};
use common::FLOTILLA;
use serde_json::Value;

const PREFIX: &str = "ftmet";
const SUBNET: &str = "10.213.83";
const PORT: u16 = 9323;
/// Hosts as `cluster.sh` numbers them: managers first, at .11 onwards.
const HOSTS: [&str; 4] = ["manager1", "manager2", "manager3", "worker01"];

/// A Prometheus server of the test's own, stopped on drop.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes each host every second, its `host` label naming it.
    fn start() -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: flotilla\n    static_configs:\n",
        );
        for (i, host) in HOSTS.iter().enumerate() {
            config.push_str(&format!(
                "      - targets: ['{SUBNET}.{}:{PORT}']\n        labels: {{host: {host}}}\n",
                11 + i
            ));
        }
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).expect("write prometheus.yml");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run prometheus (Debian's package `prometheus`; .ci/run installs it)");
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        wait_until(Duration::from_secs(30), "Prometheus ready", || {
            curl(&[&format!("{}/-/ready", p.url)]).is_some()
        });
        p
    }

    /// The API's answer to an instant query (an error included).
    fn answer(&self, q: &str) -> Value {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5", "--data-urlencode"])
            .arg(format!("query={q}"))
            .arg(format!("{}/api/v1/query", self.url))
            .output()
            .expect("run curl");
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// An instant query: each series' labels and value.
    fn query(&self, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let v = self.answer(q);
        v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let value = r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(f64::NAN);
                (labels, value)
            })
            .collect()
    }

    /// The query's single value, if it has exactly one series.
    fn value(&self, q: &str) -> Option<f64> {
        match self.query(q).as_slice() {
            [(_, v)] => Some(*v),
            _ => None,
        }
    }

    fn wait_value(&self, q: &str, want: f64) {
        let mut last = None;
        wait_until(Duration::from_secs(30), &format!("{q} == {want}"), || {
            last = self.value(q);
            last == Some(want)
        });
    }
}

fn curl(args: &[&str]) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "5"])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn scrape(host_index: usize, accept: Option<&str>) -> (String, String) {
    let url = format!("http://{SUBNET}.{}:{PORT}/metrics", 11 + host_index);
    let mut args = vec!["-D", "-"];
    let header;
    if let Some(a) = accept {
        header = format!("Accept: {a}");
        args.extend(["-H", &header]);
    }
    args.push(&url);
    let text = curl(&args).unwrap_or_default();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
    (head.to_lowercase(), body.to_string())
}

#[test]
fn slow_metrics_prometheus_follows_a_scale_a_lost_worker_and_a_lost_leader() {
    let c = Cluster::up_with(
        PREFIX,
        SUBNET,
        3,
        1,
        "process",
        &["--metrics-port", &PORT.to_string()],
    );

    // The two formats: Prometheus's text by default, OpenMetrics on request.
    let (head, body) = scrape(0, None);
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        body.contains("# TYPE swarm_manager_leader gauge\nswarm_manager_leader 1\n"),
        "{body}"
    );
    let (head, body) = scrape(0, Some("application/openmetrics-text;version=1.0.0"));
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");

    let prom = Prometheus::start();
    prom.wait_value(r#"count(up{job="flotilla"} == 1)"#, 4.0);
    prom.wait_value("sum(swarm_node_manager)", 3.0);
    prom.wait_value("count(swarm_node_info)", 4.0);
    prom.wait_value("sum(swarm_manager_leader)", 1.0);
    prom.wait_value(r#"min(swarm_manager_nodes{state="ready"})"#, 4.0);
    let leader = prom.query("swarm_manager_leader == 1");
    assert_eq!(leader.len(), 1, "{leader:?}");
    assert_eq!(leader[0].0["host"], "manager1");
    // Leader-only figures come from the leader alone.
    prom.wait_value(r#"count(flotilla_node_info)"#, 4.0);
    let hosts: Vec<String> = prom
        .query("flotilla_node_info")
        .into_iter()
        .map(|(l, _)| l["host"].clone())
        .collect();
    assert!(hosts.iter().all(|h| h == "manager1"), "{hosts:?}");
    assert_eq!(
        prom.value(
            r#"count(flotilla_node_info{role="manager",state="ready",availability="active"})"#
        ),
        Some(3.0)
    );

    c.ok(
        "manager1",
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "3",
            "flotilla-busybox",
            "sleep",
            "1000",
        ],
    );
    prom.wait_value(
        r#"sum(flotilla_service_replicas_running{service="web"})"#,
        3.0,
    );
    prom.wait_value(
        r#"sum(flotilla_service_replicas_desired{service="web",mode="replicated"})"#,
        3.0,
    );
    prom.wait_value(r#"max(swarm_manager_services_total)"#, 1.0);

    c.ok("manager1", &["service", "scale", "-d", "web=6"]);
    prom.wait_value(
        r#"sum(flotilla_service_replicas_desired{service="web"})"#,
        6.0,
    );
    prom.wait_value(
        r#"sum(flotilla_service_replicas_running{service="web"})"#,
        6.0,
    );
    // Every manager's store holds the same tasks: Docker's family is on each.
    prom.wait_value(
        r#"count(swarm_manager_tasks_total{state="running"} == 6)"#,
        3.0,
    );
    assert!(
        prom.value(r#"sum(flotilla_service_converge_seconds_count{kind="create"})"#)
            .is_some_and(|n| n >= 1.0),
        "a create converged"
    );
    assert!(
        prom.value("sum(swarm_dispatcher_scheduling_delay_seconds_count)")
            .is_some_and(|n| n >= 6.0),
        "six tasks reached RUNNING"
    );

    c.ok(
        "manager1",
        &["service", "update", "-d", "--env-add", "A=1", "web"],
    );
    prom.wait_value(
        r#"count(flotilla_service_update_state{service="web",state="completed"})"#,
        1.0,
    );
    // The scale and the update each converged.
    prom.wait_value(
        r#"sum(flotilla_service_converge_seconds_count{kind="update"}) >= bool 2"#,
        1.0,
    );
    every_grafana_query_answers(&prom);

    // A worker lost: Down on every manager's count, its tasks elsewhere.
    let on_worker = c
        .running("manager1", "web")
        .iter()
        .filter(|(_, node)| node == "worker01")
        .count();
    c.host_op("kill", "worker01");
    prom.wait_value(r#"up{host="worker01"}"#, 0.0);
    prom.wait_value(r#"min(swarm_manager_nodes{state="down"})"#, 1.0);
    prom.wait_value(
        r#"count(flotilla_node_info{hostname="worker01",state="down"})"#,
        1.0,
    );
    prom.wait_value(
        r#"sum(flotilla_service_replicas_running{service="web"})"#,
        6.0,
    );
    if on_worker > 0 {
        prom.wait_value(r#"sum(flotilla_dispatcher_heartbeat_failures_total)"#, 1.0);
    }

    // The leader lost: another manager leads and tells the cluster figures.
    c.host_op("kill", "manager1");
    prom.wait_value(r#"up{host="manager1"}"#, 0.0);
    prom.wait_value("sum(swarm_manager_leader)", 1.0);
    let leader = prom.query("swarm_manager_leader == 1");
    let new = leader[0].0["host"].clone();
    assert_ne!(new, "manager1");
    prom.wait_value(
        &format!(r#"count(flotilla_service_replicas_desired{{host="{new}",service="web"}})"#),
        1.0,
    );
    prom.wait_value(
        r#"count(flotilla_service_replicas_desired{service="web"})"#,
        1.0,
    );
    prom.wait_value(r#"count(flotilla_raft_leader_changes_total >= 1)"#, 2.0);
    let terms = prom.query("flotilla_raft_term");
    assert!(terms.iter().all(|(_, t)| *t >= 2.0), "{terms:?}");
}

/// Every query of the Grafana dashboard in the repository is valid PromQL
/// over these figures, and those over what this cluster has (all but the
/// mesh's and DNS's, which need traffic) return series.
fn every_grafana_query_answers(prom: &Prometheus) {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../grafana/flotilla.json");
    let text = std::fs::read_to_string(file).expect("read grafana/flotilla.json");
    let dash: Value = serde_json::from_str(&text).expect("grafana/flotilla.json is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 20, "{} panels", panels.len());
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("an expr");
            let q = expr
                .replace("$__rate_interval", "1m")
                .replace("$stack", ".*");
            let title = &panel["title"];
            let answer = prom.answer(&q);
            assert_eq!(answer["status"], "success", "{title}: {q}: {answer}");
            if q.contains("flotilla_mesh_") || q.contains("flotilla_dns_") {
                continue;
            }
            wait_until(Duration::from_secs(20), &format!("{title}: {q}"), || {
                !prom.query(&q).is_empty()
            });
        }
    }
}

/// Each family's type, help and label names, from a text-format scrape.
fn families(text: &str) -> BTreeMap<String, (String, String, Vec<String>)> {
    let mut out: BTreeMap<String, (String, String, Vec<String>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.entry(name.into()).or_default().1 = help.into();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            out.entry(name.into()).or_default().0 = kind.into();
        } else if !line.starts_with('#') {
            let (series, _) = line.split_once(' ').unwrap_or((line, ""));
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| out.contains_key(*f)))
                .unwrap_or(name);
            let Some(f) = out.get_mut(family) else {
                continue;
            };
            for pair in labels
                .trim_end_matches('}')
                .split(',')
                .filter(|p| !p.is_empty())
            {
                let key = pair.split('=').next().unwrap_or_default().to_string();
                if key != "le" && !f.2.contains(&key) {
                    f.2.push(key);
                    f.2.sort();
                }
            }
        }
    }
    out
}

/// Docker's families as a Docker Swarm manager (dockerd 20.10 with
/// `--metrics-addr`, in swarm mode) serves them, and Flotilla's beside it
/// on the same host: the same names, types, help texts and labels.
#[test]
fn slow_metrics_swarm_families_are_a_docker_swarm_manager_s() {
    let c = Cluster::up_with(
        "ftmcmp",
        "10.213.84",
        1,
        0,
        "docker",
        &["--metrics-port", &PORT.to_string()],
    );
    let addr = "10.213.84.11";
    let (ok, text) = c.docker_on(
        "manager",
        &[
            "swarm",
            "init",
            "--listen-addr",
            &format!("{addr}:2378"),
            "--advertise-addr",
            &format!("{addr}:2378"),
        ],
    );
    assert!(ok, "docker swarm init: {text}");
    let docker = wait_until_some(|| {
        let text = curl(&[&format!("http://{addr}:{}/metrics", PORT + 1)])?;
        text.contains("swarm_manager_leader 1").then_some(text)
    });
    let flotilla = curl(&[&format!("http://{addr}:{PORT}/metrics")]).expect("scrape Flotilla");
    let swarm = |text: &str| {
        families(text)
            .into_iter()
            .filter(|(name, _)| name.starts_with("swarm_"))
            .collect::<BTreeMap<_, _>>()
    };
    let (docker, flotilla) = (swarm(&docker), swarm(&flotilla));
    assert_eq!(docker.len(), 17, "{docker:#?}");
    assert_eq!(flotilla, docker);
}

fn wait_until_some<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let mut found = None;
    wait_until(Duration::from_secs(30), "Docker's metrics", || {
        found = f();
        found.is_some()
    });
    found.expect("found")
}

/// An address that cannot be had is a start-up error that says which.
#[test]
fn a_metrics_address_that_cannot_be_bound_stops_the_daemon_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    for (bad, says) in [
        (addr.as_str(), "Address already in use"),
        (
            "not-an-address",
            "cannot listen on --metrics-addr not-an-address",
        ),
    ] {
        let out = Command::new(FLOTILLA)
            .args(["daemon", "--executor", "process", "--no-service-addrs"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("-H")
            .arg(format!("unix://{}", dir.path().join("api.sock").display()))
            .args(["--metrics-addr", bad])
            .output()
            .expect("run the daemon");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}: {err}");
        assert!(err.contains(says), "{bad}: {err}");
        assert!(err.contains("--metrics-addr"), "{bad}: {err}");
    }
}
