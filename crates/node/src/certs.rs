//! The node's certificate and the root it trusts, over the node's life:
//! renewal at a random point between 50% and 80% of the certificate's
//! validity (SwarmKit's), and a root CA rotation followed as the managers
//! ask in their heartbeat replies — a certificate from the new key at once,
//! then the new root once the swarm has moved to it. Each change swaps the
//! TLS configurations every connection is made with; open connections are
//! left as they are.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flotilla_agent::session::ManagerSession;
use flotilla_ca::{NodeCert, Renewal};
use flotilla_rpc::peers::Peers;
use flotilla_store::models::TlsInfo;
use tokio::sync::watch;

use crate::identity::Files;

pub(crate) fn tls_configs(
    ca_pem: &str,
    cert: &NodeCert,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>)> {
    Ok((
        flotilla_ca::server_config_allowing_join(ca_pem, cert)?,
        flotilla_ca::client_config(ca_pem, Some(cert))?,
    ))
}

pub(crate) struct Ctx {
    pub files: Files,
    pub node_id: String,
    pub peers: Peers,
    /// This node's own cluster address, on a manager.
    pub own: Option<String>,
    /// The managers the agent knows now (some joined after this node).
    pub session: Arc<ManagerSession>,
    pub server: watch::Sender<Arc<rustls::ServerConfig>>,
    pub client: watch::Sender<Arc<rustls::ClientConfig>>,
}

impl Ctx {
    /// Whichever managers the node knows now, itself first on a manager.
    fn managers(&self) -> Vec<String> {
        self.own
            .iter()
            .cloned()
            .chain(self.session.managers())
            .collect()
    }

    /// Saves and starts using `cert` with `root`, and tells the managers.
    fn adopt(&self, cert: &NodeCert, root: &str) -> anyhow::Result<()> {
        let (server, client) = tls_configs(root, cert)?;
        self.files.write_cert(cert, root)?;
        self.server.send_replace(server);
        self.client.send_replace(client);
        self.session.set_tls(tls_info(cert, root));
        Ok(())
    }
}

/// What `docker node inspect` shows as the node's TLSInfo.
fn tls_info(cert: &NodeCert, root: &str) -> TlsInfo {
    let (subject, key) = flotilla_ca::issuer_of(&cert.cert_pem, root)
        .map(|i| i.encoded())
        .unwrap_or_default();
    TlsInfo {
        trust_root: Some(root.to_string()),
        cert_issuer_subject: Some(subject),
        cert_issuer_public_key: Some(key),
    }
}

fn digest_of(root: &str) -> String {
    flotilla_rpc::ca::pem_to_der(root)
        .map(|der| flotilla_ca::digest_of_der(&der))
        .unwrap_or_default()
}

/// What the node must do to come to what the managers want.
#[derive(Debug, PartialEq, Eq)]
struct Moves {
    /// Trust another root (its digest).
    root: Option<String>,
    /// Get a certificate from another key.
    certificate: bool,
}

fn moves(target: Option<&flotilla_store::state::CaTarget>, info: &TlsInfo, root: &str) -> Moves {
    let Some(t) = target else {
        return Moves {
            root: None,
            certificate: false,
        };
    };
    Moves {
        root: (t.root_digest != digest_of(root)).then(|| t.root_digest.clone()),
        certificate: info.cert_issuer_public_key.as_deref() != Some(t.issuer_public_key.as_str()),
    }
}

