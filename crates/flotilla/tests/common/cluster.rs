//! Clusters of hosts in network namespaces through `scripts/cluster.sh`
//! (the project's `vagrant up`), for the multi-host system tests. `down`
//! runs on drop, pass or fail.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::FLOTILLA;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster.sh")
}

/// A cluster for one test; `down` runs on drop, pass or fail.
pub struct Cluster {
    prefix: String,
}

pub fn sh(args: &[&str], prefix: &str) -> Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .env("FLOTILLA_BIN", FLOTILLA)
        .env("FLOTILLA_CLUSTER_INIT_ARGS", "--dispatcher-heartbeat 2s")
        .env("FLOTILLA_CLUSTER_PREFIX", prefix)
        .output()
        .expect("run cluster.sh")
}

fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Cluster {
    pub fn up(prefix: &str, subnet: &str, managers: u32, workers: u32, executor: &str) -> Cluster {
        Cluster::up_with(prefix, subnet, managers, workers, executor, &[])
    }

    /// `up` with more of `cluster.sh up`'s options (`--metrics-port 9323`).
    #[allow(dead_code)]
    pub fn up_with(
        prefix: &str,
        subnet: &str,
        managers: u32,
        workers: u32,
        executor: &str,
        more: &[&str],
    ) -> Cluster {
        let c = Cluster {
            prefix: prefix.to_string(),
        };
        let _ = sh(&["down", "--prefix", prefix], prefix);
        let (m, w) = (managers.to_string(), workers.to_string());
        let mut args = vec![
            "up",
            "--prefix",
            prefix,
            "--subnet",
            subnet,
            "--managers",
            &m,
            "--workers",
            &w,
            "--executor",
            executor,
        ];
        args.extend_from_slice(more);
        let out = sh(&args, prefix);
        assert!(
            out.status.success(),
            "cluster up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        sh(args, &self.prefix)
    }

    /// `flotilla ARGS` against `host`; returns (success, stdout+stderr).
    pub fn flotilla(&self, host: &str, args: &[&str]) -> (bool, String) {
        let mut all = vec!["flotilla", "--prefix", &self.prefix, host];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    #[track_caller]
    pub fn ok(&self, host: &str, args: &[&str]) -> String {
        let (ok, text) = self.flotilla(host, args);
        assert!(ok, "flotilla {args:?} on {host} failed: {text}");
        text
    }

    /// The docker CLI against the manager's Flotilla socket:
    /// (success, stdout+stderr).
    pub fn docker(&self, args: &[&str]) -> (bool, String) {
        let host = format!(
            "unix:///run/flotilla-cluster/{}/manager/flotilla.sock",
            self.prefix
        );
        let out = Command::new("docker")
            .arg("-H")
            .arg(&host)
            .args(args)
            .output()
            .expect("run docker");
        (out.status.success(), both(&out))
    }

    #[track_caller]
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.docker(args);
        assert!(ok, "docker {args:?}: {text}");
        text
    }

    /// The running container of a task of `service` on `host`'s own dockerd.
    pub fn container_on(&self, host: &str, service: &str) -> Option<String> {
        let label = format!("label=com.docker.swarm.service.name={service}");
        let out = self.run(&[
            "docker",
            "--prefix",
            &self.prefix,
            host,
            "ps",
            "-q",
            "--filter",
            &label,
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(str::to_string)
    }

    /// The docker CLI against `host`'s own dockerd (docker executor):
    /// (success, stdout+stderr).
    #[allow(dead_code)]
    pub fn docker_on(&self, host: &str, args: &[&str]) -> (bool, String) {
        let mut all = vec!["docker", "--prefix", &self.prefix, host];
        all.extend_from_slice(args);
        let out = self.run(&all);
        (out.status.success(), both(&out))
    }

    /// `sh -c SCRIPT` in that container: (success, stdout+stderr).
    pub fn sh_in(&self, host: &str, container: &str, script: &str) -> (bool, String) {
        let out = self.run(&[
            "docker",
            "--prefix",
            &self.prefix,
            host,
            "exec",
            container,
            "sh",
            "-c",
            script,
        ]);
        (out.status.success(), both(&out))
    }

    pub fn host_op(&self, op: &str, host: &str) {
        let out = self.run(&[op, "--prefix", &self.prefix, host]);
        assert!(
            out.status.success(),
            "{op} {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Tasks of `service` as JSON lines through `service ps --format`.
    pub fn tasks(&self, host: &str, service: &str) -> Vec<Value> {
        let (ok, text) = self.flotilla(
            host,
            &[
                "service",
                "ps",
                "--no-trunc",
                "--format",
                "{{json .}}",
                service,
            ],
        );
        if !ok {
            return Vec::new();
        }
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn running(&self, host: &str, service: &str) -> Vec<(String, String)> {
        self.tasks(host, service)
            .into_iter()
            .filter(|t| {
                t["DesiredState"] == "Running"
                    && t["CurrentState"]
                        .as_str()
                        .unwrap_or_default()
                        .starts_with("Running")
            })
            .map(|t| {
                (
                    t["ID"].as_str().unwrap_or_default().to_string(),
                    t["Node"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run(&["down", "--prefix", &self.prefix]);
    }
}

#[track_caller]
pub fn wait_timed(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    start.elapsed()
}

pub fn node_line<'a>(node_ls: &'a str, host: &str) -> &'a str {
    node_ls
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == host))
        .unwrap_or_default()
}

/// Addresses in an nslookup answer (after the server's own lines).
pub fn looked_up(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("Name:"))
        .filter_map(|l| {
            l.strip_prefix("Address:")
                .or_else(|| l.strip_prefix("Address 1:"))
        })
        .map(|a| a.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}
