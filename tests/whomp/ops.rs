//! Operations: every `202` survives SIGKILL, SIGHUP reloads rules and refuses a bad config,
//! SIGTERM exits cleanly, `check-config`, the spool lock, and the metrics page.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use harness::{wait_for, Receiver};
use serde_json::json;

use crate::{envelope, local, Whomp, FAST_RETRY};

#[test]
fn every_accepted_message_is_delivered_after_sigkill() {
    // Nothing listens on the receiver's port yet: every attempt fails and messages pile up.
    let port = harness::free_port();
    let mut whomp = Whomp::start(&format!("{FAST_RETRY}{}", local(&[port], &["hooks.test"])));
    let url = format!("http://hooks.test:{port}/in");
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (whomp, url) = (&whomp, &url);
                s.spawn(move || {
                    (0..25)
                        .map(|i| {
                            let seq = format!("{t}-{i}");
                            whomp.submit(&envelope("POST", url, &[("X-Seq", &seq)], &seq))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(ids.len(), 100);
    wait_for("some attempts have failed", || {
        !whomp.files("cur").is_empty()
    });
    whomp.daemon.kill();

    let receiver = Receiver::start_on(SocketAddr::from(([127, 0, 0, 1], port)));
    whomp.restart();
    wait_for("every accepted message is delivered", || {
        receiver.count() >= 100
    });
    let bodies: HashSet<Vec<u8>> = receiver.received().into_iter().map(|r| r.body).collect();
    assert_eq!(
        bodies.len(),
        100,
        "each message once at least, none missing"
    );
    for id in &ids {
        whomp.wait_state(id, "delivered");
    }
    println!(
        "after SIGKILL: {} deliveries for 100 accepted messages",
        receiver.count()
    );
}

#[test]
fn sighup_reloads_rules_and_refuses_a_bad_config() {
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    let base = format!("{FAST_RETRY}{}", local(&[port], &["hooks.test"]));
    let whomp = Whomp::start(&base);
    let url = format!("http://hooks.test:{port}/in");
    let msg = envelope("POST", &url, &[], "x");
    let (status, body) = whomp.post_json("/v1/preflight", "", &msg);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["addresses"], json!(["127.0.0.1"]));

    // An invalid config is refused with its problems logged; the old one keeps running.
    whomp.rewrite(&format!("{base}colour: red\n"));
    whomp.daemon.signal(rustix::process::Signal::HUP);
    wait_for("the refusal is logged", || {
        whomp.daemon.output().contains("new config refused")
    });
    assert!(
        whomp.daemon.output().contains("unknown field `colour`"),
        "{}",
        whomp.daemon.output()
    );
    let (status, _) = whomp.post_json("/v1/preflight", "", &msg);
    assert_eq!(status, 200);

    // A valid one without the exception for 127.0.0.1 takes effect.
    whomp.rewrite(&base.replace("allow_cidrs: [127.0.0.1/32]", "allow_cidrs: []"));
    whomp.daemon.signal(rustix::process::Signal::HUP);
    wait_for("the reload is logged", || {
        whomp.daemon.output().contains("config reloaded")
    });
    let (status, body) = whomp.post_json("/v1/messages", "", &msg);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["rule"], "address");
    assert_eq!(
        body["error"],
        "host hooks.test resolves to 127.0.0.1, inside rejected range 127.0.0.0/8 (loopback)"
    );
    assert_eq!(receiver.count(), 0);
}

#[test]
fn rules_that_change_under_a_queued_message_dead_letter_it() {
    let port = harness::free_port();
    let base = format!("{FAST_RETRY}{}", local(&[port], &["hooks.test"]));
    let whomp = Whomp::start(&base);
    let id = whomp.submit(&envelope(
        "POST",
        &format!("http://hooks.test:{port}/in"),
        &[],
        "x",
    ));
    wait_for("a first attempt fails", || {
        whomp.status(&id)["attempt_count"].as_u64() >= Some(1)
    });
    whomp.rewrite(&base.replace("allow_http: true", "allow_http: false"));
    whomp.daemon.signal(rustix::process::Signal::HUP);
    let status = whomp.wait_state(&id, "dead");
    let last = status["attempts"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        last["error"],
        "pre-flight refused (scheme): scheme http is not allowed (allowed: https)"
    );
    assert_eq!(
        whomp.metric("whomp_preflight_rejections_total{rule=\"scheme\"}"),
        1.0
    );
}

/// The whole pre-flight runs again at every attempt: a method a reload removed from
/// `preflight.methods` dead-letters the queued message at once, with the rule as its reason.
#[test]
fn a_method_removed_by_a_reload_dead_letters_queued_messages() {
    let port = harness::free_port();
    let base = format!("{FAST_RETRY}{}", local(&[port], &["hooks.test"]));
    let whomp = Whomp::start(&base);
    let id = whomp.submit(&envelope(
        "PUT",
        &format!("http://hooks.test:{port}/in"),
        &[],
        "x",
    ));
    wait_for("a first attempt fails", || {
        whomp.status(&id)["attempt_count"].as_u64() >= Some(1)
    });
    whomp.rewrite(&base.replace("methods: [POST, PUT]", "methods: [POST]"));
    whomp.daemon.signal(rustix::process::Signal::HUP);
    wait_for("the reload is logged", || {
        whomp.daemon.output().contains("config reloaded")
    });
    // Two more attempts are enough for the new rules to be seen; a dead message makes none.
    let after_reload = whomp.status(&id)["attempt_count"].as_u64().unwrap_or(0);
    let mut status = whomp.status(&id);
    wait_for("the message is dead or has been tried twice more", || {
        status = whomp.status(&id);
        status["state"] == "dead" || status["attempt_count"].as_u64() >= Some(after_reload + 2)
    });
    assert_eq!(status["state"], "dead", "{status}");
    assert_eq!(
        status["last_error"],
        "pre-flight refused (method): method PUT is not allowed (allowed: POST)"
    );
    assert_eq!(
        whomp.metric("whomp_preflight_rejections_total{rule=\"method\"}"),
        1.0
    );
}

#[test]
fn sigterm_exits_cleanly_and_the_lock_keeps_a_second_daemon_out() {
    let mut whomp = Whomp::start(&local(&[443], &[]));
    let metrics = whomp.daemon.metrics();
    for name in [
        "whomp_submissions_total{outcome=\"accepted\"} 0",
        "whomp_preflight_rejections_total{rule=\"dns\"} 0",
        "whomp_delivery_attempts_total{outcome=\"delivered\"} 0",
        "whomp_spool_messages{state=\"queued\"} 0",
        "whomp_dead_letters_total 0",
        "whomp_ready 1",
        "whomp_delivery_duration_seconds_count 0",
        "process_resident_memory_bytes",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    let (status, _) = harness::get(whomp.daemon.addr("admin"), "/readyz");
    assert_eq!(status, 200);

    let (code, _, err) = harness::run_cli(
        Path::new(crate::BIN),
        &["--config", whomp.config.to_str().unwrap()],
    );
    assert_eq!(code, 69, "a second daemon on the same spool: {err}");
    assert!(err.contains("is locked by another process"), "{err}");

    let status = whomp.daemon.stop();
    assert!(status.success(), "{status}");
    assert!(whomp.daemon.output().contains("stopped"));
}

#[test]
fn check_config_reports_problems_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let good = harness::write_file(
        dir.path(),
        "good.yaml",
        &crate::config_text(&local(&[443], &[])),
    );
    let (code, out, err) = harness::run_cli(
        Path::new(crate::BIN),
        &["check-config", "--config", good.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": ok"), "{out}");
    let bad = harness::write_file(
        dir.path(),
        "bad.yaml",
        "preflight:\n  ports: [0]\n  colour: red\n",
    );
    let (code, _, err) = harness::run_cli(
        Path::new(crate::BIN),
        &["check-config", "--config", bad.to_str().unwrap()],
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("bad.yaml:3:3"), "{err}");

    // The shipped config loads.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/whomp.yaml");
    let (code, out, err) = harness::run_cli(
        Path::new(crate::BIN),
        &["check-config", "--config", shipped.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_full_disk_refuses_submissions_with_503_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let Some(_disk) = harness::Tmpfs::mount(&spool, "512k") else {
        return;
    };

    let receiver = harness::Receiver::start();
    let port = receiver.addr.port();
    let config = harness::write_file(
        dir.path(),
        "whomp.yaml",
        &crate::config_text(&format!(
            "{}{}",
            crate::FAST_RETRY,
            crate::local(&[port], &["hooks.test"])
        )),
    );
    let daemon = harness::Daemon::start(std::path::Path::new(crate::BIN), &config);
    let submit = |body: &str| {
        let envelope = crate::envelope("POST", &format!("http://hooks.test:{port}/in"), &[], body);
        harness::post(
            daemon.addr("submit"),
            "/v1/messages",
            "Content-Type: application/json\r\n",
            envelope.to_string().as_bytes(),
        )
    };
    assert_eq!(submit("fits").0, 202);
    let filler = spool.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 600 * 1024]);
    let big = "z".repeat(64 * 1024);
    let stored = || {
        ["new", "cur", "done", "dead"]
            .iter()
            .map(|f| harness::files_in(&spool.join(f)).len())
            .sum::<usize>()
    };
    harness::wait_for("the first is delivered", || receiver.count() == 1);
    let before = stored();
    for _ in 0..3 {
        let (status, body) = submit(&big);
        assert_eq!(status, 503, "never 202 for what was not stored: {body}");
    }
    assert_eq!(stored(), before, "nothing was stored");
    assert_eq!(harness::get(daemon.addr("admin"), "/readyz").0, 503);
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(submit(&big).0, 202, "space is back");
    assert_eq!(harness::get(daemon.addr("admin"), "/readyz").0, 200);
    harness::wait_for("the stored ones are delivered", || receiver.count() == 2);
}
