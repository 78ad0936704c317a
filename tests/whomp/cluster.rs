//! Cluster mode (issue 12): two whomp nodes on one nats-server (R1) share their queue, message
//! status, idempotency keys and event records. A submission to one node is delivered once and
//! its status read from the other; one `Idempotency-Key` sent to both nodes at the same moment
//! yields one id; an event posted to one node fans out to a target made on the other, and its
//! id is de-duplicated on both. Skipped (SKIPPED) without nats-server locally, a failure under CI.

use std::thread;

use harness::{wait_for, Nats, Receiver};
use serde_json::json;

use crate::events::{post_event, subscribe};
use crate::{envelope, local, Whomp, FAST_RETRY};

/// A whomp node on the cluster `nats`, delivering to receivers on `port`.
fn node(nats: &Nats, port: u16) -> Whomp {
    Whomp::start(&format!(
        "queue: {{ backend: jetstream, servers: [\"{}\"], replicas: 1, ack_wait: 3s }}\n{FAST_RETRY}{}",
        nats.url(0),
        local(&[port], &["hooks.test"])
    ))
}

/// Bodies received at `path` equal to `body`.
fn received(receiver: &Receiver, path: &str, body: &str) -> usize {
    receiver
        .received()
        .iter()
        .filter(|m| m.target == path && m.body == body.as_bytes())
        .count()
}

#[test]
fn two_nodes_share_status_idempotency_keys_and_event_targets() {
    let Some(nats) = Nats::single() else {
        return;
    };
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    let (one, two) = (node(&nats, port), node(&nats, port));
    let url = |path: &str| format!("http://hooks.test:{port}{path}");

    // Submitted to node 1, delivered once, its status read on node 2.
    let id = one.submit(&envelope("POST", &url("/raw"), &[], "hello"));
    let status = two.wait_state(&id, "delivered");
    assert_eq!(
        status["attempts"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert_eq!(received(&receiver, "/raw", "hello"), 1);

    // One Idempotency-Key sent to both nodes at once: one id, one message.
    let same = envelope("POST", &url("/idem"), &[], "once");
    let answers: Vec<(u16, serde_json::Value)> = thread::scope(|s| {
        let sent: Vec<_> = [&one, &two]
            .map(|w| {
                let same = &same;
                s.spawn(move || w.post_json("/v1/messages", "Idempotency-Key: k-1\r\n", same))
            })
            .into_iter()
            .collect();
        sent.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (status, answer) in &answers {
        assert_eq!(*status, 202, "{answer}");
    }
    assert_eq!(answers[0].1["id"], answers[1].1["id"], "{answers:?}");
    let first = answers[0].1["id"].as_str().unwrap().to_owned();
    one.wait_state(&first, "delivered");
    // Again on either node later: the same id.
    for w in [&one, &two] {
        let (status, answer) = w.post_json("/v1/messages", "Idempotency-Key: k-1\r\n", &same);
        assert_eq!((status, answer["id"].as_str()), (202, Some(first.as_str())));
    }
    assert_eq!(received(&receiver, "/idem", "once"), 1);

    // A target made on node 1; an event posted to node 2 fans out to it.
    subscribe(&one, &url("/events"), &["order.created"], json!({}));
    let event = json!({"id": "e-1", "type": "order.created", "payload": {"n": 1}});
    let (status, answer) = post_event(&two, &event);
    assert_eq!(status, 202, "{answer}");
    let deliveries = answer["deliveries"].as_array().cloned().unwrap_or_default();
    assert_eq!(deliveries.len(), 1, "{answer}");
    let delivery = deliveries[0]["id"].as_str().unwrap().to_owned();
    one.wait_state(&delivery, "delivered");
    wait_for("the event's delivery", || {
        receiver.received().iter().any(|m| m.target == "/events")
    });
    // The same event id posted to node 1: the first answer, nothing fanned out again.
    let (status, again) = post_event(&one, &event);
    assert_eq!((status, &again), (202, &answer));
    assert_eq!(
        receiver
            .received()
            .iter()
            .filter(|m| m.target == "/events")
            .count(),
        1
    );
}
