//! Ops on secrets and configs: creation (the name free among its kind),
//! a label change at the version read, removal (refused while a service
//! refers to it, naming the services).

use std::collections::BTreeMap;

use super::{not_found, out_of_sequence};
use crate::error::{Kind, StoreError};
use crate::models::Service;
use crate::models::{Task, TaskState};
use crate::objects::service_name;
use crate::secrets::{DataKind, DataObject, NodeData};
use crate::state::State;
use crate::state::TaskExt;

impl State {
    pub fn data_objects(&self, kind: DataKind) -> &BTreeMap<String, DataObject> {
        match kind {
            DataKind::Secret => &self.secrets,
            DataKind::Config => &self.configs,
        }
    }

    fn data_objects_mut(&mut self, kind: DataKind) -> &mut BTreeMap<String, DataObject> {
        match kind {
            DataKind::Secret => &mut self.secrets,
            DataKind::Config => &mut self.configs,
        }
    }

    /// Docker's lookup order: full ID, then exact name, then a unique ID
    /// prefix.
    pub fn find_data(&self, kind: DataKind, key: &str) -> Option<&DataObject> {
        let all = self.data_objects(kind);
        if let Some(o) = all.get(key) {
            return Some(o);
        }
        if let Some(o) = all.values().find(|o| o.name == key) {
            return Some(o);
        }
        let mut it = all
            .range(key.to_string()..)
            .take_while(|(k, _)| !key.is_empty() && k.starts_with(key));
        match (it.next(), it.next()) {
            (Some((_, o)), None) => Some(o),
            _ => None,
        }
    }

    pub(super) fn apply_create_data(
        &mut self,
        index: u64,
        kind: DataKind,
        mut object: DataObject,
    ) -> Result<(), StoreError> {
        let all = self.data_objects(kind);
        if all.contains_key(&object.id) {
            return Err(StoreError::IdTaken {
                kind: Kind::from(kind),
                id: object.id,
            });
        }
        if all.values().any(|o| o.name == object.name) {
            return Err(StoreError::NameTaken {
                kind: Kind::from(kind),
                name: object.name,
            });
        }
        object.version = index;
        self.data_objects_mut(kind)
            .insert(object.id.clone(), object);
        Ok(())
    }

    pub(super) fn apply_update_data_labels(
        &mut self,
        index: u64,
        kind: DataKind,
        id: &str,
        expected: u64,
        labels: BTreeMap<String, String>,
        updated_at: String,
    ) -> Result<(), StoreError> {
        let object = self
            .data_objects_mut(kind)
            .get_mut(id)
            .ok_or_else(|| not_found(Kind::from(kind), id))?;
        if object.version != expected {
            return Err(out_of_sequence(
                Kind::from(kind),
                id,
                expected,
                object.version,
            ));
        }
        object.labels = labels;
        object.updated_at = updated_at;
        object.version = index;
        Ok(())
    }

    pub(super) fn apply_remove_data(&mut self, kind: DataKind, id: &str) -> Result<(), StoreError> {
        let object = self
            .data_objects(kind)
            .get(id)
            .ok_or_else(|| not_found(Kind::from(kind), id))?;
        let users: Vec<String> = self
            .services
            .values()
            .filter(|s| refers_to(s, kind, id))
            .map(|s| service_name(s).to_string())
            .collect();
        if !users.is_empty() {
            return Err(StoreError::DataInUse {
                kind: Kind::from(kind),
                name: object.name.clone(),
                services: users,
            });
        }
        self.data_objects_mut(kind).remove(id);
        Ok(())
    }
}

impl State {
    /// Every secret and config the service refers to exists, under the
    /// name the reference gives: checked as the op applies, so a removal
    /// committed just before cannot leave a service pointing at nothing.
    pub(super) fn check_data_refs(&self, svc: &Service) -> Result<(), StoreError> {
        for kind in [DataKind::Secret, DataKind::Config] {
            let missing: Vec<String> = data_refs(svc, kind)
                .filter(|(id, name)| {
                    self.data_objects(kind)
                        .get(*id)
                        .is_none_or(|o| o.name != *name)
                })
                .map(|(id, name)| if name.is_empty() { id } else { name }.to_string())
                .collect();
            if !missing.is_empty() {
                return Err(StoreError::DataNotFound {
                    kind: Kind::from(kind),
                    names: missing,
                });
            }
        }
        Ok(())
    }
}

/// The (ID, name) of each secret or config a service's tasks get.
pub fn data_refs(svc: &Service, kind: DataKind) -> impl Iterator<Item = (&str, &str)> {
    let container = svc
        .spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.container_spec.as_ref());
    crate::secrets::container_refs(container, kind)
}

/// Whether a service's tasks get the secret or config `id`.
pub fn refers_to(svc: &Service, kind: DataKind, id: &str) -> bool {
    data_refs(svc, kind).any(|(ref_id, _)| ref_id == id)
}

/// Whether a task on a node needs its secrets and configs: from its
/// assignment until it stops running (SwarmKit's rule; a task never comes
/// back from a later state).
fn task_needs_data(task: &Task) -> bool {
    (TaskState::ASSIGNED..=TaskState::RUNNING).contains(&task.state())
}

impl State {
    /// What a node whose tasks are `tasks` must hold, each object once,
    /// in ID order.
    pub fn node_data<'a>(&self, tasks: impl IntoIterator<Item = &'a Task>) -> NodeData {
        let mut secrets = std::collections::BTreeSet::new();
        let mut configs = std::collections::BTreeSet::new();
        for task in tasks.into_iter().filter(|t| task_needs_data(t)) {
            secrets.extend(crate::secrets::task_refs(task, DataKind::Secret).map(|(id, _)| id));
            configs.extend(crate::secrets::task_refs(task, DataKind::Config).map(|(id, _)| id));
        }
        let pick = |kind: DataKind, ids: std::collections::BTreeSet<&str>| {
            ids.into_iter()
                .filter_map(|id| self.data_objects(kind).get(id).cloned())
                .collect()
        };
        NodeData {
            secrets: pick(DataKind::Secret, secrets),
            configs: pick(DataKind::Config, configs),
        }
    }
}
