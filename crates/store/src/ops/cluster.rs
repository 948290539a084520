//! Ops on the swarm object: its creation (with the root CA's key and the
//! ingress network) and its versioned replacement.

use bollard::models::{JoinTokens, Swarm};

use super::{not_found, out_of_sequence, version};
use crate::error::{Kind, StoreError};
use crate::objects::version_of;
use crate::state::{RootRotation, State};

impl State {
    /// `swarm init`: only once.
    pub(super) fn apply_init_cluster(
        &mut self,
        index: u64,
        mut swarm: Swarm,
        ca_key_pem: String,
        unlock_key: Option<String>,
    ) -> Result<(), StoreError> {
        if self.cluster.is_some() {
            return Err(StoreError::AlreadyInitialized);
        }
        swarm.version = version(index);
        self.create_ingress(index, &swarm);
        self.cluster = Some(swarm);
        self.root_ca_key = Some(ca_key_pem);
        self.unlock_key = unlock_key;
        Ok(())
    }

    pub(super) fn apply_update_cluster(
        &mut self,
        index: u64,
        expected: u64,
        mut swarm: Swarm,
        unlock_key: Option<String>,
    ) -> Result<(), StoreError> {
        let current = self
            .cluster
            .as_ref()
            .ok_or_else(|| not_found(Kind::Swarm, ""))?;
        let current = version_of(&current.version);
        if current != expected {
            let id = swarm.id.clone().unwrap_or_default();
            return Err(out_of_sequence(Kind::Swarm, &id, expected, current));
        }
        swarm.version = version(index);
        self.cluster = Some(swarm);
        self.unlock_key = unlock_key;
        Ok(())
    }

    /// Part of an `UpdateCluster`: a rotation it starts, the `ForceRotate`
    /// it answered.
    pub(super) fn apply_root_rotation(
        &mut self,
        rotation: Option<RootRotation>,
        last_forced_rotation: Option<u64>,
    ) {
        if let Some(forced) = last_forced_rotation {
            self.last_forced_rotation = forced;
        }
        if let Some(rotation) = rotation {
            self.root_rotation = Some(rotation);
        }
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.root_rotation_in_progress = Some(self.root_rotation.is_some());
        }
    }

    /// Only the rotation the leader looked at: one replaced since (a second
    /// `--rotate`) has nodes still to move.
    pub(super) fn apply_finish_root_rotation(
        &mut self,
        index: u64,
        cert_pem: &str,
        join_tokens: JoinTokens,
    ) -> Result<(), StoreError> {
        if self.root_rotation.as_ref().map(|r| r.cert_pem.as_str()) != Some(cert_pem) {
            return Err(StoreError::Invalid(
                "the root CA rotation changed before it could be completed".into(),
            ));
        }
        let Some(cluster) = self.cluster.as_mut() else {
            return Err(not_found(Kind::Swarm, ""));
        };
        let Some(rotation) = self.root_rotation.take() else {
            return Err(not_found(Kind::Swarm, ""));
        };
        cluster.tls_info = Some(rotation.tls_info);
        cluster.join_tokens = Some(join_tokens);
        cluster.root_rotation_in_progress = Some(false);
        cluster.version = version(index);
        self.root_ca_key = Some(rotation.key_pem);
        Ok(())
    }
}
