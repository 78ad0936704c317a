//! Failures that bubble up, end to end: a target failing every attempt is told
//! `target.failing`, then disabled (`target.disabled`, nothing new fanned out to it, still so
//! after a SIGKILL) and told `target.recovered` when an attempt succeeds; dead deliveries and
//! raw messages submitted with `Whomp-Notify` are told `delivery.dead`, signed; a notify URL
//! that is down makes its notification give up and nothing more (no loop).

use harness::{wait_for, Answer, Received, Receiver};
use serde_json::{json, Value};

use crate::events::{call, post_event, subscribe};
use crate::signing::verify;
use crate::{envelope, local, parse, Whomp};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OPS_KEY: &str = "whsec_c2Vjb25kIGtleSBmb3Igd2hvbXAgdGVzdHM=";

/// The notifications a receiver got, as JSON, in order.
/// The notifications `receiver` got, each once: a notification is an ordinary whomp message,
/// delivered at least once, so one in flight at a SIGKILL may come again with the same
/// `webhook-id` (receivers de-duplicate on it, as the docs say).
fn notices(receiver: &Receiver) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    receiver
        .received()
        .iter()
        .enumerate()
        .filter(|(i, r)| seen.insert(r.header("webhook-id").map_or(i.to_string(), str::to_owned)))
        .map(|(_, r)| parse(&String::from_utf8_lossy(&r.body)))
        .collect()
}

/// Waits until `receiver` got a notification of `kind`; the request.
fn wait_notice(receiver: &Receiver, kind: &str) -> Received {
    let mut found = None;
    wait_for(&format!("a {kind} notification"), || {
        found = receiver
            .received()
            .into_iter()
            .find(|r| parse(&String::from_utf8_lossy(&r.body))["type"] == kind);
        found.is_some()
    });
    found.unwrap()
}

fn body(r: &Received) -> Value {
    parse(&String::from_utf8_lossy(&r.body))
}

#[test]
fn a_failing_target_is_told_disabled_kept_so_after_a_sigkill_and_told_recovered() {
    let target_rx = Receiver::start();
    target_rx.answer(|_| Answer::Status(500, vec![]));
    let notify_rx = Receiver::start();
    let (tp, np) = (target_rx.addr.port(), notify_rx.addr.port());
    let mut w = Whomp::start(&format!(
        "retry: {{ initial: 100ms, max_interval: 200ms, max_age: 1h }}\n\
         events: {{ failing_after: 300ms, disable_after: 1500ms }}\n{}",
        local(&[tp, np], &["hooks.test", "ops.test"])
    ));
    let target = subscribe(
        &w,
        &format!("http://hooks.test:{tp}/in"),
        &["shop.*"],
        json!({"secrets": [SECRET], "notifyUrl": format!("http://ops.test:{np}/whomp")}),
    );
    let (status, answer) = post_event(&w, &json!({"type": "shop.sold", "payload": {}}));
    assert_eq!(status, 202, "{answer}");
    let delivery = answer["deliveries"][0]["id"].as_str().unwrap().to_owned();

    let failing = wait_notice(&notify_rx, "target.failing");
    assert_eq!(body(&failing)["data"]["targetId"], target.as_str());
    assert!(body(&failing)["data"]["failingSince"].is_string());
    assert_eq!(failing.target, "/whomp");
    // Signed with the target's own secret, as its deliveries are.
    verify(&failing, SECRET, failing.header("webhook-id").unwrap());
    let disabled = wait_notice(&notify_rx, "target.disabled");
    assert_eq!(body(&disabled)["data"]["disabled"], true);
    let (_, shown) = call(
        w.submit_addr(),
        "GET",
        &format!("/v1/webhooks/targets/{target}"),
        None,
    );
    assert_eq!(shown["disabled"], true, "{shown}");
    assert!(shown["failingSince"].is_string(), "{shown}");

    // The state is in the target's record: a SIGKILL keeps it, and nothing new fans out.
    w.restart();
    let (_, shown) = call(
        w.submit_addr(),
        "GET",
        &format!("/v1/webhooks/targets/{target}"),
        None,
    );
    assert_eq!(shown["disabled"], true, "{shown}");
    let (status, answer) = post_event(&w, &json!({"type": "shop.sold", "payload": {}}));
    assert_eq!(
        (status, &answer["deliveries"]),
        (202, &json!([])),
        "{answer}"
    );

    // The delivery queued before still retries; its success is told.
    target_rx.answer(|_| Answer::Status(200, vec![]));
    let recovered = wait_notice(&notify_rx, "target.recovered");
    assert_eq!(body(&recovered)["data"]["targetId"], target.as_str());
    w.wait_state(&delivery, "delivered");
    let kinds: Vec<Value> = notices(&notify_rx)
        .iter()
        .map(|n| n["type"].clone())
        .collect();
    assert_eq!(
        kinds,
        ["target.failing", "target.disabled", "target.recovered"],
        "each told once"
    );

    // Re-enabled by a PATCH: events fan out to it again.
    let (status, shown) = call(
        w.submit_addr(),
        "PATCH",
        &format!("/v1/webhooks/targets/{target}"),
        Some(&json!({"disabled": false})),
    );
    assert_eq!(
        (status, &shown["disabled"]),
        (200, &json!(false)),
        "{shown}"
    );
    assert_eq!(shown["failingSince"], Value::Null, "{shown}");
    let (_, answer) = post_event(&w, &json!({"type": "shop.sold", "payload": {}}));
    let again = answer["deliveries"][0]["id"].as_str().unwrap().to_owned();
    w.wait_state(&again, "delivered");
}

