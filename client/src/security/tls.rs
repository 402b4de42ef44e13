//! TLS 1.3 (rustls, ring) for every gRPC hop, and the one place where
//! channels to replicas are made. The connector reads the current client
//! configuration at each connect, so rotated certificates take effect on the
//! next connection without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tonic::transport::{Channel, Endpoint, Uri};

use super::identity::{CertIdentity, Role};
use super::reload::Reloading;

/// The files that make a TLS identity: the cluster CA, and this holder's
/// certificate and key (optional for users, who may present a token instead).
/// Also the `--ca-file`, `--cert-file` and `--key-file` flags of the replica
/// and the agent.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::Args,
)]
#[serde(deny_unknown_fields, default)]
pub struct TlsFiles {
    // Unset fields are left out when serialized, so a partial set (flags)
    // overrides only what it sets.
    /// The cluster CA certificate(s), PEM (config key tls.ca_file).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// This process's certificate, PEM (config key tls.cert_file).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM (config key tls.key_file).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }

    pub fn is_complete(&self) -> bool {
        self.ca_file.is_some() && self.cert_file.is_some() && self.key_file.is_some()
    }

    /// These files as the `tls:` section of a replica's or agent's YAML configuration.
    pub fn yaml_section(&self) -> String {
        #[derive(serde::Serialize)]
        struct Section<'a> {
            tls: &'a TlsFiles,
        }
        serde_yaml::to_string(&Section { tls: self })
            .unwrap_or_else(|e| format!("# tls: not serializable: {e}\n"))
    }

    /// All three files under `dir` with the names `autoglm tls` writes.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self {
            ca_file: Some(dir.join("ca.pem")),
            cert_file: Some(dir.join(format!("{name}.pem"))),
            key_file: Some(dir.join(format!("{name}-key.pem"))),
        }
    }

    fn paths(&self) -> Vec<PathBuf> {
        [&self.ca_file, &self.cert_file, &self.key_file]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// The key pair, if both files are given; one without the other is an error.
    fn key_pair(
        &self,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, String> {
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Ok(Some((load_certs(cert)?, load_key(key)?))),
            (None, None) => Ok(None),
            _ => Err("tls.cert_file and tls.key_file: give both or neither".into()),
        }
    }

    /// The cluster named by the CA certificate.
    fn ca_cluster(&self) -> Result<String, String> {
        let ca = self.ca_file.as_ref().ok_or("tls.ca_file: required")?;
        let pem = std::fs::read_to_string(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        super::pki::ca_cluster(&pem).map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, String> {
        let ca = self
            .ca_file
            .as_ref()
            .ok_or("tls.ca_file: required (or run with --insecure)")?;
        let mut roots = RootCertStore::empty();
        for cert in load_certs(ca)? {
            roots
                .add(cert)
                .map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))?;
        }
        Ok(Arc::new(roots))
    }
}

/// Starts the message of a connection whose TLS handshake failed, so callers
/// can tell an untrusted peer from an unreachable one.
pub const TLS_HANDSHAKE_FAILED: &str = "TLS handshake failed";

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Accepts a server only if the CA signed its certificate for the address
/// dialled *and* the certificate names a replica: an agent's or a user's
/// certificate from the same CA cannot pose as a replica.
#[derive(Debug)]
struct ReplicaServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    /// The cluster the CA was made for.
    cluster: String,
}

impl ServerCertVerifier for ReplicaServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        match CertIdentity::from_der(end_entity) {
            Some(id) if id.role() == Role::Replica && id.cluster() == self.cluster => Ok(verified),
            _ => Err(rustls::Error::General(format!(
                "the server's certificate does not name a replica of cluster '{}'",
                self.cluster
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn client_config(files: &TlsFiles) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let inner = WebPkiServerVerifier::builder_with_provider(files.roots()?, provider.clone())
        .build()
        .map_err(|e| format!("tls.ca_file: {e}"))?;
    let cluster = files.ca_cluster()?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ReplicaServerVerifier { inner, cluster }));
    let mut config = match files.key_pair()? {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("tls.cert_file/tls.key_file: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// How this process reaches replicas: TLS from files (reloaded when they
/// change), or plaintext, which only an explicit `--insecure` chooses.
#[derive(Clone)]
pub enum Transport {
    Tls(Arc<Reloading<rustls::ClientConfig>>),
    Plaintext,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tls(_) => "Tls",
            Transport::Plaintext => "Plaintext",
        })
    }
}

impl Transport {
    /// TLS with `files`; fails now, naming the file, if they cannot be loaded.
    pub fn tls(files: &TlsFiles) -> Result<Self, String> {
        let owned = files.clone();
        let reloading = Reloading::new(files.paths(), move || client_config(&owned))?;
        Ok(Transport::Tls(Arc::new(reloading)))
    }

    /// TLS from `files`, or plaintext when `insecure`; the one rule every
    /// binary follows. Plaintext is announced on stderr.
    pub fn choose(files: &TlsFiles, insecure: bool, program: &str) -> Result<Self, String> {
        if insecure {
            eprintln!("{program}: warning: --insecure: talking to replicas in plaintext, without authentication of either side");
            return Ok(Transport::Plaintext);
        }
        Self::tls(files)
    }

    /// An endpoint for `addr` (host:port) whose options the caller may add to.
    pub fn endpoint(addr: &str) -> Result<Endpoint, String> {
        // The scheme only names HTTP/2 framing: the connector below does TLS.
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        Endpoint::from_shared(uri).map_err(|e| format!("invalid address '{addr}': {e}"))
    }

    /// A channel that connects on first use (and again after a failure).
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        match self {
            Transport::Plaintext => endpoint.tcp_nodelay(true).connect_lazy(),
            Transport::Tls(config) => endpoint.connect_with_connector_lazy(connector(config)),
        }
    }

    /// A channel connected now: the error says why a replica is unreachable.
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        match self {
            Transport::Plaintext => endpoint.tcp_nodelay(true).connect().await,
            Transport::Tls(config) => endpoint.connect_with_connector(connector(config)).await,
        }
    }
}

type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Dials and does the handshake with the client configuration current at
/// each connect.
fn connector(
    config: &Arc<Reloading<rustls::ClientConfig>>,
) -> impl tower::Service<
    Uri,
    Response = TlsIo,
    Error = std::io::Error,
    Future = impl std::future::Future<Output = Result<TlsIo, std::io::Error>> + Send,
> + Clone
       + Send
       + 'static {
    let config = config.clone();
    tower::service_fn(move |uri: Uri| {
        let config = config.get();
        async move { connect_tls(uri, config).await }
    })
}

async fn connect_tls(uri: Uri, config: Arc<rustls::ClientConfig>) -> Result<TlsIo, std::io::Error> {
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_string());
    let host = uri
        .host()
        .ok_or_else(|| invalid("address without a host"))?;
    let port = uri
        .port_u16()
        .ok_or_else(|| invalid("address without a port"))?;
    // IPv6 hosts come bracketed in URIs.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_string()).map_err(|_| invalid("invalid host name"))?;
    let tcp = tokio::net::TcpStream::connect((bare, port)).await?;
    tcp.set_nodelay(true)?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("{TLS_HANDSHAKE_FAILED}: {e}")))?;
    Ok(hyper_util::rt::TokioIo::new(tls))
}
