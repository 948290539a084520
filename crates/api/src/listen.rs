//! Where the API listens, and who may reach it. The API is root on the
//! host (what Flotilla does not serve itself goes to the local Docker
//! Engine), so, as dockerd should:
//!
//! - a unix socket is for its owner and group only (0660, group `docker`
//!   where there is one), in a directory no other user can write to;
//! - TCP is served with TLS that verifies the client's certificate against
//!   the given CA (`--tlsverify`), and anything less (plain HTTP, or TLS
//!   without client certificates) only when asked for with `--insecure-tcp`,
//!   with a warning.

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The TLS the API serves TCP with: dockerd's `--tls`, `--tlsverify`,
/// `--tlscacert`, `--tlscert`, `--tlskey`.
#[derive(Debug, Clone)]
pub struct ApiTls {
    /// Clients must present a certificate signed by `ca`.
    pub verify: bool,
    pub ca: Option<PathBuf>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Everything about the API's listeners.
#[derive(Debug, Clone, Default)]
pub struct Listen {
    /// `unix:///path` or `tcp://host:port`, each once.
    pub hosts: Vec<String>,
    pub tls: Option<ApiTls>,
    /// Serve TCP without verifying clients (plain HTTP, or `--tls` alone).
    pub insecure_tcp: bool,
}

/// One bound listener.
pub(crate) enum Bound {
    Unix(tokio::net::UnixListener),
    Tcp(TcpListener),
    Tls(TlsListener),
}

impl Listen {
    /// Checks the whole configuration before anything is bound: a daemon
    /// that would serve root on a port to anyone does not start.
    fn check(&self) -> anyhow::Result<Option<Arc<ServerConfig>>> {
        let tcp: Vec<&str> = self
            .hosts
            .iter()
            .filter_map(|h| h.strip_prefix("tcp://"))
            .collect();
        let verified = self.tls.as_ref().is_some_and(|t| t.verify);
        if !tcp.is_empty() && !verified {
            let what = match &self.tls {
                Some(_) => "with TLS but without verifying clients' certificates",
                None => "in plain HTTP",
            };
            if !self.insecure_tcp {
                bail!(
                    "refusing to serve the API on tcp://{} {what}: whoever reaches the port \
                     would be root on this host. Serve it with --tlsverify --tlscacert \
                     --tlscert --tlskey, or give --insecure-tcp to serve it anyway",
                    tcp.join(", tcp://")
                );
            }
            tracing::warn!(
                "serving the API on tcp://{} {what} (--insecure-tcp): whoever reaches the \
                 port is root on this host",
                tcp.join(", tcp://")
            );
        }
        match &self.tls {
            Some(tls) if !tcp.is_empty() => server_config(tls).map(Some),
            _ => Ok(None),
        }
    }

