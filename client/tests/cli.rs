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
    let tls = pki(dir);
    let listen = free_addr();
    let config = ServerConfig {
        node_id: 1,
        listen: listen.clone(),
        http_listen: free_addr(),
        data_dir: dir.join("data"),
        tls: TlsFiles::in_dir(&tls, "replica-1"),
        ..Default::default()
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
