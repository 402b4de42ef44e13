//! The cluster's certificate authority and the certificates it issues
//! (`autoglm tls ...`), with rcgen. The CA certificate names its cluster, so
//! every certificate it signs names the same one. Keys are written 0600;
//! files are written whole (a temporary file renamed into place), so a
//! process reloading them never reads half a certificate.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::identity::{check_name, CertIdentity};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";

/// Hosts a replica certificate is valid for when none are given.
pub const DEFAULT_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

fn ca_uri(cluster: &str) -> String {
    format!("autoglm://{cluster}/ca")
}

fn validity(params: &mut CertificateParams, days: u32) -> Result<(), String> {
    if days == 0 || days > 3650 * 3 {
        return Err(format!("days: {days} is out of range 1..=10950"));
    }
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that differ between hosts.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days.into());
    Ok(())
}

fn write_file(path: &Path, contents: &str, secret: bool, force: bool) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() && !force {
        return Err(format!(
            "{} exists; pass --force to replace it",
            path.display()
        ));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a secret (a token) readable by its owner only.
pub fn write_secret(path: &Path, secret: &str) -> Result<(), String> {
    write_file(path, &format!("{secret}\n"), true, true)
}

/// Creates `ca.pem` and `ca-key.pem` in `dir` for cluster `cluster`.
pub fn create_ca(dir: &Path, cluster: &str, days: u32, force: bool) -> Result<PathBuf, String> {
    check_name("cluster", cluster)?;
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::default();
    validity(&mut params, days)?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("autoglm {cluster} CA"));
    params.subject_alt_names = vec![SanType::URI(
        ca_uri(cluster).try_into().map_err(|e| format!("{e}"))?,
    )];
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let cert_path = dir.join(CA_CERT);
    write_file(&dir.join(CA_KEY), &key.serialize_pem(), true, force)?;
    write_file(&cert_path, &cert.pem(), false, force)?;
    Ok(cert_path)
}

/// The cluster a CA certificate (PEM) was made for.
pub fn ca_cluster(ca_pem: &str) -> Result<String, String> {
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e: rustls_pki_types::pem::Error| format!("CA certificate: {e}"))?;
    let der: rustls_pki_types::CertificateDer = der;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| format!("CA certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .ok_or("CA certificate: not made by `autoglm tls ca create` (no cluster name)")?;
    san.value
        .general_names
        .iter()
        .find_map(|n| match n {
            GeneralName::URI(uri) => uri
                .strip_prefix("autoglm://")
                .and_then(|r| r.strip_suffix("/ca"))
                .map(str::to_string),
            _ => None,
        })
        .ok_or_else(|| {
            "CA certificate: not made by `autoglm tls ca create` (no cluster name)".into()
        })
}

/// What to issue a certificate for; the cluster comes from the CA.
#[derive(Debug, Clone)]
pub enum Subject {
    Replica { id: u64, hosts: Vec<String> },
    Agent { node: String },
    User { name: String, role: super::Role },
}

/// Issues a certificate with the CA in `ca_dir`, written as `<out>.pem` and
/// `<out>-key.pem` in `out_dir`; returns the identity it names.
pub fn issue(
    ca_dir: &Path,
    subject: Subject,
    out_dir: &Path,
    out: &str,
    days: u32,
    force: bool,
) -> Result<CertIdentity, String> {
    let read = |name: &str| {
        let path = ca_dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let (ca_pem, ca_key_pem) = (read(CA_CERT)?, read(CA_KEY)?);
    let cluster = ca_cluster(&ca_pem)?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| format!("{CA_KEY}: {e}"))?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| format!("{CA_CERT}: {e}"))?;
    let (identity, hosts, server) = match subject {
        Subject::Replica { id, hosts } => {
            if id == 0 {
                return Err("id: must be positive".into());
            }
            let hosts = if hosts.is_empty() {
                DEFAULT_HOSTS.iter().map(|h| h.to_string()).collect()
            } else {
                hosts
            };
            (CertIdentity::Replica { cluster, id }, hosts, true)
        }
        Subject::Agent { node } => {
            check_name("node", &node)?;
            (CertIdentity::Agent { cluster, node }, Vec::new(), false)
        }
        Subject::User { name, role } => {
            check_name("name", &name)?;
            super::Role::parse_user(role.as_str())?;
            (
                CertIdentity::User {
                    cluster,
                    name,
                    role,
                },
                Vec::new(),
                false,
            )
        }
    };
    let mut params =
        CertificateParams::new(hosts).map_err(|e| format!("host: not a DNS name or IP: {e}"))?;
    validity(&mut params, days)?;
    params
        .distinguished_name
        .push(DnType::CommonName, identity.to_uri());
    params.subject_alt_names.push(SanType::URI(
        identity.to_uri().try_into().map_err(|e| format!("{e}"))?,
    ));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = if server {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    write_file(
        &out_dir.join(format!("{out}-key.pem")),
        &key.serialize_pem(),
        true,
        force,
    )?;
    write_file(
        &out_dir.join(format!("{out}.pem")),
        &cert.pem(),
        false,
        force,
    )?;
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn keys_are_written_for_their_owner_only_and_never_replaced_unasked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        create_ca(d, "prod", 2, false).unwrap();
        let agent = Subject::Agent {
            node: "gpu-1".into(),
        };
        issue(d, agent, d, "agent-gpu-1", 2, false).unwrap();
        // Whatever the umask: no group or other access to a key.
        assert_eq!(mode(&d.join(CA_KEY)) & 0o077, 0);
        assert_eq!(mode(&d.join("agent-gpu-1-key.pem")) & 0o077, 0);
        assert_ne!(mode(&d.join(CA_CERT)) & 0o400, 0);
        let e = create_ca(d, "prod", 2, false).unwrap_err();
        assert!(e.contains("--force"), "{e}");
        let user = Subject::User {
            name: "alice".into(),
            role: super::super::Role::Reader,
        };
        let e = issue(d, user.clone(), d, "agent-gpu-1", 2, false).unwrap_err();
        assert!(e.contains("exists"), "{e}");
        issue(d, user, d, "agent-gpu-1", 2, true).unwrap();
        assert_eq!(mode(&d.join("agent-gpu-1-key.pem")) & 0o077, 0);
        let token = d.join("token");
        write_secret(&token, "s3cret").unwrap();
        assert_eq!(mode(&token) & 0o077, 0);
    }
}
