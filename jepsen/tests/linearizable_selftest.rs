//! Hand-made config-register histories, in `history.jsonl` form, with known
//! verdicts.

use std::time::Duration;

use autoglm_jepsen::checker::linearizable::{check_config_register, Report, Verdict};
use autoglm_jepsen::history::{Op, OpType};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(10);

/// Builds a history; every event is one tick (1 µs) after the previous one.
#[derive(Default)]
struct H {
    ops: Vec<Op>,
}

impl H {
    fn ev(&mut self, process: &str, kind: OpType, f: &str, key: &str, value: Value) -> &mut Self {
        let index = self.ops.len() as u64;
        self.ops.push(Op {
            index,
            time_ns: (index + 1) * 1000,
            process: process.into(),
            node: "n1".into(),
            kind,
            f: f.into(),
            key: Some(key.into()),
            value,
            error: (matches!(kind, OpType::Fail | OpType::Info)).then(|| "test".into()),
        });
        self
    }
    fn invoke(&mut self, p: &str, f: &str, key: &str, value: Value) -> &mut Self {
        self.ev(p, OpType::Invoke, f, key, value)
    }
    fn ok(&mut self, p: &str, f: &str, key: &str, value: Value) -> &mut Self {
        self.ev(p, OpType::Ok, f, key, value)
    }
    fn fail(&mut self, p: &str, f: &str, key: &str) -> &mut Self {
        self.ev(p, OpType::Fail, f, key, Value::Null)
    }
    fn info(&mut self, p: &str, f: &str, key: &str) -> &mut Self {
        self.ev(p, OpType::Info, f, key, Value::Null)
    }
    /// A write that completes before anything else starts.
    fn write(&mut self, p: &str, key: &str, value: &str, version: u64) -> &mut Self {
        self.invoke(p, "write", key, json!({"value": value})).ok(
            p,
            "write",
            key,
            json!({"version": version}),
        )
    }
    /// A read that completes before anything else starts.
    fn read(&mut self, p: &str, key: &str, seen: Option<(&str, u64)>) -> &mut Self {
        let v = seen.map_or(
            Value::Null,
            |(value, version)| json!({"value": value, "version": version}),
        );
        self.invoke(p, "read", key, Value::Null)
            .ok(p, "read", key, v)
    }
    fn check(&self) -> Report {
        let report = check_config_register(&self.ops, LIMIT);
        // The report must be serializable for results.json.
        let text = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back.verdict, report.verdict);
        report
    }
}

fn seen(value: &str, version: u64) -> Value {
    json!({"value": value, "version": version})
}

#[test]
fn sequential_history_is_linearizable() {
    let r = H::default()
        .read("c1", "a", None)
        .write("c1", "a", "x", 1)
        .read("c2", "a", Some(("x", 1)))
        .invoke(
            "c2",
            "cas",
            "a",
            json!({"expected_version": 1, "value": "y"}),
        )
        .ok("c2", "cas", "a", json!({"version": 2}))
        .invoke(
            "c1",
            "cas",
            "a",
            json!({"expected_version": 1, "value": "z"}),
        )
        .fail("c1", "cas", "a")
        .read("c3", "a", Some(("y", 2)))
        .check();
    assert_eq!(r.verdict, Verdict::Linearizable, "{r:#?}");
    assert_eq!(r.keys["a"].operations, 6);
}

#[test]
fn stale_read_after_completed_write() {
    let r = H::default()
        .write("c1", "a", "x", 1)
        .write("c1", "a", "y", 2)
        .read("c2", "a", Some(("x", 1)))
        .check();
    let Verdict::NotLinearizable {
        key,
        longest_prefix,
        blocked,
        state_after_prefix,
        ..
    } = &r.verdict
    else {
        panic!("expected not linearizable: {r:#?}")
    };
    assert_eq!(key, "a");
    assert_eq!(longest_prefix.len(), 2);
    let blocked = blocked.as_ref().expect("blocked op");
    assert_eq!(blocked.id, 4, "the read is blocked: {blocked:?}");
    assert!(blocked.description.starts_with("read a"), "{blocked:?}");
    assert_eq!(state_after_prefix, "\"y\" v2");
}

