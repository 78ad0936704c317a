//! A webhook target's deliveries end to end: paused and resumed (nothing sent while paused,
//! each sent once after, no attempt counted for the pause, the pause surviving a restart),
//! dead ones recovered, and `GET /v1/messages` listing deliveries and raw messages by target,
//! state and host, a page at a time.

use std::net::SocketAddr;

use harness::{wait_for, Receiver};
use serde_json::{json, Value};

use crate::events::{call, post_event, subscribe};
use crate::{envelope, local, Whomp, FAST_RETRY};

/// The delivery ids of an accepted event.
fn deliveries(answer: &Value) -> Vec<String> {
    answer["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

fn get(w: &Whomp, path: &str) -> (u16, Value) {
    call(w.submit_addr(), "GET", path, None)
}

#[test]
fn a_paused_target_gets_nothing_until_resumed_then_each_delivery_once() {
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    let mut w = Whomp::start(&format!("{FAST_RETRY}{}", local(&[port], &["hooks.test"])));
    let target = subscribe(
        &w,
        &format!("http://hooks.test:{port}/in"),
        &["shop.*"],
        json!({}),
    );
    let (status, paused) = call(
        w.submit_addr(),
        "POST",
        &format!("/v1/webhooks/targets/{target}/pause"),
        None,
    );
    assert_eq!((status, &paused["paused"]), (200, &json!(true)), "{paused}");
    // The pause is stored: it survives a SIGKILL.
    w.restart();
    let (_, shown) = get(&w, &format!("/v1/webhooks/targets/{target}"));
    assert_eq!(shown["paused"], true, "{shown}");

    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, answer) = post_event(&w, &json!({"type": "shop.sold", "payload": {"n": n}}));
        assert_eq!(status, 202, "{answer}");
        ids.extend(deliveries(&answer));
    }
    // Each delivery was looked at and held: handed back with no attempt.
    for id in &ids {
        let status = w.wait_state(id, "retrying");
        assert_eq!(
            status["attempt_count"], 0,
            "a hold is not an attempt: {status}"
        );
        assert_eq!(status["attempts"], json!([]));
    }
    assert_eq!(receiver.count(), 0, "nothing is sent while paused");

    let (status, resumed) = call(
        w.submit_addr(),
        "POST",
        &format!("/v1/webhooks/targets/{target}/resume"),
        None,
    );
    assert_eq!(
        (status, &resumed["paused"]),
        (200, &json!(false)),
        "{resumed}"
    );
    for id in &ids {
        let status = w.wait_state(id, "delivered");
        assert_eq!(status["attempt_count"], 1, "{status}");
    }
    assert_eq!(receiver.count(), 3, "each delivery once");

    let (status, _) = call(
        w.submit_addr(),
        "GET",
        &format!("/v1/webhooks/targets/{target}/pause"),
        None,
    );
    assert_eq!(status, 405);
    let (status, _) = call(
        w.submit_addr(),
        "POST",
        "/v1/webhooks/targets/nope/pause",
        None,
    );
    assert_eq!(status, 404);
}