pub(crate) async fn follow(
    ctx: Ctx,
    mut cert: NodeCert,
    mut root: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut target = ctx.session.ca_target();
    ctx.session.set_tls(tls_info(&cert, &root));
    loop {
        let Ok(me) = cert.identity() else { return };
        let want = moves(
            target.borrow_and_update().as_ref(),
            &tls_info(&cert, &root),
            &root,
        );
        let root_pending = want.root.is_some();
        if let Some(digest) = want.root {
            match fetch_root(&ctx, &digest).await {
                Some(new) => match ctx.adopt(&cert, &new) {
                    Ok(()) => {
                        tracing::info!("this node now trusts the swarm's new root CA");
                        root = new;
                        continue;
                    }
                    Err(e) => tracing::warn!("cannot use the swarm's new root CA: {e:#}"),
                },
                None => tracing::warn!("no manager gave the swarm's new root CA yet"),
            }
        }
        let jitter: f64 = rand::random();
        let wait = match flotilla_ca::needs_renewal(
            &ctx.node_id,
            me.not_after,
            SystemTime::now(),
            me.validity(),
            jitter,
        ) {
            _ if want.certificate => Duration::ZERO,
            Renewal::NotYet { at } => at.duration_since(SystemTime::now()).unwrap_or_default(),
            Renewal::Now => Duration::ZERO,
            Renewal::Expired(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        // A new root no manager gave yet is asked for again soon.
        let wait = if root_pending {
            wait.min(Duration::from_secs(5))
        } else {
            wait
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait.min(Duration::from_secs(3600))) => {},
                r = target.changed() => if r.is_err() { return } else { continue },
                _ = stop.changed() => return,
            }
            if root_pending || wait > Duration::from_secs(3600) {
                continue;
            }
        }
        if let Some(new) = renew(&ctx).await {
            match ctx.adopt(&new, &root) {
                Ok(()) => {
                    tracing::info!("node certificate renewed");
                    cert = new;
                }
                Err(e) => tracing::warn!("renewed certificate unusable: {e:#}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {},
            _ = stop.changed() => return,
        }
    }
}

async fn renew(ctx: &Ctx) -> Option<NodeCert> {
    for m in ctx.managers() {
        let Ok(channel) = ctx.peers.channel(&m) else {
            continue;
        };
        match flotilla_rpc::ca::renew(channel).await {
            Ok(new) => return Some(new),
            Err(e) => tracing::warn!("certificate renewal through {m} failed: {e}"),
        }
    }
    None
}

/// The root with this digest, from a manager over the connection the node
/// trusts now (the digest came the same way).
async fn fetch_root(ctx: &Ctx, digest: &str) -> Option<String> {
    for m in ctx.managers() {
        let Ok(channel) = ctx.peers.channel(&m) else {
            continue;
        };
        match flotilla_rpc::ca::trust_root(channel).await {
            Ok(pem) if digest_of(&pem) == digest => return Some(pem),
            Ok(_) => tracing::debug!("{m} does not have the swarm's new root CA yet"),
            Err(e) => tracing::debug!("asking {m} for the root CA: {e}"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_ca::{Role, RootCa, DEFAULT_CERT_EXPIRY};
    use flotilla_store::state::CaTarget;

    #[test]
    fn a_node_renews_during_a_rotation_then_trusts_the_new_root() {
        let old = RootCa::generate().unwrap();
        let new = RootCa::generate().unwrap();
        let signer = RootCa::rotating(&new.material(), &old.cross_sign(&new).unwrap()).unwrap();
        let before = old
            .issue("n", Role::Worker, "c", DEFAULT_CERT_EXPIRY)
            .unwrap();
        let during = signer
            .issue("n", Role::Worker, "c", DEFAULT_CERT_EXPIRY)
            .unwrap();
        let key = |ca: &RootCa| ca.issuer_info().encoded().1;
        let rotating = CaTarget {
            root_digest: old.digest(),
            issuer_public_key: key(&new),
        };
        let done = CaTarget {
            root_digest: new.digest(),
            issuer_public_key: key(&new),
        };
        let on = |cert: &NodeCert, root: &RootCa, t: &CaTarget| {
            moves(Some(t), &tls_info(cert, root.cert_pem()), root.cert_pem())
        };
        assert_eq!(
            on(&before, &old, &rotating),
            Moves {
                root: None,
                certificate: true
            }
        );
        assert_eq!(
            on(&during, &old, &rotating),
            Moves {
                root: None,
                certificate: false
            }
        );
        assert_eq!(
            on(&during, &old, &done),
            Moves {
                root: Some(new.digest()),
                certificate: false
            }
        );
        assert_eq!(
            on(&during, &new, &done),
            Moves {
                root: None,
                certificate: false
            }
        );
        // No word from the managers: nothing to do.
        assert_eq!(
            moves(None, &tls_info(&before, old.cert_pem()), old.cert_pem()),
            Moves {
                root: None,
                certificate: false
            }
        );
    }
}
