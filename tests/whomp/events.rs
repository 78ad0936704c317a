//! The event layer end to end: targets, filters and subscriptions through the REST API (with
//! their validation errors, pagination and wildcards), events fanned out to real receivers on
//! 127.0.0.1, de-duplicated by id across a SIGKILL, signed during a secret rotation so that the
//! official `standardwebhooks` library verifies either secret, and every acknowledged change
//! surviving a SIGKILL in the middle of a burst.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use base64::Engine as _;
use harness::{wait_for, Received, Receiver};
use serde_json::{json, Value};

use crate::{local, parse, Whomp, FAST_RETRY};

const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW: &str = "whsec_c2Vjb25kIGtleSBmb3Igd2hvbXAgdGVzdHM=";

/// `METHOD path` with a JSON body (or none); the status and the answer as JSON.
pub(crate) fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = harness::raw(addr, request.as_bytes());
    (status, parse(&text))
}

/// Creates a document; its id.
pub(crate) fn create(w: &Whomp, kind: &str, body: Value) -> String {
    let (status, answer) = call(
        w.submit_addr(),
        "POST",
        &format!("/v1/webhooks/{kind}"),
        Some(&body),
    );
    assert_eq!(status, 201, "{answer}");
    answer["id"].as_str().unwrap().to_owned()
}

/// A target at `url`, a filter of `events` and a subscription binding them; the target's id.
pub(crate) fn subscribe(w: &Whomp, url: &str, events: &[&str], extra: Value) -> String {
    let mut target = json!({"url": url});
    if let (Some(t), Some(e)) = (target.as_object_mut(), extra.as_object()) {
        t.extend(e.clone());
    }
    let target = create(w, "targets", target);
    let filter = create(w, "filters", json!({"events": events}));
    create(
        w,
        "subscriptions",
        json!({"targetId": target, "filterId": filter}),
    );
    target
}

pub(crate) fn post_event(w: &Whomp, event: &Value) -> (u16, Value) {
    call(w.submit_addr(), "POST", "/v1/events", Some(event))
}

