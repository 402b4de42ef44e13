//! The `autoglm` CLI against a real single-replica cluster run in-process:
//! exit codes and one-line errors for bad input, and `--json` output.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use autoglm_client::proto::Member;
use autoglm_client::security::{Credentials, TlsFiles, Transport};
use autoglm_client::{Client, ClientOptions};
use autoglm_server::config::ServerConfig;
use autoglm_server::raft::bootstrap;

const CLI: &str = env!("CARGO_BIN_EXE_autoglm");

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The test cluster's CA, replica 1's certificate and an admin user's, made
/// with the CLI's own subcommands.
fn pki(dir: &Path) -> PathBuf {
    let tls = dir.join("tls");
    let run = |args: &[&str]| {
        let out = Command::new(CLI).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let d = tls.to_str().unwrap();
    run(&[
        "tls",
        "ca",
        "create",
        "--cluster",
        "autoglm",
        "--dir",
        d,
        "--days",
        "2",
    ]);
    run(&[
        "tls",
        "cert",
        "create",
        "--replica",
        "1",
        "--ca-dir",
        d,
        "--days",
        "2",
    ]);
    run(&[
        "tls", "cert", "create", "--user", "admin", "--role", "admin", "--ca-dir", d, "--days", "2",
    ]);
    tls
}

/// Starts replica 1 alone, with TLS, and forms a one-voter cluster; returns
/// its address and the certificate directory.
async fn cluster(dir: &Path) -> (String, PathBuf) {
    cluster_with(dir, ServerConfig::default()).await
}

/// [`cluster`] from `base` (its scheduler settings, say).
async fn cluster_with(dir: &Path, base: ServerConfig) -> (String, PathBuf) {
    let tls = pki(dir);
    let listen = free_addr();
    let config = ServerConfig {
        node_id: 1,
        listen: listen.clone(),
        http_listen: free_addr(),
        data_dir: dir.join("data"),
        tls: TlsFiles::in_dir(&tls, "replica-1"),
        ..base
    };
    let running = bootstrap::start(&config).await.unwrap();
    tokio::spawn(running.serve(std::future::pending()));
    let credentials = Credentials {
        transport: Transport::tls(&TlsFiles::in_dir(&tls, "user-admin")).unwrap(),
        token: None,
    };
    let client = Client::new([listen.clone()], ClientOptions::new(credentials)).unwrap();
    client
        .init(vec![Member {
            id: 1,
            addr: listen.clone(),
        }])
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client
        .status()
        .await
        .map(|s| s.leader_id != Some(1))
        .unwrap_or(true)
    {
        assert!(std::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (listen, tls)
}

/// Runs the CLI off the async runtime with the admin certificate; returns
/// (exit code, stdout, stderr).
async fn cli(cluster: &(String, PathBuf), args: &[&str]) -> (i32, String, String) {
    let tls = &cluster.1;
    let mut cmd = Command::new(CLI);
    cmd.args(["--endpoints", &cluster.0, "--timeout", "2"])
        .arg("--ca-file")
        .arg(tls.join("ca.pem"))
        .arg("--cert-file")
        .arg(tls.join("user-admin.pem"))
        .arg("--key-file")
        .arg(tls.join("user-admin-key.pem"))
        .args(args);
    run(cmd).await
}

async fn run(mut cmd: Command) -> (i32, String, String) {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(out.stdout),
        text(out.stderr),
    )
}

/// The CLI with only the CA and a token.
async fn cli_token(
    cluster: &(String, PathBuf),
    token: &str,
    args: &[&str],
) -> (i32, String, String) {
    let mut cmd = Command::new(CLI);
    cmd.args(["--endpoints", &cluster.0, "--timeout", "2"])
        .arg("--ca-file")
        .arg(cluster.1.join("ca.pem"))
        .env("AUTOGLM_TOKEN", token)
        .args(args);
    run(cmd).await
}

fn one_line(stderr: &str) -> &str {
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "expected one line, got:\n{stderr}"
    );
    assert!(stderr.starts_with("autoglm: "), "{stderr}");
    stderr.trim_end()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_exit_1_usage_2_unreachable_3_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let ep = cluster(dir.path()).await;

    let (code, _, err) = cli(&ep, &["cluster", "remove", "1"]).await;
    assert_eq!(code, 1);
    assert!(one_line(&err).contains("without voters"), "{err}");

    let (code, _, err) = cli(&ep, &["cluster", "promote", "42"]).await;
    assert_eq!(code, 1);
    assert!(one_line(&err).contains("42"), "{err}");

    let garbage = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let garbage_addr = garbage.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::Write;
        for mut s in garbage.incoming().flatten() {
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nnot grpc");
        }
    });
    let (code, _, err) = cli(&ep, &["cluster", "add-learner", "4", &garbage_addr]).await;
    assert_eq!(code, 1);
    assert!(one_line(&err).contains(&garbage_addr), "{err}");

    let (code, _, err) = cli(&ep, &["config", "get", "missing/key"]).await;
    assert_eq!(code, 1);
    assert!(one_line(&err).contains("not found"), "{err}");

    let (code, _, err) = cli(&ep, &["submit", "--name", "x", "--", ""]).await;
    assert_eq!(code, 1);
    assert!(one_line(&err).contains("(x).payload.exec.argv"), "{err}");

    let (code, _, err) = cli(&ep, &["cluster", "init", "--member", "nonsense"]).await;
    assert_eq!(code, 2);
    assert!(one_line(&err).contains("ID=HOST:PORT"), "{err}");

    let (code, _, err) = cli(&(free_addr(), ep.1.clone()), &["cluster", "status"]).await;
    assert_eq!(code, 3);
    one_line(&err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_bootstrap_to_revocation_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let ep = cluster(dir.path()).await;
    let secret = |out: &str| {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        (
            v["secret"].as_str().unwrap().to_string(),
            v["accessor"].as_str().unwrap().to_string(),
        )
    };
    let (code, out, err) = cli(&ep, &["--json", "acl", "bootstrap"]).await;
    assert_eq!(code, 0, "{err}");
    let (root, _) = secret(&out);
    let (code, _, err) = cli(&ep, &["acl", "bootstrap"]).await;
    assert_eq!(code, 1, "bootstrap happens once");
    assert!(one_line(&err).contains("already bootstrapped"), "{err}");

    let (code, out, err) = cli_token(
        &ep,
        &root,
        &[
            "--json",
            "acl",
            "token",
            "create",
            "--name",
            "alice",
            "--role",
            "submitter",
            "--ttl",
            "1h",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (alice, accessor) = secret(&out);
    let (code, out, _) = cli_token(&ep, &alice, &["acl", "whoami"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("alice (submitter, by token)"), "{out}");
    let (code, _, err) = cli_token(
        &ep,
        &alice,
        &["--json", "submit", "--name", "s", "--sim-ms", "5"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli_token(
        &ep,
        &alice,
        &["config", "set", "placement/policy", "random"],
    )
    .await;
    assert_eq!(code, 7, "a submitter may not configure");
    assert!(one_line(&err).contains("submitter"), "{err}");
    let (code, _, err) = cli_token(&ep, &alice, &["acl", "token", "list"]).await;
    assert_eq!(code, 7, "{err}");

    let (code, out, _) = cli(&ep, &["--json", "acl", "token", "list"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains(&accessor) && !out.contains(&alice),
        "secrets are never listed: {out}"
    );
    let (code, _, err) = cli(&ep, &["acl", "token", "revoke", &accessor]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli_token(&ep, &alice, &["acl", "whoami"]).await;
    assert_eq!(code, 7);
    assert!(one_line(&err).contains("unknown or revoked"), "{err}");

    let (code, _, err) = cli_token(&ep, "agl.nonsense", &["acl", "whoami"]).await;
    assert_eq!(code, 7);
    assert!(one_line(&err).contains("malformed"), "{err}");
    let (code, _, err) = run({
        let mut c = Command::new(CLI);
        c.args(["--endpoints", &ep.0, "acl", "whoami"]);
        c
    })
    .await;
    assert_eq!(code, 2, "no CA given: a usage error");
    assert!(one_line(&err).contains("--ca-file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_parses_and_carries_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let ep = cluster(dir.path()).await;
    let (code, out, err) = cli(
        &ep,
        &[
            "--json",
            "config",
            "set",
            "placement/policy",
            "least-outstanding",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], 1);
    let (code, out, _) = cli(&ep, &["--json", "cluster", "status"]).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["role"], "leader");
    let (code, out, _) = cli(&ep, &["--json", "submit", "--name", "s", "--sim-ms", "5"]).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let job = v["job_id"].as_u64().unwrap().to_string();
    let (code, out, _) = cli(&ep, &["--json", "job", "get", &job]).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["tasks"][0]["state"], "queued",
        "no agent: the task waits in the queue"
    );
}

/// An agent run in-process with a certificate made by the CLI, and simulated
/// GPUs of `gpu_mb` each.
fn spawn_agent(
    cluster: &(String, PathBuf),
    node: &str,
    gpu_mb: &[u64],
    cpu_millis: u64,
    memory_mb: u64,
    zone: &str,
) -> tokio::task::JoinHandle<Result<(), autoglm_agent::AgentError>> {
    let c = agent_config(cluster, node, gpu_mb, cpu_millis, memory_mb, zone);
    tokio::spawn(autoglm_agent::run(c, std::future::pending()))
}

fn agent_config(
    cluster: &(String, PathBuf),
    node: &str,
    gpu_mb: &[u64],
    cpu_millis: u64,
    memory_mb: u64,
    zone: &str,
) -> autoglm_agent::AgentConfig {
    let tls = &cluster.1;
    let out = Command::new(CLI)
        .args(["tls", "cert", "create", "--agent", node, "--days", "2"])
        .arg("--ca-dir")
        .arg(tls)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let gpus = gpu_mb
        .iter()
        .map(|mb| autoglm_agent::config::SimulatedGpu::new("H100", *mb))
        .collect();
    let mut c = autoglm_agent::AgentConfig::simulated(node, gpus, 1);
    c.endpoints = vec![cluster.0.clone()];
    c.tls = TlsFiles::in_dir(tls, &format!("agent-{node}"));
    c.cpu_millis = Some(cpu_millis);
    c.memory_mb = Some(memory_mb);
    c.labels.insert("zone".into(), zone.into());
    c.heartbeat_interval_ms = 200;
    c.lease_ms = 1_000;
    c
}

/// A task that fits no node: `task get` says why, node by node, each filter
/// counted once (one node fails each), in filter order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_get_explains_why_a_task_fits_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut base = ServerConfig::default();
    base.scheduler.heartbeat_interval_ms = 200;
    base.scheduler.node_ttl_ms = 1_500;
    base.scheduler.election_grace_ms = 300;
    let ep = cluster_with(dir.path(), base).await;
    const GB80: u64 = 81_920;
    // Each node lacks one thing the task asks for: 2 GPUs of 80 GB,
    // 4 CPUs, 8 GB of memory, zone=a.
    let down = spawn_agent(&ep, "n-down", &[GB80, GB80], 8_000, 16_000, "a");
    let _agents = [
        spawn_agent(&ep, "n-drained", &[GB80, GB80], 8_000, 16_000, "a"),
        spawn_agent(&ep, "n-labels", &[GB80, GB80], 8_000, 16_000, "b"),
        spawn_agent(&ep, "n-gpu-count", &[GB80], 8_000, 16_000, "a"),
        spawn_agent(&ep, "n-gpu-memory", &[40_960, 40_960], 8_000, 16_000, "a"),
        spawn_agent(&ep, "n-cpu", &[GB80, GB80], 2_000, 16_000, "a"),
        spawn_agent(&ep, "n-memory", &[GB80, GB80], 8_000, 4_000, "a"),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out, _) = cli(&ep, &["--json", "nodes", "list"]).await;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        if code == 0 && v.as_array().is_some_and(|a| a.len() == 7) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "nodes: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, out, err) = cli(&ep, &["nodes", "drain", "n-drained"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("node n-drained drained: "), "{out}");
    let (code, out, err) = cli(&ep, &["nodes", "undrain", "n-memory"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("node n-memory undrained: "), "{out}");
    down.abort();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, out, _) = cli(&ep, &["--json", "nodes", "list"]).await;
        if out.contains("\"down\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "n-down never went down: {out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let job = dir.path().join("big.yaml");
    std::fs::write(
        &job,
        "tasks:\n  - name: big\n    sim_ms: 10\n    gpus: 2\n    gpu_memory_mb: 81920\n    \
         cpu_millis: 4000\n    memory_mb: 8000\n    labels: {zone: a}\n",
    )
    .unwrap();
    let (code, out, err) = cli(&ep, &["--json", "submit", "-f", job.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let task = v["task_ids"]["big"].as_u64().unwrap().to_string();

    let (code, out, err) = cli(&ep, &["--json", "task", "get", &task]).await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "queued", "{v}");
    let w = &v["waiting"];
    assert_eq!(
        (w["nodes"].as_u64(), w["nodes_fit"].as_u64()),
        (Some(7), Some(0)),
        "{w}"
    );
    for filter in [
        "down",
        "drained",
        "labels",
        "gpu_count",
        "gpu_memory",
        "cpu",
        "memory",
    ] {
        assert_eq!(w["removed"][filter], 1, "{filter}: {w}");
    }
    assert_eq!(w["removed"].as_object().unwrap().len(), 7, "{w}");
    assert_eq!(
        (w["ahead"].as_u64(), w["live_metrics"].as_bool()),
        (Some(0), Some(true))
    );

    let (code, out, err) = cli(&ep, &["task", "get", &task]).await;
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("waiting "))
        .unwrap_or_else(|| panic!("no explanation in:\n{out}"));
    let expected = ": 0 of 7 nodes fit: 1 is down, 1 is drained, 1 does not match zone=a, \
                    1 has fewer than 2 GPUs with a free slot, \
                    1 has fewer than 2 GPUs with 81920 MB of GPU memory free, \
                    1 has less than 4000 CPU millis free, 1 has less than 8000 MB of memory free";
    assert!(line.ends_with(expected), "{line}");
}

/// Once a task has ended, `task get` and `job get` still say where each
/// attempt ran, on which GPUs, how long and with which exit code, the job
/// sums its GPU time by node, and `task logs` prints each attempt's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_task_keeps_where_and_how_long_each_attempt_ran() {
    let dir = tempfile::tempdir().unwrap();
    let ep = cluster(dir.path()).await;
    let mut c = agent_config(&ep, "gpu-a", &[81_920, 81_920], 8_000, 16_000, "a");
    c.exec = autoglm_agent::config::ExecConfig {
        enabled: true,
        allow: vec!["sh".into()],
        run_as: "root".into(),
    };
    c.output.dir = dir.path().join("output").to_str().unwrap().into();
    let _agent = tokio::spawn(autoglm_agent::run(c, std::future::pending()));
    let (code, out, err) = cli(
        &ep,
        &[
            "--json",
            "submit",
            "--name",
            "two-gpus",
            "--gpus",
            "2",
            "--max-attempts",
            "2",
            "--",
            "sh",
            "-c",
            "echo attempt of $CUDA_VISIBLE_DEVICES; sleep 0.3; exit 3",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let job = v["job_id"].as_u64().unwrap().to_string();
    let task = v["task_ids"]["two-gpus"].as_u64().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let t = loop {
        let (code, out, err) = cli(&ep, &["--json", "task", "get", &task]).await;
        assert_eq!(code, 0, "{err}");
        let t: serde_json::Value = serde_json::from_str(&out).unwrap();
        if t["state"] == "failed" {
            break t;
        }
        assert!(std::time::Instant::now() < deadline, "never failed: {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The task names its last attempt's node and GPUs, and when it ran.
    assert_eq!(
        (&t["node"], &t["gpus"]),
        (&serde_json::json!("gpu-a"), &serde_json::json!([0, 1])),
        "{t}"
    );
    let (started, finished) = (
        t["started_ms"].as_u64().unwrap(),
        t["finished_ms"].as_u64().unwrap(),
    );
    // The attempt sleeps 300 ms; the two stamps come from different
    // events (the agent's start report, the finish), so allow some jitter.
    assert!(started > 0 && finished >= started + 200, "{t}");
    let attempts = t["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{t}");
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a["attempt"], i + 1, "{a}");
        assert_eq!(
            (&a["node"], &a["gpus"]),
            (&serde_json::json!("gpu-a"), &serde_json::json!([0, 1])),
            "{a}"
        );
        assert_eq!(
            (&a["result"], &a["exit_code"]),
            (&serde_json::json!("failed"), &serde_json::json!(3)),
            "{a}"
        );
        let run_ms = a["run_ms"].as_u64().unwrap();
        assert!((200..30_000).contains(&run_ms), "{a}");
        assert_eq!(
            run_ms,
            a["finished_ms"].as_u64().unwrap() - a["started_ms"].as_u64().unwrap()
        );
    }

    let (code, out, err) = cli(&ep, &["task", "get", &task]).await;
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.contains("two-gpus"))
        .unwrap_or_default();
    assert!(
        row.contains("gpu-a") && row.contains(" ms"),
        "NODE and RUN TIME shown:\n{out}"
    );
    assert!(
        out.contains("ATTEMPT") && out.contains("0,1"),
        "the attempts table:\n{out}"
    );

    let (code, out, err) = cli(&ep, &["--json", "job", "get", &job]).await;
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let usage = j["usage"].as_array().unwrap();
    assert_eq!(usage.len(), 1, "{j}");
    assert_eq!(
        (&usage[0]["node"], &usage[0]["attempts"]),
        (&serde_json::json!("gpu-a"), &serde_json::json!(2))
    );
    let run_ms: u64 = attempts.iter().map(|a| a["run_ms"].as_u64().unwrap()).sum();
    assert_eq!(usage[0]["run_ms"], run_ms, "{j}");
    assert_eq!(usage[0]["gpu_ms"], 2 * run_ms, "two GPUs each: {j}");
    let (code, out, err) = cli(&ep, &["job", "get", &job]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("GPU S") && out.contains("gpu-a"), "{out}");

    // Each attempt's output, relayed from the node.
    for args in [
        vec!["task", "logs", &task],
        vec!["task", "logs", &task, "--attempt", "1"],
    ] {
        let (code, out, err) = cli(&ep, &args).await;
        assert_eq!(
            (code, out.as_str()),
            (0, "attempt of 0,1\n"),
            "{args:?}: {err}"
        );
    }
    let (code, out, err) = cli(&ep, &["task", "logs", &task, "--attempt", "3"]).await;
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(one_line(&err).contains("attempt: task"), "{err}");
}
