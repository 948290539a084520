//! A minimal Engine API client over a daemon's unix socket: one HTTP/1.1
//! keep-alive connection per client, reopened after an error. Enough for a
//! load driver that wants each request's own latency, without a client
//! library's pool in the measurement.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{socket}: {reason}")]
    Io { socket: String, reason: String },
    #[error("{method} {path}: HTTP {status}: {body}")]
    Status {
        method: String,
        path: String,
        status: u16,
        body: String,
    },
    #[error("{method} {path}: bad JSON in the answer: {reason}")]
    Json {
        method: String,
        path: String,
        reason: String,
    },
}

pub struct Client {
    socket: PathBuf,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    /// `host` is `unix:///path` or a bare path.
    pub fn new(host: &str) -> Client {
        Client {
            socket: PathBuf::from(host.strip_prefix("unix://").unwrap_or(host)),
            conn: None,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn io_error(&self, e: impl std::fmt::Display) -> HttpError {
        HttpError::Io {
            socket: self.socket.display().to_string(),
            reason: e.to_string(),
        }
    }

    /// The open connection once it can take a request (the previous
    /// answer fully read), or a new one.
    async fn connection(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, HttpError> {
        let mut reused = self.conn.take();
        if let Some(c) = reused.as_mut() {
            if c.ready().await.is_err() {
                reused = None;
            }
        }
        let conn = match reused {
            Some(c) => c,
            None => self.connect().await?,
        };
        Ok(self.conn.insert(conn))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, HttpError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.io_error(e))?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.io_error(e))?;
        // The connection's I/O runs beside the client; it ends when the
        // client drops its sender or the daemon closes the socket.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    /// Sends one request; returns the status and body, whatever the status.
    pub async fn raw(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, Bytes), HttpError> {
        let payload = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v).map_err(|e| self.io_error(e))?),
            None => Bytes::new(),
        };
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "flotilla")
            .header("content-type", "application/json")
            .body(Full::new(payload))
            .map_err(|e| self.io_error(e))?;
        let conn = self.connection().await?;
        let sent = conn.send_request(req).await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                self.conn = None;
                return Err(self.io_error(e));
            }
        };
        let status = resp.status().as_u16();
        let body = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                self.conn = None;
                return Err(self.io_error(e));
            }
        };
        Ok((status, body))
    }

    /// A request that must succeed (2xx); its body parsed as JSON (null
    /// when empty).
    pub async fn json(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, HttpError> {
        let (status, bytes) = self.raw(method, path, body).await?;
        if !(200..300).contains(&status) {
            return Err(HttpError::Status {
                method: method.into(),
                path: path.into(),
                status,
                body: String::from_utf8_lossy(&bytes).trim().to_string(),
            });
        }
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| HttpError::Json {
            method: method.into(),
            path: path.into(),
            reason: e.to_string(),
        })
    }
}
