//! API errors as Docker sends them: a status code and `{"message": "…"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flotilla_manager::Error;

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

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match e {
            Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = e.to_string();
        ApiError::new(grpc_status(&message).unwrap_or(status), message)
    }
}

/// dockerd turns a SwarmKit error into a status by its gRPC code (its
/// httpstatus package); the manager spells the codes into its messages as
/// SwarmKit does (`rpc error: code = Unimplemented desc = …`). The codes
/// whose status the manager's error kinds do not already give are read
/// back here.
fn grpc_status(message: &str) -> Option<StatusCode> {
    let code = message
        .strip_prefix("rpc error: code = ")?
        .split(' ')
        .next()?;
    match code {
        "Unimplemented" => Some(StatusCode::NOT_IMPLEMENTED),
        _ => None,
    }
}

impl From<flotilla_store::StoreError> for ApiError {
    fn from(e: flotilla_store::StoreError) -> Self {
        Error::from(e).into()
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

    #[test]
    fn grpc_codes_docker_maps_to_a_status() {
        let e: ApiError = Error::InvalidArgument(
            "rpc error: code = Unimplemented desc = renaming services is not supported".into(),
        )
        .into();
        assert_eq!(e.status, StatusCode::NOT_IMPLEMENTED);
        assert_eq!(
            e.message,
            "rpc error: code = Unimplemented desc = renaming services is not supported"
        );
        let e: ApiError =
            Error::InvalidArgument("rpc error: code = InvalidArgument desc = bad".into()).into();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e: ApiError = Error::Conflict("Unimplemented".into()).into();
        assert_eq!(e.status, StatusCode::CONFLICT);
    }
}
