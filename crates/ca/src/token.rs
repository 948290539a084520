//! Join tokens: `SWMTKN-1-<root CA digest>-<secret>`. The digest lets a
//! joining node check it reached the right cluster before it sends anything
//! secret; the secret (one per role) lets the manager admit it.

use std::fmt;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::root::{base36, digest_of_der, DIGEST_LEN};

const PREFIX: &str = "SWMTKN";
const VERSION: &str = "1";

/// Length of the base-36 secret: 128 random bits fit in 25 digits (36^25 > 2^128).
pub const SECRET_LEN: usize = 25;

/// What is wrong with a join token, or with the CA it was checked against.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("invalid join token: expected SWMTKN-1-<digest>-<secret>, found {parts} dash-separated part(s)")]
    Shape { parts: usize },
    #[error("invalid join token: it must start with \"SWMTKN\", not \"{found}\"")]
    Prefix { found: String },
    #[error(
        "invalid join token: version \"{found}\" is not supported (this swarm uses version 1)"
    )]
    Version { found: String },
    #[error("invalid join token: FIPS tokens (ending in \"-f\") are not supported")]
    Fips,
    #[error("invalid join token: the CA digest must be {DIGEST_LEN} characters, found {found}")]
    DigestLength { found: usize },
    #[error("invalid join token: the secret must be {SECRET_LEN} characters, found {found}")]
    SecretLength { found: usize },
    #[error("invalid join token: the {part} contains {found:?}; only 0-9 and a-z are allowed")]
    Character { part: &'static str, found: char },
    #[error("invalid join token: the CA digest is larger than a SHA-256")]
    DigestRange,
    #[error("cannot read the remote CA certificate: {reason}")]
    BadCaCert { reason: String },
    #[error("remote CA does not match fingerprint. Expected: {expected}, got: {actual}")]
    CaMismatch { expected: String, actual: String },
}

/// A parsed join token. `Debug` and `Display` differ on purpose: `Debug`
/// hides the secret so a token never lands in a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    ca_digest: String,
    secret: String,
}

impl JoinToken {
    /// A new token for the CA with this digest, with a fresh random secret.
    pub fn generate(ca_digest: &str) -> String {
        let secret: [u8; 16] = rand::random();
        format_token(ca_digest, &base36::encode(&secret, SECRET_LEN))
    }

