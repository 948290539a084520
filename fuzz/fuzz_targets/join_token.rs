//! Join tokens (crates/ca/src/token.rs). Each input is read twice:
//!
//! - as the text of a token (`docker swarm join --token …`, or the token a
//!   `swarm join` request carries): it parses or is refused; one that
//!   parses prints back to itself, parses again to the same token, and
//!   `verify_ca` accepts a fixed CA exactly when the token pins that CA's
//!   digest;
//! - as the CA certificate a manager presented (PEM or DER), checked
//!   against a token that pins the fixed CA: only that CA's own bytes
//!   (as PEM or DER) pass.
//!
//! The fixed CA (testdata/swarm-ca.pem, a P-256 `swarm-ca` like the ones
//! Flotilla makes) has no key here: nothing is signed.

#![no_main]

use std::sync::OnceLock;

use flotilla_ca::{digest_of_der, verify_ca, JoinToken};
use libfuzzer_sys::fuzz_target;

const CA_PEM: &[u8] = include_bytes!("../testdata/swarm-ca.pem");
const CA_DER: &[u8] = include_bytes!("../testdata/swarm-ca.der");
/// A worker secret: 25 base-36 digits.
const SECRET: &str = "0f7z3ljcz8b6ddtvbtw5o2bfa";

/// A token that pins the fixed CA.
fn pinned() -> &'static JoinToken {
    static TOKEN: OnceLock<JoinToken> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let text = format!("SWMTKN-1-{}-{SECRET}", digest_of_der(CA_DER));
        JoinToken::parse(&text).expect("the fixed token parses")
    })
}

fuzz_target!(|data: &[u8]| {
    let pinned = pinned();

    // The input as a token.
    let text = String::from_utf8_lossy(data);
    if let Ok(token) = JoinToken::parse(&text) {
        let printed = token.to_string();
        let again = JoinToken::parse(&printed);
        assert_eq!(
            again.as_ref(),
            Ok(&token),
            "{printed:?} does not parse back"
        );
        assert_eq!(
            again.map(|t| t.to_string()).as_deref(),
            Ok(printed.as_str())
        );

        let same_ca = token.ca_digest() == pinned.ca_digest();
        assert_eq!(verify_ca(CA_PEM, &token).is_ok(), same_ca);
        assert_eq!(verify_ca(CA_DER, &token).is_ok(), same_ca);
        assert_eq!(
            token.matches(pinned),
            same_ca && token.secret() == pinned.secret()
        );
        assert_eq!(token.same_secret(pinned), token.secret() == pinned.secret());
    }

    // The input as the CA certificate a manager presented.
    if verify_ca(data, pinned).is_ok() {
        assert!(
            data == CA_DER || data.trim_ascii_start().starts_with(b"-----BEGIN"),
            "a CA other than the pinned one passed"
        );
    }
});
