//! Test helpers shared by the command modules.

use std::sync::{Arc, Mutex};

use crate::client::Client;

/// One request as the fake daemon read it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Header names in lower case, values as sent.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the fake daemon answers a request with: an HTTP status and a body.
pub type Handler = Arc<dyn Fn(&Seen) -> (u16, String) + Send + Sync>;

/// A daemon on a unix socket (or, with [`FakeDaemon::start_tls`], on TCP
/// with TLS) that answers each request with the first canned answer whose
/// path prefix matches (404 otherwise), or with a handler's answer, and
/// records every request.
pub struct FakeDaemon {
    host: String,
    path: Option<std::path::PathBuf>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn canned(answers: Vec<(&'static str, &'static str)>) -> Handler {
    Arc::new(move |seen: &Seen| {
        answers
            .iter()
            .find(|(prefix, _)| seen.path.starts_with(prefix))
            .map(|(_, answer)| (200, answer.to_string()))
            .unwrap_or((404, r#"{"message":"not found"}"#.to_string()))
    })
}

impl FakeDaemon {
    pub fn start(answers: Vec<(&'static str, &'static str)>) -> FakeDaemon {
        FakeDaemon::start_with(canned(answers))
    }

    /// A fake daemon whose answers come from `handler`.
    pub fn start_with(handler: Handler) -> FakeDaemon {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "flotilla-cli-test-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                serve(stream, &handler, &record).await;
            }
        });
        FakeDaemon {
            host: format!("unix://{}", path.display()),
            path: Some(path),
            seen,
        }
    }

    /// A fake daemon on 127.0.0.1 that speaks TLS with `config`; a failed
    /// handshake is recorded as nothing. Its host is "tcp://127.0.0.1:PORT".
    pub async fn start_tls(
        answers: Vec<(&'static str, &'static str)>,
        config: Arc<rustls::ServerConfig>,
    ) -> FakeDaemon {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let handler = canned(answers);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if let Ok(stream) = acceptor.accept(stream).await {
                    serve(stream, &handler, &record).await;
                }
            }
        });
        FakeDaemon {
            host: format!("tcp://127.0.0.1:{port}"),
            path: None,
            seen,
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn client(&self) -> Client {
        Client::new(&self.host).unwrap()
    }

    /// Every request as "METHOD PATH" and its body.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.seen()
            .into_iter()
            .map(|s| (format!("{} {}", s.method, s.path), s.body))
            .collect()
    }

    /// Every request in full.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads one request from `stream`, records it and writes the handler's answer.
async fn serve<S>(mut stream: S, handler: &Handler, record: &Mutex<Vec<Seen>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let (head, body) = loop {
        let n = stream.read(&mut buf).await.unwrap_or(0);
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length || n == 0 {
                break (head.to_string(), body.to_string());
            }
        } else if n == 0 {
            return;
        }
    };
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut words = request_line.split(' ');
    let method = words.next().unwrap_or_default().to_string();
    let path = words.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let seen = Seen {
        method,
        path,
        headers,
        body,
    };
    let (status, answer) = handler(&seen);
    record.lock().unwrap().push(seen);
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A test CA with a server certificate (for localhost and 127.0.0.1), a
/// client certificate, and a second CA that signed neither.
pub struct TestPki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
    pub other_ca_pem: String,
}

/// Where [`TestPki::write`] put the files.
pub struct PkiFiles {
    pub ca: std::path::PathBuf,
    pub client_cert: std::path::PathBuf,
    pub client_key: std::path::PathBuf,
    pub server_key: std::path::PathBuf,
    pub other_ca: std::path::PathBuf,
}

impl TestPki {
    pub fn new() -> TestPki {
        TestPki::with_server_names(&["localhost", "127.0.0.1"])
    }

    /// A PKI whose server certificate names only `names` (IP addresses
    /// become IP SANs).
    pub fn with_server_names(names: &[&str]) -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };
        let ca_params = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params
        };
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params("test ca").self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params("test ca"), ca_key);
        let other_key = KeyPair::generate().unwrap();
        let other = ca_params("other ca").self_signed(&other_key).unwrap();

        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut server = CertificateParams::new(names).unwrap();
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().unwrap();
        let server_cert = server.signed_by(&server_key, &issuer).unwrap();

        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client.distinguished_name.push(DnType::CommonName, "client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().unwrap();
        let client_cert = client.signed_by(&client_key, &issuer).unwrap();
        TestPki {
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
            other_ca_pem: other.pem(),
        }
    }

    pub fn write(&self, dir: &std::path::Path) -> PkiFiles {
        let put = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        PkiFiles {
            ca: put("ca.pem", &self.ca_pem),
            client_cert: put("cert.pem", &self.client_cert_pem),
            client_key: put("key.pem", &self.client_key_pem),
            server_key: put("server-key.pem", &self.server_key_pem),
            other_ca: put("other-ca.pem", &self.other_ca_pem),
        }
    }

    /// A rustls server config with the server certificate; with
    /// `require_client`, clients must present a certificate from the CA.
    pub fn server_config(&self, require_client: bool) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = vec![CertificateDer::from_pem_slice(self.server_cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap())
                .unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(builder.with_single_cert(chain, key).unwrap())
    }
}

/// Percent-decodes a request path.
pub fn unquote(path: &str) -> String {
    let mut out = Vec::new();
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            if let Ok(b) = u8::from_str_radix(&path[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}
