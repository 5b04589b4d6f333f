//! HTTPS on the public listener (`api.tls_cert_file` + `api.tls_key_file`), for deployments
//! without a TLS-terminating proxy in front. rustls with the ring provider; HTTP/1.1 only, as the
//! plain listener.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use gengate_shared::config::ApiSettings;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete the TLS handshake before its connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS configuration of the public listener: `None` when neither file is set (plain HTTP).
/// Fails when only one of the two is set, or when a file is unreadable, holds no certificate or
/// key, or the key does not match the certificate.
pub fn server_config(api: &ApiSettings) -> anyhow::Result<Option<Arc<ServerConfig>>> {
    let (cert_file, key_file) = match (&api.tls_cert_file, &api.tls_key_file) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        (Some(_), None) => bail!(
            "api.tls_cert_file is set but api.tls_key_file is not: set both to serve HTTPS, or \
             neither"
        ),
        (None, Some(_)) => bail!(
            "api.tls_key_file is set but api.tls_cert_file is not: set both to serve HTTPS, or \
             neither"
        ),
    };
    let certs = read_certificates(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).with_context(|| {
        format!("api.tls_key_file {}: no readable PEM private key", key_file.display())
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "api.tls_cert_file {} and api.tls_key_file {}: not a usable certificate and key",
                cert_file.display(),
                key_file.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// The certificate chain in `path`, leaf first.
fn read_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("api.tls_cert_file {}: unreadable PEM", path.display()))?;
    if certs.is_empty() {
        bail!("api.tls_cert_file {}: no PEM certificate in it", path.display());
    }
    Ok(certs)
}

/// A TCP listener that hands out connections once their TLS handshake is done. Handshakes run
/// concurrently, so a slow or failing client delays nobody else; one that fails (or takes longer
/// than [`HANDSHAKE_TIMEOUT`]) is dropped and logged at debug level.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    /// Handshakes under way; aborted when the listener is dropped (at shutdown).
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    /// Serves TLS with `config` on the connections `tcp` accepts.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        Self { tcp, acceptor: TlsAcceptor::from(config), handshakes: JoinSet::new() }
    }
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("tcp", &self.tcp)
            .field("handshakes", &self.handshakes.len())
            .finish_non_exhaustive()
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                // Retries (after a pause) on errors such as too many open files.
                (stream, peer) = axum::serve::Listener::accept(&mut self.tcp) => {
                    let acceptor = self.acceptor.clone();
                    self.handshakes.spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => Some((tls, peer)),
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                                None
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                None
                            }
                        }
                    });
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
