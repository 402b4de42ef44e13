//! Bad input gets a clear, one-line error and a non-zero exit; nothing panics
//! and nothing acknowledged is lost.

mod common;

use std::io::Write;
use std::time::Duration;

use autoglm_client::security::pki;
use common::{server_command, TestCluster};
use tonic::Code;

fn run_server(args: &[&str]) -> (i32, String) {
    let out = server_command().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn one_line(stderr: &str) -> &str {
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "expected one line, got:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr.trim_end()
}

#[test]
fn malformed_and_unknown_config_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let malformed = dir.path().join("malformed.yaml");
    std::fs::write(&malformed, "node_id: [1\nlisten: :\n").unwrap();
    let (code, err) = run_server(&["--config", malformed.to_str().unwrap(), "--data-dir", data]);
    assert_eq!(code, 2);
    assert!(one_line(&err).contains("config:"), "{err}");

    let unknown = dir.path().join("unknown.yaml");
    std::fs::write(&unknown, "node_id: 1\nraft:\n  election_timeout_ms: 10\n").unwrap();
    let (code, err) = run_server(&["--config", unknown.to_str().unwrap(), "--data-dir", data]);
    assert_eq!(code, 2);
    assert!(one_line(&err).contains("election_timeout_ms"), "{err}");

    let (code, err) = run_server(&["--config", dir.path().join("absent.yaml").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(one_line(&err).contains("absent.yaml"), "{err}");
    assert!(
        !std::path::Path::new(data).exists(),
        "a refused config must not create the data dir"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_of_another_cluster_is_refused() {
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&[1]).await;
    cluster.client().config_put("kv/kept", "yes").await.unwrap();
    cluster.kill(1);
    let node = cluster.get(1);
    let data_dir = node.data_dir.to_str().unwrap().to_string();
    let grpc = node.addr.clone();
    let (code, err) = run_server(&[
        "--node-id",
        "1",
        "--cluster-name",
        "other",
        "--listen",
        &grpc,
        "--data-dir",
        &data_dir,
        "--insecure",
    ]);
    assert_eq!(code, 1);
    assert!(
        one_line(&err).contains("belongs to cluster 'test'"),
        "{err}"
    );
    let (code, err) = run_server(&[
        "--node-id",
        "7",
        "--cluster-name",
        "test",
        "--listen",
        &grpc,
        "--data-dir",
        &data_dir,
        "--insecure",
    ]);
    assert_eq!(code, 1);
    assert!(one_line(&err).contains("replica 1"), "{err}");

    // The refused starts changed nothing: the rightful owner restarts with its data.
    cluster.spawn(1).unwrap();
    cluster
        .wait_leader(&[1], None, Duration::from_secs(10))
        .await
        .unwrap();
    let got = cluster.client().config_get("kv/kept", false).await.unwrap();
    assert_eq!(got.entry.unwrap().value, "yes");
    cluster.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_mistakes_and_foreign_peers_are_refused() {
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&[1, 2, 3]).await;
    let client = cluster.client();
    client.config_put("kv/before", "1").await.unwrap();

    // Removing every voter.
    let err = client.remove(vec![1, 2, 3]).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    assert!(err.to_string().contains("without voters"), "{err}");

    // Promoting an id nobody knows.
    let err = client.promote(vec![42]).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    assert!(err.to_string().contains("42"), "{err}");

    // A peer that speaks HTTP/1 (the health port), one that speaks garbage, and nothing at all.
    let http = cluster.get(1).http.clone();
    let err = client
        .add_learner(autoglm_client::proto::Member { id: 4, addr: http }, false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    assert!(
        err.to_string().contains("certificate of this cluster's CA"),
        "{err}"
    );

    let garbage = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let garbage_addr = garbage.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut stream in garbage.incoming().flatten() {
            let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\nnot grpc at all\r\n");
        }
    });
    let member = autoglm_client::proto::Member {
        id: 4,
        addr: garbage_addr.clone(),
    };
    let err = client.add_learner(member, false).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    assert!(err.to_string().contains(&garbage_addr), "{err}");

    // A replica of another cluster, with that cluster's CA.
    let foreign_dir = cluster.dir.path().join("foreign");
    let foreign_tls = foreign_dir.join("tls");
    pki::create_ca(&foreign_tls, "elsewhere", 1, false).unwrap();
    let subject = pki::Subject::Replica {
        id: 4,
        hosts: Vec::new(),
    };
    pki::issue(&foreign_tls, subject, &foreign_tls, "replica-4", 1, false).unwrap();
    let foreign = format!("127.0.0.1:{}", common::free_port());
    let foreign_http = format!("127.0.0.1:{}", common::free_port());
    let mut other = server_command()
        .args([
            "--node-id",
            "4",
            "--cluster-name",
            "elsewhere",
            "--listen",
            &foreign,
            "--http-listen",
            &foreign_http,
        ])
        .arg("--data-dir")
        .arg(foreign_dir.join("data"))
        .arg("--ca-file")
        .arg(foreign_tls.join("ca.pem"))
        .arg("--cert-file")
        .arg(foreign_tls.join("replica-4.pem"))
        .arg("--key-file")
        .arg(foreign_tls.join("replica-4-key.pem"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut result = None;
    for _ in 0..100 {
        let r = client
            .add_learner(
                autoglm_client::proto::Member {
                    id: 4,
                    addr: foreign.clone(),
                },
                false,
            )
            .await;
        if !matches!(&r, Err(e) if e.to_string().contains("unreachable")) {
            result = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = other.kill();
    let _ = other.wait();
    let err = result.expect("foreign replica never answered").unwrap_err();
    assert!(
        err.to_string().contains("certificate of this cluster's CA"),
        "{err}"
    );

    // Init with a bad membership on an initialized cluster.
    let err = client.init(vec![cluster.member(1)]).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");

    // Bad keys are named; the cluster still serves and kept everything.
    let err = client.config_put("bad key", "x").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert!(err.to_string().starts_with("key:"), "{err}");
    let status = client.status().await.unwrap();
    assert_eq!(status.voters.len(), 3);
    assert!(
        status.learners.is_empty(),
        "a refused peer was added: {status:?}"
    );
    assert_eq!(
        client
            .config_get("kv/before", false)
            .await
            .unwrap()
            .entry
            .unwrap()
            .value,
        "1"
    );
    for id in [1, 2, 3] {
        assert!(cluster.is_running(id), "replica {id} died");
    }
    cluster.assert_no_panic();
}
