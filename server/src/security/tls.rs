//! The replica's TLS listener: TLS 1.3 with the cluster CA, client
//! certificates verified when presented (users may present a token instead),
//! and each connection labelled with the identity its certificate names.
//! The configuration is rebuilt when its files change, so a rotated
//! certificate serves the next connection.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use autoglm_client::security::tls::{load_certs, load_key, provider};
use autoglm_client::security::{CertIdentity, Reloading, TlsFiles};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// A handshake that takes longer is dropped: a slow client cannot hold a slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a connection, as far as the transport knows.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The identity named by a verified certificate of this cluster.
    pub cert: Option<CertIdentity>,
}

fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, String> {
    let provider = provider();
    let ca = files
        .ca_file
        .as_ref()
        .ok_or("tls.ca_file: required (or run with --insecure)")?;
    let (Some(cert), Some(key)) = (&files.cert_file, &files.key_file) else {
        return Err("tls.cert_file and tls.key_file: required for a replica".into());
    };
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca)? {
        roots
            .add(c)
            .map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("tls.ca_file: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| format!("tls.cert_file/tls.key_file: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

pub type ServerTls = Arc<Reloading<rustls::ServerConfig>>;

/// Loads the replica's TLS files now; an error names the file.
pub fn server_tls(files: &TlsFiles) -> Result<ServerTls, String> {
    let owned = files.clone();
    let paths = [&files.ca_file, &files.cert_file, &files.key_file]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    Ok(Arc::new(Reloading::new(paths, move || {
        server_config(&owned)
    })?))
}

/// One accepted connection, TLS or (with `--insecure`) plain.
pub struct Conn {
    io: ConnIo,
    peer: PeerInfo,
}

enum ConnIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts connections on `listener`, doing each TLS handshake in its own
/// task so a slow one never blocks the others. `cluster` filters
/// certificate identities: one naming another cluster names nobody here.
pub fn incoming(
    listener: TcpListener,
    tls: Option<ServerTls>,
    cluster: String,
) -> ReceiverStream<std::io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (tx, tls, cluster) = (tx.clone(), tls.clone(), cluster.clone());
            tokio::spawn(async move {
                let conn = match tls {
                    None => Conn {
                        io: ConnIo::Plain(tcp),
                        peer: PeerInfo {
                            remote: Some(remote),
                            cert: None,
                        },
                    },
                    Some(tls) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(tls.get());
                        let stream =
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                                .await
                            {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(%remote, "TLS handshake refused: {e}");
                                    return;
                                }
                                Err(_) => return,
                            };
                        let cert = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .and_then(|leaf| CertIdentity::from_der(leaf))
                            .filter(|id| id.cluster() == cluster);
                        Conn {
                            io: ConnIo::Tls(Box::new(stream)),
                            peer: PeerInfo {
                                remote: Some(remote),
                                cert,
                            },
                        }
                    }
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    ReceiverStream::new(rx)
}
