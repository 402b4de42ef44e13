//! The runtime configuration store: versioned keys, written only through the log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest key, in bytes.
pub const KEY_LEN_MAX: usize = 256;
/// Largest value, in bytes.
pub const VALUE_LEN_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigEntry {
    pub key: String,
    pub value: String,
    pub version: u64,
    pub mod_index: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigStore {
    entries: BTreeMap<String, ConfigEntry>,
}

/// Why a key or value is refused; the message names the field.
pub fn validate(key: &str, value: Option<&str>) -> Result<(), String> {
    if key.is_empty() || key.len() > KEY_LEN_MAX {
        return Err(format!(
            "key: must be 1 to {KEY_LEN_MAX} bytes, got {}",
            key.len()
        ));
    }
    if let Some(bad) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')))
    {
        return Err(format!(
            "key: character {bad:?} not allowed (use A-Z a-z 0-9 . _ / -)"
        ));
    }
    if let Some(v) = value {
        if v.len() > VALUE_LEN_MAX {
            return Err(format!(
                "value: {} bytes is over the {VALUE_LEN_MAX}-byte limit",
                v.len()
            ));
        }
    }
    Ok(())
}

/// Outcome of a write.
pub enum Written {
    Ok(ConfigEntry),
    VersionMismatch(Option<ConfigEntry>),
}

impl ConfigStore {
    pub fn get(&self, key: &str) -> Option<&ConfigEntry> {
        self.entries.get(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn put(
        &mut self,
        key: &str,
        value: &str,
        expected_version: Option<u64>,
        index: u64,
    ) -> Written {
        let current = self.entries.get(key);
        let current_version = current.map_or(0, |e| e.version);
        if expected_version.is_some_and(|v| v != current_version) {
            return Written::VersionMismatch(current.cloned());
        }
        let entry = ConfigEntry {
            key: key.to_string(),
            value: value.to_string(),
            version: current_version + 1,
            mod_index: index,
        };
        self.entries.insert(key.to_string(), entry.clone());
        Written::Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_grow_and_cas_checks_them() {
        let mut s = ConfigStore::default();
        assert!(
            matches!(s.put("a", "1", Some(0), 5), Written::Ok(ref e) if e.version == 1 && e.mod_index == 5)
        );
        assert!(
            matches!(s.put("a", "2", Some(0), 6), Written::VersionMismatch(Some(ref e)) if e.value == "1")
        );
        assert!(matches!(s.put("a", "2", Some(1), 7), Written::Ok(ref e) if e.version == 2));
        assert!(matches!(s.put("a", "3", None, 8), Written::Ok(ref e) if e.version == 3));
        assert!(matches!(
            s.put("b", "x", Some(4), 9),
            Written::VersionMismatch(None)
        ));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn validation_names_the_field() {
        assert!(validate("", None).unwrap_err().starts_with("key:"));
        assert!(validate("a b", None).unwrap_err().starts_with("key:"));
        assert!(validate("placement/policy", Some("load")).is_ok());
        assert!(validate("k", Some(&"x".repeat(VALUE_LEN_MAX + 1)))
            .unwrap_err()
            .starts_with("value:"));
    }
}
