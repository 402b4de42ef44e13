//! The `autoglm` CLI against a real single-replica cluster run in-process:
//! exit codes and one-line errors for bad input, and `--json` output.

use std::process::Command;
use std::time::Duration;

use autoglm_client::proto::Member;
use autoglm_client::{Client, ClientOptions};
use autoglm_server::config::ServerConfig;
use autoglm_server::raft::bootstrap;

const CLI: &str = env!("CARGO_BIN_EXE_autoglm");

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Starts replica 1 alone and forms a one-voter cluster; returns its address.
async fn cluster(dir: &std::path::Path) -> String {
    let listen = free_addr();
    let config = ServerConfig {
        node_id: 1,
        listen: listen.clone(),
        http_listen: free_addr(),
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    let running = bootstrap::start(&config).await.unwrap();
    tokio::spawn(running.serve(std::future::pending()));
    let client = Client::new([listen.clone()], ClientOptions::default()).unwrap();
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
    listen
}

/// Runs the CLI off the async runtime; returns (exit code, stdout, stderr).
async fn cli(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(CLI);
    cmd.args(["--endpoints", endpoint, "--timeout", "2"])
        .args(args);
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

    let (code, _, err) = cli(&free_addr(), &["cluster", "status"]).await;
    assert_eq!(code, 3);
    one_line(&err);
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
