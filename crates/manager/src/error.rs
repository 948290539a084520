//! Errors the API turns into Docker's status codes.

use flotilla_store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// 400
    #[error("{0}")]
    InvalidArgument(String),
    /// 404
    #[error("{0}")]
    NotFound(String),
    /// 409
    #[error("{0}")]
    Conflict(String),
    /// 503: not part of a swarm, or no leader.
    #[error("{0}")]
    Unavailable(String),
    /// 500
    #[error("{0}")]
    Internal(String),
}

pub const NOT_IN_SWARM: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.";

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => Error::NotFound(e.to_string()),
            StoreError::OutOfSequence => Error::InvalidArgument(e.to_string()),
            StoreError::Conflict(m) => Error::Conflict(m),
            StoreError::Invalid(m) => Error::InvalidArgument(m),
            StoreError::Unavailable(m) => Error::Unavailable(m),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