#[test]
fn cas_applied_on_the_wrong_version() {
    let r = H::default()
        .write("c1", "a", "x", 1)
        .write("c1", "a", "y", 2)
        .invoke(
            "c2",
            "cas",
            "a",
            json!({"expected_version": 1, "value": "z"}),
        )
        .ok("c2", "cas", "a", json!({"version": 2}))
        .check();
    assert!(
        matches!(r.verdict, Verdict::NotLinearizable { .. }),
        "{r:#?}"
    );
    // A cas that failed although the version matched is as wrong.
    let r = H::default()
        .write("c1", "a", "x", 1)
        .invoke(
            "c2",
            "cas",
            "a",
            json!({"expected_version": 1, "value": "z"}),
        )
        .fail("c2", "cas", "a")
        .check();
    assert!(
        matches!(r.verdict, Verdict::NotLinearizable { .. }),
        "{r:#?}"
    );
    // A cas creating the key (expected 0) after it exists is wrong too.
    let r = H::default()
        .write("c1", "a", "x", 1)
        .invoke(
            "c2",
            "cas",
            "a",
            json!({"expected_version": 0, "value": "z"}),
        )
        .ok("c2", "cas", "a", json!({"version": 1}))
        .check();
    assert!(
        matches!(r.verdict, Verdict::NotLinearizable { .. }),
        "{r:#?}"
    );
}

/// Two concurrent writes; reads concurrent with them observe the writes in
/// either order.
#[test]
fn concurrent_writes_either_order() {
    for (first, second) in [("x", "y"), ("y", "x")] {
        let version = |v: &str| if v == first { 1 } else { 2 };
        let r = H::default()
            .invoke("c1", "write", "a", json!({"value": "x"}))
            .invoke("c2", "write", "a", json!({"value": "y"}))
            .invoke("c3", "read", "a", Value::Null)
            .ok("c3", "read", "a", seen(first, 1))
            .invoke("c3", "read", "a", Value::Null)
            .ok("c3", "read", "a", seen(second, 2))
            .ok("c2", "write", "a", json!({"version": version("y")}))
            .ok("c1", "write", "a", json!({"version": version("x")}))
            .read("c4", "a", Some((second, 2)))
            .check();
        assert_eq!(
            r.verdict,
            Verdict::Linearizable,
            "{first} then {second}: {r:#?}"
        );
    }
    // But a read cannot go back to the first value afterwards.
    let r = H::default()
        .invoke("c1", "write", "a", json!({"value": "x"}))
        .invoke("c2", "write", "a", json!({"value": "y"}))
        .invoke("c3", "read", "a", Value::Null)
        .ok("c3", "read", "a", seen("x", 1))
        .invoke("c3", "read", "a", Value::Null)
        .ok("c3", "read", "a", seen("y", 2))
        .ok("c2", "write", "a", json!({"version": 2}))
        .ok("c1", "write", "a", json!({"version": 1}))
        .read("c4", "a", Some(("x", 1)))
        .check();
    assert!(
        matches!(r.verdict, Verdict::NotLinearizable { .. }),
        "{r:#?}"
    );
}

#[test]
fn info_write_that_later_appears() {
    let r = H::default()
        .write("c1", "a", "x", 1)
        .invoke("c2", "write", "a", json!({"value": "y"}))
        .info("c2", "write", "a")
        .read("c1", "a", Some(("x", 1)))
        .read("c1", "a", Some(("y", 2)))
        .check();
    assert_eq!(r.verdict, Verdict::Linearizable, "{r:#?}");
    // An unfinished write (no completion at all) is indeterminate too.
    let r = H::default()
        .invoke("c2", "write", "a", json!({"value": "y"}))
        .read("c1", "a", None)
        .read("c1", "a", Some(("y", 1)))
        .check();
    assert_eq!(r.verdict, Verdict::Linearizable, "{r:#?}");
}

#[test]
fn info_write_that_never_appears() {
    let r = H::default()
        .write("c1", "a", "x", 1)
        .invoke("c2", "write", "a", json!({"value": "y"}))
        .info("c2", "write", "a")
        .invoke(
            "c3",
            "cas",
            "a",
            json!({"expected_version": 1, "value": "q"}),
        )
        .info("c3", "cas", "a")
        .read("c1", "a", Some(("x", 1)))
        .write("c1", "a", "z", 2)
        .read("c1", "a", Some(("z", 2)))
        .check();
    assert_eq!(r.verdict, Verdict::Linearizable, "{r:#?}");
    // Failed reads and writes had no effect.
    let r = H::default()
        .write("c1", "a", "x", 1)
        .invoke("c2", "write", "a", json!({"value": "y"}))
        .fail("c2", "write", "a")
        .invoke("c2", "read", "a", Value::Null)
        .fail("c2", "read", "a")
        .read("c1", "a", Some(("x", 1)))
        .check();
    assert_eq!(r.verdict, Verdict::Linearizable, "{r:#?}");
}

