//! Peer mTLS with node ids bound to keys (S/Kademlia, Baumgart & Mies 2007, section 4.1).
//!
//! A node with `tls_ca_cert` set owns a key pair (ECDSA P-256, kept in its data dir as
//! [`KEY_FILE`], or made afresh at each start without one), and its node id is the SHA-1 of the
//! key's SubjectPublicKeyInfo: 160 bits, the paper's id length. Peer RPCs run over TLS 1.3 on
//! the peer port, and both ends present a certificate for their key issued by the cluster CA:
//! - a server accepts only client certificates that chain to the CA (rustls'
//!   `WebPkiClientVerifier`), and the peer service refuses a request whose header claims an id
//!   other than its certificate's ([`id_of_cert`]);
//! - a client accepts only server certificates that chain to the CA, and refuses a reply whose
//!   header claims an id other than the certificate the connection saw
//!   ([`PeerConnector`] records it per channel).
//!
//! So a node without a certificate from the cluster CA cannot join, query or store, and no node
//! can speak for an id whose key it does not hold. The client port stays plaintext (grpcurl,
//! the CLI); a network policy keeps outsiders off the peer port in deploy/.
//!
//! Crates: rustls through tokio-rustls (the stack tonic uses; ring as the crypto provider, named
//! explicitly so that another provider elsewhere in the build cannot change it), rustls-webpki to
//! read a peer certificate's key, and rcgen to make the CA and the node certificates.
//!
//! # Implementation notes
//! - S/Kademlia derives ids from a key and adds crypto puzzles against mass id generation; here
//!   the cluster CA is the admission control instead of a puzzle, and TLS without a CA (open
//!   networks with self-certifying ids only) is not offered.
//! - A node issues its own certificate at start from the CA key it is given (`tls_ca_key`), so
//!   every node holding that key could mint certificates. The certificate is valid for
//!   [`NODE_CERT_DAYS`] days and is re-issued on every start; there is no rotation while a node
//!   runs, and no revocation list.
//! - Every node certificate names [`PEER_SERVER_NAME`]: the name a client checks is the same for
//!   all peers, and the id check above is what binds a connection to a node.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::kad::NodeId;

/// The node's private key inside its data dir (PKCS#8 PEM, readable by its owner only).
pub const KEY_FILE: &str = "node-key.pem";
/// The DNS name every node certificate carries, and the name clients ask for.
pub const PEER_SERVER_NAME: &str = "kademlia-peer";
/// Days a node certificate is valid (it is re-issued at every start).
pub const NODE_CERT_DAYS: i64 = 365;
/// Years a cluster CA made by `kademlia cert ca` is valid.
pub const CA_YEARS: i64 = 10;
/// Longest a TLS handshake on the peer port may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong setting up peer TLS; the message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("peer TLS: {0}")]
    Setup(String),
}

fn setup(e: impl std::fmt::Display) -> TlsError {
    TlsError::Setup(e.to_string())
}

/// The node id a public key stands for: SHA-1 of its DER SubjectPublicKeyInfo.
pub fn id_of_key(spki_der: &[u8]) -> NodeId {
    NodeId::hash(spki_der)
}

/// The node id a certificate's key stands for.
pub fn id_of_cert(cert: &CertificateDer<'_>) -> Result<NodeId, TlsError> {
    let spki = spki_of(cert).map_err(|e| setup(format!("unreadable certificate: {e}")))?;
    Ok(id_of_key(&spki))
}

/// A new cluster CA: (certificate PEM, private key PEM).
pub fn generate_ca(name: &str) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate().map_err(setup)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(setup)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365 * CA_YEARS);
    let cert = params.self_signed(&key).map_err(setup)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A cluster CA able to issue node certificates.
pub struct ClusterCa {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| TlsError::File {
        path: path.display().to_string(),
        why: format!("cannot read it: {e}"),
    })
}

