//! The cluster's root CA: creating it, storing it (PEM in the Raft store), and
//! its digest (the fingerprint a join token pins).

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

/// Common name of every Flotilla root CA, as SwarmKit names its own.
pub const ROOT_CA_CN: &str = "swarm-ca";

/// The root lives 20 years (SwarmKit's `RootCAExpiration`): rotating a root
/// means re-issuing every node's certificate, so it should almost never happen.
pub const ROOT_CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 60 * 60);

/// Certificates start this long before they are made, so a peer whose clock is
/// a little behind the CA's does not see them as "not yet valid" (SwarmKit's
/// `CertBackdate`).
pub const CERT_BACKDATE: Duration = Duration::from_secs(60 * 60);

/// Width of the base-36 digest in a join token: 36^50 > 2^256, so every
/// SHA-256 fits.
pub const DIGEST_LEN: usize = 50;

/// What the Raft store keeps about the root CA. Managers hold the key; the
/// copy sent to workers has `key_pem: None`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaMaterial {
    pub cert_pem: String,
    pub key_pem: Option<String>,
}

impl fmt::Debug for CaMaterial {
    // The key is the whole cluster's trust: never let it reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaMaterial")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &self.key_pem.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why the root CA could not be made, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot generate the root CA: {0}")]
    Generate(#[source] rcgen::Error),
    #[error("invalid root CA certificate: {reason}")]
    InvalidCert { reason: String },
    #[error("invalid root CA key: {reason}")]
    InvalidKey { reason: String },
    #[error("the root CA key does not belong to the root CA certificate")]
    KeyMismatch,
    /// SwarmKit's words for a new root that expires within a year.
    #[error("CA certificate expires too soon")]
    ExpiresTooSoon,
    #[error("this node holds the root CA certificate only, not its key: only a manager can sign certificates")]
    NoSigningKey,
    #[error("invalid certificate signing request for node {node_id}: {reason}")]
    InvalidCsr { node_id: String, reason: String },
    #[error("cannot sign a certificate for node {node_id}: {reason}")]
    Sign { node_id: String, reason: String },
}

/// The cluster's root certificate authority.
pub struct RootCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: Option<String>,
    /// Present on managers only: what signs node certificates.
    issuer: Option<Issuer<'static, KeyPair>>,
    /// PEM sent after every certificate this root signs: the cross-signed
    /// copy of this root while a rotation moves to it (see `rotation`).
    pub(crate) intermediates: String,
}

impl fmt::Debug for RootCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCa")
            .field("digest", &self.digest())
            .field("can_sign", &self.can_sign())
            .finish()
    }
}

impl RootCa {
    /// A new root CA: ECDSA P-256, self-signed, CN `swarm-ca`, valid 20 years.
    pub fn generate() -> Result<RootCa, CaError> {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let params = root_params(SystemTime::now());
        let cert = params.self_signed(&key).map_err(CaError::Generate)?;
        let material = CaMaterial {
            cert_pem: cert.pem(),
            key_pem: Some(key.serialize_pem()),
        };
        RootCa::from_material(&material)
    }

