//! Ops on nodes: what their agents report (registration, status), what
//! users set (the spec), and the managers' Raft membership as the leader
//! sees it.

use bollard::models::{
    ManagerStatus, Node, NodeDescription, NodeSpec, NodeStatus, Reachability, TlsInfo,
};

use super::{not_found, out_of_sequence, version};
use crate::error::{Kind, StoreError};
use crate::objects::version_of;
use crate::state::State;

impl State {
    /// Registers a node, or replaces it whole when it registers again.
    pub(super) fn apply_put_node(&mut self, index: u64, mut node: Node) -> Result<(), StoreError> {
        let id = node.id.clone().unwrap_or_default();
        node.version = version(index);
        self.nodes.insert(id, node);
        Ok(())
    }

    pub(super) fn apply_update_node_spec(
        &mut self,
        index: u64,
        id: &str,
        expected: u64,
        spec: NodeSpec,
        updated_at: String,
    ) -> Result<(), StoreError> {
        let node = self.node_mut(id)?;
        let current = version_of(&node.version);
        if current != expected {
            return Err(out_of_sequence(Kind::Node, id, expected, current));
        }
        node.spec = Some(spec);
        node.updated_at = Some(updated_at);
        node.version = version(index);
        Ok(())
    }

    /// The agent's report; the description only comes when it (re)registers.
    pub(super) fn apply_set_node_status(
        &mut self,
        index: u64,
        id: &str,
        status: NodeStatus,
        description: Option<Box<NodeDescription>>,
        updated_at: String,
    ) -> Result<(), StoreError> {
        let node = self.node_mut(id)?;
        node.status = Some(status);
        if let Some(d) = description {
            node.description = Some(*d);
        }
        node.updated_at = Some(updated_at);
        node.version = version(index);
        Ok(())
    }

    /// The node joined the Raft members (`Some`) or left them (`None`).
    pub(super) fn apply_set_manager_status(
        &mut self,
        index: u64,
        id: &str,
        status: Option<ManagerStatus>,
    ) -> Result<(), StoreError> {
        let node = self.node_mut(id)?;
        node.manager_status = status;
        node.version = version(index);
        Ok(())
    }

    /// A manager's reachability as the leader sees it; refused for a worker.
    pub(super) fn apply_set_reachability(
        &mut self,
        index: u64,
        id: &str,
        reachability: Reachability,
    ) -> Result<(), StoreError> {
        let node = self.node_mut(id)?;
        let ms = node
            .manager_status
            .as_mut()
            .ok_or_else(|| StoreError::NotAManager { id: id.to_string() })?;
        ms.reachability = Some(reachability);
        node.version = version(index);
        Ok(())
    }

    /// The node's record goes; its tasks stay for the orchestrators to see.
    pub(super) fn apply_remove_node(&mut self, id: &str) -> Result<(), StoreError> {
        self.nodes
            .remove(id)
            .ok_or_else(|| not_found(Kind::Node, id))?;
        self.release_node_addrs(id);
        Ok(())
    }

    fn node_mut(&mut self, id: &str) -> Result<&mut Node, StoreError> {
        self.nodes
            .get_mut(id)
            .ok_or_else(|| not_found(Kind::Node, id))
    }

    /// Which root the node trusts and which key signed its certificate.
    pub(super) fn apply_set_node_tls(
        &mut self,
        index: u64,
        id: &str,
        tls_info: TlsInfo,
    ) -> Result<(), StoreError> {
        let node = self.node_mut(id)?;
        node.description
            .get_or_insert_with(Default::default)
            .tls_info = Some(tls_info);
        node.version = version(index);
        Ok(())
    }
}
