//! `spool import` (issue 12) for whomp: a stopped maildir node's messages and its event layer's
//! records (targets, filters, subscriptions) moved into the cluster. The id a caller got from
//! the maildir node answers on the cluster node, which delivers the message, and an event posted
//! there fans out to the target made on the maildir node. Skipped (SKIPPED) without nats-server
//! locally, a failure under CI.

use std::path::Path;

use harness::{Answer, Nats, Receiver};
use serde_json::json;

use crate::events::{post_event, subscribe};
use crate::{config_text, envelope, local, Whomp, BIN};

#[test]
fn a_stopped_maildir_node_moves_its_messages_and_targets_into_the_cluster() {
    let Some(nats) = Nats::single() else {
        return;
    };
    let receiver = Receiver::start();
    receiver.answer(|_| Answer::Status(503, vec![]));
    let port = receiver.addr.port();
    let url = |path: &str| format!("http://hooks.test:{port}{path}");
    // Retrying, the next attempt an hour away.
    let body = format!(
        "retry: {{ initial: 1h, max_interval: 1h, max_age: 24h }}\n{}",
        local(&[port], &["hooks.test"])
    );
    let mut old = Whomp::start(&body);
    subscribe(&old, &url("/events"), &["order.created"], json!({}));
    let id = old.submit(&envelope(
        "POST",
        &url("/raw"),
        &[],
        "queued before the move",
    ));
    old.wait_state(&id, "retrying");
    // An event fanned out before the move: its delivery moves, its answer (a record that
    // expires on its own) does not.
    let (status, answer) = post_event(
        &old,
        &json!({"id": "e-0", "type": "order.created", "payload": {"n": 0}}),
    );
    assert_eq!(status, 202, "{answer}");
    let before = answer["deliveries"][0]["id"].as_str().unwrap().to_owned();
    old.wait_state(&before, "retrying");
    old.daemon.stop();

    let cluster_body = format!(
        "queue: {{ backend: jetstream, servers: [\"{}\"], replicas: 1 }}\n{body}",
        nats.url(0)
    );
    let dir = tempfile::tempdir().unwrap();
    let config = harness::write_file(dir.path(), "whomp.yaml", &config_text(&cluster_body));
    let (code, out, err) = harness::run_cli(
        Path::new(BIN),
        &[
            "spool",
            "import",
            "--config",
            config.to_str().unwrap(),
            "--from",
            old.spool_dir().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(
            "imported 2 messages (0 queued, 2 retrying, 0 dead), 0 already in the cluster; 3 records"
        ),
        "{out}"
    );

    receiver.answer(|_| Answer::Status(200, vec![]));
    let node = Whomp::start(&cluster_body);
    node.wait_state(&before, "delivered");
    let status = node.wait_state(&id, "delivered");
    assert_eq!(
        status["attempts"].as_array().map(Vec::len),
        Some(2),
        "the maildir node's attempt and the cluster's: {status}"
    );
    let (status, answer) = post_event(
        &node,
        &json!({"id": "e-1", "type": "order.created", "payload": {"n": 1}}),
    );
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer["deliveries"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    // e-0 refused once before the move and delivered after it, e-1 delivered.
    let events = || {
        receiver
            .received()
            .iter()
            .filter(|m| m.target == "/events")
            .count()
    };
    harness::wait_for("both events delivered to the imported target", || {
        events() == 3
    });
    let raw: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|m| m.target == "/raw" && m.body == b"queued before the move")
        .collect();
    assert_eq!(raw.len(), 2, "one 503 before the move, one delivery after");
}
