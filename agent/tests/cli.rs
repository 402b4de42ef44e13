//! The built `autoglm-agent` binary: `probe` with and without NVML, and
//! configuration errors.

use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autoglm-agent"))
        .args(args)
        // Variables of the calling shell must not change what the test sees.
        .env_remove("AUTOGLM_GPU_SOURCE")
        .env_remove("AUTOGLM_SIMULATED_GPUS")
        .env_remove("AUTOGLM_NODE")
        .env_remove("AUTOGLM_ENDPOINTS")
        .env_remove("RUST_LOG")
        .output()
        .expect("run autoglm-agent")
}

fn config(yaml: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(f.path(), yaml).expect("write config");
    f
}

const TWO_GPUS: &str = "simulated_gpus:\n  - model: NVIDIA H100 80GB HBM3\n    memory_mb: 81559\n  - model: NVIDIA H100 80GB HBM3\n    memory_mb: 81559\n";

#[test]
fn probe_json_falls_back_to_simulated_gpus_without_nvml() {
    let f = config(TWO_GPUS);
    let path = f.path().to_str().expect("utf-8 path");
    let out = agent(&["probe", "--json", "--config", path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let nvml_here = nvml_wrapper::Nvml::init().is_ok();
    if nvml_here {
        // A GPU machine: the real inventory, whatever the configuration says.
        assert_eq!(report["source"], "nvml", "{report}");
        assert!(report["driver_version"].is_string(), "{report}");
        return;
    }
    assert_eq!(report["source"], "simulated", "{report}");
    assert!(report["driver_version"].is_null());
    let gpus = report["gpus"].as_array().expect("gpus");
    assert_eq!(gpus.len(), 2);
    assert_eq!(gpus[1]["index"], 1);
    assert_eq!(gpus[1]["memory_total_mb"], 81559);
    assert_eq!(gpus[1]["health"], "healthy");
    assert!(report["cpu_millis"].as_u64().is_some_and(|c| c >= 1000));
    assert!(report["memory_mb"].as_u64().is_some_and(|m| m > 0));
    // One line says NVML is absent.
    assert_eq!(stderr.matches("NVML absent").count(), 1, "{stderr}");
}

#[test]
fn probe_table_works_without_any_configuration() {
    let out = agent(&["probe", "--gpu-source", "simulated"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("source:         simulated"), "{table}");
    assert!(table.contains("gpus:           0"), "{table}");
}

#[test]
fn configuration_errors_exit_2_with_one_line_naming_the_key() {
    let out = agent(&["run", "--endpoints", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("node"), "{stderr}");

    let f = config("node: a\nendpoints: [127.0.0.1:1]\nsim:\n  speedfactor: 2\n");
    let path = f.path().to_str().expect("utf-8 path");
    // Flags straight after the binary name mean `run`.
    let out = agent(&["--config", path]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("speedfactor"), "{stderr}");
}

#[test]
fn environment_overrides_with_nested_keys_and_ignores_replica_keys() {
    // Nested key applied (and refused), numeric node accepted, the replica's
    // AUTOGLM_NODE_ID ignored rather than an unknown key.
    let out = Command::new(env!("CARGO_BIN_EXE_autoglm-agent"))
        .env("AUTOGLM_NODE", "123")
        .env("AUTOGLM_ENDPOINTS", "127.0.0.1:1,127.0.0.1:2")
        .env("AUTOGLM_NODE_ID", "5")
        .env("AUTOGLM_LABELS__RACK", "7")
        .env("AUTOGLM_SIM__SPEED_FACTOR", "0")
        .env_remove("RUST_LOG")
        .output()
        .expect("run autoglm-agent");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("sim.speed_factor"), "{stderr}");
}
