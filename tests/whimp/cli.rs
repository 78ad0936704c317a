//! The spool command line against a real whimp: listings that hold still while messages move,
//! filters, pipes, and an operator's retry and delete of one message (logged by the daemon).

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use harness::{run_cli, wait_for, Answer, Receiver};

use crate::{route, write_config, Whimp, BIN, FAST_RETRY};

#[test]
fn spool_list_of_a_spool_never_created_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "routes: []\n");
    let config = config.to_str().unwrap();
    let (code, out, err) = run_cli(
        Path::new(BIN),
        &["spool", "list", "--config", config, "--json"],
    );
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
    let (code, out, err) = run_cli(Path::new(BIN), &["spool", "list", "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("ID "),
        "a header row and nothing else: {out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");
    let (code, _, err) = run_cli(
        Path::new(BIN),
        &[
            "spool",
            "retry",
            "01FD5BKAC5EEJ6HA8KPXT5QV4Y",
            "--config",
            config,
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("no message 01FD5BKAC5EEJ6HA8KPXT5QV4Y"),
        "{err}"
    );
    assert!(
        !dir.path().join("spool").exists(),
        "the CLI creates no spool"
    );
}

#[test]
fn spool_list_while_delivering_shows_each_message_once() {
    let backend = Receiver::start();
    let whimp = Arc::new(Whimp::start(&format!(
        "routes:\n{}",
        route("d", "/d/K", &[backend.url("/in")], "")
    )));
    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let (whimp, sending) = (whimp.clone(), sending.clone());
        std::thread::spawn(move || {
            let mut sent = 0;
            while sending.load(Ordering::Relaxed) || sent < 200 {
                assert_eq!(whimp.post("/d/K", "", b"x").0, 200);
                sent += 1;
            }
            sent
        })
    };
    let mut twice = None;
    for _ in 0..15 {
        let mut ids = HashSet::new();
        twice = whimp
            .list()
            .into_iter()
            .find(|l| !ids.insert(l["id"].as_str().unwrap_or_default().to_owned()));
        if twice.is_some() {
            break;
        }
    }
    sending.store(false, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    assert_eq!(twice, None, "a message listed twice");
    wait_for("all delivered", || backend.count() == sent);
    assert_eq!(
        whimp.list().len(),
        sent,
        "each message once when it holds still"
    );
}

#[test]
fn spool_list_filters_by_state_route_time_and_count() {
    let gone = Receiver::start();
    gone.answer(|_| Answer::Status(410, vec![]));
    let fine = Receiver::start();
    let whimp = Whimp::start(&format!(
        "{FAST_RETRY}routes:\n{}{}",
        route("gone", "/g/K", &[gone.url("/in")], ""),
        route("fine", "/f/K", &[fine.url("/in")], "")
    ));
    for _ in 0..3 {
        assert_eq!(whimp.post("/g/K", "", b"x").0, 200);
    }
    assert_eq!(whimp.post("/f/K", "", b"y").0, 200);
    wait_for("three dead, one delivered", || {
        whimp.files("dead").len() == 3 && whimp.files("done").len() == 1
    });
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["spool", "list", "--json"];
        all.extend_from_slice(args);
        let (code, out, err) = whimp.cli(&all);
        assert_eq!(code, 0, "{err}");
        out.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["state"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(ids(&["--state", "dead"]), ["dead"; 3]);
    assert_eq!(ids(&["--route", "fine"]), ["delivered"]);
    assert_eq!(ids(&["--route", "gone", "--limit", "2"]), ["dead"; 2]);
    assert_eq!(ids(&["--state", "queued"]), Vec::<String>::new());
    assert_eq!(ids(&["--since", "1h"]).len(), 4);
    assert_eq!(ids(&["--since", "2999-01-01"]), Vec::<String>::new());

    let (code, out, _) = whimp.cli(&["spool", "list", "--state", "delivered"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("ID ") && lines[0].contains("STATE"),
        "{out}"
    );
    assert!(
        lines[1].contains("delivered") && lines[1].contains("route fine"),
        "{out}"
    );

    let (code, out, err) = whimp.cli(&["spool", "purge", "--dead"]);
    assert_eq!((code, out.trim()), (0, "purged 3"), "{err}");
    harness::wait_for("the purge is logged", || {
        whimp
            .daemon
            .output()
            .contains("operator: dead messages purged")
    });
}

#[test]
fn spool_list_ends_quietly_when_its_reader_does() {
    let backend = Receiver::start();
    backend.answer(|_| Answer::Status(410, vec![]));
    let whimp = Whimp::start(&format!(
        "{FAST_RETRY}routes:\n{}",
        route("c", "/c/K", &[backend.url("/in")], "")
    ));
    assert_eq!(whimp.post("/c/K", "", b"x").0, 200);
    wait_for("dead", || whimp.files("dead").len() == 1);
    // `| head` that has already had enough: the pipe's reading end is closed.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(["spool", "list", "--config"])
        .arg(&whimp.config)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).as_ref()
        ),
        (Some(0), "")
    );
}

#[test]
fn spool_retry_attempts_a_retrying_message_now_and_delete_removes_one() {
    let backend = Receiver::start();
    backend.answer(|_| Answer::Status(503, vec![]));
    // The first retry would be an hour away.
    let whimp = Whimp::start(&format!(
        "retry: {{ initial: 1h, max_interval: 1h, max_age: 24h }}\nroutes:\n{}",
        route("c", "/c/K", &[backend.url("/in")], "")
    ));
    assert_eq!(whimp.post("/c/K", "", b"one").0, 200);
    wait_for("retrying", || whimp.files("cur").len() == 1);
    let id = whimp.list()[0]["id"].as_str().unwrap().to_owned();

    let (code, out, err) = whimp.cli(&["spool", "retry", &id]);
    assert_eq!((code, out.trim()), (0, "requeued 1"), "{err}");
    wait_for("attempted again", || backend.count() == 2);
    wait_for("the retry is logged", || {
        whimp
            .daemon
            .output()
            .contains("operator: message set to be attempted now")
    });
    assert!(
        whimp.daemon.output().contains(&id),
        "{}",
        whimp.daemon.output()
    );

    wait_for("retrying again", || whimp.files("cur").len() == 1);
    let (code, out, err) = whimp.cli(&["spool", "delete", &id]);
    assert_eq!((code, out.trim()), (0, "deleted 1"), "{err}");
    assert!(whimp.files("cur").is_empty());
    assert!(whimp.list().is_empty());
    wait_for("the delete is logged", || {
        whimp.daemon.output().contains("operator: message deleted")
    });
    let (code, _, err) = whimp.cli(&["spool", "delete", &id]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("no message {id}")), "{err}");
    let metrics = whimp.daemon.metrics();
    assert_eq!(
        harness::metric_in(&metrics, "whimp_spool_messages{state=\"retrying\"}"),
        0.0,
        "the daemon's schedule forgot it"
    );
}
