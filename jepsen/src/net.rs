//! Test hosts: one network namespace per replica and per agent, each with a
//! veth leg on one bridge in the root namespace, in the subnet 10.77.0.0/24.
//! The harness itself (clients, nemesis, monitor) sits on the bridge at
//! 10.77.0.1, so partitions between hosts never cut the harness off.
//!
//! Setup first removes whatever an earlier, crashed run left (namespaces and
//! links with our prefix, the bridge, our FORWARD rule), so it is idempotent,
//! and so is teardown.

use anyhow::Result;

use crate::sh::{run, run_quiet};

/// Bridge in the root namespace.
pub const BRIDGE: &str = "agjbr0";
/// Address of the harness on the bridge.
pub const HARNESS_IP: &str = "10.77.0.1";
const PREFIX: &str = "agj-";

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
