//! rustls configs for the cluster's mutual TLS, and the per-RPC role check.
//!
//! Every config is built with the ring provider explicitly: a library must
//! not install a process-wide default, and a second provider (aws-lc-rs) in
//! the binary would make rustls panic when it has to pick one.
//!
//! Nodes are reached by IP address, so the client does not check a host name:
//! it checks the server's certificate chains to the pinned root CA, is a
//! manager's (OU swarm-manager) and, once the client has its own certificate,
//! belongs to the same cluster.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};

use crate::identity::{parse_identity, Identity, IdentityError, Role};
use crate::node::NodeCert;

/// Why a TLS config could not be built from the given PEM material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid root CA certificate: {reason}")]
    RootCa { reason: String },
    #[error("invalid node certificate: {reason}")]
    NodeCert { reason: String },
    #[error("invalid node key: {reason}")]
    NodeKey { reason: String },
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

/// Why a peer is not allowed in: from the TLS verifiers (wrapped in a rustls
/// error) and from [`authorize`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the peer presented no client certificate")]
    NoCertificate,
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("certificate of node {node_id} belongs to cluster {found}, not {expected}")]
    WrongCluster {
        node_id: String,
        found: String,
        expected: String,
    },
    #[error("certificate of node {node_id} was not issued by this swarm's root CA (is it from another swarm?)")]
    UnknownCa { node_id: String },
    #[error("the server is node {node_id}, a {role}: only managers serve the cluster port")]
    ServerNotManager { node_id: String, role: Role },
    #[error("permission denied: node {node_id} is a {role}; this call needs a {}", roles(.required))]
    PermissionDenied {
        node_id: String,
        role: Role,
        required: Vec<Role>,
    },
}

fn roles(required: &[Role]) -> String {
    let names: Vec<String> = required.iter().map(Role::to_string).collect();
    names.join(" or ")
}

/// Server side of the cluster port: presents this node's certificate and
/// requires a client certificate from the same root CA and cluster.
pub fn server_config(
    root_ca_pem: &str,
    node_cert: &NodeCert,
) -> Result<Arc<ServerConfig>, TlsError> {
    build_server_config(root_ca_pem, node_cert, false)
}

/// Like [`server_config`], but a client may come without a certificate: the
/// join handshake, where a new node asks for its first certificate with a
/// token. SwarmKit serves that on the same port (Go's
/// `VerifyClientCertIfGiven`); every RPC but the join one must then call
/// [`authorize`], which refuses a peer without a certificate.
pub fn server_config_allowing_join(
    root_ca_pem: &str,
    node_cert: &NodeCert,
) -> Result<Arc<ServerConfig>, TlsError> {
    build_server_config(root_ca_pem, node_cert, true)
}

fn build_server_config(
    root_ca_pem: &str,
    node_cert: &NodeCert,
    allow_anonymous: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let roots = Arc::new(root_store(root_ca_pem)?);
    let (chain, key, identity) = load_node_cert(node_cert)?;
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    if allow_anonymous {
        builder = builder.allow_unauthenticated();
    }
    let webpki = builder
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let verifier = Arc::new(ClusterClientVerifier {
        inner: webpki,
        cluster_id: identity.cluster_id,
    });
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::NodeKey {
            reason: e.to_string(),
        })?;
    Ok(Arc::new(config))
}

