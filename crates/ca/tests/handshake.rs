//! Real TLS handshakes over an in-memory pipe (tokio-rustls over
//! `tokio::io::duplex`) with the configs flotilla-ca builds: who gets in, who
//! is refused, and what the refusal says.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flotilla_ca::{
    authorize, client_config, server_config, server_config_allowing_join, AuthError, NodeCert,
    Role, RootCa, DEFAULT_CERT_EXPIRY,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const CLUSTER: &str = "cluster1";
const WAIT: Duration = Duration::from_secs(10);

/// What each side saw: the client gets the server's greeting only once the
/// server accepted it (with TLS 1.3 the client finishes its half before the
/// server has checked the client certificate); the server gets the client's
/// verified chain.
struct Outcome {
    client: Result<(), String>,
    server: Result<Vec<CertificateDer<'static>>, String>,
}

async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
    // Nodes are reached by IP: the name must not matter.
    let name = ServerName::IpAddress(std::net::IpAddr::from([10, 99, 0, 1]).into());
    handshake_as(server, client, name).await
}

async fn handshake_as(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> Outcome {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server_side = async move {
        let mut stream = TlsAcceptor::from(server)
            .accept(server_io)
            .await
            .map_err(|e| e.to_string())?;
        let peer = stream
            .get_ref()
            .1
            .peer_certificates()
            .map(<[_]>::to_vec)
            .unwrap_or_default();
        stream.write_all(b"ok").await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        Ok(peer)
    };
    let client_side = async move {
        let mut stream = TlsConnector::from(client)
            .connect(name, client_io)
            .await
            .map_err(|e| e.to_string())?;
        let mut greeting = [0u8; 2];
        stream
            .read_exact(&mut greeting)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    };
    let (server, client) = timeout(WAIT, async { tokio::join!(server_side, client_side) })
        .await
        .expect("handshake timed out");
    Outcome { client, server }
}

struct Cluster {
    ca: RootCa,
    id: &'static str,
}

impl Cluster {
    fn new(id: &'static str) -> Cluster {
        Cluster {
            ca: RootCa::generate().unwrap(),
            id,
        }
    }

    fn node(&self, node_id: &str, role: Role) -> NodeCert {
        self.ca
            .issue(node_id, role, self.id, DEFAULT_CERT_EXPIRY)
            .unwrap()
    }

    fn server(&self, cert: &NodeCert) -> Arc<ServerConfig> {
        server_config(self.ca.cert_pem(), cert).unwrap()
    }

    fn client(&self, cert: Option<&NodeCert>) -> Arc<ClientConfig> {
        client_config(self.ca.cert_pem(), cert).unwrap()
    }
}

/// A client that checks nothing of ours: plain rustls trusting `root_pem`
/// and the server's node-ID SAN, presenting `cert`. It shows what the server
/// alone refuses.
fn plain_client(root_pem: &str, cert: &NodeCert) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(root_pem.as_bytes()).unwrap())
        .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    Arc::new(config)
}

fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_string()).unwrap()
}

#[tokio::test]
async fn manager_to_manager() {
    let c = Cluster::new(CLUSTER);
    let (m1, m2) = (c.node("m1", Role::Manager), c.node("m2", Role::Manager));
    let out = handshake(c.server(&m1), c.client(Some(&m2))).await;
    out.client.unwrap();
    let peer = authorize(&out.server.unwrap(), &[Role::Manager], CLUSTER).unwrap();
    assert_eq!((peer.node_id.as_str(), peer.role), ("m2", Role::Manager));
}

