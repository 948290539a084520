//! The Engine API routes Flotilla answers itself; everything else goes to
//! the Docker Engine beside it (see [`crate::passthrough`]).

pub mod events;
pub mod exec;
pub mod logs;
pub mod networks;
pub mod nodes;
pub mod secrets;
pub mod services;
pub mod swarm;
pub mod system;
pub mod tasks;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};

/// The largest request body a route of Flotilla's own reads (the
/// pass-through streams bodies of any size to the engine).
pub const BODY_LIMIT: usize = 2 << 20;

/// Query parameters read the way Go's `r.FormValue` does: a repeated key
/// counts with its first value, undecodable bytes become U+FFFD, and a
/// problem is a 400 with a JSON message (axum's `Query` answers a
/// duplicate key with a plain-text 400).
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut map = serde_json::Map::new();
        let query = parts.uri.query().unwrap_or_default();
        for (k, v) in url_pairs(query) {
            map.entry(k).or_insert_with(|| serde_json::Value::String(v));
        }
        serde_json::from_value(serde_json::Value::Object(map))
            .map(Params)
            .map_err(|e| ApiError::bad_request(format!("invalid query parameters: {e}")))
    }
}

/// The object named in a route's path (`/services/{id}/update`: always the
/// second segment), percent-decoded as Go does, so a name that is not UTF-8
/// is looked up and not found instead of refused with a plain-text 400.
pub struct Id(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.path().split('/').nth(2).unwrap_or_default();
        Ok(Id(percent_decode(raw, false)))
    }
}

/// The request body, read to its end: its bytes when there are at most
/// [`BODY_LIMIT`] of them, `None` when there are more (read and dropped)
/// or the client stopped sending mid-body.
pub async fn read_to_end(body: Body) -> Option<Bytes> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.ok()?.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total <= BODY_LIMIT {
            buf.extend_from_slice(&data);
        }
    }
    (total <= BODY_LIMIT).then(|| buf.freeze())
}

/// Reads the whole body before a route of Flotilla's own runs, so every
/// answer (an early 503 or 404 too) comes after the request was consumed
/// and the connection stays usable; a body over [`BODY_LIMIT`] is a 413.
pub async fn read_body(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    match read_to_end(body).await {
        Some(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        None => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is too large: at most {BODY_LIMIT} bytes are accepted"),
        )
        .into_response(),
    }
}

/// The paths whose every method Flotilla answers itself (Docker's swarm
/// routers); anything else it does not serve goes to the Docker Engine.
pub fn is_swarm_path(path: &str) -> bool {
    [
        "/swarm",
        "/nodes",
        "/services",
        "/tasks",
        "/secrets",
        "/configs",
    ]
    .iter()
    .any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// dockerd's answer to a path it has no route for and to a method a path
/// does not take (its router's NotFoundHandler and MethodNotAllowedHandler
/// are the same): 404 `page not found`, once the body has been read.
pub async fn page_not_found(req: Request) -> ApiError {
    read_to_end(req.into_body()).await;
    ApiError::not_found("page not found")
}

/// `a=1&b=%20x+y` as decoded pairs.
fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k, true), percent_decode(v, true))
    })
}

/// Percent-decoding that never fails: bad escapes stay as they are and
/// bytes that are not UTF-8 become U+FFFD, as Go shows them in JSON.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encoding for a query value: everything but unreserved bytes.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses a JSON body the way Docker reports problems with one: 400 and
/// what is wrong, never a 422.
pub fn json_body<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    decode_body(body, "invalid JSON in request body")
}

/// A service spec, decoded as dockerd decodes it (see [`crate::docker`]).
pub fn service_spec_body(body: &Bytes) -> ApiResult<flotilla_store::models::ServiceSpec> {
    decode_body(body, "invalid service spec")
}

fn decode_body<T: DeserializeOwned>(body: &Bytes, what: &str) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty: a JSON object is required",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON in request body: {e}")))?;
    crate::docker::decode::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}

/// A response body with the names dockerd emits (see [`crate::docker`]).
pub fn docker_json<T: serde::Serialize>(value: &T) -> ApiResult<axum::response::Response> {
    crate::docker::encode::response(value)
}

/// Docker's booleans in query strings: `1`, `true`, `True`…
pub fn truthy(v: &Option<String>) -> bool {
    v.as_deref()
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// The `version` query parameter of an update, required.
pub fn version_param(v: &Option<String>) -> ApiResult<u64> {
    let raw = v.as_deref().ok_or_else(|| {
        ApiError::bad_request("invalid swarm version: version parameter is required")
    })?;
    raw.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid version '{raw}': must be a non-negative integer"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_never_fails() {
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("%zz%4", true), "%zz%4");
        assert_eq!(percent_decode("%FF", false), "\u{fffd}");
        assert_eq!(percent_decode("%C3%BC", false), "ü");
        let raw = r#"{"label!":{"a=b c":true}}"#;
        assert_eq!(percent_decode(&percent_encode(raw), false), raw);
    }

    #[test]
    fn query_parameters_as_go_reads_them() {
        #[derive(serde::Deserialize)]
        struct Q {
            filters: Option<String>,
            status: Option<String>,
        }
        let mut parts = Request::builder()
            .uri("/services?filters=%7B%7D&filters=x&status=1&other")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let Params(q) = rt
            .block_on(Params::<Q>::from_request_parts(&mut parts, &()))
            .unwrap();
        assert_eq!(q.filters.as_deref(), Some("{}"));
        assert_eq!(q.status.as_deref(), Some("1"));
        let Id(id) = rt
            .block_on(Id::from_request_parts(&mut parts, &()))
            .unwrap();
        assert_eq!(id, "");
        let mut parts = Request::builder()
            .uri("/services/we%2Fb%FF/update")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let Id(id) = rt
            .block_on(Id::from_request_parts(&mut parts, &()))
            .unwrap();
        assert_eq!(id, "we/b\u{fffd}");
    }

    #[test]
    fn swarm_paths() {
        for p in [
            "/swarm",
            "/swarm/bogus",
            "/services/",
            "/tasks/x/y",
            "/nodes",
        ] {
            assert!(is_swarm_path(p), "{p}");
        }
        for p in [
            "/",
            "/servicesX",
            "/swarmy",
            "/containers/json",
            "/_ping",
            "/info",
        ] {
            assert!(!is_swarm_path(p), "{p}");
        }
    }
}
