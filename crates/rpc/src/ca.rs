//! The CA over the network: the root certificate for anyone (checked by
//! the joiner against its token's digest), joining with a token, and
//! renewal for members. Plus the joining node's side of it.

use std::sync::Arc;

use flotilla_ca::{JoinToken, NodeCert, NodeKey, Role};
use flotilla_store::Store;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::auth::caller;
use crate::messages::{JoinReply, JoinRequest, RenewReply, RenewRequest, RootCaReply};
use crate::pb;
use crate::pb::ca_client::CaClient;
use crate::{from_json, to_json, transport};

pub struct CaService {
    store: Store,
}

impl CaService {
    pub fn new(store: Store) -> pb::ca_server::CaServer<CaService> {
        pb::ca_server::CaServer::new(CaService { store })
            .max_decoding_message_size(crate::MAX_MESSAGE)
            .max_encoding_message_size(crate::MAX_MESSAGE)
    }
}

fn status(e: flotilla_manager::Error) -> Status {
    crate::error::manager_status(&e)
}

/// Why a join or a renewal failed: refused by the manager (typed, as it
/// said it: a bad token, a removed node), or not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("the manager refused: {0}")]
    Refused(flotilla_manager::Error),
    #[error("{0}")]
    Failed(String),
}

/// The manager's typed refusal, or the status's message.
fn refused(s: &Status) -> CaError {
    match crate::error::typed(s) {
        Some(e) => CaError::Refused(e),
        None => CaError::Failed(s.message().to_string()),
    }
}

impl From<String> for CaError {
    fn from(e: String) -> Self {
        CaError::Failed(e)
    }
}

#[tonic::async_trait]
impl pb::ca_server::Ca for CaService {
    async fn root_ca(&self, _req: Request<pb::Json>) -> Result<Response<pb::Json>, Status> {
        let cert_pem = self
            .store
            .read(flotilla_manager::ca::trust_root)
            .map_err(status)?;
        to_json(&RootCaReply { cert_pem }).map(Response::new)
    }

    async fn join(&self, req: Request<pb::Json>) -> Result<Response<pb::Json>, Status> {
        let remote = req
            .extensions()
            .get::<transport::PeerCerts>()
            .and_then(|p| p.remote);
        let j: JoinRequest = from_json(req.get_ref())?;
        let joined =
            flotilla_manager::ca::join(&self.store, &j.token, &j.csr_pem, j.description, &j.addr)
                .await
                .map_err(|e| {
                    tracing::info!("refused a join from {remote:?}: {e}");
                    status(e)
                })?;
        tracing::info!(
            "node {} joined as a {} from {}",
            joined.node_id,
            joined.role,
            j.addr
        );
        let reply = JoinReply {
            node_id: joined.node_id,
            manager: joined.role == Role::Manager,
            cluster_id: joined.cluster_id,
            cert_pem: joined.cert_pem,
            managers: joined.managers,
        };
        to_json(&reply).map(Response::new)
    }

    async fn renew(&self, req: Request<pb::Json>) -> Result<Response<pb::Json>, Status> {
        let who = caller(&req, &self.store, &[Role::Manager, Role::Worker])?;
        let r: RenewRequest = from_json(req.get_ref())?;
        let cert_pem = flotilla_manager::ca::renew(&self.store, &who.node_id, &r.csr_pem)
            .await
            .map_err(status)?;
        to_json(&RenewReply { cert_pem }).map(Response::new)
    }
}

/// What a node gets by joining.
pub struct Membership {
    pub root_ca_pem: String,
    pub cert: NodeCert,
    pub reply: JoinReply,
}

/// Joins the swarm at `remote` with `token`: fetches the root CA without
/// sending anything secret, checks it against the token's digest, then
/// sends the token and a CSR over TLS verified against that CA.
pub async fn join(
    remote: &str,
    token: &str,
    addr: &str,
    description: flotilla_store::models::NodeDescription,
) -> Result<Membership, CaError> {
    let parsed = JoinToken::parse(token).map_err(|e| e.to_string())?;
    let root_ca_pem = fetch_root_ca(remote).await?;
    let der = pem_to_der(&root_ca_pem)?;
    flotilla_ca::verify_ca(&der, &parsed).map_err(|e| e.to_string())?;

    let tls = flotilla_ca::client_config(&root_ca_pem, None).map_err(|e| e.to_string())?;
    let (_tx, rx) = watch::channel(tls);
    let channel = transport::channel(remote, rx).map_err(|e| e.to_string())?;
    let key = NodeKey::generate().map_err(|e| e.to_string())?;
    let csr_pem = key.csr("joining").map_err(|e| e.to_string())?;
    let req = JoinRequest {
        token: token.to_string(),
        csr_pem,
        description,
        addr: addr.to_string(),
    };
    let resp = CaClient::new(channel)
        .join(to_json(&req).map_err(|s| s.message().to_string())?)
        .await
        .map_err(|s| refused(&s))?;
    let reply: JoinReply = from_json(resp.get_ref()).map_err(|s| s.message().to_string())?;
    let cert = key.with_cert(reply.cert_pem.clone());
    Ok(Membership {
        root_ca_pem,
        cert,
        reply,
    })
}

/// The root CA as the remote manager presents it. The connection is not
/// verified (there is nothing to verify it against yet) and carries nothing
/// secret; the caller checks the answer against its token.
async fn fetch_root_ca(remote: &str) -> Result<String, String> {
    let tls = bootstrap_client_config()?;
    let (_tx, rx) = watch::channel(tls);
    let channel = transport::channel(remote, rx).map_err(|e| e.to_string())?;
    let resp = CaClient::new(channel)
        .root_ca(to_json(&()).map_err(|s| s.message().to_string())?)
        .await
        .map_err(|s| format!("cannot reach a manager at {remote}: {}", s.message()))?;
    let reply: RootCaReply = from_json(resp.get_ref()).map_err(|s| s.message().to_string())?;
    Ok(reply.cert_pem)
}

pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| format!("bad certificate PEM: {e}"))
}

/// The swarm's root certificate, from a manager over a connection already
/// trusted (a root rotation: the caller checks its digest).
pub async fn trust_root(channel: tonic::transport::Channel) -> Result<String, CaError> {
    let resp = CaClient::new(channel)
        .root_ca(to_json(&()).map_err(|s| s.message().to_string())?)
        .await
        .map_err(|s| refused(&s))?;
    let reply: RootCaReply = from_json(resp.get_ref()).map_err(|s| s.message().to_string())?;
    Ok(reply.cert_pem)
}

/// Renews this node's certificate with a fresh key, over its current one.
pub async fn renew(channel: tonic::transport::Channel) -> Result<NodeCert, CaError> {
    let key = NodeKey::generate().map_err(|e| e.to_string())?;
    let csr_pem = key.csr("renewal").map_err(|e| e.to_string())?;
    let resp = CaClient::new(channel)
        .renew(to_json(&RenewRequest { csr_pem }).map_err(|s| s.message().to_string())?)
        .await
        .map_err(|s| refused(&s))?;
    let reply: RenewReply = from_json(resp.get_ref()).map_err(|s| s.message().to_string())?;
    Ok(key.with_cert(reply.cert_pem))
}

/// TLS that accepts whatever certificate the server shows, for the one
/// call that fetches the root CA: its answer is checked against the join
/// token's digest, and nothing secret is sent on it.
fn bootstrap_client_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyServer(provider.clone()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
