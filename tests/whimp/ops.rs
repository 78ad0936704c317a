//! Operations: reload, drain, the spool lock, check-config and the CLI.

use std::path::Path;

use harness::{run_cli, wait_for, Receiver};

use crate::{route, Whimp, BIN, FAST_RETRY};

#[test]
fn sighup_reloads_routes_and_refuses_a_bad_config() {
    let backend = Receiver::start();
    let one = format!(
        "{FAST_RETRY}routes:\n{}",
        route("a", "/a/K", &[backend.url("/a")], "")
    );
    let mut whimp = Whimp::start(&one);
    assert_eq!(whimp.post("/b/K", "", b"x").0, 404);

    let two = format!("{one}{}", route("b", "/b/K", &[backend.url("/b")], ""));
    crate::write_config(whimp.dir.path(), &two);
    whimp.daemon.signal(rustix::process::Signal::HUP);
    wait_for("the new route answers", || {
        whimp.post("/b/K", "", b"new").0 == 200
    });

    // A config with an error is refused; the running one keeps serving.
    harness::write_file(
        whimp.dir.path(),
        "whimp.yaml",
        "routes:\n  - path: nope\n    backends: []\n",
    );
    whimp.daemon.signal(rustix::process::Signal::HUP);
    wait_for("the refusal is logged", || {
        whimp.daemon.output().contains("new config refused")
    });
    assert!(
        whimp.daemon.output().contains("whimp.yaml:2:"),
        "with file:line: {}",
        whimp.daemon.output()
    );
    assert_eq!(whimp.post("/b/K", "", b"still").0, 200);
    wait_for("forwards", || backend.count() == 2);

    // SIGTERM drains and exits 0.
    let status = whimp.daemon.stop();
    assert_eq!(status.code(), Some(0), "{}", whimp.daemon.output());
    let _ = &mut whimp;
}

#[test]
fn a_second_daemon_on_the_same_spool_is_refused() {
    let whimp = Whimp::start("routes: []\n");
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&whimp.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "is locked by another process (pid {})",
            whimp.daemon.pid()
        )),
        "{err}"
    );
}

#[test]
fn check_config_reports_file_line_column() {
    let dir = tempfile::tempdir().unwrap();
    let bad = harness::write_file(
        dir.path(),
        "bad.yaml",
        "listen:\n  - adress: 127.0.0.1:8080\n",
    );
    let (code, _, err) = run_cli(
        Path::new(BIN),
        &["check-config", "--config", bad.to_str().unwrap()],
    );
    assert_eq!(code, 64);
    assert!(
        err.starts_with(&format!("{}:2:5: unknown field `adress`", bad.display())),
        "{err}"
    );
    let (code, out, _) = run_cli(
        Path::new(BIN),
        &[
            "check-config",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../config/whimp.yaml"),
        ],
    );
    assert_eq!(code, 0, "the shipped config is valid");
    assert!(out.contains("ok"));
    let (code, out, _) = run_cli(Path::new(BIN), &["--version"]);
    assert_eq!(
        (code, out.trim()),
        (0, concat!("whimp ", env!("CARGO_PKG_VERSION")))
    );
    let (code, _, err) = run_cli(Path::new(BIN), &["--frob"]);
    assert_eq!(code, 64);
    assert!(
        err.contains("unknown option --frob") && err.contains("usage:"),
        "{err}"
    );
}

