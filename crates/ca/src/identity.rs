//! Who a certificate belongs to (node ID, role, cluster), and when it must be
//! renewed: pure functions over a certificate and the clock.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

/// A node's role, carried in its certificate's OU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Manager,
    Worker,
}

impl Role {
    /// The certificate OU (and SAN DNS name) SwarmKit uses for this role.
    pub fn ou(self) -> &'static str {
        match self {
            Role::Manager => "swarm-manager",
            Role::Worker => "swarm-worker",
        }
    }

    pub fn from_ou(ou: &str) -> Option<Role> {
        match ou {
            "swarm-manager" => Some(Role::Manager),
            "swarm-worker" => Some(Role::Worker),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        })
    }
}

/// What a node certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub node_id: String,
    pub role: Role,
    pub cluster_id: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Identity {
    /// The certificate's whole validity, the base of the renewal decision.
    pub fn validity(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot parse the node certificate: {reason}")]
    Parse { reason: String },
    #[error("the node certificate has no {field} (subject: {subject})")]
    Missing {
        field: &'static str,
        subject: String,
    },
    #[error("the certificate of node {node_id} has OU {ou:?}, which is neither swarm-manager nor swarm-worker")]
    UnknownRole { node_id: String, ou: String },
    #[error(
        "this node's certificate expired at {}: it was offline longer than the certificate's validity; \
         remove it with `node rm` on a manager and join it again with `swarm join`",
        rfc3339(*.expired_at)
    )]
    Expired {
        node_id: String,
        expired_at: SystemTime,
    },
}

/// Reads the node ID (CN), role (OU) and cluster ID (O) of a node certificate.
/// Does not check the signature: that is the TLS verifier's job.
pub fn parse_identity(cert_der: &[u8]) -> Result<Identity, IdentityError> {
    let (rest, cert) = X509Certificate::from_der(cert_der).map_err(|e| IdentityError::Parse {
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(IdentityError::Parse {
            reason: format!("{} trailing bytes after the certificate", rest.len()),
        });
    }
    let subject = cert.subject();
    let node_id = single_attr(subject, "common name (node ID)", X509Name::iter_common_name)?;
    let ou = single_attr(
        subject,
        "organizational unit (role)",
        X509Name::iter_organizational_unit,
    )?;
    let cluster_id = single_attr(
        subject,
        "organization (cluster ID)",
        X509Name::iter_organization,
    )?;
    let role = Role::from_ou(&ou).ok_or_else(|| IdentityError::UnknownRole {
        node_id: node_id.clone(),
        ou,
    })?;
    let validity = cert.validity();
    Ok(Identity {
        node_id,
        role,
        cluster_id,
        not_before: validity.not_before.to_datetime().into(),
        not_after: validity.not_after.to_datetime().into(),
    })
}

/// The first value of one subject attribute, as a string.
fn single_attr<'a, 'b, I>(
    name: &'b X509Name<'a>,
    field: &'static str,
    iter: impl Fn(&'b X509Name<'a>) -> I,
) -> Result<String, IdentityError>
where
    I: Iterator<Item = &'b x509_parser::x509::AttributeTypeAndValue<'a>>,
    'a: 'b,
{
    iter(name)
        .find_map(|attr| attr.as_str().ok())
        .filter(|value| !value.is_empty())
        .map(str::to_string)
        .ok_or_else(|| IdentityError::Missing {
            field,
            subject: name.to_string(),
        })
}

/// SwarmKit renews somewhere between 50% and 80% of a certificate's life,
/// at a random point per node so a whole cluster does not renew at once.
pub const RENEW_FROM: f64 = 0.5;
pub const RENEW_UNTIL: f64 = 0.8;

/// What a node should do about its certificate now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Still fresh: check again (or set a timer) for `at`.
    NotYet { at: SystemTime },
    /// Past the renewal point and still valid: ask a manager for a new one.
    Now,
    /// Too late to renew with this certificate: the node must rejoin.
    Expired(IdentityError),
}

