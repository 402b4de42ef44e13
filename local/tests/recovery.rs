//! What operators live with (docs/operations.md): a replica whose data dir
//! was damaged refuses to start (exit code 3, one line naming the file); a
//! backup restores a wiped cluster; a survivor of quorum loss becomes a new
//! cluster. Each through the real `autoglm-server` binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use autoglm_client::{JobBuilder, TaskBuilder};
use autoglm_local::cluster::{verify_writes, Writer};
use autoglm_storage::damage::{cut_tail, flip_bytes, set_len};
use common::{server_command, TestCluster};

const EXIT_DAMAGED: i32 = 3;

/// A named way to damage a database file.
type Damage = (&'static str, fn(&Path));

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

fn db_file(data_dir: &Path) -> PathBuf {
    data_dir.join("raft").join("db")
}

fn flip_middle(path: &Path, count: usize) {
    let len = std::fs::metadata(path).unwrap().len();
    flip_bytes(path, len / 2, count).unwrap();
}

/// Runs `autoglm-server ARGS`; (exit code, stdout, stderr).
fn server(args: &[&str]) -> (i32, String, String) {
    let out = server_command().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes until `count` more are acknowledged, then stops and waits until
/// every replica of `ids` applied them; the acknowledged write numbers.
async fn write_and_settle(
    cluster: &TestCluster,
    ids: &[u64],
    prefix: &str,
    count: usize,
) -> Vec<u64> {
    let writer = Writer::start(cluster.client(), prefix);
    writer
        .wait_progress(count, Duration::from_secs(60))
        .await
        .unwrap();
    let acked = writer.stop().await;
    cluster
        .wait_converged(ids, Duration::from_secs(30))
        .await
        .unwrap();
    // The watermark trails the log by at most 100 ms.
    tokio::time::sleep(Duration::from_millis(400)).await;
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_replica_refuses_to_start_and_an_intact_copy_rejoins() {
    let mut cluster = TestCluster::new("");
    let leader = cluster.start_and_init(&[1, 2, 3]).await;
    let acked = write_and_settle(&cluster, &[1, 2, 3], "kv/w/", 300).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    cluster.kill(follower);
    let data_dir = cluster.get(follower).data_dir.clone();
    let intact = cluster.dir.path().join("intact");
    copy_dir(&data_dir, &intact);
    let (code, out, err) = server(&["verify", "--data-dir", data_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "verify of an intact store: {out}{err}");

    let cases: [Damage; 4] = [
        ("truncated to half", |db| {
            set_len(db, std::fs::metadata(db).unwrap().len() / 2).unwrap()
        }),
        ("truncated to nothing", |db| set_len(db, 0).unwrap()),
        ("last 4 KB cut", |db| {
            cut_tail(db, 4096).unwrap();
        }),
        ("64 bytes flipped", |db| flip_middle(db, 64)),
    ];
    for (case, damage) in cases {
        copy_dir(&intact, &data_dir);
        damage(&db_file(&data_dir));
        let (code, out, err) = server(&["verify", "--data-dir", data_dir.to_str().unwrap()]);
        if code == 0 && matches!(case, "64 bytes flipped" | "last 4 KB cut") {
            // The bytes landed on space sled no longer uses: the store is
            // whole, and the replica starts on it.
            println!("{case}: hit unused space; verify: {out}");
            cluster.spawn(follower).unwrap();
            cluster
                .wait_answering(follower, Duration::from_secs(20))
                .await
                .unwrap();
            cluster.kill(follower);
            continue;
        }
        assert_eq!(code, EXIT_DAMAGED, "{case}: verify said {out}{err}");
        cluster.spawn(follower).unwrap();
        let status = cluster
            .wait_exit(follower, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("{case}: the damaged replica kept running"));
        let log = cluster.last_log(follower);
        assert_eq!(status.code(), Some(EXIT_DAMAGED), "{case}: {log}");
        assert!(!log.contains("panicked"), "{case}: {log}");
        let last = log.lines().last().unwrap_or_default();
        assert!(
            last.contains("damaged store") && last.contains(&data_dir.display().to_string()),
            "{case}: the last line names no damaged file: {last}"
        );
        println!("{case}: {last}");
    }

    // The intact copy starts, rejoins and holds every acknowledged write.
    copy_dir(&intact, &data_dir);
    cluster.spawn(follower).unwrap();
    cluster
        .wait_converged(&[1, 2, 3], Duration::from_secs(30))
        .await
        .unwrap();
    verify_writes(&cluster, follower, "kv/w/", &acked)
        .await
        .unwrap();
    cluster.assert_no_panic();
}

/// Submits `count` one-task jobs with keys `job-<n>`; their ids by key.
async fn submit_jobs(cluster: &TestCluster, count: usize) -> Vec<(String, u64)> {
    let client = cluster.client();
    let mut jobs = Vec::new();
    for n in 0..count {
        let key = format!("job-{n}");
        let job = JobBuilder::new("backup-test")
            .idempotency_key(&key)
            .task(TaskBuilder::sim("t", Duration::from_millis(10)));
        let r = client.submit(job).await.unwrap();
        jobs.push((key, r.job_id));
    }
    jobs
}

/// Every job is there, and resubmitting its key returns the old job.
async fn assert_jobs_kept(cluster: &TestCluster, jobs: &[(String, u64)]) {
    let client = cluster.client();
    for (key, id) in jobs {
        let job = JobBuilder::new("backup-test")
            .idempotency_key(key)
            .task(TaskBuilder::sim("t", Duration::from_millis(10)));
        let r = client.submit(job).await.unwrap();
        assert_eq!(r.job_id, *id, "key {key} made a new job");
        assert!(r.duplicate, "key {key} was not recognized");
    }
}

async fn regrow(cluster: &mut TestCluster, new: &[u64], all: &[u64]) {
    let client = cluster.client();
    for &id in new {
        cluster.spawn(id).unwrap();
        cluster
            .wait_answering(id, Duration::from_secs(20))
            .await
            .unwrap();
        client.add_learner(cluster.member(id), false).await.unwrap();
    }
    client.promote(new.to_vec()).await.unwrap();
    cluster
        .wait_converged(all, Duration::from_secs(30))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_wipe_every_replica_restore_and_regrow() {
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&[1, 2, 3]).await;
    let jobs = submit_jobs(&cluster, 20).await;
    let acked = write_and_settle(&cluster, &[1, 2, 3], "kv/w/", 200).await;
    let digest = cluster
        .wait_converged(&[1, 2, 3], Duration::from_secs(30))
        .await
        .unwrap();
    let file = cluster.dir.path().join("cluster.backup");
    let summary = cluster.client().backup(&file).await.unwrap();
    assert_eq!(summary.bytes, std::fs::metadata(&file).unwrap().len());

    for id in [1, 2, 3] {
        cluster.kill(id);
        cluster.wipe(id).unwrap();
    }
    let config = cluster.config_path(1);
    let (code, out, err) = server(&[
        "restore",
        "--config",
        config.to_str().unwrap(),
        "--backup",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "restore: {out}{err}");
    let seeded: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(seeded["digest"], format!("{digest:016x}"), "{out}");
    assert_eq!(seeded["last_index"], summary.last_index, "{out}");
    // A second restore into the same data dir is refused, not merged.
    let (code, _, err) = server(&[
        "restore",
        "--config",
        config.to_str().unwrap(),
        "--backup",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already holds a store"), "{err}");

    cluster.spawn(1).unwrap();
    cluster
        .wait_leader(&[1], None, Duration::from_secs(20))
        .await
        .unwrap();
    regrow(&mut cluster, &[2, 3], &[1, 2, 3]).await;
    for id in [1, 2, 3] {
        verify_writes(&cluster, id, "kv/w/", &acked).await.unwrap();
    }
    assert_jobs_kept(&cluster, &jobs).await;
    cluster.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_of_quorum_loss_recovers_and_takes_writes() {
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&[1, 2, 3]).await;
    let jobs = submit_jobs(&cluster, 10).await;
    let acked = write_and_settle(&cluster, &[1, 2, 3], "kv/w/", 200).await;
    // Replicas 2 and 3 are gone for good; 1 is stopped for the recovery.
    for id in [2, 3, 1] {
        cluster.kill(id);
    }
    let config = cluster.config_path(1);
    let (code, out, err) = server(&["recover", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "recover: {out}{err}");
    let seeded: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        Path::new(seeded["old_store"].as_str().unwrap()).is_dir(),
        "the old store was not kept: {out}"
    );

    cluster.spawn(1).unwrap();
    cluster
        .wait_leader(&[1], None, Duration::from_secs(20))
        .await
        .unwrap();
    verify_writes(&cluster, 1, "kv/w/", &acked).await.unwrap();
    let more = write_and_settle(&cluster, &[1], "kv/after/", 50).await;
    regrow(&mut cluster, &[4, 5], &[1, 4, 5]).await;
    for id in [1, 4, 5] {
        verify_writes(&cluster, id, "kv/w/", &acked).await.unwrap();
        verify_writes(&cluster, id, "kv/after/", &more)
            .await
            .unwrap();
    }
    assert_jobs_kept(&cluster, &jobs).await;
    cluster.assert_no_panic();
}
