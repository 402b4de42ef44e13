//! Who a certificate or token speaks for. A certificate names its holder in
//! one URI subject-alternative name, `autoglm://<cluster>/<kind>/...`; the
//! cluster's CA vouches for it, so the name is all the server needs.

use std::fmt;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What an identity may do; the server's authorization table maps each
/// method to the roles allowed to call it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Role {
    /// Membership, configuration, tokens, node removal; everything else too.
    Admin,
    /// Drain and undrain nodes, cancel any job, read configuration.
    Operator,
    /// Submit jobs; read everything but secrets; cancel its own jobs.
    Submitter,
    /// Read everything except secrets.
    Reader,
    /// A worker agent, for its own node only.
    Agent,
    /// A scheduler replica, for the replica protocol.
    Replica,
}

/// The roles a user (a certificate or a token) may hold.
pub const USER_ROLES: [Role; 4] = [Role::Admin, Role::Operator, Role::Submitter, Role::Reader];

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Submitter => "submitter",
            Role::Reader => "reader",
            Role::Agent => "agent",
            Role::Replica => "replica",
        }
    }

    /// A user role by name; agents and replicas get theirs from their certificates only.
    pub fn parse_user(s: &str) -> Result<Role, String> {
        USER_ROLES
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role '{s}': expected admin, operator, submitter or reader")
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The holder named by a certificate of the cluster's CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertIdentity {
    Replica {
        cluster: String,
        id: u64,
    },
    Agent {
        cluster: String,
        node: String,
    },
    User {
        cluster: String,
        name: String,
        role: Role,
    },
}

/// Names of nodes and users inside certificates: short, and safe in a URI path.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what}: '{}' must be 1 to 128 characters of letters, digits, '.', '_' and '-'",
            name.chars().take(100).collect::<String>()
        ))
    }
}

const SCHEME: &str = "autoglm://";

impl CertIdentity {
    pub fn cluster(&self) -> &str {
        match self {
            CertIdentity::Replica { cluster, .. }
            | CertIdentity::Agent { cluster, .. }
            | CertIdentity::User { cluster, .. } => cluster,
        }
    }

    pub fn role(&self) -> Role {
        match self {
            CertIdentity::Replica { .. } => Role::Replica,
            CertIdentity::Agent { .. } => Role::Agent,
            CertIdentity::User { role, .. } => *role,
        }
    }

    /// The principal's name: `replica-<id>`, the node, or the user.
    pub fn name(&self) -> String {
        match self {
            CertIdentity::Replica { id, .. } => format!("replica-{id}"),
            CertIdentity::Agent { node, .. } => node.clone(),
            CertIdentity::User { name, .. } => name.clone(),
        }
    }

    pub fn to_uri(&self) -> String {
        match self {
            CertIdentity::Replica { cluster, id } => format!("{SCHEME}{cluster}/replica/{id}"),
            CertIdentity::Agent { cluster, node } => format!("{SCHEME}{cluster}/agent/{node}"),
            CertIdentity::User {
                cluster,
                name,
                role,
            } => format!("{SCHEME}{cluster}/user/{role}/{name}"),
        }
    }

    pub fn parse_uri(uri: &str) -> Option<CertIdentity> {
        let rest = uri.strip_prefix(SCHEME)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let cluster = parts.first()?.to_string();
        let identity = match parts[1..] {
            ["replica", id] => CertIdentity::Replica {
                cluster,
                id: id.parse().ok().filter(|id| *id > 0)?,
            },
            ["agent", node] => CertIdentity::Agent {
                cluster,
                node: node.to_string(),
            },
            ["user", role, name] => CertIdentity::User {
                cluster,
                name: name.to_string(),
                role: Role::parse_user(role).ok()?,
            },
            _ => return None,
        };
        let names_ok = check_name("cluster", identity.cluster()).is_ok()
            && check_name("name", &identity.name()).is_ok();
        names_ok.then_some(identity)
    }

    /// The identity a DER certificate names, if it names exactly one.
    pub fn from_der(der: &[u8]) -> Option<CertIdentity> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        let mut found = san.value.general_names.iter().filter_map(|n| match n {
            GeneralName::URI(uri) => CertIdentity::parse_uri(uri),
            _ => None,
        });
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }
}

impl fmt::Display for CertIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        let all = [
            CertIdentity::Replica {
                cluster: "prod".into(),
                id: 3,
            },
            CertIdentity::Agent {
                cluster: "prod".into(),
                node: "gpu-1".into(),
            },
            CertIdentity::User {
                cluster: "prod".into(),
                name: "alice".into(),
                role: Role::Operator,
            },
        ];
        for id in all {
            assert_eq!(CertIdentity::parse_uri(&id.to_uri()), Some(id));
        }
    }

    #[test]
    fn malformed_uris_name_nobody() {
        for bad in [
            "https://prod/replica/1",
            "autoglm://prod/replica/0",
            "autoglm://prod/replica/x",
            "autoglm://prod/user/root/alice",
            "autoglm://prod/user/admin/a/b",
            "autoglm://prod/agent/../x",
            "autoglm:///agent/n",
        ] {
            assert_eq!(CertIdentity::parse_uri(bad), None, "{bad}");
        }
    }
}
