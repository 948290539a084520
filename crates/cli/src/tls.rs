//! TLS to the daemon, with the docker CLI's flags and their meaning
//! (docker/cli 28: cli/flags/options.go, cli/command/cli.go,
//! cli/context/docker/load.go).
//!
//! - [`TlsArgs`]: `--tls`, `--tlsverify`, `--tlscacert`, `--tlscert`,
//!   `--tlskey`, read with `DOCKER_TLS`, `DOCKER_TLS_VERIFY`,
//!   `DOCKER_CERT_PATH` and `DOCKER_CONFIG` into a [`TlsMode`] by
//!   [`TlsArgs::resolve`]. dockerd reads the same flag names, so the daemon
//!   side can take the same struct.
//! - [`client_config`]: the files of a [`TlsMode`] read and turned into a
//!   rustls client config (ring provider), with docker's error texts.
//! - [`describe_error`]: a rustls error in the words Go's crypto/tls uses.

use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    ServerName, UnixTime,
};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// The docker CLI's TLS flags. Each is global, so it may come before or
/// after the subcommand. A `None` is a flag not given: what it means then
/// depends on the environment, which [`TlsArgs::resolve`] reads.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
#[command(next_display_order = 1000)]
pub struct TlsArgs {
    /// Use TLS; implied by --tlsverify
    #[arg(
        long,
        global = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "bool",
        value_parser = parse_go_bool
    )]
    pub tls: Option<bool>,
    /// Use TLS and verify the remote
    #[arg(
        long,
        global = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "bool",
        value_parser = parse_go_bool
    )]
    pub tlsverify: Option<bool>,
    /// Trust certs signed only by this CA (default "$DOCKER_CERT_PATH/ca.pem", else ~/.docker/ca.pem)
    #[arg(long, global = true, value_name = "string")]
    pub tlscacert: Option<PathBuf>,
    /// Path to TLS certificate file (default "$DOCKER_CERT_PATH/cert.pem", else ~/.docker/cert.pem)
    #[arg(long, global = true, value_name = "string")]
    pub tlscert: Option<PathBuf>,
    /// Path to TLS key file (default "$DOCKER_CERT_PATH/key.pem", else ~/.docker/key.pem)
    #[arg(long, global = true, value_name = "string")]
    pub tlskey: Option<PathBuf>,
}

/// What [`TlsArgs::resolve`] decided: plain TCP, TLS without checking the
/// peer, or TLS that verifies the peer against a CA. The paths are the
/// files to use; a `None` is a file not to use at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS: neither `--tls` nor `--tlsverify` (nor `DOCKER_TLS` or
    /// `DOCKER_TLS_VERIFY`).
    None,
    /// TLS that does not verify the peer (`--tls`, or `--tlsverify=false`).
    /// The CA file is still read (docker fails when it is missing) but not
    /// used to verify; a certificate and key, when both are present, are
    /// presented to the peer.
    Tls {
        /// `--tlscacert` or the default `ca.pem`; `None` only for `--tlscacert ""`.
        ca: Option<PathBuf>,
        /// `--tlscert`, or the default `cert.pem` when that file exists.
        cert: Option<PathBuf>,
        /// `--tlskey`, or the default `key.pem` when that file exists.
        key: Option<PathBuf>,
    },
    /// TLS that verifies the peer's certificate against `ca`
    /// (`--tlsverify`, or `DOCKER_TLS_VERIFY` set to anything non-empty).
    Verify {
        /// `--tlscacert` or the default `ca.pem`; `None` only for
        /// `--tlscacert ""` (the system's roots are trusted then).
        ca: Option<PathBuf>,
        /// `--tlscert`, or the default `cert.pem` when that file exists.
        cert: Option<PathBuf>,
        /// `--tlskey`, or the default `key.pem` when that file exists.
        key: Option<PathBuf>,
    },
}

impl TlsArgs {
    /// Resolves the flags with the process environment, as the docker CLI
    /// does (cli/flags/options.go, `SetDefaultOptions`):
    ///
    /// - verification is `--tlsverify`'s value if given, else whether
    ///   `DOCKER_TLS_VERIFY` is non-empty (any value, even "0", turns it on);
    /// - TLS is on with verification, or when `--tlsverify` is given at all
    ///   (even `--tlsverify=false`), or with `--tls` (default: whether
    ///   `DOCKER_TLS` is non-empty);
    /// - the default files are `ca.pem`, `cert.pem` and `key.pem` in
    ///   `$DOCKER_CERT_PATH`, else `$DOCKER_CONFIG`, else `~/.docker`;
    /// - a default certificate or key that does not exist is left out (a
    ///   client without a certificate); a default CA is kept, so a missing
    ///   `ca.pem` is an error when the files are read, with `--tls` too;
    /// - a path given as "" is no file.
    pub fn resolve(&self) -> TlsMode {
        self.resolve_with(
            &|name| std::env::var(name).ok(),
            &|path| !matches!(std::fs::metadata(path), Err(e) if e.kind() == ErrorKind::NotFound),
        )
    }

