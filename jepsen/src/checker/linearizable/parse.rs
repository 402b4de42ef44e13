//! Reading histories into model operations: Jepsen's etcd log lines and
//! EDN-map lines (the test vectors), and our own `history.jsonl` ops.
//!
//! In the vector formats the time of an event is its line number.

use std::collections::HashMap;

use serde_json::Value;

use super::models::{
    CasInput, CasOutput, ConfigCommand, ConfigInput, ConfigOutput, KvInput, KvOutput, Versioned,
};
use super::search::Operation;
use crate::history::{pairs, Op, OpType};

/// A line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

fn kind_of(s: &str) -> Option<Kind> {
    Some(match s {
        ":invoke" | "invoke" => Kind::Invoke,
        ":ok" | "ok" => Kind::Ok,
        ":fail" | "fail" => Kind::Fail,
        ":info" | "info" => Kind::Info,
        _ => return None,
    })
}

/// Pairs invocations with completions per process. `complete` turns an
/// invocation and its completion (None: none was recorded) into an
/// operation, or drops it (returns None).
struct Pairer<I, O> {
    open: HashMap<String, (usize, I)>,
    ops: Vec<(usize, Operation<I, O>)>,
}

impl<I, O> Pairer<I, O> {
    fn new() -> Self {
        Pairer {
            open: HashMap::new(),
            ops: Vec::new(),
        }
    }

    fn invoke(
        &mut self,
        process: &str,
        line: usize,
        input: I,
        keep_indeterminate: impl Fn(&I) -> bool,
    ) {
        if let Some((at, prev)) = self.open.insert(process.to_string(), (line, input)) {
            // A new invocation without a completion of the previous one.
            if keep_indeterminate(&prev) {
                self.ops
                    .push((at, Operation::indeterminate(at as u64, at as u64, prev)));
            }
        }
    }

    fn take(&mut self, process: &str) -> Option<(usize, I)> {
        self.open.remove(process)
    }

    fn finish(mut self, keep_indeterminate: impl Fn(&I) -> bool) -> Vec<Operation<I, O>> {
        for (_, (at, input)) in self.open.drain() {
            if keep_indeterminate(&input) {
                self.ops
                    .push((at, Operation::indeterminate(at as u64, at as u64, input)));
            }
        }
        self.ops.sort_by_key(|(at, _)| *at);
        self.ops.into_iter().map(|(_, op)| op).collect()
    }
}

/// Reads a Jepsen etcd log (`INFO  jepsen.util - <process> <type> <f> <value>`).
/// `:info` and unfinished operations are indeterminate; failed and
/// indeterminate reads are dropped (reads have no effect); `:fail :cas` is a
/// completed cas that was not applied. Operation ids are invocation line numbers.
pub fn parse_etcd_log(text: &str) -> Result<Vec<Operation<CasInput, CasOutput>>, ParseError> {
    let not_read = |i: &CasInput| *i != CasInput::Read;
    let mut p: Pairer<CasInput, CasOutput> = Pairer::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let Some((_, rest)) = raw.split_once(" - ") else {
            if raw.trim().is_empty() {
                continue;
            }
            return Err(err(line, "expected `INFO  jepsen.util - ...`"));
        };
        let mut words = rest.split_whitespace();
        let (Some(process), Some(kind), Some(f)) = (words.next(), words.next(), words.next())
        else {
            return Err(err(line, "expected process, type and f"));
        };
        let value = words.collect::<Vec<_>>().join(" ");
        let kind = kind_of(kind).ok_or_else(|| err(line, format!("unknown type {kind}")))?;
        let int = |s: &str| {
            s.parse::<i64>()
                .map_err(|_| err(line, format!("expected an integer, got {s:?}")))
        };
        if kind == Kind::Invoke {
            let input = match f {
                ":read" => CasInput::Read,
                ":write" => CasInput::Write(int(&value)?),
                ":cas" => {
                    let inner = value
                        .strip_prefix('[')
                        .and_then(|v| v.strip_suffix(']'))
                        .ok_or_else(|| err(line, format!("expected [from to], got {value:?}")))?;
                    let mut it = inner.split_whitespace();
                    match (it.next(), it.next(), it.next()) {
                        (Some(a), Some(b), None) => CasInput::Cas {
                            from: int(a)?,
                            to: int(b)?,
                        },
                        _ => return Err(err(line, format!("expected [from to], got {value:?}"))),
                    }
                }
                _ => return Err(err(line, format!("unknown f {f}"))),
            };
            p.invoke(process, line, input, not_read);
            continue;
        }
        let Some((at, input)) = p.take(process) else {
            return Err(err(
                line,
                format!("completion of process {process} without an invocation"),
            ));
        };
        let output = match (kind, &input) {
            (Kind::Info, CasInput::Read) | (Kind::Fail, CasInput::Read | CasInput::Write(_)) => {
                continue
            }
            (Kind::Info, _) => {
                p.ops
                    .push((at, Operation::indeterminate(at as u64, at as u64, input)));
                continue;
            }
            (Kind::Ok, CasInput::Read) => CasOutput::Read(if value == "nil" {
                None
            } else {
                Some(int(&value)?)
            }),
            (Kind::Ok, CasInput::Write(_)) => CasOutput::Write,
            (Kind::Ok, CasInput::Cas { .. }) => CasOutput::Cas { applied: true },
            (Kind::Fail, CasInput::Cas { .. }) => CasOutput::Cas { applied: false },
            (Kind::Invoke, _) => unreachable!(),
        };
        p.ops.push((
            at,
            Operation::completed(at as u64, at as u64, line as u64, input, output),
        ));
    }
    Ok(p.finish(not_read))
}

