//! Cluster mode's API beyond the queue (issue 12): on one nats-server (R1), `GET /v1/messages`
//! lists and a target's `recover` re-queues through the storage seam, as with the maildir
//! (they answered 501 before); an event id posted to two nodes at the same moment fans out
//! once. Skipped without nats-server locally, as the other cluster tests.

use std::net::SocketAddr;
use std::thread;

use harness::{wait_for, Nats, Receiver};
use serde_json::{json, Value};

use crate::events::{call, post_event, subscribe};
use crate::{envelope, local, Whomp};

/// A whomp node on the cluster `nats`, delivering to receivers on `ports`, with `extra` config.
fn node(nats: &Nats, ports: &[u16], extra: &str) -> Whomp {
    Whomp::start(&format!(
        "queue: {{ backend: jetstream, servers: [\"{}\"], replicas: 1, ack_wait: 3s }}\n{extra}{}",
        nats.url(0),
        local(ports, &["hooks.test", "raw.test"])
    ))
}

fn get(w: &Whomp, path: &str) -> (u16, Value) {
    call(w.submit_addr(), "GET", path, None)
}

/// Every message of a listing query, a page of `limit` at a time; fails on anything but 200.
fn list_all(w: &Whomp, query: &str, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = get(
            w,
            &format!("/v1/messages?{query}&limit={limit}&cursor={cursor}"),
        );
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit, "{page}");
        all.extend(data.iter().cloned());
        match page["nextCursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return all,
        }
    }
}

fn ids(listed: &[Value]) -> Vec<String> {
    listed
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn messages_are_listed_and_a_targets_dead_deliveries_recovered_on_the_cluster() {
    let Some(nats) = Nats::single() else {
        return;
    };
    let (down, other) = (harness::free_port(), harness::free_port());
    let raw = Receiver::start();
    let ports = [down, other, raw.addr.port()];
    let retry = "retry: { initial: 200ms, max_interval: 1s, max_age: 1h, max_attempts: 1 }\n";
    let (one, two) = (node(&nats, &ports, retry), node(&nats, &ports, retry));
    let target = subscribe(
        &one,
        &format!("http://hooks.test:{down}/in"),
        &["a.b"],
        json!({}),
    );
    subscribe(
        &one,
        &format!("http://hooks.test:{other}/in"),
        &["a.b"],
        json!({}),
    );
    let mut mine = Vec::new();
    let mut all = Vec::new();
    for n in 0..3 {
        let (status, answer) = post_event(&one, &json!({"type": "a.b", "payload": n}));
        assert_eq!(status, 202, "{answer}");
        for d in answer["deliveries"].as_array().unwrap() {
            let id = d["id"].as_str().unwrap().to_owned();
            if d["targetId"] == target.as_str() {
                mine.push(id.clone());
            }
            all.push(id);
        }
    }
    let raw_id = one.submit(&envelope(
        "POST",
        &format!("http://raw.test:{}/r", raw.addr.port()),
        &[],
        "hi",
    ));
    for id in &all {
        one.wait_state(id, "dead");
    }
    one.wait_state(&raw_id, "delivered");

    // Listed on the other node, by target, a page of one at a time, oldest first.
    let listed = list_all(&two, &format!("target={target}"), 1);
    assert_eq!(ids(&listed), mine);
    for m in &listed {
        assert_eq!(m["state"], "dead", "{m}");
        assert_eq!(m["attempt_count"], 1, "{m}");
        assert_eq!(m["method"], "POST", "{m}");
        assert!(m["last_error"].is_string(), "{m}");
    }
    assert_eq!(list_all(&two, "state=dead", 2).len(), 6);
    let by_host = list_all(&two, "host=raw.test", 10);
    assert_eq!(ids(&by_host), [raw_id.as_str()]);
    assert_eq!(by_host[0]["state"], "delivered");
    assert_eq!(by_host[0]["targetId"], Value::Null);
    assert!(list_all(&two, "since=2999-01-01T00:00:00Z", 10).is_empty());

    // Recovered on the other node: only that target's, delivered once its receiver is up.
    let receiver = Receiver::start_on(SocketAddr::from(([127, 0, 0, 1], down)));
    let (status, answer) = call(
        two.submit_addr(),
        "POST",
        &format!("/v1/webhooks/targets/{target}/recover?since=1h"),
        None,
    );
    assert_eq!((status, &answer["recovered"]), (200, &json!(3)), "{answer}");
    wait_for("the recovered deliveries arrive", || receiver.count() == 3);
    for id in &mine {
        one.wait_state(id, "delivered");
    }
    assert_eq!(list_all(&one, "state=dead", 10).len(), 3);
}

#[test]
fn an_event_id_posted_to_two_nodes_at_once_fans_out_once() {
    let Some(nats) = Nats::single() else {
        return;
    };
    let (a, b) = (Receiver::start(), Receiver::start());
    let ports = [a.addr.port(), b.addr.port()];
    let (one, two) = (
        node(&nats, &ports, crate::FAST_RETRY),
        node(&nats, &ports, crate::FAST_RETRY),
    );
    for port in ports {
        subscribe(
            &one,
            &format!("http://hooks.test:{port}/in"),
            &["race.*"],
            json!({}),
        );
    }
    const EVENTS: usize = 20;
    for n in 0..EVENTS {
        let event = json!({"id": format!("race-{n}"), "type": "race.on", "payload": {"n": n}});
        let answers: Vec<(u16, Value)> = thread::scope(|s| {
            let sent: Vec<_> = [&one, &two]
                .map(|w| {
                    let event = &event;
                    s.spawn(move || post_event(w, event))
                })
                .into_iter()
                .collect();
            sent.into_iter().map(|t| t.join().unwrap()).collect()
        });
        for (status, answer) in &answers {
            assert_eq!(*status, 202, "event {n}: {answer}");
            assert_eq!(answer["deliveries"].as_array().map(Vec::len), Some(2));
        }
        assert_eq!(answers[0].1, answers[1].1, "event {n}: the same deliveries");
    }
    // Every delivery stored is one of the answers': nothing was fanned out twice.
    assert_eq!(list_all(&two, "", 1000).len(), 2 * EVENTS);
    wait_for("every delivery arrives", || {
        a.count() == EVENTS && b.count() == EVENTS
    });
    for receiver in [&a, &b] {
        let mut bodies: Vec<Vec<u8>> = receiver.received().into_iter().map(|m| m.body).collect();
        bodies.sort();
        bodies.dedup();
        assert_eq!(bodies.len(), EVENTS, "each event once per subscription");
    }
}

/// A node like [`node`] whose spool (and so its idempotency keys and event answers) keeps
/// things for `retention`.
fn node_keeping(nats: &Nats, ports: &[u16], retention: &str) -> Whomp {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "listen: [{{ addr: 127.0.0.1:0 }}]\nadmin: {{ addr: 127.0.0.1:0 }}\n\
         spool: {{ dir: spool, retention: {retention} }}\n\
         queue: {{ backend: jetstream, servers: [\"{}\"], replicas: 1, ack_wait: 3s }}\n{}{}",
        nats.url(0),
        crate::FAST_RETRY,
        local(ports, &["hooks.test"])
    );
    let config = harness::write_file(dir.path(), "whomp.yaml", &text);
    let daemon = harness::Daemon::start(std::path::Path::new(crate::BIN), &config);
    Whomp {
        daemon,
        config,
        dir,
    }
}