    /// [`TlsArgs::resolve`] with the environment and the file-existence
    /// test given, for tests.
    pub fn resolve_with(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        exists: &dyn Fn(&Path) -> bool,
    ) -> TlsMode {
        let set = |name: &str| env(name).is_some_and(|v| !v.is_empty());
        let verify = self.tlsverify.unwrap_or_else(|| set("DOCKER_TLS_VERIFY"));
        let tls =
            self.tls.unwrap_or_else(|| set("DOCKER_TLS")) || self.tlsverify.is_some() || verify;
        if !tls {
            return TlsMode::None;
        }
        let dir = cert_dir(env);
        let given = |path: &Option<PathBuf>, default: &str| match path {
            Some(path) => Some(path.clone()),
            None => Some(dir.join(default)),
        };
        let non_empty = |path: Option<PathBuf>| path.filter(|p| !p.as_os_str().is_empty());
        let optional = |path: &Option<PathBuf>, default: &str| match path {
            Some(path) => Some(path.clone()),
            None => Some(dir.join(default)).filter(|p| exists(p)),
        };
        let ca = non_empty(given(&self.tlscacert, "ca.pem"));
        let cert = non_empty(optional(&self.tlscert, "cert.pem"));
        let key = non_empty(optional(&self.tlskey, "key.pem"));
        if verify {
            TlsMode::Verify { ca, cert, key }
        } else {
            TlsMode::Tls { ca, cert, key }
        }
    }
}

/// docker's default certificate directory: `$DOCKER_CERT_PATH`, else the
/// config directory (`$DOCKER_CONFIG`, else `~/.docker`).
fn cert_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(dir) = env("DOCKER_CERT_PATH").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = env("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    crate::home::home_dir().join(".docker")
}

/// Go's strconv.ParseBool, which pflag uses for `--flag=value`.
pub fn parse_go_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!(
            "strconv.ParseBool: parsing \"{text}\": invalid syntax"
        )),
    }
}

/// The files of a [`TlsMode`] as read (docker's `TLSDataFromFiles`).
struct TlsData {
    ca: Option<Vec<u8>>,
    cert: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
}

/// Reads a file, failing with Go's `os.ReadFile` wording ("open PATH: no
/// such file or directory").
fn read_file(path: &Path) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)
        .map_err(|e| format!("open {}: {}", path.display(), go_errno(&e)))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(|e| format!("read {}: {}", path.display(), go_errno(&e)))?;
    Ok(data)
}

/// An OS error as Go's syscall.Errno prints it: strerror, lower-cased first letter.
pub(crate) fn go_errno(err: &std::io::Error) -> String {
    let text = match err.raw_os_error() {
        Some(code) => {
            let full = std::io::Error::from_raw_os_error(code).to_string();
            full.strip_suffix(&format!(" (os error {code})"))
                .unwrap_or(&full)
                .to_string()
        }
        None => err.to_string(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// The rustls client config for `mode` when talking to `host` (as given to
/// `-H`), or `None` for plain HTTP. Errors read as the docker CLI's
/// "Failed to initialize: ..." reasons, e.g. "unable to resolve docker
/// endpoint: open /p/ca.pem: no such file or directory" or "failed to
/// retrieve context tls info: ca.pem seems invalid".
///
/// As docker does, the files are read whatever the address, but only a
/// TCP address gets TLS: a unix socket stays plain.
pub fn client_config(
    mode: &TlsMode,
    host: &str,
) -> std::result::Result<Option<Arc<rustls::ClientConfig>>, String> {
    let (ca, cert, key, verify) = match mode {
        TlsMode::None => return Ok(None),
        TlsMode::Tls { ca, cert, key } => (ca, cert, key, false),
        TlsMode::Verify { ca, cert, key } => (ca, cert, key, true),
    };
    let read = |path: &Option<PathBuf>| -> std::result::Result<Option<Vec<u8>>, String> {
        path.as_deref()
            .map(read_file)
            .transpose()
            .map_err(|e| format!("unable to resolve docker endpoint: {e}"))
    };
    let data = TlsData {
        ca: read(ca)?,
        cert: read(cert)?,
        key: read(key)?,
    };
    if host.starts_with("unix://") || host.starts_with('/') {
        return Ok(None);
    }
    let no_data = data.ca.is_none() && data.cert.is_none() && data.key.is_none();
    if no_data && verify {
        // docker: no TLS data and verification on is no TLS config at all.
        return Ok(None);
    }
    build_config(&data, verify).map(|config| Some(Arc::new(config)))
}

/// docker's Endpoint.tlsConfig on the files read.
fn build_config(data: &TlsData, verify: bool) -> std::result::Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &data.ca {
        if !add_pem_certs(&mut roots, ca) {
            return Err("failed to retrieve context tls info: ca.pem seems invalid".to_string());
        }
    } else if verify {
        // No CA file: Go falls back to the system's roots.
        for bundle in system_bundles() {
            if let Ok(pem) = std::fs::read(&bundle) {
                if add_pem_certs(&mut roots, &pem) {
                    break;
                }
            }
        }
    }
    let client_cert = match (&data.cert, &data.key) {
        (Some(cert), Some(key)) => Some(key_pair(cert, key, &provider)?),
        _ => None,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("failed to retrieve context tls info: {e}"))?;
    let builder = if verify {
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| format!("failed to retrieve context tls info: {e}"))?;
        builder.with_webpki_verifier(verifier)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(
                provider.signature_verification_algorithms,
            )))
    };
    Ok(match client_cert {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
            format!(
                "failed to retrieve context tls info: {}",
                key_pair_error(&e)
            )
        })?,
        None => builder.with_no_client_auth(),
    })
}

