//! A SubmitJob request from the wire: protobuf decoding, the proto → domain
//! conversion, every bound, then `apply` of the owned submission (with its
//! cache requests, in the newest entry format), after which the state's
//! invariants must hold, accepted or refused.
#![no_main]

use std::collections::BTreeMap;

use autoglm_client::proto::SubmitJobRequest;
use autoglm_server::api::convert::task_spec;
use autoglm_server::scheduler::format::ENTRY_FORMAT_MAX;
use autoglm_server::scheduler::{Command, Proposal, SchedulerState};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = SubmitJobRequest::decode(data) else {
        return;
    };
    let mut tasks = Vec::new();
    let mut secret_env = BTreeMap::new();
    let mut cache = BTreeMap::new();
    for (i, t) in request.tasks.into_iter().enumerate() {
        let Ok(submitted) = task_spec(i, t, &BTreeMap::new()) else {
            return;
        };
        if !submitted.secret_env.is_empty() {
            secret_env.insert(submitted.spec.name.clone(), submitted.secret_env);
        }
        if let Some(request) = submitted.cache {
            cache.insert(submitted.spec.name.clone(), request);
        }
        tasks.push(submitted.spec);
    }
    let mut state = SchedulerState::default();
    // As the API proposes it: the cache's command only for jobs that use it.
    let command = if cache.is_empty() {
        Command::SubmitOwnedJob {
            owner: "fuzz".into(),
            client_id: request.client_id,
            idempotency_key: request.idempotency_key,
            tasks,
            secret_env,
        }
    } else {
        Command::SubmitJobWithCache {
            owner: "fuzz".into(),
            client_id: request.client_id,
            idempotency_key: request.idempotency_key,
            tasks,
            secret_env,
            cache,
        }
    };
    let proposal = Proposal {
        format: ENTRY_FORMAT_MAX,
        ..Proposal::new(1_000, 7, command, None)
    };
    state.apply(1, &proposal);
    if let Err(broken) = state.check_invariants() {
        panic!("invariant broken by an accepted or refused submission: {broken}");
    }
});
