//! Runtime settings: a key and a value (split at the first NUL) through the
//! registry's check, `apply` of both write commands (the checked `SetConfig`
//! and the old unchecked `ConfigPut`), and the leader's typed read of every
//! setting afterwards.
#![no_main]

use autoglm_server::leader::runtime::Runtime;
use autoglm_server::scheduler::{settings, Command, Proposal, SchedulerState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (key, value) = text.split_once('\0').unwrap_or((text, ""));
    let checked = settings::check(key, value);
    let mut state = SchedulerState::default();
    let put = |command| Proposal::new(1_000, 1, command, None);
    let set = Command::SetConfig {
        key: key.into(),
        value: value.into(),
        expected_version: None,
    };
    let applied = state.apply(1, &put(set));
    let written = matches!(applied, autoglm_server::scheduler::Response::ConfigWritten(_));
    let store_ok = autoglm_server::scheduler::config_store::validate(key, Some(value)).is_ok();
    assert_eq!(
        written,
        checked.is_ok() && store_ok,
        "the API's checks and apply disagree on {key:?}={value:?}"
    );
    let old = Command::ConfigPut {
        key: key.into(),
        value: value.into(),
        expected_version: None,
    };
    state.apply(2, &put(old));
    let runtime = Runtime::read(&state);
    assert!((0.0..=1.0).contains(&runtime.placement.dispatch_threshold));
    assert!(state.payload_bytes_max() >= 1_024);
});