#[test]
fn check_config_refuses_what_start_up_refuses() {
    let ca = harness::TestCa::new("check CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = ca.issue(&["127.0.0.1"]);
    let (_, other_key) = ca.issue(&["127.0.0.1"]);
    harness::write_file(dir.path(), "cert.pem", &cert);
    harness::write_file(dir.path(), "other.key", &other_key);
    harness::write_file(dir.path(), "junk.pem", "not a certificate\n");
    let config = harness::write_file(
        dir.path(),
        "whimp.yaml",
        "listen:\n\
         \x20 - { addr: 127.0.0.1:0, tls: { cert: cert.pem, key: other.key } }\n\
         \x20 - { addr: 127.0.0.1:0, tls: { cert: junk.pem, key: other.key } }\n\
         admin: { addr: 127.0.0.1:0 }\n\
         spool: { dir: spool }\n",
    );
    let (code, out, err) = run_cli(
        Path::new(BIN),
        &["check-config", "--config", config.to_str().unwrap()],
    );
    assert_eq!(code, 64, "{out}{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "one line per listener: {err}");
    // Each at the entry to fix: the key that does not match, the file that is not a certificate.
    let file = config.display();
    assert!(
        lines[0].starts_with(&format!("{file}:2:54: listener 127.0.0.1:0: ")),
        "{err}"
    );
    assert!(lines[0].contains("key does not match certificate"), "{err}");
    assert!(
        lines[1].starts_with(&format!("{file}:3:39: listener 127.0.0.1:0: ")),
        "{err}"
    );
    assert!(lines[1].contains("junk.pem holds no certificate"), "{err}");
    // The daemon refuses the same file for the same reason.
    let (code, _, start_err) = run_cli(Path::new(BIN), &["--config", config.to_str().unwrap()]);
    assert_eq!(code, 64, "{start_err}");
    assert!(
        start_err.contains("key does not match certificate"),
        "{start_err}"
    );
}

#[test]
fn spool_commands_work_with_the_daemon_stopped() {
    let backend = Receiver::start();
    backend.answer(|_| harness::Answer::Status(410, vec![]));
    let mut whimp = Whimp::start(&format!(
        "{FAST_RETRY}routes:\n{}",
        route("c", "/c/K", &[backend.url("/in")], "")
    ));
    assert_eq!(whimp.post("/c/K", "", b"one").0, 200);
    assert_eq!(whimp.post("/c/K", "", b"two").0, 200);
    wait_for("both dead", || whimp.files("dead").len() == 2);
    assert_eq!(whimp.daemon.stop().code(), Some(0));

    let listed = whimp.list();
    assert_eq!(listed.len(), 2);
    for l in &listed {
        assert_eq!(l["state"], "dead");
        assert_eq!(l["target"], "route c");
        assert!(l["next_attempt_at"].is_null());
    }
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    let (code, out, _) = whimp.cli(&["spool", "retry", &id]);
    assert_eq!((code, out.trim()), (0, "requeued 1"));
    let listed = whimp.list();
    assert_eq!(
        listed.iter().filter(|l| l["state"] == "retrying").count(),
        1
    );
    let (code, out, _) = whimp.cli(&["spool", "purge", "--dead"]);
    assert_eq!((code, out.trim()), (0, "purged 1"));
    assert!(whimp.files("dead").is_empty());

    // Started again, the re-queued message is delivered.
    backend.answer(|_| harness::Answer::Status(200, vec![]));
    whimp.restart();
    wait_for("the re-queued message is delivered", || {
        whimp.files("done").len() == 1
    });
    let (code, _, err) = whimp.cli(&["spool", "show", "01FD5BKAC5EEJ6HA8KPXT5QV4Y"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no message 01FD5BKAC5EEJ6HA8KPXT5QV4Y"),
        "{err}"
    );
}

#[test]
fn spool_list_names_the_route_of_a_request_with_a_large_head() {
    let backend = Receiver::start();
    backend.answer(|_| harness::Answer::Status(410, vec![]));
    let mut whimp = Whimp::start(&format!(
        "{FAST_RETRY}routes:\n{}",
        route("big", "/big/K", &[backend.url("/in")], "")
    ));
    // A head over 64 KiB: `spool list` reads it whole, as the forwarder does.
    let pad = format!("X-Pad: {}\r\n", "z".repeat(70 * 1024));
    assert_eq!(whimp.post("/big/K", &pad, b"one").0, 200);
    wait_for("it is dead", || whimp.files("dead").len() == 1);
    assert_eq!(whimp.daemon.stop().code(), Some(0));
    let listed = whimp.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["target"], "route big");
}