/// Client side: verifies the server is a manager of the pinned root CA (see
/// the module note on host names). With `node_cert`, presents it and also
/// requires the server to be in the same cluster; without (joining), presents
/// nothing.
pub fn client_config(
    root_ca_pem: &str,
    node_cert: Option<&NodeCert>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let roots = Arc::new(root_store(root_ca_pem)?);
    let loaded = node_cert.map(load_node_cert).transpose()?;
    let verifier = Arc::new(ManagerServerVerifier {
        roots,
        provider: provider.clone(),
        cluster_id: loaded.as_ref().map(|(_, _, id)| id.cluster_id.clone()),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous() // only to plug in our own verifier, which still verifies the chain
        .with_custom_certificate_verifier(verifier);
    let config = match loaded {
        Some((chain, key, _)) => {
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::NodeKey {
                    reason: e.to_string(),
                })?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// For each RPC: who the caller is, refused unless its certificate is from
/// `cluster_id` and its role is one of `required`. `peer_certs` is the chain
/// the TLS layer verified (tonic's `Request::peer_certs`), leaf first.
pub fn authorize(
    peer_certs: &[CertificateDer<'_>],
    required: &[Role],
    cluster_id: &str,
) -> Result<Identity, AuthError> {
    let leaf = peer_certs.first().ok_or(AuthError::NoCertificate)?;
    let identity = parse_identity(leaf)?;
    check_cluster(&identity, cluster_id)?;
    if !required.contains(&identity.role) {
        return Err(AuthError::PermissionDenied {
            node_id: identity.node_id,
            role: identity.role,
            required: required.to_vec(),
        });
    }
    Ok(identity)
}

fn check_cluster(identity: &Identity, cluster_id: &str) -> Result<(), AuthError> {
    if identity.cluster_id != cluster_id {
        return Err(AuthError::WrongCluster {
            node_id: identity.node_id.clone(),
            found: identity.cluster_id.clone(),
            expected: cluster_id.to_string(),
        });
    }
    Ok(())
}

/// The only provider Flotilla uses (see the module note).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn root_store(root_ca_pem: &str) -> Result<RootCertStore, TlsError> {
    let der =
        CertificateDer::from_pem_slice(root_ca_pem.as_bytes()).map_err(|e| TlsError::RootCa {
            reason: e.to_string(),
        })?;
    let mut roots = RootCertStore::empty();
    roots.add(der).map_err(|e| TlsError::RootCa {
        reason: e.to_string(),
    })?;
    Ok(roots)
}

type LoadedCert = (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    Identity,
);

fn load_node_cert(node_cert: &NodeCert) -> Result<LoadedCert, TlsError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(node_cert.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::NodeCert {
                reason: e.to_string(),
            })?;
    let leaf = chain.first().ok_or_else(|| TlsError::NodeCert {
        reason: "no certificate in the PEM".to_string(),
    })?;
    let identity = parse_identity(leaf).map_err(|e| TlsError::NodeCert {
        reason: e.to_string(),
    })?;
    let key = PrivateKeyDer::from_pem_slice(node_cert.key_pem.as_bytes()).map_err(|e| {
        TlsError::NodeKey {
            reason: e.to_string(),
        }
    })?;
    Ok((chain, key, identity))
}

/// Carries our own error text through rustls, so the failed handshake's
/// error (and its log line) says why the peer was refused. `Error::Other`,
/// not `InvalidCertificate(Other)`: rustls prints the latter with `Debug`.
fn refused(err: AuthError) -> rustls::Error {
    rustls::Error::Other(OtherError(Arc::new(err)))
}

/// Rewords webpki's "unknown issuer" and "bad signature" (all root CAs are
/// named `swarm-ca`, so another swarm's certificate usually fails on the
/// signature) into what they mean here. Other errors, like an expired
/// certificate, keep rustls's own clear text and TLS alert.
fn chain_error(end_entity: &CertificateDer<'_>, err: rustls::Error) -> rustls::Error {
    #[allow(deprecated)] // BadSignature is deprecated in favour of a context variant
    let foreign = matches!(
        err,
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature
        )
    );
    if !foreign {
        return err;
    }
    // Read the name only for the message: nothing here trusts it.
    let node_id = parse_identity(end_entity)
        .map(|id| id.node_id)
        .unwrap_or_else(|_| "(unreadable)".to_string());
    refused(AuthError::UnknownCa { node_id })
}

/// Client-certificate check: webpki's chain check, then the cluster ID.
#[derive(Debug)]
struct ClusterClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    cluster_id: String,
}

impl ClientCertVerifier for ClusterClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| chain_error(end_entity, e))?;
        let identity = parse_identity(end_entity).map_err(|e| refused(e.into()))?;
        check_cluster(&identity, &self.cluster_id).map_err(refused)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Server-certificate check: the chain to the root (webpki, with validity
/// dates and the serverAuth usage), not the name; then the manager role and,
/// when known, the cluster.
#[derive(Debug)]
struct ManagerServerVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    cluster_id: Option<String>,
}

impl ServerCertVerifier for ManagerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )
        .map_err(|e| chain_error(end_entity, e))?;
        let identity = parse_identity(end_entity).map_err(|e| refused(e.into()))?;
        if let Some(cluster_id) = &self.cluster_id {
            check_cluster(&identity, cluster_id).map_err(refused)?;
        }
        if identity.role != Role::Manager {
            return Err(refused(AuthError::ServerNotManager {
                node_id: identity.node_id,
                role: identity.role,
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
