//! Running a risky test inside a network namespace that has only loopback.
//!
//! The test re-executes this test binary, filtered to itself, under `unshare -n` with the
//! loopback interface brought up; whomp, its receivers and the test DNS server all run in
//! there, so even a bug that made whomp connect to a real address could not leave the machine.
//! Where `unshare -n` does not work (not root, no `ip`), the test runs normally and says so.

use std::process::Command;

/// Set in the re-executed child: the test body runs.
const INSIDE: &str = "WHOMP_E2E_NETNS";

/// Runs test `name` (its path in this binary, e.g. `preflight::hostile_targets`) in a fresh
/// network namespace. Returns true when that happened (the caller returns at once), false when
/// the caller should run the body itself: inside the namespace, or without one.
pub(crate) fn reexec(name: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        // /proc/self/net/dev lists the interfaces of this process's network namespace.
        let interfaces: Vec<String> = std::fs::read_to_string("/proc/self/net/dev")
            .unwrap()
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|n| n.trim().to_owned())
            .collect();
        assert_eq!(interfaces, ["lo"], "the namespace must have only loopback");
        eprintln!("{name}: running in a network namespace with only loopback");
        return false;
    }
    let probe = Command::new("unshare")
        .args(["-n", "--", "ip", "link", "set", "lo", "up"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "{name}: `unshare -n` (or `ip`) is unavailable here; running without a network namespace"
        );
        return false;
    }
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("unshare")
        .args([
            "-n",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("----- {name} in a network namespace:\n{stdout}{stderr}-----");
    assert!(output.status.success(), "{name} failed in its namespace");
    assert!(
        stdout.contains("1 passed"),
        "{name} did not run in its namespace"
    );
    true
}
