//! Which `exec` attempts an agent runs and as whom: nothing unless its
//! configuration enables exec, only programs on its allow-list, and as an
//! unprivileged user whenever the agent itself runs as root (root only when
//! configured so explicitly). Decided here, once, for every exec attempt.

use crate::config::ExecConfig;

/// The user attempts run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecRights {
    /// `exec.enabled: false`: every exec attempt fails, saying so.
    Disabled,
    Enabled {
        /// Programs (argv[0] exactly as given); `None` for any (`"*"`).
        allow: Option<Vec<String>>,
        /// `None`: the agent's own user.
        run_as: Option<RunAs>,
    },
}

impl ExecRights {
    /// From the configuration, resolving `run_as` on this host.
    pub fn from_config(c: &ExecConfig) -> Result<Self, String> {
        if !c.enabled {
            return Ok(ExecRights::Disabled);
        }
        let allow = (!c.allow.iter().any(|p| p == "*")).then(|| c.allow.clone());
        let run_as = match c.run_as.as_str() {
            "" => None,
            user => {
                let found = nix::unistd::User::from_name(user)
                    .map_err(|e| format!("exec.run_as: cannot look up user '{user}': {e}"))?
                    .ok_or_else(|| format!("exec.run_as: no user '{user}' on this host"))?;
                Some(RunAs {
                    user: user.to_string(),
                    uid: found.uid.as_raw(),
                    gid: found.gid.as_raw(),
                })
            }
        };
        Ok(ExecRights::Enabled { allow, run_as })
    }

    /// Whether `program` may start, and as whom; `Err` says why not.
    pub fn admit(&self, program: &str) -> Result<Option<&RunAs>, String> {
        match self {
            ExecRights::Disabled => {
                Err("exec: this agent does not run exec tasks (its exec.enabled is false)".into())
            }
            ExecRights::Enabled {
                allow: Some(list), ..
            } if !list.iter().any(|p| p == program) => Err(format!(
                "exec: {} is not in this agent's exec.allow",
                quote(program)
            )),
            ExecRights::Enabled { run_as, .. } => Ok(run_as.as_ref()),
        }
    }
}

fn quote(value: &str) -> String {
    let cut: String = value.chars().take(100).collect();
    format!("'{cut}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(enabled: bool, allow: &[&str], run_as: &str) -> ExecConfig {
        ExecConfig {
            enabled,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            run_as: run_as.into(),
        }
    }

    #[test]
    fn disabled_by_default_allow_listed_when_enabled() {
        let off = ExecRights::from_config(&ExecConfig::default()).unwrap();
        assert!(off.admit("sh").unwrap_err().contains("exec.enabled"));
        let some = ExecRights::from_config(&config(true, &["python3", "/bin/true"], "")).unwrap();
        assert_eq!(some.admit("python3"), Ok(None));
        assert_eq!(some.admit("/bin/true"), Ok(None));
        assert!(some.admit("sh").unwrap_err().contains("exec.allow"));
        assert!(some.admit("true").is_err(), "paths are matched as given");
        let any = ExecRights::from_config(&config(true, &["*"], "")).unwrap();
        assert_eq!(any.admit("anything"), Ok(None));
    }

    #[test]
    fn run_as_resolves_on_this_host() {
        let rights = ExecRights::from_config(&config(true, &["*"], "root")).unwrap();
        let run_as = rights.admit("id").unwrap().unwrap();
        assert_eq!((run_as.uid, run_as.gid), (0, 0));
        let e = ExecRights::from_config(&config(true, &["*"], "no-such-user-here")).unwrap_err();
        assert!(e.contains("exec.run_as"), "{e}");
    }
}
