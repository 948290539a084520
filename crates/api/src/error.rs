//! API errors as Docker sends them: a status code and `{"message": "…"}`.
//! [`render`] is the one place a typed manager or store error gets its words
//! and status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flotilla_manager::Error;
use flotilla_store::{Kind, StoreError};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

/// Docker's words when a node is not a manager of a swarm.
pub const NOT_IN_SWARM: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.";

/// Docker's words when a write cannot reach a leader.
pub const NO_LEADER: &str = "rpc error: code = Unknown desc = The swarm does not have a leader. It's possible that too few managers are online. Make sure more than half of the managers are online.";

/// SwarmKit's words for a join token that is not (or no longer) one of the swarm's.
pub const INVALID_TOKEN: &str =
    "rpc error: code = InvalidArgument desc = A valid join token is necessary to join this cluster";

/// A SwarmKit error as dockerd relays it: the gRPC code and description
/// in Go's `status.Error` format. dockerd picks the HTTP status from the
/// code (its httpstatus package); the status here is what Flotilla has
/// always answered for each error.
fn rpc(code: &str, desc: impl std::fmt::Display) -> String {
    format!("rpc error: code = {code} desc = {desc}")
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, message) = render(&e);
        ApiError::new(status, message)
    }
}

/// The one place a manager or store error becomes Docker's status code and
/// message.
pub fn render(e: &Error) -> (StatusCode, String) {
    use flotilla_manager::error::Unimplemented;
    const BAD: StatusCode = StatusCode::BAD_REQUEST;
    match e {
        Error::Store(e) => render_store(e),
        Error::InvalidSpec(m) | Error::Rejected(m) => (BAD, rpc("InvalidArgument", m)),
        Error::InvalidArgument(m) => (BAD, m.clone()),
        Error::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
        Error::InvalidJoinToken => (BAD, INVALID_TOKEN.to_string()),
        Error::LastManager { node } => (
            BAD,
            rpc(
                "FailedPrecondition",
                format!("attempting to demote the last manager of the swarm (node {node})"),
            ),
        ),
        Error::QuorumLoss {
            node,
            reachable,
            remaining,
        } => (
            BAD,
            rpc(
                "FailedPrecondition",
                format!("can't remove member from the raft: this would result in a loss of quorum (node {node}: {reachable} of the {remaining} remaining managers are reachable)"),
            ),
        ),
        Error::ManagerNotDemoted { node } => (
            BAD,
            rpc(
                "FailedPrecondition",
                format!("node {node} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"),
            ),
        ),
        Error::NodeNotDown { node } => (
            BAD,
            rpc(
                "FailedPrecondition",
                format!("node {node} is not down and can't be removed"),
            ),
        ),
        Error::Unimplemented(what) => (
            StatusCode::NOT_IMPLEMENTED,
            rpc(
                "Unimplemented",
                match what {
                    Unimplemented::RenameService => "renaming services is not supported",
                    Unimplemented::ChangeServiceMode => "service mode change is not allowed",
                },
            ),
        ),
        Error::NoPreviousSpec { id } => (
            BAD,
            rpc(
                "InvalidArgument",
                format!("service {id} does not have a previous spec"),
            ),
        ),
        Error::NotMember { node } => (
            StatusCode::NOT_FOUND,
            format!("node {node} is not a member of this swarm"),
        ),
        Error::Removed { node } => (
            StatusCode::NOT_FOUND,
            format!("node {node} is not a member of this swarm (it was removed): join it again"),
        ),
        Error::NotInSwarm => (StatusCode::SERVICE_UNAVAILABLE, NOT_IN_SWARM.to_string()),
        Error::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m.clone()),
        Error::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m.clone()),
        Error::Conflict(m) => (StatusCode::CONFLICT, m.clone()),
        Error::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m.clone()),
    }
}

