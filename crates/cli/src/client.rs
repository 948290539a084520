//! HTTP to the daemon: Docker Engine API v1.41 over a unix socket or TCP,
//! one connection per request (a CLI makes few), JSON bodies, and docker's
//! error wording.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Every request carries this prefix, so an older or newer daemon answers
/// with the shapes this CLI was written against.
const API_PREFIX: &str = "/v1.41";

/// What can go wrong running a command, printed the docker CLI's way.
#[derive(Debug)]
pub enum CliError {
    /// The daemon answered with an error status and `{"message": ...}`.
    Daemon { status: u16, message: String },
    /// Nothing listens at the address.
    Connect { host: String },
    /// Bad input or a failure on this side.
    Other(String),
    /// A failure with an exit status of its own (docker's `cli.StatusError`),
    /// e.g. 64 for an inspect template that does not parse.
    Status { code: i32, message: String },
}

impl CliError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, CliError::Daemon { status: 404, .. })
    }

    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Status { code, .. } => *code,
            _ => 1,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Daemon { message, .. } => write!(f, "Error response from daemon: {message}"),
            CliError::Connect { host } => write!(
                f,
                "Cannot connect to the Flotilla daemon at {host}. Is the flotilla daemon running?"
            ),
            CliError::Other(message) | CliError::Status { message, .. } => f.write_str(message),
        }
    }
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        CliError::Other(message)
    }
}

impl From<&str> for CliError {
    fn from(message: &str) -> Self {
        CliError::Other(message.to_string())
    }
}

pub type Result<T> = std::result::Result<T, CliError>;

/// Docker's filter encoding: `{"name": {"value": true}}`.
pub type Filters = BTreeMap<String, BTreeMap<String, bool>>;

/// Parses repeated `-f key=value` flags into filters.
pub fn parse_filters(flags: &[String]) -> Result<Filters> {
    let mut filters = Filters::new();
    for flag in flags {
        let (key, value) = flag.split_once('=').ok_or_else(|| {
            CliError::Other("bad format of filter (expected name=value)".to_string())
        })?;
        add_filter(&mut filters, key.trim(), value.trim());
    }
    Ok(filters)
}

pub fn add_filter(filters: &mut Filters, key: &str, value: &str) {
    filters
        .entry(key.to_lowercase())
        .or_default()
        .insert(value.to_string(), true);
}

/// A connection target parsed from `-H`.
#[derive(Debug, Clone)]
enum Address {
    Unix(String),
    Tcp(String),
}