#[tokio::test]
async fn worker_to_manager_is_let_in_as_a_worker() {
    let c = Cluster::new(CLUSTER);
    let (m1, w1) = (c.node("m1", Role::Manager), c.node("w1", Role::Worker));
    let out = handshake(c.server(&m1), c.client(Some(&w1))).await;
    out.client.unwrap();
    let chain = out.server.unwrap();
    let peer = authorize(&chain, &[Role::Manager, Role::Worker], CLUSTER).unwrap();
    assert_eq!(
        (peer.node_id.as_str(), peer.role, peer.cluster_id.as_str()),
        ("w1", Role::Worker, CLUSTER)
    );

    // The same worker calling a manager-only RPC.
    let err = authorize(&chain, &[Role::Manager], CLUSTER).unwrap_err();
    assert_eq!(
        err.to_string(),
        "permission denied: node w1 is a worker; this call needs a manager"
    );
}

#[tokio::test]
async fn a_client_certificate_from_another_clusters_ca_is_refused() {
    let ours = Cluster::new(CLUSTER);
    // An intruder who made its own CA and even copied our cluster ID.
    let theirs = Cluster::new(CLUSTER);
    let intruder = theirs.node("x1", Role::Manager);
    let server = ours.server(&ours.node("m1", Role::Manager));

    // With our own client config it trusts our server, so only the server can stop it.
    let out = handshake(server.clone(), ours.client(Some(&intruder))).await;
    let err = out.server.unwrap_err();
    assert_eq!(err, "other error: certificate of node x1 was not issued by this swarm's root CA (is it from another swarm?)");
    assert!(out.client.is_err());

    // A plain rustls client, same story.
    let out = handshake_as(
        server,
        plain_client(ours.ca.cert_pem(), &intruder),
        dns("m1"),
    )
    .await;
    let err = out.server.unwrap_err();
    assert_eq!(err, "other error: certificate of node x1 was not issued by this swarm's root CA (is it from another swarm?)");
    assert!(out.client.is_err());
}

#[tokio::test]
async fn a_server_from_another_clusters_ca_is_refused() {
    let ours = Cluster::new(CLUSTER);
    let theirs = Cluster::new("cluster2");
    let out = handshake(
        theirs.server(&theirs.node("x1", Role::Manager)),
        ours.client(Some(&ours.node("w1", Role::Worker))),
    )
    .await;
    let err = out.client.unwrap_err();
    assert!(
        err.contains("certificate of node x1 was not issued by this swarm's root CA"),
        "{err}"
    );
}

#[tokio::test]
async fn same_ca_but_another_cluster_id_is_refused_both_ways() {
    // A CA shared between clusters (an external CA) must still not mix them.
    let c = Cluster::new(CLUSTER);
    let stranger =
        c.ca.issue("s1", Role::Manager, "cluster2", DEFAULT_CERT_EXPIRY)
            .unwrap();
    let m1 = c.node("m1", Role::Manager);

    // Our client config would refuse m1 first (see below): use a plain one.
    let out = handshake_as(
        c.server(&m1),
        plain_client(c.ca.cert_pem(), &stranger),
        dns("m1"),
    )
    .await;
    let err = out.server.unwrap_err();
    assert!(
        err.contains("certificate of node s1 belongs to cluster cluster2, not cluster1"),
        "{err}"
    );

    let out = handshake(c.server(&stranger), c.client(Some(&m1))).await;
    let err = out.client.unwrap_err();
    assert!(
        err.contains("certificate of node s1 belongs to cluster cluster2, not cluster1"),
        "{err}"
    );

    // And authorize says the same for a chain that got through some other way.
    let der = CertificateDer::from_pem_slice(stranger.cert_pem.as_bytes()).unwrap();
    let err = authorize(&[der], &[Role::Manager], CLUSTER).unwrap_err();
    assert!(matches!(err, AuthError::WrongCluster { .. }), "{err}");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let c = Cluster::new(CLUSTER);
    let out = handshake(c.server(&c.node("m1", Role::Manager)), c.client(None)).await;
    let err = out.server.unwrap_err();
    assert!(err.contains("peer sent no certificates"), "{err}");
    assert!(out.client.is_err());
}

