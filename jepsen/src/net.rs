//! Test hosts: one network namespace per replica and per agent, each with a
//! veth leg on one bridge in the root namespace, in the subnet 10.77.0.0/24.
//! The harness itself (clients, nemesis, monitor) sits on the bridge at
//! 10.77.0.1, so partitions between hosts never cut the harness off.
//!
//! Setup first removes whatever an earlier, crashed run left (namespaces and
//! links with our prefix, the bridge, our FORWARD rule), so it is idempotent,
//! and so is teardown.

use std::fs::{File, TryLockError};

use anyhow::{bail, Context, Result};

use crate::sh::{run, run_quiet};

/// Bridge in the root namespace.
pub const BRIDGE: &str = "agjbr0";
/// Address of the harness on the bridge.
pub const HARNESS_IP: &str = "10.77.0.1";
/// Source address of the workload's clients, a second address on the
/// bridge, so a fault can cut the clients off without blinding the harness.
pub const CLIENT_IP: &str = "10.77.0.2";
const PREFIX: &str = "agj-";

/// Exclusive use of the test hosts: one run (or the hosts test) at a time,
/// since setup and teardown remove whatever another run has in place.
pub struct HostsLock {
    _file: File,
}

fn lock_path() -> std::path::PathBuf {
    std::env::temp_dir().join("autoglm-jepsen.lock")
}

fn open_lock(path: &std::path::Path) -> Result<File> {
    File::create(path).with_context(|| format!("open {}", path.display()))
}

impl HostsLock {
    /// Waits for any other run to finish, then takes the hosts.
    pub fn acquire() -> Result<Self> {
        Self::acquire_at(&lock_path())
    }

    /// Takes the hosts only if no run holds them (for `teardown`, which must
    /// never pull the network from under a live run).
    pub fn try_acquire() -> Result<Self> {
        Self::try_acquire_at(&lock_path())
    }

    fn acquire_at(path: &std::path::Path) -> Result<Self> {
        let file = open_lock(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                eprintln!("autoglm-jepsen: another run holds the test hosts; waiting for it");
                file.lock().context("lock the test hosts")?;
            }
            Err(TryLockError::Error(e)) => return Err(e).context("lock the test hosts"),
        }
        Ok(Self { _file: file })
    }

    fn try_acquire_at(path: &std::path::Path) -> Result<Self> {
        let file = open_lock(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => {
                bail!("another autoglm-jepsen run is using the test hosts")
            }
            Err(TryLockError::Error(e)) => Err(e).context("lock the test hosts"),
        }
    }
}

/// One test host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// `n1`…`n5` for replicas, `a1`… for agents.
    pub name: String,
    pub ip: String,
}

impl Host {
    pub fn namespace(&self) -> String {
        format!("{PREFIX}{}", self.name)
    }

    fn host_link(&self) -> String {
        format!("{PREFIX}{}", self.name)
    }

    /// Runs `program args…` inside this host's namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let ns = self.namespace();
        let mut full = vec!["netns", "exec", ns.as_str(), program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// The argv prefix that starts a program inside this host's namespace.
    pub fn launcher(&self) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.namespace()]
    }
}

/// Replica host `n<i>` (i from 1).
pub fn replica_host(i: u64) -> Host {
    Host {
        name: format!("n{i}"),
        ip: format!("10.77.0.{}", 10 + i),
    }
}

/// Agent host `a<i>` (i from 1).
pub fn agent_host(i: u64) -> Host {
    Host {
        name: format!("a{i}"),
        ip: format!("10.77.0.{}", 100 + i),
    }
}

/// Removes every namespace and link a run of the harness may have left.
pub fn teardown() {
    if let Ok(list) = run("ip", &["netns", "list"]) {
        for line in list.lines() {
            if let Some(ns) = line.split_whitespace().next() {
                if ns.starts_with(PREFIX) {
                    kill_namespace_processes(ns);
                    run_quiet("ip", &["netns", "del", ns]);
                }
            }
        }
    }
    if let Ok(links) = run("ip", &["-o", "link", "show"]) {
        for line in links.lines() {
            if let Some(name) = line.split(':').nth(1).map(|s| s.trim()) {
                let name = name.split('@').next().unwrap_or(name);
                if name.starts_with(PREFIX) {
                    run_quiet("ip", &["link", "del", name]);
                }
            }
        }
    }
    run_quiet("ip", &["link", "del", BRIDGE]);
    while run_quiet("iptables", &forward_rule("-D")) {}
}

fn kill_namespace_processes(ns: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            run_quiet("kill", &["-9", pid]);
        }
    }
}

/// Lets bridged traffic through the root namespace's FORWARD chain, which
/// Docker sets to DROP while br_netfilter hands bridged frames to iptables.
fn forward_rule(action: &str) -> Vec<&str> {
    vec![
        action, "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT",
    ]
}

/// Creates the bridge and one namespace per host, after a teardown.
pub fn setup(hosts: &[Host]) -> Result<()> {
    teardown();
    run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    run(
        "ip",
        &["addr", "add", &format!("{HARNESS_IP}/24"), "dev", BRIDGE],
    )?;
    run(
        "ip",
        &["addr", "add", &format!("{CLIENT_IP}/24"), "dev", BRIDGE],
    )?;
    run("ip", &["link", "set", BRIDGE, "up"])?;
    run("iptables", &forward_rule("-I"))?;
    for host in hosts {
        add_host(host)?;
    }
    Ok(())
}

fn add_host(host: &Host) -> Result<()> {
    let ns = host.namespace();
    let outer = host.host_link();
    let inner = format!("{outer}-i");
    run("ip", &["netns", "add", &ns])?;
    run(
        "ip",
        &[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ],
    )?;
    run("ip", &["link", "set", &inner, "netns", &ns])?;
    run("ip", &["link", "set", &outer, "master", BRIDGE])?;
    run("ip", &["link", "set", &outer, "up"])?;
    host.exec("ip", &["link", "set", "lo", "up"])?;
    host.exec("ip", &["link", "set", &inner, "name", "eth0"])?;
    host.exec(
        "ip",
        &["addr", "add", &format!("{}/24", host.ip), "dev", "eth0"],
    )?;
    host.exec("ip", &["link", "set", "eth0", "up"])?;
    host.exec("ip", &["route", "add", "default", "via", HARNESS_IP])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_of_the_hosts_at_a_time() {
        let dir = std::env::temp_dir().join(format!("agj-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hosts.lock");
        let held = HostsLock::acquire_at(&path).unwrap();
        let refused = HostsLock::try_acquire_at(&path)
            .err()
            .expect("a second holder");
        assert!(refused.to_string().contains("another autoglm-jepsen run"));
        drop(held);
        assert!(HostsLock::try_acquire_at(&path).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }
}
