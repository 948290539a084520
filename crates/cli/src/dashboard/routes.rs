//! The dashboard's HTTP routes, and nothing else: the page and its two
//! assets, one Server-Sent Events stream with the aggregate and the
//! events, a service's history and logs, and the actions. Every request
//! passes the guard first (auth.rs); it is not a proxy to the daemon.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::stream::{self, Stream, StreamExt};
use tokio_stream::wrappers::{BroadcastStream, WatchStream};

use super::auth::{Guard, Verdict};
use super::watch::{Hub, Snapshot};
use super::{actions, history, logs};
use crate::client::{CliError, Client};

pub(crate) struct AppState {
    pub client: Client,
    pub guard: Guard,
    pub hub: Arc<Hub>,
}

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// Only this origin's scripts and styles, no frames, no other site.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/api/stream", get(live))
        .route("/api/services/{id}/history", get(service_history))
        .route("/api/services/{id}/logs", get(service_logs))
        .route("/api/tasks/{id}/logs", get(task_logs))
        .route("/api/services/{id}/action", post(service_action))
        .route("/api/nodes/{id}/availability", post(node_availability))
        .fallback(|| async { (StatusCode::NOT_FOUND, "404 not found\n") })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

fn asset(kind: &'static str, text: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], text).into_response()
}

/// The token and origin rules (auth.rs), then headers that keep the page
/// to itself.
async fn guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let mut response = match state.guard.check(request.headers(), request.uri().query()) {
        Verdict::Forbidden => (
            StatusCode::FORBIDDEN,
            "403 Forbidden: not the dashboard's origin\n",
        )
            .into_response(),
        Verdict::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            "401 Unauthorized: open the address `flotilla dashboard` printed, with its token\n",
        )
            .into_response(),
        Verdict::SetCookie => {
            let target = request.uri().path().to_string();
            let mut response = StatusCode::SEE_OTHER.into_response();
            if let (Ok(location), Ok(cookie)) = (
                HeaderValue::from_str(&target),
                HeaderValue::from_str(&state.guard.cookie()),
            ) {
                response.headers_mut().insert(header::LOCATION, location);
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Verdict::Allowed => next.run(request).await,
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The live stream: the daemon's state (`status`), the aggregate (`model`)
/// when it changes, and each event (`ev`), the kept ones first.
async fn live(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let changes = WatchStream::from_changes(state.hub.snapshot.subscribe());
    let events = BroadcastStream::new(state.hub.events.subscribe());
    let mut first = snapshot_events(&state.hub.snapshot.borrow());
    first.extend(
        state
            .hub
            .recent_events()
            .iter()
            .map(|e| Event::default().event("ev").data(&**e)),
    );
    let changes = changes.flat_map(|s| stream::iter(snapshot_events(&s)));
    let events = events
        .filter_map(|e| async move { e.ok().map(|e| Event::default().event("ev").data(&*e)) });
    let all = stream::iter(first)
        .chain(stream::select(changes, events))
        .map(Ok::<_, Infallible>);
    sse(all)
}

fn sse<S: Stream<Item = Result<Event, Infallible>> + Send + 'static>(events: S) -> Response {
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response()
}

fn snapshot_events(snapshot: &Snapshot) -> Vec<Event> {
    let status = serde_json::json!({"connected": snapshot.connected, "error": snapshot.error});
    let mut events = vec![Event::default().event("status").data(status.to_string())];
    if let Some(model) = &snapshot.model {
        events.push(Event::default().event("model").data(&**model));
    }
    events
}

async fn service_history(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match history::read(&state.client, &id).await {
        Ok(rows) => Json(rows).into_response(),
        Err(err) => refused(err),
    }
}

async fn service_logs(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    follow_logs(&state.client, "services", &id).await
}

async fn task_logs(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    follow_logs(&state.client, "tasks", &id).await
}

/// Log lines as `line` events; a refusal as one `failure` event with
/// Docker's message (an EventSource cannot read an error's body).
async fn follow_logs(client: &Client, kind: &str, id: &str) -> Response {
    match logs::follow(client, kind, id).await {
        Ok(lines) => sse(lines.map(|line| {
            Ok(Event::default()
                .event("line")
                .json_data(&line)
                .unwrap_or_else(|_| Event::default().comment("unencodable line")))
        })),
        Err(err) => {
            let failure = Event::default().event("failure").data(message(&err));
            sse(stream::iter([Ok(failure)]))
        }
    }
}

async fn service_action(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let action = match serde_json::from_slice(&body) {
        Ok(action) => action,
        Err(err) => return answer(StatusCode::BAD_REQUEST, &format!("bad request: {err}")),
    };
    match within(actions::on_service(&state.client, &id, action)).await {
        Ok(done) => answer(StatusCode::OK, &done),
        Err(err) => refused(err),
    }
}

async fn node_availability(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let change = match serde_json::from_slice(&body) {
        Ok(change) => change,
        Err(err) => return answer(StatusCode::BAD_REQUEST, &format!("bad request: {err}")),
    };
    match within(actions::on_node(&state.client, &id, change)).await {
        Ok(done) => answer(StatusCode::OK, &done),
        Err(err) => refused(err),
    }
}

/// An action's calls to the daemon, bounded: a daemon that does not
/// answer is an error the page shows, not a request that never ends.
async fn within<T>(
    work: impl std::future::Future<Output = crate::client::Result<T>>,
) -> crate::client::Result<T> {
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .unwrap_or_else(|_| {
            Err(CliError::Other(
                "the daemon did not answer within 30 s".into(),
            ))
        })
}

fn answer(status: StatusCode, message: &str) -> Response {
    let key = if status.is_success() {
        "message"
    } else {
        "error"
    };
    (status, Json(serde_json::json!({ key: message }))).into_response()
}

/// Docker's own message for a refusal, with its status; 502 when the
/// daemon could not be asked at all.
fn refused(err: CliError) -> Response {
    let status = match &err {
        CliError::Daemon { status, .. } => StatusCode::from_u16(*status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::BAD_GATEWAY),
        CliError::Connect { .. } => StatusCode::BAD_GATEWAY,
        CliError::Other(_) | CliError::Status { .. } => StatusCode::BAD_REQUEST,
    };
    answer(status, &message(&err))
}

/// The daemon's message verbatim; our own errors as the CLI words them.
fn message(err: &CliError) -> String {
    match err {
        CliError::Daemon { message, .. } => message.clone(),
        other => other.to_string(),
    }
}
