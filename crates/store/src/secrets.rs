//! Secrets and configs: named data a service's tasks get as files. The two
//! are stored alike (a secret's data is never shown by the API, a
//! config's is); like everything in the store, they reach the disk only
//! sealed (`raft/seal.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which of the two an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    Secret,
    Config,
}

impl DataKind {
    pub fn name(self) -> &'static str {
        match self {
            DataKind::Secret => "secret",
            DataKind::Config => "config",
        }
    }

    /// Docker's size limits on the data (SwarmKit's validation).
    pub fn max_size(self) -> usize {
        match self {
            DataKind::Secret => 500 * 1024,
            DataKind::Config => 1000 * 1024,
        }
    }
}

impl From<DataKind> for crate::error::Kind {
    fn from(kind: DataKind) -> Self {
        match kind {
            DataKind::Secret => crate::error::Kind::Secret,
            DataKind::Config => crate::error::Kind::Config,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataObject {
    pub id: String,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The data as the API carries it: base64.
    pub data: String,
    /// The template driver (`golang`), when the data is a template.
    #[serde(default)]
    pub templating: Option<String>,
}

impl DataObject {
    /// The data itself, decoded as Go decodes Docker's `[]byte` fields
    /// (line breaks ignored).
    pub fn bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        use base64::Engine;
        let clean: Vec<u8> = self
            .data
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        base64::engine::general_purpose::STANDARD.decode(clean)
    }
}

/// The (ID, name) of each secret or config a container spec refers to.
pub fn container_refs(
    container: Option<&crate::models::TaskSpecContainerSpec>,
    kind: DataKind,
) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
    let Some(c) = container else {
        return Box::new(std::iter::empty());
    };
    match kind {
        DataKind::Secret => Box::new(c.secrets.iter().flatten().map(|r| {
            (
                r.secret_id.as_deref().unwrap_or_default(),
                r.secret_name.as_deref().unwrap_or_default(),
            )
        })),
        DataKind::Config => Box::new(c.configs.iter().flatten().map(|r| {
            (
                r.config_id.as_deref().unwrap_or_default(),
                r.config_name.as_deref().unwrap_or_default(),
            )
        })),
    }
}

/// The (ID, name) of each secret or config a task's container gets.
pub fn task_refs(
    task: &crate::models::Task,
    kind: DataKind,
) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
    container_refs(
        task.spec.as_ref().and_then(|s| s.container_spec.as_ref()),
        kind,
    )
}

/// The secrets and configs a node holds: those its tasks need, sent with
/// its assignments (SwarmKit's dispatcher sends them the same way), so a
/// node never receives one no task of its own uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeData {
    pub secrets: Vec<DataObject>,
    pub configs: Vec<DataObject>,
}

impl NodeData {
    pub fn get(&self, kind: DataKind, id: &str) -> Option<&DataObject> {
        let all = match kind {
            DataKind::Secret => &self.secrets,
            DataKind::Config => &self.configs,
        };
        all.iter().find(|o| o.id == id)
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty() && self.configs.is_empty()
    }
}
