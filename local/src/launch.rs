//! Starting and stopping the processes of a test or local cluster: the one
//! rule shared by the local cluster, the integration tests, jepsen and the
//! benchmarks.
//!
//! Every process leads its own process group, so a signal reaches whatever
//! it runs under too (`ip netns exec`, faketime's child), and a kill waits
//! until the whole group is gone: a replica must have released its data
//! dir's lock before anything starts again on that dir.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How a kind of process is started: `program args...`, then what each
/// start adds (its `--config FILE`).
#[derive(Debug, Clone)]
pub struct Launcher {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Variables set for the process, beside the inherited environment.
    pub env: Vec<(String, String)>,
}

impl Launcher {
    pub fn new(program: impl Into<PathBuf>, args: &[&str]) -> Self {
        Self {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
        }
    }

    /// This very binary re-run as `self MODE ...`: the multi-call binaries
    /// (`autoglm-local replica`, `autoglm-bench agent`).
    pub fn this_binary(mode: &str) -> io::Result<Self> {
        Ok(Self::new(std::env::current_exe()?, &[mode]))
    }

    /// The same start run under `prefix` (`ip netns exec NS`, `faketime -f
    /// SPEC`): `prefix... program args...`.
    pub fn wrapped(&self, prefix: &[String]) -> Self {
        let Some((first, rest)) = prefix.split_first() else {
            return self.clone();
        };
        let mut args = rest.to_vec();
        args.push(self.program.display().to_string());
        args.extend(self.args.iter().cloned());
        Self {
            program: first.into(),
            args,
            env: self.env.clone(),
        }
    }

    /// With `name=value` in the process's environment.
    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Starts `program args... extra...` with stdin closed and both stdout
    /// and stderr written to a new file at `log`.
    pub fn start<S: AsRef<OsStr>>(&self, extra: &[S], log: &Path) -> io::Result<Process> {
        let out = File::create(log)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", log.display())))?;
        let err = out.try_clone()?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .args(extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("start {}: {e}", self.program.display()))
            })?;
        Ok(Process {
            pid: child.id(),
            child: Some(child),
        })
    }
}

/// A started process and its group; dropping it kills them.
#[derive(Debug)]
pub struct Process {
    /// Also the id of its process group, which outlives it while anything
    /// it started runs.
    pid: u32,
    /// `None` once reaped.
    child: Option<Child>,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn group(&self) -> Pid {
        Pid::from_raw(self.pid as i32)
    }

    /// Sends `signal` to every process of the group (SIGSTOP and SIGCONT
    /// pause and resume it).
    pub fn signal(&self, signal: Signal) {
        let _ = killpg(self.group(), signal);
    }

    /// The exit status if the process has exited (it is reaped then).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// Whether it still runs (or is paused).
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    /// SIGTERM (resumed first if paused), then up to `grace` for it to exit
    /// by itself, then SIGKILL; the status if it exited within `grace`.
    pub fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        self.signal(Signal::SIGCONT);
        self.signal(Signal::SIGTERM);
        let started = Instant::now();
        while started.elapsed() < grace {
            if let Some(status) = self.exited() {
                self.kill_group();
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// SIGKILL the whole group (a paused process dies too), reap it, and
    /// wait until no process of the group is left.
    pub fn kill(mut self) {
        self.kill_group();
    }

    fn kill_group(&mut self) {
        let group = self.group();
        let _ = killpg(group, Signal::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        for _ in 0..500 {
            if killpg(group, None).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill_group();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kill_takes_the_whole_group_and_a_stop_reports_the_exit() {
        let dir = tempfile::tempdir().unwrap();
        // The shell's child `sleep` is in the group too.
        let shell = Launcher::new("sh", &["-c"]);
        let process = shell
            .start(
                &["sleep 60 & echo started; wait"],
                &dir.path().join("a.log"),
            )
            .unwrap();
        let group = process.group();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(dir.path().join("a.log")).unwrap() != "started\n" {
            assert!(Instant::now() < deadline, "the shell never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        process.kill();
        assert!(
            killpg(group, None).is_err(),
            "a process of the group survived"
        );

        let trapping = shell
            .start(
                &["trap 'exit 7' TERM; while :; do sleep 0.05; done"],
                &dir.path().join("b.log"),
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let status = trapping
            .stop(Duration::from_secs(5))
            .expect("exited on SIGTERM");
        assert_eq!(status.code(), Some(7));
    }

    #[test]
    fn a_wrapped_start_runs_the_program_under_the_prefix() {
        let inner = Launcher::new("echo", &["inner"]).with_env("X", "1");
        let wrapped = inner.wrapped(&["env".into(), "Y=2".into()]);
        assert_eq!(wrapped.program, PathBuf::from("env"));
        assert_eq!(wrapped.args, ["Y=2", "echo", "inner"]);
        assert_eq!(wrapped.env, [("X".to_string(), "1".to_string())]);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("w.log");
        let mut p = wrapped.start(&["more"], &log).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while p.is_running() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(std::fs::read_to_string(log).unwrap(), "inner more\n");
    }
}
