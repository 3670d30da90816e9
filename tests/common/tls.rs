//! TLS ends for the SIP tests: a trunk that connects to the proxy, a PBX
//! that accepts the proxy's connections, both with rustls.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{Tcp, WAIT};

pub type ClientConn = Tcp<tokio_rustls::client::TlsStream<TcpStream>>;
pub type ServerConn = Tcp<tokio_rustls::server::TlsStream<TcpStream>>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A client trusting `ca_pem`, presenting `identity` (certificate, key PEM)
/// when given.
pub fn connector(ca_pem: &str, identity: Option<(&str, &str)>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in chain(ca_pem) {
        roots.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, k)) => builder.with_client_auth_cert(chain(cert), key(k)).unwrap(),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

/// The trunk's side: a TLS connection to the proxy, verified for 127.0.0.1.
pub async fn connect(to: SocketAddr, connector: &TlsConnector) -> std::io::Result<ClientConn> {
    let tcp = TcpStream::connect(to).await?;
    let name = ServerName::IpAddress(to.ip().into());
    let stream = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
    Ok(Tcp {
        stream,
        buf: Vec::new(),
    })
}

/// A server serving `cert` (PEM chain) with `key`.
pub fn acceptor(cert: &str, k: &str) -> TlsAcceptor {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain(cert), key(k))
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// The PBX side: the proxy's next TLS connection to `listener`.
pub async fn accept(listener: &TcpListener, acceptor: &TlsAcceptor) -> ServerConn {
    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("the proxy should connect to the TLS next hop")
        .unwrap();
    let stream = tokio::time::timeout(WAIT, acceptor.accept(tcp))
        .await
        .expect("TLS handshake with the proxy")
        .expect("the proxy completes the TLS handshake");
    Tcp {
        stream,
        buf: Vec::new(),
    }
}

/// The certificate the far end of a client connection served (DER).
pub fn served_certificate(conn: &ClientConn) -> Vec<u8> {
    let (_, session) = conn.stream.get_ref();
    session.peer_certificates().expect("a server certificate")[0].to_vec()
}
