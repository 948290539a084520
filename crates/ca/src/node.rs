//! Node certificates: the node's own key pair and CSR, and the CA signing
//! them with the identity the CA decides (CN node ID, OU role, O cluster ID).

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use serde::{Deserialize, Serialize};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::identity::{parse_identity, Identity, IdentityError, Role};
use crate::root::{random_serial, CaError, RootCa, CERT_BACKDATE};

/// Docker's `--cert-expiry` default: 90 days.
pub const DEFAULT_CERT_EXPIRY: Duration = Duration::from_secs(90 * 24 * 60 * 60);

/// A node's certificate and private key, both PEM, as the node stores them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl NodeCert {
    /// Who this certificate names and until when: what a node reads at start
    /// to decide whether to renew, or to tell the user it must rejoin.
    pub fn identity(&self) -> Result<Identity, IdentityError> {
        let der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).map_err(|e| {
            IdentityError::Parse {
                reason: e.to_string(),
            }
        })?;
        parse_identity(&der)
    }
}

impl fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A key pair made on the node, so the private key never leaves it: the node
/// sends [`NodeKey::csr`] to a manager and keeps the key.
pub struct NodeKey {
    key: KeyPair,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeKey(<redacted>)")
    }
}

impl NodeKey {
    /// A fresh ECDSA P-256 key pair.
    pub fn generate() -> Result<NodeKey, CaError> {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        Ok(NodeKey { key })
    }

    /// The key of a stored [`NodeCert`] (to renew with the same key).
    pub fn from_pem(key_pem: &str) -> Result<NodeKey, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::InvalidKey {
            reason: e.to_string(),
        })?;
        Ok(NodeKey { key })
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A PEM certificate signing request. The CN is only a hint: the CA
    /// writes the identity it decides, whatever the request asks for.
    pub fn csr(&self, node_id: &str) -> Result<String, CaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(node_id, None, None);
        let request = params
            .serialize_request(&self.key)
            .map_err(|e| sign_error(node_id, e))?;
        request.pem().map_err(|e| sign_error(node_id, e))
    }

    /// This key together with the certificate the CA signed for it.
    pub fn with_cert(&self, cert_pem: String) -> NodeCert {
        NodeCert {
            cert_pem,
            key_pem: self.key_pem(),
        }
    }
}

impl RootCa {
    /// A key pair and certificate for a node, both made here: for the first
    /// manager at `swarm init`, whose key is born on the CA's own host.
    pub fn issue(
        &self,
        node_id: &str,
        role: Role,
        cluster_id: &str,
        expiry: Duration,
    ) -> Result<NodeCert, CaError> {
        let now = SystemTime::now();
        self.issue_valid_between(node_id, role, cluster_id, now - CERT_BACKDATE, now + expiry)
    }

    /// [`RootCa::issue`] with an explicit validity window, for tests (an
    /// already expired certificate) and for tools that must pin the dates.
    pub fn issue_valid_between(
        &self,
        node_id: &str,
        role: Role,
        cluster_id: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<NodeCert, CaError> {
        let key = NodeKey::generate()?;
        let params = node_params(node_id, role, cluster_id, not_before, not_after)?;
        let cert = params
            .signed_by(&key.key, self.issuer()?)
            .map_err(|e| sign_error(node_id, e))?;
        Ok(key.with_cert(cert.pem() + &self.intermediates))
    }

    /// Signs a node's CSR. Only the public key is taken from the request: the
    /// node ID, role and cluster come from the caller (the manager's decision
    /// after checking the join token), so a node cannot promote itself.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        node_id: &str,
        role: Role,
        cluster_id: &str,
        expiry: Duration,
    ) -> Result<String, CaError> {
        let issuer = self.issuer()?;
        let request = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            CaError::InvalidCsr {
                node_id: node_id.to_string(),
                reason: e.to_string(),
            }
        })?;
        // Every node key in the swarm is P-256: refusing others keeps every
        // peer able to verify every other. rcgen names the algorithm after
        // the CSR's signature, so also check the key is a 65-byte
        // uncompressed P-256 point (a P-384 key signed with SHA-256 is not).
        let raw = request.public_key.der_bytes();
        let p256_point = raw.len() == 65 && raw[0] == 0x04;
        if request.public_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 || !p256_point {
            return Err(CaError::InvalidCsr {
                node_id: node_id.to_string(),
                reason: "the key is not ECDSA P-256".to_string(),
            });
        }
        let now = SystemTime::now();
        let params = node_params(node_id, role, cluster_id, now - CERT_BACKDATE, now + expiry)?;
        let cert = params
            .signed_by(&request.public_key, issuer)
            .map_err(|e| sign_error(node_id, e))?;
        Ok(cert.pem() + &self.intermediates)
    }
}

/// The certificate SwarmKit gives a node: identity in the subject, the role
/// and node ID as DNS SANs, usable as TLS server and client.
fn node_params(
    node_id: &str,
    role: Role,
    cluster_id: &str,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(node_id, Some(role), Some(cluster_id));
    params.subject_alt_names = vec![dns_name(node_id, role.ou())?, dns_name(node_id, node_id)?];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    params.serial_number = Some(random_serial());
    // Lets verifiers find the issuing key among several roots (rotation).
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn subject(node_id: &str, role: Option<Role>, cluster_id: Option<&str>) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, node_id);
    if let Some(role) = role {
        name.push(DnType::OrganizationalUnitName, role.ou());
    }
    if let Some(cluster_id) = cluster_id {
        name.push(DnType::OrganizationName, cluster_id);
    }
    name
}

