//! Every persisted and replicated format a release wrote stays readable.
//! `tests/fixtures/` holds bytes written by releases: log entries of each
//! entry format, a snapshot, a backup. They are never regenerated: a new
//! format adds new fixtures, and the old ones must still decode to the same
//! values and the same state digest (the digest is computed, never stored: a
//! new digest version adds its own `state-digest-vN.txt`, as version 2 did
//! when the kept multiset digest replaced version 1, and a build checks only
//! its own). A missing fixture is written by running
//! this test with `WRITE_MISSING_FIXTURES=1` (then committed).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use autoglm_server::raft::TypeConfig;
use autoglm_server::scheduler::cache::{payload_sha256, CacheRequest};
use autoglm_server::scheduler::command::BatchedWrite;
use autoglm_server::scheduler::command::{Assignment, AttemptUpdate};
use autoglm_server::scheduler::format::{
    ENTRY_FORMAT_ATTEMPT_DETAIL, ENTRY_FORMAT_BATCH, ENTRY_FORMAT_BREAKER, ENTRY_FORMAT_GANG,
    ENTRY_FORMAT_RESULT_CACHE,
};
use autoglm_server::scheduler::gang::GangRequest;
use autoglm_server::scheduler::model::{Gpu, NodeCapacity};
use autoglm_server::scheduler::model::{Payload, Resources, RetryPolicy, TaskSpec};
use autoglm_server::scheduler::state::DIGEST_VERSION;
use autoglm_server::scheduler::{Command, Proposal, SchedulerState};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The committed bytes of fixture `name`; `current` is what this build
/// writes for it, written to disk only when missing and asked to.
fn committed(name: &str, current: &[u8]) -> Vec<u8> {
    let path = fixture(name);
    if !path.exists() && std::env::var_os("WRITE_MISSING_FIXTURES").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, current).unwrap();
    }
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "fixture {} is missing ({e}); write it with WRITE_MISSING_FIXTURES=1 and commit it",
            path.display()
        )
    })
}

fn spec(name: &str) -> TaskSpec {
    TaskSpec {
        name: name.into(),
        model: Some("llama-3-8b".into()),
        input_tokens: 10,
        max_output_tokens: 10,
        resources: Resources {
            gpus: 1,
            gpu_memory_mb: 1_000,
            cpu_millis: 100,
            memory_mb: 100,
        },
        priority: 50,
        labels: BTreeMap::from([("team".to_string(), "vision".to_string())]),
        attempt_timeout_ms: 60_000,
        retry: RetryPolicy::default(),
        payload: Payload::Sim { service_ms: 10 },
        depends_on: Vec::new(),
    }
}

/// The commands every fixture is made of, in log order.
fn commands() -> Vec<Command> {
    vec![
        Command::SubmitOwnedJob {
            owner: "alice".into(),
            client_id: "c".into(),
            idempotency_key: "key-1".into(),
            tasks: vec![spec("train"), spec("eval")],
            secret_env: BTreeMap::from([("train".to_string(), BTreeSet::new())]),
        },
        Command::SetConfig {
            key: "placement/policy".into(),
            value: "least-outstanding".into(),
            expected_version: None,
        },
        Command::ConfigPut {
            key: "kv/app".into(),
            value: "v".into(),
            expected_version: None,
        },
    ]
}

/// A job of one task, `embed`, with a cache request.
fn cached_submission(idempotency_key: &str) -> Command {
    let task = spec("embed");
    Command::SubmitJobWithCache {
        owner: "alice".into(),
        client_id: "c".into(),
        idempotency_key: idempotency_key.into(),
        cache: BTreeMap::from([(
            "embed".to_string(),
            CacheRequest {
                key: "embed-doc-7".into(),
                ttl_ms: 0,
                refresh: false,
                payload_sha256: payload_sha256(&task.payload),
            },
        )]),
        tasks: vec![task],
        secret_env: BTreeMap::new(),
    }
}

