//! The Python client's suite (`client/python/run-tests.sh`): installs the
//! package as a user would, type-checks it, and runs its pytest suite
//! against `autoglm-local serve` from this crate's binary, with TLS and
//! tokens on. Needs `python3` with `venv` and the package index.

use std::path::Path;
use std::process::Command;

#[test]
fn the_python_client_suite_passes() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../client/python/run-tests.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("AUTOGLM_LOCAL_BIN", env!("CARGO_BIN_EXE_autoglm-local"))
        .output()
        .expect("bash runs client/python/run-tests.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "client/python/run-tests.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(" passed"),
        "pytest reported nothing: {stdout}"
    );
}
