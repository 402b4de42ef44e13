//! Group commit in the pure core: a `Batch` entry applies as its writes one
//! after another, each with its own response, request id and job id.

use super::command::{BatchedWrite, Command, Response};
use super::format::{ENTRY_FORMAT_BATCH, ENTRY_FORMAT_DEFAULT};
use super::model::{EdgeCondition, TaskState};
use super::tests::{spec, Harness};

fn submit(key: &str, request: Option<u128>) -> BatchedWrite {
    BatchedWrite {
        command: Command::SubmitJob {
            client_id: "c".into(),
            idempotency_key: key.into(),
            tasks: vec![spec("t", &[])],
        },
        request,
    }
}

fn batch(h: &mut Harness, writes: Vec<BatchedWrite>) -> Vec<Response> {
    match h.apply_as(ENTRY_FORMAT_BATCH, Command::Batch { writes }, None) {
        Response::Batch(responses) => responses,
        other => panic!("a batch answered {other:?}"),
    }
}

fn job_of(r: &Response) -> u64 {
    match r {
        Response::JobAccepted { job, .. } | Response::JobAcceptedAt { job, .. } => *job,
        other => panic!("expected an accepted job, got {other:?}"),
    }
}

fn created_at(r: &Response) -> u64 {
    match r {
        Response::JobAcceptedAt { index, .. } => *index,
        other => panic!("expected a job accepted at an index, got {other:?}"),
    }
}

#[test]
fn submissions_in_one_batch_get_their_own_jobs_and_ids() {
    let mut h = Harness::new();
    h.node("n1", 4, 1);
    let responses = batch(
        &mut h,
        vec![
            submit("a", Some(1)),
            submit("b", Some(2)),
            submit("c", None),
        ],
    );
    assert_eq!(responses.len(), 3);
    let jobs: Vec<u64> = responses.iter().map(job_of).collect();
    assert_eq!(
        jobs,
        vec![2, 3, 4],
        "the entry's index, then the next free ids"
    );
    // Each says the index it was created at, which the watch API needs.
    assert!(responses.iter().all(|r| created_at(r) == 2));
    // The next entry (index 3) must not reuse an id the batch gave.
    let next = job_of(&h.submit("d", vec![spec("t", &[])]));
    assert_eq!(next, 5);
    assert_eq!(h.state.jobs.len(), 4);
    let tasks: Vec<u64> = h.state.tasks.keys().copied().collect();
    assert_eq!(tasks.len(), 4, "one task per job, ids all distinct");
    assert!(h.state.tasks.values().all(|t| t.state == TaskState::Queued));
}

#[test]
fn a_request_in_a_batch_applies_once_and_replays_its_response() {
    let mut h = Harness::new();
    let first = h.apply_as(ENTRY_FORMAT_BATCH, submit("a", Some(7)).command, Some(7));
    let responses = batch(&mut h, vec![submit("a", Some(7)), submit("b", Some(8))]);
    assert_eq!(
        responses[0], first,
        "the retried write gets its first answer"
    );
    assert_eq!(created_at(&first), 1);
    // A duplicate by key (not by request id) does not know its index.
    let by_key = batch(&mut h, vec![submit("b", None)]);
    assert_eq!(job_of(&by_key[0]), job_of(&responses[1]));
    assert_eq!(created_at(&by_key[0]), 0);
    assert_ne!(job_of(&responses[1]), job_of(&first));
    assert_eq!(h.state.jobs.len(), 2);
    // And the other way round: a write first applied in a batch, retried alone.
    let again = h.apply_as(ENTRY_FORMAT_BATCH, submit("b", Some(8)).command, Some(8));
    assert_eq!(again, responses[1]);
    assert_eq!(h.state.jobs.len(), 2);
}

#[test]
fn writes_in_a_batch_see_the_writes_before_them() {
    let mut h = Harness::new();
    let accepted = h.submit(
        "dag",
        vec![
            spec("a", &[]),
            spec("b", &[("a", EdgeCondition::OnSuccess)]),
        ],
    );
    let Response::JobAccepted { tasks, .. } = accepted else {
        panic!("{accepted:?}")
    };
    let (a, b) = (tasks["a"], tasks["b"]);
    let responses = batch(
        &mut h,
        vec![
            BatchedWrite {
                command: Command::CancelTask { task: a },
                request: None,
            },
            BatchedWrite {
                command: Command::CancelTask { task: b },
                request: None,
            },
        ],
    );
    // Cancelling `a` cancelled `b` down the graph; the second write finds it done.
    assert_eq!(responses[0], Response::Changed(vec![a, b]));
    assert_eq!(responses[1], Response::Changed(vec![]));
}

#[test]
fn a_batch_inside_a_batch_is_refused_and_the_rest_applies() {
    let mut h = Harness::new();
    let responses = batch(
        &mut h,
        vec![
            BatchedWrite {
                command: Command::Batch {
                    writes: vec![submit("x", None)],
                },
                request: None,
            },
            submit("y", None),
        ],
    );
    assert_eq!(
        responses[0],
        Response::Rejected("writes[0].command: a batch cannot hold a batch".into())
    );
    job_of(&responses[1]);
    assert_eq!(h.state.jobs.len(), 1);
}

#[test]
fn from_format_3_garbage_collection_keeps_the_newest_job() {
    for (format, kept) in [(ENTRY_FORMAT_DEFAULT, 0), (ENTRY_FORMAT_BATCH, 1)] {
        let mut h = Harness::new();
        for key in ["a", "b"] {
            let job = job_of(&h.submit(key, vec![spec("t", &[])]));
            h.apply(Command::CancelJob { job });
        }
        let cutoff = u64::MAX;
        h.apply_as(
            format,
            Command::CollectGarbage {
                finished_before_ms: cutoff,
            },
            None,
        );
        assert_eq!(h.state.jobs.len(), kept, "format {format}");
    }
}

#[test]
fn a_batch_changes_the_digest_as_its_writes_would() {
    let mut h = Harness::new();
    batch(&mut h, vec![submit("a", None), submit("b", None)]);
    let bytes = postcard::to_stdvec(&h.state).unwrap();
    let mut decoded: super::SchedulerState = postcard::from_bytes(&bytes).unwrap();
    decoded.reindex();
    assert_eq!(decoded.digest(), h.state.digest());
}

/// A batch nested 100,000 deep, as bytes: decoding refuses it at the second
/// level instead of recursing until the stack overflows (found by fuzzing).
#[test]
fn a_deeply_nested_batch_is_refused_when_decoded() {
    fn nested(variant: u8) -> Vec<u8> {
        let mut bytes = Vec::new();
        for _ in 0..100_000 {
            bytes.extend([variant, 1]); // the variant, then a list of one
        }
        bytes
    }
    let batch_command = postcard::to_stdvec(&Command::Batch { writes: vec![] }).unwrap()[0];
    let error = postcard::from_bytes::<Command>(&nested(batch_command)).unwrap_err();
    assert!(matches!(error, postcard::Error::SerdeDeCustom), "{error:?}");
    let batch_response = postcard::to_stdvec(&Response::Batch(vec![])).unwrap()[0];
    assert!(postcard::from_bytes::<Response>(&nested(batch_response)).is_err());
    // One level still decodes, and the guard is reset after an error.
    let one = Command::Batch {
        writes: vec![submit("a", Some(1))],
    };
    let bytes = postcard::to_stdvec(&one).unwrap();
    assert_eq!(postcard::from_bytes::<Command>(&bytes).unwrap(), one);
}