/// A job of two shards that run as one gang.
fn gang_submission(idempotency_key: &str) -> Command {
    Command::SubmitJobWithGangs {
        owner: "alice".into(),
        client_id: "c".into(),
        idempotency_key: idempotency_key.into(),
        tasks: vec![spec("shard-0"), spec("shard-1")],
        secret_env: BTreeMap::new(),
        cache: BTreeMap::new(),
        gangs: vec![GangRequest {
            name: "train".into(),
            members: vec!["shard-0".into(), "shard-1".into()],
            max_attempts: 2,
        }],
    }
}

fn proposal(format: u16, i: usize, command: Command) -> Proposal {
    Proposal {
        format,
        ..Proposal::new(1_000 + i as u64, 7 * i as u64, command, Some(i as u128 + 1))
    }
}

fn entries(format: u16) -> Vec<Entry<TypeConfig>> {
    let mut commands = commands();
    if format >= ENTRY_FORMAT_BREAKER {
        commands.push(Command::ResetNodeBreaker {
            name: "gpu-1".into(),
        });
    }
    if format >= ENTRY_FORMAT_RESULT_CACHE {
        commands.push(cached_submission("key-3"));
    }
    if format >= ENTRY_FORMAT_GANG {
        commands.push(gang_submission("key-5"));
    }
    if format >= ENTRY_FORMAT_BATCH {
        commands.push(Command::Batch {
            writes: vec![
                BatchedWrite {
                    command: Command::ConfigPut {
                        key: "kv/app".into(),
                        value: "w".into(),
                        expected_version: Some(1),
                    },
                    request: Some(10),
                },
                BatchedWrite {
                    command: Command::CancelJob { job: 1 },
                    request: None,
                },
            ],
        });
    }
    commands
        .into_iter()
        .enumerate()
        .map(|(i, c)| Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), i as u64 + 1),
            payload: EntryPayload::Normal(proposal(format, i, c)),
        })
        .collect()
}

fn state() -> SchedulerState {
    let mut s = SchedulerState::default();
    for (i, e) in entries(2).iter().enumerate() {
        if let EntryPayload::Normal(p) = &e.payload {
            s.apply(i as u64 + 1, p);
        }
    }
    s
}

#[test]
fn log_entries_of_every_entry_format_decode() {
    for format in [1u16, 2, 3, 4, 5, 6, 7] {
        let expected = entries(format);
        let bytes = committed(
            &format!("entries-format-{format}.bin"),
            &postcard::to_stdvec(&expected).unwrap(),
        );
        let decoded: Vec<Entry<TypeConfig>> = postcard::from_bytes(&bytes)
            .unwrap_or_else(|e| panic!("entry format {format} no longer decodes: {e}"));
        assert_eq!(decoded, expected, "entry format {format}");
        // This build writes the same bytes for the same version.
        assert_eq!(postcard::to_stdvec(&decoded).unwrap(), bytes);
    }
}

/// The proposal as releases before entry formats wrote it: serde's derived
/// encoding of these four fields.
#[derive(serde::Serialize)]
struct ProposalBeforeVersions {
    at_ms: u64,
    seed: u64,
    command: Command,
    request: Option<u128>,
}

#[test]
fn format_1_is_the_encoding_of_releases_before_versions() {
    for (i, c) in commands().into_iter().enumerate() {
        let old = ProposalBeforeVersions {
            at_ms: 1_000 + i as u64,
            seed: 7 * i as u64,
            command: c.clone(),
            request: Some(i as u128 + 1),
        };
        assert_eq!(
            postcard::to_stdvec(&old).unwrap(),
            postcard::to_stdvec(&proposal(1, i, c)).unwrap()
        );
    }
}

#[test]
fn an_entry_of_a_newer_format_is_refused() {
    let mut bytes = postcard::to_stdvec(&entries(2)[0]).unwrap();
    // The version follows the tag (a varint of ten bytes for u64::MAX) and
    // the entry's log id; find the tag and bump the version after it.
    let tag = [0xff; 9];
    let at = bytes
        .windows(9)
        .position(|w| w == tag)
        .expect("the tag is in the entry")
        + 10;
    bytes[at] = 99;
    assert!(
        postcard::from_bytes::<Entry<TypeConfig>>(&bytes).is_err(),
        "an entry of format 99 decoded"
    );
}

