//! A job file as `autoglm submit -f` reads it, then the conversion the
//! replica applies to what it yields.
#![no_main]

use std::collections::BTreeMap;

use autoglm_server::api::convert::task_spec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(job) = autoglm_client::jobfile::parse(text, "fuzz") else {
        return;
    };
    for (i, t) in job.build().tasks.into_iter().enumerate() {
        let _ = task_spec(i, t, &BTreeMap::new());
    }
});