#[test]
fn recover_requeues_only_that_targets_dead_deliveries_since_a_time() {
    let down = harness::free_port();
    let other = harness::free_port();
    let w = Whomp::start(&format!(
        "retry: {{ initial: 200ms, max_interval: 1s, max_age: 1h, max_attempts: 1 }}\n{}",
        local(&[down, other], &["hooks.test"])
    ));
    let target = subscribe(
        &w,
        &format!("http://hooks.test:{down}/in"),
        &["a.b"],
        json!({}),
    );
    subscribe(
        &w,
        &format!("http://hooks.test:{other}/in"),
        &["a.b"],
        json!({}),
    );
    let mut ids = Vec::new();
    for n in 0..2 {
        let (status, answer) = post_event(&w, &json!({"type": "a.b", "payload": n}));
        assert_eq!(status, 202, "{answer}");
        ids.extend(deliveries(&answer));
    }
    for id in &ids {
        w.wait_state(id, "dead");
    }
    let recover = |query: &str| {
        call(
            w.submit_addr(),
            "POST",
            &format!("/v1/webhooks/targets/{target}/recover{query}"),
            None,
        )
    };
    let (status, answer) = recover("?since=2999-01-01T00:00:00Z");
    assert_eq!((status, &answer["recovered"]), (200, &json!(0)), "{answer}");
    let (status, answer) = recover("?since=soon");
    assert_eq!(
        (status, &answer["field"]),
        (400, &json!("since")),
        "{answer}"
    );

    let receiver = Receiver::start_on(SocketAddr::from(([127, 0, 0, 1], down)));
    let (status, answer) = recover("?since=1h");
    assert_eq!((status, &answer["recovered"]), (200, &json!(2)), "{answer}");
    wait_for("the recovered deliveries arrive", || receiver.count() == 2);
    let (_, dead) = get(&w, "/v1/messages?state=dead");
    assert_eq!(
        dead["data"].as_array().unwrap().len(),
        2,
        "the other target's stay dead: {dead}"
    );
    let (_, answer) = recover("");
    assert_eq!(
        answer["recovered"], 0,
        "nothing dead is left for it: {answer}"
    );
}

#[test]
fn messages_are_listed_by_target_state_and_host_a_page_at_a_time() {
    let a = Receiver::start();
    let b = Receiver::start();
    let ports = [a.addr.port(), b.addr.port()];
    let w = Whomp::start(&format!(
        "{FAST_RETRY}{}",
        local(&ports, &["hooks.test", "raw.test"])
    ));
    let ta = subscribe(
        &w,
        &format!("http://hooks.test:{}/in", ports[0]),
        &["x.*"],
        json!({}),
    );
    let tb = subscribe(
        &w,
        &format!("http://hooks.test:{}/in", ports[1]),
        &["x.y"],
        json!({}),
    );
    let mut mine = Vec::new();
    for n in 0..5 {
        let (_, answer) = post_event(
            &w,
            &json!({"type": format!("x.{}", if n % 2 == 0 { "y" } else { "z" }), "payload": n}),
        );
        for d in answer["deliveries"].as_array().unwrap() {
            if d["targetId"] == ta.as_str() {
                mine.push(d["id"].as_str().unwrap().to_owned());
            }
        }
    }
    let raw = w.submit(&envelope(
        "POST",
        &format!("http://raw.test:{}/r", ports[1]),
        &[],
        "hi",
    ));
    wait_for("everything is delivered", || {
        a.count() == 5 && b.count() == 4
    });
    w.wait_state(&raw, "delivered");

    // By target, a page of two at a time, oldest first.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = get(
            &w,
            &format!("/v1/messages?target={ta}&limit=2&cursor={cursor}"),
        );
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        for m in data {
            assert_eq!(m["targetId"], ta.as_str());
            assert_eq!(m["state"], "delivered");
            assert_eq!(m["attempt_count"], 1);
            assert!(m.get("attempts").is_none(), "{m}");
            seen.push(m["id"].as_str().unwrap().to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, mine);

    let (_, page) = get(&w, &format!("/v1/messages?target={tb}&state=delivered"));
    assert_eq!(page["data"].as_array().unwrap().len(), 3, "{page}");
    let (_, page) = get(&w, "/v1/messages?host=raw.test");
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{page}");
    assert_eq!(data[0]["id"], raw.as_str());
    assert_eq!(data[0]["targetId"], Value::Null);
    let (_, page) = get(&w, "/v1/messages?state=queued");
    assert_eq!(page["data"], json!([]));
    let (_, page) = get(&w, "/v1/messages?since=2999-01-01T00:00:00Z");
    assert_eq!(page["data"], json!([]));
    let (_, page) = get(&w, "/v1/messages");
    assert_eq!(
        page["data"].as_array().unwrap().len(),
        9,
        "five to a, three to b, one raw: {page}"
    );
    for bad in ["state=lost", "limit=0", "colour=red", "since=x"] {
        let (status, answer) = get(&w, &format!("/v1/messages?{bad}"));
        assert_eq!(status, 400, "{bad}: {answer}");
    }
}