#[derive(Debug, Clone)]
pub struct Client {
    host: String,
    address: Address,
    /// Set for HTTPS over TCP (see [`crate::tls::client_config`]).
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Client {
    /// A client speaking TLS over TCP with `tls` (plain when `None`; a unix
    /// socket is always plain).
    pub fn with_tls(host: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Client> {
        let mut client = Client::new(host)?;
        if matches!(client.address, Address::Tcp(_)) {
            client.tls = tls;
        }
        Ok(client)
    }

    pub fn new(host: &str) -> Result<Client> {
        let address = if let Some(path) = host.strip_prefix("unix://") {
            Address::Unix(path.to_string())
        } else if let Some(addr) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            Address::Tcp(with_tcp_port(addr.trim_end_matches('/')))
        } else if host.starts_with('/') {
            Address::Unix(host.to_string())
        } else {
            return Err(CliError::Other(format!(
                "unable to parse docker host `{host}`: use unix:///path or tcp://host:port"
            )));
        };
        Ok(Client {
            host: host.to_string(),
            address,
            tls: None,
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let body = self.request(Method::GET, path, None, &[]).await?;
        decode(&body)
    }

    pub async fn get_raw(&self, path: &str) -> Result<Bytes> {
        self.request(Method::GET, path, None, &[]).await
    }

    /// GET with extra request headers (e.g. `X-Registry-Auth`).
    pub async fn get_with_headers<T: DeserializeOwned>(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<T> {
        let body = self.request(Method::GET, path, None, headers).await?;
        decode(&body)
    }

    pub async fn post<B: Serialize>(&self, path: &str, body: Option<&B>) -> Result<Bytes> {
        self.post_with_headers(path, body, &[]).await
    }

    /// POST with extra request headers (e.g. `X-Registry-Auth`).
    pub async fn post_with_headers<B: Serialize>(
        &self,
        path: &str,
        body: Option<&B>,
        headers: &[(&str, &str)],
    ) -> Result<Bytes> {
        let json = match body {
            Some(body) => {
                Some(serde_json::to_vec(body).map_err(|e| CliError::Other(e.to_string()))?)
            }
            None => None,
        };
        self.request(Method::POST, path, json, headers).await
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        self.request(Method::DELETE, path, None, &[])
            .await
            .map(|_| ())
    }

    /// Starts a request whose body is read as it arrives (logs).
    pub async fn stream(&self, path: &str) -> Result<Incoming> {
        let response = self.send(Method::GET, path, None, &[]).await?;
        if response.status().is_success() {
            return Ok(response.into_body());
        }
        let status = response.status();
        let body = collect(response.into_body()).await?;
        Err(daemon_error(status, &body))
    }

    /// A POST that takes the connection over (`Connection: Upgrade`,
    /// `Upgrade: tcp`, as docker's exec start does): the raw connection
    /// once the daemon answered 101, or its error.
    pub async fn upgrade<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>> {
        let json = serde_json::to_vec(body).map_err(|e| CliError::Other(e.to_string()))?;
        let headers = [("Connection", "Upgrade"), ("Upgrade", "tcp")];
        let response = self.send(Method::POST, path, Some(json), &headers).await?;
        let status = response.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            let body = collect(response.into_body()).await?;
            return Err(daemon_error(status, &body));
        }
        hyper::upgrade::on(response)
            .await
            .map(TokioIo::new)
            .map_err(|e| CliError::Other(format!("error upgrading the connection: {e}")))
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Bytes> {
        let response = self.send(method, path, body, headers).await?;
        let status = response.status();
        let body = collect(response.into_body()).await?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(daemon_error(status, &body))
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<hyper::Response<Incoming>> {
        let mut sender = self.connect(&method, path).await?;
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{API_PREFIX}{path}"))
            .header(hyper::header::HOST, "api.moby.localhost")
            .header(
                hyper::header::USER_AGENT,
                concat!("flotilla-cli/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| CliError::Other(format!("invalid request: {e}")))?;
        let method_text = request.method().clone();
        sender
            .send_request(request)
            .await
            .map_err(|e| match tls_error_in(&e) {
                Some(tls) => self.connect_error(&method_text, path, &tls),
                None => CliError::Other(format!("error during connect: {e}")),
            })
    }

    /// Go's `url.Error` as the docker CLI prints a failed request:
    /// `error during connect: Get "https://host:port/v1.41/path": reason`.
    fn connect_error(&self, method: &Method, path: &str, reason: &str) -> CliError {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let addr = match &self.address {
            Address::Tcp(addr) => addr.as_str(),
            Address::Unix(_) => "api.moby.localhost",
        };
        let name = method.as_str();
        let go_method = match name.split_at_checked(1) {
            Some((first, rest)) => format!("{first}{}", rest.to_lowercase()),
            None => name.to_string(),
        };
        CliError::Other(format!(
            "error during connect: {go_method} \"{scheme}://{addr}{API_PREFIX}{path}\": {reason}"
        ))
    }

    async fn connect(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let refused = || CliError::Connect {
            host: self.host.clone(),
        };
        match &self.address {
            Address::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|_| refused())?;
                handshake(stream).await
            }
            Address::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|_| refused())?;
                let Some(config) = &self.tls else {
                    return handshake(stream).await;
                };
                let name = crate::tls::server_name(addr)
                    .map_err(|e| self.connect_error(method, path, &e))?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|e| {
                        let reason = tls_error_in(&e).unwrap_or_else(|| e.to_string());
                        self.connect_error(method, path, &reason)
                    })?;
                handshake(stream).await
            }
        }
    }
}

/// docker's ParseTCPAddr: an address without a port gets 2375.
fn with_tcp_port(addr: &str) -> String {
    let has_port = match addr.rsplit_once(':') {
        Some((host, port)) => {
            !port.is_empty()
                && port.chars().all(|c| c.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    if addr.is_empty() {
        "localhost:2375".to_string()
    } else if has_port {
        addr.to_string()
    } else {
        format!("{addr}:2375")
    }
}

/// The rustls error somewhere in an error's chain, in Go's words.
fn tls_error_in(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(crate::tls::describe_error(tls));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(crate::tls::describe_error(tls));
            }
        }
        current = e.source();
    }
    None
}

async fn handshake<S>(stream: S) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| CliError::Other(format!("error during connect: {e}")))?;
    // The connection task ends by itself when the response body is done
    // (or, upgraded, hands the connection over).
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    Ok(sender)
}

