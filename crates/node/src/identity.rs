//! What a node keeps on disk about its swarm membership, under
//! `<data-dir>/swarm/`: who it is (`node.json`), its certificate and key
//! (`cert.json`, mode 0600) and the root CA certificate (`ca.pem`).
//!
//! In a swarm with autolock a manager's `cert.json` is wrapped by the
//! swarm's unlock key, like its Raft DEK: after a restart the node knows
//! who it is but cannot prove it until it is unlocked.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use flotilla_ca::NodeCert;
use flotilla_store::raft::seal::{write_private, LockError, UnlockKey, WRAPPED_MAGIC};
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
    /// The key `cert.json` is wrapped with now (autolock), shared by every
    /// clone so a renewal writes the certificate as the lock says.
    unlock_key: Arc<RwLock<Option<UnlockKey>>>,
}

impl Files {
    pub fn new(data_dir: &Path) -> Files {
        Files {
            dir: data_dir.join("swarm"),
            unlock_key: Default::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn unlock_key(&self) -> Option<UnlockKey> {
        self.unlock_key
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the keys on disk are wrapped by an unlock key this node
    /// does not hold yet (a locked manager after a restart).
    pub fn is_locked(&self) -> bool {
        self.unlock_key().is_none()
            && std::fs::read(self.dir.join("cert.json")).is_ok_and(|b| b.starts_with(WRAPPED_MAGIC))
    }

    /// Takes `key` as the one the files are wrapped with, if it opens them.
    pub fn unlock(&self, key: UnlockKey) -> Result<(), LockError> {
        let stored = std::fs::read(self.dir.join("cert.json")).map_err(|_| LockError::WrongKey)?;
        if stored.starts_with(WRAPPED_MAGIC) {
            key.unwrap(&stored)?;
        }
        *self.unlock_key.write().unwrap_or_else(|p| p.into_inner()) = Some(key);
        Ok(())
    }

    /// Forgets a key taken by [`Files::unlock`] (the unlock failed later).
    pub fn forget_key(&self) {
        *self.unlock_key.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Wraps `cert.json` with `key` from now on, or stores it plain
    /// without one (autolock on, rotated, off; a demotion).
    pub fn relock(&self, key: Option<UnlockKey>) -> anyhow::Result<()> {
        let cert = self.read_cert()?;
        *self.unlock_key.write().unwrap_or_else(|p| p.into_inner()) = key;
        if let Some(cert) = cert {
            self.write_cert_only(&cert)?;
        }
        Ok(())
    }

    fn read_cert(&self) -> anyhow::Result<Option<NodeCert>> {
        let stored = match std::fs::read(self.dir.join("cert.json")) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let plain = if stored.starts_with(WRAPPED_MAGIC) {
            let key = self.unlock_key().ok_or(LockError::Locked)?;
            key.unwrap(&stored)?
        } else {
            stored
        };
        Ok(Some(serde_json::from_slice(&plain)?))
    }

    /// Who this node is, without its keys (readable when locked).
    pub fn read_identity(&self) -> anyhow::Result<Option<Identity>> {
        match std::fs::read(self.dir.join("node.json")) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The identity, certificate and root CA; a locked certificate is a
    /// [`LockError::Locked`] error.
    pub fn read(&self) -> anyhow::Result<Option<(Identity, NodeCert, String)>> {
        let Some(id) = self.read_identity()? else {
            return Ok(None);
        };
        let cert = self
            .read_cert()?
            .ok_or_else(|| anyhow::anyhow!("{}: no certificate", self.dir.display()))?;
        let ca = std::fs::read_to_string(self.dir.join("ca.pem"))?;
        Ok(Some((id, cert, ca)))
    }

    fn write_cert_only(&self, cert: &NodeCert) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(cert)?;
        let stored = match self.unlock_key() {
            Some(key) => key.wrap(&bytes)?,
            None => bytes,
        };
        write_private(&self.dir.join("cert.json"), &stored)?;
        Ok(())
    }

    pub fn write_cert(&self, cert: &NodeCert, ca_pem: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        self.write_cert_only(cert)?;
        write_private(&self.dir.join("ca.pem"), ca_pem.as_bytes())?;
        Ok(())
    }

    /// Written last when joining or initialising: its presence is what
    /// makes a restart bring the membership back.
    pub fn write_identity(&self, id: &Identity) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(id).map_err(std::io::Error::other)?;
        write_private(&self.dir.join("node.json"), &bytes)
    }

    /// Forgets the swarm: the files and the key.
    pub fn remove_all(&self) -> std::io::Result<()> {
        *self.unlock_key.write().unwrap_or_else(|p| p.into_inner()) = None;
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
