//! Host setup and teardown are idempotent and leave nothing behind, and a
//! host reaches the harness through the bridge until a rule cuts it off.
//! Needs root, iproute2, iptables and bash (as `.ci/run` provides); it takes
//! over the `agj-` namespaces, so it waits for the hosts lock of any jepsen
//! run on the machine.

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;

use autoglm_jepsen::net::{self, agent_host, replica_host, HARNESS_IP};

fn listing(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn leftovers() -> Vec<String> {
    let mut found: Vec<String> = listing(&["netns", "list"])
        .lines()
        .chain(listing(&["-o", "link", "show"]).lines())
        .filter(|l| l.contains("agj"))
        .map(str::to_string)
        .collect();
    found.sort();
    found
}

/// Whether `host` can open a TCP connection to the harness's listener.
fn reaches_harness(host: &net::Host, port: u16) -> bool {
    let script = format!("timeout 2 bash -c 'echo hi > /dev/tcp/{HARNESS_IP}/{port}'");
    host.exec("bash", &["-c", &script]).is_ok()
}

#[test]
fn setup_and_teardown_are_idempotent_and_hosts_reach_the_harness() {
    let hosts = vec![replica_host(1), replica_host(2), agent_host(1)];
    // Waits for any jepsen run on this machine instead of tearing it down.
    let _lock = net::HostsLock::acquire().expect("lock the test hosts");
    net::setup(&hosts).expect("first setup");
    // A second setup over the first (a crashed run) must succeed too.
    net::setup(&hosts).expect("setup over a previous run");
    assert!(listing(&["netns", "list"]).contains("agj-n2"));

    let listener = TcpListener::bind((HARNESS_IP, 0)).expect("bind on the bridge");
    let port = listener.local_addr().unwrap().port();
    assert!(
        reaches_harness(&hosts[0], port),
        "n1 cannot reach the harness"
    );
    let (mut conn, from) = listener.accept().unwrap();
    assert_eq!(from.ip().to_string(), hosts[0].ip);
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hi\n");

    // A DROP rule in the host's namespace cuts it off; flushing restores it.
    hosts[2]
        .exec("iptables", &["-A", "INPUT", "-s", HARNESS_IP, "-j", "DROP"])
        .unwrap();
    assert!(
        !reaches_harness(&hosts[2], port),
        "the DROP rule had no effect"
    );
    hosts[2].exec("iptables", &["-F", "INPUT"]).unwrap();
    assert!(reaches_harness(&hosts[2], port));

    net::teardown();
    net::teardown();
    assert_eq!(leftovers(), Vec::<String>::new());
}
