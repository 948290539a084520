//! flotilla-ca: the swarm's certificate authority and mutual-TLS configs.
//!
//! A library only: it opens no sockets. The manager keeps the root CA in the
//! Raft store ([`CaMaterial`]), hands out join tokens, and signs the
//! certificates nodes ask for with a CSR; every node builds its rustls
//! configs here and checks each RPC caller's role with [`authorize`].
//!
//! - [`root`]: the root CA (ECDSA P-256, `swarm-ca`, 20 years) and its digest.
//! - [`token`]: `SWMTKN-1-<digest>-<secret>` join tokens and the CA pin check.
//! - [`node`]: node key pairs, CSRs and the certificates the CA signs.
//! - [`identity`]: who a certificate names, and when to renew it.
//! - [`rotation`]: moving a swarm to a new root without breaking a connection.
//! - [`tls`]: rustls server/client configs (ring only) and per-RPC checks.

pub mod identity;
pub mod node;
pub mod root;
pub mod rotation;
pub mod tls;
pub mod token;

pub use identity::{
    needs_renewal, parse_identity, renewal_at, Identity, IdentityError, Renewal, Role,
};
pub use node::{NodeCert, NodeKey, DEFAULT_CERT_EXPIRY};
pub use root::{digest_of_der, CaError, CaMaterial, RootCa};
pub use rotation::{issuer_of, IssuerInfo};
pub use tls::{
    authorize, client_config, server_config, server_config_allowing_join, AuthError, TlsError,
};
pub use token::{verify_ca, JoinToken, TokenError};