    /// Binds every host, or none: an error names the host that failed.
    pub(crate) async fn bind(&self) -> anyhow::Result<Vec<(String, Bound)>> {
        let tls = self.check()?;
        let mut bound = Vec::new();
        for host in &self.hosts {
            if let Some(path) = host.strip_prefix("unix://") {
                let listener = bind_unix(Path::new(path))
                    .with_context(|| format!("cannot listen on {host}"))?;
                bound.push((host.clone(), Bound::Unix(listener)));
            } else if let Some(addr) = host.strip_prefix("tcp://") {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {host}"))?;
                let listener = match &tls {
                    Some(config) => Bound::Tls(TlsListener::new(listener, config.clone())?),
                    None => Bound::Tcp(listener),
                };
                bound.push((host.clone(), listener));
            } else {
                bail!("unsupported -H address {host}: use unix:///path or tcp://host:port");
            }
        }
        Ok(bound)
    }
}

/// The rustls configuration for `tls`, with dockerd's errors for files it
/// cannot use.
pub fn server_config(tls: &ApiTls) -> anyhow::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            anyhow::anyhow!("could not load TLS certificate {}: {e}", tls.cert.display())
        })?;
    if certs.is_empty() {
        bail!(
            "could not load TLS certificate {}: no certificate in it",
            tls.cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| anyhow::anyhow!("could not load TLS key {}: {e}", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = if tls.verify {
        let ca = tls
            .ca
            .as_ref()
            .context("--tlsverify needs --tlscacert: the CA that signs clients' certificates")?;
        let mut roots = rustls::RootCertStore::empty();
        let ca_certs = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("could not read CA certificate {}: {e}", ca.display()))?;
        let (added, _) = roots.add_parsable_certificates(ca_certs);
        if added == 0 {
            bail!(
                "could not read CA certificate {}: no usable certificate in it",
                ca.display()
            );
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .context("client certificate verifier")?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("TLS certificate {}: {e}", tls.cert.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A socket for the daemon's user and the `docker` group: 0660, in a
/// directory made if missing, which must not be writable by other users
/// (one who could would replace the socket with their own).
fn bind_unix(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
        check_private_dir(dir)?;
    }
    // A socket file left by a daemon that died; nothing listens on it.
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    if let Some(gid) = docker_group() {
        // Not fatal: a daemon that is not root keeps its own group.
        if let Err(e) = std::os::unix::fs::chown(path, None, Some(gid)) {
            tracing::debug!("cannot give {} to group docker: {e}", path.display());
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// The socket's directory belongs to this user or root, and only they may
/// write to it (or it is sticky, like /tmp, where only a file's owner may
/// remove it).
fn check_private_dir(dir: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(dir)?;
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        bail!(
            "{} belongs to user {}: another user could replace the socket there",
            dir.display(),
            meta.uid()
        );
    }
    let sticky = meta.mode() & 0o1000 != 0;
    if meta.mode() & 0o022 != 0 && !sticky {
        bail!(
            "{} is writable by other users ({:o}): one could replace the socket there",
            dir.display(),
            meta.mode() & 0o777
        );
    }
    Ok(())
}

/// The `docker` group's id, where the host has one.
fn docker_group() -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[0] == "docker")
        .and_then(|f| f[2].parse().ok())
}

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TCP with TLS, for axum: handshakes run beside the accept loop, so a slow
/// or silent client does not hold up the others, and a failed one is logged
/// and dropped.
pub(crate) struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    fn new(listener: TcpListener, config: Arc<ServerConfig>) -> anyhow::Result<TlsListener> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    r = listener.accept() => r,
                    // axum dropped the listener: the server stopped.
                    _ = tx.closed() => return,
                };
                let (tcp, peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors, say: wait rather than spin.
                        tracing::warn!("API: accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::info!("API: TLS handshake with {peer}: {e}"),
                        Err(_) => tracing::info!("API: TLS handshake with {peer} timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop holds a sender while this listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_needs_verified_tls_or_an_explicit_flag() {
        let plain = Listen {
            hosts: vec!["tcp://127.0.0.1:0".into()],
            tls: None,
            insecure_tcp: false,
        };
        let err = plain.check().unwrap_err().to_string();
        assert!(
            err.contains("refusing to serve the API on tcp://127.0.0.1:0 in plain HTTP"),
            "{err}"
        );
        assert!(err.contains("--insecure-tcp"), "{err}");
        assert!(Listen {
            insecure_tcp: true,
            ..plain.clone()
        }
        .check()
        .is_ok());
        let unverified = Listen {
            tls: Some(ApiTls {
                verify: false,
                ca: None,
                cert: "/nonexistent/cert.pem".into(),
                key: "/nonexistent/key.pem".into(),
            }),
            ..plain.clone()
        };
        let err = unverified.check().unwrap_err().to_string();
        assert!(
            err.contains("without verifying clients' certificates"),
            "{err}"
        );
        // A unix socket alone needs none of it.
        assert!(Listen {
            hosts: vec!["unix:///tmp/x.sock".into()],
            ..Default::default()
        }
        .check()
        .is_ok());
    }

    #[test]
    fn missing_files_are_named() {
        let tls = ApiTls {
            verify: true,
            ca: Some("/nonexistent/ca.pem".into()),
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        };
        let err = server_config(&tls).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }

    #[test]
    fn a_socket_is_for_its_owner_and_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/api.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let _listener = bind_unix(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // A directory others may write to is refused.
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = bind_unix(&open.join("api.sock")).unwrap_err().to_string();
        assert!(err.contains("writable by other users"), "{err}");
    }
}