fn dns_name(node_id: &str, name: &str) -> Result<SanType, CaError> {
    let ia5 = name.to_string().try_into().map_err(|_| CaError::Sign {
        node_id: node_id.to_string(),
        reason: format!("{name:?} is not a valid DNS name"),
    })?;
    Ok(SanType::DnsName(ia5))
}

fn sign_error(node_id: &str, e: rcgen::Error) -> CaError {
    CaError::Sign {
        node_id: node_id.to_string(),
        reason: e.to_string(),
    }
}

/// The raw public key in a PEM certificate, to check it matches a key.
#[cfg(test)]
fn cert_public_key(cert_pem: &str) -> Vec<u8> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.public_key().subject_public_key.data.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn issued_certificate_carries_swarmkits_identity_and_usages() {
        let ca = RootCa::generate().unwrap();
        let node = ca
            .issue("node1", Role::Manager, "cluster9", DEFAULT_CERT_EXPIRY)
            .unwrap();
        let der = der(&node.cert_pem);
        let (_, cert) = parse_x509_certificate(&der).unwrap();

        let id = parse_identity(&der).unwrap();
        assert_eq!(
            (id.node_id.as_str(), id.role, id.cluster_id.as_str()),
            ("node1", Role::Manager, "cluster9")
        );
        assert_eq!(id.validity(), DEFAULT_CERT_EXPIRY + CERT_BACKDATE);

        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["DNSName(swarm-manager)", "DNSName(node1)"]);

        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(!cert.is_ca());

        // Signed by the root.
        let (_, root) = parse_x509_certificate(ca.cert_der()).unwrap();
        cert.verify_signature(Some(root.public_key())).unwrap();
    }

    #[test]
    fn issued_key_matches_the_certificate() {
        let ca = RootCa::generate().unwrap();
        let node = ca
            .issue("w1", Role::Worker, "c", DEFAULT_CERT_EXPIRY)
            .unwrap();
        let key = NodeKey::from_pem(&node.key_pem).unwrap();
        assert_eq!(cert_public_key(&node.cert_pem), key.key.public_key_raw());
    }

    #[test]
    fn serials_differ_even_for_the_same_key() {
        let ca = RootCa::generate().unwrap();
        let key = NodeKey::generate().unwrap();
        let csr = key.csr("n").unwrap();
        let a = der(&ca
            .sign_csr(&csr, "n", Role::Worker, "c", DEFAULT_CERT_EXPIRY)
            .unwrap());
        let b = der(&ca
            .sign_csr(&csr, "n", Role::Worker, "c", DEFAULT_CERT_EXPIRY)
            .unwrap());
        let serial =
            |d: &CertificateDer<'_>| parse_x509_certificate(d).unwrap().1.raw_serial().to_vec();
        assert_ne!(serial(&a), serial(&b));
    }

    #[test]
    fn csr_flow_keeps_the_key_on_the_node_and_the_ca_decides_the_identity() {
        let ca = RootCa::generate().unwrap();
        let key = NodeKey::generate().unwrap();
        // The node asks to be "someone-else"; the CA signs it as w7, a worker.
        let csr = key.csr("someone-else").unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let cert_pem = ca
            .sign_csr(&csr, "w7", Role::Worker, "c1", DEFAULT_CERT_EXPIRY)
            .unwrap();
        let node = key.with_cert(cert_pem);

        let id = node.identity().unwrap();
        assert_eq!(
            (id.node_id.as_str(), id.role, id.cluster_id.as_str()),
            ("w7", Role::Worker, "c1")
        );
        assert_eq!(cert_public_key(&node.cert_pem), key.key.public_key_raw());
    }

    #[test]
    fn a_tampered_csr_is_refused() {
        let ca = RootCa::generate().unwrap();
        let csr = NodeKey::generate().unwrap().csr("n").unwrap();
        let mut tampered = csr.clone().into_bytes();
        // Flip a character in the base64 body, well inside the signed part.
        let i = 80;
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let err = ca
            .sign_csr(&tampered, "n", Role::Worker, "c", DEFAULT_CERT_EXPIRY)
            .unwrap_err();
        assert!(
            matches!(err, CaError::InvalidCsr { ref node_id, .. } if node_id == "n"),
            "{err}"
        );
        let err = ca
            .sign_csr("junk", "n", Role::Worker, "c", DEFAULT_CERT_EXPIRY)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid certificate signing request for node n"),
            "{err}"
        );
    }

    #[test]
    fn a_csr_for_a_key_other_than_p256_is_refused() {
        let ca = RootCa::generate().unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let err = ca
            .sign_csr(&csr, "n", Role::Worker, "c", DEFAULT_CERT_EXPIRY)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid certificate signing request for node n: the key is not ECDSA P-256"
        );
    }

    #[test]
    fn a_worker_copy_of_the_ca_cannot_sign() {
        let ca = RootCa::generate().unwrap();
        let public = RootCa::from_material(&ca.public_material()).unwrap();
        let csr = NodeKey::generate().unwrap().csr("n").unwrap();
        assert!(matches!(
            public.sign_csr(&csr, "n", Role::Worker, "c", DEFAULT_CERT_EXPIRY),
            Err(CaError::NoSigningKey)
        ));
        assert!(matches!(
            public.issue("n", Role::Worker, "c", DEFAULT_CERT_EXPIRY),
            Err(CaError::NoSigningKey)
        ));
    }

    #[test]
    fn node_cert_survives_serde_and_hides_its_key_from_debug() {
        let ca = RootCa::generate().unwrap();
        let node = ca
            .issue("n", Role::Worker, "c", DEFAULT_CERT_EXPIRY)
            .unwrap();
        let back: NodeCert = serde_json::from_str(&serde_json::to_string(&node).unwrap()).unwrap();
        assert_eq!(back, node);
        assert!(!format!("{node:?}").contains("PRIVATE KEY"));
    }
}