/// Go's x509.CertPool.AppendCertsFromPEM: every CERTIFICATE block that
/// parses is added; true when at least one was.
fn add_pem_certs(roots: &mut rustls::RootCertStore, pem: &[u8]) -> bool {
    let mut added = false;
    for block in pem_blocks(pem) {
        if block.label == "CERTIFICATE" && block.headers.is_empty() {
            added |= roots.add(CertificateDer::from(block.data)).is_ok();
        }
    }
    added
}

/// Go's SystemCertPool on Linux: $SSL_CERT_FILE, else the first bundle found.
fn system_bundles() -> Vec<PathBuf> {
    if let Some(file) = std::env::var_os("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
        return vec![PathBuf::from(file)];
    }
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/pki/tls/cacert.pem",
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

type KeyPair = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// docker's key checks, then Go's tls.X509KeyPair, with their errors.
fn key_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> std::result::Result<KeyPair, String> {
    let key_blocks = pem_blocks(key_pem);
    let Some(first) = key_blocks.first() else {
        return Err("no valid private key found".to_string());
    };
    if first.headers.iter().any(|(name, _)| name == "DEK-Info") {
        return Err("private key is encrypted - support for encrypted private keys has been removed, see https://docs.docker.com/go/deprecated/".to_string());
    }
    let fail = |reason: String| format!("failed to retrieve context tls info: {reason}");

    let mut chain = Vec::new();
    let mut skipped = Vec::new();
    for block in pem_blocks(cert_pem) {
        if block.label == "CERTIFICATE" {
            chain.push(CertificateDer::from(block.data));
        } else {
            skipped.push(block.label);
        }
    }
    if chain.is_empty() {
        return Err(fail(if skipped.is_empty() {
            "tls: failed to find any PEM data in certificate input".to_string()
        } else if skipped.len() == 1 && skipped[0].ends_with("PRIVATE KEY") {
            "tls: failed to find certificate PEM data in certificate input, but did find a private key; PEM inputs may have been switched".to_string()
        } else {
            format!(
                "tls: failed to find \"CERTIFICATE\" PEM block in certificate input after skipping PEM blocks of the following types: [{}]",
                skipped.join(" ")
            )
        }));
    }

    let mut skipped = Vec::new();
    let mut key_block = None;
    for block in key_blocks {
        if block.label == "PRIVATE KEY" || block.label.ends_with(" PRIVATE KEY") {
            key_block = Some(block);
            break;
        }
        skipped.push(block.label);
    }
    let Some(key_block) = key_block else {
        return Err(fail(if skipped.len() == 1 && skipped[0] == "CERTIFICATE" {
            "tls: found a certificate rather than a key in the PEM for the private key".to_string()
        } else {
            format!(
                    "tls: failed to find PEM block with type ending in \"PRIVATE KEY\" in key input after skipping PEM blocks of the following types: [{}]",
                    skipped.join(" ")
                )
        }));
    };
    // Go tries PKCS #1, PKCS #8 and SEC 1 whatever the label says.
    let data = key_block.data;
    let candidates: [PrivateKeyDer<'static>; 3] = [
        PrivatePkcs1KeyDer::from(data.clone()).into(),
        PrivatePkcs8KeyDer::from(data.clone()).into(),
        PrivateSec1KeyDer::from(data).into(),
    ];
    let key = candidates
        .into_iter()
        .find(|key| {
            provider
                .key_provider
                .load_private_key(key.clone_key())
                .is_ok()
        })
        .ok_or_else(|| fail("tls: failed to parse private key".to_string()))?;
    let certified = rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), provider)
        .map_err(|e| fail(key_pair_error(&e)))?;
    drop(certified);
    Ok((chain, key))
}

