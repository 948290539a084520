//! The cluster under test, through `scripts/cluster.sh`: its hosts, their
//! API sockets, and the faults (kill and start, partition and heal, pause
//! and resume, fill and unfill).

use std::path::PathBuf;
use std::time::Duration;

use super::schedule::{Action, Hosts};
use crate::load::http::Client;

pub struct Cluster {
    pub script: PathBuf,
    pub prefix: String,
    pub hosts: Hosts,
    /// Where cluster.sh keeps each host's files.
    pub state_root: PathBuf,
}

impl Cluster {
    pub fn all(&self) -> Vec<String> {
        self.hosts
            .managers
            .iter()
            .chain(&self.hosts.workers)
            .cloned()
            .collect()
    }

    pub fn socket(&self, host: &str) -> String {
        self.state_root
            .join(&self.prefix)
            .join(host)
            .join("flotilla.sock")
            .display()
            .to_string()
    }

    pub fn client(&self, host: &str) -> Client {
        Client::new(&self.socket(host))
    }

    /// `cluster.sh COMMAND --prefix P [ARGS]`; its output when it failed.
    pub async fn run(&self, command: &str, args: &[&str]) -> Result<(), String> {
        let out = tokio::process::Command::new("bash")
            .arg(&self.script)
            .arg(command)
            .arg("--prefix")
            .arg(&self.prefix)
            .args(args)
            .output()
            .await
            .map_err(|e| format!("{}: {e}", self.script.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "cluster.sh {command} {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    pub async fn start_fault(&self, action: Action, host: &str) -> Result<(), String> {
        match action {
            Action::Kill => self.run("kill", &[host]).await,
            Action::Partition => self.run("partition", &[host]).await,
            Action::Pause => self.run("pause", &[host]).await,
            Action::Fill => self.run("fill", &[host]).await,
        }
    }

    pub async fn end_fault(&self, action: Action, host: &str) -> Result<(), String> {
        match action {
            Action::Kill => self.run("start", &[host]).await,
            Action::Partition => self.run("heal", &[host]).await,
            Action::Pause => self.run("resume", &[host]).await,
            Action::Fill => self.run("unfill", &[host]).await,
        }
    }

    /// Every host back: resumed, healed, started.
    pub async fn heal_all(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for h in self.all() {
            // Resuming a daemon that is not stopped, or that is not
            // running, is harmless; a failure of start is not.
            let _ = self.run("resume", &[&h]).await;
            if let Err(e) = self.run("unfill", &[&h]).await {
                errors.push(e);
            }
            if let Err(e) = self.run("heal", &[&h]).await {
                errors.push(e);
            }
            if let Err(e) = self.run("start", &[&h]).await {
                errors.push(e);
            }
        }
        errors
    }

    /// The hostname of the manager that leads, as any manager answering
    /// `GET /nodes` says.
    pub async fn leader(&self) -> Option<String> {
        for m in &self.hosts.managers {
            let mut c = self.client(m);
            let Ok(Ok(nodes)) =
                tokio::time::timeout(Duration::from_secs(2), c.json("GET", "/nodes", None)).await
            else {
                continue;
            };
            let leader = nodes.as_array().into_iter().flatten().find(|n| {
                n["ManagerStatus"]["Leader"].as_bool() == Some(true)
                    && n["Status"]["State"].as_str() == Some("ready")
            });
            if let Some(n) = leader {
                return n["Description"]["Hostname"].as_str().map(str::to_string);
            }
        }
        None
    }
}