/// Forty indeterminate writes, all concurrent, then a read of a value none of
/// them wrote: refuting it means trying every subset of the writes.
#[test]
fn search_that_cannot_finish_is_unknown() {
    let mut h = H::default();
    for i in 0..40 {
        h.invoke(
            &format!("c{i}"),
            "write",
            "big",
            json!({"value": format!("v{i}")}),
        );
    }
    for i in 0..40 {
        h.info(&format!("c{i}"), "write", "big");
    }
    h.read("r", "big", Some(("never written", 41)));
    let r = check_config_register(&h.ops, Duration::from_millis(1));
    assert_eq!(r.verdict, Verdict::Unknown, "{r:#?}");
    assert_eq!(r.keys["big"].verdict, Verdict::Unknown);
    assert!(!r.is_linearizable());
}

#[test]
fn keys_are_independent() {
    let r = H::default()
        .write("c1", "a", "x", 1)
        .write("c2", "b", "x", 1)
        .write("c2", "b", "y", 2)
        .read("c1", "a", Some(("x", 1)))
        .read("c3", "b", Some(("x", 1)))
        .write("c1", "a", "w", 2)
        .read("c1", "a", Some(("w", 2)))
        .check();
    assert_eq!(r.keys["a"].verdict, Verdict::Linearizable, "{r:#?}");
    assert_eq!(r.keys["a"].operations, 4);
    assert_eq!(r.keys["b"].operations, 3);
    let Verdict::NotLinearizable { key, .. } = &r.keys["b"].verdict else {
        panic!("{r:#?}")
    };
    assert_eq!(key, "b");
    assert!(matches!(&r.verdict, Verdict::NotLinearizable { key, .. } if key == "b"));
}

#[test]
fn malformed_operations_make_the_verdict_unknown() {
    let r = H::default()
        .write("c1", "a", "x", 1)
        .invoke("c1", "read", "a", Value::Null)
        .ok("c1", "read", "a", json!({"value": 3}))
        .check();
    assert_eq!(r.malformed.len(), 1, "{r:#?}");
    assert_eq!(r.verdict, Verdict::Unknown);
}

/// The search against brute force (every order of every subset that keeps
/// all determinate operations), on many small random etcd-register histories.
#[test]
fn agrees_with_brute_force_on_small_random_histories() {
    use autoglm_jepsen::checker::linearizable::{
        check, CasInput, CasOutput, CasRegister, Model, Operation,
    };

    type CasOp = Operation<CasInput, CasOutput>;

    fn brute_force(ops: &[CasOp]) -> bool {
        fn go(ops: &[CasOp], used: &mut Vec<bool>, state: Option<i64>) -> bool {
            if ops
                .iter()
                .zip(used.iter())
                .all(|(op, &u)| u || op.output.is_none())
            {
                return true;
            }
            for i in 0..ops.len() {
                // `i` can go next unless an unused op returned before it was called.
                let blocked = (0..ops.len()).any(|j| {
                    !used[j]
                        && j != i
                        && ops[j].output.is_some()
                        && ops[j].return_ns.unwrap() < ops[i].call_ns
                });
                if used[i] || blocked {
                    continue;
                }
                if let Some(next) = CasRegister.step(&state, &ops[i].input, ops[i].output.as_ref())
                {
                    used[i] = true;
                    let ok = go(ops, used, next);
                    used[i] = false;
                    if ok {
                        return true;
                    }
                }
            }
            false
        }
        go(ops, &mut vec![false; ops.len()], None)
    }

    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let (mut yes, mut no) = (0, 0);
    for _ in 0..3000 {
        let n = 1 + rand(7) as usize;
        let ops: Vec<CasOp> = (0..n as u64)
            .map(|id| {
                let call = rand(12);
                let ret = call + rand(6);
                let input = match rand(3) {
                    0 => CasInput::Read,
                    1 => CasInput::Write(rand(3) as i64),
                    _ => CasInput::Cas {
                        from: rand(3) as i64,
                        to: rand(3) as i64,
                    },
                };
                let output = match &input {
                    CasInput::Read => {
                        CasOutput::Read([None, Some(0), Some(1), Some(2)][rand(4) as usize])
                    }
                    CasInput::Write(_) => CasOutput::Write,
                    CasInput::Cas { .. } => CasOutput::Cas {
                        applied: rand(2) == 0,
                    },
                };
                if input != CasInput::Read && rand(4) == 0 {
                    Operation::indeterminate(id, call, input)
                } else {
                    Operation::completed(id, call, ret, input, output)
                }
            })
            .collect();
        let expected = brute_force(&ops);
        let got = check(&CasRegister, &ops, LIMIT).verdict;
        assert_eq!(got.is_linearizable(), expected, "{ops:#?}\n{got:#?}");
        assert_ne!(got, Verdict::Unknown);
        if expected {
            yes += 1
        } else {
            no += 1
        }
    }
    assert!(yes > 300 && no > 300, "{yes} linearizable, {no} not");
}
