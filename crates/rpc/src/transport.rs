//! gRPC over mutual TLS, with the TLS done here rather than by tonic so
//! that the certificates can change at run time (renewal, rotation) and
//! every RPC can see the verified peer certificate (its node ID, role and
//! cluster) through [`PeerCerts`].

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

/// A TLS handshake slower than this is dropped, so a client that opens a
/// connection and says nothing cannot pile up tasks.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);

/// What the TLS layer learned about the caller, in each request's extensions.
#[derive(Debug, Clone, Default)]
pub struct PeerCerts {
    /// The chain the client presented and the verifier accepted, leaf
    /// first; empty when it presented none (a node joining).
    pub certs: Arc<Vec<CertificateDer<'static>>>,
    pub remote: Option<SocketAddr>,
}

pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerCerts,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerCerts;
    fn connect_info(&self) -> PeerCerts {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts TLS connections for a tonic server, each with the server
/// configuration current when it arrives.
pub fn incoming(
    listener: TcpListener,
    config: watch::Receiver<Arc<ServerConfig>>,
) -> ReceiverStream<Result<TlsConn, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!("cluster port: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(config.borrow().clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let certs = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|c| c.to_vec())
                            .unwrap_or_default();
                        let info = PeerCerts {
                            certs: Arc::new(certs),
                            remote: Some(remote),
                        };
                        let _ = tx.send(Ok(TlsConn { inner: tls, info })).await;
                    }
                    // Plain-text clients, wrong CAs and other clusters end here.
                    Ok(Err(e)) => {
                        tracing::info!("cluster port: refused a connection from {remote}: {e}")
                    }
                    Err(_) => tracing::info!(
                        "cluster port: {remote} did not finish the TLS handshake in time"
                    ),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// A lazily connected channel to `addr` over TLS with `config`, which the
/// caller may swap (renewed certificates) for later connections.
pub fn channel(
    addr: &str,
    config: watch::Receiver<Arc<ClientConfig>>,
) -> Result<Channel, tonic::transport::Error> {
    let (endpoint, connector) = endpoint(addr, config)?;
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// A channel to `addr` connected before it is returned: an error says the
/// manager could not be reached, and that no request was sent.
pub async fn connect(
    addr: &str,
    config: watch::Receiver<Arc<ClientConfig>>,
) -> Result<Channel, tonic::transport::Error> {
    let (endpoint, connector) = endpoint(addr, config)?;
    endpoint.connect_with_connector(connector).await
}

fn endpoint(
    addr: &str,
    config: watch::Receiver<Arc<ClientConfig>>,
) -> Result<(Endpoint, TlsConnector), tonic::transport::Error> {
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_matches(['[', ']'])
        .to_string();
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    let connector = TlsConnector {
        target: Arc::from(addr),
        host: Arc::from(host),
        config,
    };
    Ok((endpoint, connector))
}

/// Opens each of a channel's connections: TCP to `target`, then TLS with
/// the client configuration of the moment.
#[derive(Clone)]
struct TlsConnector {
    target: Arc<str>,
    host: Arc<str>,
    config: watch::Receiver<Arc<ClientConfig>>,
}

type Connecting = Pin<
    Box<
        dyn std::future::Future<
                Output = std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>,
            > + Send,
    >,
>;

impl tower::Service<tonic::transport::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::transport::Uri) -> Connecting {
        let config = self.config.borrow().clone();
        let target = self.target.clone();
        let host = self.host.clone();
        Box::pin(async move {
            let name = ServerName::try_from(host.to_string()).map_err(std::io::Error::other)?;
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&*target))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connecting to {target} timed out"),
                    )
                })??;
            let _ = tcp.set_nodelay(true);
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}