#[test]
fn idempotency_keys_and_event_answers_expire_in_the_cluster_after_the_retention() {
    let Some(nats) = Nats::single() else {
        return;
    };
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    let (one, two) = (
        node_keeping(&nats, &[port], "2s"),
        node_keeping(&nats, &[port], "2s"),
    );
    let message = envelope("POST", &format!("http://hooks.test:{port}/k"), &[], "k");
    let submit = |w: &Whomp| {
        let (status, answer) = w.post_json("/v1/messages", "Idempotency-Key: k-exp\r\n", &message);
        assert_eq!(status, 202, "{answer}");
        answer["id"].as_str().unwrap().to_owned()
    };
    let first = submit(&one);
    assert_eq!(submit(&two), first, "the key is shared");
    // Once the retention is over the claim is gone: the same key stores a new message, whose
    // id both nodes then answer.
    let mut second = first.clone();
    wait_for("the key is free again", || {
        second = submit(&two);
        second != first
    });
    assert_eq!(submit(&one), second);

    subscribe(
        &one,
        &format!("http://hooks.test:{port}/e"),
        &["exp.*"],
        json!({}),
    );
    let event = json!({"id": "e-exp", "type": "exp.on", "payload": 1});
    let (status, answer) = post_event(&one, &event);
    assert_eq!(status, 202, "{answer}");
    assert_eq!(post_event(&two, &event).1, answer, "replayed");
    wait_for("the event's answer is forgotten", || {
        let (status, again) = post_event(&two, &event);
        status == 202 && again["deliveries"] != answer["deliveries"]
    });
}
