//! A SubmitJob request from the wire: protobuf decoding, the proto → domain
//! conversion, every bound, then `apply` of the owned submission, after which
//! the state's invariants must hold, accepted or refused.
#![no_main]

use std::collections::BTreeMap;

use autoglm_client::proto::SubmitJobRequest;
use autoglm_server::api::convert::task_spec;
use autoglm_server::scheduler::{Command, Proposal, SchedulerState};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = SubmitJobRequest::decode(data) else {
        return;
    };
    let mut tasks = Vec::new();
    let mut secret_env = BTreeMap::new();
    for (i, t) in request.tasks.into_iter().enumerate() {
        let Ok((spec, names)) = task_spec(i, t, &BTreeMap::new()) else {
            return;
        };
        if !names.is_empty() {
            secret_env.insert(spec.name.clone(), names);
        }
        tasks.push(spec);
    }
    let mut state = SchedulerState::default();
    let proposal = Proposal::new(
        1_000,
        7,
        Command::SubmitOwnedJob {
            owner: "fuzz".into(),
            client_id: request.client_id,
            idempotency_key: request.idempotency_key,
            tasks,
            secret_env,
        },
        None,
    );
    state.apply(1, &proposal);
    if let Err(broken) = state.check_invariants() {
        panic!("invariant broken by an accepted or refused submission: {broken}");
    }
});
