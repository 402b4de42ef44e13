//! `exec` attempts: a command in a process group of its own, so a timeout, a
//! cancellation or the end of the attempt kills everything it started
//! (shells, their children, grandchildren), not just the first process.

use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autoglm_client::proto::ExecPayload;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::task::JoinHandle;

use super::output::OutputWriter;
use super::{Ended, RunAs, StopCause, Tail};

/// How long output still in the pipes is read after the group is killed. A
/// process that left the group (setsid) may hold a pipe open for ever.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Kills the whole group when dropped, so not even an aborted attempt task
/// leaves processes behind.
struct ProcessGroup {
    pgid: Pid,
    killed: bool,
}

impl ProcessGroup {
    fn kill(&mut self) {
        self.killed = true;
        match killpg(self.pgid, Signal::SIGKILL) {
            // ESRCH: every process of the group has already exited.
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => tracing::warn!(pgid = self.pgid.as_raw(), "cannot kill process group: {e}"),
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if !self.killed {
            self.kill();
        }
    }
}

/// Value of CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES.
pub(super) fn visible_devices(gpus: &[u32]) -> (String, String) {
    let list = gpus
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    // Empty CUDA_VISIBLE_DEVICES hides every GPU from CUDA; the container
    // runtime needs "none" for the same (empty means "as runc": all of them).
    let nvidia = if list.is_empty() {
        "none".to_string()
    } else {
        list.clone()
    };
    (list, nvidia)
}

pub(super) async fn run(
    p: &ExecPayload,
    gpus: &[u32],
    tail_bytes: usize,
    kept: Option<OutputWriter>,
    run_as: Option<&RunAs>,
    stop: impl Future<Output = StopCause>,
) -> Ended {
    let Some(program) = p.argv.first().filter(|a| !a.is_empty()) else {
        return Ended::failed("exec: argv[0] must not be empty");
    };
    let (cuda, nvidia) = visible_devices(gpus);
    let mut cmd = Command::new(program);
    cmd.args(&p.argv[1..])
        .envs(&p.env)
        // After the spec's env: the attempt sees only the GPUs it was given.
        .env("CUDA_VISIBLE_DEVICES", cuda)
        .env("NVIDIA_VISIBLE_DEVICES", nvidia)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if !p.cwd.is_empty() {
        cmd.current_dir(&p.cwd);
    }
    // std drops the supplementary groups too when a root agent switches user.
    if let Some(user) = run_as {
        cmd.uid(user.uid).gid(user.gid);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Ended::failed(format!("exec: cannot start {program:?}: {e}")),
    };
    let Some(pid) = child.id() else {
        return Ended::failed("exec: the process exited before it could be tracked");
    };
    // process_group(0): the group id is the child's pid.
    let mut group = ProcessGroup {
        pgid: Pid::from_raw(pid as i32),
        killed: false,
    };

    let sink = Arc::new(Mutex::new(Sink {
        tail: Tail::new(tail_bytes),
        kept,
    }));
    let readers: Vec<JoinHandle<()>> = [
        child.stdout.take().map(|r| read_into(r, Arc::clone(&sink))),
        child.stderr.take().map(|r| read_into(r, Arc::clone(&sink))),
    ]
    .into_iter()
    .flatten()
    .collect();

    tokio::pin!(stop);
    let waited = tokio::select! {
        status = child.wait() => Ok(status),
        cause = &mut stop => Err(cause),
    };
    // Whichever way it ended, nothing of the attempt outlives it: after a
    // normal exit this kills what the command left running in the background.
    group.kill();
    let waited = match waited {
        Ok(status) => Ok(status),
        // Reap the leader we just killed; its exit status is the signal.
        Err(cause) => Err((cause, child.wait().await.ok())),
    };
    for mut reader in readers {
        if tokio::time::timeout(DRAIN_GRACE, &mut reader)
            .await
            .is_err()
        {
            reader.abort();
        }
    }
    let output_tail = {
        let mut sink = sink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(Err(e)) = sink.kept.take().map(OutputWriter::finish) {
            tracing::warn!("output file not finished: {e}");
        }
        sink.tail.to_text()
    };

    match waited {
        Ok(Ok(status)) => {
            let (success, message) = match (status.code(), status.signal()) {
                (Some(0), _) => (true, String::new()),
                (Some(code), _) => (false, format!("exited with code {code}")),
                (None, Some(sig)) => (false, format!("killed by signal {sig}")),
                (None, None) => (false, format!("ended with status {status}")),
            };
            Ended::Finished {
                success,
                exit_code: status.code(),
                message,
                output_tail,
            }
        }
        Ok(Err(e)) => Ended::Finished {
            success: false,
            exit_code: None,
            message: format!("exec: cannot wait for the process: {e}"),
            output_tail,
        },
        Err((cause, status)) => Ended::Interrupted {
            cause,
            exit_code: status.and_then(|s| s.code()),
            output_tail,
        },
    }
}

/// Where an attempt's output goes: the tail its report carries, and its
/// file when the node keeps output.
struct Sink {
    tail: Tail,
    kept: Option<OutputWriter>,
}

impl Sink {
    fn push(&mut self, bytes: &[u8]) {
        self.tail.push(bytes);
        if let Some(Err(e)) = self.kept.as_mut().map(|k| k.push(bytes)) {
            // The file ends here; the attempt and its tail go on.
            tracing::warn!("output file: {e}; no more output kept for this attempt");
            self.kept = None;
        }
    }
}

fn read_into(
    mut reader: impl AsyncRead + Unpin + Send + 'static,
    sink: Arc<Mutex<Sink>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        // Ends at end of file, or on a read error (nothing more to read then).
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(&buf[..n]);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_devices_are_comma_separated_or_hidden() {
        assert_eq!(visible_devices(&[0, 3]), ("0,3".into(), "0,3".into()));
        assert_eq!(visible_devices(&[]), (String::new(), "none".into()));
    }
}