    /// Parses and checks the form of a token (not whether the swarm accepts it).
    pub fn parse(text: &str) -> Result<JoinToken, TokenError> {
        let parts: Vec<&str> = text.trim().split('-').collect();
        if parts.len() >= 2 && parts[0] != PREFIX {
            return Err(TokenError::Prefix {
                found: parts[0].to_string(),
            });
        }
        if parts.len() >= 2 && parts[1] != VERSION {
            return Err(TokenError::Version {
                found: parts[1].to_string(),
            });
        }
        let (digest, secret) = match parts.as_slice() {
            [_, _, digest, secret] => (*digest, *secret),
            [_, _, _, _, "f"] => return Err(TokenError::Fips),
            [single] if !single.starts_with(PREFIX) => {
                return Err(TokenError::Prefix {
                    found: truncate(single),
                })
            }
            _ => return Err(TokenError::Shape { parts: parts.len() }),
        };
        check_part(digest, "CA digest", DIGEST_LEN, |found| {
            TokenError::DigestLength { found }
        })?;
        check_part(secret, "secret", SECRET_LEN, |found| {
            TokenError::SecretLength { found }
        })?;
        if base36::decode(digest, 32).is_none() {
            return Err(TokenError::DigestRange);
        }
        Ok(JoinToken {
            ca_digest: digest.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The root CA digest this token pins (base 36, 50 characters).
    pub fn ca_digest(&self) -> &str {
        &self.ca_digest
    }

    /// The secret that admits a node; compare it with [`JoinToken::same_secret`].
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether two tokens carry the same secret, in time independent of where
    /// they differ, so the manager leaks nothing about its secrets to a guesser.
    pub fn same_secret(&self, other: &JoinToken) -> bool {
        constant_time_eq(self.secret.as_bytes(), other.secret.as_bytes())
    }

    /// Whether `self` is exactly `expected`: same CA digest and same secret.
    pub fn matches(&self, expected: &JoinToken) -> bool {
        // Evaluate both: no early return that would time the secret check away.
        let digest_ok = constant_time_eq(self.ca_digest.as_bytes(), expected.ca_digest.as_bytes());
        let secret_ok = self.same_secret(expected);
        digest_ok & secret_ok
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_token(&self.ca_digest, &self.secret))
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_digest", &self.ca_digest)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Checks that the CA certificate a manager presented (PEM or DER) is the one
/// the token pins. A joining node does this before sending its token.
pub fn verify_ca(ca_cert: &[u8], token: &JoinToken) -> Result<(), TokenError> {
    let der = cert_der_from_pem_or_der(ca_cert)?;
    let actual = digest_of_der(&der);
    // The digest is public (it is in the token), so a plain comparison is fine.
    if actual != token.ca_digest {
        return Err(TokenError::CaMismatch {
            expected: hex_of_base36(&token.ca_digest),
            actual: hex_of_base36(&actual),
        });
    }
    Ok(())
}

fn cert_der_from_pem_or_der(bytes: &[u8]) -> Result<CertificateDer<'static>, TokenError> {
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        CertificateDer::from_pem_slice(bytes).map_err(|e| TokenError::BadCaCert {
            reason: e.to_string(),
        })
    } else if bytes.first() == Some(&0x30) {
        // DER: an ASN.1 SEQUENCE.
        Ok(CertificateDer::from(bytes.to_vec()))
    } else {
        Err(TokenError::BadCaCert {
            reason: "neither a PEM nor a DER certificate".to_string(),
        })
    }
}

/// The digest as the 64 hex digits users know from `sha256sum`, the way
/// SwarmKit's error prints it.
fn hex_of_base36(digest: &str) -> String {
    match base36::decode(digest, 32) {
        Some(bytes) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        None => digest.to_string(),
    }
}

fn format_token(ca_digest: &str, secret: &str) -> String {
    format!("{PREFIX}-{VERSION}-{ca_digest:0>DIGEST_LEN$}-{secret:0>SECRET_LEN$}")
}

fn check_part(
    text: &str,
    part: &'static str,
    len: usize,
    length_error: impl Fn(usize) -> TokenError,
) -> Result<(), TokenError> {
    if let Some(found) = text.chars().find(|&c| base36::digit(c).is_none()) {
        return Err(TokenError::Character { part, found });
    }
    if text.len() != len {
        return Err(length_error(text.len()));
    }
    Ok(())
}

/// At most 20 characters of what the user typed, for an error message (a
/// pasted secret should not be echoed whole).
fn truncate(text: &str) -> String {
    text.chars().take(20).collect()
}

/// Equal-length byte strings compared without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        // Lengths are fixed by the token format, so this leaks nothing.
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RootCa;
    use proptest::prelude::*;

    const DIGEST: &str = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcd";
    const SECRET: &str = "s3cr3ts3cr3ts3cr3ts3cr3t0";

    fn token(digest: &str, secret: &str) -> String {
        format!("SWMTKN-1-{digest}-{secret}")
    }

    #[test]
    fn generated_token_parses_back() {
        let ca = RootCa::generate().unwrap();
        let text = JoinToken::generate(&ca.digest());
        assert!(text.starts_with("SWMTKN-1-"));
        assert_eq!(text.len(), "SWMTKN-1-".len() + 50 + 1 + 25);
        let parsed = JoinToken::parse(&text).unwrap();
        assert_eq!(parsed.ca_digest(), ca.digest());
        assert_eq!(parsed.secret().len(), SECRET_LEN);
        assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn two_generated_tokens_have_different_secrets() {
        let a = JoinToken::parse(&JoinToken::generate(DIGEST)).unwrap();
        let b = JoinToken::parse(&JoinToken::generate(DIGEST)).unwrap();
        assert!(!a.same_secret(&b));
        assert!(a.same_secret(&a.clone()));
        assert!(a.matches(&a.clone()));
        assert!(!a.matches(&b));
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        let parsed = JoinToken::parse(&format!("  {}\n", token(DIGEST, SECRET))).unwrap();
        assert_eq!(parsed.secret(), SECRET);
    }

    fn err(text: &str) -> String {
        JoinToken::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn each_malformed_token_says_what_is_wrong() {
        assert_eq!(
            err(&format!("SWMTKX-1-{DIGEST}-{SECRET}")),
            "invalid join token: it must start with \"SWMTKN\", not \"SWMTKX\""
        );
        assert_eq!(
            err("hello"),
            "invalid join token: it must start with \"SWMTKN\", not \"hello\""
        );
        assert_eq!(
            err(&format!("SWMTKN-2-{DIGEST}-{SECRET}")),
            "invalid join token: version \"2\" is not supported (this swarm uses version 1)"
        );
        assert_eq!(
            err(&format!("SWMTKN-1-{DIGEST}")),
            "invalid join token: expected SWMTKN-1-<digest>-<secret>, found 3 dash-separated part(s)"
        );
        assert_eq!(
            err(&format!("SWMTKN-1-{DIGEST}-{SECRET}-f")),
            "invalid join token: FIPS tokens (ending in \"-f\") are not supported"
        );
        assert_eq!(
            err(&token(&DIGEST[1..], SECRET)),
            "invalid join token: the CA digest must be 50 characters, found 49"
        );
        assert_eq!(
            err(&token(DIGEST, &format!("{SECRET}z"))),
            "invalid join token: the secret must be 25 characters, found 26"
        );
        assert_eq!(
            err(&token(DIGEST, &SECRET.to_uppercase())),
            "invalid join token: the secret contains 'S'; only 0-9 and a-z are allowed"
        );
        assert_eq!(
            err(&token(&DIGEST.replace('5', "_"), SECRET)),
            "invalid join token: the CA digest contains '_'; only 0-9 and a-z are allowed"
        );
        assert_eq!(
            err(&token(&"z".repeat(50), SECRET)),
            "invalid join token: the CA digest is larger than a SHA-256"
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let parsed = JoinToken::parse(&token(DIGEST, SECRET)).unwrap();
        assert!(!format!("{parsed:?}").contains(SECRET));
    }

    #[test]
    fn verify_ca_accepts_the_pinned_ca_in_pem_and_der() {
        let ca = RootCa::generate().unwrap();
        let parsed = JoinToken::parse(&JoinToken::generate(&ca.digest())).unwrap();
        verify_ca(ca.cert_pem().as_bytes(), &parsed).unwrap();
        verify_ca(ca.cert_der(), &parsed).unwrap();
    }

    #[test]
    fn verify_ca_refuses_another_ca_with_swarmkits_text() {
        let ours = RootCa::generate().unwrap();
        let theirs = RootCa::generate().unwrap();
        let parsed = JoinToken::parse(&JoinToken::generate(&ours.digest())).unwrap();
        let err = verify_ca(theirs.cert_pem().as_bytes(), &parsed).unwrap_err();
        let expected_hex = hex_of_base36(&ours.digest());
        assert_eq!(expected_hex.len(), 64);
        assert!(
            err.to_string().starts_with(&format!(
                "remote CA does not match fingerprint. Expected: {expected_hex}"
            )),
            "{err}"
        );
    }

    #[test]
    fn verify_ca_refuses_garbage() {
        let parsed = JoinToken::parse(&token(DIGEST, SECRET)).unwrap();
        assert!(matches!(
            verify_ca(b"not a cert", &parsed),
            Err(TokenError::BadCaCert { .. })
        ));
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(digest in proptest::array::uniform32(any::<u8>()),
                                         secret in proptest::array::uniform16(any::<u8>())) {
            let text = format_token(&base36::encode(&digest, DIGEST_LEN), &base36::encode(&secret, SECRET_LEN));
            let parsed = JoinToken::parse(&text).unwrap();
            prop_assert_eq!(parsed.to_string(), text);
            prop_assert_eq!(base36::decode(parsed.ca_digest(), 32), Some(digest.to_vec()));
            prop_assert_eq!(base36::decode(parsed.secret(), 16), Some(secret.to_vec()));
        }

        #[test]
        fn parse_never_panics(text in "\\PC*") {
            let _ = JoinToken::parse(&text);
        }
    }
}