/// A value of the small EDN subset the kv vectors use.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Edn {
    Keyword(String),
    Str(String),
    Int(i64),
    Nil,
    Symbol(String),
}

/// Parses one flat EDN map of scalars: `{:k v, :k2 "s", ...}`.
fn parse_edn_map(s: &str) -> Result<HashMap<String, Edn>, String> {
    let s = s.trim();
    let body = s
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or("expected a map {...}")?;
    let mut tokens = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || c == ',' {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut out = String::new();
            loop {
                match chars.next() {
                    None => return Err("unterminated string".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        Some('r') => out.push('\r'),
                        Some(other) => out.push(other),
                        None => return Err("unterminated string".into()),
                    },
                    Some(other) => out.push(other),
                }
            }
            tokens.push(Edn::Str(out));
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == ',' || c == '"' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            tokens.push(if let Some(k) = word.strip_prefix(':') {
                Edn::Keyword(k.to_string())
            } else if word == "nil" {
                Edn::Nil
            } else if let Ok(i) = word.parse() {
                Edn::Int(i)
            } else {
                Edn::Symbol(word)
            });
        }
    }
    if tokens.len() % 2 != 0 {
        return Err("odd number of forms in map".into());
    }
    let mut map = HashMap::new();
    let mut it = tokens.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        match k {
            Edn::Keyword(k) => {
                map.insert(k, v);
            }
            other => return Err(format!("map key {other:?} is not a keyword")),
        }
    }
    Ok(map)
}

/// Reads EDN-map lines `{:process P, :type T, :f :get|:put|:append, :key "K",
/// :value "V"}` (the kv vectors). Gets that fail or stay indeterminate are
/// dropped; failed puts/appends are dropped; indeterminate ones are kept.
pub fn parse_kv_edn(text: &str) -> Result<Vec<Operation<KvInput, KvOutput>>, ParseError> {
    let not_get = |i: &KvInput| !matches!(i, KvInput::Get { .. });
    let mut p: Pairer<KvInput, KvOutput> = Pairer::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let map = parse_edn_map(raw).map_err(|m| err(line, m))?;
        let get = |k: &str| map.get(k).ok_or_else(|| err(line, format!("missing :{k}")));
        let process = match get("process")? {
            Edn::Int(i) => i.to_string(),
            Edn::Keyword(k) | Edn::Symbol(k) | Edn::Str(k) => k.clone(),
            Edn::Nil => return Err(err(line, "nil :process")),
        };
        let kind = match get("type")? {
            Edn::Keyword(k) => kind_of(k),
            _ => None,
        }
        .ok_or_else(|| err(line, "bad :type"))?;
        let str_of = |v: &Edn| match v {
            Edn::Str(s) => Ok(s.clone()),
            Edn::Int(i) => Ok(i.to_string()),
            other => Err(err(line, format!("expected a string, got {other:?}"))),
        };
        if kind == Kind::Invoke {
            let key = str_of(get("key")?)?;
            let input = match get("f")? {
                Edn::Keyword(f) if f == "get" => KvInput::Get { key },
                Edn::Keyword(f) if f == "put" => KvInput::Put {
                    key,
                    value: str_of(get("value")?)?,
                },
                Edn::Keyword(f) if f == "append" => KvInput::Append {
                    key,
                    value: str_of(get("value")?)?,
                },
                other => return Err(err(line, format!("unknown :f {other:?}"))),
            };
            p.invoke(&process, line, input, not_get);
            continue;
        }
        let Some((at, input)) = p.take(&process) else {
            return Err(err(
                line,
                format!("completion of process {process} without an invocation"),
            ));
        };
        let output = match (kind, &input) {
            (Kind::Fail, _) | (Kind::Info, KvInput::Get { .. }) => continue,
            (Kind::Info, _) => {
                p.ops
                    .push((at, Operation::indeterminate(at as u64, at as u64, input)));
                continue;
            }
            (Kind::Ok, KvInput::Get { .. }) => KvOutput::Get(match get("value")? {
                Edn::Nil => String::new(),
                v => str_of(v)?,
            }),
            (Kind::Ok, _) => KvOutput::Done,
            (Kind::Invoke, _) => unreachable!(),
        };
        p.ops.push((
            at,
            Operation::completed(at as u64, at as u64, line as u64, input, output),
        ));
    }
    Ok(p.finish(not_get))
}