fn bad_file(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

impl ClusterCa {
    /// The CA from its certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, String> {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| format!("not a PEM certificate: {e}"))?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| format!("not a PEM private key: {e}"))?;
        let issuer = Issuer::from_ca_cert_der(&cert, key)
            .map_err(|e| format!("not a CA certificate: {e}"))?;
        if issuer.key().subject_public_key_info() != spki_of(&cert)? {
            return Err("the CA key does not belong to the CA certificate".into());
        }
        Ok(ClusterCa { cert, issuer })
    }

    /// The CA from the files `kademlia cert ca` writes.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<ClusterCa, TlsError> {
        let (cert, key) = (read(cert_path)?, read(key_path)?);
        ClusterCa::from_pem(&cert, &key).map_err(|why| bad_file(cert_path, why))
    }

    /// The CA's certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// A certificate for `key`, naming its node id, for both ends of a peer connection.
    pub fn issue(&self, key: &KeyPair) -> Result<CertificateDer<'static>, TlsError> {
        let id = id_of_key(&key.subject_public_key_info());
        let mut params =
            CertificateParams::new(vec![PEER_SERVER_NAME.to_string()]).map_err(setup)?;
        params
            .distinguished_name
            .push(DnType::CommonName, id.to_hex());
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(NODE_CERT_DAYS);
        let cert = params.signed_by(key, &self.issuer).map_err(setup)?;
        Ok(cert.der().clone())
    }
}

/// The DER SubjectPublicKeyInfo of a certificate's key.
fn spki_of(cert: &CertificateDer<'_>) -> Result<Vec<u8>, String> {
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| e.to_string())?;
    Ok(ee.subject_public_key_info().as_ref().to_vec())
}

/// The node's key pair: read from `dir`'s [`KEY_FILE`], or made and saved there; without a
/// dir, made afresh (a new id at every start).
pub fn load_or_create_key(dir: Option<&Path>) -> Result<KeyPair, TlsError> {
    let Some(dir) = dir else {
        return KeyPair::generate().map_err(setup);
    };
    let path = dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(pem) => KeyPair::from_pem(&pem).map_err(|e| bad_file(&path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::generate().map_err(setup)?;
            write_private(&path, &key.serialize_pem())?;
            Ok(key)
        }
        Err(e) => Err(bad_file(&path, format!("cannot read it: {e}"))),
    }
}

/// Writes a secret file readable by its owner only, atomically (a crash leaves no half key).
pub fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let fail = |e: std::io::Error| bad_file(path, format!("cannot write it: {e}"));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).map_err(fail)?;
    f.write_all(contents.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A node's TLS set-up for the peer port: its id, and the server and client configurations.
pub struct PeerTls {
    id: NodeId,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").field("id", &self.id).finish()
    }
}

impl PeerTls {
    /// TLS for the node owning `key`, with a certificate `ca` issues now.
    pub fn new(ca: &ClusterCa, key: &KeyPair) -> Result<PeerTls, TlsError> {
        let cert = ca.issue(key)?;
        PeerTls::with_certificate(ca.cert().clone(), cert, key)
    }

    /// TLS for the node owning `key` with the certificate `cert`, trusting peers whose
    /// certificates chain to `ca_cert`.
    pub fn with_certificate(
        ca_cert: CertificateDer<'static>,
        cert: CertificateDer<'static>,
        key: &KeyPair,
    ) -> Result<PeerTls, TlsError> {
        let id = id_of_cert(&cert)?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert).map_err(setup)?;
        let roots = Arc::new(roots);
        let private = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(setup)?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(setup)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert.clone()], private())
            .map_err(setup)?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(setup)?
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![cert], private())
            .map_err(setup)?;
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(PeerTls {
            id,
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// The node id this node's certificate stands for.
    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.server.clone())
    }

    /// A connector for one channel, recording the id of the peer it reaches in `seen`.
    pub fn connector(&self, seen: PeerSeen) -> PeerConnector {
        PeerConnector {
            tls: TlsConnector::from(self.client.clone()),
            seen,
        }
    }
}

