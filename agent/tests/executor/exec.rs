//! `exec` attempts: exit codes, timeouts, cancellation of a whole process
//! tree, the GPU environment, env and cwd, the bounded output tail.

use std::time::Duration;

use autoglm_agent::executor::{AttemptKey, ExecRights, ExecutorSettings, RunAs, StopReason};
use autoglm_client::proto::{task_spec::Payload, AttemptStatus};

use crate::common::*;

const WITHIN: Duration = Duration::from_secs(20);

/// Processes alive (not zombies) in process group `pgid`, from /proc.
fn live_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After "(comm)": state, ppid, pgrp.
            let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
        .collect()
}

#[tokio::test]
async fn exit_codes_are_reported() {
    let (ex, mut rx) = executor(settings());
    assert!(ex.start(assign(1, 1, &[], exec_spec(&["true"]))));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert_eq!(status(&done), AttemptStatus::Succeeded, "{done:?}");
    assert_eq!(done.exit_code, Some(0));

    ex.start(assign(2, 1, &[], sh("echo bad >&2; exit 3")));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert_eq!(status(&done), AttemptStatus::Failed, "{done:?}");
    assert_eq!(done.exit_code, Some(3));
    assert_eq!(done.message, "exited with code 3");
    assert_eq!(done.output_tail, "bad\n");

    ex.start(assign(3, 1, &[], exec_spec(&["/nonexistent/program"])));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert_eq!(status(&done), AttemptStatus::Failed);
    assert!(done.message.contains("cannot start"), "{}", done.message);

    ex.start(assign(4, 1, &[], exec_spec(&[])));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert!(done.message.contains("argv[0]"), "{}", done.message);
    ex.wait_idle().await;
    assert!(ex.running().is_empty());
}