/// Go's words for a certificate and key that do not go together.
fn key_pair_error(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InconsistentKeys(_) => {
            "tls: private key does not match public key".to_string()
        }
        rustls::Error::InvalidCertificate(_) => "x509: malformed certificate".to_string(),
        other => format!("tls: {other}"),
    }
}

/// One PEM block as Go's encoding/pem reads it.
pub(crate) struct PemBlock {
    pub label: String,
    pub headers: Vec<(String, String)>,
    pub data: Vec<u8>,
}

/// Every well-formed PEM block in `input`, in order (text around and
/// between blocks is skipped, as pem.Decode does).
pub(crate) fn pem_blocks(input: &[u8]) -> Vec<PemBlock> {
    use base64::Engine;
    let text = String::from_utf8_lossy(input);
    let mut blocks = Vec::new();
    let mut rest: &str = &text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let Some(label_end) = after.find("-----") else {
            break;
        };
        let label = &after[..label_end];
        let body_start = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        if label.contains('\n') {
            rest = after;
            continue;
        }
        let Some(end) = body_start.find(&end_marker) else {
            rest = after;
            continue;
        };
        let body = &body_start[..end];
        rest = &body_start[end + end_marker.len()..];
        let mut headers = Vec::new();
        let mut encoded = String::new();
        for line in body.lines() {
            match line.split_once(':') {
                Some((name, value)) if encoded.is_empty() => {
                    headers.push((name.trim().to_string(), value.trim().to_string()))
                }
                _ => encoded.extend(line.chars().filter(|c| !c.is_whitespace())),
            }
        }
        if let Ok(data) = base64::engine::general_purpose::STANDARD.decode(encoded.as_bytes()) {
            blocks.push(PemBlock {
                label: label.to_string(),
                headers,
                data,
            });
        }
    }
    blocks
}

/// `--tls` without verification: any certificate is accepted, but the
/// handshake signatures are still checked.
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The server name to verify for a `host:port` address: the host, an IP
/// address when it is one (which must then match an IP SAN).
pub fn server_name(addr: &str) -> std::result::Result<ServerName<'static>, String> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) && !host.is_empty() => host,
        _ => addr,
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string()).map_err(|_| format!("invalid server name {host:?}"))
}

/// A rustls error in the words Go's crypto/tls and crypto/x509 use, as the
/// docker CLI prints them after `error during connect: Get "https://…":`.
pub fn describe_error(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(cert) => {
            format!(
                "tls: failed to verify certificate: {}",
                describe_certificate_error(cert)
            )
        }
        rustls::Error::AlertReceived(alert) => format!("remote error: tls: {}", alert_text(*alert)),
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
        | rustls::Error::InvalidMessage(rustls::InvalidMessage::UnknownProtocolVersion) => {
            "tls: first record does not look like a TLS handshake".to_string()
        }
        rustls::Error::NoCertificatesPresented => {
            "tls: server didn't provide a certificate".to_string()
        }
        other => format!("tls: {}", lower_first(&other.to_string())),
    }
}

fn describe_certificate_error(err: &CertificateError) -> String {
    match err {
        // A CA of the same name that did not sign it: Go says unknown
        // authority too (adding "possibly because of" the signature error).
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            "x509: certificate signed by unknown authority".to_string()
        }
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            let host = match expected {
                ServerName::IpAddress(ip) => IpAddr::from(*ip).to_string(),
                other => other.to_str().to_string(),
            };
            hostname_error(&host, presented)
        }
        CertificateError::NotValidForName => {
            "x509: certificate is not valid for the requested name".to_string()
        }
        CertificateError::ExpiredContext { time, not_after } => format!(
            "x509: certificate has expired or is not yet valid: current time {} is after {}",
            rfc3339(time.as_secs(), true),
            rfc3339(not_after.as_secs(), false)
        ),
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "x509: certificate has expired or is not yet valid: current time {} is before {}",
            rfc3339(time.as_secs(), true),
            rfc3339(not_before.as_secs(), false)
        ),
        CertificateError::Expired | CertificateError::NotValidYet => {
            "x509: certificate has expired or is not yet valid".to_string()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "x509: certificate specifies an incompatible key usage".to_string()
        }
        CertificateError::BadEncoding => "x509: malformed certificate".to_string(),
        other => format!("x509: {}", lower_first(&format!("{other:?}"))),
    }
}