    /// Loads a root CA from the store. With a key, checks the key matches the
    /// certificate, so a corrupted store cannot silently issue unverifiable
    /// certificates.
    pub fn from_material(material: &CaMaterial) -> Result<RootCa, CaError> {
        let cert_der =
            CertificateDer::from_pem_slice(material.cert_pem.as_bytes()).map_err(|e| {
                CaError::InvalidCert {
                    reason: format!("not a PEM certificate: {e}"),
                }
            })?;
        let public_key = ca_public_key(&cert_der)?;
        let (key_pem, issuer) = match &material.key_pem {
            None => (None, None),
            Some(key_pem) => {
                let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::InvalidKey {
                    reason: e.to_string(),
                })?;
                if key.public_key_raw() != public_key.as_slice() {
                    return Err(CaError::KeyMismatch);
                }
                let issuer =
                    Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| CaError::InvalidCert {
                        reason: e.to_string(),
                    })?;
                (Some(key_pem.clone()), Some(issuer))
            }
        };
        Ok(RootCa {
            cert_pem: material.cert_pem.clone(),
            cert_der,
            key_pem,
            issuer,
            intermediates: String::new(),
        })
    }

    /// Certificate and key, for the managers' copy in the store.
    pub fn material(&self) -> CaMaterial {
        CaMaterial {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }

    /// The certificate only: what a worker (or a joining node) gets.
    pub fn public_material(&self) -> CaMaterial {
        CaMaterial {
            cert_pem: self.cert_pem.clone(),
            key_pem: None,
        }
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Whether this copy holds the key (a manager's) and can sign.
    pub fn can_sign(&self) -> bool {
        self.issuer.is_some()
    }

    /// The root certificate's SHA-256 in base 36, 50 characters: the
    /// `<digest>` part of `SWMTKN-1-<digest>-<secret>`.
    pub fn digest(&self) -> String {
        digest_of_der(&self.cert_der)
    }

    pub(crate) fn issuer(&self) -> Result<&Issuer<'static, KeyPair>, CaError> {
        self.issuer.as_ref().ok_or(CaError::NoSigningKey)
    }
}

/// Parameters of a root CA certificate made at `now`.
fn root_params(now: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, ROOT_CA_CN);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = (now - CERT_BACKDATE).into();
    params.not_after = (now + ROOT_CA_VALIDITY).into();
    params.serial_number = Some(random_serial());
    params
}

/// The raw public key of a CA certificate, after checking it is one.
fn ca_public_key(cert_der: &CertificateDer<'_>) -> Result<Vec<u8>, CaError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| CaError::InvalidCert {
            reason: e.to_string(),
        })?;
    if !cert.is_ca() {
        return Err(CaError::InvalidCert {
            reason: format!("{} is not a CA certificate", cert.subject()),
        });
    }
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// A random positive serial number. rcgen's default derives the serial from
/// the public key, which would repeat when a node renews with the same key.
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // keep it positive
    bytes[0] |= 0x01; // and 16 bytes long, never shortened by a leading zero
    SerialNumber::from_slice(&bytes)
}

/// SHA-256 of a certificate's DER, base 36, zero-padded to 50 characters.
///
/// SwarmKit hashes the PEM bundle instead; the DER is the certificate itself,
/// so the digest does not change with line endings or PEM wrapping. Flotilla
/// does not join SwarmKit clusters, so nothing needs the PEM hash.
pub fn digest_of_der(cert_der: &[u8]) -> String {
    let sha = ring::digest::digest(&ring::digest::SHA256, cert_der);
    base36::encode(sha.as_ref(), DIGEST_LEN)
}

/// Big-endian unsigned integers to and from lowercase base 36, as Go's
/// `big.Int.Text(36)` writes them (SwarmKit's token format).
pub(crate) mod base36 {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

    /// `bytes` as a base-36 number, left-padded with '0' to `width`.
    pub(crate) fn encode(bytes: &[u8], width: usize) -> String {
        let mut number = bytes.to_vec();
        let mut digits = Vec::new();
        // Schoolbook long division by 36 until the number is zero.
        while number.iter().any(|&b| b != 0) {
            let mut remainder: u32 = 0;
            for byte in number.iter_mut() {
                let acc = (remainder << 8) | u32::from(*byte);
                *byte = (acc / 36) as u8;
                remainder = acc % 36;
            }
            digits.push(ALPHABET[remainder as usize]);
        }
        while digits.len() < width {
            digits.push(b'0');
        }
        digits.reverse();
        digits.into_iter().map(char::from).collect()
    }

    /// The value of a lowercase base-36 digit.
    pub(crate) fn digit(c: char) -> Option<u8> {
        match c {
            '0'..='9' => Some(c as u8 - b'0'),
            'a'..='z' => Some(c as u8 - b'a' + 10),
            _ => None,
        }
    }