/// Turns the config-register operations of a history (`f` of `read`,
/// `write` or `cas`, with a `key`; anything else is ignored) into model
/// operations, pairing invocations with completions by process. Returns the
/// operations and a description of each one that could not be read.
///
/// `ok` outputs are checked; `info` or no completion is indeterminate; `fail`
/// on read/write means no effect (dropped), `fail` on cas means the version
/// did not match. Indeterminate reads are dropped.
pub fn config_register_operations(
    ops: &[Op],
) -> (Vec<Operation<ConfigInput, ConfigOutput>>, Vec<String>) {
    let mut out = Vec::new();
    let mut malformed = Vec::new();
    for pair in pairs(ops) {
        let inv = pair.invoke;
        let Some(key) = &inv.key else { continue };
        if !matches!(inv.f.as_str(), "read" | "write" | "cas") {
            continue;
        }
        let bad = |what: &str, op: &Op| {
            format!(
                "op {} ({} {} {key}): {what}: {}",
                op.index, op.process, op.f, op.value
            )
        };
        let command = match parse_command(&inv.f, &inv.value) {
            Some(c) => c,
            None => {
                malformed.push(bad("bad invocation value", inv));
                continue;
            }
        };
        let input = ConfigInput {
            key: key.clone(),
            command,
        };
        let is_read = input.command == ConfigCommand::Read;
        let is_cas = matches!(input.command, ConfigCommand::Cas { .. });
        match pair.completion.map(|c| (c, c.kind)) {
            None | Some((_, OpType::Info)) | Some((_, OpType::Invoke)) => {
                if !is_read {
                    out.push(Operation::indeterminate(inv.index, inv.time_ns, input));
                }
            }
            Some((_, OpType::Fail)) if !is_cas => {}
            Some((c, OpType::Fail)) => out.push(Operation::completed(
                inv.index,
                inv.time_ns,
                c.time_ns,
                input,
                ConfigOutput::CasMismatch,
            )),
            Some((c, OpType::Ok)) => match parse_output(&input.command, &c.value) {
                Some(o) => out.push(Operation::completed(
                    inv.index,
                    inv.time_ns,
                    c.time_ns,
                    input,
                    o,
                )),
                None => malformed.push(bad("bad completion value", c)),
            },
        }
    }
    (out, malformed)
}

fn parse_command(f: &str, v: &Value) -> Option<ConfigCommand> {
    let value = || v.get("value")?.as_str().map(str::to_string);
    Some(match f {
        "read" => ConfigCommand::Read,
        "write" => ConfigCommand::Write { value: value()? },
        "cas" => ConfigCommand::Cas {
            expected_version: v.get("expected_version")?.as_u64()?,
            value: value()?,
        },
        _ => return None,
    })
}

fn parse_output(command: &ConfigCommand, v: &Value) -> Option<ConfigOutput> {
    let version = || v.get("version")?.as_u64();
    Some(match command {
        ConfigCommand::Read if v.is_null() => ConfigOutput::Read(None),
        ConfigCommand::Read => ConfigOutput::Read(Some(Versioned {
            value: v.get("value")?.as_str()?.to_string(),
            version: version()?,
        })),
        ConfigCommand::Write { .. } => ConfigOutput::Written {
            version: version()?,
        },
        ConfigCommand::Cas { .. } => ConfigOutput::CasApplied {
            version: version()?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edn_map() {
        let m = parse_edn_map(r#"{:process 3, :type :ok, :f :get, :key "7", :value "a \"b\""}"#)
            .unwrap();
        assert_eq!(m["process"], Edn::Int(3));
        assert_eq!(m["f"], Edn::Keyword("get".into()));
        assert_eq!(m["value"], Edn::Str("a \"b\"".into()));
        assert!(parse_edn_map("{:a}").is_err());
    }

    #[test]
    fn etcd_lines() {
        let log = "INFO  jepsen.util - 0\t:invoke\t:cas\t[1 2]\n\
                   INFO  jepsen.util - 1   :invoke :read   nil\n\
                   INFO  jepsen.util - 0\t:fail\t:cas\t[1 2]\n\
                   INFO  jepsen.util - 1\t:fail\t:read\t:timed-out\n\
                   INFO  jepsen.util - 2\t:invoke\t:write\t4\n";
        let ops = parse_etcd_log(log).unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].input, CasInput::Cas { from: 1, to: 2 });
        assert_eq!(ops[0].output, Some(CasOutput::Cas { applied: false }));
        assert_eq!((ops[0].call_ns, ops[0].return_ns), (1, Some(3)));
        assert_eq!(ops[1].output, None);
    }
}