#[test]
fn the_snapshot_and_backup_of_a_release_restore_with_the_same_digest() {
    let state = state();
    let digest = format!("{:016x}", state.digest());
    let committed_digest = committed(
        &format!("state-digest-v{DIGEST_VERSION}.txt"),
        digest.as_bytes(),
    );
    let expected = String::from_utf8(committed_digest).unwrap();
    assert_eq!(
        digest, expected,
        "the digest of the same state changed: replicas of two builds would disagree"
    );
    let applied = autoglm_storage::Applied {
        last_applied: Some(LogId::new(CommittedLeaderId::new(3, 1), 3)),
        membership: Default::default(),
        state,
    };
    let snapshot = committed(
        "snapshot-format-3.bin",
        &autoglm_storage::codec::encode_snapshot(&applied).unwrap(),
    );
    let restored =
        autoglm_storage::state_machine::decode_snapshot::<TypeConfig, SchedulerState>(&snapshot)
            .unwrap();
    assert_eq!(format!("{:016x}", restored.state.digest()), expected);

    let backup = committed(
        "backup-format-1.bin",
        &autoglm_storage::backup::encode_backup("fixtures", 1, 1_700_000_000_000, &applied)
            .unwrap()
            .unwrap(),
    );
    let (header, restored) =
        autoglm_storage::backup::decode_backup::<TypeConfig, SchedulerState>(&backup).unwrap();
    assert_eq!(header.cluster_name, "fixtures");
    assert_eq!(header.last_log_id.index, 3);
    assert_eq!(format!("{:016x}", restored.state.digest()), expected);
}

/// [`state`], then, in entries of the format that records attempt details,
/// a node, a job, and one attempt of its `train` on GPU 1 that exited 3.
fn state_with_an_attempt() -> SchedulerState {
    state_with_an_attempt_in(ENTRY_FORMAT_ATTEMPT_DETAIL)
}

/// As [`state_with_an_attempt`], in entries of `format`.
fn state_with_an_attempt_in(format: u16) -> SchedulerState {
    let mut s = state();
    let capacity = NodeCapacity {
        address: "127.0.0.1:1".into(),
        gpus: (0..2)
            .map(|index| Gpu {
                index,
                uuid: format!("GPU-{index}"),
                model: "H100".into(),
                memory_mb: 80_000,
            })
            .collect(),
        cpu_millis: 64_000,
        memory_mb: 512_000,
        labels: BTreeMap::from([("team".to_string(), "vision".to_string())]),
        models_loaded: BTreeSet::new(),
        slots_per_gpu: 1,
    };
    let report = |update| Command::ReportAttempt {
        task: 0,
        attempt: 1,
        node: "gpu-1".into(),
        update,
    };
    let later = [
        Command::SetConfig {
            key: "cluster/entry_format".into(),
            value: format.to_string(),
            expected_version: None,
        },
        Command::RegisterNode {
            name: "gpu-1".into(),
            capacity,
        },
        Command::SubmitOwnedJob {
            owner: "alice".into(),
            client_id: "c".into(),
            idempotency_key: "key-2".into(),
            tasks: vec![spec("train")],
            secret_env: BTreeMap::new(),
        },
        Command::Assign {
            assignments: vec![Assignment {
                task: 0,
                attempt: 1,
                node: "gpu-1".into(),
                gpus: vec![1],
            }],
        },
        report(AttemptUpdate::Running),
        report(AttemptUpdate::Failed {
            exit_code: Some(3),
            message: "exit 3".into(),
            output_tail: String::new(),
        }),
    ];
    let first = commands().len();
    for (i, c) in later.into_iter().enumerate() {
        let i = first + i;
        s.apply(i as u64 + 1, &proposal(format, i, c));
    }
    s
}

/// `state` at log index 9 as this build snapshots it, checked to be written
/// in `version` and against the committed fixture of that version, and the
/// state that fixture restores; both have the same digest.
fn snapshot_round_trip(state: SchedulerState, version: u8) -> (SchedulerState, SchedulerState) {
    let applied = autoglm_storage::Applied {
        last_applied: Some(LogId::new(CommittedLeaderId::new(3, 1), 9)),
        membership: Default::default(),
        state,
    };
    let encoded =
        <SchedulerState as autoglm_storage::StateMachine<TypeConfig>>::encode_snapshot(&applied)
            .unwrap();
    assert_eq!(encoded[4], version, "written as snapshot version {version}");
    let snapshot = committed(&format!("snapshot-format-{version}.bin"), &encoded);
    let restored =
        autoglm_storage::state_machine::decode_snapshot::<TypeConfig, SchedulerState>(&snapshot)
            .unwrap();
    assert_eq!(restored.state.digest(), applied.state.digest());
    (applied.state, restored.state)
}

