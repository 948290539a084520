//! Docker's Service object with `PreviousSpec`, which bollard's generated
//! model leaves out. Derefs to the generated model for everything else.

use std::ops::{Deref, DerefMut};

use bollard::models::ServiceSpec;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    #[serde(flatten)]
    pub inner: bollard::models::Service,
    #[serde(
        rename = "PreviousSpec",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub previous_spec: Option<ServiceSpec>,
}

impl Deref for Service {
    type Target = bollard::models::Service;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl DerefMut for Service {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl From<bollard::models::Service> for Service {
    fn from(inner: bollard::models::Service) -> Self {
        Service {
            inner,
            previous_spec: None,
        }
    }
}