/// Go's x509.HostnameError text for `host` and the names a certificate
/// presents (DNS names and IP addresses together, as rustls gives them).
fn hostname_error(host: &str, presented: &[String]) -> String {
    let mut ips = Vec::new();
    let mut dns = Vec::new();
    for name in presented {
        // webpki writes them as `DnsName("a.example")` and `IpAddress(10.0.0.1)`.
        if let Some(name) = name
            .strip_prefix("DnsName(\"")
            .and_then(|n| n.strip_suffix("\")"))
        {
            dns.push(name.to_string());
        } else if let Some(ip) = name
            .strip_prefix("IpAddress(")
            .and_then(|n| n.strip_suffix(')'))
        {
            ips.push(
                ip.parse::<IpAddr>()
                    .map_or(ip.to_string(), |ip| ip.to_string()),
            );
        } else if let Ok(ip) = name.parse::<IpAddr>() {
            ips.push(ip.to_string());
        } else if !name.contains('(') {
            dns.push(name.clone());
        }
    }
    let valid = if host.parse::<IpAddr>().is_ok() {
        if ips.is_empty() {
            return format!(
                "x509: cannot validate certificate for {host} because it doesn't contain any IP SANs"
            );
        }
        ips.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        dns.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if valid.is_empty() {
        return format!("x509: certificate is not valid for any names, but wanted to match {host}");
    }
    format!("x509: certificate is valid for {valid}, not {host}")
}

/// Go's time.RFC3339: the local zone for "now", UTC for certificate times.
fn rfc3339(secs: u64, local: bool) -> String {
    let Some(utc) = chrono::DateTime::from_timestamp(secs as i64, 0) else {
        return secs.to_string();
    };
    if local {
        utc.with_timezone(&chrono::Local)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    } else {
        utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }
}

fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// crypto/tls's alert texts.
fn alert_text(alert: rustls::AlertDescription) -> String {
    use rustls::AlertDescription as A;
    match alert {
        A::CloseNotify => "close notify",
        A::UnexpectedMessage => "unexpected message",
        A::BadRecordMac => "bad record MAC",
        A::DecryptionFailed => "decryption failed",
        A::RecordOverflow => "record overflow",
        A::DecompressionFailure => "decompression failure",
        A::HandshakeFailure => "handshake failure",
        A::BadCertificate => "bad certificate",
        A::UnsupportedCertificate => "unsupported certificate",
        A::CertificateRevoked => "revoked certificate",
        A::CertificateExpired => "expired certificate",
        A::CertificateUnknown => "unknown certificate",
        A::IllegalParameter => "illegal parameter",
        A::UnknownCA => "unknown certificate authority",
        A::AccessDenied => "access denied",
        A::DecodeError => "error decoding message",
        A::DecryptError => "error decrypting message",
        A::ProtocolVersion => "protocol version not supported",
        A::InsufficientSecurity => "insufficient security level",
        A::InternalError => "internal error",
        A::InappropriateFallback => "inappropriate fallback",
        A::UserCanceled => "user canceled",
        A::NoRenegotiation => "no renegotiation",
        A::MissingExtension => "missing extension",
        A::UnsupportedExtension => "unsupported extension",
        A::UnrecognisedName => "unrecognized name",
        A::BadCertificateStatusResponse => "bad certificate status response",
        A::UnknownPSKIdentity => "unknown PSK identity",
        A::CertificateRequired => "certificate required",
        A::NoApplicationProtocol => "no application protocol",
        A::EncryptedClientHelloRequired => "encrypted client hello required",
        other => return format!("alert({})", u8::from(other)),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(args: &TlsArgs, env: &[(&str, &str)], existing: &[&str]) -> TlsMode {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let existing: Vec<PathBuf> = existing.iter().map(PathBuf::from).collect();
        args.resolve_with(&|name| env.get(name).cloned(), &|path| {
            existing.iter().any(|p| p == path)
        })
    }

    fn p(path: &str) -> Option<PathBuf> {
        Some(PathBuf::from(path))
    }

    const CERTS: &[(&str, &str)] = &[("DOCKER_CERT_PATH", "/certs")];

    #[test]
    fn no_flags_no_env_is_plain() {
        assert_eq!(resolve(&TlsArgs::default(), CERTS, &[]), TlsMode::None);
        let off = TlsArgs {
            tls: Some(false),
            ..Default::default()
        };
        assert_eq!(resolve(&off, &[("DOCKER_TLS", "1")], &[]), TlsMode::None);
    }

    #[test]
    fn tls_alone_does_not_verify_and_keeps_the_default_ca() {
        let args = TlsArgs {
            tls: Some(true),
            ..Default::default()
        };
        assert_eq!(
            resolve(&args, CERTS, &[]),
            TlsMode::Tls {
                ca: p("/certs/ca.pem"),
                cert: None,
                key: None
            }
        );
        // DOCKER_TLS turns it on like --tls.
        assert_eq!(
            resolve(&TlsArgs::default(), &[("DOCKER_TLS", "x"), CERTS[0]], &[]),
            TlsMode::Tls {
                ca: p("/certs/ca.pem"),
                cert: None,
                key: None
            }
        );
    }

    #[test]
    fn tlsverify_implies_tls_and_default_files_present_are_used() {
        let args = TlsArgs {
            tlsverify: Some(true),
            ..Default::default()
        };
        assert_eq!(
            resolve(&args, CERTS, &["/certs/cert.pem", "/certs/key.pem"]),
            TlsMode::Verify {
                ca: p("/certs/ca.pem"),
                cert: p("/certs/cert.pem"),
                key: p("/certs/key.pem")
            }
        );
        // --tlsverify=false is TLS without verification, even with DOCKER_TLS_VERIFY.
        let off = TlsArgs {
            tlsverify: Some(false),
            ..Default::default()
        };
        assert_eq!(
            resolve(&off, &[("DOCKER_TLS_VERIFY", "1"), CERTS[0]], &[]),
            TlsMode::Tls {
                ca: p("/certs/ca.pem"),
                cert: None,
                key: None
            }
        );
    }

    #[test]
    fn docker_tls_verify_any_non_empty_value_verifies() {
        for value in ["1", "0", "false"] {
            assert!(matches!(
                resolve(
                    &TlsArgs::default(),
                    &[("DOCKER_TLS_VERIFY", value), CERTS[0]],
                    &[]
                ),
                TlsMode::Verify { .. }
            ));
        }
        assert_eq!(
            resolve(
                &TlsArgs::default(),
                &[("DOCKER_TLS_VERIFY", ""), CERTS[0]],
                &[]
            ),
            TlsMode::None
        );
    }

    #[test]
    fn given_paths_are_kept_even_when_missing_and_empty_means_none() {
        let args = TlsArgs {
            tlsverify: Some(true),
            tlscacert: p("/x/ca"),
            tlscert: p("/x/missing-cert"),
            tlskey: Some(PathBuf::new()),
            ..Default::default()
        };
        assert_eq!(
            resolve(&args, CERTS, &[]),
            TlsMode::Verify {
                ca: p("/x/ca"),
                cert: p("/x/missing-cert"),
                key: None
            }
        );
    }

    #[test]
    fn cert_dir_falls_back_to_docker_config_then_home() {
        let args = TlsArgs {
            tls: Some(true),
            ..Default::default()
        };
        assert_eq!(
            resolve(&args, &[("DOCKER_CONFIG", "/cfg")], &[]),
            TlsMode::Tls {
                ca: p("/cfg/ca.pem"),
                cert: None,
                key: None
            }
        );
        let TlsMode::Tls { ca: Some(ca), .. } = resolve(&args, &[], &[]) else {
            panic!("expected TLS");
        };
        assert!(ca.ends_with(".docker/ca.pem"), "{ca:?}");
    }

    #[test]
    fn go_bools() {
        assert_eq!(parse_go_bool("1"), Ok(true));
        assert_eq!(parse_go_bool("True"), Ok(true));
        assert_eq!(parse_go_bool("f"), Ok(false));
        assert!(parse_go_bool("yes").is_err());
    }

    #[test]
    fn flags_parse_anywhere_with_go_bool_values() {
        use clap::Parser;
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            tls: TlsArgs,
            #[command(subcommand)]
            cmd: Sub,
        }
        #[derive(clap::Subcommand, Debug)]
        enum Sub {
            Ps,
        }
        let cli = Cli::try_parse_from(["x", "ps", "--tlsverify", "--tlscacert", "/a"]).unwrap();
        assert_eq!(cli.tls.tlsverify, Some(true));
        assert_eq!(cli.tls.tlscacert, p("/a"));
        let cli = Cli::try_parse_from(["x", "--tls=false", "--tlsverify=0", "ps"]).unwrap();
        assert_eq!(cli.tls.tls, Some(false));
        assert_eq!(cli.tls.tlsverify, Some(false));
    }

    #[test]
    fn missing_files_fail_like_docker() {
        let mode = TlsMode::Verify {
            ca: p("/nonexistent/ca.pem"),
            cert: None,
            key: None,
        };
        assert_eq!(
            client_config(&mode, "tcp://127.0.0.1:2376").unwrap_err(),
            "unable to resolve docker endpoint: open /nonexistent/ca.pem: no such file or directory"
        );
        // Read even for a unix socket, as docker does.
        assert!(client_config(&mode, "unix:///run/x.sock").is_err());
        assert!(client_config(&TlsMode::None, "tcp://h:1")
            .unwrap()
            .is_none());
    }

    #[test]
    fn bad_files_fail_like_docker() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "not pem\n").unwrap();
        let ca = TlsMode::Verify {
            ca: Some(junk.clone()),
            cert: None,
            key: None,
        };
        assert_eq!(
            client_config(&ca, "tcp://h:1").unwrap_err(),
            "failed to retrieve context tls info: ca.pem seems invalid"
        );
        // A socket takes no TLS, so the CA is read but not parsed.
        assert!(client_config(&ca, "unix:///x.sock").unwrap().is_none());

        let certs = crate::testutil::TestPki::new();
        let files = certs.write(dir.path());
        let with = |cert: &Path, key: &Path| TlsMode::Verify {
            ca: Some(files.ca.clone()),
            cert: Some(cert.to_path_buf()),
            key: Some(key.to_path_buf()),
        };
        assert_eq!(
            client_config(&with(&files.client_cert, &junk), "tcp://h:1").unwrap_err(),
            "no valid private key found"
        );
        assert_eq!(
            client_config(&with(&junk, &files.client_key), "tcp://h:1").unwrap_err(),
            "failed to retrieve context tls info: tls: failed to find any PEM data in certificate input"
        );
        assert_eq!(
            client_config(&with(&files.client_cert, &files.client_cert), "tcp://h:1").unwrap_err(),
            "failed to retrieve context tls info: tls: found a certificate rather than a key in the PEM for the private key"
        );
        assert_eq!(
            client_config(&with(&files.client_cert, &files.server_key), "tcp://h:1").unwrap_err(),
            "failed to retrieve context tls info: tls: private key does not match public key"
        );
        assert!(
            client_config(&with(&files.client_cert, &files.client_key), "tcp://h:1")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn server_names_from_addresses() {
        assert!(matches!(
            server_name("127.0.0.1:2376"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("[::1]:2376"),
            Ok(ServerName::IpAddress(_))
        ));
        assert_eq!(
            server_name("manager.example:2376").unwrap().to_str(),
            "manager.example"
        );
    }

    #[test]
    fn hostname_errors_read_as_go() {
        assert_eq!(
            hostname_error(
                "localhost",
                &[
                    "DnsName(\"a.example\")".into(),
                    "IpAddress(10.0.0.1)".into(),
                    "DnsName(\"b.example\")".into()
                ]
            ),
            "x509: certificate is valid for a.example, b.example, not localhost"
        );
        assert_eq!(
            hostname_error("127.0.0.1", &["other.example".into()]),
            "x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs"
        );
        assert_eq!(
            hostname_error("localhost", &["other.example".into(), "10.0.0.1".into()]),
            "x509: certificate is valid for other.example, not localhost"
        );
        assert_eq!(
            hostname_error(
                "127.0.0.1",
                &["a".into(), "10.0.0.1".into(), "10.0.0.2".into()]
            ),
            "x509: certificate is valid for 10.0.0.1, 10.0.0.2, not 127.0.0.1"
        );
        assert_eq!(
            describe_error(&rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            )),
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
        );
        assert_eq!(
            describe_error(&rustls::Error::AlertReceived(
                rustls::AlertDescription::CertificateRequired
            )),
            "remote error: tls: certificate required"
        );
    }

    use crate::client::Client;
    use crate::testutil::{FakeDaemon, TestPki};

    const SWARM: &str = r#"{"ID":"swarm1"}"#;

    /// A client for `daemon` with the TLS mode built from `files`.
    fn tls_client(daemon: &FakeDaemon, mode: &TlsMode) -> Client {
        let config = client_config(mode, daemon.host()).unwrap();
        assert!(config.is_some());
        Client::with_tls(daemon.host(), config).unwrap()
    }

    async fn get_swarm(client: &Client) -> Result<serde_json::Value, String> {
        client
            .get::<serde_json::Value>("/swarm")
            .await
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn verifies_the_daemon_against_the_ca() {
        let pki = TestPki::new();
        let dir = tempfile::tempdir().unwrap();
        let files = pki.write(dir.path());
        let daemon =
            FakeDaemon::start_tls(vec![("/v1.41/swarm", SWARM)], pki.server_config(false)).await;
        let verify = TlsMode::Verify {
            ca: Some(files.ca.clone()),
            cert: None,
            key: None,
        };
        let answer = get_swarm(&tls_client(&daemon, &verify)).await.unwrap();
        assert_eq!(answer["ID"], "swarm1");
        assert_eq!(daemon.requests()[0].0, "GET /v1.41/swarm");

        // Another CA: docker's wording, with the URL it asked for.
        let other = TlsMode::Verify {
            ca: Some(files.other_ca.clone()),
            cert: None,
            key: None,
        };
        let err = get_swarm(&tls_client(&daemon, &other)).await.unwrap_err();
        assert_eq!(
            err,
            format!(
                "error during connect: Get \"https://{}/v1.41/swarm\": tls: failed to verify certificate: x509: certificate signed by unknown authority",
                daemon.host().trim_start_matches("tcp://")
            )
        );

        // --tls without verification accepts it.
        let insecure = TlsMode::Tls {
            ca: Some(files.other_ca.clone()),
            cert: None,
            key: None,
        };
        assert!(get_swarm(&tls_client(&daemon, &insecure)).await.is_ok());
    }

    #[tokio::test]
    async fn an_ip_address_must_match_an_ip_san() {
        let pki = TestPki::with_server_names(&["localhost"]);
        let dir = tempfile::tempdir().unwrap();
        let files = pki.write(dir.path());
        let daemon =
            FakeDaemon::start_tls(vec![("/v1.41/swarm", SWARM)], pki.server_config(false)).await;
        let verify = TlsMode::Verify {
            ca: Some(files.ca.clone()),
            cert: None,
            key: None,
        };
        let err = get_swarm(&tls_client(&daemon, &verify)).await.unwrap_err();
        assert!(
            err.ends_with("tls: failed to verify certificate: x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs"),
            "{err}"
        );
        // By name it verifies.
        let by_name = daemon.host().replace("127.0.0.1", "localhost");
        let config = client_config(&verify, &by_name).unwrap();
        let client = Client::with_tls(&by_name, config).unwrap();
        assert!(get_swarm(&client).await.is_ok());

        // A name the certificate does not have.
        let pki = TestPki::with_server_names(&["other.example", "10.0.0.1"]);
        let files = pki.write(dir.path());
        let daemon =
            FakeDaemon::start_tls(vec![("/v1.41/swarm", SWARM)], pki.server_config(false)).await;
        let by_name = daemon.host().replace("127.0.0.1", "localhost");
        let verify = TlsMode::Verify {
            ca: Some(files.ca.clone()),
            cert: None,
            key: None,
        };
        let client = Client::with_tls(&by_name, client_config(&verify, &by_name).unwrap()).unwrap();
        let err = get_swarm(&client).await.unwrap_err();
        assert!(
            err.ends_with("x509: certificate is valid for other.example, not localhost"),
            "{err}"
        );
        let client = Client::with_tls(
            daemon.host(),
            client_config(&verify, daemon.host()).unwrap(),
        )
        .unwrap();
        let err = get_swarm(&client).await.unwrap_err();
        assert!(
            err.ends_with("x509: certificate is valid for 10.0.0.1, not 127.0.0.1"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn presents_the_client_certificate() {
        let pki = TestPki::new();
        let dir = tempfile::tempdir().unwrap();
        let files = pki.write(dir.path());
        let daemon =
            FakeDaemon::start_tls(vec![("/v1.41/swarm", SWARM)], pki.server_config(true)).await;
        let with_cert = TlsMode::Verify {
            ca: Some(files.ca.clone()),
            cert: Some(files.client_cert.clone()),
            key: Some(files.client_key.clone()),
        };
        assert!(get_swarm(&tls_client(&daemon, &with_cert)).await.is_ok());
        let without = TlsMode::Verify {
            ca: Some(files.ca.clone()),
            cert: None,
            key: None,
        };
        let err = get_swarm(&tls_client(&daemon, &without)).await.unwrap_err();
        assert!(
            err.starts_with("error during connect: Get \"https://127.0.0.1:"),
            "{err}"
        );
        assert!(
            err.ends_with(": remote error: tls: certificate required"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_plain_daemon_is_not_a_tls_one() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = format!("tcp://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                    .await;
            }
        });
        let pki = TestPki::new();
        let dir = tempfile::tempdir().unwrap();
        let files = pki.write(dir.path());
        let mode = TlsMode::Verify {
            ca: Some(files.ca.clone()),
            cert: None,
            key: None,
        };
        let client = Client::with_tls(&host, client_config(&mode, &host).unwrap()).unwrap();
        let err = get_swarm(&client).await.unwrap_err();
        assert!(
            err.ends_with("/v1.41/swarm\": tls: first record does not look like a TLS handshake"),
            "{err}"
        );
    }

    #[test]
    fn pem_blocks_read_labels_headers_and_data() {
        let pem = b"junk\n-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES,00\n\nAAEC\n-----END EC PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----\nAwQ=\n-----END CERTIFICATE-----\n";
        let blocks = pem_blocks(pem);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "EC PRIVATE KEY");
        assert_eq!(blocks[0].headers.len(), 2);
        assert_eq!(blocks[0].data, vec![0, 1, 2]);
        assert_eq!(blocks[1].label, "CERTIFICATE");
        assert_eq!(blocks[1].data, vec![3, 4]);
        assert!(pem_blocks(b"nothing").is_empty());
    }
}