#[test]
fn crud_refuses_bad_fields_pages_and_survives_a_restart() {
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    let mut w = Whomp::start(&format!("{FAST_RETRY}{}", local(&[port], &["hooks.test"])));
    let addr = w.submit_addr();

    // Refused or malformed URLs: 422 naming the field and the rule, nothing stored.
    let (status, answer) = call(
        addr,
        "POST",
        "/v1/webhooks/targets",
        Some(&json!({"url": "http://10.1.2.3:443/in"})),
    );
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "url");
    assert!(answer["rule"].is_string(), "{answer}");
    let (status, answer) = call(
        addr,
        "POST",
        "/v1/webhooks/targets",
        Some(&json!({"url": "not a url"})),
    );
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "url");
    let (status, answer) = call(addr, "POST", "/v1/webhooks/targets", Some(&json!({})));
    assert_eq!(
        (status, answer["field"].as_str()),
        (400, Some("url")),
        "{answer}"
    );
    let (status, answer) = call(
        addr,
        "POST",
        "/v1/webhooks/targets",
        Some(&json!({"url": format!("http://hooks.test:{port}/"), "secrets": ["plain"]})),
    );
    assert_eq!(
        (status, answer["field"].as_str()),
        (400, Some("secrets[0]")),
        "{answer}"
    );
    let (_, list) = call(addr, "GET", "/v1/webhooks/targets", None);
    assert_eq!(list["data"], json!([]), "nothing refused was stored");

    // A target made without secrets gets one, shown once.
    let (status, made) = call(
        addr,
        "POST",
        "/v1/webhooks/targets",
        Some(
            &json!({"url": format!("http://hooks.test:{port}/in"), "description": "shop", "headers": {"X-Tenant": "7"}}),
        ),
    );
    assert_eq!(status, 201, "{made}");
    assert!(made["secrets"][0].as_str().unwrap().starts_with("whsec_"));
    let target = made["id"].as_str().unwrap().to_owned();
    let (status, shown) = call(addr, "GET", &format!("/v1/webhooks/targets/{target}"), None);
    assert_eq!(status, 200);
    assert_eq!(shown["secretCount"], 1);
    assert!(shown.get("secrets").is_none(), "{shown}");
    assert_eq!(shown["headers"]["X-Tenant"], "7");

    // Filters: bad event types name their index; five good ones page two at a time.
    let (status, answer) = call(
        addr,
        "POST",
        "/v1/webhooks/filters",
        Some(&json!({"events": ["a.b", "a.*.c"]})),
    );
    assert_eq!(
        (status, answer["field"].as_str()),
        (400, Some("events[1]")),
        "{answer}"
    );
    let filters: Vec<String> = (0..5)
        .map(|i| create(&w, "filters", json!({"events": [format!("shop.e{i}.*")]})))
        .collect();
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = call(
            addr,
            "GET",
            &format!("/v1/webhooks/filters?limit=2&cursor={cursor}"),
            None,
        );
        assert_eq!(status, 200, "{page}");
        assert!(page["data"].as_array().unwrap().len() <= 2);
        paged.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["id"].as_str().unwrap().to_owned()),
        );
        match page["nextCursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(paged, filters, "every filter once, in order");

    // Subscriptions: unknown target or filter is a 422 naming the field.
    let (status, answer) = call(
        addr,
        "POST",
        "/v1/webhooks/subscriptions",
        Some(&json!({"targetId": target, "filterId": "01J00000000000000000000000"})),
    );
    assert_eq!(
        (status, answer["field"].as_str()),
        (422, Some("filterId")),
        "{answer}"
    );
    let sub = create(
        &w,
        "subscriptions",
        json!({"targetId": target, "filterId": filters[0], "active": false}),
    );
    let (status, answer) = call(
        addr,
        "PATCH",
        &format!("/v1/webhooks/subscriptions/{sub}"),
        Some(&json!({"active": "yes"})),
    );
    assert_eq!(
        (status, answer["field"].as_str()),
        (400, Some("active")),
        "{answer}"
    );
    let (status, answer) = call(
        addr,
        "PATCH",
        &format!("/v1/webhooks/subscriptions/{sub}"),
        Some(&json!({"active": true})),
    );
    assert_eq!(
        (status, answer["active"].as_bool()),
        (200, Some(true)),
        "{answer}"
    );
    let (status, answer) = call(
        addr,
        "DELETE",
        &format!("/v1/webhooks/targets/{target}"),
        None,
    );
    assert_eq!(status, 409, "a target in use is not deleted: {answer}");
    let (status, _) = call(
        addr,
        "DELETE",
        &format!("/v1/webhooks/filters/{}", filters[4]),
        None,
    );
    assert_eq!(status, 200);
    let (status, _) = call(
        addr,
        "GET",
        &format!("/v1/webhooks/filters/{}", filters[4]),
        None,
    );
    assert_eq!(status, 404);

    // Everything acknowledged is there after a SIGKILL, and works: a wildcard match.
    w.restart();
    let addr = w.submit_addr();
    let (_, page) = call(addr, "GET", "/v1/webhooks/filters", None);
    assert_eq!(page["data"].as_array().unwrap().len(), 4);
    let (_, shown) = call(
        addr,
        "GET",
        &format!("/v1/webhooks/subscriptions/{sub}"),
        None,
    );
    assert_eq!(shown["active"], true);
    let (status, answer) = post_event(&w, &json!({"type": "shop.e0.created", "payload": {"n": 1}}));
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["deliveries"].as_array().unwrap().len(), 1);
    let (status, answer) = post_event(&w, &json!({"type": "shop.e0", "payload": {}}));
    assert_eq!(
        (status, answer["deliveries"].as_array().map(Vec::len)),
        (202, Some(0)),
        "a.* does not match a itself"
    );
    wait_for("the matched event arrives", || receiver.count() == 1);
    let got = &receiver.received()[0];
    assert_eq!(got.header("x-tenant"), Some("7"));
    assert_eq!(got.body, br#"{"n":1}"#);
    let (status, answer) = post_event(&w, &json!({"type": "shop.e0.*", "payload": {}}));
    assert_eq!(
        (status, answer["field"].as_str()),
        (400, Some("type")),
        "{answer}"
    );
}

#[test]
fn fan_out_to_three_with_one_down_and_event_ids_deduplicated_across_a_restart() {
    let up: Vec<Receiver> = (0..2).map(|_| Receiver::start()).collect();
    let down_port = harness::free_port();
    let ports = [up[0].addr.port(), up[1].addr.port(), down_port];
    let mut w = Whomp::start(&format!("{FAST_RETRY}{}", local(&ports, &["hooks.test"])));
    for port in ports {
        subscribe(
            &w,
            &format!("http://hooks.test:{port}/in"),
            &["shop.orders.*"],
            json!({}),
        );
    }
    let event =
        json!({"id": "order-17.created", "type": "shop.orders.created", "payload": {"order": 17}});
    let (status, first) = post_event(&w, &event);
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["id"], "order-17.created");
    assert_eq!(first["deliveries"].as_array().unwrap().len(), 3);
    for r in &up {
        wait_for("an up receiver gets the event", || r.count() == 1);
    }
    // The same id again, before and after a SIGKILL: the first answer, nothing new.
    let (status, again) = post_event(&w, &event);
    assert_eq!((status, &again), (202, &first));
    w.restart();
    let (status, again) = post_event(&w, &event);
    assert_eq!(
        (status, &again),
        (202, &first),
        "remembered across a restart"
    );
    // The down receiver comes back and gets it exactly once.
    let back = Receiver::start_on(SocketAddr::from(([127, 0, 0, 1], down_port)));
    wait_for("the returning receiver gets the event", || {
        back.count() == 1
    });
    for d in first["deliveries"].as_array().unwrap() {
        w.wait_state(d["id"].as_str().unwrap(), "delivered");
    }
    for r in up.iter().chain([&back]) {
        assert_eq!(r.count(), 1, "each target once");
        assert_eq!(r.received()[0].body, br#"{"order":17}"#);
    }
}