#[tokio::test]
async fn the_join_port_lets_a_certificateless_client_in_but_authorize_refuses_it() {
    let c = Cluster::new(CLUSTER);
    let m1 = c.node("m1", Role::Manager);
    let join_server = server_config_allowing_join(c.ca.cert_pem(), &m1).unwrap();

    let out = handshake(join_server.clone(), c.client(None)).await;
    out.client.unwrap();
    let chain = out.server.unwrap();
    assert!(chain.is_empty());
    assert_eq!(
        authorize(&chain, &[Role::Worker, Role::Manager], CLUSTER),
        Err(AuthError::NoCertificate)
    );

    // A client that does present a certificate is still checked.
    let other = Cluster::new("cluster2");
    let out = handshake(join_server, c.client(Some(&other.node("x1", Role::Worker)))).await;
    assert!(out.server.is_err());
}

#[tokio::test]
async fn a_joining_client_refuses_a_server_that_is_not_a_manager() {
    let c = Cluster::new(CLUSTER);
    let w1 = c.node("w1", Role::Worker);
    let out = handshake(c.server(&w1), c.client(None)).await;
    let err = out.client.unwrap_err();
    assert!(
        err.contains("the server is node w1, a worker: only managers serve the cluster port"),
        "{err}"
    );
}

fn expired(c: &Cluster, node_id: &str, role: Role) -> NodeCert {
    let now = SystemTime::now();
    let day = Duration::from_secs(24 * 60 * 60);
    c.ca.issue_valid_between(node_id, role, c.id, now - 100 * day, now - day)
        .unwrap()
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let c = Cluster::new(CLUSTER);
    let w1 = expired(&c, "w1", Role::Worker);
    let out = handshake(c.server(&c.node("m1", Role::Manager)), c.client(Some(&w1))).await;
    let err = out.server.unwrap_err();
    assert!(err.contains("certificate expired"), "{err}");
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused() {
    let c = Cluster::new(CLUSTER);
    let m1 = expired(&c, "m1", Role::Manager);
    let out = handshake(c.server(&m1), c.client(Some(&c.node("w1", Role::Worker)))).await;
    let err = out.client.unwrap_err();
    assert!(err.contains("certificate expired"), "{err}");
}

#[tokio::test]
async fn the_renewal_check_explains_an_expired_certificate() {
    let c = Cluster::new(CLUSTER);
    let w1 = expired(&c, "w1", Role::Worker);
    let id = w1.identity().unwrap();
    let decision = flotilla_ca::needs_renewal(
        &id.node_id,
        id.not_after,
        SystemTime::now(),
        id.validity(),
        0.3,
    );
    let flotilla_ca::Renewal::Expired(err) = decision else {
        panic!("{decision:?}")
    };
    assert!(err
        .to_string()
        .contains("remove it with `node rm` on a manager and join it again with `swarm join`"));
}

#[tokio::test]
async fn a_csr_signed_certificate_works_in_a_handshake() {
    let c = Cluster::new(CLUSTER);
    let key = flotilla_ca::NodeKey::generate().unwrap();
    let cert_pem =
        c.ca.sign_csr(
            &key.csr("w9").unwrap(),
            "w9",
            Role::Worker,
            CLUSTER,
            DEFAULT_CERT_EXPIRY,
        )
        .unwrap();
    let w9 = key.with_cert(cert_pem);
    let out = handshake(c.server(&c.node("m1", Role::Manager)), c.client(Some(&w9))).await;
    out.client.unwrap();
    let peer = authorize(&out.server.unwrap(), &[Role::Worker], CLUSTER).unwrap();
    assert_eq!(peer.node_id, "w9");
}

#[tokio::test]
async fn plain_text_is_refused() {
    let c = Cluster::new(CLUSTER);
    let (mut client_io, server_io) = tokio::io::duplex(4096);
    client_io
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let acceptor = TlsAcceptor::from(c.server(&c.node("m1", Role::Manager)));
    let result = timeout(WAIT, acceptor.accept(server_io))
        .await
        .expect("accept timed out");
    assert!(result.is_err());
}
