//! Sequential specifications: etcd's compare-and-set register, a string
//! key-value map with get/put/append, and our config-store register.

use super::search::Model;

/// A single register as Jepsen's etcd test uses it: absent at first, then an
/// integer; read, write, compare-and-set.
#[derive(Debug, Clone, Copy, Default)]
pub struct CasRegister;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasInput {
    Read,
    Write(i64),
    Cas { from: i64, to: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutput {
    /// Value read; `None`: the register does not exist.
    Read(Option<i64>),
    Write,
    /// `applied: false` (a `:fail :cas`): the value was not `from`.
    Cas {
        applied: bool,
    },
}

impl Model for CasRegister {
    type State = Option<i64>;
    type Input = CasInput;
    type Output = CasOutput;

    fn init(&self) -> Option<i64> {
        None
    }

    fn step(
        &self,
        s: &Option<i64>,
        input: &CasInput,
        output: Option<&CasOutput>,
    ) -> Option<Option<i64>> {
        match (input, output) {
            (CasInput::Read, Some(CasOutput::Read(v))) => (s == v).then_some(*s),
            (CasInput::Write(v), Some(CasOutput::Write) | None) => Some(Some(*v)),
            (CasInput::Cas { from, to }, Some(CasOutput::Cas { applied: true })) => {
                (*s == Some(*from)).then_some(Some(*to))
            }
            (CasInput::Cas { from, .. }, Some(CasOutput::Cas { applied: false })) => {
                (*s != Some(*from)).then_some(*s)
            }
            // Indeterminate: applied if it could be; a no-op otherwise, which
            // is the same as never taking effect.
            (CasInput::Cas { from, to }, None) => (*s == Some(*from)).then_some(Some(*to)),
            // Indeterminate reads have no effect; mismatched outputs never fit.
            _ => None,
        }
    }
}

/// A map from string keys to strings, each key starting as "": `get`,
/// `put` (set) and `append` (concatenate). Partitioned by key.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvStore;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvInput {
    Get { key: String },
    Put { key: String, value: String },
    Append { key: String, value: String },
}

impl KvInput {
    pub fn key(&self) -> &str {
        match self {
            KvInput::Get { key } | KvInput::Put { key, .. } | KvInput::Append { key, .. } => key,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOutput {
    /// The value read.
    Get(String),
    /// `put` or `append` done.
    Done,
}

impl Model for KvStore {
    type State = String;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> String {
        String::new()
    }

    fn step(&self, s: &String, input: &KvInput, output: Option<&KvOutput>) -> Option<String> {
        match (input, output) {
            (KvInput::Get { .. }, Some(KvOutput::Get(v))) => (s == v).then(|| s.clone()),
            (KvInput::Put { value, .. }, Some(KvOutput::Done) | None) => Some(value.clone()),
            (KvInput::Append { value, .. }, Some(KvOutput::Done) | None) => {
                Some(format!("{s}{value}"))
            }
            _ => None,
        }
    }

    fn partition<'a>(&self, input: &'a KvInput) -> &'a str {
        input.key()
    }
}

/// Our configuration store, one versioned register per key: a key is absent
/// until written; every write (or applied compare-and-set) stores a value
/// and adds one to the version, which starts at 1. Partitioned by key.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConfigRegister;

/// A value and its version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Versioned {
    pub value: String,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigInput {
    pub key: String,
    pub command: ConfigCommand,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigCommand {
    Read,
    Write {
        value: String,
    },
    /// Applied only when the key's version is `expected_version` (0: the key
    /// must not exist).
    Cas {
        expected_version: u64,
        value: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOutput {
    /// What a read returned (`None`: absent).
    Read(Option<Versioned>),
    /// The version after the write.
    Written { version: u64 },
    /// The compare-and-set applied; the version after it.
    CasApplied { version: u64 },
    /// The compare-and-set found another version and did nothing.
    CasMismatch,
}

fn version_of(s: &Option<Versioned>) -> u64 {
    s.as_ref().map_or(0, |v| v.version)
}

impl Model for ConfigRegister {
    type State = Option<Versioned>;
    type Input = ConfigInput;
    type Output = ConfigOutput;

    fn init(&self) -> Option<Versioned> {
        None
    }

    fn step(
        &self,
        s: &Option<Versioned>,
        input: &ConfigInput,
        output: Option<&ConfigOutput>,
    ) -> Option<Option<Versioned>> {
        let current = version_of(s);
        let written = |value: &String| {
            Some(Versioned {
                value: value.clone(),
                version: current + 1,
            })
        };
        match (&input.command, output) {
            (ConfigCommand::Read, Some(ConfigOutput::Read(v))) => (s == v).then(|| s.clone()),
            (ConfigCommand::Write { value }, None) => Some(written(value)),
            (ConfigCommand::Write { value }, Some(ConfigOutput::Written { version })) => {
                (*version == current + 1).then(|| written(value))
            }
            (
                ConfigCommand::Cas {
                    expected_version,
                    value,
                },
                Some(ConfigOutput::CasApplied { version }),
            ) => (current == *expected_version && *version == current + 1).then(|| written(value)),
            (
                ConfigCommand::Cas {
                    expected_version, ..
                },
                Some(ConfigOutput::CasMismatch),
            ) => (current != *expected_version).then(|| s.clone()),
            (
                ConfigCommand::Cas {
                    expected_version,
                    value,
                },
                None,
            ) => (current == *expected_version).then(|| written(value)),
            _ => None,
        }
    }

    fn partition<'a>(&self, input: &'a ConfigInput) -> &'a str {
        &input.key
    }

    fn describe(&self, input: &ConfigInput, output: Option<&ConfigOutput>) -> String {
        let call = match &input.command {
            ConfigCommand::Read => format!("read {}", input.key),
            ConfigCommand::Write { value } => format!("write {} = {value:?}", input.key),
            ConfigCommand::Cas {
                expected_version,
                value,
            } => format!("cas {} v{expected_version} -> {value:?}", input.key),
        };
        let ret = match output {
            None => "? (indeterminate)".to_string(),
            Some(ConfigOutput::Read(None)) => "absent".to_string(),
            Some(ConfigOutput::Read(Some(v))) => format!("{:?} v{}", v.value, v.version),
            Some(ConfigOutput::Written { version }) => format!("ok v{version}"),
            Some(ConfigOutput::CasApplied { version }) => format!("ok v{version}"),
            Some(ConfigOutput::CasMismatch) => "fail (version mismatch)".to_string(),
        };
        format!("{call} => {ret}")
    }

    fn describe_state(&self, state: &Option<Versioned>) -> String {
        match state {
            None => "absent".to_string(),
            Some(v) => format!("{:?} v{}", v.value, v.version),
        }
    }
}
