//! Root CA rotation, as SwarmKit does it. While a swarm moves from an old
//! root to a new one, the CA signs with the new root's key and sends each
//! certificate with a copy of the new root **cross-signed** by the old one:
//! a node that still trusts only the old root verifies the chain leaf →
//! cross-signed → old root, one that already trusts the new root verifies
//! leaf → new root. So no connection breaks at any point, and once every
//! node holds a certificate from the new key, every node can switch its
//! trust to the new root alone.
//!
//! A node reports which key signed its certificate ([`IssuerInfo`], the
//! `TLSInfo` of `docker node inspect`), which is how the leader knows when
//! every node has moved.

use std::time::SystemTime;

use rcgen::string::{Ia5String, PrintableString};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, KeyPair,
    KeyUsagePurpose, SubjectPublicKeyInfo,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

use crate::root::{random_serial, CaError, CaMaterial, RootCa};

/// Who signed a certificate: the issuing certificate's raw subject and its
/// SubjectPublicKeyInfo, both DER, as SwarmKit records them (Docker shows
/// them base64-encoded in `TLSInfo.CertIssuerSubject` / `CertIssuerPublicKey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerInfo {
    pub subject: Vec<u8>,
    pub public_key: Vec<u8>,
}

impl IssuerInfo {
    /// Subject and public key in base64, as Go writes `[]byte` in JSON
    /// (`TLSInfo.CertIssuerSubject`, `TLSInfo.CertIssuerPublicKey`).
    pub fn encoded(&self) -> (String, String) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        (b64.encode(&self.subject), b64.encode(&self.public_key))
    }
}

/// SwarmKit's floor for a root given with `swarm ca --ca-cert`: a root
/// that expires within a year would soon need rotating again.
pub const MIN_ROOT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

impl RootCa {
    /// What the certificates this root signs name as their issuer.
    pub fn issuer_info(&self) -> IssuerInfo {
        // The certificate parsed when the root was loaded.
        parse(self.cert_der())
            .map(|c| info_of(&c))
            .unwrap_or_else(|_| IssuerInfo {
                subject: Vec::new(),
                public_key: Vec::new(),
            })
    }

    /// When this root's certificate expires.
    pub fn not_after(&self) -> SystemTime {
        parse(self.cert_der())
            .map(|c| c.validity().not_after.to_datetime().into())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// `new`'s certificate signed by this root's key: same subject, same
    /// public key, same validity, so that a node trusting only this root
    /// accepts what `new` signs.
    pub fn cross_sign(&self, new: &RootCa) -> Result<String, CaError> {
        let issuer = self.issuer()?;
        let cert = parse(new.cert_der())?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name_of(cert.subject())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = cert.validity().not_before.to_datetime();
        params.not_after = cert.validity().not_after.to_datetime();
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let key = SubjectPublicKeyInfo::from_der(cert.public_key().raw).map_err(|e| {
            CaError::InvalidCert {
                reason: format!("the new root's public key: {e}"),
            }
        })?;
        let signed = params.signed_by(&key, issuer).map_err(|e| CaError::Sign {
            node_id: "(cross-signed root)".to_string(),
            reason: e.to_string(),
        })?;
        Ok(signed.pem())
    }

    /// The root that signs while a rotation moves to it: its certificates
    /// go out followed by `cross_signed_pem` (see the module note).
    pub fn rotating(material: &CaMaterial, cross_signed_pem: &str) -> Result<RootCa, CaError> {
        let mut root = RootCa::from_material(material)?;
        root.intermediates = cross_signed_pem.trim_end().to_string() + "\n";
        Ok(root)
    }

    /// A new root with its own key, from PEM given by the user (`swarm ca
    /// --rotate --ca-cert --ca-key`), checked as SwarmKit checks it.
    pub fn from_user(cert_pem: &str, key_pem: &str) -> Result<RootCa, CaError> {
        let certs: Vec<_> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| CaError::InvalidCert {
                reason: format!("not a PEM certificate: {e}"),
            })?;
        if certs.len() != 1 {
            return Err(CaError::InvalidCert {
                reason: "the desired CA certificate cannot contain multiple certificates"
                    .to_string(),
            });
        }
        let cert_pem = cert_pem.trim().to_string() + "\n";
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::InvalidKey {
            reason: e.to_string(),
        })?;
        let root = RootCa::from_material(&CaMaterial {
            cert_pem,
            key_pem: Some(key.serialize_pem()),
        })?;
        if root.not_after() < SystemTime::now() + MIN_ROOT_VALIDITY {
            return Err(CaError::ExpiresTooSoon);
        }
        Ok(root)
    }
}

/// Which certificate signed the first certificate of `chain_pem` (a node's
/// own chain): the next one in the chain if its key did, else `root_pem`
/// if its key did. `None` when neither did or nothing parses.
pub fn issuer_of(chain_pem: &str, root_pem: &str) -> Option<IssuerInfo> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .ok()?;
    let leaf_der = chain.first()?;
    let leaf = parse(leaf_der).ok()?;
    let root = CertificateDer::from_pem_slice(root_pem.as_bytes()).ok();
    chain
        .get(1)
        .into_iter()
        .chain(root.as_ref())
        .filter_map(|der| parse(der).ok())
        .find(|candidate| leaf.verify_signature(Some(candidate.public_key())).is_ok())
        .map(|c| info_of(&c))
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, CaError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| CaError::InvalidCert {
            reason: e.to_string(),
        })
}

fn info_of(cert: &X509Certificate<'_>) -> IssuerInfo {
    IssuerInfo {
        subject: cert.subject().as_raw().to_vec(),
        public_key: cert.public_key().raw.to_vec(),
    }
}

