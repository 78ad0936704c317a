//! What whimp's log looks like to an operator's tools: JSON lines for shippers, and no log lost
//! to a syslog that is not there.

use std::path::Path;

use harness::{wait_for, Daemon, Receiver};

use crate::{route, write_config, BIN};

/// The lines the daemon wrote to stderr (the harness marks stdout's).
fn log_lines(daemon: &Daemon) -> Vec<String> {
    daemon
        .output()
        .lines()
        .filter(|l| !l.starts_with("[stdout] "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn json_log_lines_are_one_object_each_with_the_attempts_fields() {
    let backend = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "log: {{ format: json }}\nroutes:\n{}",
            route("j", "/j/K", &[backend.url("/in")], "")
        ),
    );
    let daemon = Daemon::start(Path::new(BIN), &config);
    let (status, _) = harness::post(daemon.addr("public"), "/j/K", "", b"x");
    assert_eq!(status, 200);
    wait_for("the delivery is logged", || {
        daemon.output().contains("\"message\":\"delivered\"")
    });
    for line in log_lines(&daemon) {
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            value["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        assert!(
            value["level"].is_string() && value["message"].is_string(),
            "{line}"
        );
        assert!(value["fields"].is_object(), "{line}");
        if value["message"] == "delivered" {
            assert_eq!(value["level"], "info");
            assert_eq!(
                value["fields"]["id"].as_str().map(str::len),
                Some(26),
                "{line}"
            );
            assert!(!value["fields"]["status"].is_null(), "{line}");
        }
    }
}

#[test]
fn syslog_without_a_socket_warns_and_logs_to_stderr() {
    let dir = tempfile::tempdir().unwrap();
    // Where a syslog daemon listens, hide its socket from whimp (needs root for the mount).
    let bin = if Path::new("/dev/log").exists() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIPPED syslog_without_a_socket_warns_and_logs_to_stderr: /dev/log exists and hiding it needs root");
            return;
        }
        harness::write_file(
            dir.path(),
            "hide-dev-log.sh",
            &format!(
                "#!/bin/sh\nexec unshare --mount sh -c 'mount --bind /dev/null /dev/log && exec \"$0\" \"$@\"' {BIN} \"$@\"\n"
            ),
        )
    } else {
        Path::new(BIN).to_path_buf()
    };
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).ok();
    let config = write_config(dir.path(), "log: { syslog: true }\nroutes: []\n");
    let daemon = Daemon::start(&bin, &config);
    wait_for("the warning", || {
        daemon
            .output()
            .contains("log.syslog is on but the syslog socket cannot be reached; logging to stderr")
    });
    // And the log goes on, to stderr.
    let mut daemon = daemon;
    assert_eq!(daemon.stop().code(), Some(0));
    assert!(
        daemon.output().contains("shutting down"),
        "{}",
        daemon.output()
    );
}