/// When to renew a certificate valid until `not_after` for `total_validity`.
/// `jitter` in [0, 1] picks the point between 50% and 80% of the validity;
/// callers pass a random number once per certificate, tests pass a constant.
pub fn renewal_at(not_after: SystemTime, total_validity: Duration, jitter: f64) -> SystemTime {
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let fraction = RENEW_FROM + (RENEW_UNTIL - RENEW_FROM) * jitter;
    let not_before = not_after.checked_sub(total_validity).unwrap_or(not_after);
    not_before + total_validity.mul_f64(fraction)
}

/// The renewal decision, as a pure function of the certificate, the clock and
/// the jitter (see [`renewal_at`]).
pub fn needs_renewal(
    node_id: &str,
    not_after: SystemTime,
    now: SystemTime,
    total_validity: Duration,
    jitter: f64,
) -> Renewal {
    if now >= not_after {
        return Renewal::Expired(IdentityError::Expired {
            node_id: node_id.to_string(),
            expired_at: not_after,
        });
    }
    let at = renewal_at(not_after, total_validity, jitter);
    if now >= at {
        Renewal::Now
    } else {
        Renewal::NotYet { at }
    }
}

/// A time as `2025-01-31T12:00:00Z`, for messages.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let time = time::OffsetDateTime::from(time);
    time.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{time}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    fn t(days: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + DAY * 1000 + DAY * days
    }

    #[test]
    fn roles_map_to_swarmkit_ous() {
        for role in [Role::Manager, Role::Worker] {
            assert_eq!(Role::from_ou(role.ou()), Some(role));
        }
        assert_eq!(Role::from_ou("swarm-ca"), None);
        assert_eq!(Role::Worker.to_string(), "worker");
    }

    #[test]
    fn renewal_point_moves_between_half_and_four_fifths() {
        let not_after = t(90);
        assert_eq!(renewal_at(not_after, DAY * 90, 0.0), t(45));
        assert_eq!(renewal_at(not_after, DAY * 90, 1.0), t(72));
        assert_eq!(
            renewal_at(not_after, DAY * 90, 7.0),
            t(72),
            "jitter is clamped"
        );
        assert_eq!(renewal_at(not_after, DAY * 90, f64::NAN), t(45));
    }

    #[test]
    fn renewal_decision_over_a_certificates_life() {
        let decide = |now| needs_renewal("n1", t(90), now, DAY * 90, 0.5);
        // 0.5 jitter → 65% of 90 days = 58.5 days.
        let point = t(58) + DAY / 2;
        assert_eq!(decide(t(10)), Renewal::NotYet { at: point });
        assert_eq!(decide(point), Renewal::Now);
        assert_eq!(decide(t(89)), Renewal::Now);
        assert!(matches!(decide(t(90)), Renewal::Expired(_)));
    }

    #[test]
    fn expired_error_tells_the_user_what_to_do() {
        let Renewal::Expired(err) = needs_renewal("n1", t(0), t(1), DAY * 90, 0.0) else {
            panic!("should be expired");
        };
        assert_eq!(
            err.to_string(),
            "this node's certificate expired at 1972-09-27T00:00:00Z: it was offline longer than \
             the certificate's validity; remove it with `node rm` on a manager and join it again \
             with `swarm join`"
        );
    }

    #[test]
    fn garbage_is_a_parse_error() {
        assert!(matches!(
            parse_identity(b"\x30\x03abc"),
            Err(IdentityError::Parse { .. })
        ));
        assert!(matches!(
            parse_identity(b""),
            Err(IdentityError::Parse { .. })
        ));
    }

    #[test]
    fn a_ca_certificate_is_not_a_node_identity() {
        let ca = crate::RootCa::generate().unwrap();
        let err = parse_identity(ca.cert_der()).unwrap_err();
        assert!(
            matches!(
                err,
                IdentityError::Missing {
                    field: "organizational unit (role)",
                    ..
                }
            ),
            "{err}"
        );
    }
}