/// The subject of a certificate as rcgen names it, string types kept, so
/// that the cross-signed copy has exactly the subject the new root's
/// certificates name as their issuer (rcgen re-encodes it the same way).
fn name_of(name: &X509Name<'_>) -> Result<DistinguishedName, CaError> {
    let unsupported = |why: &str| CaError::InvalidCert {
        reason: format!("the new root's subject: {why}"),
    };
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err(unsupported("one attribute per name component is supported"));
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| unsupported("an attribute type that does not parse"))?
            .collect();
        let data = attr.attr_value().data;
        let text =
            std::str::from_utf8(data).map_err(|_| unsupported("a value that is not text"))?;
        let value = match attr.attr_value().header.tag() {
            Tag::PrintableString => DnValue::PrintableString(
                PrintableString::try_from(text)
                    .map_err(|_| unsupported("a printable string that is not"))?,
            ),
            Tag::Ia5String => DnValue::Ia5String(
                Ia5String::try_from(text).map_err(|_| unsupported("an IA5 string that is not"))?,
            ),
            Tag::Utf8String => DnValue::Utf8String(text.to_string()),
            other => {
                return Err(unsupported(&format!(
                    "string type {other:?} is not supported"
                )))
            }
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;
    use crate::node::DEFAULT_CERT_EXPIRY;
    use crate::tls::{client_config, server_config};

    fn rotating_pair() -> (RootCa, RootCa, String) {
        let old = RootCa::generate().unwrap();
        let new = RootCa::generate().unwrap();
        let cross = old.cross_sign(&new).unwrap();
        let signer = RootCa::rotating(&new.material(), &cross).unwrap();
        (old, signer, cross)
    }

    #[test]
    fn a_certificate_signed_during_rotation_names_the_new_key_as_issuer() {
        let (old, signer, _) = rotating_pair();
        let cert = signer
            .issue("n1", Role::Worker, "c", DEFAULT_CERT_EXPIRY)
            .unwrap();
        assert_eq!(cert.cert_pem.matches("BEGIN CERTIFICATE").count(), 2);
        let issuer = issuer_of(&cert.cert_pem, old.cert_pem()).unwrap();
        assert_eq!(issuer, signer.issuer_info());
        assert_ne!(issuer.public_key, old.issuer_info().public_key);
        // A certificate of the old root names the old root.
        let before = old
            .issue("n1", Role::Worker, "c", DEFAULT_CERT_EXPIRY)
            .unwrap();
        assert_eq!(
            issuer_of(&before.cert_pem, old.cert_pem()),
            Some(old.issuer_info())
        );
        assert_eq!(issuer_of(&before.cert_pem, signer.cert_pem()), None);
    }

    /// The point of the cross-signed certificate: mutual TLS between a node
    /// that trusts only the old root and one that already trusts only the
    /// new root, each holding a certificate from the new key.
    #[tokio::test]
    async fn old_and_new_trust_both_accept_certificates_signed_during_rotation() {
        let (old, signer, _) = rotating_pair();
        let manager = signer
            .issue("m1", Role::Manager, "c", DEFAULT_CERT_EXPIRY)
            .unwrap();
        let worker = signer
            .issue("w1", Role::Worker, "c", DEFAULT_CERT_EXPIRY)
            .unwrap();
        let old_manager = old
            .issue("m0", Role::Manager, "c", DEFAULT_CERT_EXPIRY)
            .unwrap();
        for (server_root, client_root) in [
            (old.cert_pem(), signer.cert_pem()),
            (signer.cert_pem(), old.cert_pem()),
            (old.cert_pem(), old.cert_pem()),
        ] {
            handshake(
                server_config(server_root, &manager).unwrap(),
                client_config(client_root, Some(&worker)).unwrap(),
            )
            .await
            .unwrap();
        }
        // A node already on the new root alone refuses a certificate that
        // only the old root signed: why rotation waits for every node.
        let refused = handshake(
            server_config(signer.cert_pem(), &manager).unwrap(),
            client_config(old.cert_pem(), Some(&old_manager)).unwrap(),
        )
        .await;
        assert!(refused.is_err());
    }

    async fn handshake(
        server: std::sync::Arc<rustls::ServerConfig>,
        client: std::sync::Arc<rustls::ClientConfig>,
    ) -> std::io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let serve = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = tokio_rustls::TlsAcceptor::from(server).accept(tcp).await?;
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await?;
            tls.write_all(&b).await?;
            tls.flush().await?;
            Ok::<_, std::io::Error>(())
        });
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("swarm-manager").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await?;
        tls.write_all(b"x").await?;
        tls.flush().await?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await?;
        serve.await.map_err(std::io::Error::other)??;
        Ok(())
    }

    #[test]
    fn a_user_root_must_have_its_key_and_a_year_of_life() {
        let good = RootCa::generate().unwrap();
        let material = good.material();
        let loaded =
            RootCa::from_user(&material.cert_pem, material.key_pem.as_ref().unwrap()).unwrap();
        assert_eq!(loaded.digest(), good.digest());
        let other = RootCa::generate().unwrap().material().key_pem.unwrap();
        assert!(matches!(
            RootCa::from_user(&material.cert_pem, &other),
            Err(CaError::KeyMismatch)
        ));
        let two = format!("{}{}", material.cert_pem, material.cert_pem);
        let err = RootCa::from_user(&two, material.key_pem.as_ref().unwrap()).unwrap_err();
        assert!(err.to_string().contains("multiple certificates"), "{err}");
    }
}