/// The id whose certificate a channel's current connection presented.
pub type PeerSeen = Arc<Mutex<Option<NodeId>>>;

/// Dials a peer over TCP, then TLS, for tonic's `connect_with_connector`.
#[derive(Clone)]
pub struct PeerConnector {
    tls: TlsConnector,
    seen: PeerSeen,
}

impl tower_service::Service<http::Uri> for PeerConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = futures::future::BoxFuture<'static, std::io::Result<Self::Response>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (tls, seen) = (self.tls.clone(), self.seen.clone());
        Box::pin(async move {
            let invalid = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
            let host = uri.host().ok_or_else(|| invalid("no host"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(PEER_SERVER_NAME).expect("a valid DNS name");
            let stream = tls.connect(name, tcp).await?;
            let id = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(id_of_cert)
                .transpose()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = id;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

/// How a peer's TLS handshake on the peer port ended (counted in the metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    Accepted,
    /// The client's certificate did not chain to the cluster CA, or the TLS exchange failed.
    Failed,
    /// Not finished within [`HANDSHAKE_TIMEOUT`].
    TimedOut,
}

impl Handshake {
    pub fn label(self) -> &'static str {
        match self {
            Handshake::Accepted => "accepted",
            Handshake::Failed => "failed",
            Handshake::TimedOut => "timed_out",
        }
    }
}

/// Accepted peer connections after their TLS handshake. Handshakes run side by side (at most
/// `MAX_HANDSHAKES` at once, each within [`HANDSHAKE_TIMEOUT`]), so a slow or silent client
/// delays no one; failed ones are logged at debug and dropped. Every handshake's end is told
/// to `ended`.
pub fn incoming(
    tcp: impl tokio_stream::Stream<Item = std::io::Result<TcpStream>> + Send + 'static,
    acceptor: TlsAcceptor,
    ended: impl Fn(Handshake) + Clone + Send + 'static,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>> {
    use futures::StreamExt;
    const MAX_HANDSHAKES: usize = 256;
    tcp.filter_map(|r| async move { r.ok() })
        .map(move |stream| {
            let (acceptor, ended) = (acceptor.clone(), ended.clone());
            async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        ended(Handshake::Accepted);
                        Some(Ok(s))
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "peer TLS handshake failed");
                        ended(Handshake::Failed);
                        None
                    }
                    Err(_) => {
                        tracing::debug!("peer TLS handshake timed out");
                        ended(Handshake::TimedOut);
                        None
                    }
                }
            }
        })
        .buffer_unordered(MAX_HANDSHAKES)
        .filter_map(|r| async move { r })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificate_names_the_id_of_its_key() {
        let (cert, key) = generate_ca("test CA").unwrap();
        let ca = ClusterCa::from_pem(&cert, &key).unwrap();
        let node = KeyPair::generate().unwrap();
        let issued = ca.issue(&node).unwrap();
        assert_eq!(
            id_of_cert(&issued).unwrap(),
            id_of_key(&node.subject_public_key_info())
        );
        let tls = PeerTls::new(&ca, &node).unwrap();
        assert_eq!(tls.id(), id_of_key(&node.subject_public_key_info()));
    }

    #[test]
    fn a_ca_key_that_does_not_match_its_certificate_is_refused() {
        let (cert, _) = generate_ca("one").unwrap();
        let (_, other_key) = generate_ca("two").unwrap();
        let err = ClusterCa::from_pem(&cert, &other_key).err().unwrap();
        assert!(err.contains("does not belong"), "{err}");
        assert!(ClusterCa::from_pem("junk", &other_key).is_err());
    }

    #[test]
    fn the_key_is_kept_in_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_key(Some(dir.path())).unwrap();
        let b = load_or_create_key(Some(dir.path())).unwrap();
        assert_eq!(a.subject_public_key_info(), b.subject_public_key_info());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let c = load_or_create_key(None).unwrap();
        assert_ne!(a.subject_public_key_info(), c.subject_public_key_info());
    }
}