#[test]
fn dead_deliveries_and_raw_messages_with_whomp_notify_are_told() {
    let gone = Receiver::start();
    gone.answer(|_| Answer::Status(410, vec![]));
    let ops = Receiver::start();
    let (gp, op) = (gone.addr.port(), ops.addr.port());
    let w = Whomp::start(&format!(
        "retry: {{ initial: 100ms, max_interval: 200ms, max_age: 1h }}\n\
         signing: {{ keys: {{ ops: \"{OPS_KEY}\" }} }}\n\
         events: {{ notify_url: \"http://ops.test:{op}/default\", signing_key: ops }}\n{}",
        local(&[gp, op], &["gone.test", "ops.test"])
    ));
    // A target without a notifyUrl of its own: the config's, signed with its key.
    let target = subscribe(
        &w,
        &format!("http://gone.test:{gp}/in"),
        &["shop.*"],
        json!({}),
    );
    let (_, answer) = post_event(
        &w,
        &json!({"id": "ev-1", "type": "shop.sold", "payload": {}}),
    );
    let delivery = answer["deliveries"][0]["id"].as_str().unwrap().to_owned();
    w.wait_state(&delivery, "dead");
    let dead = wait_notice(&ops, "delivery.dead");
    assert_eq!(dead.target, "/default");
    let data = &body(&dead)["data"];
    assert_eq!(data["messageId"], delivery.as_str(), "{data}");
    assert_eq!(data["targetId"], target.as_str());
    assert_eq!(data["eventId"], "ev-1");
    assert_eq!(data["lastStatus"], 410);
    assert_eq!(
        data["url"],
        format!("http://gone.test:{gp}"),
        "an origin, never a path"
    );
    verify(&dead, OPS_KEY, dead.header("webhook-id").unwrap());

    // A raw message naming a refused notify URL is refused before anything is stored.
    let message = envelope("POST", &format!("http://gone.test:{gp}/raw"), &[], "{}");
    let (status, answer) = w.post_json(
        "/v1/messages",
        "Whomp-Notify: http://10.1.2.3:443/x\r\n",
        &message,
    );
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "Whomp-Notify");
    assert!(answer["rule"].is_string(), "{answer}");
    // One with a usable one: its death is told there, unsigned as the message was.
    let (status, answer) = w.post_json(
        "/v1/messages",
        &format!("Whomp-Notify: http://ops.test:{op}/raw\r\n"),
        &message,
    );
    assert_eq!(status, 202, "{answer}");
    let raw = answer["id"].as_str().unwrap().to_owned();
    w.wait_state(&raw, "dead");
    wait_for("the raw message's delivery.dead", || {
        ops.received().iter().any(|r| r.target == "/raw")
    });
    let told = ops
        .received()
        .into_iter()
        .find(|r| r.target == "/raw")
        .unwrap();
    assert_eq!(body(&told)["type"], "delivery.dead");
    assert_eq!(body(&told)["data"]["messageId"], raw.as_str());
    assert_eq!(body(&told)["data"]["targetId"], Value::Null);
    assert!(told.header("webhook-signature").is_none());
    assert!(
        gone.received()
            .iter()
            .all(|r| r.header("whomp-notify").is_none()),
        "metadata never leaves whomp"
    );
}

#[test]
fn a_notify_url_that_is_down_gives_up_and_tells_nothing_about_itself() {
    let gone = Receiver::start();
    gone.answer(|_| Answer::Status(410, vec![]));
    let fine = Receiver::start();
    let down = harness::free_port();
    let (gp, fp) = (gone.addr.port(), fine.addr.port());
    let w = Whomp::start(&format!(
        "retry: {{ initial: 100ms, max_interval: 200ms, max_age: 1s }}\n\
         events: {{ failing_after: 1ms }}\n{}",
        local(&[gp, fp, down], &["gone.test", "ops.test", "fine.test"])
    ));
    // The target's own notify URL: its notifications are signed with its secrets and name it,
    // the case where a notification could be taken for one of its deliveries.
    subscribe(
        &w,
        &format!("http://gone.test:{gp}/in"),
        &["shop.*"],
        json!({"notifyUrl": format!("http://ops.test:{down}/down")}),
    );
    let (_, answer) = post_event(&w, &json!({"type": "shop.sold", "payload": {}}));
    let delivery = answer["deliveries"][0]["id"].as_str().unwrap().to_owned();
    w.wait_state(&delivery, "dead");
    // The notification retries against the closed port until max_age, then is dead too.
    wait_for("the notification is dead", || w.files("dead").len() == 2);
    // A later message goes through; by then a loop would have queued more.
    let later = w.submit(&envelope(
        "POST",
        &format!("http://fine.test:{fp}/"),
        &[],
        "{}",
    ));
    w.wait_state(&later, "delivered");
    let all: usize = ["new", "cur", "done", "dead"]
        .iter()
        .map(|f| w.files(f).len())
        .sum();
    assert_eq!(all, 3, "the delivery, its notification, the later message");
    assert_eq!(w.files("dead").len(), 2);
    assert_eq!(w.metric("whomp_dead_letters_total"), 2.0);
}