#[test]
fn a_snapshot_of_version_4_keeps_each_attempts_gpus_start_and_exit_code() {
    let state = state_with_an_attempt();
    let attempt = state.tasks[&0].history.first().expect("train ran once");
    assert_eq!((&attempt.gpus[..], attempt.exit_code), (&[1][..], Some(3)));
    assert!(attempt.started_ms.is_some());
    let (written, restored) = snapshot_round_trip(state, 4);
    assert_eq!(restored.tasks[&0].history, written.tasks[&0].history);
}

#[test]
fn a_snapshot_of_version_5_keeps_the_nodes_circuit_breakers() {
    let state = state_with_an_attempt_in(ENTRY_FORMAT_BREAKER);
    let breaker = &state.breakers["gpu-1"];
    assert_eq!(breaker.failures.len(), 1, "the failed attempt counted");
    let (written, restored) = snapshot_round_trip(state, 5);
    assert_eq!(restored.breakers, written.breakers);
}

#[test]
fn a_snapshot_of_version_6_keeps_the_result_cache() {
    let format = ENTRY_FORMAT_RESULT_CACHE;
    let mut state = state_with_an_attempt_in(format);
    let mut index = 9;
    let mut apply = |s: &mut SchedulerState, command| {
        index += 1;
        s.apply(index, &proposal(format, index as usize, command))
    };
    let embed = |r| match r {
        autoglm_server::scheduler::Response::JobAcceptedAt { tasks, .. } => tasks["embed"],
        other => panic!("{other:?}"),
    };
    let first = embed(apply(&mut state, cached_submission("key-3")));
    apply(
        &mut state,
        Command::Assign {
            assignments: vec![Assignment {
                task: first,
                attempt: 1,
                node: "gpu-1".into(),
                gpus: vec![0],
            }],
        },
    );
    apply(
        &mut state,
        Command::ReportAttempt {
            task: first,
            attempt: 1,
            node: "gpu-1".into(),
            update: AttemptUpdate::Succeeded {
                exit_code: Some(0),
                output_tail: "vectors".into(),
            },
        },
    );
    let second = embed(apply(&mut state, cached_submission("key-4")));
    assert_eq!(
        state.result_cache.tasks[&second].served_by,
        Some(first),
        "served from the cache"
    );
    let (written, restored) = snapshot_round_trip(state, 6);
    assert_eq!(restored.result_cache, written.result_cache);
    assert_eq!(restored.tasks[&second], written.tasks[&second]);
}

#[test]
fn a_snapshot_of_version_7_keeps_the_gangs() {
    let format = ENTRY_FORMAT_GANG;
    let mut state = state_with_an_attempt_in(format);
    let mut index = 9;
    let mut apply = |s: &mut SchedulerState, command| {
        index += 1;
        s.apply(index, &proposal(format, index as usize, command))
    };
    let shards = match apply(&mut state, gang_submission("key-5")) {
        autoglm_server::scheduler::Response::JobAcceptedAt { tasks, .. } => tasks,
        other => panic!("{other:?}"),
    };
    let placed = apply(
        &mut state,
        Command::Assign {
            assignments: (0..2)
                .map(|g| Assignment {
                    task: shards[&format!("shard-{g}")],
                    attempt: 1,
                    node: "gpu-1".into(),
                    gpus: vec![g],
                })
                .collect(),
        },
    );
    assert_eq!(
        placed,
        autoglm_server::scheduler::Response::Changed(vec![shards["shard-0"], shards["shard-1"]])
    );
    state.check_invariants().unwrap();
    let (written, restored) = snapshot_round_trip(state, 7);
    assert_eq!(restored.gangs, written.gangs);
    assert_eq!(restored.gangs.len(), 1);
    assert!(restored.gangs.of(shards["shard-1"]).is_some());
    restored.check_invariants().unwrap();
}
