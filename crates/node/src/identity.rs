//! What a node keeps on disk about its swarm membership, under
//! `<data-dir>/swarm/`: who it is (`node.json`), its certificate and key
//! (`cert.json`, mode 0600) and the root CA certificate (`ca.pem`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use flotilla_ca::NodeCert;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: String,
    pub manager: bool,
    pub cluster_id: String,
    /// Raft ID; managers only.
    #[serde(default)]
    pub raft_id: u64,
    /// Where other nodes reach this one (advertise address with port).
    pub addr: String,
    /// Where the cluster port listens (managers).
    pub listen_addr: String,
    /// Managers to reach, for a worker's agent.
    #[serde(default)]
    pub managers: Vec<String>,
}

#[derive(Clone)]
pub struct Files {
    dir: PathBuf,
}

impl Files {
    pub fn new(data_dir: &Path) -> Files {
        Files {
            dir: data_dir.join("swarm"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn read(&self) -> anyhow::Result<Option<(Identity, NodeCert, String)>> {
        let id = match std::fs::read(self.dir.join("node.json")) {
            Ok(b) => serde_json::from_slice(&b)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let cert: NodeCert = serde_json::from_slice(&std::fs::read(self.dir.join("cert.json"))?)?;
        let ca = std::fs::read_to_string(self.dir.join("ca.pem"))?;
        Ok(Some((id, cert, ca)))
    }

    pub fn write_cert(&self, cert: &NodeCert, ca_pem: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let bytes = serde_json::to_vec(cert).map_err(std::io::Error::other)?;
        write_atomic(&self.dir.join("cert.json"), &bytes, 0o600)?;
        write_atomic(&self.dir.join("ca.pem"), ca_pem.as_bytes(), 0o600)
    }

    /// Written last when joining or initialising: its presence is what
    /// makes a restart bring the membership back.
    pub fn write_identity(&self, id: &Identity) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(id).map_err(std::io::Error::other)?;
        write_atomic(&self.dir.join("node.json"), &bytes, 0o600)
    }

    pub fn remove_all(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