fn render_store(e: &StoreError) -> (StatusCode, String) {
    const BAD: StatusCode = StatusCode::BAD_REQUEST;
    const UNAVAILABLE: StatusCode = StatusCode::SERVICE_UNAVAILABLE;
    match e {
        StoreError::NotFound { kind, id } => (StatusCode::NOT_FOUND, format!("{kind} {id} not found")),
        StoreError::OutOfSequence { .. } => (BAD, rpc("Unknown", "update out of sequence")),
        StoreError::NameTaken {
            kind: Kind::Network,
            name,
        } => (
            StatusCode::CONFLICT,
            format!("network with name {name} already exists"),
        ),
        StoreError::NameTaken {
            kind: kind @ (Kind::Secret | Kind::Config),
            name,
        } => (
            StatusCode::CONFLICT,
            rpc("AlreadyExists", format!("{kind} {name} already exists")),
        ),
        StoreError::NameTaken { kind, name } => (
            StatusCode::CONFLICT,
            rpc(
                "AlreadyExists",
                format!("name conflicts with an existing object: {kind} {name} already exists"),
            ),
        ),
        StoreError::IdTaken { kind, id } => (StatusCode::CONFLICT, format!("{kind} {id} already exists")),
        StoreError::AlreadyInitialized => (StatusCode::CONFLICT, "swarm already initialized".into()),
        StoreError::AlreadyAssigned { id } => (StatusCode::CONFLICT, format!("task {id} is already assigned")),
        StoreError::StateBackwards { id, from, to } => (
            BAD,
            format!("task {id}: state cannot move back from {from} to {to}"),
        ),
        StoreError::DesiredBackwards { id, from, to } => (
            BAD,
            format!("task {id}: desired state cannot move back from {from} to {to}"),
        ),
        StoreError::NotAManager { id } => (BAD, format!("node {id} is not a manager")),
        StoreError::PortInUse {
            port,
            service_name,
            service_id,
            ..
        } => (
            BAD,
            rpc(
                "InvalidArgument",
                format!("port '{port}' is already in use by service '{service_name}' ({service_id}) as an ingress port"),
            ),
        ),
        StoreError::NoFreePort { protocol } => (
            BAD,
            rpc(
                "ResourceExhausted",
                format!("no free {protocol} port left in the dynamic range 30000-32767"),
            ),
        ),
        StoreError::NoFreeAddress { network } => (BAD, format!("no address left in the service network {network}")),
        StoreError::NetworkInUse {
            network,
            service_name,
            service_id,
        } => (
            BAD,
            rpc(
                "FailedPrecondition",
                format!("network {network} is in use by service {service_name} ({service_id})"),
            ),
        ),
        e @ (StoreError::DataInUse { .. } | StoreError::DataNotFound { .. }) => {
            (BAD, rpc("InvalidArgument", e))
        }
        StoreError::Invalid(m) => (BAD, m.clone()),
        StoreError::NotLeader { .. } | StoreError::NoLeader => (UNAVAILABLE, NO_LEADER.to_string()),
        StoreError::NotConfirmed { timeout } => (
            UNAVAILABLE,
            format!("the write was not confirmed by a majority of managers within {timeout:?}. {NO_LEADER}"),
        ),
        StoreError::LeaderUnreachable { leader, reason } => (
            UNAVAILABLE,
            format!("{NO_LEADER} (the last known leader, at {leader}, does not answer: {reason})"),
        ),
        StoreError::WriteFailed(m) => (UNAVAILABLE, format!("store write failed: {m}")),
        StoreError::DiskUnwritable(m) => (
            UNAVAILABLE,
            format!("this manager cannot write to its data directory ({m}): it refuses writes until it can, and catches up by itself"),
        ),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Error::Store(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!("api: {} {}", self.status.as_u16(), self.message);
        }
        (
            self.status,
            axum::Json(serde_json::json!({ "message": self.message })),
        )
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_manager::error::Unimplemented;
    use flotilla_store::models::TaskState;
    use flotilla_store::Kind;

    /// Every error, with the status and the exact words dockerd (or
    /// Flotilla, where dockerd has none) answers it with.
    #[test]
    fn each_error_renders_to_dockers_status_and_message() {
        let store = |e: StoreError| Error::Store(e);
        let cases: Vec<(Error, u16, &str)> = vec![
            (
                store(StoreError::not_found(Kind::Service, "web")),
                404,
                "service web not found",
            ),
            (
                Error::not_found(Kind::Node, "n1"),
                404,
                "node n1 not found",
            ),
            (
                Error::out_of_sequence(Kind::Service, "s1", 4, 5),
                400,
                "rpc error: code = Unknown desc = update out of sequence",
            ),
            (
                store(StoreError::NameTaken {
                    kind: Kind::Service,
                    name: "web".into(),
                }),
                409,
                "rpc error: code = AlreadyExists desc = name conflicts with an existing object: service web already exists",
            ),
            (
                store(StoreError::IdTaken {
                    kind: Kind::Task,
                    id: "t1".into(),
                }),
                409,
                "task t1 already exists",
            ),
            (
                store(StoreError::AlreadyInitialized),
                409,
                "swarm already initialized",
            ),
            (
                store(StoreError::AlreadyAssigned { id: "t1".into() }),
                409,
                "task t1 is already assigned",
            ),
            (
                store(StoreError::StateBackwards {
                    id: "t1".into(),
                    from: TaskState::RUNNING,
                    to: TaskState::PREPARING,
                }),
                400,
                "task t1: state cannot move back from running to preparing",
            ),
            (
                store(StoreError::DesiredBackwards {
                    id: "t1".into(),
                    from: TaskState::SHUTDOWN,
                    to: TaskState::RUNNING,
                }),
                400,
                "task t1: desired state cannot move back from shutdown to running",
            ),
            (
                store(StoreError::NotAManager { id: "n1".into() }),
                400,
                "node n1 is not a manager",
            ),
            (
                store(StoreError::PortInUse {
                    port: 8080,
                    protocol: "tcp".into(),
                    service_name: "svc-a".into(),
                    service_id: "a".into(),
                }),
                400,
                "rpc error: code = InvalidArgument desc = port '8080' is already in use by service 'svc-a' (a) as an ingress port",
            ),
            (
                store(StoreError::NoFreePort {
                    protocol: "udp".into(),
                }),
                400,
                "rpc error: code = ResourceExhausted desc = no free udp port left in the dynamic range 30000-32767",
            ),
            (
                store(StoreError::NoFreeAddress {
                    network: "10.255.0.0/16".into(),
                }),
                400,
                "no address left in the service network 10.255.0.0/16",
            ),
            (store(StoreError::Invalid("bad op".into())), 400, "bad op"),
            (store(StoreError::NoLeader), 503, NO_LEADER),
            (
                store(StoreError::NotLeader {
                    leader: Some("10.0.0.1:2377".into()),
                }),
                503,
                NO_LEADER,
            ),
            (
                store(StoreError::NotConfirmed {
                    timeout: std::time::Duration::from_secs(10),
                }),
                503,
                "the write was not confirmed by a majority of managers within 10s. rpc error: code = Unknown desc = The swarm does not have a leader. It's possible that too few managers are online. Make sure more than half of the managers are online.",
            ),
            (
                store(StoreError::LeaderUnreachable {
                    leader: "10.0.0.1:2377".into(),
                    reason: "connection refused".into(),
                }),
                503,
                "rpc error: code = Unknown desc = The swarm does not have a leader. It's possible that too few managers are online. Make sure more than half of the managers are online. (the last known leader, at 10.0.0.1:2377, does not answer: connection refused)",
            ),
            (
                store(StoreError::WriteFailed("raft stopped".into())),
                503,
                "store write failed: raft stopped",
            ),
            (
                Error::InvalidSpec("ContainerSpec: image reference must be provided".into()),
                400,
                "rpc error: code = InvalidArgument desc = ContainerSpec: image reference must be provided",
            ),
            (
                Error::InvalidArgument("task history retention limit must be 0 or more".into()),
                400,
                "task history retention limit must be 0 or more",
            ),
            (
                Error::InvalidJoinToken,
                400,
                "rpc error: code = InvalidArgument desc = A valid join token is necessary to join this cluster",
            ),
            (
                Error::LastManager { node: "n1".into() },
                400,
                "rpc error: code = FailedPrecondition desc = attempting to demote the last manager of the swarm (node n1)",
            ),
            (
                Error::QuorumLoss {
                    node: "n1".into(),
                    reachable: 1,
                    remaining: 3,
                },
                400,
                "rpc error: code = FailedPrecondition desc = can't remove member from the raft: this would result in a loss of quorum (node n1: 1 of the 3 remaining managers are reachable)",
            ),
            (
                Error::ManagerNotDemoted { node: "n1".into() },
                400,
                "rpc error: code = FailedPrecondition desc = node n1 is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal",
            ),
            (
                Error::NodeNotDown { node: "n1".into() },
                400,
                "rpc error: code = FailedPrecondition desc = node n1 is not down and can't be removed",
            ),
            (
                Error::Unimplemented(Unimplemented::RenameService),
                501,
                "rpc error: code = Unimplemented desc = renaming services is not supported",
            ),
            (
                Error::Unimplemented(Unimplemented::ChangeServiceMode),
                501,
                "rpc error: code = Unimplemented desc = service mode change is not allowed",
            ),
            (
                Error::NoPreviousSpec { id: "s1".into() },
                400,
                "rpc error: code = InvalidArgument desc = service s1 does not have a previous spec",
            ),
            (
                Error::NotMember { node: "n1".into() },
                404,
                "node n1 is not a member of this swarm",
            ),
            (
                Error::Removed { node: "n1".into() },
                404,
                "node n1 is not a member of this swarm (it was removed): join it again",
            ),
            (Error::NotInSwarm, 503, NOT_IN_SWARM),
            (
                Error::Unavailable("This node is not part of a swarm".into()),
                503,
                "This node is not part of a swarm",
            ),
            (Error::Internal("boom".into()), 500, "boom"),
        ];
        for (error, status, message) in cases {
            let api = ApiError::from(error.clone());
            assert_eq!(
                (api.status.as_u16(), api.message.as_str()),
                (status, message),
                "{error:?}"
            );
        }
    }
}