async fn collect(body: Incoming) -> Result<Bytes> {
    body.collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| CliError::Other(format!("error reading response from daemon: {e}")))
}

fn daemon_error(status: StatusCode, body: &[u8]) -> CliError {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        message: String,
    }
    let message = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => parsed.message,
        Err(_) => {
            let text = String::from_utf8_lossy(body).trim().to_string();
            if text.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("unknown error")
                    .to_lowercase()
            } else {
                text
            }
        }
    };
    CliError::Daemon {
        status: status.as_u16(),
        message,
    }
}

pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| CliError::Other(format!("cannot read the daemon's answer: {e}")))
}

/// Builds `?a=b&c=d` with percent-encoding; empty when there are no pairs.
pub fn query(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let encoded: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    format!("?{}", encoded.join("&"))
}

/// A `filters=` query pair, or nothing for no filters.
pub fn filters_pair(filters: &Filters) -> Option<(&'static str, String)> {
    if filters.is_empty() {
        return None;
    }
    serde_json::to_string(filters)
        .ok()
        .map(|json| ("filters", json))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Reads an optional date field as its RFC 3339 text whatever type bollard
/// was built with (String by default; chrono/time if another crate turned
/// those features on).
pub fn date_text<T: Serialize>(date: &Option<T>) -> Option<String> {
    date.as_ref()
        .and_then(|d| serde_json::to_value(d).ok())
        .and_then(|v| v.as_str().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_queries_and_filters() {
        let filters =
            parse_filters(&["service=abc".into(), "desired-state=running".into()]).unwrap();
        let pair = filters_pair(&filters).unwrap();
        assert_eq!(
            pair.1,
            r#"{"desired-state":{"running":true},"service":{"abc":true}}"#
        );
        assert_eq!(
            query(&[("a", "x y".into()), ("b", "{\"k\"}".into())]),
            "?a=x%20y&b=%7B%22k%22%7D"
        );
        assert!(parse_filters(&["novalue".into()]).is_err());
    }

    #[test]
    fn parses_hosts() {
        assert!(
            matches!(Client::new("unix:///run/x.sock").unwrap().address, Address::Unix(p) if p == "/run/x.sock")
        );
        assert!(
            matches!(Client::new("tcp://127.0.0.1:2375").unwrap().address, Address::Tcp(a) if a == "127.0.0.1:2375")
        );
        assert!(Client::new("ftp://x").is_err());
        // docker's ParseTCPAddr: no port is 2375, nothing is localhost:2375.
        for (host, addr) in [
            ("tcp://127.0.0.1", "127.0.0.1:2375"),
            ("tcp://", "localhost:2375"),
            ("tcp://[::1]", "[::1]:2375"),
            ("tcp://[::1]:2376", "[::1]:2376"),
            ("tcp://manager:2376/", "manager:2376"),
        ] {
            assert!(
                matches!(Client::new(host).unwrap().address, Address::Tcp(ref a) if a == addr),
                "{host}"
            );
        }
    }

    #[test]
    fn daemon_errors_read_the_message() {
        let err = daemon_error(
            StatusCode::NOT_FOUND,
            br#"{"message":"service x not found"}"#,
        );
        assert_eq!(
            err.to_string(),
            "Error response from daemon: service x not found"
        );
        assert!(err.is_not_found());
    }
}
