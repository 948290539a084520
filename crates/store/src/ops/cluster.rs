//! Ops on the swarm object: its creation (with the root CA's key and the
//! ingress network) and its versioned replacement.

use bollard::models::Swarm;

use super::{not_found, out_of_sequence, version};
use crate::error::{Kind, StoreError};
use crate::objects::version_of;
use crate::state::State;

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
}
