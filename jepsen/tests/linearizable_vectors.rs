//! Runs the linearizability checker on every history of tests/vectors/{etcd,kv}
//! and compares its verdict with the one recorded in verdicts.tsv (those of
//! Porcupine's own tests).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use autoglm_jepsen::checker::linearizable::{
    check, parse_etcd_log, parse_kv_edn, CasRegister, KvStore, Verdict,
};

const LIMIT: Duration = Duration::from_secs(10);

fn vectors(dir: &str) -> (PathBuf, Vec<(String, bool)>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(dir);
    let tsv = std::fs::read_to_string(dir.join("verdicts.tsv")).unwrap();
    let rows = tsv
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (file, verdict) = l.split_once('\t').expect("file<TAB>verdict");
            (
                file.to_string(),
                verdict.trim().parse::<bool>().expect("true/false"),
            )
        })
        .collect::<Vec<_>>();
    assert!(!rows.is_empty());
    (dir, rows)
}

fn run(dir: &str, checker: impl Fn(&str) -> (usize, Verdict)) {
    let (dir, rows) = vectors(dir);
    let mut failures = Vec::new();
    let mut times = Vec::new();
    for (file, expected) in &rows {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let t0 = Instant::now();
        let (ops, verdict) = checker(&text);
        let elapsed = t0.elapsed();
        times.push(elapsed);
        let got = match &verdict {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable { .. } => "not linearizable",
            Verdict::Unknown => "UNKNOWN (timed out)",
        };
        println!(
            "{file:>16}: {ops:4} ops  {got:<20} {:>9.1} ms",
            elapsed.as_secs_f64() * 1e3
        );
        let ok = match verdict {
            Verdict::Linearizable => *expected,
            Verdict::NotLinearizable { .. } => !*expected,
            Verdict::Unknown => false,
        };
        if !ok {
            failures.push(format!(
                "{file}: expected linearizable={expected}, got {got}"
            ));
        }
    }
    let max = times.iter().max().unwrap();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "{} files: max {:.1} ms, mean {:.1} ms",
        times.len(),
        max.as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3
    );
    assert!(
        failures.is_empty(),
        "wrong verdicts:\n{}",
        failures.join("\n")
    );
}

#[test]
fn etcd_vectors() {
    run("etcd", |text| {
        let ops = parse_etcd_log(text).unwrap();
        let report = check(&CasRegister, &ops, LIMIT);
        (ops.len(), report.verdict)
    });
}

#[test]
fn kv_vectors() {
    run("kv", |text| {
        let ops = parse_kv_edn(text).unwrap();
        let report = check(&KvStore, &ops, LIMIT);
        if let Verdict::NotLinearizable { key, .. } = &report.verdict {
            // The failing key is named and decided on its own.
            assert!(!report.keys[key].verdict.is_linearizable());
        }
        (ops.len(), report.verdict)
    });
}