/// Verifies `r` with the official Python library and `secret`; false when it is not installed
/// (outside CI only: CI installs it, `.ci/setup/standardwebhooks.sh`).
fn verified_by_the_library(r: &Received, secret: &str) -> bool {
    const SCRIPT: &str = "import json, sys\nfrom standardwebhooks.webhooks import Webhook\n\
        Webhook(sys.argv[1]).verify(sys.stdin.buffer.read(), json.loads(sys.argv[2]))\n";
    let installed = Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "python3 -m standardwebhooks is missing: run .ci/setup/standardwebhooks.sh"
        );
        println!("SKIPPED: the standardwebhooks Python library is not installed (.ci/setup/standardwebhooks.sh)");
        return false;
    }
    let headers: serde_json::Map<String, Value> =
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .iter()
            .map(|n| (n.to_string(), Value::from(r.header(n).unwrap())))
            .collect();
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT, secret, &Value::Object(headers).to_string()])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&r.body).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "standardwebhooks refused the signature with one of the secrets"
    );
    true
}

#[test]
fn a_rotated_target_signs_with_both_secrets() {
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    let w = Whomp::start(&format!("{FAST_RETRY}{}", local(&[port], &["hooks.test"])));
    let target = subscribe(
        &w,
        &format!("http://hooks.test:{port}/in"),
        &["a.b"],
        json!({"secrets": [OLD]}),
    );
    // Rotation: the new secret beside the old one.
    let (status, answer) = call(
        w.submit_addr(),
        "PATCH",
        &format!("/v1/webhooks/targets/{target}"),
        Some(&json!({"secrets": [NEW, OLD]})),
    );
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post_event(
        &w,
        &json!({"type": "a.b", "payload": {"test": 2432232314u64}}),
    );
    assert_eq!(status, 202, "{answer}");
    wait_for("the event arrives", || receiver.count() == 1);
    let r = &receiver.received()[0];
    let signatures: Vec<&str> = r.header("webhook-signature").unwrap().split(' ').collect();
    assert_eq!(signatures.len(), 2, "one v1 signature per secret");
    let id = r.header("webhook-id").unwrap();
    assert_eq!(
        id, answer["deliveries"][0]["id"],
        "webhook-id is the delivery's message id"
    );
    let signed = [
        id.as_bytes(),
        b".",
        r.header("webhook-timestamp").unwrap().as_bytes(),
        b".",
        &r.body,
    ]
    .concat();
    for (secret, signature) in [NEW, OLD].iter().zip(&signatures) {
        let key = base64::engine::general_purpose::STANDARD
            .decode(&secret[6..])
            .unwrap();
        let mac = crate::signing::hmac_sha256(&key, &signed);
        assert_eq!(
            *signature,
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac)
            )
        );
    }
    for secret in [NEW, OLD] {
        verified_by_the_library(r, secret);
    }
}

/// Like [`call`], but `None` when the daemon is gone or the answer is cut (a SIGKILL).
fn try_call(addr: SocketAddr, path: &str, body: &Value) -> Option<(u16, Value)> {
    use std::io::Read;
    let body = body.to_string();
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let (_, text) = answer.split_once("\r\n\r\n")?;
    let value = serde_json::from_str(text).ok()?;
    Some((status, value))
}

#[test]
fn every_acknowledged_change_and_event_survives_a_sigkill_mid_burst() {
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    let mut w = Whomp::start(&format!("{FAST_RETRY}{}", local(&[port], &["hooks.test"])));
    subscribe(
        &w,
        &format!("http://hooks.test:{port}/in"),
        &["burst.*"],
        json!({}),
    );
    let addr = w.submit_addr();
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), Vec::new())));
    let workers: Vec<_> = (0..4)
        .map(|n| {
            let acknowledged = acknowledged.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let (path, body) = if i % 2 == 0 {
                        ("/v1/webhooks/filters", json!({"events": [format!("burst.w{n}.i{i}")]}))
                    } else {
                        ("/v1/events", json!({"id": format!("e-{n}-{i}"), "type": "burst.x", "payload": {"i": i}}))
                    };
                    let Some((status, answer)) = try_call(addr, path, &body) else {
                        return;
                    };
                    let mut got = acknowledged.lock().unwrap();
                    match status {
                        201 => got.0.push(answer["id"].as_str().unwrap().to_owned()),
                        202 => got.1.push(answer["deliveries"][0]["id"].as_str().unwrap().to_owned()),
                        other => panic!("unexpected {other}: {answer}"),
                    }
                }
            })
        })
        .collect();
    wait_for("a few changes and events are acknowledged", || {
        let got = acknowledged.lock().unwrap();
        got.0.len() >= 20 && got.1.len() >= 20
    });
    w.daemon.kill();
    for worker in workers {
        worker.join().unwrap();
    }
    w.restart();
    let (filters, deliveries) = acknowledged.lock().unwrap().clone();
    let addr = w.submit_addr();
    for id in &filters {
        let (status, _) = call(addr, "GET", &format!("/v1/webhooks/filters/{id}"), None);
        assert_eq!(status, 200, "acknowledged filter {id} survived");
    }
    for id in &deliveries {
        w.wait_state(id, "delivered");
    }
}
