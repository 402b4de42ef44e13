//! How the replica and the agent load their configuration, the one chain
//! both follow: defaults, then a YAML file (`--config`), then `AUTOGLM_*`
//! environment variables (nested keys joined by `__`), then command-line
//! flags; later sources win. Unknown keys are errors, so a typo never falls
//! back to a default silently.
//!
//! The environment is shared by several programs (`AUTOGLM_ENDPOINTS` is the
//! CLI's and the agent's, `AUTOGLM_NODE_ID` the replica's), so a program
//! reads only the variables that name one of its own top-level keys. Those
//! keys are the configuration type's own field names, read from its serde
//! implementation: no second list to keep in step.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_aux::serde_introspection::serde_introspect;

/// Prefix of environment overrides, e.g. `AUTOGLM_RAFT__HEARTBEAT_INTERVAL_MS=100`.
pub const ENV_PREFIX: &str = "AUTOGLM_";

/// A configuration that cannot be loaded or is invalid; one line that names
/// the key or the file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("config: {0}")]
pub struct ConfigError(pub String);

/// `defaults`, overridden by `file`, the environment and `flags` (a struct
/// serializing only the flags given). Values are not validated here.
pub fn load<T>(defaults: T, file: Option<&Path>, flags: impl Serialize) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned,
{
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError(format!(
                "file {} does not exist or is not a file",
                path.display()
            )));
        }
        figment = figment.merge(Yaml::file_exact(path));
    }
    let keys = serde_introspect::<T>();
    let env = Env::prefixed(ENV_PREFIX).split("__").filter(move |key| {
        // By now `split("__")` has turned the separators into dots.
        let first = key.as_str().split('.').next().unwrap_or_default();
        keys.iter().any(|k| first.eq_ignore_ascii_case(k))
    });
    figment
        .merge(env)
        .merge(Serialized::defaults(flags))
        .extract()
        .map_err(|e| ConfigError(e.to_string().replace('\n', " ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Example {
        name: String,
        inner: Inner,
        /// Absent from the serialized defaults, still one of the keys.
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        port: u16,
    }

    impl Default for Example {
        fn default() -> Self {
            Self {
                name: "default".into(),
                inner: Inner::default(),
                limit: None,
            }
        }
    }

    impl Default for Inner {
        fn default() -> Self {
            Self { port: 1 }
        }
    }

    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
    fn later_sources_win_and_foreign_variables_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.yaml", "name: file\ninner:\n  port: 2\n")?;
            jail.set_env("AUTOGLM_INNER__PORT", "3");
            jail.set_env("AUTOGLM_LIMIT", "7");
            // Another program's variable: not a key of Example.
            jail.set_env("AUTOGLM_ENDPOINTS", "x:1");
            let flags = Flags {
                name: Some("flag".into()),
            };
            let loaded: Example =
                load(Example::default(), Some(Path::new("c.yaml")), flags).map_err(|e| e.0)?;
            assert_eq!(
                loaded,
                Example {
                    name: "flag".into(),
                    inner: Inner { port: 3 },
                    limit: Some(7),
                }
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
    fn unknown_keys_and_missing_files_are_errors_naming_them() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.yaml", "nmae: typo\n")?;
            let err = load(
                Example::default(),
                Some(Path::new("c.yaml")),
                Flags::default(),
            )
            .unwrap_err();
            assert!(err.0.contains("nmae"), "{err}");
            let err = load(
                Example::default(),
                Some(Path::new("absent.yaml")),
                Flags::default(),
            )
            .unwrap_err();
            assert!(err.0.contains("absent.yaml"), "{err}");
            Ok(())
        });
    }
}
