//! Transport security and credentials, shared by the CLI, the agent and the
//! replicas: TLS 1.3 with the cluster's CA ([`tls`]), the identities its
//! certificates name ([`identity`]), issuing them ([`pki`]), and bearer tokens.

pub mod identity;
pub mod pki;
mod reload;
pub mod tls;

pub use identity::{CertIdentity, Role};
pub use reload::Reloading;
pub use tls::{TlsFiles, Transport};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;

/// What a secret value reads as wherever it is not to be seen.
pub const REDACTED: &str = "<redacted>";

/// Request metadata carrying a user's token: `authorization: Bearer <token>`.
pub const AUTHORIZATION_METADATA: &str = "authorization";

/// What a client presents: its transport (with a certificate, perhaps) and
/// optionally a token.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub transport: Transport,
    pub token: Option<String>,
}

impl Credentials {
    /// From the environment, as the CLI reads it: `AUTOGLM_CA_FILE`,
    /// `AUTOGLM_CERT_FILE`, `AUTOGLM_KEY_FILE`, `AUTOGLM_TOKEN`, and
    /// `AUTOGLM_INSECURE=true` for plaintext.
    pub fn from_env() -> Result<Self, String> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let files = TlsFiles {
            ca_file: var("AUTOGLM_CA_FILE").map(Into::into),
            cert_file: var("AUTOGLM_CERT_FILE").map(Into::into),
            key_file: var("AUTOGLM_KEY_FILE").map(Into::into),
        };
        let insecure = var("AUTOGLM_INSECURE").is_some_and(|v| v == "true" || v == "1");
        Ok(Self {
            transport: Transport::choose(&files, insecure, "autoglm-client")?,
            token: std::env::var("AUTOGLM_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        })
    }

    /// Plaintext, no token: only for `--insecure` and tests of refusal.
    pub fn plaintext() -> Self {
        Self {
            transport: Transport::Plaintext,
            token: None,
        }
    }
}

/// Adds the bearer token to every request of a channel.
#[derive(Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    pub fn new(token: Option<&str>) -> Result<Self, String> {
        token
            .map(|t| {
                MetadataValue::try_from(format!("Bearer {t}"))
                    .map_err(|_| "token: must be printable ASCII".to_string())
            })
            .transpose()
            .map(Self)
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request
                .metadata_mut()
                .insert(AUTHORIZATION_METADATA, v.clone());
        }
        Ok(request)
    }
}