    /// `text` as a big-endian number of exactly `len` bytes; `None` when a
    /// character is not a base-36 digit or the value does not fit.
    pub(crate) fn decode(text: &str, len: usize) -> Option<Vec<u8>> {
        let mut number = vec![0u8; len];
        for c in text.chars() {
            let mut carry = u32::from(digit(c)?);
            for byte in number.iter_mut().rev() {
                let acc = u32::from(*byte) * 36 + carry;
                *byte = (acc & 0xff) as u8;
                carry = acc >> 8;
            }
            if carry != 0 {
                return None;
            }
        }
        Some(number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_matches_known_values() {
        assert_eq!(base36::encode(&[0], 3), "000");
        assert_eq!(base36::encode(&[35], 1), "z");
        assert_eq!(base36::encode(&[36], 1), "10");
        assert_eq!(base36::encode(&[0x01, 0x00], 0), "74"); // 256 = 7*36 + 4
        assert_eq!(base36::decode("74", 2), Some(vec![1, 0]));
        assert_eq!(base36::decode("zz", 1), None, "1295 does not fit one byte");
        assert_eq!(base36::decode("A", 1), None, "upper case is not a digit");
    }

    #[test]
    fn base36_round_trips_a_full_sha256() {
        let max = [0xffu8; 32];
        let text = base36::encode(&max, DIGEST_LEN);
        assert_eq!(text.len(), DIGEST_LEN);
        assert_eq!(base36::decode(&text, 32), Some(max.to_vec()));
    }

    #[test]
    fn generated_root_is_a_p256_ca_named_swarm_ca() {
        let ca = RootCa::generate().unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        assert!(cert.is_ca());
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!(cn, "swarm-ca");
        assert_eq!(
            cert.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        let expected = (ROOT_CA_VALIDITY + CERT_BACKDATE).as_secs() as i64;
        assert!((lifetime - expected).abs() <= 1, "lifetime {lifetime}s");
    }

    #[test]
    fn material_round_trips_through_serde_and_keeps_the_digest() {
        let ca = RootCa::generate().unwrap();
        let json = serde_json::to_string(&ca.material()).unwrap();
        let back: CaMaterial = serde_json::from_str(&json).unwrap();
        let loaded = RootCa::from_material(&back).unwrap();
        assert!(loaded.can_sign());
        assert_eq!(loaded.digest(), ca.digest());
        assert_eq!(ca.digest().len(), DIGEST_LEN);
    }

    #[test]
    fn public_material_cannot_sign() {
        let ca = RootCa::generate().unwrap();
        let public = RootCa::from_material(&ca.public_material()).unwrap();
        assert!(!public.can_sign());
        assert!(matches!(public.issuer(), Err(CaError::NoSigningKey)));
        assert_eq!(public.digest(), ca.digest());
    }

    #[test]
    fn a_key_from_another_ca_is_refused() {
        let a = RootCa::generate().unwrap();
        let b = RootCa::generate().unwrap();
        let mixed = CaMaterial {
            cert_pem: a.cert_pem().to_string(),
            key_pem: b.material().key_pem,
        };
        assert!(matches!(
            RootCa::from_material(&mixed),
            Err(CaError::KeyMismatch)
        ));
    }

    #[test]
    fn garbage_material_is_refused_with_a_reason() {
        let bad = CaMaterial {
            cert_pem: "hello".into(),
            key_pem: None,
        };
        let err = RootCa::from_material(&bad).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid root CA certificate"),
            "{err}"
        );
    }

    #[test]
    fn debug_never_prints_the_key() {
        let ca = RootCa::generate().unwrap();
        let text = format!("{:?} {:?}", ca, ca.material());
        assert!(!text.contains("PRIVATE KEY"), "{text}");
    }
}
