//! Requests outside the swarm API (containers, images, volumes, exec, …)
//! go unchanged to the Docker Engine beside the daemon, so one DOCKER_HOST
//! serves `docker ps` and `docker service ls` alike, as with Swarm.
//! Upgraded connections (attach, exec, build sessions) are spliced both ways.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

use crate::error::ApiError;
use crate::node::Daemon;
use crate::OriginalPath;

pub async fn forward(State(d): State<Arc<Daemon>>, req: Request) -> Response {
    let Some(engine) = d.local().engine.clone() else {
        let what = format!("{} {}", req.method(), req.uri().path());
        return ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("{what} is not part of Flotilla's API, and no Docker Engine runs beside this daemon to answer it"),
        )
        .into_response();
    };
    match send(&engine, req).await {
        Ok(resp) => resp,
        Err(e) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("Docker Engine at {}: {e}", engine.display()),
        )
        .into_response(),
    }
}

/// The Docker Engine's answer to `req`, for a route that streams it on
/// with Flotilla's own (events).
pub async fn open(d: &Daemon, req: Request) -> Result<Response, ApiError> {
    let Some(engine) = d.local().engine.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "no Docker Engine runs beside this daemon",
        ));
    };
    send(&engine, req).await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("Docker Engine at {}: {e}", engine.display()),
        )
    })
}

async fn send(engine: &Path, mut req: Request) -> anyhow::Result<Response> {
    let path = req
        .extensions()
        .get::<OriginalPath>()
        .map(|p| p.0.clone())
        .unwrap_or_else(|| {
            req.uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default()
        });
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let stream = tokio::net::UnixStream::connect(engine).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("pass-through connection: {e}");
        }
    });
    let (mut parts, body) = req.into_parts();
    parts.uri = path.parse()?;
    parts.headers.insert(header::HOST, "docker".parse()?);
    let out = hyper::Request::from_parts(parts, body);
    let mut resp = sender.send_request(out).await?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS || (upgrade && resp.status().is_success()) {
        if let Some(client) = client_upgrade {
            let engine_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match (client.await, engine_upgrade.await) {
                    (Ok(c), Ok(e)) => {
                        let (mut c, mut e) = (TokioIo::new(c), TokioIo::new(e));
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut e).await;
                    }
                    (c, e) => {
                        tracing::debug!("pass-through upgrade failed: {:?} {:?}", c.err(), e.err())
                    }
                }
            });
        }
    }
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// Asks the Docker Engine beside the daemon for `path_and_query` (no
/// version prefix: the engine's own) and reads its whole answer: the
/// status and body, for a route that merges the engine's objects with
/// Flotilla's.
pub async fn ask(
    d: &Daemon,
    method: axum::http::Method,
    path_and_query: &str,
    body: axum::body::Bytes,
) -> Result<(StatusCode, axum::body::Bytes), ApiError> {
    let Some(engine) = d.local().engine.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("no Docker Engine runs beside this daemon to answer {method} {path_and_query}"),
        ));
    };
    let gateway = |e: String| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("Docker Engine at {}: {e}", engine.display()),
        )
    };
    let mut req = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .map_err(|e| gateway(e.to_string()))?;
    req.extensions_mut()
        .insert(OriginalPath(path_and_query.to_string()));
    let resp = send(&engine, req)
        .await
        .map_err(|e| gateway(e.to_string()))?;
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .map_err(|e| gateway(e.to_string()))?;
    Ok((status, bytes))
}