#[tokio::test]
async fn timeout_kills_and_reports_failed() {
    let (ex, mut rx) = executor(settings());
    let mut spec = sh("echo before; sleep 30");
    spec.attempt_timeout_ms = 300;
    let t0 = std::time::Instant::now();
    ex.start(assign(1, 1, &[], spec));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert_eq!(status(&done), AttemptStatus::Failed);
    assert_eq!(done.message, "timed out after 300 ms");
    assert_eq!(done.output_tail, "before\n");
    assert!(done.duration_ms >= 300, "{done:?}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn cancel_kills_the_whole_process_tree() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pid_file = dir.path().join("pid");
    let (ex, mut rx) = executor(settings());
    // A shell with two grandchildren; it writes its pid (= the group id).
    let script = format!(
        "echo $$ > {}; sleep 100 & sleep 100 & wait",
        pid_file.display()
    );
    ex.start(assign(7, 2, &[], sh(&script)));
    let running = next_report(&mut rx, WITHIN).await;
    assert_eq!(status(&running), AttemptStatus::Running);

    let deadline = std::time::Instant::now() + WITHIN;
    let pgid = loop {
        let members = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .map(|pgid| (pgid, live_members(pgid)));
        match members {
            Some((pgid, m)) if m.len() >= 3 => break pgid,
            _ if std::time::Instant::now() > deadline => panic!("tree never started: {members:?}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };

    // Another attempt number does not match: nothing happens.
    assert!(!ex.stop(AttemptKey::new(7, 1), StopReason::Cancelled("old".into())));
    assert!(ex.stop(
        AttemptKey::new(7, 2),
        StopReason::Cancelled("user asked".into())
    ));
    let done = next_report(&mut rx, WITHIN).await;
    assert_eq!(status(&done), AttemptStatus::Failed);
    assert_eq!(done.message, "cancelled: user asked");

    // SIGKILL is immediate; orphans are reaped by init shortly after.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !live_members(pgid).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "left in group {pgid}: {:?}",
            live_members(pgid)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!ex.is_running(AttemptKey::new(7, 2)));
}

#[tokio::test]
async fn background_processes_do_not_outlive_a_finished_attempt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pid_file = dir.path().join("pid");
    let (ex, mut rx) = executor(settings());
    let script = format!("echo $$ > {}; sleep 100 & echo done", pid_file.display());
    ex.start(assign(1, 1, &[], sh(&script)));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert_eq!(status(&done), AttemptStatus::Succeeded, "{done:?}");
    assert_eq!(done.output_tail, "done\n");
    let pgid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !live_members(pgid).is_empty() {
        assert!(std::time::Instant::now() < deadline, "sleep survived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn gpus_env_and_cwd_reach_the_process() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ex, mut rx) = executor(settings());
    let mut spec = sh("echo \"$CUDA_VISIBLE_DEVICES|$NVIDIA_VISIBLE_DEVICES|$FOO|$(pwd)\"");
    if let Some(Payload::Exec(p)) = &mut spec.payload {
        p.env.insert("FOO".into(), "bar".into());
        // The assignment wins over the spec.
        p.env.insert("CUDA_VISIBLE_DEVICES".into(), "7".into());
        p.cwd = dir.path().display().to_string();
    }
    ex.start(assign(1, 1, &[1, 3], spec));
    let done = run_to_end(&mut rx, WITHIN).await;
    let cwd = dir.path().canonicalize().expect("canonical temp dir");
    assert_eq!(done.output_tail, format!("1,3|1,3|bar|{}\n", cwd.display()));

    ex.start(assign(2, 1, &[], sh("echo \"[$CUDA_VISIBLE_DEVICES]\"")));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert_eq!(done.output_tail, "[]\n");
}

#[tokio::test]
async fn output_tail_is_bounded_to_the_last_bytes() {
    let mut s = settings();
    s.output_tail_bytes = 100;
    let (ex, mut rx) = executor(s);
    ex.start(assign(
        1,
        1,
        &[],
        sh("i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done; echo END >&2"),
    ));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert_eq!(status(&done), AttemptStatus::Succeeded);
    assert!(done.output_tail.len() <= 100, "{}", done.output_tail.len());
    assert!(
        done.output_tail.ends_with("line-1999\nEND\n"),
        "{:?}",
        done.output_tail
    );
}

#[tokio::test]
async fn an_attempt_runs_once_and_stale_ones_report_nothing() {
    let (ex, mut rx) = executor(settings());
    assert!(ex.start(assign(1, 1, &[], sh("sleep 100"))));
    assert!(
        !ex.start(assign(1, 1, &[], sh("sleep 100"))),
        "already running"
    );
    let running = next_report(&mut rx, WITHIN).await;
    assert_eq!(status(&running), AttemptStatus::Running);
    assert_eq!(ex.running(), vec![AttemptKey::new(1, 1)]);
    assert!(ex.stop(AttemptKey::new(1, 1), StopReason::Stale));
    ex.wait_idle().await;
    assert!(rx.try_recv().is_err(), "a stale attempt reports nothing");
}

#[tokio::test]
async fn exec_runs_only_when_enabled_allowed_and_as_the_configured_user() {
    let disabled = ExecutorSettings {
        exec: ExecRights::Disabled,
        ..settings()
    };
    let (ex, mut rx) = executor(disabled);
    ex.start(assign(1, 1, &[], sh("id > /tmp/autoglm-must-not-exist")));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert_eq!(status(&done), AttemptStatus::Failed);
    assert!(done.message.contains("exec.enabled"), "{}", done.message);
    assert!(!std::path::Path::new("/tmp/autoglm-must-not-exist").exists());

    let listed = ExecutorSettings {
        exec: ExecRights::Enabled {
            allow: Some(vec!["echo".into()]),
            run_as: None,
        },
        ..settings()
    };
    let (ex, mut rx) = executor(listed);
    ex.start(assign(2, 1, &[], sh("true")));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert!(done.message.contains("exec.allow"), "{}", done.message);
    ex.start(assign(3, 1, &[], exec_spec(&["echo", "allowed"])));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert_eq!(done.output_tail, "allowed\n");

    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: running as another user cannot be tested here");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    let as_nobody = ExecutorSettings {
        exec: ExecRights::Enabled {
            allow: None,
            run_as: Some(RunAs {
                user: "nobody".into(),
                uid: nobody.uid.as_raw(),
                gid: nobody.gid.as_raw(),
            }),
        },
        ..settings()
    };
    let (ex, mut rx) = executor(as_nobody);
    ex.start(assign(4, 1, &[], sh("id -u; id -G")));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert_eq!(status(&done), AttemptStatus::Succeeded, "{done:?}");
    let lines: Vec<&str> = done.output_tail.lines().collect();
    assert_eq!(lines[0], nobody.uid.to_string(), "{done:?}");
    assert!(
        !lines[1].split_whitespace().any(|g| g == "0"),
        "root's groups must be dropped: {done:?}"
    );
}

#[tokio::test]
async fn secret_env_values_never_leave_the_agent_in_reports() {
    let (ex, mut rx) = executor(settings());
    let mut spec = sh("echo token=$HF_TOKEN; echo visible=$PLAIN; echo $HF_TOKEN >&2; exit 1");
    if let Some(Payload::Exec(e)) = spec.payload.as_mut() {
        e.env.insert("HF_TOKEN".into(), "hf_s3cr3t_value".into());
        e.env.insert("PLAIN".into(), "shown".into());
    }
    let mut a = assign(1, 1, &[], spec);
    a.secret_env = vec!["HF_TOKEN".into()];
    ex.start(a);
    let done = run_to_end(&mut rx, WITHIN).await;
    assert!(!done.output_tail.contains("hf_s3cr3t_value"), "{done:?}");
    assert!(done.output_tail.contains("token=<redacted>"), "{done:?}");
    assert!(done.output_tail.contains("visible=shown"), "{done:?}");
}

/// With `output.dir` set, the whole output of an exec attempt stays on the
/// node, where the report carries only its tail; secret values are replaced
/// there too.
#[tokio::test]
async fn the_whole_output_is_kept_on_the_node_beyond_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings();
    s.output_tail_bytes = 100;
    let store =
        autoglm_agent::executor::output::OutputStore::open(&autoglm_agent::config::OutputConfig {
            dir: dir.path().join("output").to_str().unwrap().into(),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
    s.output = Some(store.clone());
    let (ex, mut rx) = executor(s);
    let mut spec = sh("for i in $(seq 1 2000); do echo line $i; done; echo key=$HF_TOKEN >&2");
    if let Some(Payload::Exec(e)) = spec.payload.as_mut() {
        e.env.insert("HF_TOKEN".into(), "hf_s3cr3t_value".into());
    }
    let mut a = assign(9, 3, &[], spec);
    a.secret_env = vec!["HF_TOKEN".into()];
    ex.start(a);
    let done = run_to_end(&mut rx, WITHIN).await;
    assert!(done.output_tail.len() <= 100, "{done:?}");
    let kept = std::fs::read_to_string(store.path(autoglm_agent::executor::AttemptKey::new(9, 3)))
        .unwrap();
    let lines: Vec<&str> = kept.lines().collect();
    assert_eq!(lines.len(), 2001, "every line kept");
    assert_eq!((lines[0], lines[1999]), ("line 1", "line 2000"));
    assert_eq!(lines[2000], "key=<redacted>");
}
