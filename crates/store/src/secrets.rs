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
