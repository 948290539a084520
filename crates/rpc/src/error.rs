//! Typed errors across gRPC. A `Status` carries the error itself as JSON in
//! its details, beside a gRPC code and a human message for whoever reads
//! only those; the other side decodes the details back into the same type,
//! so it can act on the kind (follow the leader it names, show a refused
//! join in Docker's words) instead of parsing a sentence.

use flotilla_store::StoreError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Code, Status};

/// A status with `error` encoded in its details.
pub fn status<E: Serialize + std::fmt::Display>(code: Code, error: &E) -> Status {
    match serde_json::to_vec(error) {
        Ok(json) => Status::with_details(code, error.to_string(), json.into()),
        Err(_) => Status::new(code, error.to_string()),
    }
}

/// The typed error a status carries, if it carries one of type `E`.
pub fn typed<E: DeserializeOwned>(status: &Status) -> Option<E> {
    if status.details().is_empty() {
        return None;
    }
    serde_json::from_slice(status.details()).ok()
}

/// A store error as a status, with the gRPC code that fits its kind.
pub fn store_status(error: &StoreError) -> Status {
    status(store_code(error), error)
}

fn store_code(error: &StoreError) -> Code {
    match error {
        StoreError::NotFound { .. } => Code::NotFound,
        StoreError::NameTaken { .. }
        | StoreError::IdTaken { .. }
        | StoreError::AlreadyInitialized
        | StoreError::AlreadyAssigned { .. } => Code::AlreadyExists,
        StoreError::OutOfSequence { .. } => Code::Unknown,
        StoreError::NetworkInUse { .. } => Code::FailedPrecondition,
        StoreError::DataInUse { .. } | StoreError::DataNotFound { .. } => Code::InvalidArgument,
        StoreError::NoFreePort { .. } | StoreError::NoFreeAddress { .. } => Code::ResourceExhausted,
        StoreError::StateBackwards { .. }
        | StoreError::DesiredBackwards { .. }
        | StoreError::NotAManager { .. }
        | StoreError::PortInUse { .. }
        | StoreError::Invalid(_) => Code::InvalidArgument,
        StoreError::NotLeader { .. }
        | StoreError::NoLeader
        | StoreError::NotConfirmed { .. }
        | StoreError::LeaderUnreachable { .. }
        | StoreError::WriteFailed(_)
        | StoreError::DiskUnwritable(_) => Code::Unavailable,
    }
}

/// A manager error as a status, with the gRPC code that fits its kind.
pub fn manager_status(error: &flotilla_manager::Error) -> Status {
    use flotilla_manager::Error as E;
    let code = match error {
        E::Store(e) => store_code(e),
        E::InvalidSpec(_)
        | E::Rejected(_)
        | E::InvalidArgument(_)
        | E::InvalidJoinToken
        | E::NoPreviousSpec { .. } => Code::InvalidArgument,
        E::LastManager { .. }
        | E::QuorumLoss { .. }
        | E::ManagerNotDemoted { .. }
        | E::NodeNotDown { .. }
        | E::Conflict(_) => Code::FailedPrecondition,
        E::Unauthorized(_) => Code::Unauthenticated,
        E::Unimplemented(_) => Code::Unimplemented,
        E::Forbidden(_) => Code::PermissionDenied,
        E::NotMember { .. } | E::Removed { .. } => Code::NotFound,
        E::NotInSwarm | E::Unavailable(_) => Code::Unavailable,
        E::Internal(_) => Code::Internal,
    };
    status(code, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_error_keeps_its_type_across_a_status() {
        let e = StoreError::PortInUse {
            port: 8080,
            protocol: "tcp".into(),
            service_name: "web".into(),
            service_id: "s1".into(),
        };
        let s = store_status(&e);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(typed::<StoreError>(&s), Some(e));
        let leader = StoreError::NotLeader {
            leader: Some("10.0.0.1:2377".into()),
        };
        let s = store_status(&leader);
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(typed::<StoreError>(&s), Some(leader));
    }

    #[test]
    fn a_manager_error_keeps_its_type_across_a_status() {
        let e = flotilla_manager::Error::InvalidJoinToken;
        let s = manager_status(&e);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(typed::<flotilla_manager::Error>(&s), Some(e));
        let wrapped = flotilla_manager::Error::Store(StoreError::NoLeader);
        let s = manager_status(&wrapped);
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(typed::<flotilla_manager::Error>(&s), Some(wrapped));
    }

    #[test]
    fn a_status_without_details_has_no_typed_error() {
        assert_eq!(typed::<StoreError>(&Status::unavailable("gone")), None);
    }

    /// What the wire carries: the status's code, message and details go
    /// through the gRPC headers and come back equal.
    #[test]
    fn the_typed_error_survives_the_headers() {
        let e = StoreError::NotLeader {
            leader: Some("10.0.0.1:2377".into()),
        };
        let mut headers = tonic::metadata::MetadataMap::new().into_headers();
        store_status(&e).add_header(&mut headers).unwrap();
        let back = Status::from_header_map(&headers).expect("a status");
        assert_eq!(back.code(), Code::Unavailable);
        assert_eq!(typed::<StoreError>(&back), Some(e));
    }
}
